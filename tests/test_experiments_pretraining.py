"""experiments/pretraining_arms.py at a tiny size: every study runs, the arms differ as they say, and the report
pairs each arm with the reference by seed."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "pretraining_arms.py"
spec = importlib.util.spec_from_file_location("pretraining_arms", SCRIPT)
arms = importlib.util.module_from_spec(spec)
spec.loader.exec_module(arms)

TINY = ["--steps", "3", "--corpus_size", "300", "--eval_batches", "1", "--eval_every", "2"]


def run(study: str, seed: int, results: Path, save: list[str] = ()) -> dict:
    arms.main(["run", "--study", study, "--seed", str(seed), "--results", str(results), *save, *TINY])
    return json.loads((results / study / f"seed-{seed}.json").read_text())


@pytest.fixture(scope="module")
def moe_vs_dense(tmp_path_factory):
    """Two seeds of the study; seed 0's models saved under results/save."""
    results = tmp_path_factory.mktemp("results")
    save = ["--save", str(results / "save")]
    return results, [run("moe_vs_dense", 0, results, save), run("moe_vs_dense", 1, results)]


def test_moe_and_dense_arms_have_the_shapes_they_claim(moe_vs_dense):
    _, (record, _) = moe_vs_dense
    moe, dense_active, dense_total, moe_16 = (record["arms"][name] for name in arms.STUDIES["moe_vs_dense"]["arms"])
    assert dense_active["parameters"] == dense_active["active_parameters"]  # dense: every weight runs
    assert dense_active["final_imbalance"] is None and moe["final_imbalance"] >= 1.0  # only MoE layers have loads
    assert moe["active_parameters"] < moe["parameters"] < dense_total["parameters"]
    assert abs(dense_active["active_parameters"] - moe["active_parameters"]) < 0.1 * moe["active_parameters"]
    # twice the experts, the same active experts: only the router's rows (one per expert) add to the active count
    assert moe_16["active_parameters"] == pytest.approx(moe["active_parameters"], rel=0.01)
    assert moe_16["parameters"] > 1.4 * moe["parameters"]
    assert moe["mtp_parameters"] == 0  # no arm of this study has MTP
    assert dense_total["training_flops_per_token"] > 1.5 * moe["training_flops_per_token"]
    for arm in record["arms"].values():
        assert math.isfinite(arm["heldout_loss"]) and [p["step"] for p in arm["heldout_curve"]] == [2, 3]


def test_report_pairs_arms_with_the_reference_by_seed(moe_vs_dense, capsys):
    results, records = moe_vs_dense
    arms.main(["report", "--study", "moe_vs_dense", "--results", str(results)])
    summary = json.loads((results / "moe_vs_dense" / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    name = "dense, MoE's total width"
    differences = [r["arms"][name]["heldout_loss"] - r["arms"]["MoE 8 experts top-2"]["heldout_loss"] for r in records]
    assert summary["arms"][name]["minus_reference"]["mean"] == pytest.approx(sum(differences) / 2)
    relative = [d / r["arms"]["MoE 8 experts top-2"]["heldout_loss"] for d, r in zip(differences, records)]
    assert summary["arms"][name]["relative_to_reference"]["mean"] == pytest.approx(sum(relative) / 2)
    assert summary["arms"]["MoE 8 experts top-2"]["minus_reference"]["mean"] == 0
    assert "| dense, MoE's total width |" in capsys.readouterr().out

    curves = arms.arm_curves(records)  # what curves.png plots
    assert [p["step"] for p in curves[name]["heldout_loss"]] == [2, 3] and "imbalance" not in curves[name]
    losses = [[p["loss"] for p in r["arms"][name]["heldout_curve"]] for r in records]
    assert [p["mean"] for p in curves[name]["heldout_loss"]] == pytest.approx([sum(pair) / 2 for pair in zip(*losses)])
    moe_load = [p["mean"] for p in curves["MoE 8 experts top-2"]["imbalance"]]
    assert len(moe_load) == 2 and all(load >= 1.0 for load in moe_load)  # max/mean load: 1 when balanced
    assert (results / "moe_vs_dense" / "curves.png").exists()
    assert not (results / "moe_vs_dense" / "loss-vs-balance.png").exists()  # the balancing study's plot


@pytest.mark.parametrize("study", ["balancing", "mtp_depth", "fp8", "fp8_outlier"])
def test_the_other_studies_run(study, tmp_path):
    record = run(study, 0, tmp_path)
    assert list(record["arms"]) == list(arms.STUDIES[study]["arms"])
    for name, arm in record["arms"].items():
        assert arm["overrides"] == arms.STUDIES[study]["arms"][name]
        assert math.isfinite(arm["heldout_loss"])
    if study == "mtp_depth":
        assert record["arms"]["MTP depth 0"]["mtp_parameters"] == 0 < record["arms"]["MTP depth 1"]["mtp_parameters"]
    arms.main(["report", "--study", study, "--results", str(tmp_path)])
    assert (tmp_path / study / "curves.png").exists()
    against = json.loads((tmp_path / study / "summary.json").read_text())["also_against"]
    second = arms.STUDIES[study].get("also_against")  # the FP8 studies pair every arm with the blockwise one too
    assert bool(against) == bool(second) == study.startswith("fp8")
    if second:
        tensorwise = record["arms"]["FP8 tensorwise"]["heldout_loss"] - record["arms"][second]["heldout_loss"]
        assert against["arms"]["FP8 tensorwise"]["minus_reference"]["mean"] == pytest.approx(tensorwise)
        assert against["arms"][second]["minus_reference"]["mean"] == 0
    assert (tmp_path / study / "loss-vs-balance.png").exists() == (study == "balancing")


def test_fp8_arms_run_in_fp8_from_one_init_and_the_outlier_study_spikes_every_arm():
    from modeling_deepseek_mini.fp8 import Fp8Linear

    recipe = arms.load_recipe()
    tokenizer, heldout, _ = arms.lockstep_batches(recipe, 300, 1, 3, 0)
    built = {study: arms.build_arms(tokenizer, recipe, arms.STUDIES[study], 3, 0) for study in ("fp8", "fp8_outlier")}
    for study, models in built.items():
        for name, arm in models.items():
            fp8_layers = [m for m in arm["model"].modules() if isinstance(m, Fp8Linear)]
            assert arm["model"].config.fp8_recipe == arms.STUDIES[study]["arms"][name].get("fp8_recipe")
            assert bool(fp8_layers) == (name != "fp32")
            assert all(layer.recipe == arm["model"].config.fp8_recipe for layer in fp8_layers)
        weights = [arm["model"].state_dict() for arm in models.values()]
        assert all(torch.equal(w[key], weights[0][key]) for w in weights[1:] for key in weights[0])  # one init
    clean, spiked = (arms.heldout_loss(built[study]["fp32"]["model"], heldout) for study in ("fp8", "fp8_outlier"))
    assert abs(spiked - clean) > 1e-3  # the activation at one token reaches even fp32's loss (0.01 at init)


def test_attention_arms_cache_what_they_claim(tmp_path):
    record = run("attention", 0, tmp_path)
    cached = {name: arm["cache_values_per_token_per_layer"] for name, arm in record["arms"].items()}
    # MLA: the latent (32) and the shared RoPE key (16); the others: kv_heads x (key 16 + 16, value 16)
    assert cached == {"MLA": 48, "MHA (4 KV heads)": 192, "GQA (2 KV heads)": 96, "MQA (1 KV head)": 48}
    parameters = [arm["parameters"] for arm in record["arms"].values()]
    assert parameters[1] > parameters[2] > parameters[3]  # fewer KV heads, fewer K/V weights
    assert all(math.isfinite(arm["heldout_loss"]) for arm in record["arms"].values())


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_grouped_query_attention_is_causal_and_decodes_from_its_cache(kv_heads):
    from modeling_deepseek_mini import DeepseekMiniConfig, DeepseekMiniForCausalLM

    torch.manual_seed(0)
    config = DeepseekMiniConfig.from_preset("tiny", num_nextn_predict_layers=0)
    model = arms.with_kv_heads(DeepseekMiniForCausalLM(config), kv_heads).eval()
    assert all(isinstance(layer.self_attn, arms.GroupedQueryAttention) for layer in model.model.layers)
    ids = torch.randint(0, config.vocab_size, (2, 12))
    changed = ids.clone()
    changed[:, -1] = (ids[:, -1] + 1) % config.vocab_size
    with torch.no_grad():
        full = model(input_ids=ids).logits
        earlier = model(input_ids=changed).logits[:, :-1]  # no position sees the future (up to rounding)
        torch.testing.assert_close(earlier, full[:, :-1], atol=1e-6, rtol=0)
        prefix = model(input_ids=ids[:, :-1], use_cache=True)
        step = model(input_ids=ids[:, -1:], cache=prefix.past_key_values).logits
    torch.testing.assert_close(step[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="must divide"):
        arms.GroupedQueryAttention(config, 0, kv_heads=3)


def test_saved_arms_get_the_same_grpo_and_the_report_pairs_their_accuracy(moe_vs_dense, capsys):
    results, _ = moe_vs_dense
    save = results / "save"
    chosen = ["MoE 8 experts top-2", "dense, MoE's active width"]
    grpo = "--max_steps 1 --per_device_train_batch_size 8 --eval_max_samples 4 --eval_r1_samples 0 --save_strategy no"
    arms.main(["grpo", "--study", "moe_vs_dense", "--save", str(save), "--results", str(results), "--jobs", "1",
               "--arms", *chosen, "--flag", grpo])  # fmt: skip
    record = json.loads((results / "moe_vs_dense" / "grpo-dense-moe-s-active-width.json").read_text())
    (run,) = record["per_seed"]
    assert run["seed"] == 0 and "accuracy" in run["heldout"]["after"]
    stage = json.loads((save / "grpo" / "dense-moe-s-active-width" / "seed-0" / "stage.json").read_text())
    assert stage["parent"].endswith("seed-0/dense-moe-s-active-width")  # GRPO started from that arm's model
    arms.main(["report", "--study", "moe_vs_dense", "--results", str(results)])
    after = json.loads((results / "moe_vs_dense" / "summary.json").read_text())["after_grpo"]
    assert set(after) == set(chosen) and after["MoE 8 experts top-2"]["minus_reference"]["mean"] == 0
    assert "accuracy after GRPO" in capsys.readouterr().out


def test_attention_arms_cannot_be_saved(tmp_path):
    with pytest.raises(SystemExit, match="cannot be loaded back"):
        arms.main(["run", "--study", "attention", "--save", str(tmp_path), "--results", str(tmp_path), *TINY])
