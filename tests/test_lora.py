"""LoRA through the recipes' `--use_peft` flags: DeepseekMini's default targets leave out the MTP modules."""

from peft import get_peft_model
from trl import ModelConfig

from recipes.lib.lora import peft_config_for


def adapted(model, model_args: ModelConfig) -> list[str]:
    """The names of the modules that hold a LoRA adapter after `get_peft_model` with the recipes' config."""
    peft_model = get_peft_model(model, peft_config_for(model, model_args))
    prefix = "base_model.model."
    return [name.removeprefix(prefix) for name, module in peft_model.named_modules() if hasattr(module, "lora_A")]


def test_default_lora_targets_leave_out_the_mtp_modules(tiny_model):
    """Without --lora_target_modules: every linear projection of the main model (attention, the dense MLP, the shared
    experts), nothing inside the MTP module (model.layers.2 in the tiny preset), not the head."""
    names = adapted(tiny_model(), ModelConfig(use_peft=True))
    assert not [name for name in names if name.startswith("model.layers.2.")]
    for layer in (0, 1):
        for projection in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"):
            assert f"model.layers.{layer}.self_attn.{projection}" in names
    assert {"model.layers.0.mlp.gate_proj", "model.layers.1.mlp.shared_experts.down_proj"} <= set(names)
    assert "lm_head" not in names


def test_explicit_lora_targets_are_used_as_given(tiny_model):
    """A list the user writes reaches the MTP module too (it asked for those names everywhere)."""
    names = adapted(tiny_model(), ModelConfig(use_peft=True, lora_target_modules=["o_proj", "eh_proj"]))
    assert set(names) == {
        "model.layers.0.self_attn.o_proj",
        "model.layers.1.self_attn.o_proj",
        "model.layers.2.self_attn.o_proj",
        "model.layers.2.eh_proj",
    }
    assert peft_config_for(tiny_model(), ModelConfig(use_peft=False)) is None
