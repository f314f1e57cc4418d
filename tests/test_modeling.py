"""DeepseekMini's model: config validation and presets, MLA (latent cache, absorbed decode, YaRN), DeepSeekMoE routing
and dispatch, MTP, loss assembly, generation."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import DeepseekV3Config, DynamicCache
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import modeling_deepseek_mini.modeling_deepseek_mini as modeling
import modeling_deepseek_mini.moe_dispatch as moe_dispatch
from modeling_deepseek_mini import DeepseekMiniConfig, DeepseekMiniForCausalLM, parameter_counts

pytestmark = pytest.mark.canary  # also run against the newest allowed releases (.ci/run)

YARN = dict(
    rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=32,
    beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0,
)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(
    "overrides, fields",
    [
        (dict(n_routed_experts=10, n_group=4), ["n_routed_experts", "n_group"]),
        (dict(num_experts_per_tok=5, topk_group=2), ["num_experts_per_tok", "topk_group"]),
        (dict(topk_group=5), ["topk_group", "n_group"]),
        (dict(n_group=8), ["n_group"]),  # one expert per group: no top-2 group score
        (dict(qk_rope_head_dim=15), ["qk_rope_head_dim"]),
        (dict(num_key_value_heads=2), ["num_key_value_heads", "num_attention_heads"]),
        (dict(first_k_dense_replace=3), ["first_k_dense_replace", "num_hidden_layers"]),
        (dict(bias_update_speed=-1e-3), ["bias_update_speed"]),
        (dict(seq_aux_loss_alpha=float("nan")), ["seq_aux_loss_alpha"]),
        (dict(hidden_size=0), ["hidden_size"]),
        (dict(rope_parameters=dict(rope_type="linear", factor=2.0)), ["rope_type"]),
        (dict(rope_parameters=dict(rope_type="yarn", factor=0.5)), ["factor"]),
    ],
)
def test_config_validation_names_the_fields(tiny_config, overrides, fields):
    with pytest.raises(ValueError) as error:
        tiny_config(**overrides)
    for field in fields:
        assert field in str(error.value)


def test_presets_and_parameter_counts():
    """The counting helper agrees with instantiated models, and the real presets land on the papers' numbers."""
    for name in ("tiny", "small", "deepseek-v2-lite", "deepseek-v3"):
        config = DeepseekMiniConfig.from_preset(name)
        counts = parameter_counts(config)
        with torch.device("meta"):
            model = DeepseekMiniForCausalLM(config)
        assert sum(p.numel() for p in model.parameters()) == counts["total"] + counts["mtp"], name
        experts = model.moe_layers()
        inactive = sum(
            moe.experts.gate_up_proj.numel() + moe.experts.down_proj.numel()
            for moe in experts
            if moe.layer_idx < config.num_hidden_layers
        ) * (1 - config.num_experts_per_tok / config.n_routed_experts)
        assert counts["active"] == pytest.approx(counts["total"] - inactive), name
    small = parameter_counts(DeepseekMiniConfig.from_preset("small"))
    assert 80e6 < small["total"] < 120e6 and 15e6 < small["active"] < 25e6
    v3 = parameter_counts(DeepseekMiniConfig.from_preset("deepseek-v3"))
    assert round(v3["total"] / 1e9) == 671 and round(v3["active"] / 1e9) in (37, 38)
    assert DeepseekMiniConfig.from_preset("tiny", hidden_size=128).hidden_size == 128
    with pytest.raises(ValueError, match="Unknown preset"):
        DeepseekMiniConfig.from_preset("huge")


def test_config_reads_a_deepseek_v3_config_dict():
    v3 = DeepseekV3Config(num_hidden_layers=3, hidden_size=64)
    config = DeepseekMiniConfig.from_dict(v3.to_dict())
    assert config.model_type == "deepseek_mini"
    assert (config.num_hidden_layers, config.hidden_size, config.n_routed_experts) == (3, 64, 256)
    assert config.num_nextn_predict_layers == v3.num_nextn_predict_layers
    assert config.bias_update_speed == 1e-3  # training fields take their defaults


# ----------------------------------------------------------------------------------------------------------------------
# MLA


def test_cache_holds_only_the_latent(tiny_model, left_padded_batch):
    model = tiny_model()
    input_ids, attention_mask, _ = left_padded_batch
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
    config = model.config
    assert len(cache.layers) == config.num_hidden_layers  # MTP modules never touch the cache
    for layer in cache.layers:
        c_kv, k_pe = layer.keys, layer.values
        assert c_kv.shape == (3, 1, 20, config.kv_lora_rank) and k_pe.shape == (3, 1, 20, config.qk_rope_head_dim)
        values_per_token = (c_kv.numel() + k_pe.numel()) / (3 * 20)
        assert values_per_token == config.kv_lora_rank + config.qk_rope_head_dim


def test_absorbed_attention_equals_expanded_attention(tiny_model):
    """Weight absorption is exact algebra: same output as expanding K/V per head (SDPA, and the eager path that writes
    the probabilities out), masked and unmasked; absorbed and eager agree on the probabilities too."""
    attention = tiny_model().model.layers[1].self_attn
    B, T, S, H = 2, 3, 9, attention.num_heads
    torch.manual_seed(0)
    q_nope = torch.randn(B, T, H, attention.qk_nope_head_dim)
    q_pe = torch.randn(B, T, H, attention.qk_rope_head_dim)
    c_kv, k_pe = torch.randn(B, S, attention.kv_lora_rank), torch.randn(B, S, attention.qk_rope_head_dim)
    mask = torch.ones(T, S, dtype=torch.bool).tril(S - T)[None, None].repeat(B, 1, 1, 1)
    mask[1, :, :, :4] = False  # left padding of row 1
    with torch.no_grad():
        for m in (mask, None):
            last = None if m is None else m[:, :, -1:]
            expanded = attention.attend_expanded(q_nope[:, -1:], q_pe[:, -1:], c_kv, k_pe, last)
            absorbed, absorbed_probs = attention.attend_absorbed(q_nope[:, -1:], q_pe[:, -1:], c_kv, k_pe, last)
            eager, eager_probs = attention.attend_eager(q_nope[:, -1:], q_pe[:, -1:], c_kv, k_pe, last)
            assert expanded.shape == absorbed.shape == eager.shape == (B, 1, H, attention.v_head_dim)
            assert absorbed_probs.shape == eager_probs.shape == (B, H, 1, S)
            torch.testing.assert_close(absorbed, expanded, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(eager, expanded, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(absorbed_probs, eager_probs, atol=1e-6, rtol=1e-5)
        chunk, _ = attention.attend_absorbed(q_nope, q_pe, c_kv, k_pe, mask)
        reference = attention.attend_expanded(q_nope, q_pe, c_kv, k_pe, mask)
        torch.testing.assert_close(chunk, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rope", [None, YARN], ids=["rope", "yarn"])
def test_decoding_with_the_cache_matches_the_full_forward(tiny_model, left_padded_batch, rope):
    """Step-by-step decoding (absorbed attention over the latent cache) gives the logits of one uncached forward over
    the whole sequence (expanded attention) at every position, also with YaRN (a scale bug hides at position 0)."""
    model = tiny_model(**({} if rope is None else {"rope_parameters": dict(rope)}))
    input_ids, attention_mask, position_ids = left_padded_batch
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        cache = DynamicCache(config=model.config)
        prefix = 12
        out = model(
            input_ids=input_ids[:, :prefix], attention_mask=attention_mask[:, :prefix],
            position_ids=position_ids[:, :prefix], past_key_values=cache, use_cache=True,
        )  # fmt: skip
        steps = [out.logits]
        for t in range(prefix, input_ids.shape[1]):
            out = model(
                input_ids=input_ids[:, t : t + 1], attention_mask=attention_mask[:, : t + 1],
                position_ids=position_ids[:, t : t + 1], past_key_values=cache, use_cache=True,
            )  # fmt: skip
            steps.append(out.logits)
    stepwise = torch.cat(steps, dim=1)
    assert (stepwise - full)[attention_mask.bool()].abs().max() < 1e-5


def test_cached_and_uncached_greedy_generation_agree(tiny_model, left_padded_batch):
    model = tiny_model(pad_token_id=0)
    input_ids, attention_mask, _ = left_padded_batch
    kwargs = dict(attention_mask=attention_mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    cached = model.generate(input_ids, use_cache=True, **kwargs)
    uncached = model.generate(input_ids, use_cache=False, **kwargs)
    assert cached.shape == (3, 32)
    assert torch.equal(cached, uncached)
    sampled = model.generate(
        input_ids, do_sample=True, top_k=20, **{k: v for k, v in kwargs.items() if k != "do_sample"}
    )
    assert sampled.shape == (3, 32) and (sampled[:, 20:] >= 0).all()


def test_output_attentions_on_the_eager_path_and_an_error_on_sdpa(tiny_model, left_padded_batch):
    """Eager returns each main layer's softmax probabilities (B, H, T, S), prefill and cached decoding, with SDPA's
    logits; SDPA, which never forms them, refuses output_attentions with the setting to use instead."""
    model = tiny_model()
    input_ids, attention_mask, position_ids = left_padded_batch
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    with torch.no_grad():
        sdpa_logits = model(**inputs).logits
        with pytest.raises(ValueError, match='attn_implementation="eager"'):
            model(**inputs, output_attentions=True)
        model.set_attn_implementation("eager")
        cache = DynamicCache(config=model.config)
        out = model(**inputs, output_attentions=True, past_key_values=cache, use_cache=True)
        step = model(
            input_ids=input_ids[:, -1:], attention_mask=F.pad(attention_mask, (0, 1), value=1),
            position_ids=position_ids[:, -1:] + 1, past_key_values=cache, use_cache=True, output_attentions=True,
        )  # fmt: skip
    real = attention_mask.bool()  # (B, T)
    assert (out.logits - sdpa_logits)[real].abs().max() < 1e-5
    H = model.config.num_attention_heads
    hidden = real[:, :, None] & ~(torch.ones(20, 20, dtype=torch.bool).tril()[None] & real[:, None, :])  # (B, T, S)
    assert len(out.attentions) == len(step.attentions) == model.config.num_hidden_layers
    for probs, decode in zip(out.attentions, step.attentions):
        assert probs.shape == (3, H, 20, 20) and decode.shape == (3, H, 1, 21)
        by_query = probs.transpose(1, 2)  # (B, T, H, S)
        torch.testing.assert_close(by_query[real].sum(-1), torch.ones(int(real.sum()), H))
        assert by_query.masked_select(hidden[:, :, None, :]).abs().max() == 0  # later tokens and padding: no weight
        torch.testing.assert_close(decode.sum(-1), torch.ones(3, H, 1))
        assert decode[..., :-1].masked_select(~real[:, None, None, :]).abs().max() == 0


def test_yarn_matches_transformers_frequencies_and_design_numbers():
    """YaRN inverse frequencies and softmax scale agree with transformers'; V3's correction range is 10 .. 23."""
    config = DeepseekMiniConfig.from_preset("deepseek-v3")
    inv_freq, attention_factor = modeling.rope_frequencies(config)
    v3 = DeepseekV3Config(rope_parameters=dict(config.rope_parameters), max_position_embeddings=163840)
    reference, reference_factor = ROPE_INIT_FUNCTIONS["yarn"](v3)
    torch.testing.assert_close(inv_freq, reference)
    assert attention_factor == pytest.approx(reference_factor)
    base = 1.0 / 10000.0 ** (torch.arange(0, 64, 2).float() / 64)
    torch.testing.assert_close(inv_freq[:11], base[:11])  # dims below corr_dim(beta_fast) = 10 keep their frequency
    torch.testing.assert_close(inv_freq[23:], base[23:] / 40.0)  # dims from corr_dim(beta_slow) = 23 are scaled
    assert not torch.allclose(inv_freq[11:23], base[11:23]) and not torch.allclose(inv_freq[11:23], base[11:23] / 40)
    mscale = 0.1 * 1.0 * math.log(40.0) + 1.0
    assert modeling.softmax_scale(config) == pytest.approx(192**-0.5 * mscale**2)


@pytest.mark.parametrize(
    "rope, field",
    [
        (dict(rope_type="linear", rope_theta=10000.0, factor=2.0), "rope_type"),
        (dict(rope_type="yarn", rope_theta=10000.0, factor=0.5, original_max_position_embeddings=256), "factor"),
    ],
    ids=["linear", "yarn-factor-0.5"],
)
def test_rope_settings_changed_after_the_config_are_checked_by_the_model(tiny_model, tmp_path, rope, field):
    """from_pretrained's overrides and assignments to the config come after the config's own checks: the model checks
    again when it is built, with the same message, instead of running plain RoPE."""
    tiny_model().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=rf"rope_parameters\['{field}'\]|'{field}'"):
        DeepseekMiniForCausalLM.from_pretrained(tmp_path, rope_parameters=dict(rope))
    config = DeepseekMiniConfig.from_preset("tiny")
    config.rope_parameters = dict(rope)
    with pytest.raises(ValueError, match=field):
        DeepseekMiniForCausalLM(config)


# ----------------------------------------------------------------------------------------------------------------------
# DeepSeekMoE


def test_gate_routes_within_groups_with_bias_and_weights_without(tiny_config):
    config = tiny_config()  # 8 experts in 4 groups of 2, 2 groups kept, 2 experts per token
    gate = modeling.DeepseekMiniGate(config)
    torch.manual_seed(0)
    torch.nn.init.normal_(gate.weight, std=1.0)
    x = torch.randn(64, config.hidden_size)
    with torch.no_grad():
        weights, indices, scores = gate(x)
        groups = indices // 2
        biased = (scores + gate.e_score_correction_bias).view(64, 4, 2)
        top_groups = biased.topk(2, dim=-1).values.sum(-1).topk(2, dim=-1).indices
        assert all(set(g.tolist()) <= set(t.tolist()) for g, t in zip(groups, top_groups))
        torch.testing.assert_close(weights.sum(-1), torch.full((64,), config.routed_scaling_factor))
        # A large negative bias takes an expert out of every route but does not enter the gating weights.
        gate.e_score_correction_bias[indices[0, 0]] = -10.0
        weights2, indices2, _ = gate(x)
        assert not (indices2 == indices[0, 0]).any()
        chosen = scores.gather(1, indices2)
        torch.testing.assert_close(weights2, chosen / chosen.sum(-1, keepdim=True) * config.routed_scaling_factor)


def test_experts_dispatch_matches_a_per_token_loop_and_trains(tiny_config, monkeypatch):
    config = tiny_config()
    experts = modeling.DeepseekMiniExperts(config)
    torch.manual_seed(0)
    torch.nn.init.normal_(experts.gate_up_proj, std=0.1)
    torch.nn.init.normal_(experts.down_proj, std=0.1)
    x = torch.randn(40, config.hidden_size)
    indices = torch.randint(0, config.n_routed_experts, (40, config.num_experts_per_tok))
    weights = torch.rand(40, config.num_experts_per_tok)

    def per_token(x):
        rows = []
        for t in range(x.shape[0]):
            row = 0
            for k in range(indices.shape[1]):
                e = indices[t, k]
                gate, up = (experts.gate_up_proj[e] @ x[t]).chunk(2)
                row = row + weights[t, k] * (experts.down_proj[e] @ (F.silu(gate) * up))
            rows.append(row)
        return torch.stack(rows)

    assert moe_dispatch.grouped_mm_supported(x, experts.gate_up_proj.transpose(1, 2))  # the test exercises grouped_mm
    out = experts(x, indices, weights)
    torch.testing.assert_close(out, per_token(x), atol=1e-5, rtol=1e-5)
    out.pow(2).sum().backward()
    grouped_grads = experts.gate_up_proj.grad.clone(), experts.down_proj.grad.clone()
    assert grouped_grads[0].abs().sum() > 0 and grouped_grads[1].abs().sum() > 0

    experts.zero_grad()
    monkeypatch.setattr(modeling, "grouped_mm_runs", lambda device, dtype: False)  # the fallback: the reference loop
    fallback = experts(x, indices, weights)
    torch.testing.assert_close(fallback, out, atol=1e-5, rtol=1e-5)
    fallback.pow(2).sum().backward()
    torch.testing.assert_close(experts.gate_up_proj.grad, grouped_grads[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(experts.down_proj.grad, grouped_grads[1], atol=1e-5, rtol=1e-4)


def test_reference_experts_match_grouped_dispatch_in_bfloat16(tiny_config, monkeypatch):
    """The plain loop over experts and the grouped path agree in bf16 weights with fp32 gating weights, both ways."""
    config = tiny_config()
    experts = modeling.DeepseekMiniExperts(config)
    torch.nn.init.normal_(experts.gate_up_proj, std=0.1)
    torch.nn.init.normal_(experts.down_proj, std=0.1)
    experts.to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, config.hidden_size, generator=generator).to(torch.bfloat16).requires_grad_()
    indices = torch.rand(40, config.n_routed_experts, generator=generator).topk(config.num_experts_per_tok).indices
    weights = torch.rand(40, config.num_experts_per_tok, generator=generator)
    grad = torch.randn(40, config.hidden_size, generator=generator).to(torch.bfloat16)
    grouped = experts(x, indices, weights)
    grouped_grads = torch.autograd.grad(grouped, (x, experts.gate_up_proj, experts.down_proj), grad)
    monkeypatch.setattr(modeling, "grouped_mm_runs", lambda device, dtype: False)
    reference = experts(x, indices, weights)
    reference_grads = torch.autograd.grad(reference, (x, experts.gate_up_proj, experts.down_proj), grad)
    assert reference.dtype == grouped.dtype == torch.bfloat16
    for got, expected in zip((reference, *reference_grads), (grouped, *grouped_grads)):  # bf16 rounding apart
        assert ((got - expected).float().norm() / expected.float().norm()).item() < 1e-2


def routed_experts_case(dtype: torch.dtype, N: int = 6, K: int = 2, E: int = 4, d: int = 8, inter: int = 4):
    """A tiny `DeepseekMiniExperts` and its inputs: leaves x (N, d), weights (N, K), gate_up_proj (E, 2I, d),
    down_proj (E, d, I), and indices (N, K) that leave the last expert without tokens."""
    experts = modeling.DeepseekMiniExperts(
        SimpleNamespace(
            n_routed_experts=E, hidden_size=d, moe_intermediate_size=inter, hidden_act="silu", fp8_recipe=None
        )
    )
    generator = torch.Generator().manual_seed(0)
    x, weights = torch.randn(N, d, generator=generator), torch.rand(N, K, generator=generator)
    gate_up_proj = torch.randn(E, 2 * inter, d, generator=generator) * 0.5
    down_proj = torch.randn(E, d, inter, generator=generator) * 0.5
    indices = torch.stack([torch.randperm(E - 1, generator=generator)[:K] for _ in range(N)])
    leaves = [t.to(dtype).requires_grad_() for t in (x, weights, gate_up_proj, down_proj)]

    def dispatched(x, weights, gate_up_proj, down_proj):  # `_RoutedExperts` as the module dispatches it
        params = {"gate_up_proj": gate_up_proj, "down_proj": down_proj}
        return torch.func.functional_call(experts, params, (x, indices, weights))

    return dispatched, leaves, indices


def routed_experts_by_autograd(x, weights, gate_up_proj, down_proj, indices):
    """The same function by plain autograd: every expert on every token, then each token's chosen ones. (N, d)"""
    gate, up = torch.einsum("nd,ejd->nej", x, gate_up_proj).chunk(2, dim=-1)  # (N, E, I) each
    out = torch.einsum("nei,edi->ned", F.silu(gate) * up, down_proj)  # (N, E, d)
    chosen = out.gather(1, indices[..., None].expand(-1, -1, out.shape[-1]))  # (N, K, d)
    return (weights[..., None] * chosen).sum(1)


def test_routed_experts_backward_matches_autograd_in_float64():
    """The module's gradients in float64 (its reference loop) against finite differences."""
    dispatched, leaves, _ = routed_experts_case(torch.float64)
    assert not moe_dispatch.grouped_mm_supported(leaves[0], leaves[2])  # float64 takes the per-expert path
    assert torch.autograd.gradcheck(dispatched, leaves)


def test_grouped_dispatch_backward_matches_finite_differences_in_float64():
    """The lean backward itself (moe_dispatch.routed_experts; in float64 its grouped GEMMs run one matmul per expert):
    input, gating weights and both projections against finite differences, with an expert that gets no token."""
    _, leaves, indices = routed_experts_case(torch.float64)

    def dispatched(x, weights, gate_up_proj, down_proj):
        return moe_dispatch.routed_experts(x, indices, weights, gate_up_proj, down_proj, F.silu)

    assert torch.autograd.gradcheck(dispatched, leaves)


def test_routed_experts_backward_matches_autograd_with_grouped_mm():
    """The grouped-GEMM path (fp32) against plain autograd on the same function, every gradient."""
    dispatched, leaves, indices = routed_experts_case(torch.float32)
    assert moe_dispatch.grouped_mm_supported(leaves[0], leaves[2].transpose(1, 2))
    grad = torch.randn(leaves[0].shape, generator=torch.Generator().manual_seed(1))
    ours = dispatched(*leaves)
    ours_grads = torch.autograd.grad(ours, leaves, grad)
    reference = routed_experts_by_autograd(*leaves, indices)
    reference_grads = torch.autograd.grad(reference, leaves, grad)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    for name, got, expected in zip(("x", "weights", "gate_up_proj", "down_proj"), ours_grads, reference_grads):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_sequence_balance_loss_is_alpha_when_balanced_and_ignores_padding(tiny_config):
    config = tiny_config(seq_aux_loss_alpha=1e-4)
    moe = modeling.DeepseekMiniMoE(config, layer_idx=1)
    E, K, T = config.n_routed_experts, config.num_experts_per_tok, 8
    scores = torch.full((2 * T, E), 0.5)  # equal scores, each expert chosen equally often in each sequence
    indices = torch.arange(2 * T * K).remainder(E).view(2 * T, K)
    real = torch.ones(2, T)
    assert moe.sequence_balance_loss(scores, indices, real).item() == pytest.approx(1e-4)
    skewed = torch.zeros_like(indices)  # every token on expert 0, which also gets most of the score
    skewed_scores = scores.clone()
    skewed_scores[:, 0] = 5.0
    assert moe.sequence_balance_loss(skewed_scores, skewed, real).item() > 2e-4
    # Padding: appending masked tokens routed anywhere changes nothing.
    padded_scores = torch.cat([scores.view(2, T, E), torch.rand(2, 3, E)], 1).view(-1, E)
    padded_indices = torch.cat([indices.view(2, T, K), torch.zeros(2, 3, K, dtype=torch.long)], 1).view(-1, K)
    padded_real = torch.cat([real, torch.zeros(2, 3)], 1)
    assert moe.sequence_balance_loss(padded_scores, padded_indices, padded_real).item() == pytest.approx(1e-4)


def test_routing_bias_stays_fp32_when_the_model_is_cast(tiny_model):
    model = tiny_model()
    bias = model.moe_layers()[0].gate.e_score_correction_bias.clone()
    model.to(torch.bfloat16)
    gate = model.moe_layers()[0].gate
    assert gate.weight.dtype == torch.bfloat16 and gate.e_score_correction_bias.dtype == torch.float32
    assert torch.equal(gate.e_score_correction_bias, bias)
    with torch.no_grad():
        logits = model(input_ids=torch.arange(1, 9)[None]).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_gate_stays_fp32_under_bf16_autocast_and_experts_train(tiny_model):
    model = tiny_model().train()
    gate = model.moe_layers()[0].gate
    x = torch.randn(6, model.config.hidden_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights, _, scores = gate(x)
        out = model(input_ids=torch.randint(3, 500, (2, 8)), labels=torch.randint(3, 500, (2, 8)))
    assert scores.dtype == weights.dtype == torch.float32
    torch.testing.assert_close(scores, gate(x)[2])
    out.loss.backward()
    grad = model.moe_layers()[0].experts.gate_up_proj.grad
    assert grad.dtype == torch.float32 and grad.abs().sum() > 0


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")  # the no-grad forward below
@pytest.mark.parametrize("reentrant", [True, False])
def test_load_is_counted_once_per_trained_token(tiny_model, reentrant):
    """Counted in the backward: padding is not counted, activation checkpointing does not count twice, and forwards
    without a backward (generation, reference log-probs) are not counted."""
    model = tiny_model().train()
    input_ids = torch.randint(3, 500, (2, 10))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :4] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
    plain = {i: s["tokens"] for i, s in model.expert_load_stats().items()}
    K = model.config.num_experts_per_tok
    assert plain == {1: 16 * K, 2: 14 * K}  # main layer: 16 real tokens; MTP depth 1: 14 real positions
    model.update_expert_bias()

    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
    model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
    with torch.no_grad():
        model(input_ids=input_ids, attention_mask=attention_mask)
    assert {i: s["tokens"] for i, s in model.expert_load_stats().items()} == plain


# ----------------------------------------------------------------------------------------------------------------------
# Losses and MTP


def test_loss_is_main_plus_weighted_mtp_plus_balance_loss(tiny_model, left_padded_batch):
    model = tiny_model(mtp_loss_weight=0.3, seq_aux_loss_alpha=1e-2).train()
    input_ids, attention_mask, position_ids = left_padded_batch
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    out = model(**inputs, labels=labels)
    assert torch.isfinite(out.loss) and torch.isfinite(out.mtp_loss) and out.aux_loss > 0
    main = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, main + 0.3 * out.mtp_loss + out.aux_loss)

    # MTP depth 1 at position i predicts t_{i+2} from h^0_i and Emb(t_{i+1}): recompute it by hand.
    mtp = model.model.mtp_layers[0]
    with torch.no_grad():
        h0 = model.model(**inputs).last_hidden_state
        embeds = model.model.embed_tokens(input_ids)
        h = mtp.eh_proj(torch.cat([mtp.enorm(embeds[:, 1:]), mtp.hnorm(h0[:, :-1])], -1))
        mask = attention_mask[:, 1:] * attention_mask[:, :-1]
        cos, sin = model.model.rotary_emb(h, position_ids[:, 1:])
        causal = torch.ones(19, 19, dtype=torch.bool).tril()[None, None] & mask[:, None, None, :].bool()
        h, _, _ = modeling.DeepseekMiniDecoderLayer.forward(mtp, h, cos=cos, sin=sin, attention_mask=causal)
        logits = model.lm_head(mtp.shared_head.norm(h))
        targets = labels[:, 2:].masked_fill(mask[:, :-1] == 0, -100)  # no prediction from a padded position
        by_hand = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)
    assert by_hand.item() == pytest.approx(out.mtp_loss.item(), abs=1e-5)

    model.eval()  # evaluation loss is the plain language-model loss; MTP does not run
    out = model(**inputs, labels=labels)
    assert out.mtp_loss is None and out.aux_loss is None
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()))


def test_packed_sequences_match_separate_sequences(tiny_model):
    """Padding-free batches (TRL's packing: position ids restart per document, no attention mask): every document's
    logits and MTP targets are those it has alone; MTP never predicts across a document start."""
    model = tiny_model().train()
    a, b = torch.randint(3, 500, (1, 7)), torch.randint(3, 500, (1, 5))
    packed, positions = torch.cat([a, b], 1), torch.cat([torch.arange(7), torch.arange(5)])[None]
    labels = packed.clone()
    labels[0, 7] = -100  # the collator masks each document's first token
    out = model(input_ids=packed, position_ids=positions, labels=labels)
    alone_a, alone_b = model(input_ids=a, labels=a), model(input_ids=b, labels=b)
    torch.testing.assert_close(out.logits, torch.cat([alone_a.logits, alone_b.logits], 1), atol=1e-5, rtol=0)
    mtp_targets_a, mtp_targets_b = 7 - 2, 5 - 2  # depth 1 predicts two tokens ahead
    expected = (alone_a.mtp_loss * mtp_targets_a + alone_b.mtp_loss * mtp_targets_b) / (mtp_targets_a + mtp_targets_b)
    torch.testing.assert_close(out.mtp_loss, expected, atol=1e-5, rtol=0)


def test_mtp_gradient_reaches_the_shared_embedding_and_head(tiny_model):
    model = tiny_model().train()
    mtp = model.model.mtp_layers[0]
    assert model.config.mtp_layer_indices == [2] and model.model.layers[2] is mtp
    owned = {id(p) for p in mtp.parameters()}
    assert id(model.model.embed_tokens.weight) not in owned and id(model.lm_head.weight) not in owned
    assert not any(isinstance(m, torch.nn.Embedding) for m in mtp.modules())
    input_ids = torch.randint(3, 500, (2, 12))
    out = model(input_ids=input_ids, labels=input_ids)
    out.mtp_loss.backward()  # the MTP loss alone
    for p in (model.model.embed_tokens.weight, model.lm_head.weight, mtp.eh_proj.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert model.model.layers[0].self_attn.q_a_proj.weight.grad.abs().sum() > 0  # through h^0 into the main model
    short = torch.randint(3, 500, (2, 2))  # one main target, no MTP target: the MTP term is 0, not NaN
    out = model(input_ids=short, labels=short)
    assert torch.isfinite(out.loss) and out.mtp_loss == 0


def test_mtp_does_not_run_at_inference(tiny_model):
    model = tiny_model()
    calls = []
    model.model.mtp_layers[0].register_forward_hook(lambda *args: calls.append(1))
    input_ids = torch.randint(3, 500, (1, 6))
    model.generate(input_ids, max_new_tokens=4, do_sample=False)
    model.train()
    model(input_ids=input_ids)  # training mode without labels
    assert calls == []
    model(input_ids=input_ids, labels=input_ids)
    assert calls == [1]


def test_num_items_in_batch_makes_gradient_accumulation_exact(tiny_model):
    """Micro-batch losses with the Trainer's `num_items_in_batch` sum to the loss of the whole batch, and the balance
    loss is weighted by each micro-batch's share of the target tokens (the shares sum to one)."""
    model = tiny_model(mtp_loss_weight=0.0, seq_aux_loss_alpha=0.0).train()
    input_ids = torch.randint(3, 500, (4, 10))
    labels = input_ids.clone()
    labels[0, :6] = -100  # uneven token counts between the micro-batches
    total_items = (labels[:, 1:] != -100).sum()
    halves = (slice(0, 2), slice(2, 4))
    parts = [model(input_ids=input_ids[s], labels=labels[s], num_items_in_batch=total_items).loss for s in halves]
    whole = model(input_ids=input_ids, labels=labels).loss
    torch.testing.assert_close(sum(parts), whole)
    shares = [modeling.DeepseekMiniForCausalLM._aux_loss_share(labels[s], total_items) for s in halves]
    torch.testing.assert_close(sum(shares).float(), torch.tensor(1.0))


def test_trl_fused_lm_head_reads_the_backbone(tiny_model, left_padded_batch):
    """TRL's GRPO / SFT / distillation trainers run `model.model(...)` and the head themselves."""
    from trl.trainer.utils import add_fused_lm_head

    model = tiny_model().train()
    input_ids, attention_mask, _ = left_padded_batch
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    add_fused_lm_head(model)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
    reference = logits.log_softmax(-1)[:, :-1].gather(-1, input_ids[:, 1:, None])[..., 0]
    scored = labels[:, 1:] != -100
    assert (out.log_probs - reference)[scored].abs().max() < 1e-5
    out.loss.backward()
    assert model.expert_load_stats()[1]["tokens"] == attention_mask.sum().item() * model.config.num_experts_per_tok


# ----------------------------------------------------------------------------------------------------------------------
# Tracing


def test_torch_export_matches_eager(tiny_model):
    """torch.export traces the inference forward (the experts' per-group fallback is an opaque custom op, the
    alignment check reads no data pointer) and the exported program gives the eager logits."""
    model = tiny_model()
    input_ids = torch.randint(3, 500, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = model(input_ids=input_ids, use_cache=False).logits
        exported = torch.export.export(model, (), {"input_ids": input_ids, "use_cache": False})
        traced = exported.module()(input_ids=input_ids, use_cache=False).logits
    torch.testing.assert_close(traced, eager)


def test_compile_fullgraph_matches_eager(tiny_model):
    """What `_can_compile_fullgraph` claims: torch.compile(fullgraph=True) traces the forward without a graph break."""
    model = tiny_model()
    assert model._can_compile_fullgraph
    input_ids = torch.randint(3, 500, (2, 7), generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        eager = model(input_ids=input_ids, use_cache=False).logits
        traced = compiled(input_ids=input_ids, use_cache=False).logits
    torch.testing.assert_close(traced, eager)
