"""Every recipe in every launch mode, at tiny size: one process and two CPU processes (`accelerate launch` with
`recipes/accelerate/cpu_multi.yaml`), activation checkpointing on and off.

The cells run in two launches of `tests/workers/launch_modes.py` (one process, then two ranks), each running every
cell in sequence so that torch, transformers and TRL are imported once per process; each test then checks one cell
from the records its ranks wrote. A cell passes when every rank finished without error, trained the requested steps
with finite losses and changed every trainable parameter (a parameter the loss never reaches stays as it was: that
is how DeepseekMini's MTP modules went untrained in SFT), wrote the stage's folder, and, with two processes, both
ranks took part, trained on the same data and ended with identical weights (what DDP guarantees, and what an
unreduced bucket breaks). Rejection sampling trains nothing: its processes share the prompts, and the one dataset
written holds every prompt's samples.

`sft_dft` is the SFT recipe under TRL's own DFT loss, which never runs DeepseekMini's MTP modules: the one cell
where a part of the model is out of the loss's reach. It must train, on two processes with checkpointing too (which
used to die at the second step with `Expected to have finished reduction`), and say in the log what it left out.
"""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.lib.cli import ACCELERATE_DIR

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "workers" / "launch_modes.py")
MAX_STEPS = 2  # tests/workers/launch_modes.py's MAX_STEPS

TRAINING_RECIPES = ("grpo", "sft", "sft_dft", "distill", "reward_model", "pretrain")
CELLS = [f"{recipe}:{gc}" for recipe in TRAINING_RECIPES for gc in ("on", "off")] + ["rejection_sampling:-"]
"""Rejection sampling trains nothing (it samples and filters), so checkpointing does not apply to it."""

MTP_PREFIX = "model.layers.4."  # the shipped tiny base has 4 decoder layers; its MTP module is layer 4
NOT_REACHED_LOG = "This stage did not train 19 trainable parameter tensors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cmd: list[str], root: Path, timeout: int = 900) -> Path:
    """Run the worker on every cell, writing under `root`; return `root`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [*cmd, WORKER, str(root), *CELLS], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return root


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return launch([sys.executable], tmp_path_factory.mktemp("one-process"))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    config = str(ACCELERATE_DIR / "cpu_multi.yaml")
    accelerate = ["accelerate", "launch", "--config_file", config, "--main_process_port", str(free_port())]
    return launch(accelerate, tmp_path_factory.mktemp("two-processes"))


def read_cell(root: Path, cell: str, processes: int) -> tuple[Path, list[dict]]:
    """The cell's output folder and its ranks' records, after checking that every rank ran it without error."""
    recipe, gc = cell.split(":")
    folder = root / f"{recipe}-gc{gc}"
    records = [json.loads(path.read_text()) for path in sorted(folder.glob("_rank*.json"))]
    assert [r["rank"] for r in records] == list(range(processes)), f"{cell}: not every rank ran it"
    assert all(r["world_size"] == processes for r in records), f"{cell}: the ranks did not form one group"
    for record in records:
        assert record["error"] is None, f"{cell} failed on rank {record['rank']}:\n{record['error']}"
    return folder, records


def check_training_cell(root: Path, cell: str, processes: int) -> None:
    recipe, gc = cell.split(":")
    folder, records = read_cell(root, cell, processes)
    trainings = [record["trainings"] for record in records]
    assert all(len(t) == 1 for t in trainings), f"{cell}: expected one Trainer.train per rank, got {trainings}"
    runs = [t[0] for t in trainings]
    for run in runs:
        assert run["global_step"] == run["max_steps"] == MAX_STEPS, f"{cell}: {run['global_step']} steps"
        assert len(run["losses"]) == MAX_STEPS and all(math.isfinite(x) for x in run["losses"]), run["losses"]
        assert run["checkpointing"] == (gc == "on"), f"{cell}: activation checkpointing was {run['checkpointing']}"
    if recipe == "sft_dft":  # the loss leaves MTP out: untrained, and the log says so
        assert runs[0]["unchanged"] and all(name.startswith(MTP_PREFIX) for name in runs[0]["unchanged"])
        for record in records:
            assert any(NOT_REACHED_LOG in w for w in record["warnings"]), f"{cell}: the log does not say it"
    else:
        assert runs[0]["unchanged"] == [], f"{cell}: training left trainable parameters unchanged"
    assert len({run["digest"] for run in runs}) == 1, f"{cell}: the ranks ended with different weights"
    assert runs[0]["data_digest"] and len({run["data_digest"] for run in runs}) == 1, f"{cell}: other data per rank"
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists(), f"{cell}: no saved model"
    assert json.loads((folder / "stage.json").read_text())["stage"], f"{cell}: no stage record"


def check_rejection_sampling_cell(root: Path, processes: int) -> None:
    from datasets import load_from_disk

    folder, records = read_cell(root, "rejection_sampling:-", processes)
    stats = json.loads((folder / "filter_stats.json").read_text())
    assert stats["prompts"] == 4 and stats["sampled"] == 4 * 2, "a share of the prompts was not sampled"
    written = load_from_disk(str(folder))
    assert len(written) == stats["kept_reasoning"] + stats["general"] > 0
    assert [r["rows"] for r in records] == [len(written)] * processes, "the ranks returned other datasets"


@pytest.mark.parametrize("cell", CELLS)
def test_one_process(one_process, cell):
    if cell.startswith("rejection_sampling"):
        check_rejection_sampling_cell(one_process, 1)
    else:
        check_training_cell(one_process, cell, 1)


@pytest.mark.parametrize("cell", CELLS)
def test_two_processes(two_processes, cell):
    if cell.startswith("rejection_sampling"):
        check_rejection_sampling_cell(two_processes, 2)
    else:
        check_training_cell(two_processes, cell, 2)


# ------------------------------------------------------------------------------------------------------------------
# The shared set-up every recipe's trainer gets (recipes/lib/data_parallel.py), without launching anything


def training_args(**overrides):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir="unused", use_cpu=True, report_to="none", **overrides)


def test_unreached_parameters_are_tolerated_with_checkpointing_on_and_off():
    from recipes.lib.data_parallel import tolerate_unreached_parameters

    for checkpointing in (True, False):
        args = tolerate_unreached_parameters(training_args(activation_checkpointing=checkpointing))
        assert args.ddp_find_unused_parameters is True
    args = tolerate_unreached_parameters(
        training_args(activation_checkpointing=True, activation_checkpointing_kwargs={"preserve_rng_state": True})
    )
    assert args.activation_checkpointing_kwargs == {"preserve_rng_state": True, "use_reentrant": False}


def test_explicit_ddp_and_checkpointing_choices_are_kept(caplog):
    from recipes.lib.data_parallel import tolerate_unreached_parameters

    assert (
        tolerate_unreached_parameters(training_args(ddp_find_unused_parameters=False)).ddp_find_unused_parameters
        is False
    )
    reentrant = training_args(activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": True})
    with caplog.at_level("WARNING", logger="recipes.lib.data_parallel"):
        args = tolerate_unreached_parameters(reentrant)
    assert args.ddp_find_unused_parameters is None and args.activation_checkpointing_kwargs["use_reentrant"] is True
    assert "{'use_reentrant': false}" in caplog.text


def test_the_log_names_what_the_loss_never_reached(caplog):
    """A parameter missed at the first step only is named then, not at the end; one never reached is named at both."""
    import torch

    from recipes.lib.data_parallel import UnreachedParametersCallback

    model = torch.nn.ModuleDict(
        {"used": torch.nn.Linear(2, 2), "late": torch.nn.Linear(2, 2), "never": torch.nn.Linear(2, 3)}
    )
    callback = UnreachedParametersCallback()
    with caplog.at_level("WARNING", logger="recipes.lib.data_parallel"):
        model["used"](torch.ones(1, 2)).sum().backward()
        callback.on_pre_optimizer_step(None, None, None, model=model)
        assert "did not reach 4 trainable parameter tensors (15 values)" in caplog.text and "late.weight" in caplog.text
        caplog.clear()
        model["late"](torch.ones(1, 2)).sum().backward()
        callback.on_pre_optimizer_step(None, None, None, model=model)
        callback.on_train_end(None, None, None, model=model)
    assert "did not train 2 trainable parameter tensors (9 values)" in caplog.text
    assert "never.weight, never.bias" in caplog.text and "late" not in caplog.text
