"""experiments/fine_tuning_ablations.py: every arm is a valid pipeline that changes what it says, and the report
pairs each arm's final model with the default's by seed."""

import importlib.util
import json
from pathlib import Path

import pytest

from recipes.pipeline import DEFAULT_CONFIG, check_stage_inputs, load_config, stage_argv

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "fine_tuning_ablations.py"
spec = importlib.util.spec_from_file_location("fine_tuning_ablations", SCRIPT)
ablations = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablations)


def argv_of(config, name: str) -> dict:
    stage = next(s for s in config.stages if s.name == name)
    argv = stage_argv(config, stage)
    return {flag: value for flag, value in zip(argv[::2], argv[1::2])}


@pytest.mark.parametrize("arm", sorted(ablations.ARMS))
def test_each_arm_is_a_pipeline_whose_stages_accept_their_flags(arm, tmp_path):
    config = load_config(DEFAULT_CONFIG, output_dir=str(tmp_path), settings=ablations.ARMS[arm]["settings"])
    check_stage_inputs(config)  # every stage's command line parsed by its recipe, before anything trains


def test_the_arms_change_what_they_say(tmp_path):
    def config(arm):
        return load_config(DEFAULT_CONFIG, output_dir=str(tmp_path), settings=ablations.ARMS[arm]["settings"])

    default = load_config(DEFAULT_CONFIG, output_dir=str(tmp_path))
    assert argv_of(default, "reasoning_rl")["--model_name_or_path"] == str(tmp_path / "cold_start_sft")
    assert argv_of(config("no_cold_start"), "reasoning_rl")["--model_name_or_path"] == default.base_model
    assert argv_of(config("no_rejection_sampling"), "all_scenario_rl")["--model_name_or_path"] == str(
        tmp_path / "reasoning_rl"
    )
    no_language = config("no_language_reward")
    assert argv_of(no_language, "reasoning_rl")["--reward_funcs"] == "accuracy"  # then "format" as the next value
    scenario = argv_of(no_language, "all_scenario_rl")["--reward_params"]
    assert "language_consistency" not in scenario and str(tmp_path / "reward_model") in scenario
    for student in ("distill_qwen2", "distill_llama"):
        teacher = argv_of(config("no_all_scenario_rl"), student)["--teacher_model_name_or_path"]
        assert teacher == str(tmp_path / "rs_sft")


def record(values: dict[str, list[float]]) -> dict:
    """A pipeline seeds record with one accuracy per seed for each stage in `values`."""
    seeds = range(len(next(iter(values.values()))))
    return {"per_seed": [{"seed": s, "stages": {k: {"accuracy": v[s]} for k, v in values.items()}} for s in seeds]}


def test_report_pairs_the_arms_final_model_with_the_defaults_by_seed():
    default = record({"all_scenario_rl": [0.9, 0.8, 0.7], "distill_qwen2": [0.5] * 3, "distill_llama": [0.5] * 3})
    arm = record({"rs_sft": [0.8, 0.7, 0.6], "all_scenario_rl": [0.0] * 3, "distill_qwen2": [0.6] * 3,
                  "distill_llama": [0.5] * 3})  # fmt: skip
    rows = ablations.report(default, {"no_all_scenario_rl": arm})["no_all_scenario_rl"]
    assert rows["R1"]["accuracy"]["mean"] == pytest.approx(-0.1)  # rs_sft against the default's all_scenario_rl
    assert rows["R1"]["accuracy"]["verdict"] == "B lower"
    assert rows["distill_qwen2"]["accuracy"]["mean"] == pytest.approx(0.1)
    assert "| no_all_scenario_rl | R1 | -10.0 [-10.0, -10.0] |" in ablations.markdown({"no_all_scenario_rl": rows})


# The tiny variant: one arm for one seed with every stage shrunk to a few steps (the notebook's CI settings).
SHRUNK = [f"{stage}.max_steps=2" for stage in ("r1_zero", "cold_start_sft", "reasoning_rl", "rs_sft", "reward_model")]
SHRUNK += [f"{stage}.mtp_refresh_steps=1" for stage in ("r1_zero", "reasoning_rl", "all_scenario_rl")]
SHRUNK += ["rejection_sampling.max_prompts=8", "rejection_sampling.num_generations=2", "all_scenario_rl.max_steps=2"]
SHRUNK += ["all_scenario_data.n_train=16", "all_scenario_data.n_test=8", "distill_qwen2.max_prompts=8"]
SHRUNK += ["distill_qwen2.trace_num_generations=2", "distill_qwen2.max_steps=2", "distill_llama.max_steps=2"]
SHRUNK += ["eval.max_samples=8", "eval.r1_samples=0"]


def test_an_arm_runs_end_to_end_at_a_tiny_size_linking_the_defaults_stages_and_is_reported(tmp_path, capsys):
    shrunk = [flag for setting in SHRUNK for flag in ("--set", setting)]
    common = ["--seeds", "0", "--jobs", "1", "--results", str(tmp_path), "--runs", str(tmp_path / "runs"), *shrunk]
    with pytest.raises(SystemExit, match="No default run of seeds \\[0\\]"):
        ablations.main(["run", "--arms", "no_all_scenario_rl", *common])  # nothing to link from yet
    ablations.main(["run", "--arms", "default", "no_all_scenario_rl", *common])
    default, arm = (
        json.loads((tmp_path / f"ablation-{name}.json").read_text()) for name in ("default", "no_all_scenario_rl")
    )
    (run,) = arm["per_seed"]
    assert {"rs_sft", "all_scenario_rl", "distill_qwen2"} <= set(run["stages"])
    runs = tmp_path / "runs"
    assert (runs / "ablation-no_all_scenario_rl/seed-0/rs_sft").resolve() == runs / "ablation-default/seed-0/rs_sft"
    assert not (runs / "ablation-no_all_scenario_rl/seed-0/distill_qwen2").is_symlink()  # its teacher changed
    teacher = json.loads((runs / "ablation-no_all_scenario_rl/seed-0/distill_qwen2/stage.json").read_text())
    assert teacher["hyperparameters"]["teacher"].endswith("seed-0/rs_sft")  # the students learnt from rs_sft
    ablations.main(["report", "--arms", "no_all_scenario_rl", "--results", str(tmp_path)])
    written = json.loads((tmp_path / "ablations.json").read_text())
    rows = written["arms"]["no_all_scenario_rl"]
    (default_run,) = default["per_seed"]
    assert rows["R1"]["accuracy"]["mean"] == pytest.approx(
        run["stages"]["rs_sft"]["accuracy"] - default_run["stages"]["all_scenario_rl"]["accuracy"]
    )
    assert set(rows) == {"R1", "distill_qwen2", "distill_llama"}
    assert written["stage_steps"]["reasoning_rl - cold_start_sft"]["accuracy"]["mean"] == pytest.approx(
        default_run["stages"]["reasoning_rl"]["accuracy"] - default_run["stages"]["cold_start_sft"]["accuracy"]
    )
    assert "| all_scenario_rl |" in capsys.readouterr().out  # the default's stage-by-stage table
    assert (tmp_path / "ablations.png").stat().st_size > 0


def test_stage_steps_pair_each_stage_with_the_checkpoint_before_it_by_seed():
    stages = ("base", "r1_zero", "cold_start_sft", "reasoning_rl", "rs_sft", "all_scenario_rl")
    default = record({stage: [0.1 * k, 0.1 * k + 0.02, 0.1 * k + 0.04] for k, stage in enumerate(stages)})
    default["per_seed"][2]["stages"]["r1_zero"]["accuracy"] = 0.5  # seed 2's R1-Zero: 0.36 higher than the others'
    steps = ablations.stage_steps(default)
    assert list(steps) == [f"{stage} - {before}" for before, stage in ablations.STAGE_STEPS]
    assert steps["reasoning_rl - cold_start_sft"]["accuracy"]["mean"] == pytest.approx(0.1)
    assert steps["reasoning_rl - cold_start_sft"]["accuracy"]["sd"] == pytest.approx(0.0)  # paired: seeds cancel
    assert steps["all_scenario_rl - r1_zero"]["accuracy"]["mean"] == pytest.approx((0.4 + 0.4 + 0.04) / 3)
    assert "| reasoning_rl - cold_start_sft | 10.0 [10.0, 10.0] |" in ablations.steps_markdown(steps)


def test_a_run_until_r1_is_reported_without_the_students():
    default = record({"rs_sft": [0.8, 0.7, 0.6], "all_scenario_rl": [0.9, 0.8, 0.7]})
    arm = record({"rs_sft": [0.8, 0.7, 0.6], "all_scenario_rl": [1.0, 0.9, 0.8]})
    rows = ablations.report(default, {"no_rejection_sampling": arm})["no_rejection_sampling"]
    assert set(rows) == {"R1"} and rows["R1"]["accuracy"]["mean"] == pytest.approx(0.1)
