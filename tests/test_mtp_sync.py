"""The MTP refresh after RL (`recipes.lib.mtp_sync`): it trains the MTP modules alone on the policy's own text, lowers
their loss there, and leaves every other weight bit-identical; its settings are checked before any work."""

import pytest
import torch
from transformers import AutoTokenizer

from modeling_deepseek_mini import DeepseekMiniForCausalLM
from recipes.lib.cli import TINY_BASE
from recipes.lib.grpo_trainer import DeepseekGRPOConfig
from recipes.lib.mtp_sync import mtp_objective, refresh_mtp, sample_policy_text
from recipes.lib.task import make_splits


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY_BASE)


def drifted_base():
    """The shipped tiny base with its MTP module's projection perturbed: a draft head out of step with its policy,
    as after RL."""
    torch.manual_seed(0)
    model = DeepseekMiniForCausalLM.from_pretrained(TINY_BASE)
    with torch.no_grad():
        model.model.mtp_layers[0].eh_proj.weight.add_(0.02 * torch.randn_like(model.model.mtp_layers[0].eh_proj.weight))
    return model


def test_refresh_trains_only_the_mtp_modules_and_lowers_their_loss_on_the_policys_text(tokenizer):
    model = drifted_base().train()
    splits = make_splits(seed=0, n_train=64, n_test=4, n_validation=0, n_ood=0)
    mtp_prefixes = tuple(f"model.layers.{i}." for i in model.config.mtp_layer_indices)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    text = sample_policy_text(model, tokenizer, list(splits["test"]["prompt"]), 24, temperature=0.0)  # unseen prompts
    with torch.no_grad():
        loss_before = float(mtp_objective(model, text))
    rng = torch.get_rng_state()

    result = refresh_mtp(
        model, tokenizer, list(splits["train"]["prompt"]), steps=8, learning_rate=1e-3, batch_size=4, max_new_tokens=24
    )

    after = model.state_dict()
    main = [name for name in before if not name.startswith(mtp_prefixes)]
    assert main and all(torch.equal(before[name], after[name]) for name in main), "a main-model tensor changed"
    assert any(not torch.equal(before[name], after[name]) for name in before if name.startswith(mtp_prefixes))
    with torch.no_grad():
        assert float(mtp_objective(model, text)) < loss_before
    assert result.loss_after < result.loss_before and result.steps == 8
    assert result.trained_parameters == sum(p.numel() for p in model.model.mtp_layers[0].parameters())
    assert model.training and {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng), "the caller's random state moved"


def test_policy_text_is_scored_on_the_completion_up_to_its_first_eos(tokenizer):
    model = DeepseekMiniForCausalLM.from_pretrained(TINY_BASE).eval()
    prompts = list(make_splits(seed=0, n_train=0, n_test=3, n_validation=0, n_ood=0)["test"]["prompt"])
    batch = sample_policy_text(model, tokenizer, prompts, 64, temperature=0.0)
    encoded = tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    prompt_length = encoded["input_ids"].shape[1]
    labels, mask = batch["labels"], batch["attention_mask"]
    assert (labels[:, :prompt_length] == -100).all()
    for row in range(len(prompts)):
        scored = labels[row][labels[row] != -100]
        eos = (scored == tokenizer.eos_token_id).nonzero()
        assert len(scored) > 0 and (len(eos) == 0 or eos[0, 0] == len(scored) - 1)  # nothing after the first EOS
        assert int(mask[row, prompt_length:].sum()) == len(scored)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mtp_refresh_steps", -1, "--mtp_refresh_steps must be >= 0"),
        ("mtp_refresh_learning_rate", 0.0, "--mtp_refresh_learning_rate must be a positive number"),
        ("mtp_refresh_batch_size", 0, "--mtp_refresh_batch_size must be >= 1"),
    ],
)
def test_invalid_refresh_settings_are_refused_by_the_config(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        DeepseekGRPOConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2, **{field: value})


def test_a_model_without_mtp_modules_is_refused(tokenizer, tiny_config):
    model = DeepseekMiniForCausalLM(tiny_config(num_nextn_predict_layers=0, vocab_size=len(tokenizer)))
    with pytest.raises(ValueError, match="multi-token-prediction modules"):
        refresh_mtp(model, tokenizer, ["a", "b"], steps=1)
