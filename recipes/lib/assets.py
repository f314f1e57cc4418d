"""The checkpoints the project ships (recipes/assets/*/) and the model code inside them, kept byte-identical to the
package's: `from_pretrained(folder, trust_remote_code=True)` runs the folder's copy in a fresh interpreter and the
package's once `modeling_deepseek_mini` is imported (its Auto registration wins), so the two must not drift.
"""

import json
import shutil
from pathlib import Path

from modeling_deepseek_mini import code_files
from recipes.lib.cli import RECIPES_DIR


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
