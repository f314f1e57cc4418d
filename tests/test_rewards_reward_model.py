"""The reward_model reward on a tiny randomly initialised Llama classifier and an offline BPE tokenizer."""

import math

import pytest

from rewards import get_reward_func

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A 1-layer LlamaForSequenceClassification and a byte-level BPE tokenizer, built offline and saved."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(["<think>let me think</think> the answer is 4", "hello world, be helpful"], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
    )
    path = tmp_path_factory.mktemp("tiny_reward_model")
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


COMPLETIONS = [
    "<think>let me think</think> the answer is 4",
    "<think>a different thought entirely</think> the answer is 4",
    "hello world",
    "",
]


def test_scores_are_deterministic_floats_and_batching_does_not_change_them(model_dir):
    one = get_reward_func("reward_model", model=model_dir, batch_size=1, include_prompt=False)
    four = get_reward_func("reward_model", model=model_dir, batch_size=4, include_prompt=False)
    assert one.model is None  # loads lazily
    scores = one(completions=COMPLETIONS)
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert four(completions=COMPLETIONS) == pytest.approx(scores, abs=1e-5)
    model = one.model
    assert one(completions=COMPLETIONS) == pytest.approx(scores, abs=1e-6) and one.model is model  # loaded once
    assert len({round(s, 6) for s in scores}) > 1  # a random model still tells inputs apart
    assert all(p.grad is None for p in model.parameters())


def test_summary_judges_only_the_text_after_think(model_dir):
    summary = get_reward_func("reward_model", model=model_dir, judge="summary", include_prompt=False)
    full = get_reward_func("reward_model", model=model_dir, judge="full", include_prompt=False)
    s = summary(completions=COMPLETIONS[:2])
    assert s[0] == pytest.approx(s[1], abs=1e-6)  # same summary, different thoughts
    assert s[0] == pytest.approx(full(completions=[" the answer is 4"])[0], abs=1e-6)
    f = full(completions=COMPLETIONS[:2])
    assert f[0] != pytest.approx(f[1], abs=1e-6)


def test_prompt_goes_through_the_chat_template(model_dir):
    reward = get_reward_func("reward_model", model=model_dir, include_prompt=True)
    plain = reward(prompts=["be helpful"], completions=["hello world"])
    conversational = reward(
        prompts=[[{"role": "user", "content": "be helpful"}]],
        completions=[[{"role": "assistant", "content": "hello world"}]],
    )
    assert plain == pytest.approx(conversational, abs=1e-6)
    assert reward.model_input("be helpful", "hello world") == "<|user|>be helpful\n<|assistant|>hello world\n"
    without = get_reward_func("reward_model", model=model_dir, include_prompt=False)
    assert without(prompts=["be helpful"], completions=["hello world"]) != pytest.approx(plain, abs=1e-6)


def test_sigmoid_normalisation_and_bad_input(model_dir):
    raw = get_reward_func("reward_model", model=model_dir, include_prompt=False)
    sigmoid = get_reward_func("reward_model", model=model_dir, include_prompt=False, normalize="sigmoid")
    junk = [None, b"\xff\xfe", "<think>" * 10_000, "x" * (1 << 20), [{"role": "assistant", "content": None}]]
    r, s = raw(completions=junk), sigmoid(completions=junk)
    assert len(s) == len(junk) and all(0.0 < v < 1.0 for v in s)
    assert s == pytest.approx([1 / (1 + math.exp(-v)) for v in r], abs=1e-6)
    with pytest.raises(ValueError, match="judge must be one of"):
        get_reward_func("reward_model", model=model_dir, judge="half")
