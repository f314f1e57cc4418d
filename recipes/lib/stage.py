"""The skeleton every training stage follows, written once: set up, train (resuming), save, card, push.

A recipe's `main` reads top to bottom as open-r1's do: `set_up_stage`, data, model, trainer, `train_stage` (which
resumes from the newest intact checkpoint, `recipes.lib.checkpoints`), the held-out measurement
(`recipes.lib.heldout`), then `finish_stage` (save, model card with the stage record, push).
"""

import json
import logging
import os
import sys
from pathlib import Path

import transformers
from transformers import set_seed

from recipes.lib.checkpoints import resume_checkpoint

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def set_up_stage(training_args) -> None:
    """Seed every generator with the run's seed and set this process's log format and level (transformers' too)."""
    set_seed(training_args.seed)
    logging.basicConfig(format=LOG_FORMAT, level=training_args.get_process_log_level())
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())


def train_stage(trainer, training_args) -> None:
    """Train, resuming from the checkpoint `resume_checkpoint` picks (none in a fresh `output_dir`), and keep the
    train metrics and trainer state in `output_dir`."""
    train_result = trainer.train(resume_from_checkpoint=resume_checkpoint(training_args))
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()


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
