"""PReLU with a backward pass made of vectorised kernels; same values, bit for bit.

``y = max(x, 0) + a * min(x, 0)`` with one slope ``a`` per channel (He et al., ICCV 2015).  PyTorch's
CPU backward of ``nn.PReLU`` (``aten::_prelu_kernel_backward``) computes both gradients in one
two-output elementwise loop that ATen does not vectorise (a branch per element): in a training step
of the default 32x32 iResNet it took 25 ms of ~180 on the trainer's images and 40 of ~220 on random
inputs, against 2-4 ms for the forward pass (benchmarks/README.md note 16).  :class:`PReLU` keeps
``nn.PReLU``'s forward and computes the same gradients from vectorised kernels in about a third
of the time (9 ms of that step; ``facetrust train`` of that model: 1.04x):

* ``g_pos = threshold_backward(g, x, 0)`` (``g`` where ``x > 0``, else 0: ReLU's backward),
* ``dL/dx = g_pos + a * (g - g_pos)``, which is ``g`` where ``x > 0`` and ``a * g`` elsewhere,
* ``dL/da = sum over (N, H, W) of x * (g - g_pos)``, which is ``x * g`` where ``x <= 0``,

every product rounded once, as in ATen's loop, and the slope's sum the same reduction autograd
applies to ATen's per-element slope gradient (``sum_to``: ``sum`` over the broadcast dimensions,
``keepdim``, over a gradient first put in the input's layout, as ATen's loop lays its results out),
so training gives the same weights bit for bit (tests/test_prelu.py; a whole ``all`` run of the
embedded default: every output byte-identical to one with ``nn.PReLU``).  The only difference is
the sign of a zero gradient (``-0.0 + 0.0`` is ``+0.0``), which changes no value.  On a GPU (whose PReLU backward is an
ordinary elementwise kernel), where the graph is traced or exported (ONNX, TorchScript,
``torch.compile``), for a strided view and where no gradient is wanted, the module is ``nn.PReLU``
itself.  State dicts are unchanged (one ``weight`` of ``num_parameters`` slopes).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _slope_view(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight`` shaped to broadcast over ``x`` (at least 2-D) along its channel dimension (dim 1),
    as ``F.prelu`` does; a single slope broadcasts over everything."""
    return weight.reshape([1, weight.numel()] + [1] * (x.dim() - 2))


class _PReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.prelu(x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        if grad.stride() != x.stride():
            # ATen's loop lays its per-element results out as the input ``x`` is, and the slope's sum
            # runs in that order: the gradient in x's layout first (it arrives in another after a
            # flatten, e.g. a last PReLU before the fc, whose gradient is NCHW for a channels-last map)
            grad = torch.empty_like(x).copy_(grad)
        slope = _slope_view(weight, x)
        want_input, want_weight = ctx.needs_input_grad
        grad_positive = torch.ops.aten.threshold_backward(grad, x, 0)
        grad_negative = grad - grad_positive
        dims = [d for d in range(x.dim()) if slope.shape[d] == 1]
        if torch.is_grad_enabled():  # a graph of the backward (create_graph): no in-place steps
            grad_input = torch.addcmul(grad_positive, grad_negative, slope) if want_input else None
            grad_weight = (x * grad_negative).sum(dims, keepdim=True).reshape(weight.shape) if want_weight else None
            return grad_input, grad_weight
        # the same operations into the buffers just made: two fewer 4-D tensors per call
        grad_input = grad_positive.addcmul_(grad_negative, slope) if want_input else None
        grad_weight = grad_negative.mul_(x).sum(dims, keepdim=True).reshape(weight.shape) if want_weight else None
        return grad_input, grad_weight


def _dense(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out contiguously (NCHW-style or channels-last): the layouts whose
    element order :class:`_PReLUFunction` reproduces (a strided view takes ``F.prelu``)."""
    return x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))


def _exporting() -> bool:
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
                or torch.compiler.is_compiling())


class PReLU(nn.PReLU):
    """``nn.PReLU`` whose backward runs on vectorised kernels (module docstring); same values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dim() >= 2 and _dense(x) and torch.is_grad_enabled()
                and (x.requires_grad or self.weight.requires_grad) and not _exporting()):
            return _PReLUFunction.apply(x, self.weight)
        return F.prelu(x, self.weight)


def plain_prelus(module: nn.Module) -> nn.Module:
    """``module`` with every :class:`PReLU` replaced, in place, by an ``nn.PReLU`` holding the same
    slopes: the plain PyTorch model (ATen's own PReLU backward), for a side-by-side comparison."""
    for parent in list(module.modules()):
        for key, child in list(parent.named_children()):
            if isinstance(child, PReLU):
                plain = nn.PReLU(child.num_parameters)
                plain.load_state_dict(child.state_dict())
                setattr(parent, key, plain)
    return module
