"""facetrust.models.conv.Conv2d: nn.Conv2d's forward and input gradient bit for bit, the weight
gradient of the smallest output maps as one matrix product (nn.Conv2d's up to float32 rounding)."""

import copy

import pytest
import torch
import torch.nn as nn

from facetrust.models import build_backbone
from facetrust.models.conv import MAX_OUTPUT_PIXELS, Conv2d, output_pixels, plain_convs, weight_gradient


def _pair(in_channels, out_channels, kernel, stride, channels_last, seed=0):
    torch.manual_seed(seed)
    reference = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False)
    ours = Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False)
    ours.load_state_dict(reference.state_dict())
    if channels_last:
        reference, ours = (m.to(memory_format=torch.channels_last) for m in (reference, ours))
    return reference, ours


def _run(module, x, grad):
    x = x.detach().clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    y = module(x)
    y.backward(grad)
    return y.detach(), x.grad, module.weight.grad


# (in, out, kernel, stride, input side): the last stage of a 32x32 iResNet (2x2 outputs), a
# stride-2 shortcut onto 2x2, a 1x1 output, odd sizes
SMALL = [(128, 128, 3, 1, 2), (128, 128, 3, 2, 4), (64, 128, 1, 2, 4), (8, 4, 3, 1, 1), (3, 5, 3, 2, 3),
         (7, 6, 3, 1, 2)]


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("in_channels, out_channels, kernel, stride, side", SMALL)
def test_small_maps_same_forward_and_input_gradient_close_weight_gradient(in_channels, out_channels, kernel, stride,
                                                                         side, channels_last):
    reference, ours = _pair(in_channels, out_channels, kernel, stride, channels_last)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(16, in_channels, side, side, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert output_pixels(ours, side, side) <= MAX_OUTPUT_PIXELS
    with torch.no_grad():
        out_shape = reference(x).shape
    grad = torch.randn(out_shape, generator=generator)
    if channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)
    y_ref, gx_ref, gw_ref = _run(reference, x, grad)
    y, gx, gw = _run(ours, x, grad)
    assert torch.equal(y, y_ref)
    if kernel == 1 and stride > 1:  # the shortcut's input gradient: its values (the bits: below)
        torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-5 * gx_ref.abs().max().item())
    else:
        assert torch.equal(gx, gx_ref)
    for layout in (torch.contiguous_format, torch.channels_last):  # the weight's layout (AccumulateGrad keeps it)
        assert gw.is_contiguous(memory_format=layout) == ours.weight.is_contiguous(memory_format=layout)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-5, atol=1e-5 * gw_ref.abs().max().item())
    # the product itself, against the definition in float64
    exact = torch.nn.grad.conv2d_weight(x.double(), ours.weight.shape, grad.double(), stride, kernel // 2)
    torch.testing.assert_close(gw.double(), exact, rtol=1e-5, atol=1e-5 * exact.abs().max().item())


def test_weight_gradient_changes_with_the_input():
    """Not a constant: a different input or output gradient gives a different weight gradient."""
    x = torch.randn(4, 8, 2, 2).contiguous(memory_format=torch.channels_last)
    g = torch.randn(4, 6, 2, 2).contiguous(memory_format=torch.channels_last)
    first = weight_gradient(g, x, (3, 3), (1, 1), (1, 1))
    assert not torch.equal(first, weight_gradient(g, x * 2, (3, 3), (1, 1), (1, 1)))
    torch.testing.assert_close(weight_gradient(g * 3, x, (3, 3), (1, 1), (1, 1)), first * 3)


def test_larger_maps_are_nn_conv2d_bit_for_bit():
    reference, ours = _pair(16, 16, 3, 1, True)
    x = torch.randn(8, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(8, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    assert output_pixels(ours, 8, 8) > MAX_OUTPUT_PIXELS
    for got, want in zip(_run(ours, x, grad), _run(reference, x, grad)):
        assert torch.equal(got, want)


def test_same_bytes_every_run():
    _, ours = _pair(128, 128, 3, 1, True)
    x = torch.randn(32, 128, 2, 2).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(32, 128, 2, 2).contiguous(memory_format=torch.channels_last)
    first = _run(ours, x, grad)[2].clone()
    for _ in range(3):
        assert torch.equal(_run(ours, x, grad)[2], first)


def test_only_the_gradients_asked_for_and_second_derivatives():
    reference, ours = _pair(8, 8, 3, 1, False)
    x = torch.randn(4, 8, 2, 2, requires_grad=True)
    # the input alone: no weight gradient is made
    ours.weight.requires_grad_(False)
    (gx,) = torch.autograd.grad(ours(x).square().sum(), x)
    (gx_ref,) = torch.autograd.grad(reference(x).square().sum(), x)
    assert torch.equal(gx, gx_ref) and ours.weight.grad is None
    # a graph of the backward (create_graph): the gradient of a gradient norm, as nn.Conv2d's
    ours.weight.requires_grad_(True)
    values = []
    for module in (ours, reference):
        gw, = torch.autograd.grad(module(x).square().sum(), module.weight, create_graph=True)
        second, = torch.autograd.grad(gw.square().sum(), x)
        values.append(second)
    torch.testing.assert_close(values[0], values[1], rtol=1e-4, atol=1e-5)


def test_plain_conv2d_where_no_gradient_traced_or_not_float32():
    _, ours = _pair(8, 8, 3, 1, False)
    x = torch.randn(2, 8, 2, 2)
    with torch.no_grad():
        assert ours(x).grad_fn is None
    assert type(ours(x).grad_fn).__name__ == "_Conv2dFunctionBackward"  # ours on the small map
    assert type(ours.double()(x.double()).grad_fn).__name__ == "ConvolutionBackward0"
    traced = torch.jit.trace(ours.float(), x)
    assert "aten::_convolution" in str(traced.graph) and "PythonOp" not in str(traced.graph)
    biased = Conv2d(8, 8, 3, padding=1, bias=True)
    assert type(biased(x).grad_fn).__name__ == "ConvolutionBackward0"


def test_state_dict_is_nn_conv2d_and_plain_convs_swaps_back():
    backbone = build_backbone("iresnet", embedding_size=16, layers=[1, 1, 1, 1], width=8, input_size=(32, 32))
    names = {name for name, m in backbone.named_modules() if isinstance(m, Conv2d)}
    assert names  # the iResNet's convolutions are ours
    state = copy.deepcopy(backbone.state_dict())
    x = torch.randn(2, 3, 32, 32)
    before = backbone.eval()(x)
    plain_convs(backbone.to(memory_format=torch.channels_last))
    after = dict(backbone.named_modules())
    assert all(type(after[name]) is nn.Conv2d for name in names)
    assert all(not after[name].weight.is_contiguous() for name in names if after[name].kernel_size != (1, 1))
    assert backbone.state_dict().keys() == state.keys()
    torch.testing.assert_close(backbone(x), before)


def test_iresnet_training_step_close_to_plain_convolutions():
    """Three SGD steps of a 32x32 iResNet (its last stage on 2x2 maps) with our convolutions and
    with nn.Conv2d: the same weights up to float32 rounding."""
    torch.manual_seed(0)
    ours = build_backbone("iresnet", embedding_size=16, layers=[1, 1, 1, 1], width=8, input_size=(32, 32))
    plain = plain_convs(copy.deepcopy(ours))
    x = torch.randn(16, 3, 32, 32)
    taken = []
    for module in ours.modules():
        if isinstance(module, Conv2d):
            module.register_forward_hook(lambda m, i, o: taken.append(type(o.grad_fn).__name__))
    results = []
    for model in (ours, plain):
        model.train().to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            optimizer.zero_grad()
            model(x.contiguous(memory_format=torch.channels_last)).square().mean().backward()
            optimizer.step()
        results.append(model.state_dict())
    for key, value in results[0].items():
        torch.testing.assert_close(value, results[1][key], rtol=1e-4, atol=1e-5)
    # ours: the last stage's stride-2 3x3 (a 2x2 output) and the four stride-2 shortcuts, each of the
    # three steps; oneDNN's own backward for the other eight (the stem, 3x3s on larger maps)
    assert taken.count("_Conv2dFunctionBackward") == 5 * 3 and taken.count("ConvolutionBackward0") == 8 * 3


@pytest.mark.parametrize("in_channels, out_channels, side, channels_last, same_bits", [
    (16, 16, 32, True, True), (16, 32, 16, True, True), (32, 64, 8, True, True),  # the 32x32 iResNets' shortcuts
    (16, 16, 48, True, True), (16, 32, 24, True, True), (32, 64, 12, True, True),  # cosface48's (48x48)
    (16, 32, 9, True, False), (16, 16, 32, False, False), (8, 16, 7, False, False)])
def test_strided_1x1_gradients(in_channels, out_channels, side, channels_last, same_bits):
    """The shortcut's input gradient written as a 1x1 product at the kept pixels: oneDNN's bits on the
    params.yaml models' (channels-last, even) maps, its values elsewhere; the weight gradient (maps
    over 4 pixels) oneDNN's own call, bit for bit."""
    reference, ours = _pair(in_channels, out_channels, 1, 2, channels_last)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(8, in_channels, side, side, generator=generator)
    out = (side + 1) // 2
    grad = torch.randn(8, out_channels, out, out, generator=generator)
    if channels_last:
        x, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad))
    assert out * out > MAX_OUTPUT_PIXELS
    (y, gx, gw), (y_ref, gx_ref, gw_ref) = _run(ours, x, grad), _run(reference, x, grad)
    assert torch.equal(y, y_ref) and torch.equal(gw, gw_ref) and gx.stride() == gx_ref.stride()
    if same_bits:
        assert torch.equal(gx, gx_ref)
    else:
        torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-5 * gx_ref.abs().max().item())
    y = ours(x.detach().clone().requires_grad_())
    assert type(y.grad_fn).__name__ == "_Conv2dFunctionBackward"
