"""MobileFaceNet (Chen et al., "MobileFaceNets", CCBR 2018, Table 1), 112x112 input.

Table 1, with MobileNet-v2 bottlenecks (t = expansion, c = out channels, n = repeats,
s = stride of the first repeat); every conv is followed by BN, and by PReLU unless "linear"::

    conv3x3                 c=64,  s=2
    depthwise conv3x3       c=64,  s=1
    bottleneck  t=2  c=64   n=5  s=2
    bottleneck  t=4  c=128  n=1  s=2
    bottleneck  t=2  c=128  n=6  s=1
    bottleneck  t=4  c=128  n=1  s=2
    bottleneck  t=2  c=128  n=2  s=1
    conv1x1                 c=512            -> feature map (512, 7, 7)
    linear GDConv7x7        c=512            (depthwise, kernel = the whole map)
    linear conv1x1          c=embedding      (the paper: 128)

A bottleneck is expand 1x1 (c_in*t) -> BN -> PReLU -> depthwise 3x3 (stride s) -> BN -> PReLU
-> project 1x1 (c) -> BN, with an identity shortcut when stride 1 and c_in == c.
The last linear 1x1 conv is applied to the 1x1 GDConv output, i.e. it is a bias-free Linear;
it is followed by BN1d (as in InsightFace's MobileFaceNet; the embedding is not normalised).
All channel counts scale with ``width`` (64 in the paper); the GDConv kernel is the feature
map's (h, w) for ``input_size``, so small inputs work.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from facetrust.errors import ConfigError, InputError
from facetrust.models.prelu import PReLU
from facetrust.models.registry import checked_geometry, register_backbone

# (expansion t, out channels as a multiple of width, repeats n, first stride s): Table 1
BOTTLENECK_SETTINGS = ((2, 1, 5, 2), (4, 2, 1, 2), (2, 2, 6, 1), (4, 2, 1, 2), (2, 2, 2, 1))


def _conv_out(size: int, stride: int) -> int:
    # 3x3 conv with padding 1: out = floor((n - 1) / s) + 1
    return (size - 1) // stride + 1


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel: int | tuple[int, int],
    stride: int = 1,
    groups: int = 1,
    linear: bool = False,
    padding: int | None = None,
) -> nn.Sequential:
    """Conv (no bias) -> BN -> PReLU; ``linear=True`` drops the PReLU ("linear" in Table 1).

    ``padding`` defaults to kernel // 2 ("same" for the 1x1 and 3x3 convs); pass it for others.
    """
    if padding is None:
        padding = kernel // 2
    layers = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if not linear:
        layers.append(PReLU(out_channels))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """MobileNet-v2 inverted residual with PReLU (MobileFaceNet's building block)."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int):
        super().__init__()
        hidden = in_channels * expansion
        self.use_shortcut = stride == 1 and in_channels == out_channels
        self.body = nn.Sequential(
            conv_bn(in_channels, hidden, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, out_channels, 1, linear=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_shortcut else out


class MobileFaceNet(nn.Module):
    """MobileFaceNet; ``forward(x)`` gives the (N, embedding_size) BN1d output (not normalised).

    ``forward(x, return_feature_map=True)`` also gives the conv1x1-512 map that the GDConv reads
    (N, 8*width, h, w); ``feature_map_shape`` is its (C, h, w) for ``input_size``.
    """

    def __init__(
        self,
        embedding_size: int = 512,
        input_size: tuple[int, int] = (112, 112),
        dropout: float = 0.0,
        width: int = 64,
        in_channels: int = 3,
    ):
        super().__init__()
        height, width_px = checked_geometry(width, embedding_size, input_size, "mobilefacenet")
        self.input_size = (height, width_px)

        layers = [conv_bn(in_channels, width, 3, 2), conv_bn(width, width, 3, 1, groups=width)]
        height, width_px = _conv_out(height, 2), _conv_out(width_px, 2)
        previous = width
        for expansion, multiple, repeats, stride in BOTTLENECK_SETTINGS:
            out_channels = width * multiple
            for repeat in range(repeats):
                step = stride if repeat == 0 else 1
                layers.append(Bottleneck(previous, out_channels, expansion, step))
                previous = out_channels
            height, width_px = _conv_out(height, stride), _conv_out(width_px, stride)
        feature_channels = 8 * width
        layers.append(conv_bn(previous, feature_channels, 1))
        self.body = nn.Sequential(*layers)
        self.feature_map_shape = (feature_channels, height, width_px)

        # Global depthwise conv: one (h, w) kernel per channel replaces global average pooling
        # so that the centre and the corners of the face are weighted differently (Sec. 2.2).
        self.gdconv = conv_bn(
            feature_channels, feature_channels, (height, width_px), groups=feature_channels, linear=True, padding=0
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(feature_channels, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.linear.weight)

    def forward(self, x: torch.Tensor, return_feature_map: bool = False):
        if tuple(x.shape[-2:]) != self.input_size:
            raise InputError(f"{type(self).__name__} built for input {self.input_size}, got {tuple(x.shape[-2:])}")
        feature_map = self.body(x)
        pooled = torch.flatten(self.gdconv(feature_map), 1)
        embedding = self.bn(self.linear(self.dropout(pooled)))
        return (embedding, feature_map) if return_feature_map else embedding


@register_backbone("mobilefacenet")
def mobilefacenet(embedding_size=512, input_size=(112, 112), dropout=0.0, width=64, **options) -> MobileFaceNet:
    """MobileFaceNet (Chen et al. 2018, Table 1; the paper's embedding is 128-d); see :class:`MobileFaceNet`."""
    return MobileFaceNet(embedding_size, input_size, dropout, width, **options)
