"""The skeleton every training stage follows, written once: set up, train (resuming), save, card, push.

A recipe's `main` reads top to bottom as open-r1's do: `prepare_stage` (seeds, logs, and, before any work, how this
run relates to what its `output_dir` holds), data, model, trainer, `train_stage` (which resumes from the newest intact
checkpoint, `recipes.lib.checkpoints`), the held-out measurement (`recipes.lib.heldout`), then `finish_stage` (save,
model card with the stage record and a usage example, push).

Reruns lose nothing: a finished stage (its `stage.json` written) is refused unless `--overwrite true`, and a run
resumes a checkpoint only with the hyperparameters that trained it (`run_args.json` in every checkpoint).
"""

import json
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import transformers
from transformers import TrainerCallback, TrainerState, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from recipes.lib.checkpoints import resume_checkpoint
from recipes.lib.inputs import UserInputError

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STAGE_RECORD = "stage.json"  # written last by a finished stage: its presence marks the stage finished
RUN_ARGUMENTS = "run_args.json"  # the hyperparameters of the run that wrote a checkpoint, as JSON
BOOKKEEPING_FLAGS = {
    *("output_dir", "overwrite", "resume_from_checkpoint", "run_name", "report_to", "project", "disable_tqdm"),
    *("local_rank", "trust_remote_code", "ddp_timeout", "skip_memory_metrics", "dataloader_num_workers"),
    *("dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor"),
}
BOOKKEEPING_PREFIXES = ("logging_", "log_level", "save_", "hub_", "push_to_hub", "trackio_")
"""Flags that say where a run is saved, logged, tracked or pushed, which process it is, or how fast data loads, not
what it learns: a resumed run may change them."""


class RerunRefusedError(UserInputError):
    """A run into an `output_dir` would lose or mix work: a finished stage without `--overwrite`, or a resume with
    other hyperparameters than the checkpoint's. The message names what and says what to write instead."""


@dataclass
class StageArguments:
    """What a run does with an `output_dir` that already holds this stage (every training recipe's arguments)."""

    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Train from the start into an output_dir that holds a finished stage or another run's "
            "checkpoints, deleting those checkpoints first. Without it a finished stage is refused, and an "
            "unfinished one resumes from its last checkpoint with the same hyperparameters."
        },
    )


@dataclass(frozen=True)
class StageRun:
    """How this run relates to its `output_dir`: its hyperparameters (`run_arguments`) and the checkpoint it
    resumes from (None: from the start)."""

    arguments: dict
    resume_from: str | None


def run_arguments(*arguments) -> dict:
    """The run's hyperparameters: every field of its argument dataclasses (script, training, model), flat as on the
    command line and JSON-valued, less the `BOOKKEEPING_FLAGS` that say where it is saved, logged or pushed."""
    values = {}
    for args in arguments:
        as_dict = args.to_dict() if hasattr(args, "to_dict") else {f.name: getattr(args, f.name) for f in fields(args)}
        values |= {
            name: value
            for name, value in as_dict.items()
            if not name.startswith("_") and name not in BOOKKEEPING_FLAGS and not name.startswith(BOOKKEEPING_PREFIXES)
        }
    return json.loads(json.dumps(values, default=str))


def is_finished(output_dir: str | Path) -> bool:
    """Whether `output_dir` holds a finished stage: `finish_stage` writes `stage.json` after the model and card."""
    return (Path(output_dir) / STAGE_RECORD).is_file()


def clear_previous_run(output_dir: Path) -> None:
    """Delete what a rerun would otherwise read back from an earlier run in `output_dir`: its checkpoints (resumed
    from, rotated with the new ones), its measurements before training (`measured_before`) and its `stage.json`."""
    stale = sorted([*output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"), *output_dir.glob("*_before.json")])
    stale += [output_dir / STAGE_RECORD] if is_finished(output_dir) else []
    if stale:
        logger.warning(
            f"--overwrite true: training {output_dir} again from the start; deleting the earlier run's "
            f"{', '.join(path.name for path in stale)}."
        )
    for path in stale:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def check_same_hyperparameters(checkpoint: str, arguments: dict) -> None:
    """Refuse to resume `checkpoint` when this run's hyperparameters differ from those that trained it (its
    `run_args.json`), naming each changed flag; a checkpoint without the file (an older version's) is resumed with a
    warning. The Trainer's own `training_args.bin` is a pickle and is never loaded."""
    saved_file = Path(checkpoint) / RUN_ARGUMENTS
    if not saved_file.is_file():
        logger.warning(f"{checkpoint} has no {RUN_ARGUMENTS}: resuming without checking its hyperparameters.")
        return
    saved = json.loads(saved_file.read_text())
    changed = [
        f"--{name} {json.dumps(saved[name])} (now {json.dumps(value)})"
        for name, value in arguments.items()
        if name in saved and saved[name] != value
    ]
    if changed:
        raise RerunRefusedError(
            f"Cannot resume {checkpoint}: it was trained with {', '.join(changed)}. Rerun with its values to "
            "continue it, --overwrite true to train from the start, or another --output_dir."
        )


def start_or_resume(training_args, overwrite: bool, arguments: dict) -> str | None:
    """The checkpoint this run resumes from, decided before any work: none with `overwrite` (the earlier run is
    cleared, by the main process while the others wait), else `resume_checkpoint`'s, checked to have been trained
    with the same hyperparameters. A finished stage is refused: rerunning it would retrain and overwrite it."""
    output_dir = Path(training_args.output_dir)
    if overwrite:
        if training_args.resume_from_checkpoint:
            raise RerunRefusedError(
                "--overwrite true trains from the start, --resume_from_checkpoint from a checkpoint: pass one of them."
            )
        with training_args.main_process_first(local=False, desc="clearing the earlier run"):
            clear_previous_run(output_dir)
        return None
    if is_finished(output_dir):
        raise RerunRefusedError(
            f"{output_dir} holds a finished stage ({STAGE_RECORD}); not retraining it. Pass --overwrite true to "
            "train it again from the start, or choose another --output_dir."
        )
    checkpoint = resume_checkpoint(training_args)
    if checkpoint:
        check_same_hyperparameters(checkpoint, arguments)
    return checkpoint


def refuse_finished_data(output_dir: str, overwrite: bool) -> None:
    """A data-writing recipe's rerun check: a finished folder (its `stage.json` written) is replaced only with
    `--overwrite true`; the stages trained on it would otherwise no longer match it."""
    if is_finished(output_dir) and not overwrite:
        raise RerunRefusedError(
            f"{output_dir} holds finished data ({STAGE_RECORD}); not writing it again. Pass --overwrite true to "
            "replace it, or choose another --output_dir."
        )


def set_up_stage(training_args) -> None:
    """Seed every generator with the run's seed and set this process's log format and level (transformers' too)."""
    set_seed(training_args.seed)
    logging.basicConfig(format=LOG_FORMAT, level=training_args.get_process_log_level())
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())


def prepare_stage(script_args, training_args, model_args=None) -> StageRun:
    """A training recipe's first step: `set_up_stage`, then decide how the run relates to its `output_dir`
    (`start_or_resume`) before any data or model is loaded. `script_args` carries `StageArguments`."""
    set_up_stage(training_args)
    arguments = run_arguments(*(args for args in (script_args, training_args, model_args) if args is not None))
    return StageRun(arguments, start_or_resume(training_args, script_args.overwrite, arguments))


class RunArgumentsCallback(TrainerCallback):
    """Writes the run's hyperparameters into every checkpoint it saves (`run_args.json`), for a resumed run to
    compare with its own (`check_same_hyperparameters`)."""

    def __init__(self, arguments: dict):
        self.arguments = arguments

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir():
            (checkpoint / RUN_ARGUMENTS).write_text(json.dumps(self.arguments, indent=2))


def trained_to_the_end(checkpoint: str | None) -> TrainerState | None:
    """The trainer state of `checkpoint` when it is the last of its run (`global_step` reached `max_steps`: the run
    was stopped after training, e.g. during the measurement after it), else None."""
    if checkpoint is None:
        return None
    state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME))
    return state if state.max_steps and state.global_step >= state.max_steps else None


def train_stage(trainer, run: StageRun) -> None:
    """Train from the start or from `run.resume_from`, with every checkpoint carrying the run's hyperparameters, and
    keep the train metrics and trainer state in `output_dir`. A checkpoint that ends its run is loaded, not trained
    from: the Trainer would take a step past the end of a run that ends mid-epoch."""
    trainer.add_callback(RunArgumentsCallback(run.arguments))
    final_state = trained_to_the_end(run.resume_from)
    if final_state is not None:
        logger.warning(f"{run.resume_from} ends the run (step {final_state.global_step}): loading it, not training.")
        trainer._load_from_checkpoint(run.resume_from)
        trainer.state = final_state
    else:
        train_result = trainer.train(resume_from_checkpoint=run.resume_from)
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
    training: dict | None = None,
) -> None:
    """Add the deepseek-mini stage record to the model card that the trainer wrote in `output_dir`.

    The card then names the stage, the parent checkpoint, the data, the key hyperparameters, how training ran
    (`training`: steps, the checkpoint it resumed from) and the held-out metrics; the same facts go to `stage.json`
    for programs (the pipeline reads it). `stage.json` is written last: its presence marks the stage finished
    (`is_finished`).
    """
    record = {"stage": stage, "parent": str(parent), "dataset": dataset, "hyperparameters": hyperparameters}
    if training:
        record["training"] = training
    if metrics:
        record["metrics"] = metrics

    lines = [
        "",
        f"## deepseek-mini stage: {stage}",
        "",
        f"- parent checkpoint: `{parent}`",
        f"- data: `{dataset}`",
        f"- command: `{' '.join(sys.argv)}`",
        *[f"- {key}: `{value}`" for key, value in (training or {}).items()],
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
    with open(os.path.join(output_dir, STAGE_RECORD), "w") as f:
        json.dump(record, f, indent=2, default=str)


USAGE_PROBLEM = "What is 8 + 6 + 7 + 4?"
USAGE_NOTE = (
    "Chat messages work as they are: the project's chat template adds R1-Zero's instruction as the system message "
    "when none is given, so the model is prompted exactly as in training. The answer is the text between "
    "`<answer>` and `</answer>`."
)


def usage_example(model: str) -> str:
    """The card's copy-paste example: chat with the checkpoint `model` (a folder or Hub id) through
    `transformers.pipeline`, greedy as the held-out measurement; the tests run it as written."""
    return f"""from transformers import pipeline

generator = pipeline("text-generation", model="{model}", trust_remote_code=True)
messages = [{{"role": "user", "content": "{USAGE_PROBLEM}"}}]
reply = generator(messages, max_new_tokens=128, do_sample=False)[0]["generated_text"][-1]["content"]
print(reply)
"""


TRL_QUICK_START = re.compile(r"## Quick start\n\n```python\n.*?```\n", re.DOTALL)


def write_usage_section(output_dir: str, model: str) -> None:
    """Put the card's copy-paste example (`usage_example`) where TRL's quick start was, or at the end of a card
    without one: TRL's names the model 'None' for a local folder, omits `trust_remote_code` and asks an unrelated
    question."""
    readme = Path(output_dir, "README.md")
    card = readme.read_text() if readme.exists() else ""
    example = usage_example(model).rstrip("\n")
    section = "\n".join(["## Use it", "", USAGE_NOTE, "", "```python", example, "```", ""])
    card, replaced = TRL_QUICK_START.subn(lambda _: section, card, count=1)
    readme.write_text(card if replaced else f"{card}\n{section}")


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
    run: StageRun,
    *,
    stage: str,
    parent: str,
    dataset: str,
    hyperparameters: dict,
    metrics: dict | None = None,
    training: dict | None = None,
) -> None:
    """Save, card and push a trained stage: model and tokenizer as safetensors (DeepseekMini also copies its code
    and writes `auto_map`), TRL's model card with, for a model that generates, the usage example
    (`write_usage_section`), plus the stage record (`write_stage_card`: what ran; `training` adds facts about how it
    trained to the steps and the checkpoint resumed from), and, with `push_to_hub`, the whole folder to
    `hub_model_id` (default: the output folder's name)."""
    trainer.save_model(training_args.output_dir)
    if not trainer.accelerator.is_main_process:
        return
    replace_pickled_training_args(training_args.output_dir, training_args)
    trainer.create_model_card(dataset_name=dataset, tags=["deepseek-mini", stage])
    hub_id = training_args.hub_model_id or Path(training_args.output_dir).resolve().name
    if trainer.accelerator.unwrap_model(trainer.model).can_generate():
        write_usage_section(training_args.output_dir, hub_id if training_args.push_to_hub else training_args.output_dir)
    write_stage_card(
        training_args.output_dir,
        stage=stage,
        parent=parent,
        dataset=dataset,
        hyperparameters=hyperparameters,
        metrics=metrics,
        training={"steps": trainer.state.global_step, "resumed_from": run.resume_from, **(training or {})},
    )
    if training_args.push_to_hub:
        push_stage_folder(
            training_args.output_dir,
            hub_id,
            private=training_args.hub_private_repo,
            token=training_args.hub_token,
            revision=training_args.hub_revision,
            commit_message=f"deepseek-mini stage {stage}",
        )
