"""Rejection sampling: turn a reasoning-RL checkpoint into an SFT dataset, as DeepSeek-R1 does after its first RL stage.

    python recipes/rejection_sampling.py                                   # the embedded default
    python recipes/rejection_sampling.py --model_name_or_path outputs/rl1 --num_generations 16 --output_dir data/rs

For every prompt the checkpoint writes `num_generations` completions (batched, left-padded `generate`, or vLLM with
`use_vllm`). They are scored with the project's rewards (`accuracy`, `format`, `language_consistency`) and filtered
by small named functions, in the order of `filters`:

- `correct`: the verified answer is right (accuracy == 1);
- `well_formed`: R1's `<think> ... </think> <answer> ... </answer>` format is followed (format reward > 0);
- `language_consistent`: the reasoning is in the target language (language consistency >= a threshold);
- `finished`: the completion ended with an end-of-sequence token (not cut off by `max_new_tokens`);
- `within_length`: at most `max_completion_tokens` tokens;
- `not_repetitive`: the share of repeated word n-grams is at most `max_repeat_ratio`;
- `dedup`: one copy of each completion per prompt (text compared after lower-casing and collapsing whitespace);
- `per_prompt_cap`: at most `max_per_prompt` completions per prompt.

General (non-reasoning) data is then mixed in at `general_ratio` of the result, and the dataset is written in the
`messages` format that `recipes/sft.py` reads (`save_to_disk` + `data.jsonl`, optional `push_to_hub`), each sample
with its scores. How many samples each filter removed is printed and saved in `filter_stats.json`.
"""

import json
import logging
import os
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from importlib.util import find_spec

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from huggingface_hub import HfApi
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, TrlParser

import rewards
from recipes.common import (
    BUILTIN_DATASET,
    CONFIGS_DIR,
    TINY_BASE,
    load_any_dataset,
    require_columns,
    with_default_config,
    write_stage_card,
)
from recipes.evaluation import render_prompts
from recipes.general_data import make_general_chat
from recipes.grpo import PromptArguments, build_prompts

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = CONFIGS_DIR / "rejection_sampling_tiny.yaml"

SCORE_REWARDS = ("accuracy", "format", "language_consistency", "repetition")
"""Rewards every sample is scored with (from the `rewards` registry); the scores travel with the sample into the
dataset. `repetition` is minus the share of repeated word n-grams, in [-1, 0]."""


# ------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class RejectionSamplingArguments(PromptArguments):
    """What to sample from, how to filter and mix, and where to write the dataset."""

    dataset_name: str = field(
        default=BUILTIN_DATASET,
        metadata={
            "help": f"Prompts: '{BUILTIN_DATASET}' (the arithmetic task), a Hub id, a data file or a saved folder."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    dataset_split: str = field(default="train", metadata={"help": "Split whose prompts are sampled."})
    max_prompts: int | None = field(default=None, metadata={"help": "Sample at most this many prompts (None: all)."})
    builtin_seed: int = field(default=0, metadata={"help": "Seed of the built-in task's splits."})
    builtin_train_size: int = field(default=2000, metadata={"help": "Train problems of the built-in task."})
    filters: list[str] = field(
        default_factory=lambda: list(FILTERS),
        metadata={
            "help": "Filters to apply, in order; choose among correct, well_formed, language_consistent, finished, "
            "within_length, not_repetitive, dedup, per_prompt_cap (all of them by default)."
        },
    )
    language: str = field(default="en", metadata={"help": "Target language of the reasoning (language consistency)."})
    min_language_consistency: float = field(
        default=0.95, metadata={"help": "`language_consistent` keeps samples whose language consistency is >= this."}
    )
    max_completion_tokens: int | None = field(
        default=None,
        metadata={"help": "`within_length` keeps samples of at most this many tokens (None: the sampling budget)."},
    )
    max_repeat_ratio: float = field(
        default=0.5,
        metadata={"help": "`not_repetitive` keeps samples whose share of repeated word n-grams is <= this."},
    )
    repeat_ngram_size: int = field(default=4, metadata={"help": "n of the word n-grams counted by `not_repetitive`."})
    max_per_prompt: int = field(default=4, metadata={"help": "`per_prompt_cap` keeps at most this many per prompt."})
    general_dataset_name: str | None = field(
        default=BUILTIN_DATASET,
        metadata={
            "help": f"General (non-reasoning) data with a `messages` column: '{BUILTIN_DATASET}' (generated chat "
            "questions), a Hub id, a data file or a saved folder; None for reasoning data only."
        },
    )
    general_dataset_split: str = field(default="train", metadata={"help": "Split of the general data."})
    general_ratio: float = field(
        default=0.25, metadata={"help": "Share of general samples in the written dataset, in [0, 1)."}
    )
    output_dir: str = field(
        default="outputs/rejection-sampling", metadata={"help": "Folder of the written dataset and its statistics."}
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Push the dataset to the Hub as `hub_dataset_id`."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Hub dataset repo id, e.g. 'me/r1-rs-data'."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub dataset repo as private."})

    def __post_init__(self):
        super().__post_init__()
        unknown = [name for name in self.filters if name not in FILTERS]
        if unknown:
            raise ValueError(f"Unknown filter(s) {unknown} in `filters`: choose among {list(FILTERS)}.")
        if not 0.0 <= self.general_ratio < 1.0:
            raise ValueError(
                f"general_ratio is the general share of the result and must be in [0, 1), got {self.general_ratio}."
            )
        if self.general_ratio > 0 and self.general_dataset_name is None:
            raise ValueError("general_ratio > 0 needs general data: set general_dataset_name, or general_ratio 0.")
        if not 0.0 <= self.min_language_consistency <= 1.0:
            raise ValueError(f"min_language_consistency must be in [0, 1], got {self.min_language_consistency}.")
        if not 0.0 <= self.max_repeat_ratio <= 1.0 or self.repeat_ngram_size < 1:
            raise ValueError(
                f"max_repeat_ratio must be in [0, 1] and repeat_ngram_size >= 1, got {self.max_repeat_ratio} "
                f"and {self.repeat_ngram_size}."
            )
        if self.max_per_prompt < 1 or (self.max_prompts is not None and self.max_prompts < 1):
            raise ValueError(
                f"max_per_prompt and max_prompts must be >= 1, got {self.max_per_prompt}, {self.max_prompts}."
            )
        if self.max_completion_tokens is not None and self.max_completion_tokens < 1:
            raise ValueError(f"max_completion_tokens must be >= 1 or None, got {self.max_completion_tokens}.")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("push_to_hub needs hub_dataset_id, the dataset repo to create, e.g. 'me/r1-rs-data'.")


@dataclass
class SamplingConfig:
    """How completions are sampled from the checkpoint."""

    num_generations: int = field(default=8, metadata={"help": "Completions sampled per prompt (k)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling: keep the smallest token set of this mass."})
    max_new_tokens: int = field(default=128, metadata={"help": "Generation budget per completion, in tokens."})
    generation_batch_size: int = field(default=32, metadata={"help": "Prompts per `generate` call (each x k)."})
    use_vllm: bool = field(
        default=False, metadata={"help": "Sample with vLLM (must be installed) instead of transformers."}
    )
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM's share of GPU memory."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs vLLM shards the model over."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampling and of the general-data draw."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run a checkpoint's own modeling code (needed where the code ships with it)."}
    )

    def __post_init__(self):
        if self.num_generations < 1 or self.max_new_tokens < 1 or self.generation_batch_size < 1:
            raise ValueError(
                "num_generations, max_new_tokens and generation_batch_size must be >= 1, got "
                f"{self.num_generations}, {self.max_new_tokens}, {self.generation_batch_size}."
            )
        if self.temperature <= 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"temperature must be > 0 and top_p in (0, 1], got {self.temperature} and {self.top_p}.")
        if self.use_vllm and find_spec("vllm") is None:
            raise ValueError("use_vllm=True but vLLM is not installed: `pip install vllm`, or set use_vllm false.")


# ------------------------------------------------------------------------------------------------------------------
# Sampling


@dataclass
class Sample:
    """One completion of one prompt, with what the filters read."""

    prompt_index: int
    completion: str
    num_tokens: int  # generated tokens, the end-of-sequence token included
    finished: bool  # ended with an end-of-sequence token rather than at the budget
    scores: dict = field(default_factory=dict)


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends a completion: the tokenizer's EOS and those the model's generation config declares."""
    declared = model.generation_config.eos_token_id
    declared = [] if declared is None else [declared] if isinstance(declared, int) else list(declared)
    return sorted({tokenizer.eos_token_id, *declared} - {None})


@torch.no_grad()
def sample_with_transformers(model, tokenizer, prompts: list, sampling: SamplingConfig) -> list[Sample]:
    """`num_generations` completions per prompt with `model.generate`, prompts left-padded in batches."""
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token, which batched generation needs: set `tokenizer.pad_token`.")
    texts, stops = render_prompts(tokenizer, prompts), eos_token_ids(model, tokenizer)
    was_training, samples = model.training, []
    model.eval()
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(sampling.seed)
        for start in range(0, len(texts), sampling.generation_batch_size):
            batch = tokenizer(
                texts[start : start + sampling.generation_batch_size],
                return_tensors="pt",
                padding=True,
                padding_side="left",
                add_special_tokens=False,
            ).to(model.device)
            output = model.generate(
                **batch,
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=0,
                num_return_sequences=sampling.num_generations,
                max_new_tokens=sampling.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=stops,
            )
            generated = output[:, batch["input_ids"].shape[1] :]  # (B*k, T_new), prompt i's k rows are consecutive
            is_stop = torch.isin(generated, torch.tensor(stops, device=generated.device))  # (B*k, T_new)
            finished = is_stop.any(dim=1)  # (B*k,)
            lengths = torch.where(finished, is_stop.int().argmax(dim=1) + 1, generated.shape[1])  # (B*k,)
            for row, (ids, n, done) in enumerate(zip(generated, lengths.tolist(), finished.tolist())):
                text = tokenizer.decode(ids[:n], skip_special_tokens=True)
                samples.append(Sample(start + row // sampling.num_generations, text, n, done))
    model.train(was_training)
    return samples


def sample_with_vllm(model_args: ModelConfig, tokenizer, prompts: list, sampling: SamplingConfig) -> list[Sample]:
    """`num_generations` completions per prompt with vLLM (`finish_reason == "stop"` marks a finished one)."""
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=model_args.model_name_or_path,
        revision=model_args.model_revision,
        seed=sampling.seed,
        trust_remote_code=sampling.trust_remote_code,
        dtype=model_args.dtype or "auto",
        gpu_memory_utilization=sampling.vllm_gpu_memory_utilization,
        tensor_parallel_size=sampling.vllm_tensor_parallel_size,
    )
    params = SamplingParams(
        n=sampling.num_generations,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_new_tokens,
        seed=sampling.seed,
    )
    outputs = llm.generate(render_prompts(tokenizer, prompts), params)
    return [
        Sample(i, choice.text, len(choice.token_ids), choice.finish_reason == "stop")
        for i, output in enumerate(outputs)
        for choice in output.outputs
    ]


def as_completion(prompt, text: str):
    """A completion as TRL hands it to reward functions: a message list for conversational prompts, else text."""
    return text if isinstance(prompt, str) else [{"role": "assistant", "content": text}]


def score_samples(
    samples: list[Sample], prompts: list, solutions: list, *, language: str = "en", ngram_size: int = 4
) -> None:
    """Add the `SCORE_REWARDS` scores to every sample (in place); a reward that cannot judge gives None."""
    funcs = {
        "accuracy": rewards.get_reward_func("accuracy"),
        "format": rewards.get_reward_func("format"),
        "language_consistency": rewards.get_reward_func("language_consistency", language=language),
        "repetition": rewards.get_reward_func("repetition", ngram_size=ngram_size, max_penalty=-1.0),
    }
    sample_prompts = [prompts[s.prompt_index] for s in samples]
    completions = [as_completion(p, s.completion) for p, s in zip(sample_prompts, samples)]
    columns = {"solution": [solutions[s.prompt_index] for s in samples]}
    for name, func in funcs.items():
        values = func(prompts=sample_prompts, completions=completions, **(columns if name == "accuracy" else {}))
        for sample, value in zip(samples, values):
            sample.scores[name] = value


# ------------------------------------------------------------------------------------------------------------------
# Filters: each keeps a sample (True) or removes it (False); `dedup` and `per_prompt_cap` look at the whole list.


def normalize_text(text: str) -> str:
    """Lower-cased, whitespace-collapsed text: two completions equal under it are duplicates."""
    return re.sub(r"\s+", " ", text).strip().lower()


def is_correct(sample: Sample) -> bool:
    return sample.scores.get("accuracy") == 1.0


def is_well_formed(sample: Sample) -> bool:
    return (sample.scores.get("format") or 0.0) > 0.0


def is_language_consistent(sample: Sample, min_score: float) -> bool:
    score = sample.scores.get("language_consistency")
    return score is not None and score >= min_score


def is_finished(sample: Sample) -> bool:
    return sample.finished


def is_within_length(sample: Sample, max_tokens: int) -> bool:
    return sample.num_tokens <= max_tokens


def is_not_repetitive(sample: Sample, max_ratio: float) -> bool:
    return -(sample.scores.get("repetition") or 0.0) <= max_ratio  # the score is minus the repeated share


def deduplicate(samples: list[Sample]) -> list[Sample]:
    """Keep the first of the completions of a prompt that are equal after `normalize_text`."""
    seen, kept = set(), []
    for sample in samples:
        key = (sample.prompt_index, normalize_text(sample.completion))
        if key not in seen:
            seen.add(key)
            kept.append(sample)
    return kept


def cap_per_prompt(samples: list[Sample], max_per_prompt: int) -> list[Sample]:
    """Keep at most `max_per_prompt` completions of each prompt (the first ones)."""
    counts, kept = Counter(), []
    for sample in samples:
        if counts[sample.prompt_index] < max_per_prompt:
            counts[sample.prompt_index] += 1
            kept.append(sample)
    return kept


FILTERS = {
    "correct": lambda samples, args: [s for s in samples if is_correct(s)],
    "well_formed": lambda samples, args: [s for s in samples if is_well_formed(s)],
    "language_consistent": lambda samples, args: [
        s for s in samples if is_language_consistent(s, args.min_language_consistency)
    ],
    "finished": lambda samples, args: [s for s in samples if is_finished(s)],
    "within_length": lambda samples, args: [
        s for s in samples if args.max_completion_tokens is None or is_within_length(s, args.max_completion_tokens)
    ],
    "not_repetitive": lambda samples, args: [s for s in samples if is_not_repetitive(s, args.max_repeat_ratio)],
    "dedup": lambda samples, args: deduplicate(samples),
    "per_prompt_cap": lambda samples, args: cap_per_prompt(samples, args.max_per_prompt),
}
"""Filter name -> (samples, RejectionSamplingArguments) -> kept samples."""


def apply_filters(samples: list[Sample], script_args: RejectionSamplingArguments) -> tuple[list[Sample], dict]:
    """Run `script_args.filters` in order; return the kept samples and how many each filter removed."""
    removed = {}
    for name in script_args.filters:
        kept = FILTERS[name](samples, script_args)
        removed[name] = len(samples) - len(kept)
        samples = kept
    return samples, removed


# ------------------------------------------------------------------------------------------------------------------
# Dataset


def to_messages(prompt, completion: str) -> list[dict]:
    """The conversation SFT trains on: the prompt's messages (or the prompt as one user turn) and the completion."""
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return [*turns, {"role": "assistant", "content": completion}]


def reasoning_rows(samples: list[Sample], prompts: list, problems: list, solutions: list) -> list[dict]:
    """Kept samples as dataset rows: `messages`, `source`, `problem`, `solution` and the sample's scores."""
    return [
        {
            "messages": to_messages(prompts[s.prompt_index], s.completion),
            "source": "reasoning",
            "problem": problems[s.prompt_index],
            "solution": solutions[s.prompt_index],
            "num_tokens": s.num_tokens,
            **{name: s.scores.get(name) for name in SCORE_REWARDS},
        }
        for s in samples
    ]


def general_count(n_reasoning: int, ratio: float) -> int:
    """General samples to add to `n_reasoning` reasoning samples so that they make `ratio` of the result."""
    return round(n_reasoning * ratio / (1.0 - ratio))


def load_general_rows(script_args: RejectionSamplingArguments, n: int, seed: int) -> list[dict]:
    """`n` general samples as rows (their scores None): generated for 'builtin', else drawn from the dataset."""
    if n == 0:
        return []
    if script_args.general_dataset_name == BUILTIN_DATASET:
        general = make_general_chat(n, seed=seed)
    else:
        general = load_any_dataset(script_args.general_dataset_name)[script_args.general_dataset_split]
        require_columns(general, ["messages"], where="general_dataset_name")
        if len(general) < n:
            logger.warning(f"Only {len(general)} general samples available, fewer than the {n} general_ratio asks for.")
        general = general.shuffle(seed=seed).select(range(min(n, len(general))))
    return [
        {
            "messages": messages,
            "source": "general",
            "problem": None,
            "solution": None,
            "num_tokens": None,
            **{name: None for name in SCORE_REWARDS},
        }
        for messages in general["messages"]
    ]


def write_dataset(dataset: Dataset, output_dir: str) -> None:
    """`save_to_disk` (what `recipes/sft.py` and `load_from_disk` read) plus a `data.jsonl` copy for eyes and tools."""
    os.makedirs(output_dir, exist_ok=True)
    dataset.save_to_disk(output_dir)
    dataset.to_json(os.path.join(output_dir, "data.jsonl"), lines=True, force_ascii=False)


def format_stats(stats: dict) -> str:
    lines = [f"sampled {stats['sampled']} completions of {stats['prompts']} prompts"]
    lines += [f"  {name:>20}: removed {count}" for name, count in stats["removed"].items()]
    lines.append(f"kept {stats['kept_reasoning']} reasoning + {stats['general']} general samples")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# Recipe


def load_prompts(script_args: RejectionSamplingArguments, seed: int) -> Dataset:
    """The prompt split with `prompt` and `solution` columns, at most `max_prompts` rows."""
    builtin = {"seed": script_args.builtin_seed, "n_train": script_args.builtin_train_size, "n_test": 0}
    dataset = load_any_dataset(script_args.dataset_name, script_args.dataset_config, builtin_kwargs=builtin)
    if script_args.dataset_split not in dataset:
        raise ValueError(f"dataset_split '{script_args.dataset_split}' not in the dataset's splits {list(dataset)}.")
    dataset = build_prompts(dataset[script_args.dataset_split], script_args)
    require_columns(dataset, ["solution"], where="rejection sampling (the `correct` filter and the accuracy score)")
    if script_args.max_prompts is not None and len(dataset) > script_args.max_prompts:
        dataset = dataset.shuffle(seed=seed).select(range(script_args.max_prompts))
    return dataset


def mean_score(samples: list[Sample], name: str) -> float | None:
    """Mean of one score over the samples it could judge (None where it judged none)."""
    judged = [s.scores[name] for s in samples if s.scores.get(name) is not None]
    return sum(judged) / len(judged) if judged else None


def launch_state() -> PartialState:
    """The processes this run was launched as: one under `python`, several under `accelerate launch` / `torchrun`."""
    return PartialState(cpu=not torch.cuda.is_available())


def sample_shards(model, tokenizer, prompts: list, sampling: SamplingConfig, state: PartialState) -> list[Sample]:
    """`sample_with_transformers` on every process, each on its own contiguous share of the prompts (and its own
    seed), gathered in prompt order on every process: several GPUs sample in parallel and all end with the same list."""
    with state.split_between_processes(list(range(len(prompts)))) as shard:
        shard_sampling = replace(sampling, seed=sampling.seed + state.process_index)
        samples = sample_with_transformers(model, tokenizer, [prompts[i] for i in shard], shard_sampling)
    for sample in samples:
        sample.prompt_index = shard[sample.prompt_index]
    return gather_object(samples) if state.num_processes > 1 else samples


def sample_and_filter(model_args: ModelConfig, script_args: RejectionSamplingArguments, sampling: SamplingConfig):
    """Load the checkpoint, sample, score and filter; return (reasoning rows, statistics), the same on every process.

    `max_completion_tokens` unset caps the length at the sampling budget. Launched as several processes, each
    samples a share of the prompts on its own device (`sample_shards`).
    """
    state = launch_state()
    if sampling.use_vllm and state.num_processes > 1:
        raise ValueError(
            f"use_vllm runs in one process, but this run has {state.num_processes}: launch it with `python`, and "
            "spread vLLM over GPUs with vllm_tensor_parallel_size."
        )
    if script_args.max_completion_tokens is None:
        script_args = replace(script_args, max_completion_tokens=sampling.max_new_tokens)
    prompts_data = load_prompts(script_args, sampling.seed)
    prompts, solutions = prompts_data["prompt"], prompts_data["solution"]
    has_problem = script_args.problem_column in prompts_data.column_names
    problems = prompts_data[script_args.problem_column] if has_problem else [None] * len(prompts)
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=sampling.trust_remote_code
    )
    if sampling.use_vllm:
        samples = sample_with_vllm(model_args, tokenizer, prompts, sampling)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            model_args.model_name_or_path,
            revision=model_args.model_revision,
            dtype=model_args.dtype,
            trust_remote_code=sampling.trust_remote_code,
            attn_implementation=model_args.attn_implementation,
        ).to(state.device)
        samples = sample_shards(model, tokenizer, prompts, sampling, state)
    score_samples(samples, prompts, solutions, language=script_args.language, ngram_size=script_args.repeat_ngram_size)
    kept, removed = apply_filters(samples, script_args)
    stats = {
        "prompts": len(prompts),
        "sampled": len(samples),
        "removed": removed,
        "kept_reasoning": len(kept),
        "prompts_with_a_kept_sample": len({s.prompt_index for s in kept}),
        "mean_scores": {name: mean_score(samples, name) for name in SCORE_REWARDS},
    }
    return reasoning_rows(kept, prompts, problems, solutions), stats


def main(script_args: RejectionSamplingArguments, sampling: SamplingConfig, model_args: ModelConfig) -> Dataset:
    """Sample, score, filter, mix in general data and write the SFT dataset; return it (on every process; the
    main process writes and pushes it, the others wait until it is written)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if model_args.model_name_or_path is None:
        model_args = replace(model_args, model_name_or_path=str(TINY_BASE))
    state = launch_state()

    # Sample, score, filter
    rows, stats = sample_and_filter(model_args, script_args, sampling)

    # Mix in general data
    general = load_general_rows(script_args, general_count(len(rows), script_args.general_ratio), sampling.seed)
    stats["general"] = len(general)
    if state.is_main_process:
        print(format_stats(stats))
        os.makedirs(script_args.output_dir, exist_ok=True)
        with open(os.path.join(script_args.output_dir, "filter_stats.json"), "w") as f:
            json.dump(stats, f, indent=2)
    if not rows:
        raise RuntimeError(
            f"No sample passed the filters (see {script_args.output_dir}/filter_stats.json): sample more "
            "(num_generations, max_prompts), relax a threshold or the `filters` list, or use a stronger checkpoint."
        )
    mixed = rows + general
    random.Random(sampling.seed).shuffle(mixed)
    dataset = Dataset.from_list(mixed)

    # Save, card, push (once), then every process returns with the folder written
    if state.is_main_process:
        save_stage(dataset, script_args, sampling, model_args, stats)
    state.wait_for_everyone()
    return dataset


def save_stage(dataset: Dataset, script_args, sampling: SamplingConfig, model_args: ModelConfig, stats: dict) -> None:
    """Write the dataset, its card and stage record to `output_dir`, and push them with `push_to_hub`."""
    write_dataset(dataset, script_args.output_dir)
    with open(os.path.join(script_args.output_dir, "README.md"), "w") as f:
        f.write(
            f"# Rejection-sampling SFT data\n\nSampled from `{model_args.model_name_or_path}` by "
            "deepseek-mini's `recipes/rejection_sampling.py`; one row per kept sample, in the `messages` format.\n"
        )
    write_stage_card(
        script_args.output_dir,
        stage="rejection_sampling",
        parent=model_args.model_name_or_path,
        dataset=script_args.dataset_name,
        hyperparameters={
            **asdict(sampling),
            "filters": script_args.filters,
            "min_language_consistency": script_args.min_language_consistency,
            "max_completion_tokens": script_args.max_completion_tokens or sampling.max_new_tokens,
            "max_repeat_ratio": script_args.max_repeat_ratio,
            "max_per_prompt": script_args.max_per_prompt,
            "general_dataset_name": script_args.general_dataset_name,
            "general_ratio": script_args.general_ratio,
        },
        metrics={
            "kept_reasoning": stats["kept_reasoning"],
            "general": stats["general"],
            "sampled": stats["sampled"],
            **{f"removed_by_{name}": count for name, count in stats["removed"].items()},
        },
    )
    if script_args.push_to_hub:
        push_dataset(dataset, script_args)


def push_dataset(dataset: Dataset, script_args: RejectionSamplingArguments) -> None:
    """Push the rows (parquet, with the Hub's dataset card) and then the filter statistics and stage record."""
    dataset.push_to_hub(script_args.hub_dataset_id, private=script_args.hub_private)
    api = HfApi()
    for name in ("filter_stats.json", "stage.json"):
        api.upload_file(
            path_or_fileobj=os.path.join(script_args.output_dir, name),
            path_in_repo=name,
            repo_id=script_args.hub_dataset_id,
            repo_type="dataset",
        )


def make_parser() -> TrlParser:
    return TrlParser((RejectionSamplingArguments, SamplingConfig, ModelConfig))


def parse_args(argv: list[str] | None = None) -> tuple:
    """The command line: the embedded default YAML unless `--config` is given, then the flags (which win)."""
    return make_parser().parse_args_and_config(with_default_config(argv, DEFAULT_CONFIG))


if __name__ == "__main__":
    main(*parse_args())
