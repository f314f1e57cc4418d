"""How many addition steps a policy writes, against how many its problem needs, on a split of the built-in task.

    python benchmarks/chain_lengths.py outputs/seeds/seed-0 outputs/seeds/seed-1 [--split ood] [--problems 200]

For each model folder: one completion per problem, decoded greedily (as the tables' accuracy is), and the steps
counted as the `a + b = c` lines of its reasoning (in English, or in the Chinese words `a 加 b 等于 c`). A problem
of n addends needs n - 1 steps. Prints, per model and per number of addends, the distribution of steps written, and
the share of completions that stop short of the needed count.
"""

import argparse
import collections
import re

from transformers import AutoModelForCausalLM, AutoTokenizer

from recipes.lib.evaluation import generate_completions
from recipes.lib.task import make_splits
from rewards import extract_think

STEP = re.compile(r"\d+ (?:\+|加) \d+ (?:=|等于) \d+")


def steps_written(completion: str) -> int:
    return len(STEP.findall(extract_think(completion) or ""))


def chain_lengths(model_dir: str, split: str, problems: int) -> dict[int, collections.Counter]:
    """{addends: Counter(steps written)} over the split's first `problems` problems."""
    sizes = {"n_train": 0, "n_test": 0, "n_validation": 0, "n_ood": 0, f"n_{split}": problems}
    rows = make_splits(seed=0, **sizes)[split]
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True)
    completions, _ = generate_completions(model, tokenizer, rows["prompt"], max_new_tokens=96)
    counts = collections.defaultdict(collections.Counter)
    for problem, completion in zip(rows["problem"], completions):
        counts[problem.count("+") + 1][steps_written(completion)] += 1
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="Model folders (trust their code: they are this project's runs).")
    parser.add_argument("--split", default="ood", choices=["test", "validation", "ood"])
    parser.add_argument("--problems", type=int, default=200)
    args = parser.parse_args(argv)
    for model_dir in args.models:
        for addends, steps in sorted(chain_lengths(model_dir, args.split, args.problems).items()):
            total = sum(steps.values())
            short = sum(count for n, count in steps.items() if n < addends - 1)
            shown = ", ".join(f"{n}: {count}" for n, count in sorted(steps.items()))
            print(
                f"{model_dir} | {addends} addends | steps written {{{shown}}} | short of {addends - 1}: "
                f"{short}/{total} ({100 * short / total:.1f}%)"
            )


if __name__ == "__main__":
    main()
