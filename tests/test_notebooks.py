"""Every notebook under notebooks/ runs top to bottom at its CPU size, and says what it claims.

How a notebook is checked (notebooks/conventions.py describes the layout): the test injects a cell after the
notebook's `parameters` cell (papermill's convention) that sets SIZE="cpu" and RESULTS_PATH, executes the notebook in
a fresh kernel of this interpreter with nbclient (any cell error fails the test, naming the cell), and reads the JSON
of key numbers that the notebook's last cell writes to RESULTS_PATH. Each notebook has an entry in NOTEBOOKS below
with the function that checks those numbers. A long notebook also gets `ci_parameters`: CI runs it with those injected
(smaller sizes), and the full run is marked slow (`pytest -m slow`); `ci_check`, when set, holds the claims of the
shrunk run (a few training steps cannot be held to the full run's).

The committed notebooks are checked too: standard cells as conventions.py writes them, outputs from an execution
(`python notebooks/refresh.py`), no error outputs, and a line in the README.
"""

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("notebook_conventions", ROOT / "notebooks" / "conventions.py")
conventions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conventions)


def check_model_tour(r: dict) -> None:
    assert r["size"] == "cpu"
    # MLA: absorbed decoding over the latent cache gives the expanded forward's logits
    assert r["absorbed_vs_expanded_max_abs_logit_diff"] < 1e-4
    # the cache holds d_c + d_R values per token per layer: fewer bytes than MHA of the same heads, here and at V3
    assert r["mla_cache_bytes_per_token_measured"] == r["mla_cache_bytes_per_token_formula"]
    assert r["mla_cache_bytes_per_token_measured"] < r["mha_cache_bytes_per_token_same_width"]
    v3 = r["v3_cache_bytes_per_token_bf16"]
    assert v3["MLA"] == 61 * 576 * 2 and v3["MHA (128 heads)"] == 61 * 2 * 128 * 128 * 2
    assert v3["MLA"] < v3["GQA (8 groups)"] < v3["MHA (128 heads)"]
    # aux-loss-free balancing: the bias update pulls a skewed load back
    assert r["imbalance_first"] > 2.5
    assert r["imbalance_last"] < r["imbalance_first"]
    assert r["imbalance_mean_last_10"] < 0.6 * r["imbalance_first"]
    # MTP: speculative decoding returns generate's tokens; acceptance is a rate
    assert r["mtp_greedy_equals_generate"] is True
    assert 0.0 <= r["mtp_acceptance_rate"] <= 1.0
    assert r["mtp_loss"] > 0
    # interchange with transformers' DeepseekV3: the same function both ways
    assert r["round_trip_max_abs_logit_diff"]["to_transformers"] < 1e-4
    assert r["round_trip_max_abs_logit_diff"]["back_to_deepseek_mini"] < 1e-4
    # FP8: with a large outlier channel, 1x128 tiles keep the other channels far more precise than one scale
    errors = r["fp8_relative_error_ordinary_channels"]["1e+05"]
    assert errors["blockwise (1x128 tiles)"] < 0.5 * errors["tensorwise (one scale)"]
    assert r["seconds"] < 120  # "well under 2 minutes" at the CPU size


def check_r1_zero_common(r: dict) -> None:
    """What holds at any size: the rewards tell the personas apart, the recipe wrote its files and both tables, every
    share is a share, and the committed record over seeds says what the README says."""
    assert r["size"] == "cpu"
    p = r["persona_rewards"]
    assert p["careful"]["format"] == 1.0 and p["careful"]["language_consistency"] == 1.0
    assert p["hasty"]["format"] == 1.0 and p["hasty"]["accuracy"] == 0.0  # well formed, a guess
    assert p["format_breaker"]["format"] == 0.0
    assert p["mixed_language"]["format"] == 1.0 and p["mixed_language"]["language_consistency"] < 1.0
    assert all(not row["unknown words"] for row in p.values())  # the personas write the task's vocabulary
    files = set(r["files"])
    assert {"model.safetensors", "stage.json", "trainer_state.json", "plots"} <= files
    assert {f"{name}_{side}.json" for name in ("heldout", "ood") for side in ("before", "after")} <= files
    assert r["steps"] == r["max_steps"]
    for name in ("heldout", "ood"):
        before, after = r[name]["before"], r[name]["after"]
        assert set(before) == set(after) and "accuracy" in before
        for metrics in (before, after, r["base_sampled_T1"]):
            for metric, value in metrics.items():
                if metric != "mean_completion_tokens" and not metric.endswith("_stderr") and value == value:  # NaN: n/a
                    assert 0.0 <= value <= 1.0, (name, metric, value)
    # the base samples what GRPO needs: right answers among its samples (about half), not all of them well formed
    assert 0.2 <= r["base_sampled_T1"]["accuracy"] <= 0.8 and r["base_sampled_T1"]["format_compliance"] < 1.0
    seeds = r["seeds_heldout_accuracy"]  # docs/results/grpo-tiny-seeds.json, read by the notebook
    assert seeds["change"]["n"] == 3 and seeds["change"]["low"] > 0.9 and seeds["change"]["verdict"] == "higher after"


def check_r1_zero_ci(r: dict) -> None:
    """The shrunk run (4 steps, 16 test problems, greedy only): too short to claim learning. The base's greedy
    accuracy is near zero (2.5% on 200 problems), so one problem either way is all the noise there is: the claim is
    that four steps did not cost accuracy beyond two of the 16 problems, and did not break the format (the first
    thing GRPO rewards; measured: 0% -> 100% at 4 steps)."""
    check_r1_zero_common(r)
    assert r["steps"] == 4 and r["eval_problems"]["heldout"] == 16
    before, after = r["heldout"]["before"], r["heldout"]["after"]
    assert after["accuracy"] >= before["accuracy"] - 2 / 16
    assert after["format_compliance"] >= before["format_compliance"]


def check_r1_zero_full(r: dict) -> None:
    """The main job's own run: 50 steps, 200 test problems, both protocols."""
    check_r1_zero_common(r)
    assert r["steps"] == 50 and r["eval_problems"]["heldout"] == 200
    before, after = r["heldout"]["before"], r["heldout"]["after"]
    assert after["accuracy"] - before["accuracy"] >= 0.5  # 2.5% -> 98.5-99.5% over the three recorded seeds
    assert after["format_compliance"] >= 0.9
    assert after["pass@1"] - before["pass@1"] >= 0.25  # R1's protocol: 46% -> 99% over the recorded seeds
    assert r["side_by_side_correct"]["after"] >= r["side_by_side_correct"]["before"]


# r1_zero's CI run: 4 GRPO steps, 16 test and ood problems, greedy only, 2 MTP refresh steps, no checkpoints
R1_ZERO_CI_FLAGS = ["--max_steps", "4", "--eval_max_samples", "16", "--eval_r1_samples", "0"]
R1_ZERO_CI_FLAGS += ["--mtp_refresh_steps", "2", "--save_strategy", "no"]


PIPELINE_STAGES = ["r1_zero", "cold_start_sft", "reasoning_rl", "rejection_sampling", "rs_sft", "reward_model"]
PIPELINE_STAGES += ["all_scenario_data", "all_scenario_rl", "distill_qwen2", "distill_llama"]
PIPELINE_POLICIES = ["base", "r1_zero", "cold_start_sft", "reasoning_rl", "rs_sft", "all_scenario_rl"]
PIPELINE_POLICIES += ["distill_qwen2", "distill_llama"]


def check_r1_pipeline_common(r: dict) -> None:
    """Every stage ran and every policy was measured on test and ood, and answered the same problem."""
    assert r["stages"] == PIPELINE_STAGES and list(r["rows"]) == ["base", *PIPELINE_STAGES]
    for name in PIPELINE_POLICIES:
        row = r["rows"][name]
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["ood_accuracy"] <= 1 and row["format_compliance"] >= 0
    assert [a["stage"] for a in r["same_problem"]] == PIPELINE_POLICIES
    assert "kept_reasoning" in r["rows"]["rejection_sampling"]["note"]
    assert r["seeds_all_scenario_accuracy"]["n"] == 3  # the committed record, read


def check_r1_pipeline_ci(r: dict) -> None:
    """The shrunk run (2 steps per stage, 8 problems, greedy only): too short for the pipeline's claims; the cold
    start's SFT on well-formed chains already teaches the format (measured 0% -> 100% at 2 steps)."""
    check_r1_pipeline_common(r)
    assert r["settings"] == R1_PIPELINE_CI_SETTINGS
    rows = r["rows"]
    assert rows["cold_start_sft"]["format_compliance"] > rows["base"]["format_compliance"]


def check_r1_pipeline_full(r: dict) -> None:
    """The embedded default's run (seed 0): R1-Zero learns the task, every R1 stage after the cold start reasons in
    one language and stays accurate, the students learn from the traces (3 seeds, docs/results/pipeline-tiny-seeds.json:
    R1-Zero 99.0%, R1 100.0%, students 90.3% [54.0, 100] and 97.5%; the Qwen2 student of seed 1 reaches 73.5%)."""
    check_r1_pipeline_common(r)
    rows = r["rows"]
    assert rows["r1_zero"]["accuracy"] - rows["base"]["accuracy"] >= 0.5
    for name in ("cold_start_sft", "reasoning_rl", "rs_sft", "all_scenario_rl"):
        assert rows[name]["language_consistency"] >= 0.95 and rows[name]["accuracy"] >= 0.9
    assert rows["distill_qwen2"]["accuracy"] >= 0.8 and rows["distill_llama"]["accuracy"] >= 0.8


# r1_pipeline's CI run: 2 optimizer steps per training stage, a handful of prompts, 8 problems, greedy only
R1_PIPELINE_CI_SETTINGS = [f"{stage}.max_steps=2" for stage in ("r1_zero", "cold_start_sft", "reasoning_rl")]
R1_PIPELINE_CI_SETTINGS += [f"{stage}.mtp_refresh_steps=1" for stage in ("r1_zero", "reasoning_rl", "all_scenario_rl")]
R1_PIPELINE_CI_SETTINGS += ["rejection_sampling.max_prompts=8", "rejection_sampling.num_generations=2"]
R1_PIPELINE_CI_SETTINGS += [f"{stage}.max_steps=2" for stage in ("rs_sft", "reward_model", "all_scenario_rl")]
R1_PIPELINE_CI_SETTINGS += ["all_scenario_data.n_train=16", "all_scenario_data.n_test=8"]
R1_PIPELINE_CI_SETTINGS += ["distill_qwen2.max_prompts=8", "distill_qwen2.trace_num_generations=2"]
R1_PIPELINE_CI_SETTINGS += ["distill_qwen2.max_steps=2", "distill_llama.max_steps=2"]
R1_PIPELINE_CI_SETTINGS += ["eval.max_samples=8", "eval.r1_samples=0"]


def check_your_model_and_data(r: dict) -> None:
    """The CPU size: LoRA through the GSM8K config for 4 steps; offline (CI: a config-built Qwen2 and GSM8K-format
    data, the plumbing, not learning: a random model) or online (the Hub's model and GSM8K; the slow run, where the
    Hub is reachable)."""
    assert r["offline"] == (r["model"] != "Qwen/Qwen2.5-0.5B-Instruct")
    assert r["lora_r"] == 8 and r["steps"] == 4
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "heldout_after.json"} <= set(r["files"])
    assert "model.safetensors" not in r["files"]  # LoRA saves the adapter, not a copy of the model
    assert r["card_names_the_base"] and r["gold"].isdigit()  # GSM8K's '#### <n>' read by --gold_answer_regex
    for side in ("before", "after"):
        assert 0 <= r["heldout"][side]["accuracy"] <= 1


@dataclass
class Notebook:
    check: Callable[[dict], None]
    ci_parameters: dict | None = None  # set for a long notebook: CI's shrunk run; the full run is then slow
    ci_check: Callable[[dict], None] | None = None  # the claims of the shrunk run, when they differ from the full one

    def check_for(self, parameters: dict) -> Callable[[dict], None]:
        return self.ci_check if parameters and self.ci_check is not None else self.check


NOTEBOOKS = {
    "model_tour.ipynb": Notebook(check_model_tour),
    "r1_zero.ipynb": Notebook(
        check_r1_zero_full,  # about 4 minutes on 2 cores
        ci_parameters={"RECIPE_FLAGS": R1_ZERO_CI_FLAGS},
        ci_check=check_r1_zero_ci,
    ),
    "r1_pipeline.ipynb": Notebook(
        check_r1_pipeline_full,  # the whole pipeline: 46 minutes on one thread, next to two other jobs
        ci_parameters={"SETTINGS": R1_PIPELINE_CI_SETTINGS},
        ci_check=check_r1_pipeline_ci,
    ),
    "your_model_and_data.ipynb": Notebook(
        check_your_model_and_data,  # offline about 30 s; online it downloads Qwen2.5-0.5B-Instruct and GSM8K
        ci_parameters={"OFFLINE": True},
    ),
}


def runs():
    for name, notebook in NOTEBOOKS.items():
        if notebook.ci_parameters is None:
            yield pytest.param(name, {}, id=name)
        else:
            yield pytest.param(name, notebook.ci_parameters, id=f"{name}-ci")
            yield pytest.param(name, {}, id=f"{name}-full", marks=pytest.mark.slow)


def committed() -> list[str]:
    return sorted(p.name for p in conventions.NOTEBOOKS_DIR.glob("*.ipynb") if not p.name.endswith(".tmp.ipynb"))


def test_every_notebook_is_checked_and_linked_from_the_readme():
    assert committed() == sorted(NOTEBOOKS), "add the notebook to NOTEBOOKS with the check of its key numbers"
    readme = (ROOT / "README.md").read_text()
    for name in committed():
        assert f"(notebooks/{name})" in readme, f"README.md's Notebooks section has no line for {name}"


@pytest.mark.parametrize("name", committed())
def test_committed_notebook_has_the_standard_cells_and_the_outputs_of_a_run(name):
    nb = nbformat.read(conventions.NOTEBOOKS_DIR / name, as_version=4)
    assert nb.cells[0].source == conventions.badge_source(name), "run python notebooks/refresh.py"
    assert conventions.colab_url(name) in nb.cells[0].source
    (parameters,) = conventions.tagged(nb, conventions.PARAMETERS_TAG)
    assert "SIZE = None" in nb.cells[parameters].source and "RESULTS_PATH = None" in nb.cells[parameters].source
    assert conventions.tagged(nb, conventions.SETUP_TAG) == [parameters + 1]
    assert nb.cells[parameters + 1].source == conventions.setup_source(), "run python notebooks/refresh.py"
    assert not conventions.tagged(nb, conventions.INJECTED_TAG)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1)), "commit the outputs of one run: python notebooks/refresh.py"
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for cell in code for o in cell.outputs), "its plots are outputs too"


@pytest.mark.parametrize("name, parameters", list(runs()))
def test_notebook_runs_and_its_key_numbers_hold(name, parameters, tmp_path):
    results = tmp_path / "results.json"
    conventions.execute(conventions.NOTEBOOKS_DIR / name, {"SIZE": "cpu", "RESULTS_PATH": str(results), **parameters})
    NOTEBOOKS[name].check_for(parameters)(json.loads(results.read_text()))
