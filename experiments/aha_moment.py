"""R1-Zero's "aha moment" (docs/research.md): does GRPO raise self-checking and length on a task where slips can be
detected but not avoided?

    python experiments/aha_moment.py run        # each variant's base, then GRPO over 3 seeds on every task
    python experiments/aha_moment.py run --tasks subtraction_low
    python experiments/aha_moment.py report --tasks subtraction subtraction_low sums   # -> aha-moment.json, .png

On the built-in task (`sums`) every step is an addition the model can learn to get right, and under GRPO the policy
removes its slips at the source: reflection falls. The variants ask for a difference, "What is 43 - 7?", which
nothing in their pretraining corpus computes. A variant's corpus (R1-Zero prompts of training problems, plus the
built-in task's addition drills) is written by three personas, each starting from a first guess at one of the
variant's offsets from the answer (`VARIANTS`):

- `guesser`: answers its guess;
- `checker`: checks its guess by adding it back ("Try 35: 35 + 7 = 42."), and while the check fails, says so and
  tries the next number toward the target ("Wait, 42 is less than 43."), then answers: right whenever its
  additions are, which the drills teach;
- `format_breaker`: a guess outside R1's format.

In `subtraction` the guesses are centred on the answer (a guess is right one time in five); in `subtraction_low`
they fall 1 to 3 below it, so a guess is never right and only a check finds the answer. Either way a wrong first
guess cannot be avoided by computing the answer in one go (subtraction is never shown), but it can be caught. `run`
writes a variant's corpus and splits under `--work/TASK` (the same problems for every variant), pretrains its base
with `recipes/pretrain.py --corpus_name` (the tiny base's recipe), then runs the main job's GRPO (accuracy and format
rewards) over training seeds (`benchmarks/seeds.py`) on each variant from its base and on the built-in task from the
shipped base, every step logged. `report` reads each seed's logged curves (accuracy, the reflection rate, the
completion length, and the share of completions that check at least one guess) into means over seeds with 95%
intervals per step, the change of each held-out metric from before to after training (paired by seed), and a plot
of the tasks side by side.
"""

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
from datasets import Dataset, DatasetDict

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "experiments")]  # folders of scripts, not packages
from curves import curve_ends, logged_curves, plot_curves, summarise_curves  # noqa: E402
from seeds import add_seed_arguments, seeds_command, shown  # noqa: E402

from recipes.lib.task import make_prompt, tagged  # noqa: E402

RESULTS = ROOT / "docs" / "results" / "research"
ANSWERS, SUBTRAHENDS = range(10, 61), range(2, 10)  # checks stay within the drills' sums (up to 69)
# A variant: where the personas' first guess falls, relative to the answer.
VARIANTS = {
    "subtraction": range(-2, 3),  # centred on the answer: a guess is right one time in five
    "subtraction_low": range(-3, 0),  # 1 to 3 below it: a guess is never right, the checker climbs 1 to 3 steps
}
PERSONA_RATES = {"guesser": 0.5, "checker": 0.2, "format_breaker": 0.3}
HELDOUT = {"test": 80, "validation": 80}  # problems held out of the corpus and of GRPO's prompts
CHECK = re.compile(r"Try \d+: \d+ \+ \d+ = \d+")
CURVES = {"accuracy": "r1/accuracy", "reflection_rate": "r1/reflection_rate", "length": "completions/mean_length"}
TASKS = (*VARIANTS, "sums")
HELDOUT_METRICS = ("accuracy", "reflection_rate", "mean_completion_tokens", "format_compliance")


# ------------------------------------------------------------------------------------------------------------------
# The variant: problems, personas, corpus, splits


def problem_text(answer: int, subtrahend: int) -> str:
    return f"What is {answer + subtrahend} - {subtrahend}?"


def guesser(answer: int, subtrahend: int, rng: random.Random, offsets: range) -> str:
    guess = answer + rng.choice(offsets)
    return tagged([f"It is about {guess}."], str(guess))


def checker(answer: int, subtrahend: int, rng: random.Random, offsets: range) -> str:
    """Guess, add the guess back, and step toward the target until the sum is right."""
    target, guess = answer + subtrahend, answer + rng.choice(offsets)
    lines = ["Let me guess and check."]
    while True:
        total = guess + subtrahend
        lines.append(f"Try {guess}: {guess} + {subtrahend} = {total}.")
        if total == target:
            return tagged([*lines, f"So the answer is {guess}."], str(guess))
        lines.append(f"Wait, {total} is {'less' if total < target else 'more'} than {target}.")
        guess += 1 if total < target else -1


def format_breaker(answer: int, subtrahend: int, rng: random.Random, offsets: range) -> str:
    guess = answer + rng.choice(offsets)
    broken = [f"The answer is {guess}.", f"<answer>\n{guess}\n</answer>", f"<think>\nIt is {guess}.\n<answer>\n{guess}"]
    return rng.choice(broken)


PERSONAS = {"guesser": guesser, "checker": checker, "format_breaker": format_breaker}


def make_splits(seed: int = 0) -> DatasetDict:
    """Every (answer, subtrahend) problem once, shuffled by `seed`: `HELDOUT` of them for test and validation, the
    rest for training. Columns: `prompt` (R1-Zero's template), `problem`, `solution`."""
    problems = [(a, b) for a in ANSWERS for b in SUBTRAHENDS]
    random.Random(f"subtraction-{seed}").shuffle(problems)
    bounds = {"test": (0, HELDOUT["test"]), "validation": (HELDOUT["test"], sum(HELDOUT.values()))}
    bounds["train"] = (sum(HELDOUT.values()), len(problems))
    return DatasetDict(
        {
            split: Dataset.from_list(
                [
                    {"prompt": make_prompt(problem_text(a, b)), "problem": problem_text(a, b), "solution": str(a)}
                    for a, b in problems[start:end]
                ]
            )
            for split, (start, end) in bounds.items()
        }
    )


def make_corpus(train: Dataset, n_docs: int, offsets: range, seed: int = 0) -> Dataset:
    """Pretraining documents: training problems in R1-Zero's template completed by the personas at
    `PERSONA_RATES`, their first guesses at `offsets` from the answer, in shuffled order. Columns: `text`,
    `persona`."""
    rng = random.Random(f"subtraction-corpus-{seed}")
    personas = [name for name, rate in PERSONA_RATES.items() for _ in range(round(rate * n_docs))]
    rng.shuffle(personas)
    rows = []
    for persona in personas:
        problem = train[rng.randrange(len(train))]
        answer = int(problem["solution"])
        subtrahend = int(problem["problem"].split(" - ")[1].rstrip("?"))
        completion = PERSONAS[persona](answer, subtrahend, rng, offsets)
        rows.append({"text": problem["prompt"] + completion, "persona": persona})
    return Dataset.from_list(rows)


def prepare(folder: Path, corpus_size: int, offsets: range) -> None:
    """A variant's splits (`folder/data`, the same problems for every variant) and pretraining corpus
    (`folder/corpus.jsonl`)."""
    splits = make_splits()
    splits.save_to_disk(str(folder / "data"))
    make_corpus(splits["train"], corpus_size, offsets).select_columns("text").to_json(str(folder / "corpus.jsonl"))


# ------------------------------------------------------------------------------------------------------------------
# Runs


def pretrain_command(folder: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable, str(ROOT / "recipes" / "pretrain.py"), "--corpus_name", str(folder / "corpus.jsonl"),
        "--eval_heldout", "false", "--output_dir", str(folder / "base"), *extra,
    ]  # fmt: skip


def grpo_command(task: str, seeds: list[int], jobs: int, work: Path, results: Path, extra: list[str]) -> list[str]:
    """The main job (recipes/configs/grpo_tiny.yaml) over seeds, every step logged with its completions; on a
    variant, from its base and on its splits (`work/TASK`)."""
    folder = work / task
    variant = ["--model_name_or_path", str(folder / "base"), "--dataset_name", str(folder / "data")]
    variant = variant if task in VARIANTS else []
    grpo = ["accelerate", "launch", str(ROOT / "recipes" / "grpo.py"), "--logging_steps", "1", "--log_completions",
            "true", "--mtp_refresh_steps", "0", *variant, *extra]  # fmt: skip
    return seeds_command(seeds, jobs, work / f"grpo-{task}", results / f"aha-{task}.json", grpo)


# ------------------------------------------------------------------------------------------------------------------
# Report


def checking_rate(run: Path) -> dict[int, float]:
    """Per logged step: the share of its training completions that check at least one guess by adding it back."""
    rates = {}
    for path in sorted((run / "completions").glob("*.parquet")):
        table = pd.read_parquet(path)
        rates[int(table["step"].iloc[0])] = statistics.fmean(bool(CHECK.search(c)) for c in table["completion"])
    return rates


def seed_curves(run: Path) -> dict[str, dict[int, float]]:
    """One seed's curves: the logged metrics per step, and the checking rate from its logged completions."""
    return {**logged_curves(run, CURVES), "checking_rate": checking_rate(run)}


def report(work: Path, results: Path, tasks: list[str]) -> dict:
    result = {}
    for task in tasks:
        record = json.loads((results / f"aha-{task}.json").read_text())
        per_seed = [seed_curves(work / f"grpo-{task}" / f"seed-{row['seed']}") for row in record["per_seed"]]
        heldout = record["summary"]["heldout"]
        result[task] = {
            "seeds": [row["seed"] for row in record["per_seed"]],
            "heldout": {name: heldout[name] for name in HELDOUT_METRICS if name in heldout},
            "curves": summarise_curves(per_seed),
            "curve_ends": curve_ends(per_seed),
        }
    return result


def markdown(result: dict) -> str:
    """Held-out metrics before -> after GRPO with the change; then each training curve's first and last 10 steps."""
    lines = ["| task | " + " | ".join(f"{m}: before -> after, change" for m in HELDOUT_METRICS) + " |",
             "|---|" + "---|" * len(HELDOUT_METRICS)]  # fmt: skip
    for task, row in result.items():
        cells = []
        for name in HELDOUT_METRICS:
            stats, share = row["heldout"].get(name), name != "mean_completion_tokens"
            cells.append("" if stats is None else f"{shown(stats['before'], share, False)} -> "
                         f"{shown(stats['after'], share, False)}, {shown(stats['change'], share, True)}")  # fmt: skip
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += ["", "| task | curve | first 10 steps | last 10 steps | change |", "|---|---|---|---|---|"]
    for task, row in result.items():
        for name, ends in row["curve_ends"].items():
            share = name != "length"
            cells = [shown(ends[side], share, side == "change") for side in ("first", "last", "change")]
            lines.append(f"| {task} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["run", "report"])
    add_seed_arguments(parser)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--corpus_size", type=int, default=40000, help="Persona documents of the variant's corpus.")
    parser.add_argument("--work", type=Path, default=Path("outputs/research/aha"), help="Data, base and runs.")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Folder of the seeds records and the report.")
    parser.add_argument("--pretrain_flag", dest="pretrain_extra", action="append", default=[],
                        help="More recipes/pretrain.py flags (e.g. a shrunk run).")  # fmt: skip
    parser.add_argument("--flag", dest="extra", action="append", default=["--max_steps 100"],
                        help="More recipes/grpo.py flags for both tasks (default: --max_steps 100).")  # fmt: skip
    args = parser.parse_args(argv)
    extra = [part for flag in args.extra for part in flag.split()]
    if args.action == "run":
        pretrain_extra = [part for flag in args.pretrain_extra for part in flag.split()]
        for task in args.tasks:
            folder = args.work / task
            if task in VARIANTS and not (folder / "base" / "model.safetensors").exists():
                folder.mkdir(parents=True, exist_ok=True)
                prepare(folder, args.corpus_size, VARIANTS[task])
                subprocess.run(pretrain_command(folder, pretrain_extra), check=True)
            subprocess.run(grpo_command(task, args.seeds, args.jobs, args.work, args.results, extra), check=True)
        return
    result = report(args.work, args.results, args.tasks)
    (args.results / "aha-moment.json").write_text(json.dumps(result, indent=1) + "\n")
    panels = {name: name.replace("_", " ") for name in ("accuracy", "reflection_rate", "checking_rate", "length")}
    curves = {task: task_result["curves"] for task, task_result in result.items()}
    plot_curves(curves, panels, "GRPO step", args.results / "aha-moment.png")
    print("Held-out (test split, greedy) before and after GRPO, and the training curves' first and last 10 steps: mean "
          "[95% interval] over seeds, changes paired by seed; the curves per step are in aha-moment.json and "
          "aha-moment.png.\n")  # fmt: skip
    print(markdown(result))


if __name__ == "__main__":
    main()
