"""Conv2d with faster CPU kernels where oneDNN's are slow: the same forward, the same input
gradient bits, the smallest maps' weight gradient as one matrix product.

Measured on one AVX2 thread, batch 128, channels-last (``benchmarks/README.md`` note 17):

* **Weight gradient on output maps of at most** :data:`MAX_OUTPUT_PIXELS` **pixels.** oneDNN's CPU
  weight-gradient kernel is blocked over the output map: on a 2x2 output (the last stage of a 32x32
  iResNet) it runs at 42-47 GFLOP/s against 85-135 for the same layers' forward and input gradient.
  The weight gradient is a product of the output gradient with the input's patches (im2col,
  Chellapilla et al., 2006)::

      dL/dW[o, (i, j, c)] = sum over (n, y, x) of g[n, o, y, x] * x_pad[n, c, s*y + i, s*x + j]

  With the input channels-last the patches are a strided view of the padded input
  ((N * Ho * Wo) x (kh * kw * C), copied once) and the product gives the gradient already in the
  channels-last weight layout (``O x kh x kw x C``): 1.8-2.2x oneDNN on the 2x2 outputs (3.2-3.6 ->
  1.6-1.7 ms per layer), as fast or slower on 4x4 maps and larger, so only there.  The values are
  the weight gradient's up to float32 rounding (another sum order: a few 1e-7 relative), the same
  bytes on every run (MKL's reproducible AVX2 path, :mod:`facetrust.float_path`).
* **Strided 1x1 convolutions** (the residual shortcuts).  Their input gradient is the 1x1 transposed
  product at every s-th pixel and zero elsewhere; written so, it runs at 1.8-2.5x oneDNN's strided
  kernel's speed (0.99 -> 0.51 ms on the 32x32 map), with oneDNN's bits on channels-last maps of even
  size (every shortcut of the params.yaml iResNets) and its values up to float32 rounding elsewhere.  (Their forward as the kept pixels
  first, then a 1x1 of stride 1, was 1.0-1.35x faster without gradients but not always the same bits
  (a 3x3 map, batch 3): not done.)

Everything else (forward passes, input gradients, larger maps' weight gradients) is oneDNN's, through
the same ATen calls autograd makes.  On a GPU, for a traced / exported / compiled graph, for groups,
dilation, a bias (gradients) or other dtypes, the module is ``nn.Conv2d`` itself.  State dicts are
unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_OUTPUT_PIXELS = 4  # output maps of at most this many pixels take the matrix-product weight gradient


def weight_gradient(grad: torch.Tensor, x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                    padding: tuple[int, int]) -> torch.Tensor:
    """``dL/dW`` (out, in, kh, kw) of a convolution (no groups, no dilation) of ``x`` (N, C, H, W)
    whose output gradient is ``grad`` (N, O, Ho, Wo), as one matrix product of the output gradient
    with the input's patches; channels-last (module docstring)."""
    kh, kw = kernel
    n, channels = x.shape[:2]
    out_channels, out_h, out_w = grad.shape[1:]
    padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0])) if any(padding) else x
    rows = padded.permute(0, 2, 3, 1).contiguous()  # (N, Hp, Wp, C): a view when x is channels-last
    s_n, s_h, s_w, s_c = rows.stride()
    patches = rows.as_strided((n, out_h, out_w, kh, kw, channels),
                              (s_n, s_h * stride[0], s_w * stride[1], s_h, s_w, s_c))
    patches = patches.reshape(n * out_h * out_w, kh * kw * channels)
    grad_rows = grad.permute(0, 2, 3, 1).reshape(n * out_h * out_w, out_channels)
    return torch.mm(grad_rows.t(), patches).view(out_channels, kh, kw, channels).permute(0, 3, 1, 2)


class _Conv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        want_input, want_weight = ctx.needs_input_grad[:2]
        grad_input = grad_weight = None
        # differentiable steps throughout: a graph of the backward (create_graph) records them
        if want_input and _strided_pointwise(weight, ctx.stride, ctx.padding):
            # a strided 1x1 (a shortcut) reads every s-th pixel: its input gradient is the 1x1
            # transposed product at those pixels and zero elsewhere (module docstring)
            kept = F.conv_transpose2d(grad, weight)
            grad_input = torch.zeros_like(x, memory_format=_memory_format(kept))
            grad_input[:, :, ::ctx.stride[0], ::ctx.stride[1]] = kept
        elif want_input:
            grad_input = torch.ops.aten.convolution_backward(
                grad, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0], 1,
                [True, False, False])[0]
        if want_weight and grad.shape[2] * grad.shape[3] <= MAX_OUTPUT_PIXELS:
            grad_weight = weight_gradient(grad, x, weight.shape[2:], ctx.stride, ctx.padding)
            grad_weight = grad_weight.contiguous(memory_format=_memory_format(weight))
        elif want_weight:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0], 1,
                [False, True, False])[1]
        return grad_input, grad_weight, None, None


def _strided_pointwise(weight: torch.Tensor, stride, padding) -> bool:
    return weight.shape[2:] == (1, 1) and tuple(stride) != (1, 1) and not any(padding)


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    return torch.contiguous_format if tensor.is_contiguous() else torch.channels_last


def _exporting() -> bool:
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
                or torch.compiler.is_compiling())


def output_pixels(conv: nn.Conv2d, height: int, width: int) -> int:
    """Pixels of ``conv``'s output map for an ``height`` x ``width`` input."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    return ((height + 2 * ph - kh) // sh + 1) * ((width + 2 * pw - kw) // sw + 1)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight gradient on output maps of at most :data:`MAX_OUTPUT_PIXELS`
    pixels is one matrix product (module docstring); same forward, same state dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.bias is None and self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
                and isinstance(self.padding, tuple) and x.dim() == 4 and x.device.type == "cpu"
                and x.dtype == torch.float32 and self.weight.dtype == torch.float32
                and (self.weight.requires_grad or x.requires_grad) and torch.is_grad_enabled() and not _exporting()
                and (output_pixels(self, x.shape[2], x.shape[3]) <= MAX_OUTPUT_PIXELS
                     or _strided_pointwise(self.weight, self.stride, self.padding))):
            return _Conv2dFunction.apply(x, self.weight, self.stride, self.padding)
        return super().forward(x)


def plain_convs(module: nn.Module) -> nn.Module:
    """``module`` with every :class:`Conv2d` replaced, in place, by an ``nn.Conv2d`` holding the same
    weights: the plain PyTorch model (oneDNN's own weight gradient), for a side-by-side comparison."""
    for parent in list(module.modules()):
        for key, child in list(parent.named_children()):
            if isinstance(child, Conv2d):
                plain = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                  child.padding, child.dilation, child.groups, child.bias is not None,
                                  child.padding_mode)
                plain.load_state_dict(child.state_dict())
                setattr(parent, key, plain.to(memory_format=_memory_format(child.weight)))
    return module
