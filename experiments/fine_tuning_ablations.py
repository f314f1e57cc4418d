"""Question 1 of docs/research.md: what each stage of DeepSeek-R1's fine-tuning adds, by ablation.

    python experiments/fine_tuning_ablations.py run       # the default pipeline, then every arm; 3 seeds each
    python experiments/fine_tuning_ablations.py run --until all_scenario_rl   # R1 only, without the students
    python experiments/fine_tuning_ablations.py run --arms no_cold_start --seeds 0 1 2 3 4
    python experiments/fine_tuning_ablations.py report    # -> docs/results/research/ablations.json and .png; tables

Each arm is the embedded pipeline (`recipes/configs/pipeline/tiny.yaml`) with one piece of R1 taken out by `--set`
overrides, run over training seeds by `benchmarks/seeds.py` (test and out-of-distribution splits, greedy and R1's
pass@1, the pipeline's own measurement). The `default` arm, the pipeline as shipped, runs first; every other arm
links the stages it does not change from the default's run of the same seed (`--reuse`) and trains only the changed
stage and the ones after it. The report gives the default's stage-by-stage table and compares each arm's final model
(R1: the all-scenario RL stage, or the stage that replaces it) and students with the default's, paired by seed: the
interval of the difference and its verdict.

The arms:
- `no_cold_start`: reasoning RL starts from the base instead of the cold-start SFT (R1-Zero with the language reward).
- `no_rejection_sampling`: all-scenario RL starts from the reasoning-RL checkpoint; no rejection-sampled SFT.
- `no_language_reward`: reasoning RL and the rule rewards of all-scenario RL without language consistency (the
  rejection-sampling filters stay as they are).
- `no_all_scenario_rl`: R1 is the SFT on rejection-sampled data; the students distil its traces.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "experiments")]  # folders of scripts, not packages
from curves import error_bar  # noqa: E402
from seeds import add_seed_arguments, compare, seeds_command, shown, stages_table  # noqa: E402

from recipes.lib.plots import plt  # noqa: E402  (pyplot on the Agg backend: PNG files, no display)

RESULTS = ROOT / "docs" / "results" / "research"
DEFAULT = "default"  # the pipeline as shipped: the arm every other is paired with
FINAL, STUDENTS = "all_scenario_rl", ("distill_qwen2", "distill_llama")
SCENARIO_RULES = "{scenario: {helpfulness_model: '${reward_model}', rule_rewards: [accuracy, format]}}"

ARMS = {
    "no_cold_start": {"settings": ["reasoning_rl.model_name_or_path=${base}"], "final": FINAL},
    "no_rejection_sampling": {"settings": ["all_scenario_rl.model_name_or_path=${reasoning_rl}"], "final": FINAL},
    "no_language_reward": {
        "settings": [
            "reasoning_rl.reward_funcs=[accuracy, format]",
            "reasoning_rl.reward_weights=[1.0, 1.0]",
            f"all_scenario_rl.reward_params={SCENARIO_RULES}",
        ],
        "final": FINAL,
    },
    "no_all_scenario_rl": {
        "settings": [f"{student}.teacher_model_name_or_path=${{rs_sft}}" for student in STUDENTS],
        "final": "rs_sft",
    },
}
# What each stage adds in the default pipeline: (the checkpoint before, the stage), paired by seed, as DeepSeek's
# stage-by-stage table reads (R1-Zero, the cold start, reasoning RL, rejection-sampling SFT, R1); then R1 - R1-Zero.
STAGE_STEPS = (
    ("base", "r1_zero"),
    ("base", "cold_start_sft"),
    ("cold_start_sft", "reasoning_rl"),
    ("reasoning_rl", "rs_sft"),
    ("rs_sft", FINAL),
    ("r1_zero", FINAL),
)
REPORTED = ("accuracy", "pass@1", "ood_accuracy", "language_consistency", "mean_completion_tokens")


def arm_command(arm: str, seeds: list[int], jobs: int, extra: list[str], results: Path, runs: Path) -> list[str]:
    """The `benchmarks/seeds.py` command line of one arm: its seeds' runs under `runs`, its record in `results`; an
    arm other than the default links the stages it shares from the default's run of its seed."""
    settings = [] if arm == DEFAULT else [flag for setting in ARMS[arm]["settings"] for flag in ("--set", setting)]
    reused = [] if arm == DEFAULT else ["--reuse", str(runs / f"ablation-{DEFAULT}" / "seed-{seed}")]
    pipeline = [sys.executable, str(ROOT / "recipes" / "pipeline.py"), *settings, *extra, *reused]
    return seeds_command(seeds, jobs, runs / f"ablation-{arm}", results / f"ablation-{arm}.json", pipeline)


def missing_default_runs(seeds: list[int], runs: Path) -> list[int]:
    """The seeds without a default run to link from."""
    return [seed for seed in seeds if not (runs / f"ablation-{DEFAULT}" / f"seed-{seed}").is_dir()]


def reported(a: dict, b: dict, stage_a: str, stage_b: str) -> dict:
    """`REPORTED` of `seeds.compare`: stage B of record b minus stage A of record a, paired by seed."""
    return {k: v for k, v in compare(a, b, stage_a, stage_b).items() if k in REPORTED}


def report(default: dict, arms: dict[str, dict]) -> dict:
    """Per arm: its final model and each student against the default's, B - A paired by seed, for `REPORTED` (the
    students where both ran them: not in a run `--until` R1)."""
    records = [default, *arms.values()]
    students = [s for s in STUDENTS if all(s in run["stages"] for record in records for run in record["per_seed"])]
    rows = {}
    for arm, record in arms.items():
        pairs = {"R1": (FINAL, ARMS[arm]["final"]), **{student: (student, student) for student in students}}
        rows[arm] = {model: reported(default, record, a, b) for model, (a, b) in pairs.items()}
    return rows


def stage_steps(default: dict) -> dict:
    """Per step of `STAGE_STEPS`: the stage minus the checkpoint before it in the default's runs, paired by seed."""
    return {f"{stage} - {before}": reported(default, default, before, stage) for before, stage in STAGE_STEPS}


def plot_differences(rows: dict, path: Path) -> None:
    """One panel per metric of `REPORTED`: each arm's R1 minus the default's with its 95% interval, against zero."""
    fig, axes = plt.subplots(1, len(REPORTED), figsize=(3.2 * len(REPORTED), 0.5 * len(rows) + 1.6), sharey=True)
    for ax, name in zip(axes, REPORTED):
        scale = 1 if name == "mean_completion_tokens" else 100
        for y, models in enumerate(rows.values()):
            stats = models["R1"].get(name)
            if stats is not None:
                ax.errorbar(scale * stats["mean"], y, xerr=error_bar(stats, scale), fmt="o", capsize=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set(title=name, xlabel="tokens" if scale == 1 else "points")
        ax.grid(alpha=0.3)
    axes[0].set_yticks(range(len(rows)), list(rows))
    fig.suptitle("R1 (the final model) of each arm minus the default's, paired by seed, 95% interval")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def markdown(rows: dict) -> str:
    lines = ["| arm | model | " + " | ".join(REPORTED) + " |", "|---|---|" + "---:|" * len(REPORTED)]
    lines += [
        f"| {arm} | {model} | {cells(metrics)} |" for arm, models in rows.items() for model, metrics in models.items()
    ]
    return "\n".join(lines)


def steps_markdown(steps: dict) -> str:
    lines = ["| stage - the checkpoint before | " + " | ".join(REPORTED) + " |", "|---|" + "---:|" * len(REPORTED)]
    return "\n".join(lines + [f"| {step} | {cells(metrics)} |" for step, metrics in steps.items()])


def cells(metrics: dict) -> str:
    """The `REPORTED` differences of one row: mean [95% interval], in points (tokens for the length)."""
    return " | ".join(
        "" if metrics.get(name) is None else shown(metrics[name], name != "mean_completion_tokens", True)
        for name in REPORTED
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["run", "report"])
    parser.add_argument("--arms", nargs="+", choices=[DEFAULT, *sorted(ARMS)], default=[DEFAULT, *sorted(ARMS)],
                        help="run: these arms, the default first (the others link its runs); report: the default's "
                        "and these.")  # fmt: skip
    add_seed_arguments(parser)
    parser.add_argument("--until", metavar="STAGE", help="Every arm's pipeline stops after this stage.")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="STAGE.FLAG=VALUE",
                        help="More pipeline settings for every arm (e.g. a shrunk run); repeatable.")  # fmt: skip
    parser.add_argument("--results", type=Path, default=RESULTS, help="Folder of the arms' records and the report.")
    parser.add_argument("--runs", type=Path, default=Path("outputs/research"), help="Parent of the arms' runs.")
    args = parser.parse_args(argv)
    arms = [arm for arm in args.arms if arm != DEFAULT]
    if args.action == "run":
        extra = [flag for setting in args.extra for flag in ("--set", setting)]
        extra += ["--until", args.until] if args.until else []
        if DEFAULT in args.arms:
            subprocess.run(arm_command(DEFAULT, args.seeds, args.jobs, extra, args.results, args.runs), check=True)
        if arms and (missing := missing_default_runs(args.seeds, args.runs)):
            raise SystemExit(f"No default run of seeds {missing} under {args.runs}: run `--arms {DEFAULT}` first.")
        for arm in arms:
            subprocess.run(arm_command(arm, args.seeds, args.jobs, extra, args.results, args.runs), check=True)
        return
    default, *records = (json.loads((args.results / f"ablation-{arm}.json").read_text()) for arm in [DEFAULT, *arms])
    rows, steps = report(default, dict(zip(arms, records))), stage_steps(default)
    (args.results / "ablations.json").write_text(json.dumps({"stage_steps": steps, "arms": rows}, indent=1) + "\n")
    plot_differences(rows, args.results / "ablations.png")
    print("The default pipeline, stage by stage: mean [95% interval] over seeds.\n")
    print(stages_table(default["summary"]["stages"]))
    print("\nWhat each stage adds: the stage minus the checkpoint before it, paired by seed.\n")
    print(steps_markdown(steps))
    print("\nEach arm minus the default pipeline, paired by seed: mean [95% interval], percentage points (tokens for "
          "the length).\n")  # fmt: skip
    print(markdown(rows))


if __name__ == "__main__":
    main()
