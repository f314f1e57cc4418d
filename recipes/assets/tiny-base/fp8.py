"""FP8 training as DeepSeek-V3 does it (V3 report, section 3.3), for DeepseekMini and for any model made of nn.Linear.

Only the inputs of the GEMMs are FP8 (E4M3); the parameters stay what they are (fp32 master weights, or bf16), the bias
is added in high precision, and whatever is not a GEMM of a linear layer is untouched.

The maths. A tensor is cut into groups; group g gets one scale s_g = max(amax_g, 1e-12) / 448 (448: E4M3's largest
value), computed from the tensor at hand (online, no amax history), and its values become q = round_E4M3(x / s_g). A
GEMM multiplies the q's and multiplies each partial sum by the scales of the two groups it came from. Groups:
- recipe "blockwise" (V3): activations and activation gradients in 1x128 tiles (one row, 128 consecutive entries along
  the GEMM's contraction dim), weights in 128x128 blocks;
- recipe "tensorwise" (the usual per-tensor FP8, the contrast): one scale per tensor, so one outlier sets the scale of
  every value.

The three GEMMs of a linear layer y = x W^T, x (M, K) tokens by input channels, W (N, K), dy (M, N):
    forward  y  = x W^T      x in 1x128 tiles along K      W in 128x128 blocks
    dgrad    dx = dy W       dy in 1x128 tiles along N     W in 128x128 blocks (the same blocks, transposed)
    wgrad    dW = dy^T x     dy and x in 128x1 tiles (along M, the tokens), as V3 re-tiles them for this GEMM
Every group lies along the contraction dim, so each scale factors out of a 128-long partial sum: V3's kernel multiplies
the scales in when it promotes a partial sum from the tensor cores to fp32 registers every N_C = 128 elements.

Simulation (CPU, and GPUs without a usable FP8 GEMM): quantise to torch.float8_e4m3fn, dequantise (multiply back by
the scales), matmul in fp32. The products are exactly those of an FP8 GEMM; the accumulation is plain fp32 throughout,
so the promotion interval is moot here (the limited-precision tensor-core accumulation within a 128-element chunk is
not simulated). Nothing is cached in FP8: the backward re-quantises the saved high-precision input.

Shapes that 128 does not divide (a tiny model's width of 64): the last tile or block is zero-padded. Zeros change no
amax and add nothing to a product, so the last group is simply shorter, with its own scale.

Real FP8 GEMMs (`fp8_gemm_runs`): "tensorwise" through `torch._scaled_mm` on CUDA sm89+; "blockwise" through
`F.scaled_mm` with 1x128 / 128x128 scales, which torch implements on sm90 with CUDA >= 12.9. They are used when every
dim is a multiple of 128 (blockwise) or 16 (tensorwise), after a one-time check against the simulation per device and
recipe; elsewhere the GEMM is simulated, with a one-time warning on CUDA.
"""

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448
TILE = 128  # V3: 1x128 activation tiles, 128x128 weight blocks, promotion to fp32 every 128 elements of K
# A group's amax is floored here before it becomes a scale. Without a floor a group of tiny subnormals (a gradient tile
# of 1e-45, met in training) gets amax / 448 = 0 and 0 / 0 = NaN; with it, groups below the floor (zeros included)
# quantise against the floor, so values under ~1e-15 flush to zero. torchao's blockwise FP8 floors at 1e-12 too.
AMAX_FLOOR = 1e-12
FP8_RECIPES = ("blockwise", "tensorwise")
GROUP_SHAPES = {"tile": (1, TILE), "block": (TILE, TILE)}  # "tensor": the whole (R, C)


def check_fp8_recipe(recipe: str) -> str:
    if recipe not in FP8_RECIPES:
        raise ValueError(
            f"FP8 recipe {recipe!r} is not supported: use 'blockwise' (DeepSeek-V3: 1x128 activation tiles, 128x128 "
            "weight blocks) or 'tensorwise' (one scale per tensor)."
        )
    return recipe


# ---------------------------------------------------------------------------------------------------------------------
# Quantisation


def quantize(x: torch.Tensor, group: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x (R, C) -> E4M3 values q (R'/r, r, C'/c, c) and fp32 scales s (R'/r, 1, C'/c, 1), x ~ q * s in every (r, c)
    group: "tile" (1, 128), "block" (128, 128) or "tensor" (R, C). R', C': R, C zero-padded to multiples of r, c."""
    R, C = x.shape
    r, c = (R, C) if group == "tensor" else GROUP_SHAPES[group]
    x = F.pad(x.float(), (0, -C % c, 0, -R % r))
    groups = x.reshape(x.shape[0] // r, r, x.shape[1] // c, c)
    amax = groups.abs().amax(dim=(1, 3), keepdim=True).clamp(min=AMAX_FLOOR)
    scale = amax / E4M3_MAX
    return (groups / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """q * s per group, back to the unpadded (R, C), in fp32."""
    R, C = shape
    padded = q.float() * scale  # (R'/r, r, C'/c, c)
    return padded.reshape(padded.shape[0] * padded.shape[1], -1)[:R, :C]


def fake_quantize(x: torch.Tensor, group: str) -> torch.Tensor:
    """x (R, C) as an FP8 GEMM sees it: quantised per group and multiplied back by the scales, fp32."""
    return dequantize(*quantize(x, group), x.shape)


# ---------------------------------------------------------------------------------------------------------------------
# The GEMM: real where torch has one for the device, simulated elsewhere


def fp8_mm(a: torch.Tensor, b: torch.Tensor, recipe: str, b_group: str = "block") -> torch.Tensor:
    """a (M, K) @ b (N, K)^T -> (M, N) fp32, both operands in FP8: a in 1x128 tiles along K, b in 128x128 blocks
    (a weight) or, with b_group="tile", in 1x128 tiles along K (an activation); one scale each under tensorwise."""
    groups = ("tensor", "tensor") if recipe == "tensorwise" else ("tile", b_group)
    with torch.autocast(a.device.type, enabled=False):  # fp32 accumulation, also under autocast
        if real_fp8_gemm_applies(a, b, recipe):
            return scaled_mm(a, b, recipe, groups).float()
        return fake_quantize(a, groups[0]) @ fake_quantize(b, groups[1]).T


def fp8_gemm_runs(device: torch.device, recipe: str) -> bool:
    """torch has a real FP8 GEMM for this device and recipe: tensorwise `torch._scaled_mm` on CUDA sm89+; blockwise
    `F.scaled_mm` (torch >= 2.10) on sm90 with CUDA >= 12.9, where torch implements 1x128 and 128x128 scales."""
    if device.type != "cuda" or torch.version.hip is not None:
        return False
    capability = torch.cuda.get_device_capability(device)
    if recipe == "tensorwise":
        return capability >= (8, 9) and hasattr(torch, "_scaled_mm")
    cuda = tuple(int(part) for part in (torch.version.cuda or "0.0").split(".")[:2])
    return capability[0] == 9 and cuda >= (12, 9) and hasattr(F, "scaled_mm")


def real_fp8_gemm_applies(a: torch.Tensor, b: torch.Tensor, recipe: str) -> bool:
    """Use the real GEMM: the device runs it, every dim is a multiple of what the kernel takes (no padding needed),
    and it matched the simulation once. On CUDA without a real GEMM, warn once that the GEMMs are simulated."""
    if a.device.type != "cuda":
        return False
    if not fp8_gemm_runs(a.device, recipe):
        warn_once(f"FP8 {recipe}: no FP8 GEMM for this GPU and torch build; the GEMMs are simulated in fp32.")
        return False
    multiple = TILE if recipe == "blockwise" else 16
    if any(n % multiple for n in (*a.shape, b.shape[0])):
        return False
    return real_fp8_gemm_matches_simulation(a.device, recipe)


def scaled_mm(a: torch.Tensor, b: torch.Tensor, recipe: str, groups: tuple[str, str]) -> torch.Tensor:
    """a (M, K) @ b (N, K)^T on the FP8 tensor cores (bf16 out); dims multiples of 128 (blockwise) or 16. The scale
    layouts are those torch's own tests pass: 1x128 scales outer-dim-major, 128x128 scales padded to 4 columns."""
    (qa, sa), (qb, sb) = quantize(a, groups[0]), quantize(b, groups[1])
    qa, qb = qa.reshape(a.shape), qb.reshape(b.shape)
    if recipe == "tensorwise":
        return torch._scaled_mm(qa, qb.T, scale_a=sa.reshape(()), scale_b=sb.reshape(()), out_dtype=torch.bfloat16)

    def layout(scale: torch.Tensor, group: str) -> torch.Tensor:
        scale = scale[:, 0, :, 0]  # (rows / r, K / 128)
        if group == "tile":
            return scale.T.contiguous().T
        return F.pad(scale, (0, -scale.shape[1] % 4)).T

    recipes = {"tile": F.ScalingType.BlockWise1x128, "block": F.ScalingType.BlockWise128x128}
    return F.scaled_mm(
        qa, qb.T, layout(sa, groups[0]), recipes[groups[0]], layout(sb, groups[1]), recipes[groups[1]]
    )  # fmt: skip


@functools.cache
def real_fp8_gemm_matches_simulation(device: torch.device, recipe: str) -> bool:
    """Once per device and recipe: the real GEMM agrees with the simulation on a random problem (bf16 output, so 1%
    in norm), or it is not used: a warning says so and the GEMMs are simulated."""
    generator = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(256, 384, device=device, generator=generator) for _ in range(2))
    groups = ("tensor", "tensor") if recipe == "tensorwise" else ("tile", "block")
    simulated = fake_quantize(a, groups[0]) @ fake_quantize(b, groups[1]).T
    try:
        error = (scaled_mm(a, b, recipe, groups).float() - simulated).norm() / simulated.norm()
    except RuntimeError as failure:
        warn_once(f"FP8 {recipe}: the FP8 GEMM failed ({failure}); the GEMMs are simulated in fp32.")
        return False
    if error > 1e-2:
        warn_once(f"FP8 {recipe}: the FP8 GEMM is off the simulation by {error:.2%}; the GEMMs are simulated in fp32.")
        return False
    return True


@functools.cache
def warn_once(message: str) -> None:
    warnings.warn(message, stacklevel=3)


# ---------------------------------------------------------------------------------------------------------------------
# Linear layers


class _Fp8Matmul(torch.autograd.Function):
    """x (M, K) @ weight (N, K)^T with the forward, dgrad and wgrad GEMMs in FP8 (the table in the module docstring).
    Output and gradients in the dtypes of x and weight."""

    @staticmethod
    def forward(ctx, x, weight, recipe):
        ctx.save_for_backward(x, weight)
        ctx.recipe = recipe
        return fp8_mm(x, weight, recipe).to(x.dtype)  # y = x W^T

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dx = d_weight = None
        if ctx.needs_input_grad[0]:
            dx = fp8_mm(dy, weight.T, ctx.recipe).to(x.dtype)  # dx = dy W: dy tiled along N, W's blocks
        if ctx.needs_input_grad[1]:
            d_weight = fp8_mm(dy.T, x.T, ctx.recipe, b_group="tile").to(weight.dtype)  # dW = dy^T x: tiles along M
        return dx, d_weight, None


def fp8_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, recipe: str = "blockwise"
) -> torch.Tensor:
    """F.linear with its GEMMs in FP8: x (..., K), weight (N, K), bias (N,) added in high precision -> (..., N)."""
    y = _Fp8Matmul.apply(x.reshape(-1, x.shape[-1]), weight, recipe).view(*x.shape[:-1], weight.shape[0])
    return y if bias is None else y + bias


class Fp8Linear(nn.Linear):
    """nn.Linear whose GEMMs run in FP8 (`fp8_linear`). Same parameters, so the same state_dict and checkpoints."""

    def __init__(self, in_features, out_features, bias=True, recipe="blockwise", device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.recipe = check_fp8_recipe(recipe)

    @classmethod
    def from_linear(cls, linear: nn.Linear, recipe: str) -> "Fp8Linear":
        """An Fp8Linear holding `linear`'s own weight and bias (the same Parameter objects, nothing copied)."""
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, recipe, device="meta")
        new.weight, new.bias = linear.weight, linear.bias
        return new.train(linear.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_linear(x, self.weight, self.bias, self.recipe)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, recipe={self.recipe!r}"


def convert_to_fp8(model: nn.Module, recipe: str = "blockwise", skip: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """Swap every nn.Linear of `model` for an Fp8Linear holding the same parameters, in place; returns `model`.

    `skip` names modules kept in high precision: a module is skipped when its qualified name (as in `named_modules`)
    or its last part is in `skip`, or it lies inside a skipped module. The default keeps the output head, as V3 does;
    name your model's head if it is called otherwise. Convert before wrapping the model (DDP, PEFT, hooks): the swap
    replaces modules, so hooks registered on the old ones do not carry over.
    """
    check_fp8_recipe(recipe)
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, nn.Linear) and not isinstance(child, Fp8Linear) and not skipped(name, skip):
                setattr(parent, child_name, Fp8Linear.from_linear(child, recipe))
    return model


def skipped(name: str, skip: tuple[str, ...]) -> bool:
    """`name` is in `skip`, ends with a name in it, or lies inside a module named in it."""
    return any(name == s or name.split(".")[-1] == s or name.startswith(f"{s}.") for s in skip)
