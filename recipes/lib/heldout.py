"""A stage's held-out measurement, written once for every recipe: which problems (`HeldoutArguments`,
`load_heldout`), R1's signals on them (`heldout_metrics`, greedy and optionally R1's pass@1), and the
`<name>_before.json` / `<name>_after.json` files a stage leaves in its folder."""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from datasets import Dataset

from recipes.lib.data import BUILTIN_DATASET, load_any_dataset
from recipes.lib.evaluation import evaluate_protocols
from recipes.lib.prompts import PromptArguments, build_prompts
from recipes.lib.readability import builtin_vocabulary


@dataclass
class HeldoutArguments(PromptArguments):
    """The held-out measurement after training, shared by the SFT and distillation recipes and the pipeline's table
    (PromptArguments: how the held-out prompts are built)."""

    builtin_seed: int = field(default=0, metadata={"help": "Seed of the built-in task's splits (and built-in data)."})
    builtin_test_size: int = field(default=100, metadata={"help": "Held-out problems of the built-in task."})
    eval_heldout: bool = field(
        default=True, metadata={"help": "Measure the model on held-out problems after training (`eval_dataset_name`)."}
    )
    eval_dataset_name: str = field(
        default=BUILTIN_DATASET,
        metadata={
            "help": "Dataset whose `dataset_test_split` (with `problem` and `solution` columns) measures the model "
            f"after training; '{BUILTIN_DATASET}' is the arithmetic task's held-out split."
        },
    )
    eval_max_samples: int = field(default=100, metadata={"help": "Held-out problems measured after training."})
    eval_max_new_tokens: int = field(default=128, metadata={"help": "Generation budget of the held-out measurement."})

    def __post_init__(self):
        super().__post_init__()
        if self.eval_max_samples < 1 or self.eval_max_new_tokens < 1:
            raise ValueError("eval_max_samples and eval_max_new_tokens must be >= 1 (or set --eval_heldout false).")


def load_heldout(script_args: HeldoutArguments, split: str) -> Dataset | None:
    """The held-out problems of `split`, with prompts built as `prompt_template` says; None when evaluation is off."""
    if not script_args.eval_heldout:
        return None
    builtin = {"seed": script_args.builtin_seed, "n_train": 0, "n_test": script_args.builtin_test_size}
    splits = load_any_dataset(script_args.eval_dataset_name, builtin_kwargs=builtin)
    if split not in splits:
        raise ValueError(
            f"eval_dataset_name {script_args.eval_dataset_name!r} has no '{split}' split "
            f"(it has {list(splits)}): set --dataset_test_split, or --eval_heldout false to skip the measurement."
        )
    heldout = build_prompts(splits[split], script_args)
    return heldout.select(range(min(len(heldout), script_args.eval_max_samples)))


def reasoning_vocabulary(dataset_name: str) -> frozenset[str] | None:
    """The words a readable reasoning on `dataset_name` is written in: the built-in task's, or None (not known)."""
    return builtin_vocabulary() if dataset_name == BUILTIN_DATASET else None


def heldout_metrics(trainer, tokenizer, heldout: Dataset | None, **protocol) -> dict | None:
    """R1's signals of the trainer's model on the held-out problems (`evaluate_protocols`: greedy decoding, and
    pass@1 under R1's protocol with `r1_samples`), measured by the main process; None on the others, or without
    held-out problems."""
    if heldout is None or not trainer.accelerator.is_main_process:
        return None
    return evaluate_protocols(trainer.model, tokenizer, heldout, **protocol)


def save_heldout(output_dir: str, name: str, metrics: dict) -> None:
    """`<output_dir>/<name>.json` (e.g. `heldout_after.json`): held-out numbers for programs and eyes."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, f"{name}.json"), "w") as f:
        json.dump(metrics, f, indent=2)


def measured_before(output_dir: str, name: str, measure: Callable[[], dict]) -> dict:
    """The metrics before training, saved as `<name>.json` on first measurement: a resumed run reads them back and
    compares against the true start, not against its last checkpoint."""
    path = os.path.join(output_dir, f"{name}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    metrics = measure()
    save_heldout(output_dir, name, metrics)
    return metrics


def report_heldout_after(
    trainer, tokenizer, heldout: Dataset | None, script_args: HeldoutArguments, output_dir: str
) -> dict | None:
    """Measure the trained model greedily (`heldout_metrics`, within `eval_max_new_tokens`, unknown words counted
    against the held-out dataset's vocabulary), print the numbers and save them as `heldout_after.json`."""
    metrics = heldout_metrics(
        trainer,
        tokenizer,
        heldout,
        max_new_tokens=script_args.eval_max_new_tokens,
        r1_samples=0,
        vocabulary=reasoning_vocabulary(script_args.eval_dataset_name),
    )
    if metrics is not None:
        print(json.dumps(metrics, indent=2))
        save_heldout(output_dir, "heldout_after", metrics)
    return metrics
