"""Resuming survives a damaged checkpoint: `checkpoint_damage` names the truncated or unreadable file without loading
tensors, and `resume_checkpoint` skips a damaged checkpoint for the newest intact one, or fails naming the files."""

import json
import logging
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from datasets import DatasetDict
from safetensors.torch import save_file

from recipes.lib.checkpoints import DamagedCheckpointError, checkpoint_damage, resume_checkpoint
from recipes.lib.cli import parse_recipe_args
from recipes.lib.task import make_cold_start
from recipes.sft import DEFAULT_CONFIG, main, make_parser

# ----------------------------------------------------------------------------------------------------------------
# The checker, on hand-made files


def write_checkpoint(folder: Path, step: int = 0) -> Path:
    """A small checkpoint folder with every kind of file the Trainer writes: weights, torch zips and JSON."""
    folder.mkdir(parents=True)
    save_file({"weight": torch.arange(12, dtype=torch.float32).reshape(3, 4)}, str(folder / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.ones(3, 4)}}}, folder / "optimizer.pt")
    torch.save({"python": [1, 2, 3]}, folder / "rng_state.pth")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    return folder


def flip_data_byte(path: Path) -> None:
    """Invert the first data byte of the largest member of a zip archive in place: bit rot that keeps the length."""
    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[member.header_offset + 26 : member.header_offset + 30])
    data[member.header_offset + 30 + name_length + extra_length] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_intact_checkpoint_with_shards_has_no_damage(tmp_path):
    folder = write_checkpoint(tmp_path / "checkpoint-1")
    (folder / "model.safetensors").unlink()
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        save_file({shard[:14]: torch.zeros(2)}, str(folder / shard))
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    torch.save({"x": 1}, folder / "legacy.pt", _use_new_zipfile_serialization=False)  # not judged: a pickle
    assert checkpoint_damage(folder) == []


def truncate_past_header(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 20)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (
            lambda f: truncate_past_header(f / "model.safetensors"),
            r"model\.safetensors: cannot be read as safetensors \(.*incomplete metadata.*; [\d,]+ bytes\)",
        ),
        (lambda f: os.truncate(f / "model.safetensors", 30), r"model\.safetensors: cannot be read as safetensors"),
        (lambda f: os.truncate(f / "model.safetensors", 0), r"model\.safetensors: .*header too small.*; 0 bytes"),
        (
            lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 64),
            r"model\.safetensors: cannot be read as safetensors",
        ),
        (
            lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes() + b"\0" * 4),
            r"model\.safetensors: cannot be read as safetensors \(.*not fully covered",
        ),
        (lambda f: truncate_past_header(f / "optimizer.pt"), r"optimizer\.pt: damaged or truncated zip archive"),
        (lambda f: flip_data_byte(f / "optimizer.pt"), r"optimizer\.pt: damaged or truncated zip archive .*CRC"),
        (lambda f: (f / "rng_state.pth").write_bytes(b"\0" * 64), r"rng_state\.pth: not a torch zip archive"),
        (lambda f: os.truncate(f / "trainer_state.json", 5), r"trainer_state\.json: not valid JSON"),
        (
            lambda f: (f / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.st"}})),
            r"model\.safetensors\.index\.json: names shard\(s\) \['gone\.st'\] that are missing",
        ),
        (
            lambda f: (f / "scaler.pt").symlink_to(f / "nowhere.pt"),
            r"scaler\.pt: unreadable \(FileNotFoundError",
        ),
    ],
    ids=[
        "safetensors-truncated",
        "safetensors-header-cut",
        "safetensors-empty",
        "safetensors-overwritten",
        "safetensors-too-long",
        "torch-truncated",
        "torch-bit-flip",
        "torch-overwritten",
        "json-truncated",
        "index-missing-shard",
        "unreadable",
    ],
)
def test_each_kind_of_damage_is_named_with_its_file(tmp_path, damage, expected):
    folder = write_checkpoint(tmp_path / "checkpoint-8")
    damage(folder)
    found = checkpoint_damage(folder)
    assert len(found) == 1, found
    assert found[0].startswith("checkpoint-8/")
    assert re.search(expected, found[0]), found


class Args:
    def __init__(self, output_dir, resume_from_checkpoint=None):
        self.output_dir, self.resume_from_checkpoint = str(output_dir), resume_from_checkpoint


def test_resume_skips_damaged_checkpoints_for_the_newest_intact_one(tmp_path, caplog):
    for step in (2, 4, 6):
        write_checkpoint(tmp_path / f"checkpoint-{step}", step)
    truncate_past_header(tmp_path / "checkpoint-6" / "model.safetensors")
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{")
    with caplog.at_level(logging.WARNING, logger="recipes.lib.checkpoints"):
        assert resume_checkpoint(Args(tmp_path)) == str(tmp_path / "checkpoint-2")
    assert "checkpoint-6/model.safetensors: cannot be read as safetensors" in caplog.text
    assert "checkpoint-4/trainer_state.json: not valid JSON" in caplog.text


def test_resume_fails_naming_every_damaged_file_when_none_is_intact(tmp_path):
    for step in (2, 4):
        write_checkpoint(tmp_path / f"checkpoint-{step}", step)
    os.truncate(tmp_path / "checkpoint-4" / "optimizer.pt", 100)
    (tmp_path / "checkpoint-2" / "model.safetensors").write_bytes(b"")
    with pytest.raises(DamagedCheckpointError) as error:
        resume_checkpoint(Args(tmp_path))
    message = str(error.value)
    assert "checkpoint-4/optimizer.pt: damaged or truncated zip archive" in message
    assert "checkpoint-2/model.safetensors: cannot be read as safetensors" in message
    assert "Delete them" in message and "--output_dir" in message


def test_a_named_damaged_checkpoint_is_refused_not_replaced(tmp_path):
    for step in (2, 4):
        write_checkpoint(tmp_path / f"checkpoint-{step}", step)
    flip_data_byte(tmp_path / "checkpoint-2" / "rng_state.pth")
    named = str(tmp_path / "checkpoint-2")
    with pytest.raises(DamagedCheckpointError, match=r"--resume_from_checkpoint(.|\n)*checkpoint-2/rng_state\.pth"):
        resume_checkpoint(Args(tmp_path, named))
    assert resume_checkpoint(Args(tmp_path, str(tmp_path / "checkpoint-4"))) == str(tmp_path / "checkpoint-4")


# ----------------------------------------------------------------------------------------------------------------
# End to end: real SFT checkpoints of a tiny Qwen2, damaged, then resumed by the recipe


def sft_args(output_dir: Path, model: str, data: Path, max_steps: int, *extra: str):
    """A tiny SFT run that saves a checkpoint at every step."""
    argv = ["--model_name_or_path", model, "--dataset_name", str(data), "--output_dir", str(output_dir)]
    argv += ["--max_steps", str(max_steps), "--per_device_train_batch_size", "4", "--eval_heldout", "false"]
    argv += ["--save_strategy", "steps", "--save_steps", "1", "--logging_steps", "1", "--report_to", "none"]
    return parse_recipe_args(make_parser(), DEFAULT_CONFIG, [*argv, *extra])


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_causal_lm_path):
    """(model, data, output folder) of a three-step SFT run killed after its checkpoint-2: a finished run with its
    last checkpoint and `stage.json` removed (a finished stage is not resumed, `recipes.lib.stage`)."""
    root = tmp_path_factory.mktemp("sft-resume")
    data = root / "data"
    DatasetDict(train=make_cold_start(8)).save_to_disk(str(data))
    model = tiny_causal_lm_path("qwen2")
    main(*sft_args(root / "out", model, data, 3, "--save_total_limit", "3"))
    shutil.rmtree(root / "out" / "checkpoint-3")
    (root / "out" / "stage.json").unlink()
    assert {p.name for p in (root / "out").glob("checkpoint-*")} == {"checkpoint-1", "checkpoint-2"}
    return model, data, root / "out"


@pytest.fixture
def run_copy(sft_run, tmp_path):
    """A private copy of the two-step run's output folder, free to damage."""
    model, data, out = sft_run
    shutil.copytree(out, tmp_path / "out")
    return model, data, tmp_path / "out"


@pytest.mark.parametrize(
    "damage, named",
    [
        (
            lambda c: truncate_past_header(c / "model.safetensors"),
            "checkpoint-2/model.safetensors: cannot be read as safetensors",
        ),
        (lambda c: os.truncate(c / "optimizer.pt", 4096), "checkpoint-2/optimizer.pt: damaged or truncated zip"),
        (lambda c: os.truncate(c / "trainer_state.json", 40), "checkpoint-2/trainer_state.json: not valid JSON"),
    ],
    ids=["weights-truncated", "optimizer-truncated", "state-truncated"],
)
def test_a_run_resumes_past_a_damaged_newest_checkpoint_and_finishes(run_copy, resumed_from, caplog, damage, named):
    model, data, out = run_copy
    damage(out / "checkpoint-2")
    with caplog.at_level(logging.WARNING, logger="recipes.lib.checkpoints"):
        trainer = main(*sft_args(out, model, data, 3))
    assert named in caplog.text
    assert resumed_from == [str(out / "checkpoint-1")]
    assert trainer.state.global_step == 3
    assert checkpoint_damage(out / "checkpoint-3") == []


def test_a_run_with_every_checkpoint_damaged_fails_naming_the_files(run_copy):
    model, data, out = run_copy
    truncate_past_header(out / "checkpoint-2" / "model.safetensors")
    (out / "checkpoint-1" / "scheduler.pt").write_bytes(b"")
    with pytest.raises(DamagedCheckpointError) as error:
        main(*sft_args(out, model, data, 3))
    assert "checkpoint-2/model.safetensors: cannot be read as safetensors" in str(error.value)
    assert "checkpoint-1/scheduler.pt: empty (0 bytes)" in str(error.value)


def test_a_named_damaged_checkpoint_fails_before_training(run_copy):
    model, data, out = run_copy
    truncate_past_header(out / "checkpoint-1" / "model.safetensors")
    with pytest.raises(DamagedCheckpointError, match=r"checkpoint-1/model\.safetensors: cannot be read as safetensors"):
        main(*sft_args(out, model, data, 3, "--resume_from_checkpoint", str(out / "checkpoint-1")))
    assert not (out / "checkpoint-3").exists()
