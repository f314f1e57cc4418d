"""Held-out evaluation: the signals DeepSeek-R1 reads off its RL runs, measured on a test split.

    metrics = evaluate_heldout(model, tokenizer, dataset["test"], max_new_tokens=128, greedy=True)
    print(format_comparison_table(before, metrics))

For each held-out problem the model writes one completion (batched, left-padded `generate`); the completions are
scored with the project's reward functions (`rewards`) and summarised as

- `accuracy`: share whose extracted answer verifies against the `solution` column;
- `format_compliance`: share that follows R1's `<think> ... </think> <answer> ... </answer>` format;
- `language_consistency`: mean share of target-language words in the reasoning, over the completions whose
  reasoning has words (an empty or missing `<think>` block says nothing about language mixing);
- `reflection_rate`: share that contains a self-checking phrase ("wait", "let me check", ...);
- `mean_completion_tokens`: mean number of generated tokens, the final end-of-sequence token included.
"""

import math
import re
from collections.abc import Sequence

import torch

import rewards

DEFAULT_REFLECTION_PHRASES = ("wait", "let me check", "verify", "double-check", "re-check", "recheck")
"""Phrases that mark a completion as self-checking (matched case-insensitively, as whole words)."""

SHARE_METRICS = ("accuracy", "format_compliance", "language_consistency", "reflection_rate")
"""The metrics that are shares in [0, 1]; `mean_completion_tokens` is a count."""


def is_reflective(text: str, phrases: Sequence[str] = DEFAULT_REFLECTION_PHRASES) -> bool:
    """Whether `text` contains one of `phrases` as whole words, ignoring case ("Wait," counts, "await" does not)."""
    return any(re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, flags=re.IGNORECASE) for phrase in phrases)


def _mean(values) -> float:
    """Mean of the values that are not None or NaN (where a reward cannot judge); NaN if there are none."""
    scored = [float(v) for v in values if v is not None and not math.isnan(v)]
    return sum(scored) / len(scored) if scored else float("nan")


def score_completions(
    prompts: Sequence,
    completions: Sequence[str],
    solutions: Sequence[str],
    *,
    completion_tokens: Sequence[int] | None = None,
    reflection_phrases: Sequence[str] = DEFAULT_REFLECTION_PHRASES,
    language: str = "en",
) -> dict[str, float]:
    """The held-out metrics (see the module docstring) of completions that are already written."""
    accuracy, format_, language_consistency = (
        rewards.get_reward_func("accuracy"),
        rewards.get_reward_func("format"),
        rewards.get_reward_func("language_consistency", language=language, empty_score=math.nan),
    )
    prompts, completions = list(prompts), list(completions)
    metrics = {
        "accuracy": _mean(accuracy(prompts=prompts, completions=completions, solution=list(solutions))),
        "format_compliance": _mean(
            None if r is None else float(r == 1.0) for r in format_(prompts=prompts, completions=completions)
        ),
        "language_consistency": _mean(language_consistency(prompts=prompts, completions=completions)),
        "reflection_rate": _mean(float(is_reflective(c, reflection_phrases)) for c in completions),
    }
    if completion_tokens is not None:
        metrics["mean_completion_tokens"] = _mean(completion_tokens)
    return metrics


def render_prompts(tokenizer, prompts: Sequence) -> list[str]:
    """Prompts as text: plain strings stay as they are, conversations go through the tokenizer's chat template."""
    return [
        p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]


@torch.no_grad()
def generate_completions(
    model,
    tokenizer,
    prompts: Sequence,
    *,
    max_new_tokens: int,
    greedy: bool = True,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int | None = 0,
) -> tuple[list[str], list[int]]:
    """One completion per prompt: (texts decoded without special tokens, number of generated tokens each).

    Prompts are left-padded in batches. Sampling uses plain temperature sampling (no top-k, no top-p), seeded by
    `seed` without touching the caller's random state.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}.")
    if not greedy and temperature <= 0:
        raise ValueError(f"Sampling needs temperature > 0, got {temperature}; use greedy=True for argmax decoding.")
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token, which batched generation needs: set `tokenizer.pad_token`.")
    texts = render_prompts(tokenizer, prompts)
    sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    was_training = model.training
    model.eval()
    completions, lengths = [], []
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="left",
                add_special_tokens=False,
            ).to(model.device)
            output = model.generate(
                **batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id, **sampling,
            )
            generated = output[:, batch["input_ids"].shape[1] :]  # (B, T_new)
            finished = generated == tokenizer.eos_token_id  # (B, T_new)
            first_eos = torch.where(finished.any(dim=1), finished.int().argmax(dim=1) + 1, generated.shape[1])  # (B,)
            lengths += first_eos.tolist()
            completions += [tokenizer.decode(ids[:n], skip_special_tokens=True) for ids, n in zip(generated, first_eos)]
    model.train(was_training)
    return completions, lengths


def evaluate_heldout(
    model,
    tokenizer,
    dataset,
    *,
    max_new_tokens: int = 128,
    greedy: bool = True,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int | None = 0,
    reflection_phrases: Sequence[str] = DEFAULT_REFLECTION_PHRASES,
    language: str = "en",
) -> dict[str, float]:
    """Generate one completion per row of `dataset` (columns `prompt`, `solution`) and return R1's metrics.

    Greedy decoding measures what the model does most of the time; sampling at `temperature` 1 measures what
    reinforcement learning sees.
    """
    missing = [column for column in ("prompt", "solution") if column not in dataset.column_names]
    if missing:
        raise ValueError(f"evaluate_heldout needs the columns {missing}; the dataset has {dataset.column_names}.")
    completions, lengths = generate_completions(
        model, tokenizer, dataset["prompt"], max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature,
        batch_size=batch_size, seed=seed,
    )
    return score_completions(
        dataset["prompt"], completions, dataset["solution"], completion_tokens=lengths,
        reflection_phrases=reflection_phrases, language=language,
    )


def format_comparison_table(before: dict, after: dict) -> str:
    """A Markdown table of the metrics before and after training, with the change of each.

    Shares (`SHARE_METRICS`) are shown in percent and their change in percentage points; other numbers as they are.
    """
    names = [name for name in before if name in after] + [name for name in after if name not in before]
    lines = ["| held-out metric | before | after | change |", "| --- | ---: | ---: | ---: |"]
    for name in names:
        old, new = before.get(name), after.get(name)
        scale, unit = (100, "%") if name in SHARE_METRICS else (1, "")
        shown = ["" if v is None else f"{scale * v:.1f}{unit}" for v in (old, new)]
        change = "" if old is None or new is None else f"{scale * (new - old):+.1f}" + (" pts" if unit else "")
        lines.append(f"| {name} | {shown[0]} | {shown[1]} | {change} |")
    return "\n".join(lines)
