"""Backbone registry: every backbone is built by name with one constructor signature.

    @register_backbone("iresnet50")
    def iresnet50(embedding_size=512, input_size=(112, 112), dropout=0.0, **options): ...

    build_backbone("iresnet50", embedding_size=512)
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from facetrust.errors import ConfigError
from facetrust.registry import Registry


def _import_all() -> None:
    # Importing the package registers every backbone module it lists.
    import facetrust.models.backbones  # noqa: F401


BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone", loader=_import_all, sort=True)


def register_backbone(name: str):
    """Decorator: register a factory ``f(embedding_size=512, input_size=(H, W), dropout=0.0, **options)``."""
    return BACKBONES.register(name)


def available_backbones() -> list[str]:
    return BACKBONES.names()


def build_backbone(name: str, embedding_size: int = 512, **options) -> nn.Module:
    """Build the backbone registered as ``name``; unknown names raise ConfigError listing the allowed ones.

    The weights are in PyTorch's default NCHW layout.  The trainer moves them to channels-last
    (NHWC) for one CPU process where :func:`nhwc_safe` (``memory_format``,
    :func:`facetrust.train.trainer.training_layout`, which says why data-parallel and CUDA runs
    stay NCHW); a loaded model runs channels-last (:func:`inference_layout`).  Checkpoints are NCHW."""
    return BACKBONES.get(name)(embedding_size=embedding_size, **options)


def nhwc_safe(model: nn.Module) -> bool:
    """Whether ``model`` may run channels-last on CPU: not when a 1x1 convolution with a stride
    reads fewer than 8 channels.  The backward of such a convolution in NHWC corrupts the heap in
    the PyTorch CPU build in use (2.14: a width-4 iResNet's downsample, 4 -> 8 channels at stride
    2, aborts with "double free or corruption"; 8 or more input channels, or 3x3 kernels, agree
    with NCHW).  :func:`inference_layout` keeps such a model NCHW."""
    return not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1 and m.in_channels < 8
                   for m in model.modules())


def inference_layout(model: nn.Module) -> nn.Module:
    """``model`` with its 4-D weights channels-last (NHWC), in place, where :func:`nhwc_safe`; returned.

    What every loaded model runs in (embedding, uncertainty heads' features, explanation maps,
    inversion): oneDNN's NHWC convolutions and batch norms.  On one CPU thread at the pinned AVX2
    path this embeds the params.yaml backbones 1.16-1.57x faster than the plain NCHW loop
    (``benchmarks/bench_throughput.py``), and takes gradients to the input (the explain maps,
    inversion) 1.1-1.3x faster (benchmarks/README.md note 9).  A convolution
    given NCHW input and NHWC weights computes in NHWC, so callers pass images as they are.  The
    values are those of NCHW up to float32 rounding (a few 1e-6 relative; the sum order differs);
    the same model and input give the same bytes on every run.  Training has its own rule
    (:func:`facetrust.train.trainer.training_layout`)."""
    if nhwc_safe(model):
        model.to(memory_format=torch.channels_last)
    return model


def checked_geometry(width: int, embedding_size: int, input_size) -> tuple[int, int]:
    """Validate the constructor arguments every backbone shares; returns ``(height, width)`` in px."""
    if width < 1 or embedding_size < 1:
        raise ConfigError(f"backbone width and embedding_size must be >= 1, got {width}, {embedding_size}")
    height, width_px = (int(s) for s in input_size)
    if height < 1 or width_px < 1:
        raise ConfigError(f"backbone input_size must be positive, got {input_size!r}")
    return height, width_px

