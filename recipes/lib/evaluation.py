"""Held-out evaluation: the signals DeepSeek-R1 reads off its RL runs, measured on a test split.

    metrics = evaluate_protocols(model, tokenizer, dataset["test"], max_new_tokens=128, r1_samples=4)
    print(format_comparison_table(before, metrics))

For each held-out problem the model writes one completion, or `samples_per_problem` sampled ones (batched,
left-padded `generate`); the completions are scored with the project's reward functions (`rewards`) and summarised as

- `accuracy`: share whose extracted answer verifies against the `solution` column with the `accuracy` reward's
  default check (a single integer for integer golds; see `rewards.accuracy.AnswerChecker`); with several samples
  per problem: pass@1 averaged over the samples, as DeepSeek-R1 reports it; `accuracy_stderr`, when asked for, is
  its standard error over problems;
- `format_compliance`: share that follows R1's `<think> ... </think> <answer> ... </answer>` format;
- `correct_and_well_formed`: share that is both correct and in that format;
- `language_consistency`: mean share of target-language words in the reasoning, over the completions whose
  reasoning has words (an empty or missing `<think>` block says nothing about language mixing);
- `reflection_rate`: share that contains a self-checking phrase ("wait", "let me check", ...);
- `unknown_word_rate`, with a `vocabulary` (the built-in task's: `recipes.lib.readability`): share whose reasoning
  has a word outside it, a misspelling such as "rime" for "right";
- `mean_completion_tokens`: mean number of generated tokens, the final end-of-sequence token included.

`evaluate_protocols` reports both of the field's protocols: the metrics above under greedy decoding, and `pass@1`
under DeepSeek-R1's (k samples per problem at temperature 0.6, top-p 0.95).
"""

import math
import re
from collections.abc import Sequence

import torch

import rewards
from recipes.lib.readability import is_readable

DEFAULT_REFLECTION_PHRASES = ("wait", "let me check", "verify", "double-check", "re-check", "recheck")
"""Phrases that mark a completion as self-checking (matched case-insensitively, as whole words)."""

SHARE_METRICS = (
    "accuracy",
    "pass@1",
    "format_compliance",
    "correct_and_well_formed",
    "language_consistency",
    "reflection_rate",
    "unknown_word_rate",
)
"""The metrics that are shares in [0, 1]; `mean_completion_tokens` is a count."""


def is_share(name: str) -> bool:
    """Whether the metric `name` is a share, also when prefixed by its split (`ood_accuracy`)."""
    return name.removeprefix("ood_") in SHARE_METRICS


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
    samples_per_problem: int | None = None,
    reflection_phrases: Sequence[str] = DEFAULT_REFLECTION_PHRASES,
    language: str = "en",
    vocabulary: frozenset[str] | None = None,
) -> dict[str, float]:
    """The held-out metrics (see the module docstring) of completions that are already written.

    With `samples_per_problem` k, completions come in runs of k per problem (problem 0's k, then problem 1's, ...),
    and `accuracy_stderr` is added.
    """
    accuracy, format_, language_consistency = (
        rewards.get_reward_func("accuracy"),
        rewards.get_reward_func("format"),
        rewards.get_reward_func("language_consistency", language=language, empty_score=math.nan),
    )
    prompts, completions = list(prompts), list(completions)
    correct = accuracy(prompts=prompts, completions=completions, solution=list(solutions))
    well_formed = [None if r is None else float(r == 1.0) for r in format_(prompts=prompts, completions=completions)]
    metrics = {
        "accuracy": _mean(correct),
        "format_compliance": _mean(well_formed),
        "correct_and_well_formed": _mean(
            None if c is None or f is None else c * f for c, f in zip(correct, well_formed)
        ),
        "language_consistency": _mean(language_consistency(prompts=prompts, completions=completions)),
        "reflection_rate": _mean(float(is_reflective(c, reflection_phrases)) for c in completions),
    }
    if vocabulary is not None:
        metrics["unknown_word_rate"] = _mean(float(not is_readable(c, vocabulary)) for c in completions)
    if completion_tokens is not None:
        metrics["mean_completion_tokens"] = _mean(completion_tokens)
    if samples_per_problem is not None:
        metrics["accuracy_stderr"] = _stderr_over_problems(correct, samples_per_problem)
    return metrics


def _stderr_over_problems(correct: Sequence[float], samples_per_problem: int) -> float:
    """Standard error of the mean accuracy, problems as the unit: runs of `samples_per_problem` scores per problem
    (None where the reward could not judge)."""
    if samples_per_problem < 1 or len(correct) % samples_per_problem:
        raise ValueError(f"{len(correct)} scores do not split into runs of samples_per_problem={samples_per_problem}.")
    per_problem = [_mean(correct[i : i + samples_per_problem]) for i in range(0, len(correct), samples_per_problem)]
    per_problem = [p for p in per_problem if not math.isnan(p)]  # (n_problems judged,)
    n = len(per_problem)
    if n < 2:
        return float("nan")
    mean = sum(per_problem) / n
    return math.sqrt(sum((p - mean) ** 2 for p in per_problem) / (n - 1) / n)


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
    top_p: float = 1.0,
    batch_size: int = 64,
    seed: int | None = 0,
) -> tuple[list[str], list[int]]:
    """One completion per prompt: (texts decoded without special tokens, number of generated tokens each).

    Prompts are left-padded in batches. Sampling is at `temperature` from the nucleus `top_p` (no top-k), seeded by
    `seed` without touching the caller's random state.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}.")
    if not greedy and (temperature <= 0 or not 0 < top_p <= 1):
        raise ValueError(
            f"Sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature} and {top_p}; use greedy=True "
            "for argmax decoding."
        )
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token, which batched generation needs: set `tokenizer.pad_token`.")
    texts = render_prompts(tokenizer, prompts)
    sampling = (
        {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": top_p}
    )
    was_training = model.training
    model.eval()
    completions = []
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            completions += generate_batch(model, tokenizer, batch, [tokenizer.eos_token_id], max_new_tokens, **sampling)
    model.train(was_training)
    return [text for text, _, _ in completions], [n for _, n, _ in completions]


@torch.no_grad()
def generate_batch(
    model, tokenizer, texts: Sequence[str], stops: Sequence[int], max_new_tokens: int, **generation
) -> list[tuple[str, int, bool]]:
    """Complete one batch of rendered prompts, left-padded: for each returned sequence (with `num_return_sequences`
    k, prompt i's k rows are consecutive) its text without special tokens, its number of generated tokens up to and
    including the first of the `stops`, and whether a stop ended it (else the budget did)."""
    batch = tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False).to(
        model.device
    )
    output = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=list(stops),
        **generation,
    )
    generated = output[:, batch["input_ids"].shape[1] :]  # (B*k, T_new)
    is_stop = torch.isin(generated, torch.tensor(list(stops), device=generated.device))  # (B*k, T_new)
    finished = is_stop.any(dim=1)  # (B*k,)
    lengths = torch.where(finished, is_stop.int().argmax(dim=1) + 1, generated.shape[1])  # (B*k,)
    return [
        (tokenizer.decode(ids[:n], skip_special_tokens=True), n, done)
        for ids, n, done in zip(generated, lengths.tolist(), finished.tolist())
    ]


def evaluate_heldout(
    model,
    tokenizer,
    dataset,
    *,
    max_new_tokens: int = 128,
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    samples_per_problem: int = 1,
    batch_size: int = 64,
    seed: int | None = 0,
    reflection_phrases: Sequence[str] = DEFAULT_REFLECTION_PHRASES,
    language: str = "en",
    vocabulary: frozenset[str] | None = None,
) -> dict[str, float]:
    """Answer each row of `dataset` (columns `prompt`, `solution`) `samples_per_problem` times; return R1's metrics
    with `accuracy_stderr`.

    Greedy decoding measures what the model does most of the time; sampling at `temperature` 1 measures what
    reinforcement learning sees. Several samples per problem shrink the sampling noise of a sampled measurement.
    """
    missing = [column for column in ("prompt", "solution") if column not in dataset.column_names]
    if missing:
        raise ValueError(f"evaluate_heldout needs the columns {missing}; the dataset has {dataset.column_names}.")
    if samples_per_problem < 1 or (greedy and samples_per_problem > 1):
        raise ValueError(
            f"samples_per_problem must be >= 1, and 1 with greedy decoding (every sample would be the "
            f"same), got {samples_per_problem} with greedy={greedy}."
        )
    prompts = [prompt for prompt in dataset["prompt"] for _ in range(samples_per_problem)]
    solutions = [solution for solution in dataset["solution"] for _ in range(samples_per_problem)]
    completions, lengths = generate_completions(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        greedy=greedy,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
    )
    return score_completions(
        prompts,
        completions,
        solutions,
        completion_tokens=lengths,
        samples_per_problem=samples_per_problem,
        reflection_phrases=reflection_phrases,
        language=language,
        vocabulary=vocabulary,
    )


R1_SAMPLING = {"temperature": 0.6, "top_p": 0.95}
"""DeepSeek-R1's evaluation sampling (paper, section 3.1): k samples per problem at these settings, pass@1 reported."""


def evaluate_protocols(
    model,
    tokenizer,
    dataset,
    *,
    max_new_tokens: int = 128,
    r1_samples: int = 4,
    batch_size: int = 64,
    seed: int | None = 0,
    reflection_phrases: Sequence[str] = DEFAULT_REFLECTION_PHRASES,
    language: str = "en",
    vocabulary: frozenset[str] | None = None,
) -> dict[str, float]:
    """Both evaluation protocols: R1's metrics under greedy decoding, and `pass@1` (with `pass@1_stderr`) under R1's
    protocol, `r1_samples` completions per problem sampled with `R1_SAMPLING`; `r1_samples=0` measures greedy only.

    pass@1 is the share of correct samples, averaged over samples and problems: what a user who samples as R1 does
    gets; greedy is the model's most likely answer. The two differ most when the model is unsure.
    """
    if r1_samples < 0:
        raise ValueError(f"r1_samples must be >= 0 (0: greedy only), got {r1_samples}.")
    shared = {
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "seed": seed,
        "reflection_phrases": reflection_phrases,
        "language": language,
        "vocabulary": vocabulary,
    }
    metrics = evaluate_heldout(model, tokenizer, dataset, greedy=True, **shared)
    if r1_samples:
        sampled = evaluate_heldout(
            model, tokenizer, dataset, greedy=False, samples_per_problem=r1_samples, **R1_SAMPLING, **shared
        )
        metrics |= {"pass@1": sampled["accuracy"], "pass@1_stderr": sampled["accuracy_stderr"]}
    return metrics


def format_metric(metrics: dict, name: str) -> str:
    """One metric for a table: shares in percent (with `± stderr` where `<name>_stderr` is known), counts as they are,
    n/a where the metric could not judge (e.g. language consistency when no completion reasoned in words)."""
    value = metrics.get(name)
    if value is None:
        return ""
    if math.isnan(value):
        return "n/a"
    if not is_share(name):
        return f"{value:.1f}"
    stderr = metrics.get(f"{name}_stderr")
    return f"{100 * value:.1f}%" + ("" if stderr is None or math.isnan(stderr) else f" ± {100 * stderr:.1f}")


def format_comparison_table(before: dict, after: dict) -> str:
    """A Markdown table of the metrics before and after training, with the change of each.

    Shares (`SHARE_METRICS`) are shown in percent and their change in percentage points; other numbers as they are.
    """
    names = [name for name in before if name in after] + [name for name in after if name not in before]
    lines = ["| held-out metric | before | after | change |", "| --- | ---: | ---: | ---: |"]
    for name in (name for name in names if not name.endswith("_stderr")):
        old, new = before.get(name), after.get(name)
        scale, unit = (100, "%") if is_share(name) else (1, "")
        change = "" if old is None or new is None else f"{scale * (new - old):+.1f}" + (" pts" if unit else "")
        lines.append(f"| {name} | {format_metric(before, name)} | {format_metric(after, name)} | {change} |")
    return "\n".join(lines)
