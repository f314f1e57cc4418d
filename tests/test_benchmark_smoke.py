"""benchmarks/bench_vs_transformers.py end to end at a tiny size, and the measurements it is built on.

No timing is asserted (the machine is shared); what is checked is that every figure is measured and reported with a
finite ratio, that both models really run the same weights, that the cache row is MLA's minimum, and that the
timing and memory helpers measure what they claim.
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
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    process = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--threads", "1", "--out", str(out)],
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
