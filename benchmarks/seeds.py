"""Rerun a training command over several seeds and report each held-out metric as a mean with a 95% interval.

    python benchmarks/seeds.py --seeds 0 1 2 --out docs/results/grpo-tiny-seeds.json -- \\
        accelerate launch recipes/grpo.py [its arguments]

Each seed runs `<command> --seed S --output_dir <runs>/seed-S`, with `{seed}` in the command replaced by S (the
evaluation samples with the same seed, so the interval covers training and sampling noise), and is read back from
the run's `<evaluation>_before.json` and `<evaluation>_after.json` (`heldout`: the test split; `ood`: out of
distribution, where the run wrote one). For
every evaluation and metric, over the n seeds: the mean, the standard deviation s, and the 95% interval
mean ± t(0.975, n-1) · s / sqrt(n); for the change (after - before, paired by seed) the same. A change is called
an improvement or a drop only when its interval excludes zero; otherwise the two are indistinguishable.
The per-seed values, the command and the interval go to `--out` (JSON); a Markdown table is printed. A run over
seeds that stopped after its seeds' runs had finished is recorded from them with `--collect` (no command).

Two arms (two such JSON files over the same seeds, e.g. two learning rates) are compared by the interval of their
difference after training, paired by seed; one is better only when that interval excludes zero:

    python benchmarks/seeds.py --compare docs/results/a.json docs/results/b.json

The R1 pipeline runs the same way (`-- python recipes/pipeline.py`): its `results.json` has one row per stage, and
each stage's metrics (test, and `ood_` out of distribution) get their interval over seeds. Two stages, of one file
or of two, are compared as `FILE:STAGE` arms:

    python benchmarks/seeds.py --compare docs/results/pipeline.json:r1_zero docs/results/pipeline.json:all_scenario_rl
"""

import argparse
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom; the normal value beyond.
T_975 = (
    *(12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131),
    *(2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042),
)


def add_seed_arguments(parser: argparse.ArgumentParser) -> None:
    """`--seeds` (three by default) and `--jobs`, for a script that runs its arms through this one."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Training seeds of every arm.")
    parser.add_argument("--jobs", type=int, default=3, help="Seeds run at once (benchmarks/seeds.py --jobs).")


def slug(arm: str) -> str:
    """An arm's name as a file or folder name: lower case, runs of anything but letters and digits as one hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", arm.lower()).strip("-")


def seeds_command(seeds: list[int], jobs: int, runs: Path, out: Path, command: list[str]) -> list[str]:
    """The command line that runs `command` over `seeds` through this script, its runs under `runs`, its record in
    `out`: how the experiments run an arm."""
    return [
        sys.executable, str(Path(__file__).resolve()), "--seeds", *map(str, seeds), "--jobs", str(jobs),
        "--runs", str(runs), "--out", str(out), "--", *command,
    ]  # fmt: skip


def interval(values: list[float]) -> dict:
    """Mean, standard deviation over seeds and the 95% t-interval of the mean (None bounds with one seed)."""
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "low": None, "high": None}
    sd = statistics.stdev(values)
    half = (T_975[n - 2] if n - 1 <= len(T_975) else 1.960) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half}


def verdict(change: dict) -> str:
    if change["low"] is None:
        return "one seed: no interval"
    if change["low"] > 0:
        return "higher after"
    if change["high"] < 0:
        return "lower after"
    return "indistinguishable"


EVALUATIONS = ("heldout", "ood")


def run_seed(command: list[str], seed: int, runs: Path, threads: int | None = None) -> dict:
    """{"seed", "seconds", evaluation: {"before": metrics, "after": metrics}} for the evaluations a training run
    wrote, or {"seed", "seconds", "stages": {stage: metrics}} for a pipeline's `results.json`. With `threads`, the
    run's torch uses that many CPU threads (`OMP_NUM_THREADS`)."""
    output_dir = runs / f"seed-{seed}"
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.monotonic()
    argv = [arg.replace("{seed}", str(seed)) for arg in command]
    subprocess.run([*argv, "--seed", str(seed), "--output_dir", str(output_dir)], check=True, env=env)
    record = {"seed": seed, "seconds": round(time.monotonic() - start, 1)}
    if threads is not None:
        record["threads"] = threads
    return read_run(output_dir, record)


def is_finished(output_dir: Path) -> bool:
    return (output_dir / "results.json").exists() or any(
        (output_dir / f"{evaluation}_after.json").exists() for evaluation in EVALUATIONS
    )


def read_run(output_dir: Path, record: dict) -> dict:
    """`record` with the finished run's evaluations (or a pipeline's stages) read from `output_dir`."""
    if (output_dir / "results.json").exists():
        rows = json.loads((output_dir / "results.json").read_text())
        record["stages"] = {row["stage"]: numeric(row) for row in rows if "accuracy" in row}
        return record
    for evaluation in EVALUATIONS:
        if (output_dir / f"{evaluation}_after.json").exists():
            record[evaluation] = {
                side: json.loads((output_dir / f"{evaluation}_{side}.json").read_text()) for side in ("before", "after")
            }
    return record


def run_seeds(command: list[str], seeds: list[int], runs: Path, jobs: int) -> list[dict]:
    """Every seed's record, in the order of `seeds`. With `jobs` > 1, that many seeds run at once, the CPUs shared
    out between them (`OMP_NUM_THREADS`: CPUs // jobs each, so that no two runs' threads contend for one core)."""
    if jobs == 1:
        return [run_seed(command, seed, runs) for seed in seeds]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda seed: run_seed(command, seed, runs, threads), seeds))


def numeric(row: dict) -> dict:
    """A pipeline row's metrics: the numbers, without standard errors (the interval over seeds replaces them)."""
    return {
        key: value
        for key, value in row.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not key.endswith("_stderr")
    }


def summarise_stages(per_seed: list[dict]) -> dict:
    """{stage: {metric: interval}} over the seeds, for the metrics every seed measured (NaN: could not judge)."""
    summary = {}
    for stage in per_seed[0]["stages"]:
        runs = [run["stages"].get(stage, {}) for run in per_seed]
        names = [n for n in runs[0] if all(n in run and not math.isnan(run[n]) for run in runs)]
        summary[stage] = {name: interval([run[name] for run in runs]) for name in names}
    return summary


def summarise(per_seed: list[dict]) -> dict:
    """{evaluation: {metric: {"before", "after", "change"}}} over the seeds, for the metrics every seed measured on
    both sides (NaN: could not judge, e.g. language with no words); for a pipeline {"stages": ...}."""
    if all("stages" in run for run in per_seed):
        return {"stages": summarise_stages(per_seed)}
    summary = {}
    for evaluation in (e for e in EVALUATIONS if all(e in run for run in per_seed)):
        runs = [run[evaluation] for run in per_seed]
        summary[evaluation] = {}
        for name in (n for n in runs[0]["after"] if not n.endswith("_stderr")):
            if any(math.isnan(run[side][name]) for run in runs for side in ("before", "after")):
                continue
            before = [run["before"][name] for run in runs]
            after = [run["after"][name] for run in runs]
            change = interval([a - b for a, b in zip(after, before)])
            change["verdict"] = verdict(change)
            summary[evaluation][name] = {"before": interval(before), "after": interval(after), "change": change}
    if not summary:
        raise SystemExit(f"No seed's run wrote held-out metrics ({', '.join(EVALUATIONS)}_after.json).")
    return summary


def shown(stats: dict, share: bool, change: bool) -> str:
    """mean [low, high]; a share's interval is clipped to [0, 100] % for display (the JSON keeps the t-interval)."""
    scale = 100 if share else 1
    low, high = stats["low"], stats["high"]
    text = f"{scale * stats['mean']:.1f}"
    if low is not None:
        if share and not change:
            low, high = max(low, 0.0), min(high, 1.0)
        text += f" [{scale * low:.1f}, {scale * high:.1f}]"
    return text


def table(metrics: dict) -> str:
    lines = [
        "| held-out metric (mean [95% CI] over seeds) | before | after | change | verdict |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, stats in metrics.items():
        share = name != "mean_completion_tokens"
        cells = [shown(stats[side], share, side == "change") for side in ("before", "after", "change")]
        lines.append(f"| {name}{' (%)' if share else ''} | {' | '.join(cells)} | {stats['change']['verdict']} |")
    return "\n".join(lines)


def stages_table(summary: dict) -> str:
    """One row per pipeline stage, one column per metric the stages share: mean [95% CI] over seeds."""
    names = [n for n in next(iter(summary.values())) if all(n in metrics for metrics in summary.values())]
    lines = [
        "| stage (mean [95% CI] over seeds) | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for stage, metrics in summary.items():
        cells = [shown(metrics[n], "mean_completion_tokens" not in n, False) for n in names]
        lines.append(f"| {stage} | {' | '.join(cells)} |")
    return "\n".join(lines)


def arm_values(record: dict, stage: str | None) -> list[dict]:
    """An arm's metrics after training, one flat dict per seed (out-of-distribution ones prefixed `ood_`): a
    training run's `after` measurements, or one stage of a pipeline."""
    if stage is not None:
        missing = [run["seed"] for run in record["per_seed"] if stage not in run.get("stages", {})]
        if missing:
            raise SystemExit(f"No stage {stage!r} in the pipeline results of seeds {missing}.")
        return [run["stages"][stage] for run in record["per_seed"]]
    if any("stages" in run for run in record["per_seed"]):
        raise SystemExit("A pipeline's results hold several stages: name one as FILE:STAGE.")
    return [
        {
            ("" if evaluation == "heldout" else f"{evaluation}_") + name: value
            for evaluation in EVALUATIONS
            if evaluation in run
            for name, value in run[evaluation]["after"].items()
            if not name.endswith("_stderr")
        }
        for run in record["per_seed"]
    ]


def compare(a: dict, b: dict, stage_a: str | None = None, stage_b: str | None = None) -> dict:
    """{metric: interval of (b - a) after training, paired by seed, with its verdict}; `stage_*` picks a pipeline
    stage."""
    seeds_a, seeds_b = [run["seed"] for run in a["per_seed"]], [run["seed"] for run in b["per_seed"]]
    if seeds_a != seeds_b:
        raise SystemExit(f"The arms ran different seeds ({seeds_a} vs {seeds_b}): pair them by running the same.")
    values_a, values_b = arm_values(a, stage_a), arm_values(b, stage_b)
    result = {}
    for name in (n for n in values_a[0] if all(n in run for run in values_a + values_b)):
        differences = [run_b[name] - run_a[name] for run_a, run_b in zip(values_a, values_b)]
        if any(math.isnan(d) for d in differences):
            continue  # a metric that could not judge in some seed (e.g. language with no reasoning words)
        stats = interval(differences)
        said = verdict(stats)
        stats["verdict"] = {"higher after": "B higher", "lower after": "B lower"}.get(said, said)
        result[name] = stats
    return result


def read_arm(spec: str) -> tuple[dict, str | None]:
    """`FILE` or `FILE:STAGE` -> (the results file's record, the stage or None)."""
    path, _, stage = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    return json.loads(Path(path).read_text()), stage or None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--runs", type=Path, default=Path("outputs/seeds"), help="Parent of the seeds' output dirs.")
    parser.add_argument(
        "--jobs", type=int, default=1, help="Seeds run at once, the CPUs shared out between them (default 1)."
    )
    parser.add_argument("--out", type=Path, help="JSON file for the per-seed values and the summary.")
    parser.add_argument(
        "--compare", nargs=2, metavar=("A", "B"), help="Two result files (FILE, or FILE:STAGE for a pipeline): B - A."
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="Read the seeds' finished runs under --runs instead of running a command: for a run over seeds that "
        "stopped after its seeds' runs had finished (a recipe refuses to retrain a finished run). No seconds recorded.",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The training command, after `--`.")
    args = parser.parse_args(argv)
    if args.compare:
        (a, stage_a), (b, stage_b) = (read_arm(spec) for spec in args.compare)
        print(f"{args.compare[1]} - {args.compare[0]}, after training, paired by seed (mean [95% CI]):")
        for name, stats in compare(a, b, stage_a, stage_b).items():
            print(f"  {name}: {shown(stats, 'mean_completion_tokens' not in name, True)} {stats['verdict']}")
        return
    if not args.seeds or not args.out:
        parser.error("--seeds and --out are required to run (or give --compare A B)")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command and not args.collect:
        parser.error("give the training command after `--`, e.g. -- accelerate launch recipes/grpo.py")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed: {args.seeds}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.collect:
        unfinished = [str(args.runs / f"seed-{s}") for s in args.seeds if not is_finished(args.runs / f"seed-{s}")]
        if unfinished:
            parser.error(f"--collect: no finished run (evaluations after training) in {', '.join(unfinished)}")
        per_seed = [read_run(args.runs / f"seed-{s}", {"seed": s, "collected": True}) for s in args.seeds]
    else:
        per_seed = run_seeds(command, args.seeds, args.runs, args.jobs)
    summary = summarise(per_seed)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    record = {
        "command": shlex.join(["python", "benchmarks/seeds.py", *(sys.argv[1:] if argv is None else argv)]),
        "commit": commit,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "interval": "95% t-interval of the mean over seeds; change = after - before, paired by seed",
        "per_seed": per_seed,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    if "stages" in summary:
        print(stages_table(summary["stages"]))
        return
    for evaluation, metrics in summary.items():
        print(f"\n{evaluation}:\n{table(metrics)}")


if __name__ == "__main__":
    sys.exit(main())
