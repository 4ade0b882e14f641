"""facetrust.models.conv.Conv2d: a strided 1x1's input gradient at the kept pixels; nn.Conv2d's
forward, weight gradient and (on the params.yaml iResNets' maps) input gradient, bit for bit."""

import copy

import pytest
import torch
import torch.nn as nn

from facetrust.models import build_backbone
from facetrust.models.conv import Conv2d, plain_convs


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


def _inputs(batch, in_channels, out_channels, side, channels_last, seed=3):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_channels, side, side, generator=generator)
    out = (side + 1) // 2
    grad = torch.randn(batch, out_channels, out, out, generator=generator)
    if channels_last:
        x, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad))
    return x, grad


@pytest.mark.parametrize("in_channels, out_channels, side, channels_last, same_bits", [
    (16, 16, 32, True, True), (16, 32, 16, True, True), (32, 64, 8, True, True), (64, 128, 4, True, True),
    (16, 16, 48, True, True), (16, 32, 24, True, True), (32, 64, 12, True, True),  # cosface48's (48x48)
    (16, 32, 9, True, False), (16, 16, 32, False, False), (8, 16, 7, False, False), (3, 5, 5, True, False)])
def test_strided_1x1_gradients(in_channels, out_channels, side, channels_last, same_bits):
    """The shortcut's input gradient written as a 1x1 product at the kept pixels: oneDNN's bits on the
    params.yaml iResNets' maps (channels-last, even sizes; the 32x32 ones' and cosface48's shortcuts
    above), its values elsewhere; forward and weight gradient oneDNN's own, bit for bit."""
    reference, ours = _pair(in_channels, out_channels, 1, 2, channels_last)
    x, grad = _inputs(8, in_channels, out_channels, side, channels_last)
    (y, gx, gw), (y_ref, gx_ref, gw_ref) = _run(ours, x, grad), _run(reference, x, grad)
    assert torch.equal(y, y_ref) and torch.equal(gw, gw_ref)
    assert gx.stride() == gx_ref.stride() and gw.stride() == gw_ref.stride()
    if same_bits:
        assert torch.equal(gx, gx_ref)
    else:
        torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-5 * gx_ref.abs().max().item())
    # and the gradient itself: zero off the kept pixels, g @ W on them (float64)
    assert gx[:, :, 1::2, :].abs().max() == 0 and gx[:, :, :, 1::2].abs().max() == 0
    exact = torch.einsum("nohw,oc->nchw", grad.double(), ours.weight.double()[:, :, 0, 0])
    torch.testing.assert_close(gx[:, :, ::2, ::2].double(), exact, rtol=1e-5, atol=1e-5)
    assert type(ours(x.detach().clone().requires_grad_()).grad_fn).__name__ == "_StridedPointwiseFunctionBackward"


def test_batch_of_the_trainer_gives_onednn_bits():
    """At the trainer's batch (128) on the default model's largest shortcut map."""
    reference, ours = _pair(16, 16, 1, 2, True)
    x, grad = _inputs(128, 16, 16, 32, True)
    for got, want in zip(_run(ours, x, grad), _run(reference, x, grad)):
        assert torch.equal(got, want)


def test_only_the_gradients_asked_for_and_second_derivatives():
    reference, ours = _pair(8, 6, 1, 2, False)
    x = torch.randn(4, 8, 6, 6, requires_grad=True)
    ours.weight.requires_grad_(False)  # the input alone: no weight gradient is made
    (gx,) = torch.autograd.grad(ours(x).square().sum(), x)
    (gx_ref,) = torch.autograd.grad(reference(x).square().sum(), x)
    torch.testing.assert_close(gx, gx_ref)
    assert ours.weight.grad is None
    ours.weight.requires_grad_(True)
    values = []
    for module in (ours, reference):  # a graph of the backward (create_graph), as nn.Conv2d's
        gx, = torch.autograd.grad(module(x).square().sum(), x, create_graph=True)
        second, = torch.autograd.grad(gx.square().sum(), module.weight)
        values.append(second)
    torch.testing.assert_close(values[0], values[1], rtol=1e-4, atol=1e-5)


def test_nn_conv2d_itself_elsewhere():
    _, ours = _pair(8, 8, 1, 2, False)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert ours(x).grad_fn is None
    assert type(ours(x).grad_fn).__name__ == "_StridedPointwiseFunctionBackward"
    assert type(ours.double()(x.double()).grad_fn).__name__ == "ConvolutionBackward0"
    traced = torch.jit.trace(ours.float(), x)
    assert "aten::_convolution" in str(traced.graph) and "PythonOp" not in str(traced.graph)
    for other in (Conv2d(8, 8, 3, 2, 1, bias=False), Conv2d(8, 8, 1, 1, bias=False), Conv2d(8, 8, 1, 2, bias=True)):
        assert type(other(x).grad_fn).__name__ == "ConvolutionBackward0"


def test_state_dict_is_nn_conv2d_and_plain_convs_swaps_back():
    backbone = build_backbone("iresnet", embedding_size=16, layers=[1, 1, 1, 1], width=8, input_size=(32, 32))
    names = {name for name, m in backbone.named_modules() if isinstance(m, Conv2d)}
    assert len(names) == 4  # the four stride-2 shortcuts
    state = copy.deepcopy(backbone.state_dict())
    x = torch.randn(2, 3, 32, 32)
    before = backbone.eval()(x)
    plain_convs(backbone.to(memory_format=torch.channels_last))
    after = dict(backbone.named_modules())
    assert all(type(after[name]) is nn.Conv2d for name in names)
    assert backbone.state_dict().keys() == state.keys()
    torch.testing.assert_close(backbone(x), before)


def test_iresnet_trains_to_the_same_bits_as_with_nn_conv2d():
    """Three SGD steps of a 32x32 iResNet (channels-last, as the trainer runs it) with our shortcuts
    and with nn.Conv2d: the same weights, bit for bit."""
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
    assert taken == ["_StridedPointwiseFunctionBackward"] * 4 * 3
    for key, value in results[0].items():
        assert torch.equal(value, results[1][key]), key
