"""Small Qwen2 / Llama shapes built from a config (nothing downloaded): distillation students and reward models."""

from transformers import AutoConfig, AutoTokenizer

TINY_CAUSAL_LM_PRESETS = {
    "qwen2-tiny": (
        "qwen2",
        {
            "hidden_size": 64,
            "intermediate_size": 192,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
    ),
    "llama-tiny": (
        "llama",
        {
            "hidden_size": 64,
            "intermediate_size": 192,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
    ),
    "qwen2-small": (
        "qwen2",
        {
            "hidden_size": 256,
            "intermediate_size": 768,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
        },
    ),
    "llama-small": (
        "llama",
        {
            "hidden_size": 256,
            "intermediate_size": 768,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
        },
    ),
}
"""Small Qwen2 / Llama shapes, built from a config (nothing downloaded): distillation students and reward models."""


def config_from_preset(preset: str, tokenizer, **overrides):
    """A transformers config of a `TINY_CAUSAL_LM_PRESETS` shape, sized to `tokenizer` (vocabulary, special tokens)."""
    if preset not in TINY_CAUSAL_LM_PRESETS:
        raise ValueError(
            f"Unknown preset {preset!r}: choose one of {sorted(TINY_CAUSAL_LM_PRESETS)}, or give a model path."
        )
    model_type, shape = TINY_CAUSAL_LM_PRESETS[preset]
    values = {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        **shape,
        **overrides,
    }
    return AutoConfig.for_model(model_type, **values)


def preset_student_tokenizer(preset: str, tokenizer_name: str, *, trust_remote_code: bool):
    """`tokenizer_name` loaded as the saved student folder will reload it, so the student trains on the token
    sequences it later sees.

    AutoTokenizer picks a folder's tokenizer class from its model type: a Qwen2 folder always reloads as
    Qwen2Tokenizer, which rebuilds the BPE with Qwen2's own pre-tokenizer and ignores the saved tokenizer.json's
    (the teacher's splits digits and merges across spaces). A Qwen2 student trained with the tokenizer as the
    teacher's folder loads it would meet other, longer sequences once reloaded, and answer garbage."""
    model_type, _ = TINY_CAUSAL_LM_PRESETS[preset]
    return AutoTokenizer.from_pretrained(
        tokenizer_name, config=AutoConfig.for_model(model_type), trust_remote_code=trust_remote_code
    )
