"""MobileNet-SphereFace: SphereFace-20's stage pattern built from MobileNet-v1 blocks with BatchNorm.

The SphereFace fork this reproduces describes its model only as SphereFace "with batch norm and
depthwise convolution added"; this module is our reading of that sentence, written down so it
can be cited:

- every 3x3 conv of SphereFace-20 becomes a MobileNet-v1 depthwise-separable conv
  (Howard et al. 2017, Fig. 3): depthwise 3x3 -> BN -> act, pointwise 1x1 -> BN -> act;
- exception: the very first conv (3 -> 64, stride 2) stays a full 3x3 conv + BN + act, as in
  MobileNet-v1, because a depthwise conv over 3 input channels has almost no capacity;
- stages 2-4 open with a separable conv whose depthwise part has stride 2 and whose pointwise
  part doubles the channels (64 -> 128 -> 256 -> 512 for ``width=64``);
- residual units per stage (1, 2, 4, 1), as SphereFace-20; a unit is two separable convs with
  an identity shortcut;
- head as SphereFace: flatten the (8*width, h, w) map -> optional dropout -> FC -> embedding
  (not normalised).  ``activation`` is "prelu" (SphereFace's choice, default) or "relu"
  (MobileNet-v1's).

Input 112x96 by default; the flatten size is computed from ``input_size``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from facetrust.errors import ConfigError
from facetrust.models.backbones.sphere import FlattenFCNet
from facetrust.models.prelu import PReLU
from facetrust.models.registry import checked_blocks, checked_geometry, register_backbone

SPHERE20_UNITS = (1, 2, 4, 1)
_ACTIVATIONS = ("prelu", "relu")


def _activation(kind: str, channels: int) -> nn.Module:
    return PReLU(channels) if kind == "prelu" else nn.ReLU(inplace=True)


def _halve(size: int) -> int:
    # 3x3 conv, stride 2, padding 1: out = ceil(n / 2)
    return (size - 1) // 2 + 1


class SeparableConv(nn.Sequential):
    """MobileNet-v1 block: depthwise 3x3 (stride s) -> BN -> act -> pointwise 1x1 -> BN -> act."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: str):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            _activation(activation, in_channels),
            nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
            _activation(activation, out_channels),
        )


class SeparableResidualUnit(nn.Module):
    """x + SeparableConv(SeparableConv(x)) at constant width (SphereFace's unit, made separable)."""

    def __init__(self, channels: int, activation: str):
        super().__init__()
        self.body = nn.Sequential(
            SeparableConv(channels, channels, 1, activation),
            SeparableConv(channels, channels, 1, activation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MobileNetSphereFace(FlattenFCNet):
    """See the module docstring; ``forward(x)`` gives the (N, embedding_size) embedding.

    ``forward(x, return_feature_map=True)`` also gives the last stage's map (N, 8*width, h, w);
    ``feature_map_shape`` is its (C, h, w) for ``input_size``.
    """

    def __init__(
        self,
        embedding_size: int = 512,
        input_size: tuple[int, int] = (112, 96),
        dropout: float = 0.0,
        width: int = 64,
        units: tuple[int, int, int, int] = SPHERE20_UNITS,
        activation: str = "prelu",
        in_channels: int = 3,
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"backbone activation {activation!r} not allowed; allowed: {', '.join(_ACTIVATIONS)}")
        units = checked_blocks("mobilenet_sphereface", "units", units, minimum=0)
        height, width_px = checked_geometry(width, embedding_size, input_size, "mobilenet_sphereface")
        self.input_size = (height, width_px)
        channels = [width * 2**i for i in range(4)]

        stages = []
        for index, (out_channels, count) in enumerate(zip(channels, units)):
            if index == 0:  # MobileNet-v1 keeps its first layer a full conv
                opening = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 3, 2, 1, bias=False),
                    nn.BatchNorm2d(out_channels),
                    _activation(activation, out_channels),
                )
            else:
                opening = SeparableConv(channels[index - 1], out_channels, 2, activation)
            units_here = [SeparableResidualUnit(out_channels, activation) for _ in range(count)]
            stages.append(nn.Sequential(opening, *units_here))
            height, width_px = _halve(height), _halve(width_px)
        self.body = nn.Sequential(*stages)
        self.feature_map_shape = (channels[-1], height, width_px)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels[-1] * height * width_px, embedding_size)
        self._init_weights()

    def _init_weights(self) -> None:
        # He init for convs (the usual choice with BN); BN starts as identity; FC bias 0.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)



@register_backbone("mobilenet_sphereface")
def mobilenet_sphereface(embedding_size=512, input_size=(112, 96), dropout=0.0, width=64, **options):
    """MobileNet-SphereFace (SphereFace-20 stages, separable convs + BN); see :class:`MobileNetSphereFace`."""
    return MobileNetSphereFace(embedding_size, input_size, dropout, width, **options)
