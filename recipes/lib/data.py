"""Dataset loading and writing shared by the recipes: the built-in task, local files and folders, Hub ids."""

import os
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from recipes.lib.inputs import UserInputError

# The dataset name that selects the project's own synthetic task (recipes/lib/task.py) instead of a Hub id or a file.
BUILTIN_DATASET = "builtin"

_DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_any_dataset(
    name_or_path: str, config: str | None = None, *, builtin_kwargs: dict | None = None
) -> DatasetDict:
    """Load a dataset from the built-in task, a local file or folder, or a Hub id.

    - `"builtin"`: the project's synthetic verifiable-reasoning task (`recipes.lib.task.make_splits`).
    - a `.json`, `.jsonl`, `.parquet` or `.csv` file: one `train` split.
    - a folder written by `Dataset(Dict).save_to_disk`, or any folder `datasets.load_dataset` understands.
    - anything else: a Hub dataset id, with `config` as its configuration name.
    """
    if name_or_path == BUILTIN_DATASET:
        from recipes.lib.task import make_splits

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


def split_of(dataset: DatasetDict, split: str, *, flag: str, dataset_name: str) -> Dataset:
    """`dataset[split]`; a split the dataset lacks is the user's to name, so the error names the flag and the splits
    there are."""
    if split not in dataset:
        raise UserInputError(
            f"--{flag} {split}: {dataset_name} has no such split (it has {list(dataset)}); name the one to use with "
            f"--{flag} <split>."
        )
    return dataset[split]


def require_columns(
    dataset, columns: list[str], *, where: str, hint: str = "Rename the column in the data or point the recipe at it."
) -> None:
    """Fail before training when `dataset` lacks a column that `where` needs, naming the column and, in `hint`, the
    flag that maps another column to it."""
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise UserInputError(
            f"{where} needs the dataset column(s) {missing}, but the dataset has {dataset.column_names}. {hint}"
        )


def write_dataset(dataset: Dataset, output_dir: str) -> None:
    """`save_to_disk` (what `recipes/sft.py` and `load_from_disk` read) plus a `data.jsonl` copy for eyes and tools."""
    os.makedirs(output_dir, exist_ok=True)
    dataset.save_to_disk(output_dir)
    dataset.to_json(os.path.join(output_dir, "data.jsonl"), lines=True, force_ascii=False)
