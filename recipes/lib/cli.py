"""Where the recipes' files are, and how every entry point reads its command line (embedded YAML, CPU defaults)."""

import logging
import sys
from pathlib import Path

import torch
from transformers import TrainingArguments

from recipes.lib.inputs import (
    UserInputError,
    check_known_flags,
    check_known_keys,
    check_numeric_ranges,
    dataclass_keys,
    read_yaml,
)

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


def strict(parser):
    """`parser`, made to refuse a prefix of a flag (argparse reads `--max_step` as `--max_steps`) and to raise
    `UserInputError` with argparse's one-line reason instead of printing its usage (hundreds of lines for TRL's
    configs) and exiting."""
    parser.allow_abbrev = False
    parser.error = raise_user_error
    return parser


def raise_user_error(message: str):
    """argparse's `error`, as a `UserInputError` that an entry point prints (`run_entry_point`)."""
    raise UserInputError(message)


def parse_recipe_args(parser, default_config: Path, argv: list[str] | None = None) -> tuple:
    """Parse a recipe's command line the way every recipe does, refusing a bad value before any work starts.

    - No `--config`: the embedded default `default_config` is used, so a recipe with no arguments does something
      real on any machine. The YAML is read here first, so that a syntax error names its file, line and column and a
      misspelled key its closest valid names (`recipes.lib.inputs`).
    - No GPU, for a recipe that trains: `--use_cpu true --bf16 false --fp16 false` go first, ahead of the YAML's
      values (TRL's configs default to bf16, which a CPU refuses); flags the user writes come later and still win.
    - A flag that the parser does not define, a prefix of one (`--learning_rat`) included, is refused with the
      closest flags (`strict` makes argparse refuse the prefix too).
    - A value that a dataclass refuses, or that is out of `NUMERIC_RANGES`, raises `UserInputError`.
    """
    argv = rename_deprecated_flags(with_default_config(argv, default_config))
    config = argv[argv.index("--config") + 1]
    check_known_keys(read_yaml(config), dataclass_keys(parser.dataclass_types) | {"env"}, where=config)
    if not torch.cuda.is_available() and any(issubclass(t, TrainingArguments) for t in parser.dataclass_types):
        argv = ["--use_cpu", "true", "--bf16", "false", "--fp16", "false", *argv]
    check_known_flags(argv, parser)
    try:
        arguments = strict(parser).parse_args_and_config(argv)
    except UserInputError:
        raise
    except ValueError as error:  # the dataclasses' own checks (`__post_init__`): a value the user wrote
        raise UserInputError(str(error)) from None
    check_numeric_ranges(*arguments)
    return arguments


def end_process_group() -> None:
    """Destroy torch.distributed's process group, if one is up. Left to the interpreter's exit, Gloo's worker threads
    can abort a rank whose run succeeded (SIGABRT, "terminate called without an active exception"), failing the
    launch. Call it once training is over on every rank; a rank that failed skips it, since destroying the group
    while the other ranks are inside a collective can hang them."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def run_entry_point(run) -> None:
    """Run an entry point (`run()`, e.g. `main(*parse_recipe_args(...))`), printing a user's error (`UserInputError`)
    as its one or two lines and exiting with status 2, as argparse does for a bad flag, instead of a traceback. After
    a run that succeeded, end the process group of a distributed launch (`end_process_group`)."""
    try:
        run()
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    end_process_group()
