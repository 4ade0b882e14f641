"""Backbone registry: every backbone is built by name with one constructor signature.

    @register_backbone("iresnet50")
    def iresnet50(embedding_size=512, input_size=(112, 112), dropout=0.0, **options): ...

    build_backbone("iresnet50", embedding_size=512)
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from facetrust.errors import ConfigError, InputError
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


# ------------------------------------------------------------------------------- size limits
# A backbone's size comes from settings that a small file can state (params.yaml, a checkpoint's
# config, the shapes of a .pth state dict): ``width: 100000`` or ``layers: [100000000, 1, 1, 1]``
# would make the process allocate tens of gigabytes, or hang, before any weight is read.  Every
# backbone is therefore checked before a tensor is allocated: each setting against a limit below
# (in its constructor, through :func:`checked_geometry` and :func:`checked_blocks`), then the whole
# model against :data:`MAX_BACKBONE_VALUES` (:func:`backbone_plan`, a build without storage).  The
# limits are generous beside every model of the field: InsightFace's iResNet-200 has blocks
# (6, 26, 60, 6), width 64, a 512-d embedding, 112x112 input and 119 M values; SphereFace-64 has
# units (3, 8, 16, 3) at width 64; MobileFaceNet 1.2 M values.

#: Channels of the first stage (every family scales its stages from it; the field uses 64).
MAX_WIDTH = 1024
#: Residual blocks (units) in one stage (iResNet-200's largest stage has 60).
MAX_BLOCKS_PER_STAGE = 256
#: Pixels of one side of the input (face crops are 112x112 or 112x96; 1024 leaves room for any
#: high-resolution variant, and options.size allows larger crops only as stored images).
MAX_INPUT_SIDE = 1024
#: Embedding dimension (the field uses 128-512; PFE/SCF heads and margins scale with it).
MAX_EMBEDDING_SIZE = 65_536
#: Values of one image's first feature map, width x height x width_px: iResNet-100 at 112x112 has
#: 0.8 M; this bound (256 MiB of float32 per image) keeps a single forward pass affordable.
MAX_FIRST_MAP_VALUES = 2**26
#: Values (parameters and buffers) of a whole backbone: 2**28 = 268 M, 1 GiB of float32, 2.3x
#: iResNet-200's 119 M.
MAX_BACKBONE_VALUES = 2**28


def _limit(name: str, what: str, value: int, limit: int) -> None:
    if value > limit:
        raise ConfigError(f"{name}: {what} {value} is above the limit {limit} "
                          f"(facetrust.models.registry: no face model comes near it)")


def checked_blocks(name: str, what: str, counts, minimum: int) -> tuple[int, ...]:
    """Four per-stage block counts, each in [minimum, MAX_BLOCKS_PER_STAGE]; ConfigError otherwise."""
    try:
        counts = tuple(int(n) for n in counts)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: '{what}' must be 4 block counts, got {str(counts)[:80]}") from None
    if len(counts) != 4 or min(counts) < minimum:
        kind = "positive" if minimum >= 1 else "non-negative"
        raise ConfigError(f"{name}: '{what}' must be 4 {kind} block counts, got {str(counts)[:80]}")
    _limit(name, f"'{what}' block count", max(counts), MAX_BLOCKS_PER_STAGE)
    return counts


def build_backbone(name: str, embedding_size: int = 512, **options) -> nn.Module:
    """Build the backbone registered as ``name``; unknown names raise ConfigError listing the allowed ones.

    Settings beyond the limits above raise ConfigError before any tensor is allocated
    (:func:`backbone_plan`).  The weights are in PyTorch's default NCHW layout.  The trainer moves them
    to channels-last (NHWC) for one CPU process where :func:`nhwc_safe` (``memory_format``,
    :func:`facetrust.train.trainer.training_layout`, which says why data-parallel and CUDA runs
    stay NCHW); a loaded model runs channels-last (:func:`inference_layout`).  Checkpoints are NCHW."""
    backbone_plan(name, embedding_size, **options)
    return BACKBONES.get(name)(embedding_size=embedding_size, **options)


_VALUE_FILLS = frozenset({
    "normal_", "uniform_", "fill_", "zero_", "constant_", "ones_", "zeros_", "kaiming_normal_", "kaiming_uniform_",
    "xavier_normal_", "xavier_uniform_", "trunc_normal_", "orthogonal_", "eye_", "dirac_", "sparse_",
})


class _ShapesOnly(TorchFunctionMode):
    """Skips the value fills of initialisation on meta tensors (a shape-only build needs no values;
    torch's meta ``normal_`` alone imports its Python decompositions: a second of start-up)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in _VALUE_FILLS:
            target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes ``tensor=``
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


def backbone_plan(name: str, embedding_size: int = 512, **options) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes (key -> shape) of the backbone :func:`build_backbone` would build, found
    without allocating it (a build on the meta device, which draws no random numbers); ConfigError
    when a setting is beyond its limit (the constructors check those first) or the model would hold
    more than :data:`MAX_BACKBONE_VALUES` values."""
    factory = BACKBONES.get(name)
    try:
        with torch.device("meta"), _ShapesOnly():
            model = factory(embedding_size=embedding_size, **options)
    except (TypeError, ValueError) as error:  # an option the constructor does not take, or of the wrong type
        raise ConfigError(f"{name}: options {str(sorted(options))[:120]} not accepted: "
                          f"{' '.join(str(error).split())[:200]}") from None
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    values = sum(math.prod(shape) for shape in shapes.values())
    if values > MAX_BACKBONE_VALUES:
        size = options.get("input_size")
        rest = ", ".join(f"{key}: {str(value)[:40]}" for key, value in sorted(options.items()) if key != "input_size")
        raise ConfigError(f"{name} with embedding_size {embedding_size}, input_size {str(size)[:40]} and "
                          f"backbone_options {{{rest}}} would hold {values:,} values, above the limit "
                          f"{MAX_BACKBONE_VALUES:,} (1 GiB of float32; iResNet-200 holds 119 M)")
    return shapes


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


def checked_geometry(width: int, embedding_size: int, input_size, name: str = "backbone") -> tuple[int, int]:
    """Validate the constructor arguments every backbone shares, each against its limit above
    (ConfigError naming it); returns ``(height, width)`` in px."""
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    try:
        width, embedding_size = int(width), int(embedding_size)
        height, width_px = (int(s) for s in input_size)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: width, embedding_size and input_size (height, width) must be integers, got "
                          f"{str(width)[:40]}, {str(embedding_size)[:40]}, {str(input_size)[:60]}") from None
    if width < 1 or embedding_size < 1:
        raise ConfigError(f"{name}: width and embedding_size must be >= 1, got {width}, {embedding_size}")
    if height < 1 or width_px < 1:
        raise ConfigError(f"{name}: input_size must be positive, got {str(input_size)[:60]}")
    _limit(name, "width", width, MAX_WIDTH)
    _limit(name, "embedding_size", embedding_size, MAX_EMBEDDING_SIZE)
    _limit(name, "input_size side", max(height, width_px), MAX_INPUT_SIDE)
    if width * height * width_px > MAX_FIRST_MAP_VALUES:
        raise ConfigError(f"{name}: width {width} at input_size {height}x{width_px} gives a first feature map of "
                          f"{width * height * width_px:,} values per image, above the limit {MAX_FIRST_MAP_VALUES:,}")
    return height, width_px


def check_stored(path, part: str, state) -> None:
    """Refuse a tensor whose saved storage holds fewer values than its shape has: a broadcast view
    such as ``torch.zeros(1).expand(8000, 3, 3, 3)`` is a few bytes in the file but declares a
    model (and copies) thousands of times larger.  No state dict that ``torch.save`` writes from a
    model holds one; memory then stays bounded by the file's real size."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.numel() and \
                value.untyped_storage().nbytes() < value.numel() * value.element_size():
            raise InputError(f"{path}: {part} tensor {str(key)[:80]!r} of shape {tuple(value.shape)} is a broadcast view "
                             f"of {value.untyped_storage().nbytes() // max(value.element_size(), 1)} stored value(s), "
                             "not saved weights")
