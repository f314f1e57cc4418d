"""What every recipe shares: device defaults, dataset loading and stage model cards (resuming: `recipes.checkpoints`).

Recipes stay short `main(script_args, training_args, model_args)` functions; anything two of them need lives here.
"""

import json
import logging
import os
import sys
from pathlib import Path

import torch
from datasets import DatasetDict, load_dataset, load_from_disk

logger = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parent
CONFIGS_DIR = RECIPES_DIR / "configs"
ACCELERATE_DIR = RECIPES_DIR / "accelerate"
TINY_BASE = RECIPES_DIR / "assets" / "tiny-base"

# The dataset name that selects the project's own synthetic task (recipes/task.py) instead of a Hub id or a file.
BUILTIN_DATASET = "builtin"

_DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def with_default_config(argv: list[str] | None, default_config: Path) -> list[str]:
    """The command line (`sys.argv[1:]` when None), led by `--config default_config` unless it names a config."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return argv if "--config" in argv else ["--config", str(default_config), *argv]


# transformers 5.25 renamed gradient checkpointing to activation checkpointing. The old flags still parse, but lose
# silently to the new key that the shipped YAMLs set, so a recipe reads them as the new names.
RENAMED_FLAGS = {
    "--gradient_checkpointing": "--activation_checkpointing",
    "--gradient_checkpointing_kwargs": "--activation_checkpointing_kwargs",
}


def rename_deprecated_flags(argv: list[str]) -> list[str]:
    """`argv` with transformers' deprecated flag names (`--flag value` or `--flag=value`) replaced by the new ones."""
    renamed = []
    for arg in argv:
        flag, equals, value = arg.partition("=")
        if flag in RENAMED_FLAGS:
            logger.warning(f"{flag} is transformers' deprecated name for {RENAMED_FLAGS[flag]}: read as the latter.")
            arg = RENAMED_FLAGS[flag] + equals + value
        renamed.append(arg)
    return renamed


def parse_recipe_args(parser, default_config: Path, argv: list[str] | None = None) -> tuple:
    """Parse a recipe's command line the way every recipe does.

    - No `--config`: the embedded default `default_config` is used, so a recipe with no arguments does something
      real on any machine.
    - No GPU: `--use_cpu true --bf16 false --fp16 false` go first, ahead of the YAML's values (TRL's configs
      default to bf16, which a CPU refuses); flags the user writes come later and still win.
    """
    argv = rename_deprecated_flags(with_default_config(argv, default_config))
    if not torch.cuda.is_available():
        argv = ["--use_cpu", "true", "--bf16", "false", "--fp16", "false", *argv]
    return parser.parse_args_and_config(argv)


def load_any_dataset(
    name_or_path: str, config: str | None = None, *, builtin_kwargs: dict | None = None
) -> DatasetDict:
    """Load a dataset from the built-in task, a local file or folder, or a Hub id.

    - `"builtin"`: the project's synthetic verifiable-reasoning task (`recipes.task.make_splits`).
    - a `.json`, `.jsonl`, `.parquet` or `.csv` file: one `train` split.
    - a folder written by `Dataset(Dict).save_to_disk`, or any folder `datasets.load_dataset` understands.
    - anything else: a Hub dataset id, with `config` as its configuration name.
    """
    if name_or_path == BUILTIN_DATASET:
        from recipes.task import make_splits

        return make_splits(**(builtin_kwargs or {}))
    path = Path(name_or_path).expanduser()
    if path.is_file():
        builder = _DATA_FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise ValueError(
                f"Cannot read dataset file {path}: use one of {sorted(_DATA_FILE_BUILDERS)} or a dataset folder."
            )
        return load_dataset(builder, data_files={"train": str(path)})
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = load_from_disk(str(path))
            return loaded if isinstance(loaded, DatasetDict) else DatasetDict(train=loaded)
        return load_dataset(str(path), config)
    return load_dataset(name_or_path, config)


def require_columns(dataset, columns: list[str], *, where: str) -> None:
    """Fail before training when `dataset` lacks a column that `where` needs, naming the column."""
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{where} needs the dataset column(s) {missing}, but the dataset has {dataset.column_names}. "
            "Rename the column in the data or point the recipe at the right one."
        )


def write_stage_card(
    output_dir: str,
    *,
    stage: str,
    parent: str,
    dataset: str,
    hyperparameters: dict,
    metrics: dict | None = None,
) -> None:
    """Add the deepseek-mini stage record to the model card that the trainer wrote in `output_dir`.

    The card then names the stage, the parent checkpoint, the data, the key hyperparameters and the held-out
    metrics; the same facts go to `stage.json` for programs (the pipeline reads it).
    """
    record = {"stage": stage, "parent": str(parent), "dataset": dataset, "hyperparameters": hyperparameters}
    if metrics:
        record["metrics"] = metrics
    with open(os.path.join(output_dir, "stage.json"), "w") as f:
        json.dump(record, f, indent=2, default=str)

    lines = [
        "",
        f"## deepseek-mini stage: {stage}",
        "",
        f"- parent checkpoint: `{parent}`",
        f"- data: `{dataset}`",
        f"- command: `{' '.join(sys.argv)}`",
        "",
        "| hyperparameter | value |",
        "| --- | --- |",
        *[f"| {key} | {value} |" for key, value in hyperparameters.items()],
    ]
    if metrics:
        lines += ["", "| held-out metric | value |", "| --- | --- |"]
        lines += [
            f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
            for key, value in metrics.items()
        ]
    with open(os.path.join(output_dir, "README.md"), "a") as f:
        f.write("\n".join(lines) + "\n")


def push_stage_folder(
    folder: str,
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload deepseek-mini stage",
):
    """Upload a finished stage folder (weights or data, tokenizer, card with the stage record, stage.json) to the Hub.

    Intermediate checkpoints and logs stay local. This runs after `write_stage_card`, so what lands on the Hub carries
    the stage record (a `Trainer.push_to_hub` would write a fresh model card without it).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True).repo_id
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type=repo_type,
        revision=revision,
        commit_message=commit_message,
        ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**", "_*"],
    )


TINY_CAUSAL_LM_PRESETS = {
    "qwen2-tiny": (
        "qwen2",
        {
            "hidden_size": 64,
            "intermediate_size": 192,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
    ),
    "llama-tiny": (
        "llama",
        {
            "hidden_size": 64,
            "intermediate_size": 192,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
    ),
    "qwen2-small": (
        "qwen2",
        {
            "hidden_size": 256,
            "intermediate_size": 768,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
        },
    ),
    "llama-small": (
        "llama",
        {
            "hidden_size": 256,
            "intermediate_size": 768,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
        },
    ),
}
"""Small Qwen2 / Llama shapes, built from a config (nothing downloaded): distillation students and reward models."""


def config_from_preset(preset: str, tokenizer, **overrides):
    """A transformers config of a `TINY_CAUSAL_LM_PRESETS` shape, sized to `tokenizer` (vocabulary, special tokens)."""
    from transformers import AutoConfig

    if preset not in TINY_CAUSAL_LM_PRESETS:
        raise ValueError(
            f"Unknown preset {preset!r}: choose one of {sorted(TINY_CAUSAL_LM_PRESETS)}, or give a model path."
        )
    model_type, shape = TINY_CAUSAL_LM_PRESETS[preset]
    values = {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        **shape,
        **overrides,
    }
    return AutoConfig.for_model(model_type, **values)


def replace_pickled_training_args(output_dir: str, training_args) -> None:
    """The Trainer saves its arguments as a pickle (`training_args.bin`); a folder meant for the Hub holds none:
    keep them as `training_args.json` instead. (Checkpoints keep theirs: only the run that wrote them reads them.)"""
    Path(output_dir, "training_args.bin").unlink(missing_ok=True)
    Path(output_dir, "training_args.json").write_text(training_args.to_json_string())


def finish_stage(
    trainer,
    training_args,
    *,
    stage: str,
    parent: str,
    dataset: str,
    hyperparameters: dict,
    metrics: dict | None = None,
) -> None:
    """Save, card and push a trained stage: model and tokenizer as safetensors (DeepseekMini also copies its code
    and writes `auto_map`), TRL's model card plus the stage record (`write_stage_card`), and, with `push_to_hub`,
    the whole folder to `hub_model_id` (default: the output folder's name)."""
    trainer.save_model(training_args.output_dir)
    if not trainer.accelerator.is_main_process:
        return
    replace_pickled_training_args(training_args.output_dir, training_args)
    trainer.create_model_card(dataset_name=dataset, tags=["deepseek-mini", stage])
    write_stage_card(
        training_args.output_dir,
        stage=stage,
        parent=parent,
        dataset=dataset,
        hyperparameters=hyperparameters,
        metrics=metrics,
    )
    if training_args.push_to_hub:
        push_stage_folder(
            training_args.output_dir,
            training_args.hub_model_id or Path(training_args.output_dir).resolve().name,
            private=training_args.hub_private_repo,
            token=training_args.hub_token,
            revision=training_args.hub_revision,
            commit_message=f"deepseek-mini stage {stage}",
        )
