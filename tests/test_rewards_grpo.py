"""End to end: TRL's GRPOTrainer calls the registry's rewards and logs them under their names (one step, tiny model)."""

import pytest

import rewards

NAMES = [
    "accuracy",
    "format",
    "tag_count",
    "reasoning_steps",
    "language_consistency",
    "cosine",
    "length",
    "repetition",
    "soft_overlong",
    "code",
    "get_repetition_penalty_reward",  # TRL's name: logged under it, as written
]
PARAMS = {
    "cosine": {"max_len": 8},
    "soft_overlong": {"max_completion_len": 8, "soft_punish_cache": 4},
    "code": {"timeout_s": 2.0},
}


def tiny_model_and_tokenizer():
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        ["<think> 1 + 1 </think> <answer> 2 </answer>"],
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>")
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config), tokenizer


@pytest.mark.slow
@pytest.mark.parametrize("conversational", [False, True])
def test_grpo_step_logs_every_reward(tmp_path, conversational):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = tiny_model_and_tokenizer()
    rows = []
    for i in range(4):
        question = f"What is {i}+{i}?"
        prompt = [{"role": "user", "content": question}] if conversational else question + " Assistant: <think>\n"
        rows.append({"prompt": prompt, "solution": str(2 * i), "test_cases": [{"input": "", "output": str(2 * i)}]})
    dataset = Dataset.from_list(rows)
    funcs = rewards.get_reward_funcs(NAMES, PARAMS)
    rewards.check_columns(funcs, dataset.column_names)
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
    )
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=funcs, args=args, train_dataset=dataset)
    trainer.train()
    logged = trainer.state.log_history[0]
    for name in NAMES:
        assert f"rewards/{name}/mean" in logged, name
    if not conversational:  # the prompt's "<think>\n" gives each completion the first tag_count quarter
        assert logged["rewards/tag_count/mean"] >= 0.25
