"""Improved ResNets (iResNet-18/34/50/100/200), state-dict compatible with InsightFace.

The layout follows InsightFace ``recognition/arcface_torch/backbones/iresnet.py`` so that a
checkpoint trained there loads here with ``strict=True`` (and the other way round).  Key map
(ours = theirs, at ``width=64``)::

    conv1            Conv2d(3, w, 3x3, stride 1, no bias)          stem
    bn1, prelu       BatchNorm2d(w), PReLU(w)
    layer{1..4}.{i}  IBasicBlock; stage k has 2**(k-1)*w channels and stride 2 in block 0:
        .bn1           BatchNorm2d(in)            pre-activation BN
        .conv1         Conv2d(in, out, 3x3, stride 1)
        .bn2, .prelu   BatchNorm2d(out), PReLU(out)
        .conv2         Conv2d(out, out, 3x3, stride s)   (the stride sits on conv2, as there)
        .bn3           BatchNorm2d(out)
        .downsample.0  Conv2d(in, out, 1x1, stride s)    only in block 0 of each stage
        .downsample.1  BatchNorm2d(out)
    bn2              BatchNorm2d(8w) on the last map   -> ``feature_map``
    dropout          Dropout (no parameters)
    fc               Linear(8w * h * w_, embedding_size)   h, w_ = input size / 16 (rounded up;
                                                           / 8 with ``last_stage_stride=1``)
    features         BatchNorm1d(embedding_size), weight fixed to 1 (not trained), as there

Block counts: r18 (2,2,2,2), r34 (3,4,6,3), r50 (3,4,14,3), r100 (3,13,30,3), r200 (6,26,60,6).
Differences from the reference, all outside the state dict: ``width`` scales every channel count
(InsightFace fixes 64), ``layers`` overrides the block counts (generic ``"iresnet"``), and the fc
input follows ``input_size`` (InsightFace hard-codes 7x7, i.e. 112x112) so 112x96 SphereFace crops
and small synthetic images (32x32, 48x48) work.  ``last_stage_stride=1`` (default 2) keeps the
last stage at the resolution of the third, doubling the side of ``feature_map``: 6x6 instead of
3x3 at 48x48, the grid that xCos (Lin et al., arXiv 2003.05383) explains on; the state-dict keys
stay the same (only the fc input grows), and at 112x112 the default gives xCos's own 7x7.  ``fp16`` runs the convolutional trunk under CUDA
autocast and the fc in float32, as InsightFace does (``fp16: "bf16"``: bfloat16 autocast, which needs
no loss scaling); it is ignored on the CPU.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from facetrust.errors import ConfigError
from facetrust.models.conv import Conv2d
from facetrust.models.prelu import PReLU
from facetrust.models.registry import checked_blocks, checked_geometry, register_backbone

#: Per-stage block counts of the named depths (InsightFace ``iresnet{18,34,50,100,200}``).
DEPTH_LAYERS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}

_BN_EPS = 1e-5  # InsightFace uses eps=1e-05 everywhere


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN-Conv-BN-PReLU-Conv-BN residual unit (ArcFace paper, Fig. 7 "improved residual unit")."""

    FOLDS = (("conv1", "bn2"), ("conv2", "bn3"))  # for inference (models/fold.py); bn1 precedes a padded conv

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=_BN_EPS)
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, eps=_BN_EPS)
        self.prelu = PReLU(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels, eps=_BN_EPS)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                Conv2d(in_channels, channels, 1, stride=stride, bias=False),  # models/conv.py: its input gradient
                nn.BatchNorm2d(channels, eps=_BN_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


def _stage_output_size(size: int, strides: Sequence[int] = (2, 2, 2, 2)) -> int:
    # A 3x3 conv with padding 1 and stride 2 (and the 1x1 stride-2 shortcut) maps n -> ceil(n / 2).
    for stride in strides:
        size = math.ceil(size / stride)
    return size


class IResNet(nn.Module):
    """iResNet trunk + flatten/fc/BN1d embedding.

    ``forward(x)`` returns the (N, embedding_size) embedding, not normalised;
    ``forward(x, return_feature_map=True)`` returns ``(embedding, feature_map)`` with the map after
    ``bn2`` of shape (N, *feature_map_shape).
    """

    FOLDS = (("conv1", "bn1"), ("fc", "features"))  # for inference (models/fold.py); bn2 follows a residual sum

    def __init__(
        self,
        layers: Sequence[int],
        embedding_size: int = 512,
        input_size: Sequence[int] = (112, 112),
        dropout: float = 0.0,
        width: int = 64,
        fp16: bool = False,
        last_stage_stride: int = 2,
    ):
        super().__init__()
        # every size is checked against its limit (models.registry) before a module is built
        layers = checked_blocks("iresnet", "layers", layers, minimum=1)
        try:
            width_ok = int(width) >= 1
        except (TypeError, ValueError):
            width_ok = False
        if not width_ok:
            raise ConfigError(f"iresnet: 'width' must be a positive channel count, got {str(width)[:40]}")
        if last_stage_stride not in (1, 2):
            raise ConfigError(f"iresnet: 'last_stage_stride' must be 1 or 2, got {last_stage_stride!r}")
        strides = (2, 2, 2, int(last_stage_stride))
        height, width_px = _parse_input_size(input_size)
        checked_geometry(width, embedding_size, (height, width_px), "iresnet")
        if fp16 not in (False, True, "bf16"):
            raise ConfigError(f"iresnet: 'fp16' must be false, true or \"bf16\", got {fp16!r}")
        self.fp16 = bool(fp16)
        self.autocast_dtype = torch.bfloat16 if fp16 == "bf16" else torch.float16
        self.layers_config = layers
        self.input_size = (height, width_px)

        self.conv1 = _conv3x3(3, width)
        self.bn1 = nn.BatchNorm2d(width, eps=_BN_EPS)
        self.prelu = PReLU(width)
        in_channels = width
        for index, num_blocks in enumerate(layers):
            channels = width * 2**index
            blocks = [IBasicBlock(in_channels, channels, stride=strides[index])]
            blocks += [IBasicBlock(channels, channels) for _ in range(num_blocks - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            in_channels = channels
        self.bn2 = nn.BatchNorm2d(in_channels, eps=_BN_EPS)
        self.dropout = nn.Dropout(p=float(dropout))
        map_h, map_w = _stage_output_size(height, strides), _stage_output_size(width_px, strides)
        self.feature_map_shape = (in_channels, map_h, map_w)
        self.fc = nn.Linear(in_channels * map_h * map_w, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=_BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        # InsightFace initialisation: conv N(0, 0.1), BN weight 1 / bias 0, and the embedding
        # BatchNorm1d scale frozen at 1 (only its shift is learned).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad_(False)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.bn2(x)

    def forward(self, x: torch.Tensor, return_feature_map: bool = False):
        use_autocast = self.fp16 and x.is_cuda
        with torch.autocast("cuda", dtype=self.autocast_dtype, enabled=use_autocast):
            feature_map = self._trunk(x)
        feature_map = feature_map.float()  # fc in float32 (InsightFace: ``x = self.fc(x.float())``)
        embedding = self.features(self.fc(self.dropout(torch.flatten(feature_map, 1))))
        if return_feature_map:
            return embedding, feature_map
        return embedding


def _parse_input_size(input_size) -> tuple[int, int]:
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    try:
        height, width = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ConfigError(f"iresnet: 'input_size' must be (height, width), got {input_size!r}") from None
    if height < 1 or width < 1:
        raise ConfigError(f"iresnet: 'input_size' must be positive, got {input_size!r}")
    return height, width


def _build(
    default_layers: Sequence[int] | None,
    name: str,
    embedding_size: int = 512,
    input_size: Sequence[int] = (112, 112),
    dropout: float = 0.0,
    width: int = 64,
    layers: Sequence[int] | None = None,
    fp16: bool = False,
    last_stage_stride: int = 2,
    **options,
) -> IResNet:
    if options:
        raise ConfigError(
            f"{name}: unknown option(s) {', '.join(sorted(options))}; "
            "allowed: embedding_size, input_size, dropout, width, layers, fp16, last_stage_stride"
        )
    layers = default_layers if layers is None else layers
    if layers is None:
        raise ConfigError(f"{name}: 'layers' (4 block counts, e.g. [2, 2, 2, 2]) is required")
    return IResNet(layers, embedding_size, input_size, dropout, width, fp16, last_stage_stride)


def _register_depth(depth: int) -> None:
    name = f"iresnet{depth}"

    def factory(embedding_size=512, input_size=(112, 112), dropout=0.0, width=64, layers=None,
                fp16=False, last_stage_stride=2, **options):
        return _build(DEPTH_LAYERS[depth], name, embedding_size, input_size, dropout, width,
                      layers, fp16, last_stage_stride, **options)

    factory.__name__ = name
    factory.__doc__ = f"iResNet-{depth}: block counts {DEPTH_LAYERS[depth]} unless ``layers`` is given."
    register_backbone(name)(factory)


for _depth in DEPTH_LAYERS:
    _register_depth(_depth)


@register_backbone("iresnet")
def iresnet(embedding_size=512, input_size=(112, 112), dropout=0.0, width=64, layers=None,
            fp16=False, last_stage_stride=2, **options):
    """Generic iResNet with explicit ``layers`` (4 block counts), e.g. a small (2,2,2,2) width-8 net."""
    return _build(None, "iresnet", embedding_size, input_size, dropout, width, layers, fp16,
                  last_stage_stride, **options)
