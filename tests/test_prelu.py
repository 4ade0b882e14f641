"""facetrust.models.prelu.PReLU: nn.PReLU's values and gradients, bit for bit, from vectorised kernels."""

import copy
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from facetrust.models import build_backbone
from facetrust.models.prelu import PReLU, plain_prelus


def _gradients(module, x, grad):
    x = x.detach().clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    y = module(x)
    y.backward(grad)
    return y.detach(), x.grad, module.weight.grad


def _inputs(shape, channels_last, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator)
    x[..., :2] = 0.0  # exact zeros: the side of the kink both must take (x > 0 is the linear part)
    x.view(-1)[::7] = -0.0
    grad = torch.randn(shape, generator=generator)
    grad.view(-1)[::5] = 0.0
    if channels_last:
        x, grad = x.contiguous(memory_format=torch.channels_last), grad.contiguous(memory_format=torch.channels_last)
    return x, grad


LAYOUTS = [((8, 16, 9, 7), False), ((8, 16, 9, 7), True), ((64, 32, 4, 4), False), ((64, 32, 4, 4), True),
           ((5, 12), False), ((3, 6, 11), False)]  # channels-last is a 4-D layout


@pytest.mark.parametrize("shape, channels_last", LAYOUTS)
@pytest.mark.parametrize("slopes", ["per_channel", "single"])
def test_same_bits_as_nn_prelu(shape, channels_last, slopes):
    channels = shape[1] if slopes == "per_channel" else 1
    reference = nn.PReLU(channels)
    with torch.no_grad():
        reference.weight.copy_(torch.linspace(-0.3, 0.7, channels))
    ours = PReLU(channels)
    ours.load_state_dict(reference.state_dict())
    x, grad = _inputs(shape, channels_last)
    y_ref, gx_ref, gw_ref = _gradients(reference, x, grad)
    y, gx, gw = _gradients(ours, x, grad)
    assert torch.equal(y, y_ref)
    # equal values, and equal bits but for the sign of a zero (-0.0 + 0.0 is +0.0; module docstring)
    assert torch.equal(gx, gx_ref)
    assert torch.equal(gx.view(torch.int32)[gx != 0], gx_ref.view(torch.int32)[gx_ref != 0])
    assert gw.shape == gw_ref.shape
    assert torch.equal(gw.view(torch.int32), gw_ref.view(torch.int32))
    assert gx.stride() == gx_ref.stride()


def test_only_the_gradients_asked_for():
    module = PReLU(4)
    module.weight.requires_grad_(False)
    x, grad = _inputs((2, 4, 5, 5), False)
    x.requires_grad_()
    (module(x) * grad).sum().backward()
    assert module.weight.grad is None
    expected = torch.where(x.detach() > 0, grad, grad * 0.25)
    assert torch.equal(x.grad, expected)


def test_second_derivative_matches():
    """The backward is made of differentiable ops: a gradient penalty (create_graph) works and
    equals nn.PReLU's."""
    torch.manual_seed(0)
    results = []
    for cls in (nn.PReLU, PReLU):
        torch.manual_seed(0)
        module = cls(3)
        conv = nn.Conv2d(3, 3, 3, padding=1)
        x = torch.randn(2, 3, 6, 6, requires_grad=True)
        (gx,) = torch.autograd.grad(module(conv(x)).square().sum(), x, create_graph=True)
        gx.square().sum().backward()
        results.append((gx.detach(), conv.weight.grad.clone(), module.weight.grad.clone()))
    for ours, reference in zip(results[1], results[0]):
        torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)


def test_plain_prelu_where_no_gradient_or_traced():
    module = PReLU(4)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        assert module(x.requires_grad_()).grad_fn is None
    y = module(torch.randn(2, 4, 3, 3, requires_grad=True))
    assert type(y.grad_fn).__name__ == "_PReLUFunctionBackward"
    module.eval()
    traced = torch.jit.trace(module, torch.randn(2, 4, 3, 3))
    assert "prelu" in str(traced.graph)
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.randn(2, 4, 3, 3, requires_grad=True),), buffer, dynamo=False)
    assert b"PRelu" in buffer.getvalue()


BACKBONES = {  # the embedded default's PReLU backbones, small; trained channels-last as the trainer does
    "iresnet": dict(input_size=(16, 16), layers=[1, 1, 1, 1], width=8),
    "sphere20": dict(input_size=(42, 36), width=4),  # its last PReLU feeds the fc: an NCHW gradient
    "mobilenet_sphereface": dict(input_size=(42, 36), width=8),
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_trains_to_the_same_bits(name):
    """Three SGD steps: the same weights with our PReLU as with nn.PReLU in every place (and the same
    for a whole 6-epoch training of the default model and of every PReLU model of `all`:
    benchmarks/README.md note 16)."""
    options = dict(BACKBONES[name])
    input_size = options.pop("input_size")

    def train(swap_to_nn):
        torch.manual_seed(0)
        backbone = build_backbone(name, embedding_size=16, input_size=input_size, **options)
        if swap_to_nn:
            plain_prelus(backbone)
        assert any(type(m) is (nn.PReLU if swap_to_nn else PReLU) for m in backbone.modules())
        backbone = backbone.to(memory_format=torch.channels_last).train()
        optimizer = torch.optim.SGD(backbone.parameters(), lr=0.1, momentum=0.9)
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            x = torch.randn(16, 3, *input_size, generator=generator).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(backbone(x), torch.arange(16) % 5)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return copy.deepcopy(backbone.state_dict())

    ours, reference = train(False), train(True)
    assert ours.keys() == reference.keys()
    for key in ours:
        assert torch.equal(ours[key], reference[key]), key


@pytest.mark.parametrize("layouts", [("channels_last", "nchw"), ("nchw", "channels_last")])
def test_gradient_in_another_layout_than_the_input(layouts):
    """A channels-last map whose gradient comes back NCHW (after a flatten): the slope's sum must run
    in the input's order, as ATen's does."""
    x, grad = _inputs((16, 8, 7, 5), False, seed=3)
    if layouts[0] == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        grad = grad.contiguous(memory_format=torch.channels_last)
    reference, ours = nn.PReLU(8), PReLU(8)
    _, gx_ref, gw_ref = _gradients(reference, x, grad)
    _, gx, gw = _gradients(ours, x, grad)
    assert torch.equal(gx, gx_ref) and gx.stride() == gx_ref.stride()
    assert torch.equal(gw.view(torch.int32), gw_ref.view(torch.int32))


def test_other_devices_take_plain_prelu():
    """Only the CPU backward is replaced (a GPU's is an ordinary elementwise kernel): a tensor on
    another device, here ``meta``, runs F.prelu."""
    module = PReLU(3).to("meta")
    y = module(torch.empty(2, 3, 4, 4, device="meta", requires_grad=True))
    assert y.grad_fn.name() != "_PReLUFunctionBackward"
    assert PReLU(3)(torch.randn(2, 3, 4, 4, requires_grad=True)).grad_fn.name() == "_PReLUFunctionBackward"


def test_strided_view_takes_plain_prelu():
    base = torch.randn(4, 6, 10, 10, requires_grad=True)
    assert PReLU(6)(base[:, :, ::2]).grad_fn.name() != "_PReLUFunctionBackward"


def test_state_dict_is_nn_prelus():
    module = PReLU(5)
    assert isinstance(module, nn.PReLU)
    assert list(module.state_dict()) == ["weight"]
    nn.PReLU(5).load_state_dict(module.state_dict())


def test_broadcast_gradient_from_a_sum():
    """``y.sum().backward()`` hands the backward an expanded (stride-0) gradient: same values."""
    reference, ours = nn.PReLU(6), PReLU(6)
    x, _ = _inputs((4, 6, 5, 5), True)
    grads = []
    for module in (reference, ours):
        xx = x.detach().clone().requires_grad_()
        module(xx).sum().backward()
        grads.append((xx.grad, module.weight.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])


def test_plain_prelus_gives_the_plain_model():
    torch.manual_seed(0)
    backbone = build_backbone("sphere20", embedding_size=16, input_size=(42, 36), width=4)
    slopes = {name: m.weight.detach().clone() for name, m in backbone.named_modules() if isinstance(m, PReLU)}
    x = torch.randn(2, 3, 42, 36)
    before = backbone(x)
    plain_prelus(backbone)
    after = {name: m for name, m in backbone.named_modules() if isinstance(m, nn.PReLU)}
    assert slopes and after.keys() == slopes.keys()
    assert all(type(m) is nn.PReLU and torch.equal(m.weight, slopes[name]) for name, m in after.items())
    assert torch.equal(backbone(x), before)
