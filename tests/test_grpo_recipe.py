"""recipes/grpo.py as users run it: the shipped configs parse, the CLI saves a Hub-ready folder with the before/after
table and plots, two CPU processes keep identical routing biases, a SIGKILLed run resumes where it stopped, and a
seed on one thread count reproduces a run exactly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recipes.lib.cli import ACCELERATE_DIR, CONFIGS_DIR, TINY_BASE, run_entry_point

ROOT = Path(__file__).resolve().parents[1]
GRPO = str(ROOT / "recipes" / "grpo.py")

# A run of a few seconds per step on the shipped tiny base.
TINY_RUN = [
    "--builtin_train_size",
    "32",
    "--builtin_test_size",
    "4",
    "--eval_max_samples",
    "4",
    "--per_device_train_batch_size",
    "8",
    "--num_generations",
    "4",
    "--max_completion_length",
    "16",
    "--logging_steps",
    "1",
    "--report_to",
    "none",
]


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kwargs)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.mark.parametrize("config", sorted(CONFIGS_DIR.glob("grpo_*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(config):
    from recipes.grpo import DEFAULT_CONFIG, make_parser
    from recipes.lib.cli import parse_recipe_args

    script_args, training_args, model_args = parse_recipe_args(make_parser(), DEFAULT_CONFIG, ["--config", str(config)])
    assert script_args.reward_funcs and training_args.output_dir


def test_bad_config_fails_before_training(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("reward_funcs: [accuracy]\nnot_a_field: 1\n")
    result = subprocess.run([sys.executable, GRPO, "--config", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and "not_a_field" in result.stderr


@pytest.mark.canary
def test_cli_default_saves_hub_ready_folder(tmp_path):
    out = tmp_path / "run"
    result = run([sys.executable, GRPO, *TINY_RUN, "--max_steps", "3", "--output_dir", str(out)])
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert "| held-out metric | before | after |" in result.stdout
    assert "Out of distribution" in result.stdout
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "README.md",
        "stage.json",
        "heldout_before.json",
        "heldout_after.json",
        "ood_before.json",
        "ood_after.json",
        "modeling_deepseek_mini.py",
    ):
        assert (out / name).exists(), name
    assert "auto_map" in json.loads((out / "config.json").read_text())
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    assert (out / "plots" / "reward.png").exists() and (out / "plots" / "completion_length.png").exists()
    card = (out / "README.md").read_text()
    assert "deepseek-mini stage: grpo" in card and str(TINY_BASE) in card


def test_entry_point_ends_the_process_group_after_success(tmp_path):
    """A rank that leaves its Gloo group to the interpreter's exit can abort after a run that succeeded (SIGABRT,
    "terminate called without an active exception", seen once in CI on the two-rank launch below): a recipe's entry
    point destroys the group once its run returned, and leaves it alone when the run failed (destroying it then can
    hang the ranks still inside a collective)."""
    import torch.distributed as dist

    def fails():
        raise RuntimeError("this rank failed")

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match="this rank failed"):
            run_entry_point(fails)
        assert dist.is_initialized()
        run_entry_point(lambda: None)
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_cpu_processes_keep_biases_identical(tmp_path, offline_chat_tokenizer_path):
    worker = str(ROOT / "tests" / "workers" / "grpo_two_ranks.py")
    config = str(ACCELERATE_DIR / "cpu_multi.yaml")
    run(
        ["accelerate", "launch", "--config_file", config, worker, offline_chat_tokenizer_path, str(tmp_path)],
        timeout=600,
    )
    assert [json.loads((tmp_path / f"world_rank{r}.json").read_text())["world_size"] for r in (0, 1)] == [2, 2]
    rank0, rank1 = (load_file(tmp_path / f"bias_rank{r}.safetensors") for r in (0, 1))
    assert any(bias.abs().sum() > 0 for bias in rank0.values()), "the biases never moved"
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path} appeared:\n{process.stderr.read()[-4000:]}"
        assert time.time() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.2)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    """A run killed after its step-4 checkpoint resumes from it (optimizer, scheduler, RNG and routing biases
    restored) and ends with exactly the weights of a run that was never interrupted."""
    args = [
        *TINY_RUN,
        "--max_steps",
        "6",
        "--save_steps",
        "2",
        "--eval_heldout",
        "false",
        "--expert_bias_update_speed",
        "0.01",
        "--learning_rate",
        "1e-3",
    ]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run([sys.executable, GRPO, *args, "--output_dir", str(reference)])

    process = subprocess.Popen(
        [sys.executable, GRPO, *args, "--output_dir", str(killed)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(killed / "checkpoint-4" / "trainer_state.json", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"
    assert (killed / "checkpoint-4" / "model.safetensors").exists()

    result = run([sys.executable, GRPO, *args, "--output_dir", str(killed)])
    assert "checkpoint-4" in result.stderr + result.stdout
    state = json.loads((killed / "trainer_state.json").read_text())
    steps = [row["step"] for row in state["log_history"] if "loss" in row]
    assert steps == [1, 2, 3, 4, 5, 6], "a checkpointed step was lost or repeated"

    expected, resumed = load_file(reference / "model.safetensors"), load_file(killed / "model.safetensors")
    assert any("e_score_correction_bias" in name for name in expected)
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_a_seed_on_one_thread_count_reproduces_a_run_exactly(tmp_path):
    """Same seed, same machine, same thread count: bit-identical weights and held-out metrics. Another seed gives
    other weights (so the comparison can fail). Across thread counts or machines, floating-point reductions change
    order: those runs differ, which is why the README reports results over seeds."""
    args = [*TINY_RUN, "--max_steps", "3", "--eval_heldout", "true", "--learning_rate", "1e-3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outputs = {name: tmp_path / name for name in ("first", "again", "other_seed")}
    for name, out in outputs.items():
        seed = "1" if name == "other_seed" else "0"
        run([sys.executable, GRPO, *args, "--seed", seed, "--output_dir", str(out)], env=env)
    first, again, other = (load_file(out / "model.safetensors") for out in outputs.values())
    assert all(torch.equal(first[name], again[name]) for name in first)
    metrics = [(outputs[name] / "heldout_after.json").read_text() for name in ("first", "again")]
    assert metrics[0] == metrics[1]
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_the_mtp_refresh_runs_after_training_and_is_recorded(tmp_path):
    """A one-step run with a two-step MTP refresh: the saved MTP module is no longer the base's (RL freezes it, so
    only the refresh can have moved it), and stage.json and the card say what the refresh did."""
    out = tmp_path / "run"
    args = ["--max_steps", "1", "--eval_heldout", "false", "--mtp_refresh_steps", "2", "--mtp_refresh_batch_size", "4"]
    run([sys.executable, GRPO, *TINY_RUN, *args, "--output_dir", str(out)])
    stage = json.loads((out / "stage.json").read_text())
    assert stage["hyperparameters"]["mtp_refresh_steps"] == 2
    refresh = stage["training"]["mtp_refresh"]
    assert refresh["steps"] == 2 and refresh["batch_size"] == 4 and refresh["max_new_tokens"] == 16
    assert "mtp_refresh" in (out / "README.md").read_text()
    base, saved = load_file(TINY_BASE / "model.safetensors"), load_file(out / "model.safetensors")
    mtp = [name for name in base if name.startswith("model.layers.4.")]  # the tiny base's MTP module
    assert mtp and any(not torch.equal(base[name], saved[name]) for name in mtp)


def test_an_invalid_mtp_refresh_setting_is_refused_before_training(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, GRPO, *TINY_RUN, "--mtp_refresh_steps", "-5", "--output_dir", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode != 0 and "--mtp_refresh_steps must be >= 0" in result.stderr
    assert not out.exists() or not any(out.iterdir())
