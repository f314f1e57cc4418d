"""experiments/rl_vs_sft.py: the arms are one valid pipeline whose SFT stages stop at the token budget, each arm's
compute is read from its stages, and the whole experiment runs end to end at a tiny size."""

import importlib.util
import json
from pathlib import Path

import pytest

from recipes.lib.task import make_cold_start
from recipes.pipeline import check_stage_inputs, load_config, stage_argv

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "rl_vs_sft.py"
spec = importlib.util.spec_from_file_location("rl_vs_sft", SCRIPT)
rl_vs_sft = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rl_vs_sft)


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    """A stand-in for the default pipeline's curated traces of one seed (`messages` rows saved to disk)."""
    folder = tmp_path_factory.mktemp("teacher") / "seed-0" / "distill_qwen2" / "traces"
    make_cold_start(64, seed=1).save_to_disk(str(folder))
    return folder.parents[2]


def test_the_arms_are_one_pipeline_from_the_base_at_one_budget(tmp_path, traces):
    config = load_config(
        rl_vs_sft.CONFIG,
        output_dir=str(tmp_path),
        settings=[f"distill_r1.dataset_name={traces}/seed-0/distill_qwen2/traces"],
    )
    check_stage_inputs(config)  # every stage's command line parsed by its recipe, before anything trains
    argv = {s.name: dict(zip(stage_argv(config, s)[::2], stage_argv(config, s)[1::2])) for s in config.stages}
    starts = {name: args.get("--model_name_or_path") for name, args in argv.items() if name != "base_samples"}
    assert starts.pop("sft_then_grpo") == str(tmp_path / "sft_half")
    assert set(starts.values()) == {config.base_model}  # every other arm starts from the base
    budgets = {name: int(args["--max_train_tokens"]) for name, args in argv.items() if "--max_train_tokens" in args}
    assert budgets == {"sft_gold": 230000, "rft": 230000, "sft_half": 115000, "distill_r1": 230000}
    assert argv["base_samples"]["--num_generations"] == "8" and argv["base_samples"]["--max_prompts"] == "400"


def test_sft_stops_at_its_token_budget(tmp_path):
    from recipes.lib.cli import parse_recipe_args
    from recipes.sft import DEFAULT_CONFIG, main, make_parser

    flags = ["--max_train_tokens", "300", "--num_train_epochs", "5", "--builtin_train_size", "64"]
    flags += ["--eval_heldout", "false", "--save_strategy", "no", "--output_dir", str(tmp_path)]
    trainer = main(*parse_recipe_args(make_parser(), DEFAULT_CONFIG, flags))
    seen = trainer.state.num_input_tokens_seen
    per_step = seen / trainer.state.global_step
    assert 300 <= seen < 300 + 2 * per_step  # stopped at the first step past the budget, far before 5 epochs
    assert trainer.state.global_step < 64 * 5 // 16
    with pytest.raises(ValueError, match="max_train_tokens must be a positive"):
        parse_recipe_args(make_parser(), DEFAULT_CONFIG, ["--max_train_tokens", "0", "--output_dir", str(tmp_path)])


def test_grpo_generated_tokens_weigh_each_log_by_the_steps_it_covers(tmp_path):
    state = {
        "global_step": 5,
        "train_batch_size": 4,
        "log_history": [
            {"step": 2, "completions/mean_length": 10.0},
            {"step": 4, "completions/mean_length": 20.0},
            {"step": 5, "train_runtime": 1.0},  # the closing row carries no completion statistics
        ],
    }
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "stage.json").write_text(json.dumps({"metrics": {}}))
    assert rl_vs_sft.generated_tokens(tmp_path) == pytest.approx(15.0 * 4 * 5)
    (tmp_path / "stage.json").write_text(json.dumps({"metrics": {"generated_tokens": 123}}))
    assert rl_vs_sft.generated_tokens(tmp_path) == 123  # rejection sampling counts its own


# The tiny variant: every stage shrunk to a few steps or tokens, 8 problems measured greedily.
SHRUNK = ["grpo.max_steps=2", "sft_then_grpo.max_steps=2", "sft_gold.max_train_tokens=400"]
SHRUNK += ["sft_half.max_train_tokens=200", "rft.max_train_tokens=400", "distill_r1.max_train_tokens=400"]
SHRUNK += ["base_samples.max_prompts=16", "base_samples.num_generations=4", "eval.max_samples=8", "eval.r1_samples=0"]
SHRUNK += ["eval.ood_split=''", "grpo.logging_steps=1", "sft_then_grpo.logging_steps=1"]


def test_the_experiment_runs_end_to_end_at_a_tiny_size_and_is_reported(tmp_path, traces):
    shrunk = [flag for setting in SHRUNK for flag in ("--set", setting)]
    rl_vs_sft.main(["run", "--seeds", "0", "--jobs", "1", "--teacher_runs", str(traces), "--results", str(tmp_path),
                    "--runs", str(tmp_path / "runs"), *shrunk])  # fmt: skip
    (run,) = json.loads((tmp_path / "rl-vs-sft-runs.json").read_text())
    assert run["seed"] == 0 and set(run["compute"]) == set(rl_vs_sft.ARMS)
    stages = tmp_path / "runs" / "seed-0"
    assert run["compute"]["sft_then_grpo"]["trained_tokens"] == rl_vs_sft.trained_tokens(
        stages / "sft_half"
    ) + rl_vs_sft.trained_tokens(stages / "sft_then_grpo")
    assert all(run["compute"][arm]["trained_tokens"] >= 400 for arm in ("sft_gold", "rft", "distill_r1"))
    assert run["compute"]["sft_gold"]["generated_tokens"] == run["compute"]["distill_r1"]["generated_tokens"] == 0
    assert run["compute"]["rft"]["generated_tokens"] > 0 and run["compute"]["grpo"]["generated_tokens"] > 0
    for shares in run["styles"].values():
        assert sum(shares.values()) == pytest.approx(1.0) and set(shares) == set(rl_vs_sft.STYLES)
    rl_vs_sft.main(["report", "--results", str(tmp_path)])
    result = json.loads((tmp_path / "rl-vs-sft.json").read_text())
    record = json.loads((tmp_path / "rl-vs-sft-seeds.json").read_text())
    (seed,) = record["per_seed"]
    assert result["rft"]["minus_grpo"]["accuracy"]["mean"] == pytest.approx(
        seed["stages"]["rft"]["accuracy"] - seed["stages"]["grpo"]["accuracy"]
    )
    assert "minus_grpo" not in result["base"] and result["grpo"]["minus_grpo"] == {}
