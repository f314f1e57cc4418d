"""Sampling completions from a checkpoint and keeping the good ones: the shared core of rejection sampling and of
distillation's teacher traces (`sample_and_filter`), with transformers' `generate` or vLLM, on one process or
several (each samples a share of the prompts)."""

import logging
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib.util import find_spec
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig

from recipes.lib.data import BUILTIN_DATASET, load_any_dataset, require_columns, split_of
from recipes.lib.evaluation import generate_batch, render_prompts
from recipes.lib.filters import FILTERS, SCORE_REWARDS, Sample, apply_filters, mean_score, score_samples
from recipes.lib.heldout import reasoning_vocabulary
from recipes.lib.prompts import PromptArguments, build_prompts
from recipes.lib.readability import vocabulary_of
from recipes.lib.stage import StageArguments

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class RejectionSamplingArguments(PromptArguments, StageArguments):
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
            "within_length, not_repetitive, readable, dedup, per_prompt_cap (all of them by default)."
        },
    )
    vocabulary_file: str | None = field(
        default=None,
        metadata={
            "help": "Words (one per line) that `readable` allows in the reasoning; unset: the built-in task's words "
            "for its prompts, none for other prompts (the filter then keeps every sample)."
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
        if self.vocabulary_file is not None and not os.path.isfile(self.vocabulary_file):
            raise ValueError(f"vocabulary_file {self.vocabulary_file!r}: no such file (write one word per line).")

    @cached_property
    def vocabulary(self) -> frozenset[str] | None:
        """The words `readable` allows: `vocabulary_file`'s, the built-in task's for its prompts, else None."""
        if self.vocabulary_file is not None:
            return vocabulary_of([Path(self.vocabulary_file).read_text(encoding="utf-8")])
        return reasoning_vocabulary(self.dataset_name)


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
            completions = generate_batch(
                model,
                tokenizer,
                texts[start : start + sampling.generation_batch_size],
                stops,
                sampling.max_new_tokens,
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=0,
                num_return_sequences=sampling.num_generations,
            )
            for row, (text, n, done) in enumerate(completions):
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


# ------------------------------------------------------------------------------------------------------------------
# Sample, score, filter


def load_prompts(script_args: RejectionSamplingArguments, seed: int) -> Dataset:
    """The prompt split with `prompt` and `solution` columns, at most `max_prompts` rows."""
    builtin = {"seed": script_args.builtin_seed, "n_train": script_args.builtin_train_size, "n_test": 0}
    dataset = load_any_dataset(script_args.dataset_name, script_args.dataset_config, builtin_kwargs=builtin)
    split = split_of(dataset, script_args.dataset_split, flag="dataset_split", dataset_name=script_args.dataset_name)
    dataset = build_prompts(split, script_args)
    require_columns(dataset, ["solution"], where="rejection sampling (the `correct` filter and the accuracy score)")
    if script_args.max_prompts is not None and len(dataset) > script_args.max_prompts:
        dataset = dataset.shuffle(seed=seed).select(range(script_args.max_prompts))
    return dataset


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


def format_stats(stats: dict) -> str:
    lines = [f"sampled {stats['sampled']} completions of {stats['prompts']} prompts"]
    lines += [f"  {name:>20}: removed {count}" for name, count in stats["removed"].items()]
    lines.append(f"kept {stats['kept_reasoning']} reasoning + {stats['general']} general samples")
    return "\n".join(lines)


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
    if "readable" in script_args.filters and script_args.vocabulary is None:
        logger.warning(
            "The readable filter kept every sample: no vocabulary is known for these prompts (vocabulary_file)."
        )
    stats = {
        "prompts": len(prompts),
        "sampled": len(samples),
        "generated_tokens": sum(s.num_tokens for s in samples),
        "removed": removed,
        "kept_reasoning": len(kept),
        "prompts_with_a_kept_sample": len({s.prompt_index for s in kept}),
        "mean_scores": {name: mean_score(samples, name) for name in SCORE_REWARDS},
    }
    return reasoning_rows(kept, prompts, problems, solutions), stats
