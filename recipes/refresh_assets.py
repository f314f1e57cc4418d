"""Refresh the model code inside every checkpoint the project ships (recipes/assets/*/) from the package.

    python recipes/refresh_assets.py

`from_pretrained(folder, trust_remote_code=True)` runs the folder's copy of the code in a fresh interpreter and the
package's once `modeling_deepseek_mini` is imported (its Auto registration wins). The two are kept byte-identical
instead of ordered: run this after editing modeling_deepseek_mini/; tests/test_pretrain.py fails until it is run.
Only the code files change: weights, config, tokenizer and card stay as trained.
"""

import argparse

from modeling_deepseek_mini import code_files
from recipes.lib.assets import refresh, shipped_checkpoints


def make_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> None:
    make_parser().parse_args(argv)
    for folder in shipped_checkpoints():
        refresh(folder)
        print(f"refreshed {folder}: {', '.join(file.name for file in code_files())}")


if __name__ == "__main__":
    main()
