"""Run by tests/test_launch_modes.py: several recipe cells in sequence, in one process or in each rank of a
`torchrun` / `accelerate launch` group, so torch, transformers and TRL are imported once for all of them.

    python tests/workers/launch_modes.py OUT_ROOT sft:on grpo:off rejection_sampling:-
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 tests/workers/launch_modes.py OUT_ROOT sft:on ...

A cell is `recipe:gc` with gc `on`, `off` or `-` (a recipe that does not train). Each cell runs the recipe's own
`parse` and `main` at tiny size into `OUT_ROOT/<recipe>-gc<gc>`, and each rank writes there `_rank<r>.json`: world
size, the error if the cell failed, the WARNINGs of the recipes' loggers, and for every `Trainer.train` it ran the
steps done, the logged losses, whether activation checkpointing was on, digests of the training data and of the
weights, and the trainable parameters that training left unchanged. A failed cell does not stop the others.
"""

import hashlib
import json
import logging
import sys
import traceback
from pathlib import Path

import torch
import transformers
from datasets import Dataset

from recipes import pretrain
from recipes.lib.cli import end_process_group, parse_recipe_args
from recipes.pipeline import RECIPES

MAX_STEPS = 2

MICRO_DEEPSEEK = '{"hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16, "num_hidden_layers": 2}'

TINY_ARGS = {
    "grpo": [
        "--builtin_train_size", "32", "--builtin_test_size", "4", "--eval_heldout", "false",
        "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "12",
        "--expert_bias_update_speed", "0.01", "--reward_funcs", "format", "tag_count",
    ],
    "sft": [
        "--builtin_train_size", "16", "--per_device_train_batch_size", "4", "--max_length", "256",
        "--eval_heldout", "false",
    ],
    "distill": [
        "--max_prompts", "8", "--trace_num_generations", "4", "--trace_max_new_tokens", "96",
        "--per_device_train_batch_size", "2", "--max_length", "256", "--eval_heldout", "false",
    ],
    "sft_dft": [  # TRL's own SFT loss (fused LM head), which never runs DeepseekMini's MTP modules
        "--loss_type", "dft", "--builtin_train_size", "16", "--per_device_train_batch_size", "4", "--max_length",
        "256", "--eval_heldout", "false",
    ],
    "reward_model": [
        "--builtin_train_size", "32", "--builtin_test_size", "8", "--per_device_train_batch_size", "8",
        "--max_length", "256",
    ],
    "rejection_sampling": [
        "--max_prompts", "4", "--builtin_train_size", "32", "--num_generations", "2", "--max_new_tokens", "24",
        "--filters", "dedup",
    ],
    "pretrain": [
        "--corpus_size", "64", "--tokenizer_docs", "64", "--drill_docs", "16", "--eval_heldout", "false",
        "--model_overrides", MICRO_DEEPSEEK, "--per_device_train_batch_size", "4",
    ],
}  # fmt: skip
"""Each recipe at tiny size (a few seconds a step on a CPU), on top of its embedded default YAML."""

TRAINER_ARGS = ["--max_steps", str(MAX_STEPS), "--save_strategy", "no", "--logging_steps", "1", "--report_to", "none"]


def cell_argv(recipe: str, gc: str, output_dir: Path) -> list[str]:
    """The command line of one cell: tiny size, `MAX_STEPS` optimizer steps, gradient checkpointing `gc`."""
    argv = [*TINY_ARGS[recipe], "--output_dir", str(output_dir)]
    if gc != "-":
        argv += [*TRAINER_ARGS, "--activation_checkpointing", "true" if gc == "on" else "false"]
    return argv


def script(recipe: str) -> str:
    """The recipe a cell runs: `sft_dft` is the SFT recipe with another loss."""
    return "sft" if recipe == "sft_dft" else recipe


def parse(recipe: str, argv: list[str]) -> tuple:
    """The recipe's arguments exactly as its script parses them (the pipeline's registry; pretrain is not in it)."""
    if recipe == "pretrain":
        return parse_recipe_args(pretrain.make_parser(), pretrain.DEFAULT_CONFIG, argv)
    return RECIPES[script(recipe)].parse(argv)


def run_recipe(recipe: str, args: tuple):
    """The recipe's `main` on `args`; returns what it returns (rejection sampling: its dataset)."""
    return pretrain.main(*args) if recipe == "pretrain" else RECIPES[script(recipe)].main(*args)


# ------------------------------------------------------------------------------------------------------------------
# What each rank records about the trainings a cell runs


def trainable(model) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def weights_digest(model) -> str:
    """SHA-256 of every parameter and buffer in name order: equal on two ranks only if their models are equal."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def data_digest(dataset) -> str | None:
    """SHA-256 of a (tiny) training set's rows: equal on two ranks only if they train on the same data."""
    if dataset is None or not hasattr(dataset, "to_list"):
        return None
    return hashlib.sha256(json.dumps(dataset.to_list(), sort_keys=True, default=str).encode()).hexdigest()


def record_trainings(trainings: list[dict]):
    """Wrap `Trainer.train` so that each call appends what it did to `trainings`; returns the original."""
    original = transformers.Trainer.train

    def train(self, *args, **kwargs):
        before = {name: p.detach().clone() for name, p in trainable(self.model).items()}
        result = original(self, *args, **kwargs)
        after = trainable(self.model)
        trainings.append(
            {
                "trainer": type(self).__name__,
                "global_step": self.state.global_step,
                "max_steps": self.state.max_steps,
                "losses": [row["loss"] for row in self.state.log_history if "loss" in row],
                "digest": weights_digest(self.model),
                "data_digest": data_digest(self.train_dataset),
                "checkpointing": bool(getattr(self.model, "is_gradient_checkpointing", False)),
                "trainable": len(before),
                "unchanged": sorted(n for n, p in before.items() if n in after and torch.equal(p, after[n].detach())),
            }
        )
        return result

    transformers.Trainer.train = train
    return original


class WarningsOf(logging.Handler):
    """Collects the messages of the WARNINGs that the recipes' loggers emit while attached."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_cell(root: Path, cell: str, rank: int, world_size: int) -> None:
    recipe, gc = cell.split(":")
    output_dir = root / f"{recipe}-gc{gc}"
    trainings: list[dict] = []
    original = record_trainings(trainings)
    warnings = WarningsOf()
    logging.getLogger("recipes").addHandler(warnings)
    record = {"cell": cell, "rank": rank, "world_size": world_size, "error": None, "rows": None}
    try:
        result = run_recipe(recipe, parse(recipe, cell_argv(recipe, gc, output_dir)))
        record["rows"] = len(result) if isinstance(result, Dataset) else None
    except BaseException:  # noqa: BLE001  (the record names the failure; the next cells still run)
        record["error"] = traceback.format_exc()
    finally:
        transformers.Trainer.train = original
        logging.getLogger("recipes").removeHandler(warnings)
    record["trainings"] = trainings
    record["warnings"] = warnings.messages
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"_rank{rank}.json").write_text(json.dumps(record, indent=2, default=float))
    status = "failed" if record["error"] else "ok"
    print(f"[launch_modes] rank {rank}/{world_size} cell {cell}: {status}", flush=True)


def main(root: str, cells: list[str]) -> None:
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    for cell in cells:
        run_cell(Path(root), cell, state.process_index, state.num_processes)
    end_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
