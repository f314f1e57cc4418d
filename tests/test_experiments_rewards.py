"""experiments/reward_design.py: the arms are valid main-job command lines, the hack labels say what they claim, and
one arm runs end to end at a tiny size with its hacks read from the logged completions."""

import importlib.util
import json
import shutil
import statistics
from pathlib import Path

import pytest

from recipes.grpo import DEFAULT_CONFIG, make_parser
from recipes.lib.cli import parse_recipe_args

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "reward_design.py"
spec = importlib.util.spec_from_file_location("reward_design", SCRIPT)
reward_design = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reward_design)


@pytest.mark.parametrize("arm", list(reward_design.ARMS))
def test_each_arm_is_a_main_job_command_line(arm, tmp_path):
    script_args, training_args, _ = parse_recipe_args(
        make_parser(), DEFAULT_CONFIG, [*reward_design.ARMS[arm], "--output_dir", str(tmp_path)]
    )
    assert len(script_args.reward_funcs) == len(training_args.reward_weights)


def test_hack_labels():
    detect = reward_design.HackDetector()
    completions = [
        "<think> 7 + 5 = 12, 12 + 9 = 21 </think> <answer> 21 </answer>",  # an answer
        "<think> 7 + 5 = 12, 12 + 9 = 21 </think> <answer> 7 + 5 + 9 </answer>",  # equals 21, not one integer
        "<think> </think> <answer> 21 </answer>",  # format and the right number, no reasoning
        "<think> 7 + 5 = 12, 12 + 9 = 21 </think> <answer> twenty-one </answer>",  # format, no integer
    ]
    labels = detect(completions, ["21"] * 4)
    assert labels[0] == dict.fromkeys(reward_design.HACKS, False)
    assert labels[1]["expression_answer"] and not labels[1]["empty_reasoning"]
    assert labels[2]["empty_reasoning"] and not labels[2]["expression_answer"]
    assert labels[3]["format_without_answer"] and not labels[3]["expression_answer"]


def test_an_arm_runs_end_to_end_at_a_tiny_size_and_the_report_reads_its_curves(tmp_path):
    tiny = "--max_steps 2 --eval_max_samples 8 --eval_r1_samples 0 --mtp_refresh_steps 0 --save_strategy no"
    tiny += " --logging_steps 1"
    runs = tmp_path / "runs"
    reward_design.main(["run", "--arms", "format only", "--seeds", "0", "--jobs", "1", "--results", str(tmp_path),
                        "--runs", str(runs), "--flag", tiny])  # fmt: skip
    record = json.loads((tmp_path / "rewards-format-only.json").read_text())
    assert [run["seed"] for run in record["per_seed"]] == [0]
    rates = reward_design.hack_rates(runs / "rewards-format-only/seed-0", reward_design.HackDetector(),
                                     reward_design.builtin_golds())  # fmt: skip
    assert {hack: list(steps) for hack, steps in rates.items()} == dict.fromkeys(reward_design.HACKS, [1, 2])
    assert all(0 <= rate <= 1 for steps in rates.values() for rate in steps.values())

    # The same run stands in for the default arm: the report pairs them by seed (a difference of 0).
    shutil.copy(tmp_path / "rewards-format-only.json", tmp_path / "rewards-accuracy-format.json")
    shutil.copytree(runs / "rewards-format-only", runs / "rewards-accuracy-format")
    reward_design.main(["report", "--arms", "format only", "--results", str(tmp_path), "--runs", str(runs)])
    result = json.loads((tmp_path / "reward-design.json").read_text())
    assert list(result) == [reward_design.DEFAULT_ARM, "format only"]
    arm = result["format only"]
    assert arm["minus_default"]["accuracy"]["mean"] == 0 and arm["seeds"] == [0]
    assert set(arm["curves"]) == set(reward_design.PANELS)
    assert all([p["step"] for p in arm["curves"][name]] == [1, 2] for name in reward_design.PANELS)
    compliance = [p["mean"] for p in arm["curves"]["format_compliance"]]  # both steps are within each end
    assert arm["curve_ends"]["format_compliance"]["last"]["mean"] == pytest.approx(statistics.fmean(compliance))
    assert (tmp_path / "reward-design.png").exists()
