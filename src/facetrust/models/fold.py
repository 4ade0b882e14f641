"""Batch norms folded into the layer before them, for embedding.

At inference a batch norm is a fixed per-channel affine map, ``y = (x - mu) / sqrt(var + eps) * gamma
+ beta``, so one that follows a convolution or a linear layer directly can be folded into that
layer's weights and bias (Jacob et al., CVPR 2018, Sec. 3.2; PyTorch's
``torch.nn.utils.fusion.fuse_conv_bn_eval`` / ``fuse_linear_bn_eval`` do the arithmetic): one pass
over each activation less.  :func:`fold_batch_norms` makes such a model, which ``facetrust embed``
and ``facetrust verify`` run (``embed.for_inference``, in place on the model they load).  Of the
default 32x32 iResNet's 31 batch norms, 22 follow a convolution or its fc and fold; the other 9
follow a residual sum or the trunk and become one ``addcmul`` each (:class:`ChannelAffine`, the
same bits).  On one thread at the pinned
AVX2 path it embeds 1.10x faster than before (best of three alternated rounds: 1,424 -> 1,571
img/s; ``benchmarks/README.md`` note 17).  The embeddings are the unfolded model's up to float32
rounding (the weights are rescaled before the sum instead of the sum after it): on the embedded
default's trained models at most 8.6e-7 of an embedding's largest component, cosine to the unfolded
embedding >= 1 - 1.3e-12; the same bytes on every run.

Nothing else folds: the batch-norm modules of a loaded model are what the explain stages hook into
and what model inversion matches statistics to (DeepInversion), and training needs them.

Which layers fold is declared where the layout is known: a module lists ``(layer, batch norm)``
attribute pairs in ``FOLDS`` (the batch norm's only input is the layer's output), and in an
``nn.Sequential`` every ``Conv2d`` directly followed by a ``BatchNorm2d`` folds.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval


def _fold_pair(layer: nn.Module, norm: nn.Module) -> nn.Module | None:
    """``layer`` with ``norm`` folded in, or None where the pair does not fold."""
    if not getattr(norm, "track_running_stats", False) or norm.running_mean is None:
        return None  # batch statistics at inference too: nothing fixed to fold
    if isinstance(layer, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and layer.out_channels == norm.num_features:
        layout = torch.contiguous_format if layer.weight.is_contiguous() else torch.channels_last
        fused = fuse_conv_bn_eval(layer, norm)
        with torch.no_grad():  # the layer's memory layout (models.registry.inference_layout)
            fused.weight.data = fused.weight.data.contiguous(memory_format=layout)
        return fused
    if isinstance(layer, nn.Linear) and isinstance(norm, nn.BatchNorm1d) and layer.out_features == norm.num_features:
        return fuse_linear_bn_eval(layer, norm)
    return None


class ChannelAffine(nn.Module):
    """An eval-mode ``BatchNorm2d`` as the per-channel ``y = x * alpha + beta`` it is, in one
    ``addcmul``: the batch norm's bits (ATen's CPU kernel computes ``alpha = rsqrt(var + eps) * gamma``,
    ``beta = fma(-mu, alpha, beta_bn)`` and ``fma(x, alpha, beta)``: tests/test_fold.py), without the
    per-call setup of ATen's channels-last kernel: 1.05-1.66x faster on the default model's maps
    (batch 256; 16 channels at 32x32: 1.27 -> 1.01 ms)."""

    def __init__(self, norm: nn.BatchNorm2d):
        super().__init__()
        with torch.no_grad():
            alpha = torch.rsqrt(norm.running_var + norm.eps)
            if norm.weight is not None:
                alpha = alpha * norm.weight
            shift = norm.bias.double() if norm.bias is not None else torch.zeros_like(alpha, dtype=torch.float64)
            beta = (shift - norm.running_mean.double() * alpha.double()).float()  # one rounding, as an fma
        shape = (1, alpha.numel(), 1, 1)
        self.register_buffer("alpha", alpha.reshape(shape).clone())
        self.register_buffer("beta", beta.reshape(shape).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, x, self.alpha)


def _affine(norm: nn.Module) -> nn.Module | None:
    if (type(norm) is nn.BatchNorm2d and norm.track_running_stats and norm.running_mean is not None
            and norm.running_var.dtype == torch.float32):
        return ChannelAffine(norm)
    return None


def fold_batch_norms(model: nn.Module, *, in_place: bool = False) -> nn.Module:
    """A copy of ``model`` (``model`` itself when ``in_place``) in eval mode with every batch norm
    that directly follows a convolution or a linear layer (declared by ``FOLDS`` or adjacent in an
    ``nn.Sequential``) folded into that layer and replaced by ``nn.Identity``, and every other
    ``BatchNorm2d`` replaced by the :class:`ChannelAffine` it computes (the same bits); the folded
    weights keep the model's memory layout.  A model with nothing to fold comes back in eval mode."""
    folded = (model if in_place else copy.deepcopy(model)).eval()
    for module in list(folded.modules()):
        pairs = list(getattr(module, "FOLDS", ()))
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            pairs += [(layer_name, norm_name) for (layer_name, layer), (norm_name, norm) in zip(children, children[1:])
                      if isinstance(layer, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)]
        for layer_name, norm_name in pairs:
            fused = _fold_pair(getattr(module, layer_name), getattr(module, norm_name))
            if fused is not None:
                setattr(module, layer_name, fused)
                setattr(module, norm_name, nn.Identity())
    for module in list(folded.modules()):  # those that stay: one addcmul each, the same bits
        for name, child in list(module.named_children()):
            affine = _affine(child)
            if affine is not None:
                setattr(module, name, affine)
    return folded
