"""Checks of a user's input made before any work starts, each failing with one or two lines that name the value and
say what to write instead: numeric ranges, YAML syntax and keys, local paths and Hub ids, reward names.

A failed check raises `UserInputError`; the entry points (`recipes.lib.cli.run_entry_point`) print its message
without a traceback, while a recipe called from Python still raises it.
"""

import dataclasses
import difflib
import os
from pathlib import Path

import yaml
from huggingface_hub import HfApi, constants

import rewards
from recipes.lib.grpo_trainer import is_model_id
from rewards.aliases import ALIASES


class UserInputError(ValueError):
    """A value the user wrote is wrong; the message names it and says what to write instead."""


# ------------------------------------------------------------------------------------------------------------------
# Numeric ranges

POSITIVE_INT = (lambda value: value >= 1, "a positive integer")
NUMERIC_RANGES = {
    "max_steps": (lambda value: value == -1 or value >= 0, "-1 (train by num_train_epochs) or a number of steps >= 0"),
    "learning_rate": (lambda value: value > 0, "a positive number, e.g. 1e-5"),
    "num_train_epochs": (lambda value: value >= 0, "a number of epochs >= 0"),
    "per_device_train_batch_size": POSITIVE_INT,
    "per_device_eval_batch_size": POSITIVE_INT,
    "gradient_accumulation_steps": POSITIVE_INT,
    "num_generations": POSITIVE_INT,
    "max_completion_length": POSITIVE_INT,
    "max_new_tokens": POSITIVE_INT,
    "trace_num_generations": POSITIVE_INT,
    "builtin_train_size": POSITIVE_INT,
    "builtin_test_size": POSITIVE_INT,
    "eval_max_samples": (lambda value: value >= 0, "a number of problems >= 0"),
}
"""Field -> (whether a value is valid, what to write instead), for every field of that name in any recipe's
arguments. Ranges a recipe alone has are checked in its own dataclass (e.g. GRPO's num_generations >= 2)."""


def check_numeric_ranges(*arguments) -> None:
    """Refuse a value of `NUMERIC_RANGES` out of its range in any of the parsed dataclasses `arguments` (e.g.
    `--max_steps -5`, which transformers would otherwise read as "train by epochs")."""
    for args in arguments:
        for name, (valid, instead) in NUMERIC_RANGES.items():
            value = getattr(args, name, None)
            if isinstance(value, int | float) and not isinstance(value, bool) and not valid(value):
                raise UserInputError(f"--{name} {value}: write {instead}.")


# ------------------------------------------------------------------------------------------------------------------
# YAML


def read_yaml(path: str | Path) -> dict:
    """The mapping in the YAML file `path`; a missing file, a syntax error (file, line and column first) or a
    non-mapping fails in one line."""
    if not Path(path).is_file():
        raise UserInputError(f"--config {path}: no such file.")
    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise UserInputError(f"{where}: the YAML does not parse: {getattr(error, 'problem', error)}.") from None
    if not isinstance(values, dict):
        raise UserInputError(f"{path}: the YAML must be a mapping of `key: value` lines, got {type(values).__name__}.")
    return values


def check_known_keys(keys, known, *, where: str) -> None:
    """Refuse keys (YAML keys, or flags) that are not in `known`, naming each with its closest valid names: a
    misspelling's fix, where TRL would advise a setting the command line cannot make."""
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise UserInputError(
            f"{where}: unknown " + "; ".join(f"{key!r} (did you mean {closest(key, known)}?)" for key in unknown) + "."
        )


def check_known_flags(argv: list[str], parser) -> None:
    """Refuse a `--flag` that `parser` does not define, a prefix of a real one included (argparse would read
    `--max_step` as `--max_steps`), naming the closest flags."""
    options = parser._option_string_actions  # argparse's option strings (no public accessor)
    known = {option for option in options if "-" not in option[2:]} | {"--config"}  # `--config`: TRL reads it itself
    flags = [underscored(arg.partition("=")[0]) for arg in argv if arg.startswith("--")]
    check_known_keys(flags, known, where="the command line")


def underscored(flag: str) -> str:
    """`--learning-rate` as `--learning_rate`: transformers accepts both spellings of a flag; errors name the latter."""
    return "--" + flag[2:].replace("-", "_")


def closest(name: str, choices) -> str:
    """The valid names closest to `name` (a misspelling's likely fix), quoted, or a pointer to --help."""
    matches = difflib.get_close_matches(name, sorted(choices), n=3, cutoff=0.6)
    return " or ".join(map(repr, matches)) if matches else "none close (see --help)"


def dataclass_keys(dataclass_types) -> set[str]:
    """Every field name of `dataclass_types`: the keys a recipe's YAML may set."""
    return {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}


# ------------------------------------------------------------------------------------------------------------------
# Paths

DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")
PATH_FIELDS = (
    "model_name_or_path",
    "teacher_model_name_or_path",
    "dataset_name",
    "prompts_dataset_name",
    "eval_dataset_name",
    "general_dataset_name",
)
"""Fields naming a model or dataset by folder, file or Hub id, checked by `check_paths`."""


def looks_local(name: str) -> bool:
    """Whether `name` is meant as a file or folder rather than a Hub id: it starts with ./, ../, / or ~, ends in a
    data file's suffix, has more than one '/' (a Hub id has one), or its first part is a folder here (`outputs/x`)."""
    return (
        name.startswith(("./", "../", "/", "~"))
        or name.endswith(DATA_SUFFIXES)
        or name.count("/") > 1
        or (os.sep in name and Path(name.split(os.sep)[0]).is_dir())
    )


def check_local_path(name: str | None, flag: str) -> None:
    """Refuse a name that looks local (`looks_local`) but is no file or folder, before the Hub is asked about it."""
    if name and looks_local(name) and not Path(name).expanduser().exists():
        raise UserInputError(f"--{flag}: no such file or folder: {name} (a Hub id is written 'owner/name').")


def check_hub_id(name: str, flag: str, repo_type: str) -> None:
    """Refuse a Hub id (`owner/name`, not a file or folder here) that the Hub says does not exist, before anything
    loads. Offline (`HF_HUB_OFFLINE`), or when the Hub cannot be reached, nothing is said: the load decides."""
    if constants.HF_HUB_OFFLINE or Path(name).expanduser().exists() or looks_local(name) or name.count("/") != 1:
        return
    try:
        exists = HfApi().repo_exists(name, repo_type=repo_type)
    except Exception:  # no network, a proxy, a timeout: not the user's mistake, and not ours to judge
        return
    if not exists:
        raise UserInputError(
            f"--{flag}: no {repo_type} {name!r} on the Hub (a typo? a private or gated repo needs `hf auth login`; "
            "a folder here is written ./name)."
        )


def check_paths(*arguments, produced=frozenset()) -> None:
    """Check every model and dataset path of the parsed dataclasses `arguments` with `check_local_path`, and every
    Hub id with `check_hub_id`, except those in or under `produced` (folders an earlier pipeline stage will write)."""
    for args in arguments:
        for name in PATH_FIELDS:
            value = getattr(args, name, None)
            if isinstance(value, str) and not is_produced(value, produced):
                check_local_path(value, name)
                check_hub_id(value, name, "dataset" if "dataset" in name else "model")


def is_produced(name: str, produced) -> bool:
    """Whether `name` is one of the folders `produced`, or inside one (`${distill_qwen2}/traces`)."""
    return any(name == folder or name.startswith(os.path.join(folder, "")) for folder in produced)


# ------------------------------------------------------------------------------------------------------------------
# Rewards


def check_reward_names(names, *, produced=frozenset()) -> None:
    """Refuse a reward that the registry does not know and that is no reward model, with the closest names, without
    building any reward: a registry name or alias, a 'module:function' path, or a reward model (a folder, or a Hub id
    'owner/name', as `recipes.lib.grpo_trainer.is_model_id` tells them apart)."""
    known = {*rewards.list_rewards(), *ALIASES}
    for name in names:
        if not isinstance(name, str) or name in known or ":" in name or is_produced(name, produced):
            continue
        if is_model_id(name):
            check_local_path(name, "reward_funcs")
            check_hub_id(name, "reward_funcs", "model")
        else:
            raise UserInputError(
                f"--reward_funcs {name}: no such reward; did you mean {closest(name, known)}? (known: "
                f"{', '.join(sorted(known))}; a reward model is a folder or a Hub id 'owner/name')."
            )


def check_inputs(*arguments, produced=frozenset()) -> None:
    """Every check of a recipe's parsed arguments that needs no loading: paths and reward names (ranges are checked
    as they are parsed). `produced`: folders an earlier pipeline stage will write, taken as existing."""
    check_paths(*arguments, produced=produced)
    for args in arguments:
        check_reward_names(getattr(args, "reward_funcs", None) or (), produced=produced)
