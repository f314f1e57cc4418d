"""DeepseekMini: DeepSeek-V3 (MLA + DeepSeekMoE + MTP) on the Hugging Face stack, written to be read and trained.

Read top to bottom: RMSNorm, rotary embeddings (with YaRN), multi-head latent attention, the gate, the stacked experts,
the MoE layer, the dense MLP, the decoder layer, the multi-token-prediction module, then the Hugging Face classes
(pre-trained base, backbone, causal LM). Four sibling files, imported relatively and copied into every checkpoint
with this one, hold the machinery: moe_dispatch.py (the experts' grouped-GEMM path and its backward),
checkpoint_keys.py (per-expert keys on disk, stacked in memory), fp8.py (FP8 GEMMs, `config.fp8_recipe`) and
mtp_decoding.py (speculative decoding with the MTP modules).

What transformers' DeepseekV3 does not do and this file does:
- the cache holds only the latent `c_kv` and the RoPE key `k_pe` (kv_lora_rank + qk_rope_head_dim values per token per
  layer) and decoding attends over the latent directly (weight absorption), without re-expanding K/V;
- aux-loss-free balancing trains: each MoE layer counts the tokens it routes, `update_expert_bias()` moves the fp32
  routing bias once per optimizer step (all data-parallel ranks together);
- the sequence-wise balance loss and the multi-token-prediction loss are part of the training loss.

On disk, weights use DeepSeek's / transformers' names (per-expert keys, MTP module k at `model.layers.{L + k - 1}`).
"""

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import can_return_tuple

from .checkpoint_keys import register_per_expert_conversion, stack_per_expert_keys
from .configuration_deepseek_mini import DeepseekMiniConfig, check_rope_parameters
from .fp8 import convert_to_fp8, fp8_linear
from .moe_dispatch import compute_dtype, grouped_mm_runs, routed_experts
from .mtp_decoding import generate_with_mtp

# transformers 5.24 renamed the cache from `past_key_values` to `cache`: in `forward`, in the mask helpers and in the
# model outputs (the old names warn until 5.40). This file runs under whatever transformers loads a checkpoint, so it
# takes the cache under either name, passes it to the mask helpers by position, and writes the output field that the
# running version declares.
CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def resolve_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache passed as `cache=` (transformers >= 5.24) or `past_key_values=` (earlier); never both."""
    if cache is not None and past_key_values is not None:
        raise ValueError("DeepseekMini: pass the cache as `cache` or as `past_key_values`, not both.")
    return cache if cache is not None else past_key_values


# ---------------------------------------------------------------------------------------------------------------------
# Norm and rotary embeddings


class DeepseekMiniRMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 and cast back before the weight (as DeepSeek and transformers do)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature: 0.1 * mscale * ln(factor) + 1 (1 when not extending)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_frequencies(config: DeepseekMiniConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies of the d_R rotary dims, and the factor cos/sin are multiplied by (1 without YaRN).

    YaRN keeps the high-frequency dims (those that turn more than beta_fast times over the original context), divides
    the low-frequency ones (fewer than beta_slow turns) by `factor`, and ramps linearly in between. The dim that turns
    r times is corr_dim(r) = d * ln(L_orig / (2 pi r)) / (2 ln theta); V3 (d=64, theta=1e4, L=4096): 10 .. 23.
    """
    params = config.rope_parameters
    dim, theta = config.qk_rope_head_dim, params["rope_theta"]
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (d_R/2,)
    if params.get("rope_type", "default") != "yarn":
        return inv_freq, 1.0

    factor = params["factor"]
    original = params.get("original_max_position_embeddings") or config.max_position_embeddings
    beta_fast, beta_slow = params.get("beta_fast") or 32, params.get("beta_slow") or 1

    def corr_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = corr_dim(beta_fast), corr_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / max(high - low, 1e-3)).clamp(
        0, 1
    )  # 0 keep .. 1 scale
    inv_freq = inv_freq / factor * ramp + inv_freq * (1 - ramp)

    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_mscale(factor)
    return inv_freq, attention_factor


def softmax_scale(config: DeepseekMiniConfig) -> float:
    """(qk_nope + qk_rope)^-0.5, times mscale^2 with YaRN (mscale = 0.1 * mscale_all_dim * ln(factor) + 1)."""
    scale = (config.qk_nope_head_dim + config.qk_rope_head_dim) ** -0.5
    params = config.rope_parameters
    if params.get("rope_type", "default") == "yarn" and params.get("mscale_all_dim"):
        scale *= yarn_mscale(params["factor"], params["mscale_all_dim"]) ** 2
    return scale


class DeepseekMiniRotaryEmbedding(nn.Module):
    """cos/sin of position * inv_freq for the d_R rotary dims, shared by all layers."""

    def __init__(self, config: DeepseekMiniConfig):
        super().__init__()
        self.config = config
        inv_freq, self.attention_factor = rope_frequencies(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(x.device)  # (B, T, d_R/2)
        cos, sin = freqs.cos() * self.attention_factor, freqs.sin() * self.attention_factor
        return cos.to(x.dtype), sin.to(x.dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleave: bool) -> torch.Tensor:
    """Rotate pairs of x (..., d_R) by the angles in cos/sin (..., d_R/2).

    DeepSeek checkpoints pair interleaved dims (x0, x1), (x2, x3), ...; `interleave=False` pairs x_j with x_{j+d/2}.
    """
    if interleave:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Multi-head latent attention


def newest_causal_mask(T: int, S: int, device: torch.device) -> torch.Tensor:
    """(1, 1, T, S) boolean: the T newest of S positions each see themselves and every position before them."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)[None, None]


class DeepseekMiniAttention(nn.Module):
    """MLA (DeepSeek-V2 section 2.1).

    K and V come from one latent c_kv = kv_a_layernorm(W_dkv h) of width d_c; position goes through a separate RoPE key
    k_pe (width d_R) shared by all heads. Only (c_kv, k_pe) are cached. Training and prefill expand the latent to
    per-head K/V and use SDPA (or, with `attn_implementation="eager"`, write the attention probabilities out, so they
    can be returned); decoding folds W_UK into the query and W_UV after attention, so each step attends over the latent
    cache directly: multi-query attention with d_k = d_c + d_R and d_v = d_c.
    """

    def __init__(self, config: DeepseekMiniConfig, layer_idx: int):
        super().__init__()
        self.config = config  # the attention implementation is read at each call (`set_attn_implementation` changes it)
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.qk_nope_head_dim, self.qk_rope_head_dim = config.qk_nope_head_dim, config.qk_rope_head_dim
        self.v_head_dim, self.kv_lora_rank = config.v_head_dim, config.kv_lora_rank
        self.rope_interleave = config.rope_interleave
        self.attention_dropout = config.attention_dropout
        self.softmax_scale = softmax_scale(config)
        qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        d, h = config.hidden_size, self.num_heads

        if config.q_lora_rank is None:
            self.q_proj = nn.Linear(d, h * qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(d, config.q_lora_rank, bias=config.attention_bias)
            self.q_a_layernorm = DeepseekMiniRMSNorm(config.q_lora_rank)
            self.q_b_proj = nn.Linear(config.q_lora_rank, h * qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d, self.kv_lora_rank + self.qk_rope_head_dim, bias=config.attention_bias)
        self.kv_a_layernorm = DeepseekMiniRMSNorm(self.kv_lora_rank)
        self.kv_b_proj = nn.Linear(self.kv_lora_rank, h * (self.qk_nope_head_dim + self.v_head_dim), bias=False)
        self.o_proj = nn.Linear(h * self.v_head_dim, d, bias=config.attention_bias)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, d) -> the output (B, T, d) and the attention probabilities (B, H, T, S), None on the SDPA path."""
        B, T, _ = x.shape
        q_nope, q_pe = self.query(x, cos, sin)

        kv = self.kv_a_proj_with_mqa(x)
        c_kv, k_pe = kv[..., : self.kv_lora_rank], kv[..., self.kv_lora_rank :]
        c_kv = self.kv_a_layernorm(c_kv)  # (B, T, d_c)
        k_pe = apply_rotary(k_pe, cos, sin, self.rope_interleave)  # (B, T, d_R)
        if cache is not None:  # the cache holds (B, 1, S, d_c) and (B, 1, S, d_R): nothing per head
            c_kv, k_pe = cache.update(c_kv[:, None], k_pe[:, None], self.layer_idx)
            c_kv, k_pe = c_kv[:, 0], k_pe[:, 0]  # (B, S, d_c), (B, S, d_R)

        if attention_mask is not None and attention_mask.dtype != torch.bool:  # an additive float mask
            attention_mask = attention_mask == 0
        if c_kv.shape[1] > T:  # decoding against a cache: attend over the latent
            out, probs = self.attend_absorbed(q_nope, q_pe, c_kv, k_pe, attention_mask)
        elif self.config._attn_implementation == "eager":
            out, probs = self.attend_eager(q_nope, q_pe, c_kv, k_pe, attention_mask)
        else:
            out, probs = self.attend_expanded(q_nope, q_pe, c_kv, k_pe, attention_mask), None
        return self.o_proj(out.reshape(B, T, self.num_heads * self.v_head_dim)), probs

    def query(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d) -> q_nope (B, T, H, d_h) and the rotated q_pe (B, T, H, d_R), through the low-rank query when
        `q_lora_rank` is set."""
        B, T, _ = x.shape
        if hasattr(self, "q_proj"):
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(B, T, self.num_heads, -1)
        q_nope, q_pe = q[..., : self.qk_nope_head_dim], q[..., self.qk_nope_head_dim :]  # (B, T, H, d_h), (.., d_R)
        return q_nope, apply_rotary(q_pe, cos[:, :, None], sin[:, :, None], self.rope_interleave)

    def expand_latent(self, q_nope, q_pe, c_kv, k_pe):
        """Per-head q (B, T, H, d_h + d_R), k (B, S, H, d_h + d_R) and v (B, S, H, d_v) from the query parts and the
        latent. Inputs (B, T, H, *) and (B, S, *)."""
        B, S, _ = c_kv.shape
        kv = self.kv_b_proj(c_kv).view(B, S, self.num_heads, self.qk_nope_head_dim + self.v_head_dim)
        k_nope, v = kv[..., : self.qk_nope_head_dim], kv[..., self.qk_nope_head_dim :]
        k = torch.cat([k_nope, k_pe[:, :, None].expand(-1, -1, self.num_heads, -1)], -1)  # (B, S, H, d_h + d_R)
        return torch.cat([q_nope, q_pe], -1), k, v  # q (B, T, H, d_h + d_R)

    def attend_expanded(self, q_nope, q_pe, c_kv, k_pe, attention_mask):
        """Expand the latent to per-head K/V (B, S, H, *) and run SDPA. Inputs (B, T, H, *) and (B, S, *).

        SDPA's flash kernels (CPU and CUDA) need one head dim for q, k and v; MLA's v is narrower (v_head_dim <
        qk_nope + qk_rope), so v is zero-padded to the q/k width and the padding cut from the output. Without it SDPA
        falls back to its math kernel, which materialises the (T, S) scores of every head and computes the masked half
        of causal attention: 3-4x slower at 2048 tokens, and the scores are kept for the backward.
        """
        T = q_nope.shape[1]
        q, k, v = self.expand_latent(q_nope, q_pe, c_kv, k_pe)
        v = F.pad(v, (0, max(q.shape[-1] - self.v_head_dim, 0)))  # (B, S, H, d_h + d_R)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=attention_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
            is_causal=attention_mask is None and T > 1,
            scale=self.softmax_scale,
        )  # (B, H, T, d_h + d_R)
        return out[..., : self.v_head_dim].transpose(1, 2)  # (B, T, H, d_v)

    def attend_eager(self, q_nope, q_pe, c_kv, k_pe, attention_mask):
        """The same attention with every head's (T, S) probabilities written out, as `attn_implementation="eager"`
        asks, so they can be returned. Inputs (B, T, H, *) and (B, S, *) -> (B, T, H, d_v) and (B, H, T, S)."""
        T, S = q_nope.shape[1], c_kv.shape[1]
        q, k, v = self.expand_latent(q_nope, q_pe, c_kv, k_pe)
        scores = torch.einsum("bthd,bshd->bhts", q, k).float() * self.softmax_scale  # (B, H, T, S)
        if attention_mask is None and T > 1:
            attention_mask = newest_causal_mask(T, S, c_kv.device)
        probs = self.attention_probs(scores, attention_mask, v.dtype)
        return torch.einsum("bhts,bshv->bthv", probs, v), probs

    def attend_absorbed(self, q_nope, q_pe, c_kv, k_pe, attention_mask):
        """Attention over the latent cache (DeepSeek-V2 appendix): q^T k = (W_UK^T q_nope)^T c_kv + q_pe^T k_pe and
        o = W_UV (sum_s p_s c_kv_s), so K and V are never materialised per head. Inputs (B, T, H, *) and (B, S, *)
        -> (B, T, H, d_v) and the probabilities (B, H, T, S).

        W_UK and W_UV are views of kv_b_proj.weight: nothing is recomputed from the weights at each step.
        """
        B, S, _ = c_kv.shape
        T, H = q_nope.shape[1], self.num_heads
        w_kv_b = self.kv_b_proj.weight.view(H, self.qk_nope_head_dim + self.v_head_dim, -1)
        w_uk, w_uv = w_kv_b[:, : self.qk_nope_head_dim], w_kv_b[:, self.qk_nope_head_dim :]  # (H, d_h | d_v, d_c)
        q_latent = torch.einsum("bthd,hdc->bthc", q_nope, w_uk)  # (B, T, H, d_c)
        # Multi-query attention: the T*H query rows all read the same latent keys (c_kv | k_pe).
        scores = q_latent.reshape(B, T * H, -1) @ c_kv.mT + q_pe.reshape(B, T * H, -1) @ k_pe.mT  # (B, T*H, S)
        scores = scores.view(B, T, H, S).float() * self.softmax_scale
        if attention_mask is None and T > 1:  # a chunk of new tokens after the cache: causal within the chunk
            attention_mask = newest_causal_mask(T, S, c_kv.device)
        if attention_mask is not None:  # (B, 1, T, S) -> (B, T, 1, S)
            attention_mask = attention_mask.transpose(1, 2)
        probs = self.attention_probs(scores, attention_mask, c_kv.dtype)  # (B, T, H, S)
        out_latent = (probs.view(B, T * H, S) @ c_kv).view(B, T, H, -1)  # (B, T, H, d_c)
        return torch.einsum("bthc,hvc->bthv", out_latent, w_uv), probs.transpose(1, 2)  # (B, T, H, d_v), (B, H, T, S)

    def attention_probs(self, scores: torch.Tensor, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """Softmax over the keys (last dim) of fp32 scores, where the boolean mask (broadcast to the scores) holds, then
        dropout in training, cast to `dtype`. A finite fill keeps fully masked (padded) rows free of NaN."""
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return F.dropout(scores.softmax(-1), self.attention_dropout, self.training).to(dtype)


# ---------------------------------------------------------------------------------------------------------------------
# DeepSeekMoE


class DeepseekMiniGate(nn.Module):
    """Sigmoid router with group-limited top-k and an fp32 routing bias (DeepSeek-V3 section 2.1.2).

    The bias `e_score_correction_bias` only decides which experts are chosen; the gating weights use the unbiased
    scores, normalised over the chosen experts and times `routed_scaling_factor`. The bias is a buffer, outside the
    optimizer, moved by `DeepseekMiniPreTrainedModel.update_expert_bias`; it stays fp32 when the model is cast.
    """

    def __init__(self, config: DeepseekMiniConfig):
        super().__init__()
        self.top_k, self.n_group, self.topk_group = config.num_experts_per_tok, config.n_group, config.topk_group
        self.norm_topk_prob, self.routed_scaling_factor = config.norm_topk_prob, config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(config.n_routed_experts, config.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(config.n_routed_experts, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, d) -> gating weights (N, K), expert indices (N, K), sigmoid scores (N, E)."""
        N, E = x.shape[0], self.weight.shape[0]
        if torch.is_autocast_enabled(x.device.type):  # fp32 even under bf16 autocast
            with torch.autocast(x.device.type, enabled=False):
                scores = F.linear(x.float(), self.weight.float()).sigmoid()  # (N, E)
        else:
            scores = F.linear(x.float(), self.weight.float()).sigmoid()
        biased = scores + self.e_score_correction_bias  # used for the choice only
        if self.n_group > 1:
            grouped = biased.view(N, self.n_group, E // self.n_group)
            group_scores = grouped.topk(2, dim=-1).values.sum(-1)  # (N, G): sum of each group's top-2
            kept = group_scores.topk(self.topk_group, dim=-1).indices
            keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
            biased = grouped.masked_fill(~keep[..., None], float("-inf")).view(N, E)  # -inf: biases can be negative
        indices = biased.topk(self.top_k, dim=-1).indices  # (N, K)
        weights = scores.gather(1, indices)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return weights * self.routed_scaling_factor, indices, scores

    def _apply(self, fn, recurse=True):
        """Casts and moves apply to the weight; the bias follows the device only and stays fp32."""
        bias = self._buffers.pop("e_score_correction_bias")
        try:
            super()._apply(fn, recurse)
        finally:
            device = self.weight.device
            if bias.device != device:
                bias = torch.zeros_like(bias, device=device) if bias.is_meta else bias.to(device)
            self._buffers["e_score_correction_bias"] = bias
        return self


class DeepseekMiniExperts(nn.Module):
    """All routed experts of one layer, stacked: gate_up_proj (E, 2I, d) (gate rows first) and down_proj (E, d, I).

    `reference` states the sum plainly, a loop over the experts; `forward` computes it by grouped GEMMs over the
    (token, slot) pairs sorted by expert (moe_dispatch.py), so compute follows the K chosen experts per token, not all
    E, with no token dropping and no host synchronisation. Where torch has no grouped GEMM for the device and dtype
    (a torch without `F.grouped_mm`, CUDA below sm80 or outside bf16, float64), `forward` is the reference. So it is
    with `config.fp8_recipe`: each expert's GEMMs run in FP8 (fp8.py; 128x128 blocks of that expert's weights, 1x128
    tiles of the tokens routed to it).
    """

    def __init__(self, config: DeepseekMiniConfig):
        super().__init__()
        E, d, inter = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * inter, d))
        self.down_proj = nn.Parameter(torch.empty(E, d, inter))
        self.act_fn = ACT2FN[config.hidden_act]
        self.fp8_recipe = config.fp8_recipe
        self.register_load_state_dict_pre_hook(stack_per_expert_keys)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x (N, d), indices/weights (N, K) -> sum_k weights[:, k] * expert_{indices[:, k]}(x), (N, d)."""
        if self.fp8_recipe is not None or not grouped_mm_runs(x.device, compute_dtype(x, self.gate_up_proj)):
            return self.reference(x, indices, weights)
        return routed_experts(x, indices, weights, self.gate_up_proj, self.down_proj, self.act_fn)

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e on its tokens x (n, d): down_e(act(gate_e x) * up_e x) -> (n, d)."""
        gate, up = self.linear(x, self.gate_up_proj[e]).chunk(2, dim=-1)  # (n, I) each
        return self.linear(self.act_fn(gate) * up, self.down_proj[e])

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """x (n, k) @ weight (m, k)^T, in FP8 when the config asks for it."""
        return F.linear(x, weight) if self.fp8_recipe is None else fp8_linear(x, weight, recipe=self.fp8_recipe)

    def reference(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The same sum as DeepSeek-V3's inference/model.py writes it: each expert on the tokens that chose it."""
        y = torch.zeros_like(x)
        counts = torch.bincount(indices.flatten(), minlength=self.gate_up_proj.shape[0]).tolist()
        for e, count in enumerate(counts):
            if count == 0:
                continue
            token, slot = torch.where(indices == e)  # (n,) each: the tokens that chose e, and in which slot
            out = self.expert(e, x[token]) * weights[token, slot, None]  # (n, d)
            y.index_add_(0, token, out.to(y.dtype))  # y[token] += out, also where a token repeats an expert
        return y


class _CountLoadOnBackward(torch.autograd.Function):
    """Identity whose backward adds this forward's expert counts to the layer's load counter.

    Counting in the backward counts every token that a training step learns from exactly once: under gradient
    accumulation every micro-batch is counted, and under activation checkpointing the recomputed forward (reentrant or
    not) is not counted a second time; forwards that no loss flows through (generation, reference log-probs) are not
    counted at all.
    """

    @staticmethod
    def forward(ctx, output, counts, load):
        ctx.save_for_backward(counts)
        ctx.load = load
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad_output):
        (counts,) = ctx.saved_tensors
        ctx.load.add_(counts.to(ctx.load.device))
        return grad_output, None, None


class DeepseekMiniMLP(nn.Module):
    """Gated FFN: down(act(gate(x)) * up(x)). The dense layers and the shared experts."""

    def __init__(self, config: DeepseekMiniConfig, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class DeepseekMiniMoE(nn.Module):
    """Shared experts (always on) + K routed experts chosen by the gate; counts its load for the bias update."""

    def __init__(self, config: DeepseekMiniConfig, layer_idx: int):
        super().__init__()
        self.config = config  # seq_aux_loss_alpha is read at each call, so a schedule can change it
        self.layer_idx = layer_idx
        self.num_experts, self.top_k = config.n_routed_experts, config.num_experts_per_tok
        self.gate = DeepseekMiniGate(config)
        self.experts = DeepseekMiniExperts(config)
        self.shared_experts = (
            DeepseekMiniMLP(config, config.moe_intermediate_size * config.n_shared_experts)
            if config.n_shared_experts > 0
            else None
        )
        # Tokens routed to each expert since the last bias update (this rank only).
        self.register_buffer("expert_load", torch.zeros(self.num_experts, dtype=torch.long), persistent=False)

    def forward(
        self, x: torch.Tensor, token_mask: torch.Tensor | None = None, return_aux_loss: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, d); token_mask (B, T) marks real tokens (padding is neither counted nor in the balance loss)."""
        B, T, d = x.shape
        weights, indices, scores = self.gate(x.reshape(-1, d))  # (N, K), (N, K), (N, E)
        y = self.experts(x.reshape(-1, d), indices, weights).view(B, T, d)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)

        count_load = self.training and y.requires_grad
        if not (return_aux_loss or count_load):
            return y, None
        real = torch.ones(B, T, device=x.device) if token_mask is None else token_mask.to(x.device, torch.float32)
        aux_loss = self.sequence_balance_loss(scores, indices, real) if return_aux_loss else None
        if count_load:
            counts = torch.zeros(self.num_experts, device=x.device).scatter_add_(
                0, indices.reshape(-1), real.reshape(-1, 1).expand(-1, self.top_k).reshape(-1)
            )
            y = _CountLoadOnBackward.apply(y, counts.long(), self.expert_load)
        return y, aux_loss

    def sequence_balance_loss(self, scores: torch.Tensor, indices: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """alpha * sum_i f_i P_i per sequence, averaged over sequences (DeepSeek-V3 eq. 17-20); alpha when balanced.

        f_i = E / (K T) * (tokens of the sequence routed to i), P_i = mean over the sequence of s_i / sum_j s_j.
        """
        B, T = real.shape
        E, K = self.num_experts, self.top_k
        n_tokens = real.sum(1)  # (B,)
        counts = torch.zeros(B, E, device=scores.device).scatter_add_(
            1, indices.view(B, T * K), real[..., None].expand(B, T, K).reshape(B, T * K)
        )
        f = counts * E / (K * n_tokens.clamp(min=1)[:, None])  # (B, E)
        p = (scores / scores.sum(-1, keepdim=True)).view(B, T, E)
        p = (p * real[..., None]).sum(1) / n_tokens.clamp(min=1)[:, None]  # (B, E)
        has_tokens = (n_tokens > 0).float()
        per_sequence = (f * p).sum(-1) * has_tokens  # (B,)
        return self.config.seq_aux_loss_alpha * per_sequence.sum() / has_tokens.sum().clamp(min=1)


# ---------------------------------------------------------------------------------------------------------------------
# Decoder layer and multi-token prediction


class DeepseekMiniDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: h + MLA(norm(h)), then h + FFN(norm(h)); FFN is dense in the first `first_k_dense_replace`."""

    def __init__(self, config: DeepseekMiniConfig, layer_idx: int):
        super().__init__()
        self.self_attn = DeepseekMiniAttention(config, layer_idx)
        if layer_idx >= config.first_k_dense_replace:
            self.mlp = DeepseekMiniMoE(config, layer_idx)
        else:
            self.mlp = DeepseekMiniMLP(config, config.intermediate_size)
        self.input_layernorm = DeepseekMiniRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = DeepseekMiniRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor = None,
        sin: torch.Tensor = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        token_mask: torch.Tensor | None = None,
        return_aux_loss: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """-> the new hidden states, the MoE balance loss (when asked) and the attention probabilities (eager)."""
        attn_out, attn_probs = self.self_attn(self.input_layernorm(hidden_states), cos, sin, attention_mask, cache)
        h = hidden_states + attn_out
        x = self.post_attention_layernorm(h)
        if isinstance(self.mlp, DeepseekMiniMoE):
            out, aux_loss = self.mlp(x, token_mask, return_aux_loss)
        else:
            out, aux_loss = self.mlp(x), None
        return h + out, aux_loss, attn_probs


class DeepseekMiniMTPHead(nn.Module):
    """The MTP module's own part of the output head: a norm. The projection is the main model's `lm_head`."""

    def __init__(self, config: DeepseekMiniConfig):
        super().__init__()
        self.norm = DeepseekMiniRMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class DeepseekMiniMTPLayer(DeepseekMiniDecoderLayer):
    """MTP module k (DeepSeek-V3 section 2.2): h'_i = eh_proj([enorm(Emb(t_{i+k})); hnorm(h^{k-1}_i)]), one decoder
    block, then `shared_head.norm`; the logits come from the main model's head. The embedding and the head are the main
    model's tensors, passed in at call time and never owned here (as in DeepSeek's checkpoints).
    """

    def __init__(self, config: DeepseekMiniConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.enorm = DeepseekMiniRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.hnorm = DeepseekMiniRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        self.shared_head = DeepseekMiniMTPHead(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        token_embeds: torch.Tensor,
        cos: torch.Tensor = None,
        sin: torch.Tensor = None,
        attention_mask: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        return_aux_loss: bool = False,
        cache: Cache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states: h^{k-1}_i, token_embeds: Emb(t_{i+k}), both (B, T-k, d) -> normed h^k (B, T-k, d).
        `cache` holds this module's latent for earlier positions (speculative decoding, mtp_decoding.py)."""
        h = self.eh_proj(torch.cat([self.enorm(token_embeds), self.hnorm(hidden_states)], dim=-1))
        h, aux_loss, _ = super().forward(
            h,
            cos=cos,
            sin=sin,
            attention_mask=attention_mask,
            cache=cache,
            token_mask=token_mask,
            return_aux_loss=return_aux_loss,
        )
        return self.shared_head.norm(h), aux_loss


def mtp_shift(
    k: int,
    inputs_embeds: torch.Tensor,
    position_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Depth k's view of a batch of T tokens: the T-k positions i that have a token k steps ahead.

    Position i pairs h^{k-1}_i with Emb(t_{i+k}) and keeps the position (and, packed, the document) of h_i, so a
    packed document's MTP positions see exactly what they would see alone. Its target is t_{i+k+1}, ignored (-100)
    past the end, across a document start and where h_i or t_{i+k} is padding.
    Returns Emb(t_{i+k}) (B, T-k, d), positions (B, T-k), the padding mask (B, T-k) or None, targets (B, T-k).
    """
    T = inputs_embeds.shape[1]
    embeds, positions = inputs_embeds[:, k:], position_ids[:, : T - k]
    mask = None if attention_mask is None else attention_mask[:, k:] * attention_mask[:, : T - k]
    targets = F.pad(labels[:, k + 1 :], (0, 1), value=-100)  # target of position i is t_{i+k+1}
    crosses = F.pad(position_ids[:, k + 1 :] - position_ids[:, : T - k - 1] != k + 1, (0, 1), value=True)
    targets = targets.masked_fill(crosses, -100)  # packed sequences: never predict across a document start
    if mask is not None:  # nor from a position whose h_i or t_{i+k} is padding
        targets = targets.masked_fill(mask == 0, -100)
    return embeds, positions, mask, targets


# ---------------------------------------------------------------------------------------------------------------------
# Hugging Face classes


@dataclass
class DeepseekMiniModelOutput(BaseModelOutputWithPast):
    """`BaseModelOutputWithPast` plus the summed sequence-wise balance loss of the MoE layers (when requested)."""

    aux_loss: torch.FloatTensor | None = None


@dataclass
class DeepseekMiniCausalLMOutput(CausalLMOutputWithPast):
    """`loss` = L_main + mtp_loss_weight * mtp_loss + aux_loss, where `mtp_loss` = (1/D) sum_k CE_k and `aux_loss` is
    the sequence-wise balance loss summed over MoE layers (alpha per layer under perfect balance)."""

    aux_loss: torch.FloatTensor | None = None
    mtp_loss: torch.FloatTensor | None = None


def check_attentions_can_be_returned(config: DeepseekMiniConfig) -> None:
    """SDPA never forms the attention probabilities: only the eager path can return them."""
    if config._attn_implementation != "eager":
        raise ValueError(
            f"DeepseekMini: output_attentions=True needs the eager attention path, but the model runs "
            f'{config._attn_implementation!r}: load it with from_pretrained(..., attn_implementation="eager") or '
            'call model.set_attn_implementation("eager") first.'
        )


def load_statistics(load: torch.Tensor) -> dict[str, float]:
    """Imbalance of one layer's token counts (E,): max/mean (1 = balanced) and coefficient of variation."""
    load = load.double()
    mean = load.mean()
    return {
        "tokens": int(load.sum().item()),
        "max_over_mean": (load.max() / mean).item(),
        "cv": (load.std(unbiased=False) / mean).item(),
    }


class DeepseekMiniPreTrainedModel(PreTrainedModel):
    config: DeepseekMiniConfig
    config_class = DeepseekMiniConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DeepseekMiniDecoderLayer", "DeepseekMiniMTPLayer"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_sdpa = True  # the default; "eager" writes the attention probabilities out (output_attentions)
    _can_compile_fullgraph = True  # torch.compile(fullgraph=True) and torch.export trace the forward (tested)
    _keep_in_fp32_modules_strict = ["e_score_correction_bias"]
    # DeepSeek's hub checkpoints repeat the shared embedding and head inside every MTP module.
    _keys_to_ignore_on_load_unexpected = [r"model\.layers\.\d+\.(embed_tokens|shared_head\.head)\.weight"]

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        """`set_attn_implementation` may switch SDPA and eager: the attention reads the config's choice at each call.
        (transformers guesses from the source, which finds no `AttentionInterface` here.)"""
        return True

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)  # Linear and Embedding ~ N(0, initializer_range), norms = 1
        std = self.config.initializer_range
        if isinstance(module, DeepseekMiniGate):
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.e_score_correction_bias)
        elif isinstance(module, DeepseekMiniExperts):
            init.normal_(module.gate_up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)
        elif isinstance(module, DeepseekMiniMoE):
            init.zeros_(module.expert_load)
        elif isinstance(module, DeepseekMiniRotaryEmbedding):
            init.copy_(module.inv_freq, rope_frequencies(module.config)[0])

    def moe_layers(self) -> list[DeepseekMiniMoE]:
        """Every MoE layer, the MTP modules' included, in layer order."""
        return sorted((m for m in self.modules() if isinstance(m, DeepseekMiniMoE)), key=lambda m: m.layer_idx)

    @torch.no_grad()
    def update_expert_bias(self) -> dict[int, dict[str, float]]:
        """Aux-loss-free balancing step; call once per optimizer step (`ExpertBiasUpdateCallback` does).

        Sums each MoE layer's token counts over the data-parallel ranks (when torch.distributed is initialised), applies
        b_i += bias_update_speed * sign(mean_load - load_i), resets the counters, and returns the load statistics of
        the global counts per layer index (layers that counted no token are left out and not moved).
        """
        layers = self.moe_layers()
        if not layers:
            return {}
        loads = torch.stack([moe.expert_load for moe in layers])  # (n_layers, E)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(loads, op=dist.ReduceOp.SUM)
        gamma = self.config.bias_update_speed
        stats = {}
        for moe, load in zip(layers, loads):
            moe.expert_load.zero_()
            if load.sum() == 0:
                continue
            load = load.float()
            bias = moe.gate.e_score_correction_bias
            bias += gamma * torch.sign(load.mean() - load).to(bias.device, bias.dtype)
            stats[moe.layer_idx] = load_statistics(load)
        return stats

    def expert_load_stats(self) -> dict[int, dict[str, float]]:
        """Load statistics of the tokens counted since the last `update_expert_bias()` on this rank, per layer."""
        return {
            moe.layer_idx: load_statistics(moe.expert_load) for moe in self.moe_layers() if moe.expert_load.sum() > 0
        }


class DeepseekMiniModel(DeepseekMiniPreTrainedModel):
    """Embedding, decoder layers, final norm. `layers` also holds the MTP modules after the main layers (at the
    indices DeepSeek's checkpoints use); the backbone's forward runs the main layers only."""

    def __init__(self, config: DeepseekMiniConfig):
        super().__init__(config)
        check_rope_parameters(config.rope_parameters)  # they may have changed since the config checked them
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            [DeepseekMiniDecoderLayer(config, i) for i in range(config.num_hidden_layers)]
            + [DeepseekMiniMTPLayer(config, i) for i in config.mtp_layer_indices]
        )
        if config.fp8_recipe is not None:  # every nn.Linear of the layers; the gate, norms, attention core stay
            convert_to_fp8(self.layers, config.fp8_recipe)
        self.norm = DeepseekMiniRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = DeepseekMiniRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    @property
    def mtp_layers(self) -> list[DeepseekMiniMTPLayer]:
        return list(self.layers[self.config.num_hidden_layers :])

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_aux_loss: bool = False,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> DeepseekMiniModelOutput:
        """`cache` (or, as transformers < 5.24 names it, `past_key_values`) holds the latent cache of earlier tokens.
        `output_attentions` returns each main layer's attention probabilities (B, H, T, S), on the eager path only."""
        cache = resolve_cache(cache, past_key_values)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("DeepseekMiniModel: pass exactly one of input_ids or inputs_embeds.")
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_attentions:
            check_attentions_can_be_returned(self.config)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        B, T = inputs_embeds.shape[:2]
        if position_ids is None:
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(past, past + T, device=inputs_embeds.device)[None].expand(B, -1)

        token_mask = attention_mask[:, -T:].bool() if attention_mask is not None and attention_mask.dim() == 2 else None
        if T == 1 and (attention_mask is None or token_mask is not None):
            # One new token sees every real token before it: the padding mask is the whole mask. (B, 1, 1, S)
            causal_mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        else:
            causal_mask = create_causal_mask(self.config, inputs_embeds, attention_mask, cache, position_ids)
        cos, sin = self.rotary_emb(inputs_embeds, position_ids)

        h = inputs_embeds
        all_hidden_states = (h,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        aux_loss = None
        for layer in self.layers[: self.config.num_hidden_layers]:
            h, layer_aux, attn_probs = layer(
                h,
                cos=cos,
                sin=sin,
                attention_mask=causal_mask,
                cache=cache,
                token_mask=token_mask,
                return_aux_loss=return_aux_loss,
            )
            if layer_aux is not None:
                aux_loss = layer_aux if aux_loss is None else aux_loss + layer_aux
            if output_hidden_states:
                all_hidden_states += (h,)
            if output_attentions:
                all_attentions += (attn_probs,)
        h = self.norm(h)
        if output_hidden_states:  # the last entry is the normed output, as in transformers' decoders
            all_hidden_states = all_hidden_states[:-1] + (h,)
        return DeepseekMiniModelOutput(
            last_hidden_state=h,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            aux_loss=aux_loss,
            **{CACHE_FIELD: cache if use_cache else None},
        )


class DeepseekMiniForCausalLM(DeepseekMiniPreTrainedModel, GenerationMixin):
    """Backbone + output head. With labels in training mode: loss = L_main + lambda * mtp_loss + aux_loss."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: DeepseekMiniConfig):
        super().__init__(config)
        self.model = DeepseekMiniModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> DeepseekMiniCausalLMOutput:
        """labels follow the HF convention (same length as input_ids, shifted inside, -100 ignored).

        `num_items_in_batch` (passed by the Trainer) makes every loss term a sum over the global batch, so gradient
        accumulation is exact."""
        train_losses = labels is not None and self.training
        run_mtp = train_losses and self.config.mtp_loss_weight > 0 and len(self.model.mtp_layers) > 0
        if run_mtp and inputs_embeds is None:  # MTP reuses the main model's token embeddings
            inputs_embeds, input_ids = self.model.embed_tokens(input_ids), None
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=resolve_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_aux_loss=train_losses and self.config.seq_aux_loss_alpha > 0,
            **kwargs,
        )
        h = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(h[:, keep])

        loss = mtp_loss = aux_loss = None
        if labels is not None:
            loss_kwargs = {k: kwargs[k] for k in ("num_items_in_batch", "ignore_index", "shift_labels") if k in kwargs}
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **loss_kwargs)
            aux_loss = outputs.aux_loss
            if run_mtp:
                mtp_loss, mtp_aux = self.mtp_loss(h, inputs_embeds, attention_mask, position_ids, labels, **loss_kwargs)
                loss = loss + self.config.mtp_loss_weight * mtp_loss
                if mtp_aux is not None:
                    aux_loss = mtp_aux if aux_loss is None else aux_loss + mtp_aux
            if aux_loss is not None:
                loss = loss + aux_loss * self._aux_loss_share(labels, kwargs.get("num_items_in_batch"))

        return DeepseekMiniCausalLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            aux_loss=aux_loss,
            mtp_loss=mtp_loss,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )

    # Speculative decoding: the MTP modules draft, one main forward verifies (mtp_decoding.py); greedy output equals
    # `generate(do_sample=False)`, sampled output has `generate(do_sample=True, top_k=0)`'s distribution.
    generate_with_mtp = generate_with_mtp

    @staticmethod
    def _aux_loss_share(labels: torch.Tensor, num_items_in_batch) -> torch.Tensor | float:
        """The balance loss is a per-batch mean; with `num_items_in_batch` the Trainer sums micro-batch losses, so
        weight this micro-batch's term by its share of the global batch's target tokens (a token-weighted mean)."""
        if num_items_in_batch is None:
            return 1.0
        n_local = (labels[:, 1:] != -100).sum()
        return n_local / torch.as_tensor(num_items_in_batch, device=labels.device).clamp(min=1)

    def mtp_loss(
        self,
        hidden_states: torch.Tensor,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        labels: torch.Tensor,
        **loss_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(1/D) sum_k CE_k, where depth k predicts t_{i+k+1} at position i from h^{k-1}_i and Emb(t_{i+k}).

        hidden_states: the main model's normed output h^0 (B, T, d); depth k works on the T-k positions that have a
        token k steps ahead. Returns the loss and the MTP layers' balance loss (None when not computed).
        """
        B, T, _ = hidden_states.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=hidden_states.device)[None].expand(B, -1)
        loss_kwargs.pop("shift_labels", None)
        h, ce, aux_loss = hidden_states, [], None
        for k, layer in enumerate(self.model.mtp_layers, start=1):
            if T - k < 1:
                break
            embeds, positions, mask, targets = mtp_shift(k, inputs_embeds, position_ids, attention_mask, labels)
            causal_mask = create_causal_mask(self.config, embeds, mask, None, positions)
            cos, sin = self.model.rotary_emb(embeds, positions)
            h, layer_aux = layer(
                h[:, :-1],
                embeds,
                cos=cos,
                sin=sin,
                attention_mask=causal_mask,
                token_mask=None if mask is None else mask.bool(),
                return_aux_loss=self.config.seq_aux_loss_alpha > 0,
            )
            if layer_aux is not None:
                aux_loss = layer_aux if aux_loss is None else aux_loss + layer_aux
            n_items = loss_kwargs.get("num_items_in_batch")
            if n_items is None:  # a depth without any target (short or padded rows) adds 0, not NaN
                n_items = (targets != -100).sum().clamp(min=1)
            ce.append(
                self.loss_function(
                    logits=self.lm_head(h),
                    labels=None,
                    vocab_size=self.config.vocab_size,
                    shift_labels=targets,
                    **{**loss_kwargs, "num_items_in_batch": n_items},
                )
            )
        if not ce:
            return hidden_states.new_zeros(()), aux_loss
        return torch.stack(ce).mean(), aux_loss


# Checkpoints hold one tensor per expert (DeepSeek's and transformers' layout); in memory the experts are stacked.
register_per_expert_conversion(DeepseekMiniConfig.model_type)
