"""The shared recipe library: datasets from every kind of source, argument parsing defaults, checkpoint discovery."""

import json

import pytest
from datasets import Dataset, DatasetDict

from recipes.lib.checkpoints import resume_checkpoint
from recipes.lib.data import BUILTIN_DATASET, load_any_dataset, require_columns

ROWS = [{"problem": "What is 1 + 2?", "solution": "3"}, {"problem": "What is 2 + 2?", "solution": "4"}]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_local_files(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    dataset = Dataset.from_list(ROWS)
    {".jsonl": dataset.to_json, ".json": dataset.to_json, ".csv": dataset.to_csv, ".parquet": dataset.to_parquet}[
        suffix
    ](str(path))
    loaded = load_any_dataset(str(path))
    assert loaded["train"]["solution"] in (["3", "4"], [3, 4])
    assert loaded["train"]["problem"] == [row["problem"] for row in ROWS]


def test_saved_folder_and_builtin(tmp_path):
    DatasetDict(train=Dataset.from_list(ROWS), test=Dataset.from_list(ROWS[:1])).save_to_disk(str(tmp_path / "d"))
    loaded = load_any_dataset(str(tmp_path / "d"))
    assert set(loaded) == {"train", "test"} and loaded["test"]["solution"] == ["3"]
    builtin = load_any_dataset(BUILTIN_DATASET, builtin_kwargs={"seed": 1, "n_train": 10, "n_test": 5})
    assert (len(builtin["train"]), len(builtin["test"])) == (10, 5)


def test_unreadable_file_names_the_fix(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"\.jsonl"):
        load_any_dataset(str(path))


def test_require_columns_names_the_column():
    with pytest.raises(ValueError, match="'answer'.*problem"):
        require_columns(Dataset.from_list(ROWS), ["answer"], where="the accuracy reward")


class Args:
    def __init__(self, output_dir, resume_from_checkpoint=None):
        self.output_dir, self.resume_from_checkpoint = str(output_dir), resume_from_checkpoint


def test_resume_skips_a_checkpoint_killed_while_saving(tmp_path):
    assert resume_checkpoint(Args(tmp_path / "missing")) is None
    for step in (2, 4, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (2, 4):  # checkpoint-10 was cut off before the Trainer wrote its state, which it writes last
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert resume_checkpoint(Args(tmp_path)).endswith("checkpoint-4")
    assert resume_checkpoint(Args(tmp_path, "somewhere/checkpoint-2")) == "somewhere/checkpoint-2"


@pytest.mark.parametrize("flags", [["--gradient_checkpointing", "true"], ["--gradient_checkpointing=true"]])
def test_deprecated_checkpointing_flag_still_wins_over_the_yaml(flags):
    """The shipped YAMLs set `activation_checkpointing: false`; transformers would let it silently beat the old flag."""
    from recipes.lib.cli import parse_recipe_args
    from recipes.sft import DEFAULT_CONFIG, make_parser

    _, training_args, _ = parse_recipe_args(make_parser(), DEFAULT_CONFIG, flags)
    assert training_args.activation_checkpointing is True
    _, training_args, _ = parse_recipe_args(make_parser(), DEFAULT_CONFIG, [])
    assert training_args.activation_checkpointing is False
