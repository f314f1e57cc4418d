"""DeepseekMiniConfig: the DeepSeek-V3 architecture (MLA + DeepSeekMoE + MTP) plus the knobs that training needs.

Field names and defaults are those of transformers' `DeepseekV3Config` (so a `config.json` written for one reads the
same way for the other); the defaults therefore describe the full DeepSeek-V3. Small models come from presets:

    DeepseekMiniConfig.from_preset("tiny")                      # a few hundred K parameters, for tests
    DeepseekMiniConfig.from_preset("small", vocab_size=4096)    # ~100M total / ~20M active, a free Colab GPU

The training fields (`bias_update_speed`, `seq_aux_loss_alpha`, `mtp_loss_weight`, `fp8_recipe`) are read only when
training, but `fp8_recipe`, once set, applies to every forward.
"""

import math
from dataclasses import field
from typing import Any

import transformers
from packaging.version import Version
from transformers import PretrainedConfig

from .fp8 import FP8_RECIPES

# The oldest transformers release this code is tested with (tests/test_remote_code.py loads a checkpoint under it and
# under the newest release). Checkpoints carry this code, so it fails here, with the fix, rather than deep inside.
MIN_TRANSFORMERS_VERSION = "5.17.0"


def check_transformers_version(version: str = transformers.__version__) -> None:
    if Version(version) < Version(MIN_TRANSFORMERS_VERSION):
        raise ImportError(
            f"DeepseekMini's model code needs transformers >= {MIN_TRANSFORMERS_VERSION}, but {version} is installed: "
            f"pip install 'transformers>={MIN_TRANSFORMERS_VERSION}'."
        )


check_transformers_version()


def _help(text: str) -> dict:
    return {"help": text}


def check_rope_parameters(rope_parameters: dict | None) -> None:
    """The RoPE settings the model implements, or an error that says what to write. The config checks them when it is
    built and the model again when it is built from the config: `from_pretrained(..., rope_parameters=...)` and
    `config.rope_parameters = ...` set them after the config's own checks."""
    params = rope_parameters or {}
    rope_type = params.get("rope_type", "default")
    if rope_type not in ("default", "yarn"):
        raise ValueError(
            f"DeepseekMiniConfig: rope_parameters['rope_type']={rope_type!r} is not supported; use 'default' or 'yarn'."
        )
    theta = params.get("rope_theta")
    if not isinstance(theta, (int, float)) or theta <= 0:
        raise ValueError(
            f"DeepseekMiniConfig: rope_parameters['rope_theta']={theta!r} must be a positive number (e.g. 10000.0)."
        )
    factor = params.get("factor")
    if rope_type == "yarn" and (not isinstance(factor, (int, float)) or factor < 1):
        raise ValueError(
            f"DeepseekMiniConfig: YaRN needs rope_parameters['factor'] >= 1 (got {factor!r}): the ratio of the "
            "extended to the original context length."
        )


class DeepseekMiniConfig(PretrainedConfig):
    model_type = "deepseek_mini"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]  # the cache output, by its name since 5.24 and before
    attribute_map = {"num_local_experts": "n_routed_experts", "num_mtp_layers": "num_nextn_predict_layers"}

    # Shapes (transformers' DeepseekV3Config names and defaults)
    vocab_size: int = field(default=129280, metadata=_help("Vocabulary size (rows of the embedding and the head)."))
    hidden_size: int = field(default=7168, metadata=_help("Model width d."))
    intermediate_size: int = field(default=18432, metadata=_help("Hidden width of the dense FFN layers."))
    moe_intermediate_size: int = field(default=2048, metadata=_help("Hidden width of one routed/shared expert."))
    num_hidden_layers: int = field(default=61, metadata=_help("Decoder layers of the main model (MTP excluded)."))
    num_attention_heads: int = field(default=128, metadata=_help("Attention heads n_h."))
    num_key_value_heads: int | None = field(
        default=128,
        metadata=_help(
            "Kept for DeepseekV3Config compatibility; MLA has one K/V per head: must equal num_attention_heads."
        ),
    )
    n_shared_experts: int = field(default=1, metadata=_help("Shared experts, applied to every token."))
    n_routed_experts: int = field(default=256, metadata=_help("Routed experts per MoE layer N_r."))
    routed_scaling_factor: float = field(
        default=2.5, metadata=_help("Multiplier of the routed experts' gating weights.")
    )
    kv_lora_rank: int = field(default=512, metadata=_help("Latent K/V width d_c: what the cache stores per token."))
    q_lora_rank: int | None = field(
        default=1536, metadata=_help("Query low-rank width d_c'; None uses a plain q_proj.")
    )
    qk_rope_head_dim: int = field(default=64, metadata=_help("Decoupled RoPE width d_R (shared key, per-head query)."))
    v_head_dim: int = field(default=128, metadata=_help("Value width per head."))
    qk_nope_head_dim: int = field(default=128, metadata=_help("Query/key width per head without position d_h."))
    n_group: int = field(default=8, metadata=_help("Expert groups for group-limited routing (1 = no grouping)."))
    topk_group: int = field(default=4, metadata=_help("Groups a token may route into."))
    num_experts_per_tok: int = field(default=8, metadata=_help("Routed experts per token K_r."))
    first_k_dense_replace: int = field(default=3, metadata=_help("The first k layers use a dense FFN instead of MoE."))
    norm_topk_prob: bool = field(default=True, metadata=_help("Normalise the chosen experts' scores to sum to 1."))
    hidden_act: str = field(default="silu", metadata=_help("Activation of the gated FFNs."))
    max_position_embeddings: int = field(default=4096, metadata=_help("Longest sequence the positions are built for."))
    initializer_range: float = field(default=0.02, metadata=_help("Std of the normal init (DeepSeek-V3 used 0.006)."))
    rms_norm_eps: float = field(default=1e-6, metadata=_help("Epsilon of every RMSNorm."))
    use_cache: bool = field(default=True, metadata=_help("Return the latent cache from forward (generation)."))
    pad_token_id: int | None = field(default=None, metadata=_help("Padding token id."))
    bos_token_id: int | None = field(default=0, metadata=_help("Beginning-of-sequence token id."))
    eos_token_id: int | list[int] | None = field(default=1, metadata=_help("End-of-sequence token id(s)."))
    tie_word_embeddings: bool = field(default=False, metadata=_help("Share the embedding matrix with the output head."))
    rope_parameters: dict | None = field(
        default=None,
        metadata=_help(
            "RoPE settings as transformers 5 spells them: {'rope_type': 'default'|'yarn', 'rope_theta': ..., and for "
            "YaRN 'factor', 'original_max_position_embeddings', 'beta_fast', 'beta_slow', 'mscale', 'mscale_all_dim'}."
        ),
    )
    rope_interleave: bool = field(
        default=True, metadata=_help("RoPE rotates interleaved pairs (x0,x1),(x2,x3).. as DeepSeek checkpoints do.")
    )
    attention_bias: bool = field(default=False, metadata=_help("Bias on q_a_proj, kv_a_proj_with_mqa and o_proj."))
    attention_dropout: float = field(default=0.0, metadata=_help("Dropout on attention probabilities (training)."))
    num_nextn_predict_layers: int = field(default=1, metadata=_help("Multi-token prediction depth D (0 = no MTP)."))

    # Training
    bias_update_speed: float = field(
        default=1e-3,
        metadata=_help(
            "gamma of aux-loss-free balancing: b_i += gamma * sign(mean_load - load_i) per step; 0 freezes b."
        ),
    )
    seq_aux_loss_alpha: float = field(
        default=1e-4, metadata=_help("alpha of the sequence-wise balance loss (V3: 1e-4); 0 turns it off.")
    )
    mtp_loss_weight: float = field(
        default=0.3, metadata=_help("lambda: loss = L_main + lambda / D * sum_k CE_k (V3: 0.3 early, 0.1 late).")
    )
    fp8_recipe: str | None = field(
        default=None,
        metadata=_help(
            "FP8 training (V3 section 3.3): the GEMMs of the attention projections, dense MLPs and experts take E4M3 "
            "inputs. 'blockwise' (V3: 1x128 activation tiles, 128x128 weight blocks), 'tensorwise' (one scale per "
            "tensor) or None (no FP8). Embedding, head, norms, gate and the attention core stay in high precision."
        ),
    )

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        super().__post_init__(**kwargs)
        self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        self._validate()

    def _validate(self) -> None:
        """Fail at construction with a message that names the field and says what to change."""
        for name in (
            "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
            "num_attention_heads", "n_routed_experts", "kv_lora_rank", "qk_rope_head_dim", "v_head_dim",
            "qk_nope_head_dim", "n_group", "topk_group", "num_experts_per_tok",
        ):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"DeepseekMiniConfig: {name}={value!r} must be a positive integer.")
        for name in ("n_shared_experts", "first_k_dense_replace", "num_nextn_predict_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"DeepseekMiniConfig: {name}={value!r} must be a non-negative integer.")
        if self.q_lora_rank is not None and (not isinstance(self.q_lora_rank, int) or self.q_lora_rank <= 0):
            raise ValueError(
                f"DeepseekMiniConfig: q_lora_rank={self.q_lora_rank!r} must be a positive integer or None."
            )
        if self.num_key_value_heads != self.num_attention_heads:
            raise ValueError(
                f"DeepseekMiniConfig: num_key_value_heads={self.num_key_value_heads} must equal num_attention_heads="
                f"{self.num_attention_heads}: MLA gives every head its own key and value (set it to None or to "
                "num_attention_heads)."
            )
        if self.qk_rope_head_dim % 2:
            raise ValueError(
                f"DeepseekMiniConfig: qk_rope_head_dim={self.qk_rope_head_dim} must be even (RoPE rotates pairs)."
            )
        if self.first_k_dense_replace > self.num_hidden_layers:
            raise ValueError(
                f"DeepseekMiniConfig: first_k_dense_replace={self.first_k_dense_replace} exceeds num_hidden_layers="
                f"{self.num_hidden_layers}; lower it (num_hidden_layers means an all-dense model)."
            )
        if self.n_routed_experts % self.n_group:
            raise ValueError(
                f"DeepseekMiniConfig: n_routed_experts={self.n_routed_experts} is not divisible by n_group="
                f"{self.n_group}; change one of them so every group holds the same number of experts."
            )
        experts_per_group = self.n_routed_experts // self.n_group
        if self.n_group > 1 and experts_per_group < 2:
            raise ValueError(
                f"DeepseekMiniConfig: n_group={self.n_group} leaves {experts_per_group} expert per group, but a "
                "group's "
                "score is the sum of its top-2 experts; use fewer groups (or n_group=1 for no grouping)."
            )
        if self.topk_group > self.n_group:
            raise ValueError(
                f"DeepseekMiniConfig: topk_group={self.topk_group} exceeds n_group={self.n_group}; lower topk_group."
            )
        if self.num_experts_per_tok > self.topk_group * experts_per_group:
            raise ValueError(
                f"DeepseekMiniConfig: num_experts_per_tok={self.num_experts_per_tok} is more than the topk_group="
                f"{self.topk_group} groups of {experts_per_group} experts can hold; raise topk_group or lower "
                "num_experts_per_tok."
            )
        for name in ("bias_update_speed", "seq_aux_loss_alpha", "mtp_loss_weight", "routed_scaling_factor"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
                raise ValueError(f"DeepseekMiniConfig: {name}={value!r} must be a finite number >= 0.")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"DeepseekMiniConfig: attention_dropout={self.attention_dropout} must be in [0, 1).")
        if self.fp8_recipe is not None and self.fp8_recipe not in FP8_RECIPES:
            raise ValueError(
                f"DeepseekMiniConfig: fp8_recipe={self.fp8_recipe!r} is not supported; use 'blockwise' (DeepSeek-V3's "
                "1x128 activation tiles and 128x128 weight blocks), 'tensorwise' (one scale per tensor) or None."
            )
        check_rope_parameters(self.rope_parameters)

    @property
    def mtp_layer_indices(self) -> list[int]:
        """Where the MTP modules live in `model.layers`: module k (1-based) at num_hidden_layers + k - 1, as DeepSeek
        stores them."""
        return [self.num_hidden_layers + k for k in range(self.num_nextn_predict_layers)]

    # ----------------------------------------------------------------------------------------------------------------
    # Presets

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "DeepseekMiniConfig":
        """A named configuration (`tiny`, `small`, `deepseek-v2-lite`, `deepseek-v3`), with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        values = dict(PRESETS[name])
        if "rope_parameters" in values:
            values["rope_parameters"] = dict(values["rope_parameters"])
        values.update(overrides)
        return cls(**values)

    # ----------------------------------------------------------------------------------------------------------------
    # Interchange with transformers' DeepseekV3Config

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """Also reads a `config.json` written for transformers' DeepseekV3 (model_type `deepseek_v3`)."""
        if config_dict.get("model_type") == "deepseek_v3":
            config_dict = deepseek_v3_to_mini_dict(config_dict)
        return super().from_dict(config_dict, **kwargs)

    def to_deepseek_v3_dict(self) -> dict[str, Any]:
        """The fields transformers' DeepseekV3Config reads (training fields and this class's model_type dropped)."""
        values = self.to_dict()
        for key in (*TRAINING_FIELDS, "model_type", "architectures", "auto_map", "transformers_version", "qk_head_dim"):
            values.pop(key, None)
        values["num_nextn_predict_layers"] = self.num_nextn_predict_layers
        return values


TRAINING_FIELDS = ("bias_update_speed", "seq_aux_loss_alpha", "mtp_loss_weight", "fp8_recipe")


def deepseek_v3_to_mini_dict(config_dict: dict[str, Any]) -> dict[str, Any]:
    """Translate a DeepseekV3 `config.json` dict: same field names; only the model type and derived keys change.

    DeepSeek's own hub configs also carry `scoring_func`, `topk_method`, `quantization_config`...: a sigmoid scoring
    with `noaux_tc` routing is what this model implements; other values are rejected rather than silently ignored.
    """
    values = {
        k: v
        for k, v in config_dict.items()
        if k not in ("model_type", "architectures", "auto_map", "qk_head_dim", "head_dim")
    }
    if values.pop("scoring_func", "sigmoid") != "sigmoid":
        raise ValueError("Only sigmoid expert scoring (DeepSeek-V3) is implemented; this checkpoint uses another.")
    if values.pop("topk_method", "noaux_tc") != "noaux_tc":
        raise ValueError("Only noaux_tc routing (DeepSeek-V3) is implemented; this checkpoint uses another method.")
    if "num_mtp_layers" in values:
        values["num_nextn_predict_layers"] = values.pop("num_mtp_layers")
    return values


PRESETS: dict[str, dict[str, Any]] = {
    # For tests: a few hundred K parameters, every feature on (q low-rank, groups, shared experts, a dense layer, MTP).
    "tiny": dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_shared_experts=1,
        n_routed_experts=8,
        routed_scaling_factor=2.5,
        kv_lora_rank=32,
        q_lora_rank=48,
        qk_rope_head_dim=16,
        v_head_dim=16,
        qk_nope_head_dim=16,
        n_group=4,
        topk_group=2,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        max_position_embeddings=512,
        initializer_range=0.02,
        num_nextn_predict_layers=1,
    ),
    # ~100M total / ~20M active parameters: trains on a free Colab GPU.
    "small": dict(
        vocab_size=8192,
        hidden_size=384,
        intermediate_size=1024,
        moe_intermediate_size=176,
        num_hidden_layers=8,
        num_attention_heads=6,
        num_key_value_heads=6,
        n_shared_experts=1,
        n_routed_experts=64,
        routed_scaling_factor=2.5,
        kv_lora_rank=128,
        q_lora_rank=192,
        qk_rope_head_dim=32,
        v_head_dim=64,
        qk_nope_head_dim=64,
        n_group=8,
        topk_group=4,
        num_experts_per_tok=6,
        first_k_dense_replace=1,
        max_position_embeddings=2048,
        initializer_range=0.02,
        num_nextn_predict_layers=1,
    ),
    # DeepSeek-V2-Lite's shapes (16B total / 2.4B active) with V3's sigmoid gate and balancing, and no MTP.
    "deepseek-v2-lite": dict(
        vocab_size=102400,
        hidden_size=2048,
        intermediate_size=10944,
        moe_intermediate_size=1408,
        num_hidden_layers=27,
        num_attention_heads=16,
        num_key_value_heads=16,
        n_shared_experts=2,
        n_routed_experts=64,
        routed_scaling_factor=1.0,
        kv_lora_rank=512,
        q_lora_rank=None,
        qk_rope_head_dim=64,
        v_head_dim=128,
        qk_nope_head_dim=128,
        n_group=1,
        topk_group=1,
        num_experts_per_tok=6,
        first_k_dense_replace=1,
        norm_topk_prob=False,
        max_position_embeddings=163840,
        rope_parameters=dict(
            rope_type="yarn",
            rope_theta=10000.0,
            factor=40.0,
            original_max_position_embeddings=4096,
            beta_fast=32.0,
            beta_slow=1.0,
            mscale=0.707,
            mscale_all_dim=0.707,
        ),
        initializer_range=0.02,
        bos_token_id=100000,
        eos_token_id=100001,
        num_nextn_predict_layers=0,
    ),
    # DeepSeek-V3 (671B total / 37B active, plus one MTP module).
    "deepseek-v3": dict(
        vocab_size=129280,
        hidden_size=7168,
        intermediate_size=18432,
        moe_intermediate_size=2048,
        num_hidden_layers=61,
        num_attention_heads=128,
        num_key_value_heads=128,
        n_shared_experts=1,
        n_routed_experts=256,
        routed_scaling_factor=2.5,
        kv_lora_rank=512,
        q_lora_rank=1536,
        qk_rope_head_dim=64,
        v_head_dim=128,
        qk_nope_head_dim=128,
        n_group=8,
        topk_group=4,
        num_experts_per_tok=8,
        first_k_dense_replace=3,
        max_position_embeddings=163840,
        rope_parameters=dict(
            rope_type="yarn",
            rope_theta=10000.0,
            factor=40.0,
            original_max_position_embeddings=4096,
            beta_fast=32.0,
            beta_slow=1.0,
            mscale=1.0,
            mscale_all_dim=1.0,
        ),
        initializer_range=0.006,
        num_nextn_predict_layers=1,
    ),
}


def parameter_counts(config: DeepseekMiniConfig) -> dict[str, int]:
    """Parameter counts computed from the config alone (nothing is allocated).

    Returns `total` (the main model: embedding, decoder layers, final norm, head), `active` (the parameters one token
    uses in the main model: every routed expert but the `num_experts_per_tok` chosen ones left out) and `mtp` (the MTP
    modules on top; they share the embedding and head).
    """
    c = config
    d, heads = c.hidden_size, c.num_attention_heads
    qk_head = c.qk_nope_head_dim + c.qk_rope_head_dim
    bias = 1 if c.attention_bias else 0
    if c.q_lora_rank is None:
        attention = d * heads * qk_head
    else:
        attention = (d + bias) * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * heads * qk_head
    attention += (d + bias) * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank
    attention += c.kv_lora_rank * heads * (c.qk_nope_head_dim + c.v_head_dim)
    attention += heads * c.v_head_dim * d + bias * d
    norms = 2 * d  # input_layernorm, post_attention_layernorm
    dense_ffn = 3 * d * c.intermediate_size
    expert = 3 * d * c.moe_intermediate_size
    router = c.n_routed_experts * d  # the fp32 bias is a buffer, not a parameter
    moe_total = router + (c.n_shared_experts + c.n_routed_experts) * expert
    moe_active = router + (c.n_shared_experts + c.num_experts_per_tok) * expert

    n_dense = c.first_k_dense_replace
    n_moe = c.num_hidden_layers - n_dense
    embed = c.vocab_size * d
    head = 0 if c.tie_word_embeddings else c.vocab_size * d
    shared = embed + head + d  # + final norm
    layers_total = c.num_hidden_layers * (attention + norms) + n_dense * dense_ffn + n_moe * moe_total
    layers_active = c.num_hidden_layers * (attention + norms) + n_dense * dense_ffn + n_moe * moe_active

    # An MTP module is a decoder layer at index >= num_hidden_layers >= first_k_dense_replace, so its FFN is an MoE.
    mtp_module = attention + norms + moe_total + 2 * d + 2 * d * d + d  # + enorm, hnorm, eh_proj, shared_head.norm
    return {
        "total": shared + layers_total,
        "active": shared + layers_active,
        "mtp": c.num_nextn_predict_layers * mtp_module,
    }
