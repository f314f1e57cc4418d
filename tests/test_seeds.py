"""benchmarks/seeds.py: intervals over seeds, the verdict on a change, and a run over a stand-in training command."""

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "seeds.py"
spec = importlib.util.spec_from_file_location("seeds", SCRIPT)
seeds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seeds)

# A stand-in for a training run: writes held-out metrics that depend on the seed, as recipes/grpo.py does.
FAKE_RUN = """
import json, sys
from pathlib import Path
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
seed, out = int(args["--seed"]), Path(args["--output_dir"])
out.mkdir(parents=True)
(out / "heldout_before.json").write_text(json.dumps({"accuracy": 0.40 + 0.01 * seed, "accuracy_stderr": 0.03}))
(out / "heldout_after.json").write_text(json.dumps({"accuracy": 0.90 - 0.02 * seed, "accuracy_stderr": 0.02}))
(out / "ood_before.json").write_text(json.dumps({"accuracy": 0.10}))
(out / "ood_after.json").write_text(json.dumps({"accuracy": 0.10 + 0.05 * (seed - 1)}))
"""


def test_interval_matches_the_t_interval_by_hand():
    stats = seeds.interval([0.95, 0.975, 0.935])
    sd = math.sqrt(((0.95 - 0.95333) ** 2 + (0.975 - 0.95333) ** 2 + (0.935 - 0.95333) ** 2) / 2)
    assert stats["mean"] == pytest.approx(0.953333, abs=1e-6) and stats["sd"] == pytest.approx(sd, abs=1e-5)
    assert stats["high"] - stats["mean"] == pytest.approx(4.303 * sd / math.sqrt(3), abs=1e-5)
    assert seeds.interval([0.5])["low"] is None


def test_a_change_is_called_only_when_its_interval_excludes_zero():
    assert seeds.verdict(seeds.interval([0.1, 0.12, 0.11])) == "higher after"
    assert seeds.verdict(seeds.interval([-0.1, -0.12, -0.11])) == "lower after"
    assert seeds.verdict(seeds.interval([0.1, -0.05, 0.02])) == "indistinguishable"
    assert seeds.verdict(seeds.interval([0.1])) == "one seed: no interval"


def test_a_run_over_seeds_records_every_seed(tmp_path, capsys):
    out = tmp_path / "result.json"
    seeds.main(
        [
            "--seeds",
            "0",
            "1",
            "2",
            "--runs",
            str(tmp_path / "runs"),
            "--out",
            str(out),
            "--",
            sys.executable,
            "-c",
            FAKE_RUN,
        ]
    )
    record = json.loads(out.read_text())
    assert [run["seed"] for run in record["per_seed"]] == [0, 1, 2]
    assert [run["heldout"]["after"]["accuracy"] for run in record["per_seed"]] == pytest.approx([0.90, 0.88, 0.86])
    change = record["summary"]["heldout"]["accuracy"]["change"]
    assert change["mean"] == pytest.approx(0.47) and change["verdict"] == "higher after"
    assert "accuracy_stderr" not in record["summary"]["heldout"]
    assert record["summary"]["ood"]["accuracy"]["change"]["verdict"] == "indistinguishable"  # -0.05, 0, +0.05
    assert "| accuracy (%) | 41.0 [" in capsys.readouterr().out


def test_finished_runs_are_collected_without_running_and_an_unfinished_one_is_named(tmp_path, capsys):
    runs, first, collected = tmp_path / "runs", tmp_path / "first.json", tmp_path / "collected.json"
    seeds.main(["--seeds", "0", "1", "--runs", str(runs), "--out", str(first), "--", sys.executable, "-c", FAKE_RUN])
    seeds.main(["--seeds", "0", "1", "--runs", str(runs), "--out", str(collected), "--collect"])
    ran, read = json.loads(first.read_text()), json.loads(collected.read_text())
    assert [run["heldout"] for run in read["per_seed"]] == [run["heldout"] for run in ran["per_seed"]]
    assert all(run["collected"] and "seconds" not in run for run in read["per_seed"])
    assert read["summary"] == ran["summary"]
    with pytest.raises(SystemExit):
        seeds.main(["--seeds", "0", "2", "--runs", str(runs), "--out", str(collected), "--collect"])
    assert str(runs / "seed-2") in capsys.readouterr().err and not (runs / "seed-2").exists()  # named, not run


def test_two_arms_are_compared_by_the_interval_of_their_difference(tmp_path, capsys):
    def arm(after):
        runs = [{"seed": s, "heldout": {"before": {"accuracy": 0.4}, "after": {"accuracy": a}}} for s, a in after]
        return {"per_seed": runs, "summary": seeds.summarise(runs)}

    a = arm([(0, 0.80), (1, 0.82), (2, 0.81)])
    better, same = arm([(0, 0.90), (1, 0.91), (2, 0.93)]), arm([(0, 0.85), (1, 0.78), (2, 0.81)])
    assert seeds.compare(a, better)["accuracy"]["verdict"] == "B higher"
    assert seeds.compare(a, same)["accuracy"]["verdict"] == "indistinguishable"
    with pytest.raises(SystemExit, match="different seeds"):
        seeds.compare(a, arm([(5, 0.9), (6, 0.9), (7, 0.9)]))
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, record in zip(paths, (a, better)):
        path.write_text(json.dumps(record))
    seeds.main(["--compare", *map(str, paths)])
    assert "accuracy: 10.3 [" in capsys.readouterr().out


def test_a_metric_one_seed_could_not_judge_is_left_out_of_the_summary_not_a_crash():
    """A NaN metric (the language of completions with no words to judge) in one seed's run: that metric gets no
    interval, the others keep theirs (it once crashed the summary after every seed had trained)."""
    nan = float("nan")
    runs = [
        {"seed": s, "heldout": {"before": {"accuracy": 0.1, "language_consistency": 1.0},
                                "after": {"accuracy": a, "language_consistency": lang}}}
        for s, a, lang in [(0, 0.5, 1.0), (1, 0.6, nan), (2, 0.55, 0.9)]
    ]  # fmt: skip
    summary = seeds.summarise(runs)["heldout"]
    assert set(summary) == {"accuracy"}
    assert summary["accuracy"]["after"]["mean"] == pytest.approx(0.55)


# A stand-in for the pipeline: one row per stage in results.json, as recipes/pipeline.py writes it.
FAKE_PIPELINE = """
import json, sys
from pathlib import Path
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
seed, out = int(args["--seed"]), Path(args["--output_dir"])
out.mkdir(parents=True)
rows = [
    {"stage": "base", "recipe": "", "accuracy": 0.40 + 0.01 * seed, "accuracy_stderr": 0.03, "ood_accuracy": 0.1},
    {"stage": "r1_zero", "recipe": "grpo", "accuracy": 0.90 - 0.02 * seed, "ood_accuracy": 0.02 * seed,
     "language_consistency": float("nan") if seed == 1 else 1.0},
    {"stage": "rejection_sampling", "recipe": "rejection_sampling", "note": "kept_reasoning 400"},
    {"stage": "r1", "recipe": "grpo", "accuracy": 0.90 - 0.02 * seed + [0.01, -0.02, 0.02][seed], "ood_accuracy": 0.3,
     "language_consistency": 1.0},
]
(out / "results.json").write_text(json.dumps(rows))
"""


def test_a_pipeline_over_seeds_gives_each_stage_an_interval_and_compares_stages(tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    argv = ["--seeds", "0", "1", "2", "--runs", str(tmp_path / "runs"), "--out", str(out)]
    seeds.main([*argv, "--", sys.executable, "-c", FAKE_PIPELINE])
    record = json.loads(out.read_text())
    stages = record["summary"]["stages"]
    assert list(stages) == ["base", "r1_zero", "r1"]  # the data stage has no metrics
    assert stages["r1_zero"]["accuracy"]["mean"] == pytest.approx(0.88)
    assert "accuracy_stderr" not in stages["base"] and "language_consistency" not in stages["r1_zero"]  # NaN in seed 1
    assert "| r1_zero | 88.0 [" in capsys.readouterr().out

    result = seeds.compare(record, record, "r1_zero", "r1")
    assert (
        result["accuracy"]["mean"] == pytest.approx(0.01 / 3) and result["accuracy"]["verdict"] == "indistinguishable"
    )
    assert result["ood_accuracy"]["verdict"] == "B higher"  # 0.3, 0.28, 0.26
    assert "language_consistency" not in result
    seeds.main(["--compare", f"{out}:r1_zero", f"{out}:r1"])
    assert "ood_accuracy: 28.0 [" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="name one as FILE:STAGE"):
        seeds.compare(record, record)
    with pytest.raises(SystemExit, match="No stage 'r2'"):
        seeds.compare(record, record, "r1", "r2")


def test_seeds_run_side_by_side_share_the_cpus(tmp_path):
    out = tmp_path / "result.json"
    argv = ["--seeds", "2", "0", "1", "--jobs", "3", "--runs", str(tmp_path / "runs"), "--out", str(out)]
    seeds.main([*argv, "--", sys.executable, "-c", FAKE_RUN])
    record = json.loads(out.read_text())
    assert [run["seed"] for run in record["per_seed"]] == [2, 0, 1]  # in the order asked, whatever finished first
    assert [run["heldout"]["after"]["accuracy"] for run in record["per_seed"]] == pytest.approx([0.86, 0.90, 0.88])
    threads = max(1, (os.cpu_count() or 1) // 3)
    assert all(run["threads"] == threads for run in record["per_seed"])
    assert record["command"].startswith("python benchmarks/seeds.py --seeds 2 0 1 --jobs 3 ")


def test_seed_in_the_command_is_each_run_s_own(tmp_path):
    """`{seed}` in the command becomes the seed (e.g. `--reuse runs/seed-{seed}`), so each run reads its own seed's
    earlier folder."""
    stand_in = FAKE_RUN + "assert args['--from'] == f'upstream/seed-{seed}', args\n"
    out = tmp_path / "result.json"
    argv = ["--seeds", "0", "1", "--runs", str(tmp_path / "runs"), "--out", str(out)]
    seeds.main([*argv, "--", sys.executable, "-c", stand_in, "--from", "upstream/seed-{seed}"])
    assert [run["seed"] for run in json.loads(out.read_text())["per_seed"]] == [0, 1]
