"""Where the recipes' files are, and how every entry point reads its command line (embedded YAML, CPU defaults)."""

import logging
import sys
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parent.parent
CONFIGS_DIR = RECIPES_DIR / "configs"
ACCELERATE_DIR = RECIPES_DIR / "accelerate"
TINY_BASE = RECIPES_DIR / "assets" / "tiny-base"


def with_default_config(argv: list[str] | None, default_config: Path) -> list[str]:
    """The command line (`sys.argv[1:]` when None), led by `--config default_config` unless it names a config."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return argv if "--config" in argv else ["--config", str(default_config), *argv]


# transformers 5.25 renamed gradient checkpointing to activation checkpointing. The old flags still parse, but lose
# silently to the new key that the shipped YAMLs set, so a recipe reads them as the new names.
RENAMED_FLAGS = {
    "--gradient_checkpointing": "--activation_checkpointing",
    "--gradient_checkpointing_kwargs": "--activation_checkpointing_kwargs",
}


def rename_deprecated_flags(argv: list[str]) -> list[str]:
    """`argv` with transformers' deprecated flag names (`--flag value` or `--flag=value`) replaced by the new ones."""
    renamed = []
    for arg in argv:
        flag, equals, value = arg.partition("=")
        if flag in RENAMED_FLAGS:
            logger.warning(f"{flag} is transformers' deprecated name for {RENAMED_FLAGS[flag]}: read as the latter.")
            arg = RENAMED_FLAGS[flag] + equals + value
        renamed.append(arg)
    return renamed


def parse_recipe_args(parser, default_config: Path, argv: list[str] | None = None) -> tuple:
    """Parse a recipe's command line the way every recipe does.

    - No `--config`: the embedded default `default_config` is used, so a recipe with no arguments does something
      real on any machine.
    - No GPU: `--use_cpu true --bf16 false --fp16 false` go first, ahead of the YAML's values (TRL's configs
      default to bf16, which a CPU refuses); flags the user writes come later and still win.
    """
    argv = rename_deprecated_flags(with_default_config(argv, default_config))
    if not torch.cuda.is_available():
        argv = ["--use_cpu", "true", "--bf16", "false", "--fp16", "false", *argv]
    return parser.parse_args_and_config(argv)
