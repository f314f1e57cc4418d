"""Refresh the model code inside every checkpoint the project ships (recipes/assets/*/) from the package.

    python recipes/refresh_assets.py

`from_pretrained(folder, trust_remote_code=True)` runs the folder's copy of the code in a fresh interpreter and the
package's once `modeling_deepseek_mini` is imported (its Auto registration wins). The two are kept byte-identical
instead of ordered: run this after editing modeling_deepseek_mini/; tests/test_pretrain.py fails until it is run.
Only the code files change: weights, config, tokenizer and card stay as trained.
"""

import json
import shutil
from pathlib import Path

from modeling_deepseek_mini import code_files
from recipes.common import RECIPES_DIR


def shipped_checkpoints() -> list[Path]:
    """The folders under recipes/assets that hold a checkpoint with custom code (an `auto_map` in config.json)."""
    configs = sorted((RECIPES_DIR / "assets").glob("*/config.json"))
    return [config.parent for config in configs if "auto_map" in json.loads(config.read_text())]


def refresh(folder: Path) -> None:
    """Copy the package's code files into `folder` and remove the Python files the package no longer ships."""
    names = {file.name for file in code_files()}
    for stale in folder.glob("*.py"):
        if stale.name not in names:
            stale.unlink()
    for file in code_files():
        shutil.copyfile(file, folder / file.name)


def main() -> None:
    for folder in shipped_checkpoints():
        refresh(folder)
        print(f"refreshed {folder}: {', '.join(file.name for file in code_files())}")


if __name__ == "__main__":
    main()
