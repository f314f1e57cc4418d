"""experiments/efficiency.py: the cost model's arithmetic, checked against counts by hand and DeepSeek's own figures."""

import importlib.util
import itertools
import json
from pathlib import Path

import pytest

from modeling_deepseek_mini import DeepseekMiniConfig

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "efficiency.py"
spec = importlib.util.spec_from_file_location("efficiency", SCRIPT)
efficiency = importlib.util.module_from_spec(spec)
spec.loader.exec_module(efficiency)


@pytest.fixture(scope="module")
def v3():
    config = DeepseekMiniConfig.from_preset("deepseek-v3")
    return config, efficiency.count_parameters(config)


def test_v3_parameter_counts_are_the_published_ones(v3):
    config, counts = v3
    assert counts.total / 1e9 == pytest.approx(671, abs=1)
    assert counts.active / 1e9 == pytest.approx(37, rel=0.03)
    # Per routed expert: gate, up and down projections of width moe_intermediate_size.
    expert = 3 * config.hidden_size * config.moe_intermediate_size
    moe_layers = config.num_hidden_layers - config.first_k_dense_replace
    assert counts.routed_expert_total == moe_layers * config.n_routed_experts * expert
    assert counts.total - counts.active == moe_layers * (config.n_routed_experts - config.num_experts_per_tok) * expert


def test_count_parameters_of_the_tiny_preset_matches_the_model(tiny_config):
    from modeling_deepseek_mini import DeepseekMiniForCausalLM

    config = tiny_config()
    counts = efficiency.count_parameters(config)
    model = DeepseekMiniForCausalLM(config)
    assert counts.total + counts.mtp == sum(p.numel() for p in model.parameters())


def test_kv_cache_sizes_are_deepseeks_published_ones(v3):
    config, _ = v3
    table = efficiency.cache_table(config)
    for name, kilobytes in efficiency.PUBLISHED["kv_cache_kb_per_token"].items():
        assert table[name] == pytest.approx(kilobytes * 1000)
    assert table["V3's attention as MHA (128 heads)"] / table["DeepSeek-V3 (MLA)"] == pytest.approx(40960 / 576)


def test_training_flops_per_token_is_three_forwards():
    assert efficiency.training_flops_per_token(10, 4) == 3 * (2 * 10 + 4)
    # Causal: token t of a T-token sequence attends to t tokens, T/2 on average.
    assert efficiency.attention_core_flops(1, 2, 3, 5, 10) == 2 * 2 * (3 + 5) * 5


def test_expected_nodes_reached_is_the_enumerated_mean():
    n_experts, nodes, top_k = 8, 4, 3  # small enough to enumerate every choice of experts
    node_of = [expert // (n_experts // nodes) for expert in range(n_experts)]
    choices = list(itertools.combinations(range(n_experts), top_k))
    mean = sum(len({node_of[e] for e in choice}) for choice in choices) / len(choices)
    assert efficiency.expected_nodes_reached(n_experts, nodes, top_k) == pytest.approx(mean)


def test_decode_bound_reproduces_the_isca_worked_example(v3):
    config, _ = v3
    bound = efficiency.ep_decode_bound(config, efficiency.CLUSTER["ib_bytes_per_s"], hidden=7000)
    assert bound["us_per_layer"] == pytest.approx(efficiency.PUBLISHED["ep_decode_us_per_layer_ib"])
    assert bound["tokens_per_s"] == pytest.approx(efficiency.PUBLISHED["ep_decode_tokens_per_s_ib"], abs=1)


def test_dualpipe_bubble_formulas():
    table = efficiency.pipeline_bubbles(stages=8, forward=1.0, backward=2.0, weight_backward=1.0)
    assert table["1F1B"]["bubble"] == 7 * 3 and table["ZB1P"]["bubble"] == 7 * 1
    assert table["DualPipe"]["bubble"] == 3 * (3 + 2 - 3) and table["DualPipe"]["parameters"] == 2


def test_the_committed_results_are_what_the_script_computes():
    committed = json.loads(efficiency.RESULTS.read_text())
    assert committed == json.loads(json.dumps(efficiency.cost_model()))
