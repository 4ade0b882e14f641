"""Conv2d whose strided 1x1 (a residual shortcut) takes its input gradient at the kept pixels.

A 1x1 convolution of stride s reads every s-th pixel of its input, so its input gradient is the
1x1 transposed product of the output gradient (``g @ W`` per pixel) at those pixels and zero at
the others.  oneDNN's CPU kernel for the strided case runs at 17-29 GFLOP/s on one AVX2 thread
(batch 128, channels-last; the forward and the 3x3 input gradients of the same model: 85-135);
written as a zero map and the stride-1 transposed product at the kept pixels it is 1.8-2.5x faster
(0.99 -> 0.51 ms on a 32x32 map; ``benchmarks/README.md`` note 17), with oneDNN's bits on
channels-last maps of even size (every shortcut of the params.yaml iResNets: trained weights are
unchanged, bit for bit) and its values up to float32 rounding elsewhere (odd sizes, NCHW:
tests/test_conv.py).  The forward pass and the weight gradient are oneDNN's, through the calls
autograd makes; every other convolution is ``nn.Conv2d`` itself, as are a GPU, a traced / exported
/ compiled graph, groups, dilation, a bias, another dtype or a pass without gradients.  State dicts
are unchanged.

Measured and not kept (note 17): the weight gradient of the 2x2 output maps as one matrix product
of the output gradient with the input's patches (im2col) is 1.8-2.2x oneDNN's there (~3 % of a
training step), but its other rounding re-draws every trained 32x32 iResNet (as another seed would);
the strided 1x1 forward as a slice then a stride-1 product was 1.0-1.35x without gradients but not
always oneDNN's bits.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _StridedPointwiseFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride):
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return F.conv2d(x, weight, None, stride)

    @staticmethod
    def backward(ctx, grad):
        # differentiable steps throughout: a graph of the backward (create_graph) records them
        x, weight = ctx.saved_tensors
        want_input, want_weight = ctx.needs_input_grad[:2]
        grad_input = grad_weight = None
        if want_input:
            kept = F.conv_transpose2d(grad, weight)  # g @ W at every output pixel: the kept input pixels
            grad_input = torch.zeros_like(x, memory_format=_memory_format(kept))
            grad_input[:, :, ::ctx.stride[0], ::ctx.stride[1]] = kept
        if want_weight:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, x, weight, None, list(ctx.stride), [0, 0], [1, 1], False, [0, 0], 1,
                [False, True, False])[1]
        return grad_input, grad_weight, None


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    return torch.contiguous_format if tensor.is_contiguous() else torch.channels_last


def _exporting() -> bool:
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
                or torch.compiler.is_compiling())


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose strided 1x1 takes its input gradient at the kept pixels (module
    docstring); the same forward, weight gradient and state dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.kernel_size == (1, 1) and self.stride != (1, 1) and self.padding == (0, 0) and self.bias is None
                and self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
                and x.dim() == 4 and x.device.type == "cpu" and x.dtype == torch.float32
                and self.weight.dtype == torch.float32 and torch.is_grad_enabled()
                and (self.weight.requires_grad or x.requires_grad) and not _exporting()):
            return _StridedPointwiseFunction.apply(x, self.weight, self.stride)
        return super().forward(x)


def plain_convs(module: nn.Module) -> nn.Module:
    """``module`` with every :class:`Conv2d` replaced, in place, by an ``nn.Conv2d`` holding the same
    weights in the same layout: the plain PyTorch model, for a side-by-side comparison."""
    for parent in list(module.modules()):
        for key, child in list(parent.named_children()):
            if isinstance(child, Conv2d):
                plain = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                  child.padding, child.dilation, child.groups, child.bias is not None,
                                  child.padding_mode)
                plain.load_state_dict(child.state_dict())
                setattr(parent, key, plain.to(memory_format=_memory_format(child.weight)))
    return module
