"""Shared fixtures."""

import os

import pytest
import torch

# The suite runs on two shared CPU cores: with several processes competing, OpenMP worker threads spin-wait and a tiny
# model becomes ~100x slower. One intra-op thread per process keeps test time predictable; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture
def tiny_config():
    """A factory for the `tiny` preset with overrides: `tiny_config(pad_token_id=0, ...)`."""
    from modeling_deepseek_mini import DeepseekMiniConfig

    def make(**overrides):
        return DeepseekMiniConfig.from_preset("tiny", **overrides)

    return make


@pytest.fixture
def tiny_model(tiny_config):
    """A factory for a seeded `tiny` DeepseekMiniForCausalLM in eval mode, with non-zero routing biases."""
    from modeling_deepseek_mini import DeepseekMiniForCausalLM

    def make(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        model = DeepseekMiniForCausalLM(tiny_config(**overrides)).eval()
        with torch.no_grad():  # a trained model's biases are not zero: make routing depend on them
            for moe in model.moe_layers():
                moe.gate.e_score_correction_bias.normal_(0.0, 0.05)
        return model

    return make


@pytest.fixture
def resumed_from(monkeypatch) -> list[str]:
    """The checkpoint folders the Trainer loads to resume during the test, in order."""
    from transformers import Trainer

    loaded, load = [], Trainer._load_from_checkpoint

    def spy(self, path, *args, **kwargs):
        loaded.append(path)
        return load(self, path, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_load_from_checkpoint", spy)
    return loaded


@pytest.fixture
def left_padded_batch():
    """(input_ids, attention_mask, position_ids) of 3 rows of 20 tokens, rows 1 and 2 left-padded with id 0."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 500, (3, 20), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :5] = 0
    attention_mask[2, :11] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


# ----------------------------------------------------------------------------------------------------------------
# Offline chat tokenizer and tiny Qwen2 / Llama causal LMs (built from configs, nothing downloaded), for the recipes
# that must work with any Hugging Face causal LM: SFT, rejection sampling, distillation, reward models.


def build_offline_chat_tokenizer(vocab_size: int = 384):
    """A byte-level BPE tokenizer trained here on the built-in task and general chat text, with the task's chat
    template (`{% generation %}` markers, so TRL's `assistant_only_loss` works) and R1's tags as single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from recipes.lib.general_chat import make_general_chat
    from recipes.lib.task import CHAT_TEMPLATE, REASONING_TAGS, make_corpus

    corpus = list(make_corpus(seed=0, n_docs=200)["text"])
    corpus += [m["content"] for row in make_general_chat(100, seed=0)["messages"] for m in row]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|pad|>", "<|end|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<|pad|>", eos_token="<|end|>", chat_template=CHAT_TEMPLATE
    )
    wrapped.add_tokens(list(REASONING_TAGS))
    return wrapped


def build_tiny_causal_lm(arch: str, tokenizer, seed: int = 0):
    """A randomly initialised two-layer Qwen2 or Llama causal LM sized to `tokenizer`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_class, model_class = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}[
        arch
    ]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    return model_class(config)


@pytest.fixture(scope="session")
def offline_chat_tokenizer_path(tmp_path_factory):
    """Folder of `build_offline_chat_tokenizer()`."""
    path = tmp_path_factory.mktemp("offline-chat-tokenizer")
    build_offline_chat_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_causal_lm_path(tmp_path_factory, offline_chat_tokenizer_path):
    """Factory: `tiny_causal_lm_path("qwen2" | "llama")` is the folder of a saved tiny model and its tokenizer."""
    from transformers import AutoTokenizer

    paths = {}

    def make(arch: str) -> str:
        if arch not in paths:
            tokenizer = AutoTokenizer.from_pretrained(offline_chat_tokenizer_path)
            path = tmp_path_factory.mktemp(f"tiny-{arch}")
            build_tiny_causal_lm(arch, tokenizer).save_pretrained(path)
            tokenizer.save_pretrained(path)
            paths[arch] = str(path)
        return paths[arch]

    return make
