"""Weights move between DeepseekMini, transformers' DeepseekV3 and DeepSeek's checkpoint layout, with the same
logits."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

from modeling_deepseek_mini import DeepseekMiniConfig, DeepseekMiniForCausalLM, save_as_deepseek_v3

pytestmark = pytest.mark.canary  # also run against the newest allowed releases (.ci/run)

YARN = dict(
    rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=32,
    beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0,
)  # fmt: skip


def max_logit_diff(a, b, batch) -> float:
    input_ids, attention_mask, position_ids = batch
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    with torch.no_grad():
        diff = a(**inputs).logits - b(**inputs).logits
    return diff[attention_mask.bool()].abs().max().item()


def greedy(model, batch, n: int = 32) -> torch.Tensor:
    input_ids, attention_mask, _ = batch
    return model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=n, do_sample=False, pad_token_id=0)


@pytest.mark.parametrize("rope", [None, YARN], ids=["rope", "yarn"])
def test_project_checkpoint_loads_in_transformers_deepseek_v3(tiny_model, left_padded_batch, tmp_path, rope):
    model = tiny_model(pad_token_id=0, **({} if rope is None else {"rope_parameters": dict(rope)}))
    save_as_deepseek_v3(model, tmp_path, include_mtp=False)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "deepseek_v3"
    assert not list(tmp_path.glob("*.py"))
    reference = DeepseekV3ForCausalLM.from_pretrained(tmp_path).eval()
    assert reference.config.rope_parameters["rope_type"] == ("default" if rope is None else "yarn")
    assert max_logit_diff(model, reference, left_padded_batch) < 1e-5
    generated = greedy(model, left_padded_batch)
    assert generated.shape[1] == 20 + 32
    assert torch.equal(generated, greedy(reference, left_padded_batch))


def test_transformers_deepseek_v3_checkpoint_loads_in_deepseek_mini(left_padded_batch, tmp_path):
    config = DeepseekV3Config(
        vocab_size=512, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, n_group=4, topk_group=2,
        num_experts_per_tok=2, first_k_dense_replace=1, kv_lora_rank=32, q_lora_rank=48, qk_rope_head_dim=16,
        qk_nope_head_dim=16, v_head_dim=16, pad_token_id=0, rope_parameters=dict(YARN),
    )  # fmt: skip
    torch.manual_seed(0)
    reference = DeepseekV3ForCausalLM(config).eval()
    with torch.no_grad():
        reference.model.layers[1].mlp.gate.e_score_correction_bias.normal_(0.0, 0.05)
    reference.save_pretrained(tmp_path)
    model = DeepseekMiniForCausalLM.from_pretrained(tmp_path).eval()
    assert model.config.model_type == "deepseek_mini" and model.config.rope_parameters["factor"] == 4.0
    torch.testing.assert_close(
        model.model.layers[1].mlp.gate.e_score_correction_bias,
        reference.model.layers[1].mlp.gate.e_score_correction_bias,
    )
    assert max_logit_diff(model, reference, left_padded_batch) < 1e-5
    assert torch.equal(greedy(model, left_padded_batch), greedy(reference, left_padded_batch))


def test_save_pretrained_uses_deepseek_layout_and_round_trips(tiny_model, left_padded_batch, tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    keys = set(safe_open(str(tmp_path / "model.safetensors"), "pt").keys())
    L = model.config.num_hidden_layers
    assert (
        "model.layers.1.mlp.experts.7.gate_proj.weight" in keys
        and "model.layers.1.mlp.experts.7.down_proj.weight" in keys
    )
    assert not any(key.endswith("gate_up_proj") for key in keys)
    assert "model.layers.1.mlp.gate.e_score_correction_bias" in keys  # the balancing state is part of the checkpoint
    for name in (
        "enorm.weight",
        "hnorm.weight",
        "eh_proj.weight",
        "shared_head.norm.weight",
        "self_attn.kv_b_proj.weight",
    ):
        assert f"model.layers.{L}.{name}" in keys
    assert not any(key.startswith(f"model.layers.{L}.embed_tokens") or "shared_head.head" in key for key in keys)
    assert not any("expert_load" in key or "inv_freq" in key for key in keys)

    loaded = DeepseekMiniForCausalLM.from_pretrained(tmp_path).eval()
    assert max_logit_diff(model, loaded, left_padded_batch) == 0.0
    for a, b in zip(model.moe_layers(), loaded.moe_layers()):
        assert torch.equal(a.gate.e_score_correction_bias, b.gate.e_score_correction_bias)
        assert torch.equal(a.experts.gate_up_proj, b.experts.gate_up_proj)
    loaded_bf16 = DeepseekMiniForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded_bf16.moe_layers()[0].gate.e_score_correction_bias.dtype == torch.float32


def test_deepseek_hub_layout_with_repeated_embedding_in_mtp_module_loads(tiny_model, tmp_path):
    """DeepSeek's hub checkpoints repeat `embed_tokens` and `shared_head.head` inside the MTP module: they load (and
    are ignored, the main model's tensors being the shared ones)."""
    model = tiny_model()
    model.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    L = model.config.num_hidden_layers
    weights[f"model.layers.{L}.embed_tokens.weight"] = weights["model.embed_tokens.weight"].clone()
    weights[f"model.layers.{L}.shared_head.head.weight"] = weights["lm_head.weight"].clone()
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    loaded = DeepseekMiniForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.model.layers[L].eh_proj.weight, model.model.layers[L].eh_proj.weight)


def test_config_json_round_trip_through_deepseek_v3_config(tiny_config, tmp_path):
    config = tiny_config(rope_parameters=dict(YARN), seq_aux_loss_alpha=0.0)
    v3 = DeepseekV3Config(**config.to_deepseek_v3_dict())
    v3.save_pretrained(tmp_path)
    back = DeepseekMiniConfig.from_pretrained(tmp_path)
    for field in ("hidden_size", "n_routed_experts", "n_group", "kv_lora_rank", "q_lora_rank", "rope_parameters",
                  "num_nextn_predict_layers", "first_k_dense_replace", "routed_scaling_factor"):  # fmt: skip
        assert getattr(back, field) == getattr(config, field), field
    assert back.seq_aux_loss_alpha == 1e-4  # training fields are not part of DeepseekV3Config


def test_saved_file_loads_with_plain_load_state_dict(tiny_model, tmp_path):
    """The HF Trainer resumes with `model.load_state_dict(load_file(checkpoint))`: the per-expert keys on disk must
    land in the stacked expert tensors, not be dropped as unexpected."""
    model = tiny_model()
    model.save_pretrained(tmp_path)
    on_disk = load_file(tmp_path / "model.safetensors")
    assert any(".mlp.experts.0.gate_proj.weight" in name for name in on_disk)
    fresh = DeepseekMiniForCausalLM(model.config)
    result = fresh.load_state_dict(on_disk, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for name, value in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], value, rtol=0, atol=0, msg=name)
