"""benchmarks/bench_vs_transformers.py end to end at a tiny size, and the measurements it is built on.

No timing is asserted (the machine is shared); what is checked is that every figure, the opt-in ones included, is
measured and reported with a finite ratio, that both models really run the same weights, that the cache row is MLA's
minimum, and that the timing, memory, bandwidth and bytes-per-token helpers measure what they claim.
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_vs_transformers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_vs_transformers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    process = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--threads", "1", "--out", str(out), "--sections", *bench.SECTIONS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_row_is_reported_with_a_finite_ratio(results):
    sizes = results["sizes"]
    expected = {"kv_cache_bytes", "train_tokens_per_s", "train_peak_memory", "moe_growth", "grpo_step"}
    expected |= {f"prefill@{n}" for n in sizes["prefill_lengths"]}
    expected |= {f"decode@{c}x{b}" for c in sizes["decode_contexts"] for b in sizes["decode_batches"]}
    expected |= {f"moe@{e}" for e in sizes["moe_experts"]}
    expected |= {"grpo_step_models", "fp8_step@blockwise", "fp8_step@tensorwise"}
    expected |= {f"roofline@{c}" for c in sizes["decode_contexts"]}
    expected |= {f"mtp@{b}" for b in sizes["mtp_batches"]}
    rows = {row["key"]: row for row in results["rows"]}
    assert set(rows) == expected
    header = results["table"].splitlines()[0]
    for row in rows.values():
        values = [row["ours"], row["ratio"], *row["transformers"].values()]
        assert all(math.isfinite(v) and v > 0 for v in values), row
        assert row["figure"] in results["table"]
        assert row["best_peer"] in row["transformers"]
        assert all(f" {name} |" in header for name in row["transformers"]), (row["key"], header)  # a column each
        assert (row["target"] is None) == (row["met"] is None), row
    assert len(results["table"].splitlines()) == len(rows) + 2  # header, separator, one line per row


def test_every_experts_implementation_is_compared(results):
    rows = {row["key"]: row for row in results["rows"]}
    bulk = {"transformers[grouped_mm]", "transformers[eager]"}
    assert set(rows["prefill@16"]["transformers"]) == bulk
    assert set(rows["train_tokens_per_s"]["transformers"]) == bulk
    assert set(rows["decode@32x2"]["transformers"]) == bulk | {"transformers[batched_mm]"}
    assert set(rows["grpo_step"]["transformers"]) == {"trl.GRPOTrainer"}
    assert set(rows["grpo_step_models"]["transformers"]) == bulk
    assert set(rows["roofline@32"]["transformers"]) == bulk | {"transformers[batched_mm]"}
    assert set(rows["mtp@2"]["transformers"]) == {"generate"}
    assert set(rows["fp8_step@blockwise"]["transformers"]) == {"fp32"}


def test_grpo_candidates_generate_the_same_number_of_tokens(results):
    rows = {row["key"]: row for row in results["rows"]}
    length = results["sizes"]["grpo_completion_length"]
    for key in ("grpo_step", "grpo_step_models"):
        lengths = rows[key]["extra"]["completion_mean_length"]
        assert set(lengths) == {"ours", *rows[key]["transformers"]}
        assert set(lengths.values()) == {length}, (key, lengths)


def test_roofline_rows_are_tokens_per_s_over_the_bandwidth_bound(results):
    model = results["sizes"]["model"]
    for context in results["sizes"]["decode_contexts"]:
        row = next(row for row in results["rows"] if row["key"] == f"roofline@{context}")
        extra = row["extra"]
        nbytes = extra["bytes_per_token"]
        latent = model["kv_lora_rank"] + model["qk_rope_head_dim"]
        assert nbytes["kv"] == model["num_hidden_layers"] * context * latent * 4  # float32
        assert nbytes["total"] == nbytes["weights"] + nbytes["kv"]
        assert math.isclose(extra["bound_tokens_per_s"], extra["bandwidth_bytes_per_s"] / nbytes["total"])
        for name, percent in {"ours": row["ours"], **row["transformers"]}.items():
            assert math.isclose(percent, 100 * extra["tokens_per_s"][name] / extra["bound_tokens_per_s"]), name


def test_mtp_rows_record_acceptance(results):
    for batch in results["sizes"]["mtp_batches"]:
        row = next(row for row in results["rows"] if row["key"] == f"mtp@{batch}")
        assert 0 <= row["extra"]["accepted"] <= row["extra"]["drafted"] > 0
        assert 0 <= row["extra"]["acceptance_rate"] <= 1


def test_decode_bytes_per_token_is_the_active_parameters_plus_the_latent_cache(bench):
    from modeling_deepseek_mini import DeepseekMiniConfig, DeepseekMiniForCausalLM

    config = DeepseekMiniConfig.from_preset("tiny")  # with an MTP module, which plain decoding does not read
    assert config.num_nextn_predict_layers == 1
    c = config
    d, heads = c.hidden_size, c.num_attention_heads
    attention = (
        d * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * heads * (c.qk_nope_head_dim + c.qk_rope_head_dim)
        + d * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank
        + c.kv_lora_rank * heads * (c.qk_nope_head_dim + c.v_head_dim) + heads * c.v_head_dim * d
    )  # fmt: skip
    dense = 3 * d * c.intermediate_size
    moe = c.n_routed_experts * d + (c.n_shared_experts + c.num_experts_per_tok) * 3 * d * c.moe_intermediate_size
    layers = c.num_hidden_layers * (attention + 2 * d) + c.first_k_dense_replace * dense
    layers += (c.num_hidden_layers - c.first_k_dense_replace) * moe
    weights = 4 * (d + layers + d + c.vocab_size * d)  # embedding row, layers, final norm, lm_head; float32
    nbytes = bench.decode_bytes_per_token(DeepseekMiniForCausalLM(config), context=100)
    kv = 4 * c.num_hidden_layers * 100 * (c.kv_lora_rank + c.qk_rope_head_dim)
    assert nbytes == {"weights": weights, "kv": kv, "total": weights + kv}


def test_copy_bandwidth_is_bytes_read_and_written_per_second(bench):
    runtime = bench.Runtime(torch.device("cpu"), torch.float32, repeats=1, warmup=0)
    ticks = iter(range(100))
    runtime.clock = lambda: float(next(ticks))  # every timed copy takes 1 "second"
    assert bench.copy_bandwidth(runtime, mib=1, repeats=3) == [2 * 2**20] * 3


def test_models_share_weights_and_our_cache_is_the_mla_minimum(results):
    assert results["same_function"]["prefill_logits_max_abs_diff"] < 1e-5
    assert results["same_function"]["greedy_tokens_equal"]
    model = results["sizes"]["model"]
    row = next(row for row in results["rows"] if row["key"] == "kv_cache_bytes")
    assert row["ours"] == (model["kv_lora_rank"] + model["qk_rope_head_dim"]) * 4  # float32
    assert row["met"] is True


def test_load_and_environment_are_recorded(results):
    assert results["load_average"][0]["at"] == "start"
    assert len(results["load_average"][0]["loadavg"]) == 3
    assert results["environment"]["threads"] == 1


def test_storage_bytes_counts_a_cache_once_per_storage(bench):
    cache = DynamicCache()
    keys, values = torch.zeros(2, 1, 10, 8), torch.zeros(2, 1, 10, 4)
    cache.update(keys, values, layer_idx=0)
    assert bench.storage_bytes(cache) == (2 * 10 * 8 + 2 * 10 * 4) * 4
    shared = torch.zeros(100)
    assert bench.storage_bytes([shared[:10], shared[50:], {"again": shared}]) == 400


def test_peak_step_bytes_sees_a_transient_allocation(bench):
    runtime = bench.Runtime(torch.device("cpu"), torch.float32, repeats=1, warmup=0)

    def step():
        transient = torch.ones(1 << 18)  # 1 MiB, freed on return
        return transient.sum()

    peak = runtime.peak_step_bytes(step)
    assert 1 << 20 <= peak < 2 << 20


def test_repeats_are_interleaved_and_warmup_is_untimed(bench):
    runtime = bench.Runtime(torch.device("cpu"), torch.float32, repeats=2, warmup=1)
    calls = []

    def candidate(name):
        return lambda: lambda: calls.append(name)

    samples = runtime.time_interleaved({"a": candidate("a"), "b": candidate("b")})
    assert calls == ["a", "b"] * 3
    assert {name: len(s) for name, s in samples.items()} == {"a": 2, "b": 2}


def test_ratio_uses_the_best_peer_in_the_right_direction(bench):
    faster = bench.Row("k", "f", "tokens/s", True, ours=300.0, peer={"x": 100.0, "y": 200.0})
    assert faster.best_peer == ("y", 200.0) and faster.ratio == 1.5
    smaller = bench.Row("k", "f", "MiB", False, ours=300.0, peer={"x": 100.0, "y": 200.0})
    assert smaller.best_peer == ("x", 100.0) and smaller.ratio == 3.0
    target = bench.Target("ratio", "<=", 1.0)
    assert not target.met(smaller.ours, smaller.ratio)
    assert bench.Target("ratio", ">=", 1.5).met(faster.ours, faster.ratio)
