"""Question 4 of docs/research.md: how well the reward design steers GRPO, by ablation of the main job's rewards.

    python experiments/reward_design.py run                       # every arm, 3 seeds each (benchmarks/seeds.py)
    python experiments/reward_design.py run --arms "format only" --seeds 0 1 2 3 4
    python experiments/reward_design.py report                    # -> docs/results/research/reward-design.json

Each arm is the main job (`accelerate launch recipes/grpo.py`, recipes/configs/grpo_tiny.yaml) with other rewards or
weights, over training seeds, measured on the test and out-of-distribution splits (greedy and R1's pass@1), with the
training completions logged (`--log_completions`). The report gives, per arm, the held-out metrics minus the default
arm's (accuracy + format, weights 1 and 1), paired by seed, and the rate of reward hacks in the training completions
over steps: answers that score but are not answers.

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
sys.path.insert(0, str(ROOT / "benchmarks"))
from seeds import add_seed_arguments, compare, interval, seeds_command, shown  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

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
REPORTED = ("accuracy", "format_compliance", "language_consistency", "ood_accuracy", "mean_completion_tokens")
HACKS = ("expression_answer", "empty_reasoning", "format_without_answer")


def slug(arm: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", arm.lower()).strip("-")


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


def hack_rates(run: Path, detector: HackDetector, golds: dict[str, str]) -> list[dict]:
    """Per logged training step of the run: the share of its completions with each hack."""
    rows = []
    for path in sorted((run / "completions").glob("*.parquet")):
        table = pd.read_parquet(path)
        known = [(c, golds[p]) for c, p in zip(table["completion"], table["prompt"]) if p in golds]
        if not known:
            continue
        labels = detector([c for c, _ in known], [g for _, g in known])
        rows.append(
            {"step": int(table["step"].iloc[0]), **{h: statistics.fmean(label[h] for label in labels) for h in HACKS}}
        )
    return rows


def report(records: dict[str, dict], runs: Path) -> dict:
    detector, golds, default = HackDetector(), builtin_golds(), records[DEFAULT_ARM]
    result = {}
    for arm, record in records.items():
        curves = [
            hack_rates(runs / f"rewards-{slug(arm)}" / f"seed-{r['seed']}", detector, golds) for r in record["per_seed"]
        ]
        final = {h: interval([curve[-1][h] for curve in curves if curve]) for h in HACKS} if all(curves) else {}
        result[arm] = {
            "minus_default": {k: v for k, v in compare(default, record).items() if k in REPORTED},
            "hacks_last_logged_step": final,
            "hack_curves": curves,
        }
    return result


def markdown(result: dict) -> str:
    lines = [
        "| arm | " + " | ".join(f"{name} minus default" for name in REPORTED) + " | " + " | ".join(HACKS) + " |",
        "|---|" + "---:|" * (len(REPORTED) + len(HACKS)),
    ]
    for arm, row in result.items():
        cells = [
            "" if row["minus_default"].get(name) is None
            else shown(row["minus_default"][name], name != "mean_completion_tokens", True)
            for name in REPORTED
        ]  # fmt: skip
        cells += [f"{100 * row['hacks_last_logged_step'][h]['mean']:.1f}" if row["hacks_last_logged_step"] else ""
                  for h in HACKS]  # fmt: skip
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
    print(
        "Each arm minus the default (accuracy + format, weights 1 and 1), paired by seed: mean [95% interval] in "
        "points (tokens for the length); hacks: % of the last logged step's training completions, mean over seeds.\n"
    )
    print(markdown(result))


if __name__ == "__main__":
    main()
