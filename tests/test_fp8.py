"""FP8 training (modeling_deepseek_mini/fp8.py): E4M3 rounding bounds per tile and block, blockwise against tensorwise
scaling on an outlier, the three GEMMs of Fp8Linear, `convert_to_fp8`, DeepseekMini with `fp8_recipe`, and the
choice between real and simulated FP8 GEMMs."""

import pytest
import torch
from torch import nn

import modeling_deepseek_mini.fp8 as fp8
from modeling_deepseek_mini import DeepseekMiniForCausalLM
from modeling_deepseek_mini.fp8 import E4M3_MAX, Fp8Linear, convert_to_fp8, fake_quantize, quantize

# E4M3 has 3 mantissa bits: a normal value rounds to within half a unit in the last place, 2^-4 of itself. Below the
# smallest normal (2^-6, in units of the scale) the spacing is the subnormal step 2^-9: the error is within 2^-10 * s.
NORMAL_RELATIVE_ERROR = 2.0**-4
SUBNORMAL_ERROR = 2.0**-10


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("group, shape", [("tile", (5, 300)), ("block", (300, 200)), ("tensor", (7, 50))])
def test_round_trip_error_is_within_e4m3_rounding_of_each_group(group, shape):
    """Every value comes back within 2^-4 of itself (or 2^-10 of its group's scale, for the tiny ones), so within
    2^-4 of its group's amax; each group's amax comes back exactly. Shapes 128 does not divide pad the last group."""
    torch.manual_seed(0)
    x = torch.randn(shape) * torch.exp(3 * torch.randn(shape))  # magnitudes over several decades
    q, scale = quantize(x, group)
    assert q.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
    r, c = shape if group == "tensor" else fp8.GROUP_SHAPES[group]
    assert scale.shape == (-(-shape[0] // r), 1, -(-shape[1] // c), 1)
    per_value_scale = scale.expand(-1, r, -1, c).reshape(scale.shape[0] * r, -1)[: shape[0], : shape[1]]
    error = (fake_quantize(x, group) - x).abs()
    bound = torch.maximum(NORMAL_RELATIVE_ERROR * x.abs(), SUBNORMAL_ERROR * per_value_scale)
    assert (error <= bound * (1 + 1e-6)).all()
    assert (error <= NORMAL_RELATIVE_ERROR * E4M3_MAX * per_value_scale * (1 + 1e-6)).all()  # 2^-4 of the amax
    amax = (x.abs() == per_value_scale * E4M3_MAX).nonzero()
    assert len(amax) > 0 and error[amax[:, 0], amax[:, 1]].max() <= 1e-6 * x.abs().max()


@pytest.mark.parametrize("group", ["tile", "block", "tensor"])
def test_groups_of_subnormals_and_zeros_quantise_finite(group):
    """A group whose amax is a float32 subnormal (1e-45: a dying unit's gradient tile, met in FP8 training under an
    outlier) once got the scale amax / 448 = 0 and came back NaN (0 / 0), poisoning the GEMM it fed. Its values now
    flush to zero and zeros stay zeros, also when the whole tensor is such a group; a GEMM with such a tile next to
    ordinary values stays finite and close to fp32."""
    tiny = torch.zeros(256, 256)
    tiny[3, :3] = torch.tensor([1.4e-45, -1.4e-45, 3e-44])
    q, scale = quantize(tiny, group)
    assert (scale > 0).all() and torch.isfinite(q.float()).all()
    assert (fake_quantize(tiny, group) == 0).all()

    torch.manual_seed(0)
    x, w = tiny.clone(), torch.randn(64, 256)
    x[200:] = torch.randn(56, 256)
    product = fp8.fp8_mm(x, w, "tensorwise" if group == "tensor" else "blockwise")
    assert torch.isfinite(product).all() and relative_error(product, x @ w.T) < 0.05


def test_blockwise_scaling_keeps_precision_that_an_outlier_channel_takes_from_tensorwise():
    """One input channel 10^5 times larger than the rest. One scale per tensor pushes every other value into E4M3's
    subnormals; 1x128 tiles confine the damage to the tiles holding that channel, the other channels keep 2^-5."""
    torch.manual_seed(0)
    x = torch.randn(256, 512)
    x[:, 7] *= 1e5
    others = torch.arange(512) != 7
    outside_its_tile = slice(fp8.TILE, None)
    tensorwise, blockwise = fake_quantize(x, "tensor"), fake_quantize(x, "tile")
    assert relative_error(blockwise[:, outside_its_tile], x[:, outside_its_tile]) < 0.03
    assert relative_error(tensorwise[:, outside_its_tile], x[:, outside_its_tile]) > 0.3
    assert relative_error(tensorwise[:, others], x[:, others]) > 4 * relative_error(blockwise[:, others], x[:, others])


def test_fp8_linear_runs_all_three_gemms_in_fp8_and_trains_the_master_weights():
    """Forward, dgrad and wgrad are exactly the products of V3's quantised operands (tiles along the contraction dim,
    the weight in 128x128 blocks); all three are close to fp32; gradients land on the fp32 parameters."""
    torch.manual_seed(0)
    linear = nn.Linear(200, 72)
    reference = nn.Linear(200, 72)
    reference.load_state_dict(linear.state_dict())
    fp8_layer = Fp8Linear.from_linear(linear, "blockwise")
    assert fp8_layer.weight is linear.weight and fp8_layer.bias is linear.bias
    x = torch.randn(3, 50, 200, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = fp8_layer(x), reference(x_ref)
    dy = torch.randn_like(y)
    y.backward(dy)
    y_ref.backward(dy)

    X, dY, W = x.detach().reshape(-1, 200), dy.reshape(-1, 72), linear.weight.detach()
    expected_y = fake_quantize(X, "tile") @ fake_quantize(W, "block").T + linear.bias
    torch.testing.assert_close(y.reshape(-1, 72), expected_y, rtol=0, atol=1e-6)
    torch.testing.assert_close(x.grad.reshape(-1, 200), fake_quantize(dY, "tile") @ fake_quantize(W.T, "block").T)
    torch.testing.assert_close(linear.weight.grad, fake_quantize(dY.T, "tile") @ fake_quantize(X.T, "tile").T)

    assert linear.weight.grad.dtype == torch.float32
    for ours, exact in [(y, y_ref), (x.grad, x_ref.grad), (linear.weight.grad, reference.weight.grad)]:
        assert 0 < relative_error(ours, exact) < 0.06
    torch.testing.assert_close(linear.bias.grad, reference.bias.grad)  # the bias stays high precision


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16, bias=False))
        self.norm = nn.LayerNorm(16)
        self.lm_head = nn.Linear(16, 10)

    def forward(self, x):
        return self.lm_head(self.norm(self.body(x)))


def test_convert_to_fp8_swaps_linears_and_keeps_parameters_and_state_dict_keys():
    torch.manual_seed(0)
    model = TwoLayers()
    state = model.state_dict()
    parameters = {name: id(p) for name, p in model.named_parameters()}
    x = torch.randn(4, 16)
    expected = model(x)
    assert convert_to_fp8(model, "tensorwise") is model
    assert [type(m) for m in model.body] == [Fp8Linear, nn.GELU, Fp8Linear] and model.body[0].recipe == "tensorwise"
    assert type(model.lm_head) is nn.Linear  # the head is skipped by default
    assert list(model.state_dict()) == list(state)
    assert {name: id(p) for name, p in model.named_parameters()} == parameters
    assert 0 < relative_error(model(x), expected) < 0.1
    assert type(convert_to_fp8(TwoLayers(), skip=("body",)).body[0]) is nn.Linear  # inside a skipped module
    with pytest.raises(ValueError, match="'e5m2'.*blockwise.*tensorwise"):
        convert_to_fp8(TwoLayers(), "e5m2")


def test_config_refuses_an_unknown_fp8_recipe(tiny_config):
    with pytest.raises(ValueError, match=r"fp8_recipe='per_channel'.*'blockwise'.*'tensorwise'.*None"):
        tiny_config(fp8_recipe="per_channel")


def test_tiny_deepseek_mini_trains_in_fp8_close_to_fp32_and_round_trips(tiny_config, tmp_path):
    """FP8 on the linear layers of MLA, the dense MLP, the shared and routed experts and MTP's projection; embedding,
    head, norms and gate untouched. Same init and data: the loss after a few AdamW steps stays within 2% of fp32's.
    The state_dict keys and the checkpoint are those of the fp32 model."""
    torch.manual_seed(0)
    models = {recipe: DeepseekMiniForCausalLM(tiny_config(fp8_recipe=recipe)) for recipe in (None, "blockwise")}
    models["blockwise"].load_state_dict(models[None].state_dict())
    fp8_model = models["blockwise"]
    assert list(fp8_model.state_dict()) == list(models[None].state_dict())
    converted = {name for name, m in fp8_model.named_modules() if isinstance(m, Fp8Linear)}
    plain = {name for name, m in models[None].named_modules() if isinstance(m, nn.Linear)}
    assert converted == plain - {"lm_head"}
    assert "model.layers.2.eh_proj" in converted and "model.layers.1.mlp.shared_experts.down_proj" in converted
    assert all(moe.experts.fp8_recipe == "blockwise" for moe in fp8_model.moe_layers())
    assert type(fp8_model.model.layers[1].mlp.gate).__name__ == "DeepseekMiniGate"

    batches = torch.randint(0, 512, (6, 4, 24), generator=torch.Generator().manual_seed(1))
    losses = {}
    for recipe, model in models.items():
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for ids in batches:
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            model.update_expert_bias()
        losses[recipe] = loss.item()
    assert abs(losses["blockwise"] - losses[None]) < 0.02 * losses[None]

    fp8_model.save_pretrained(tmp_path)
    loaded = DeepseekMiniForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.fp8_recipe == "blockwise" and isinstance(loaded.model.layers[0].mlp.down_proj, Fp8Linear)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=batches[0]).logits, fp8_model.eval()(input_ids=batches[0]).logits)


def test_real_fp8_gemms_are_chosen_by_device_capability_and_never_on_cpu(monkeypatch):
    """Tensorwise `torch._scaled_mm` from sm89; blockwise `F.scaled_mm` on sm90 with CUDA >= 12.9; CPU simulates."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.version, "hip", None)
    for capability, version, expected in [
        ((9, 0), "12.9", {"tensorwise": True, "blockwise": hasattr(torch.nn.functional, "scaled_mm")}),
        ((9, 0), "12.4", {"tensorwise": True, "blockwise": False}),
        ((8, 9), "12.9", {"tensorwise": True, "blockwise": False}),
        ((8, 0), "12.9", {"tensorwise": False, "blockwise": False}),
    ]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        monkeypatch.setattr(torch.version, "cuda", version)
        assert {recipe: fp8.fp8_gemm_runs(cuda, recipe) for recipe in expected} == expected, capability
    assert not fp8.fp8_gemm_runs(torch.device("cpu"), "tensorwise")

    def no_real_gemm(*args):
        raise AssertionError("the real FP8 GEMM ran on CPU")

    monkeypatch.setattr(fp8, "scaled_mm", no_real_gemm)
    a, b = torch.randn(128, 128), torch.randn(128, 128)
    torch.testing.assert_close(fp8.fp8_mm(a, b, "blockwise"), fake_quantize(a, "tile") @ fake_quantize(b, "block").T)
