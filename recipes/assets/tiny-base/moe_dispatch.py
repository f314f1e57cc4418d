"""Dispatch of routed experts on grouped GEMMs: the fast path of `DeepseekMiniExperts`.

The maths is `DeepseekMiniExperts.reference` in modeling_deepseek_mini.py (a loop over experts, as DeepSeek-V3's
inference code states it); this file computes the same sum without a host synchronisation: the (token, slot) pairs are
sorted by expert, each projection is one `F.grouped_mm` over the sorted rows, and a custom backward keeps only the
gate/up projection for the backward pass. It ships inside every checkpoint next to the modeling file, which imports it.
"""

import torch
import torch.nn.functional as F


def routed_experts(x, indices, weights, gate_up_proj, down_proj, act_fn) -> torch.Tensor:
    """x (N, d), indices/weights (N, K), gate_up_proj (E, 2I, d), down_proj (E, d, I) -> (N, d), the sum over each
    token's chosen experts of weight * down(act(gate(x)) * up(x)). Fast where `grouped_mm_runs`; correct anywhere."""
    token, slot, offsets = sort_by_expert(indices, gate_up_proj.shape[0])
    return _RoutedExperts.apply(x, weights.reshape(-1), gate_up_proj, down_proj, token, slot, offsets, act_fn)


def sort_by_expert(indices: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """indices (N, K) -> for the S = N*K (token, slot) pairs sorted by expert: the token (S,) and the flat slot (S,)
    of each row, and the end row of each expert's group (E,), on the device."""
    K = indices.shape[1]
    flat = indices.reshape(-1)  # (N*K,)
    slot = flat.argsort(stable=True)
    tokens_per_expert = torch.zeros(num_experts, dtype=torch.long, device=flat.device).scatter_add_(
        0, flat, torch.ones_like(flat)
    )
    return slot // K, slot, tokens_per_expert.cumsum(0).to(torch.int32)


def compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the experts compute in: autocast's when it is on (grouped_mm ignores autocast), else the weights'."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


def grouped_mm_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """torch has a grouped GEMM for this device and dtype: CPU in fp32/bf16/fp16, CUDA from sm80 in bf16."""
    if not hasattr(F, "grouped_mm"):
        return False
    if device.type == "cuda":
        return dtype == torch.bfloat16 and torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and dtype in (torch.float32, torch.bfloat16, torch.float16)


def grouped_mm_supported(x: torch.Tensor, w: torch.Tensor) -> bool:
    """`F.grouped_mm` takes these operands: `grouped_mm_runs` for their device and dtype and, on CPU, 16-byte aligned
    data and strides. Traced by torch.compile / torch.export, a tensor has no address yet (its strides decide: the
    allocator aligns fresh tensors and parameters) and torch traces `F.grouped_mm` in bf16 only."""
    if not grouped_mm_runs(x.device, x.dtype):
        return False
    if torch.compiler.is_compiling() and x.dtype != torch.bfloat16:
        return False
    if x.device.type == "cuda":
        return True

    def aligned(t: torch.Tensor) -> bool:
        strides_ok = all(stride * t.element_size() % 16 == 0 for stride in t.stride() if stride != 1)
        return strides_ok and (torch.compiler.is_compiling() or t.data_ptr() % 16 == 0)

    return aligned(x) and aligned(w)


def grouped_mm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Grouped GEMM over groups of rows (offsets[e] = end row of group e), with a per-group fallback.

    a (S, k), b (E, k, n) -> (S, n): each group of rows times its own matrix (an expert's projection);
    a (k, S), b (S, n) -> (E, k, n): each group's product over its own rows (an expert's weight gradient).

    `F.grouped_mm` reads the offsets on the device, so dispatch needs no host synchronisation. Operands it refuses
    (a width that breaks the 16-byte alignment on CPU, float64 under gradcheck, any dtype but bf16 when traced) take
    `per_group_mm`.
    """
    if grouped_mm_supported(a, b):
        return F.grouped_mm(a, b, offs=offsets)
    return torch.ops.deepseek_mini.per_group_mm(a, b, offsets)


def per_group_mm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """`grouped_mm` as one matmul per group, after reading the offsets once (a host synchronisation)."""
    bounds = [0, *offsets.tolist()]
    groups = [slice(bounds[e], bounds[e + 1]) for e in range(len(bounds) - 1)]
    if b.dim() == 3:
        return torch.cat([a[rows] @ b[e] for e, rows in enumerate(groups)])
    return torch.stack([a[:, rows] @ b[rows] for rows in groups])


def per_group_mm_shape(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """An empty tensor shaped as `per_group_mm`'s output, (S, n) or (E, k, n): what torch.compile / export trace."""
    if b.dim() == 3:
        return a.new_empty(a.shape[0], b.shape[2])
    return a.new_empty(offsets.shape[0], a.shape[0], b.shape[1])


# torch.compile and torch.export cannot trace the host read of the offsets; as a custom op the per-group loop is one
# opaque node whose output `per_group_mm_shape` describes. Every copy of this file (the package's, a checkpoint's)
# defines the same op: the first one imported registers it.
if not hasattr(torch.ops.deepseek_mini, "per_group_mm"):
    torch.library.custom_op("deepseek_mini::per_group_mm", per_group_mm, mutates_args=())
    torch.library.register_fake("deepseek_mini::per_group_mm", per_group_mm_shape)


def gated(act_fn, gate_up: torch.Tensor) -> torch.Tensor:
    """act(gate) * up from a stacked gate/up projection (S, 2I), gate first -> (S, I)."""
    gate, up = gate_up.chunk(2, dim=-1)
    return act_fn(gate) * up


class _RoutedExperts(torch.autograd.Function):
    """y_t = sum over token t's chosen experts e of w_te * down_e(act(gate_e(x_t)) * up_e(x_t)), with a lean backward.

    Inputs: x (N, d); weights (N*K,) the flat gating weights; gate_up_proj (E, 2I, d); down_proj (E, d, I); token and
    slot (S,), the token and the flat (token, slot) index of each row once the S = N*K rows are sorted by expert;
    offsets (E,), the end row of each expert; act_fn.

    Autograd on the same forward would keep, per layer, the gathered input (S, d), the gate/up projection (S, 2I),
    act(gate) and the gated product (S, I), and the expert output (S, d) for the gating-weight gradient. Only the
    gate/up projection is kept here: the backward gathers the input again from x (which the gate and the shared
    experts keep anyway), recomputes the activation, and takes the gating-weight gradient <dy, h @ W_down^T> as
    <dy @ W_down, h>, a product it needs anyway, so the expert output is never stored. No GEMM is added.
    """

    @staticmethod
    def forward(ctx, x, weights, gate_up_proj, down_proj, token, slot, offsets, act_fn):
        dtype = compute_dtype(x, gate_up_proj)  # grouped_mm ignores autocast: cast to its dtype here
        w_gate_up, w_down = gate_up_proj.to(dtype), down_proj.to(dtype)
        gate_up = grouped_mm(x[token].to(dtype), w_gate_up.transpose(1, 2), offsets)  # (S, 2I)
        out = grouped_mm(gated(act_fn, gate_up), w_down.transpose(1, 2), offsets)  # (S, d)
        out = out * weights[slot, None].to(dtype)
        ctx.save_for_backward(x, weights, gate_up_proj, down_proj, token, slot, offsets, gate_up)
        ctx.act_fn = act_fn
        return torch.zeros_like(x).index_add_(0, token, out.to(x.dtype))  # (N, d)

    @staticmethod
    def backward(ctx, dy):
        x, weights, gate_up_proj, down_proj, token, slot, offsets, gate_up = ctx.saved_tensors
        needs_x, needs_weights, needs_gate_up, needs_down = ctx.needs_input_grad[:4]
        dtype = gate_up.dtype
        with torch.enable_grad():
            gate_up = gate_up.detach().requires_grad_()
            h = gated(ctx.act_fn, gate_up)  # (S, I), recomputed
        dy = dy[token].to(dtype)  # (S, d): each row's output gradient, before its gating weight
        dh = grouped_mm(dy, down_proj.to(dtype), offsets)  # (S, I): dy_s @ W_down[e]
        w = weights[slot, None].to(dtype)  # (S, 1)
        d_weights = d_gate_up_proj = d_down_proj = dx = None
        if needs_weights:  # dL/dw_s = <dy_s, h_s @ W_down[e]^T> = <dy_s @ W_down[e], h_s>
            d_weights = torch.empty_like(weights).index_copy_(0, slot, (dh * h.detach()).sum(-1).to(weights.dtype))
        if needs_down:
            d_down_proj = grouped_mm((dy * w).t(), h.detach(), offsets).to(down_proj.dtype)  # (E, d, I)
        (d_gate_up,) = torch.autograd.grad(h, gate_up, dh * w)  # (S, 2I)
        if needs_gate_up:
            d_gate_up_proj = grouped_mm(d_gate_up.t(), x[token].to(dtype), offsets).to(gate_up_proj.dtype)
        if needs_x:
            dx_rows = grouped_mm(d_gate_up, gate_up_proj.to(dtype), offsets)  # (S, d)
            dx = torch.zeros_like(x).index_add_(0, token, dx_rows.to(x.dtype))
        return dx, d_weights, d_gate_up_proj, d_down_proj, None, None, None, None
