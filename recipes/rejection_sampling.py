"""Rejection sampling: turn a reasoning-RL checkpoint into an SFT dataset, as DeepSeek-R1 does after its first RL stage.

    python recipes/rejection_sampling.py                                   # the embedded default
    python recipes/rejection_sampling.py --model_name_or_path outputs/rl1 --num_generations 16 --output_dir data/rs

For every prompt the checkpoint writes `num_generations` completions (batched, left-padded `generate`, or vLLM with
`use_vllm`; `recipes.lib.sampling`). They are scored with the project's rewards (`accuracy`, `format`,
`language_consistency`, `repetition`) and filtered by small named functions, in the order of `filters`
(`recipes.lib.filters`): correct, well_formed, language_consistent, finished, within_length, not_repetitive, dedup,
per_prompt_cap.

General (non-reasoning) data is then mixed in at `general_ratio` of the result, and the dataset is written in the
`messages` format that `recipes/sft.py` reads (`save_to_disk` + `data.jsonl`, optional `push_to_hub`), each sample
with its scores. How many samples each filter removed is printed and saved in `filter_stats.json`.
"""

import json
import logging
import os
import random
from dataclasses import asdict, replace

from datasets import Dataset
from huggingface_hub import HfApi
from trl import ModelConfig, TrlParser

from recipes.lib.cli import CONFIGS_DIR, TINY_BASE, parse_recipe_args, run_entry_point
from recipes.lib.data import BUILTIN_DATASET, load_any_dataset, require_columns, write_dataset
from recipes.lib.filters import SCORE_REWARDS
from recipes.lib.general_chat import make_general_chat
from recipes.lib.inputs import check_inputs
from recipes.lib.sampling import (
    RejectionSamplingArguments,
    SamplingConfig,
    format_stats,
    launch_state,
    sample_and_filter,
)
from recipes.lib.stage import LOG_FORMAT, refuse_finished_data, write_stage_card

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = CONFIGS_DIR / "rejection_sampling_tiny.yaml"


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


def main(script_args: RejectionSamplingArguments, sampling: SamplingConfig, model_args: ModelConfig) -> Dataset:
    """Sample, score, filter, mix in general data and write the SFT dataset; return it (on every process; the
    main process writes and pushes it, the others wait until it is written)."""
    check_inputs(script_args, sampling, model_args)  # a wrong path or reward name fails before any loading
    refuse_finished_data(script_args.output_dir, script_args.overwrite)
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
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
            "generated_tokens": stats["generated_tokens"],
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
    return parse_recipe_args(make_parser(), DEFAULT_CONFIG, argv)


if __name__ == "__main__":
    run_entry_point(lambda: main(*parse_args()))
