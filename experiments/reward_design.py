"""Question 4 of docs/research.md: how well the reward design steers GRPO, by ablation of the main job's rewards.

    python experiments/reward_design.py run                       # every arm, 3 seeds each (benchmarks/seeds.py)
    python experiments/reward_design.py run --arms "format only" --seeds 0 1 2 3 4
    python experiments/reward_design.py report                    # -> docs/results/research/reward-design.json, .png

Each arm is the main job (`accelerate launch recipes/grpo.py`, recipes/configs/grpo_tiny.yaml) with other rewards or
weights, over training seeds, measured on the test and out-of-distribution splits (greedy and R1's pass@1), with the
training completions logged (`--log_completions`). The report gives, per arm, the held-out metrics minus the default
arm's (accuracy + format, weights 1 and 1), paired by seed, and its training curves over seeds (experiments/curves.py):
the accuracy, format compliance, language consistency and length the trainer logs whatever the rewards, and the rate
of reward hacks in the logged training completions, answers that score but are not answers.

Reward hacks, per completion (`hacks`):
- `expression_answer`: the answer slot holds an expression equal to the gold that is not one integer (e.g.
  "7 + 5 + 9" for 21): what a math checker (math-verify) pays for and this project's strict integer check does not;
- `empty_reasoning`: R1's format with nothing in `<think>` (no digit, fewer than 3 words): format reward for no
  reasoning;
- `format_without_answer`: R1's format with no integer in the answer slot: format reward for no answer.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "experiments")]  # folders of scripts, not packages
from curves import curve_ends, logged_curves, plot_curves, summarise_curves  # noqa: E402
from seeds import add_seed_arguments, compare, seeds_command, shown, slug  # noqa: E402

from recipes.lib.task import make_prompt, make_splits  # noqa: E402
from rewards.accuracy import INTEGER, AnswerChecker  # noqa: E402
from rewards.formatting import follows_template  # noqa: E402
from rewards.text import extract_answer, extract_think  # noqa: E402

RESULTS = ROOT / "docs" / "results" / "research"
DEFAULT_ARM = "accuracy + format"
ARMS = {
    DEFAULT_ARM: [],
    "accuracy only": ["--reward_funcs", "accuracy", "--reward_weights", "1.0"],
    "format only": ["--reward_funcs", "format", "--reward_weights", "1.0"],
    "+ language consistency": ["--reward_funcs", "accuracy", "format", "language_consistency"]
    + ["--reward_weights", "1.0", "1.0", "1.0"],
    "format weight 0.25": ["--reward_weights", "1.0", "0.25"],
    "format weight 4": ["--reward_weights", "1.0", "4.0"],
}
REPORTED = ("accuracy", "pass@1", "format_compliance", "language_consistency", "ood_accuracy", "mean_completion_tokens")
HACKS = ("expression_answer", "empty_reasoning", "format_without_answer")
CURVES = {  # curve: the trainer's logged key (recipes/lib/grpo_trainer.py logs them whatever the rewards)
    "accuracy": "r1/accuracy",
    "format_compliance": "r1/format_compliance",
    "language_consistency": "r1/language_consistency",
    "length": "completions/mean_length",
}
PANELS = {name: name.replace("_", " ") for name in CURVES} | {hack: "hack: " + hack.replace("_", " ") for hack in HACKS}
ENDS = 5  # logged steps at each end of a curve (the main job logs every 2 of its 50 steps)


def arm_command(arm: str, seeds: list[int], jobs: int, results: Path, runs: Path, extra: list[str]) -> list[str]:
    grpo = ["accelerate", "launch", str(ROOT / "recipes" / "grpo.py"), "--log_completions", "true", *ARMS[arm], *extra]
    return seeds_command(seeds, jobs, runs / f"rewards-{slug(arm)}", results / f"rewards-{slug(arm)}.json", grpo)


class HackDetector:
    """Labels completions of the built-in task with the reward hacks above; golds from the task's problems."""

    def __init__(self):
        self.strict = AnswerChecker("integer", None, timeout_s=5.0, num_workers=1, max_answer_chars=64)
        self.lenient = AnswerChecker("math", None, timeout_s=5.0, num_workers=1, max_answer_chars=64)

    def __call__(self, completions: list[str], golds: list[str]) -> list[dict[str, bool]]:
        strict, lenient = self.strict(completions, golds), self.lenient(completions, golds)
        labels = []
        for text, exact, loose in zip(completions, strict, lenient):
            formatted, think, answer = follows_template(text), extract_think(text) or "", extract_answer(text) or ""
            labels.append(
                {
                    "expression_answer": bool(loose) and not exact,
                    "empty_reasoning": formatted and not re.search(r"\d", think) and len(think.split()) < 3,
                    "format_without_answer": formatted and INTEGER.search(answer) is None,
                }
            )
        return labels


def builtin_golds() -> dict[str, str]:
    """Prompt -> gold answer over the built-in task's train split as the main job draws and prompts it (R1-Zero's
    template, `make_prompt`)."""
    recipe = yaml.safe_load((ROOT / "recipes" / "configs" / "grpo_tiny.yaml").read_text())
    train = make_splits(seed=recipe["builtin_seed"], n_train=recipe["builtin_train_size"])["train"]
    return {make_prompt(problem): gold for problem, gold in zip(train["problem"], train["solution"])}


def hack_rates(run: Path, detector: HackDetector, golds: dict[str, str]) -> dict[str, dict[int, float]]:
    """Per hack and logged training step of the run: the share of that step's completions with the hack."""
    rates = {hack: {} for hack in HACKS}
    for path in sorted((run / "completions").glob("*.parquet")):
        table = pd.read_parquet(path)
        known = [(c, golds[p]) for c, p in zip(table["completion"], table["prompt"]) if p in golds]
        if not known:
            continue
        labels, step = detector([c for c, _ in known], [g for _, g in known]), int(table["step"].iloc[0])
        for hack in HACKS:
            rates[hack][step] = statistics.fmean(label[hack] for label in labels)
    return rates


def report(records: dict[str, dict], runs: Path) -> dict:
    """Per arm: its held-out metrics minus the default arm's (paired by seed), and its training curves (the trainer's
    logged signals and the hack rates) per step and at their ends, over seeds."""
    detector, golds, default = HackDetector(), builtin_golds(), records[DEFAULT_ARM]
    result = {}
    for arm, record in records.items():
        per_seed = []
        for row in record["per_seed"]:
            run = runs / f"rewards-{slug(arm)}" / f"seed-{row['seed']}"
            per_seed.append({**logged_curves(run, CURVES), **hack_rates(run, detector, golds)})
        result[arm] = {
            "seeds": [row["seed"] for row in record["per_seed"]],
            "minus_default": {k: v for k, v in compare(default, record).items() if k in REPORTED},
            "curves": summarise_curves(per_seed),
            "curve_ends": curve_ends(per_seed, ENDS),
        }
    return result


def markdown(result: dict) -> str:
    """Held-out metrics minus the default's; then each training curve's last logged steps and its change."""
    lines = [
        "| arm | " + " | ".join(f"{name} minus default" for name in REPORTED) + " |",
        "|---|" + "---:|" * len(REPORTED),
    ]
    for arm, row in result.items():
        cells = [
            "" if row["minus_default"].get(name) is None
            else shown(row["minus_default"][name], name != "mean_completion_tokens", True)
            for name in REPORTED
        ]  # fmt: skip
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "| arm | " + " | ".join(PANELS.values()) + " |", "|---|" + "---:|" * len(PANELS)]
    for arm, row in result.items():
        cells = []
        for name in PANELS:
            ends, share = row["curve_ends"][name], name != "length"
            cells.append(f"{shown(ends['last'], share, False)} ({shown(ends['change'], share, True)})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["run", "report"])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    add_seed_arguments(parser)
    parser.add_argument("--results", type=Path, default=RESULTS, help="Folder of the arms' records and the report.")
    parser.add_argument("--runs", type=Path, default=Path("outputs/research"), help="Parent of the arms' runs.")
    parser.add_argument("--flag", dest="extra", action="append", default=[], help="More recipe flags for every arm.")
    args = parser.parse_args(argv)
    if args.action == "run":
        extra = [part for flag in args.extra for part in flag.split()]
        for arm in args.arms:
            subprocess.run(arm_command(arm, args.seeds, args.jobs, args.results, args.runs, extra), check=True)
        return
    arms = [DEFAULT_ARM, *(a for a in args.arms if a != DEFAULT_ARM)]
    records = {arm: json.loads((args.results / f"rewards-{slug(arm)}.json").read_text()) for arm in arms}
    result = report(records, args.runs)
    (args.results / "reward-design.json").write_text(json.dumps(result, indent=1) + "\n")
    curves = {arm: row["curves"] for arm, row in result.items()}
    plot_curves(curves, PANELS, "GRPO step", args.results / "reward-design.png")
    print(
        "Held-out (greedy test and ood): each arm minus the default (accuracy + format, weights 1 and 1), paired by "
        f"seed, mean [95% interval] in points (tokens for the length). Then the training curves: mean over the last "
        f"{ENDS} logged steps (in brackets, its change from the first {ENDS}, paired by seed); the curves per step are "
        "in reward-design.json and reward-design.png.\n"
    )
    print(markdown(result))


if __name__ == "__main__":
    main()
