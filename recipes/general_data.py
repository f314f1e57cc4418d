"""Write one of the embedded default's generated general datasets to a folder, for recipes that take a dataset path.

    python recipes/general_data.py --kind preferences --output_dir data/preferences
    python recipes/general_data.py --kind all_scenario --output_dir data/all-scenario --general_share 0.5

`chat`: everyday questions with polite answers in R1's format (`messages`); `preferences`: chosen/rejected pairs for
`recipes/reward_model.py`; `all_scenario`: reasoning and general prompts mixed, with a `scenario` column. The data
are made by `recipes.lib.general_chat`; every flag is on the command line (there is no YAML).
"""

import argparse

from datasets import DatasetDict

from recipes.lib.cli import run_entry_point, strict
from recipes.lib.general_chat import make_all_scenario_splits, make_general_chat, make_preference_splits


def share(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share is in [0, 1], got {text}")
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = strict(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument(
        "--kind", required=True, choices=["chat", "preferences", "all_scenario"], help="Which dataset to write."
    )
    parser.add_argument("--output_dir", required=True, help="Folder to write (Dataset(Dict).save_to_disk).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the sampling.")
    parser.add_argument("--n_train", type=int, default=400, help="Rows of the train split.")
    parser.add_argument("--n_test", type=int, default=100, help="Rows of the held-out split.")
    parser.add_argument(
        "--general_share",
        type=share,
        default=0.5,
        help="all_scenario: the share of each split that is general (the rest is reasoning).",
    )
    return parser


def main(args: argparse.Namespace) -> None:
    """Write one of the generated datasets to a folder (`save_to_disk`), for recipes that take a dataset path."""
    if args.kind == "chat":
        data = DatasetDict(
            train=make_general_chat(args.n_train, seed=args.seed),
            test=make_general_chat(args.n_test, seed=args.seed, heldout=True),
        )
    elif args.kind == "preferences":
        data = make_preference_splits(args.seed, args.n_train, args.n_test)
    else:
        data = make_all_scenario_splits(args.seed, args.n_train, args.n_test, args.general_share)
    data.save_to_disk(args.output_dir)
    print(f"Wrote {args.kind} data to {args.output_dir}: {data}")


if __name__ == "__main__":
    run_entry_point(lambda: main(make_parser().parse_args()))
