"""DeepseekGRPOTrainer and recipes/grpo.py at tiny size: training moves the weights and the balancing biases, R1's
signals are logged, any causal LM and LoRA work, bad input fails before training."""

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from modeling_deepseek_mini import DeepseekMiniConfig, DeepseekMiniForCausalLM
from recipes.lib.grpo_trainer import DeepseekGRPOConfig, DeepseekGRPOTrainer
from recipes.lib.task import make_splits


def text_length(completions, **kwargs) -> list[float]:
    """A reward that differs between random completions, so an untrained model gets non-zero advantages."""
    return [len(completion) / 100 for completion in completions]


R1_SIGNALS = ("r1/accuracy", "r1/format_compliance", "r1/language_consistency", "r1/reflection_rate")


@pytest.fixture(scope="module")
def task():
    return make_splits(seed=0, n_train=16, n_test=4)


@pytest.fixture(scope="module")
def tokenizer(offline_chat_tokenizer_path):
    tokenizer = AutoTokenizer.from_pretrained(offline_chat_tokenizer_path)
    tokenizer.padding_side = "left"
    return tokenizer


def grpo_args(tmp_path, **overrides) -> DeepseekGRPOConfig:
    values = dict(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=12,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=True,  # TRL's default, under its current name
        seed=0,
    )
    return DeepseekGRPOConfig(**(values | overrides))


def tiny_deepseek(tokenizer) -> DeepseekMiniForCausalLM:
    torch.manual_seed(0)
    config = DeepseekMiniConfig.from_preset(
        "tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    return DeepseekMiniForCausalLM(config)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def changed(before: dict, model) -> list[str]:
    after = dict(model.named_parameters())
    return [name for name, value in before.items() if not torch.equal(value, after[name].detach())]


def logged_keys(trainer) -> set[str]:
    return {key for row in trainer.state.log_history for key in row}


def spy_on_bias_updates(model) -> list[tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]]:
    """Record (loads, biases before, biases after) of every `update_expert_bias` call on `model`."""
    records, update = [], model.update_expert_bias

    def biases():
        return [moe.gate.e_score_correction_bias.clone() for moe in model.model.moe_layers()]

    def recorded_update():
        loads, before = [moe.expert_load.clone().float() for moe in model.model.moe_layers()], biases()
        stats = update()
        records.append((loads, before, biases()))
        return stats

    model.update_expert_bias = recorded_update
    return records


def test_deepseek_mini_trains_and_balances(tmp_path, task, tokenizer):
    model = tiny_deepseek(tokenizer)
    updates = spy_on_bias_updates(model)
    before = snapshot(model)
    trainer = DeepseekGRPOTrainer(
        model=model,
        reward_funcs=["accuracy", "format", text_length],
        args=grpo_args(tmp_path, expert_bias_update_speed=0.01),
        train_dataset=task["train"],
        processing_class=tokenizer,
    )
    trainer.train()

    assert changed(before, model), "no parameter moved"
    keys = logged_keys(trainer)
    assert set(R1_SIGNALS) | {"completions/mean_length", "rewards/accuracy/mean", "moe/imbalance/mean"} <= keys
    assert len(updates) == 2, "the bias must be updated once per optimizer step"
    is_mtp = [moe.layer_idx >= model.config.num_hidden_layers for moe in model.model.moe_layers()]
    for loads, old, new in updates:
        for load, b0, b1, mtp in zip(loads, old, new, is_mtp):
            if mtp:  # GRPO's loss runs the backbone only: MTP modules route nothing and keep their biases
                assert load.sum() == 0 and torch.equal(b0, b1)
                continue
            assert load.sum() > 0, "GRPO's training forward passes must be counted"
            # each expert moves against its load: overloaded down, underloaded up, by gamma
            torch.testing.assert_close(b1 - b0, 0.01 * torch.sign(load.mean() - load))


def test_bias_update_speed_zero_freezes(tmp_path, task, tokenizer):
    model = tiny_deepseek(tokenizer)
    biases = [moe.gate.e_score_correction_bias.clone() for moe in model.model.moe_layers()]
    trainer = DeepseekGRPOTrainer(
        model=model,
        reward_funcs=["format"],
        args=grpo_args(tmp_path, max_steps=1, expert_bias_update_speed=0.0),
        train_dataset=task["train"],
        processing_class=tokenizer,
    )
    trainer.train()
    for old, moe in zip(biases, model.model.moe_layers()):
        assert torch.equal(old, moe.gate.e_score_correction_bias)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_any_causal_lm(tmp_path, task, tokenizer, tiny_causal_lm_path, arch):
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm_path(arch))
    before = snapshot(model)
    trainer = DeepseekGRPOTrainer(
        model=model,
        reward_funcs=["accuracy", "format", text_length],
        args=grpo_args(tmp_path),
        train_dataset=task["train"],
        processing_class=tokenizer,
    )
    trainer.train()
    assert changed(before, model)
    keys = logged_keys(trainer)
    assert set(R1_SIGNALS) <= keys and not any(key.startswith("moe/") for key in keys)


def test_lora(tmp_path, task, tokenizer, tiny_causal_lm_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm_path("qwen2"))
    trainer = DeepseekGRPOTrainer(
        model=model,
        reward_funcs=["format", text_length],
        args=grpo_args(tmp_path),
        train_dataset=task["train"],
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    before = snapshot(trainer.model)
    assert before and all("lora_" in name for name in before), "only the adapters should be trainable"
    trainer.train()
    assert changed(before, trainer.model)


def test_rewards_by_dotted_path_with_params(tmp_path, monkeypatch, task, tokenizer):
    (tmp_path / "grpo_user_rewards.py").write_text(
        "def shortness(completions, **kwargs):\n    return [1.0 / (1 + len(c)) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = grpo_args(tmp_path, max_steps=1, reward_params={"repetition": {"ngram_size": 2}})
    trainer = DeepseekGRPOTrainer(
        model=tiny_deepseek(tokenizer),
        reward_funcs=["repetition", "grpo_user_rewards:shortness"],
        args=args,
        train_dataset=task["train"],
        processing_class=tokenizer,
    )
    assert trainer.reward_func_names == [
        "repetition",
        "grpo_user_rewards:shortness",
    ]  # the name written is the name logged
    trainer.train()
    assert "rewards/grpo_user_rewards:shortness/mean" in logged_keys(trainer)


def test_unknown_reward_fails_before_training(tmp_path, task, tokenizer):
    with pytest.raises(ValueError, match="acuracy"):
        DeepseekGRPOTrainer(
            model=tiny_deepseek(tokenizer),
            reward_funcs=["acuracy"],
            args=grpo_args(tmp_path),
            train_dataset=task["train"],
            processing_class=tokenizer,
        )


def test_missing_column_fails_before_training(tmp_path, task, tokenizer):
    with pytest.raises(ValueError, match="solution"):
        DeepseekGRPOTrainer(
            model=tiny_deepseek(tokenizer),
            reward_funcs=["accuracy"],
            args=grpo_args(tmp_path),
            train_dataset=task["train"].remove_columns("solution"),
            processing_class=tokenizer,
        )


def test_reward_params_for_unlisted_reward_fail(tmp_path):
    with pytest.raises(ValueError, match="cosine"):
        from recipes.lib.grpo_trainer import resolve_reward_funcs

        resolve_reward_funcs(["accuracy"], {"cosine": {"max_len": 10}})
