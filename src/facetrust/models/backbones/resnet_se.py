"""IR-SE ResNets: ``resnet18_se`` (the ArcFace-inversion seed's ResNet-18 + SE) and ``ir_se50`` (xCos).

"IR" units are the improved residual units of ArcFace (Deng et al., CVPR 2019, Fig. 7c):
pre-activation ``BN -> conv3x3 -> PReLU -> conv3x3 (stride s) -> BN``; "SE" adds a
squeeze-and-excitation gate (Hu et al., CVPR 2018) with reduction 16 on the residual branch::

    input layer:  conv3x3 (stride 1) -> BN -> PReLU                       -> width channels
    stage s:      units_s IR-SE units, the first with stride 2            -> width * (1,2,4,8)
    output layer: BN2d -> dropout -> flatten -> FC -> BN1d                 -> embedding

The shortcut is identity (subsampled by a 1x1 max-pool when the stride is 2) when the width is
unchanged, else conv1x1 (stride s) + BN.  Stages: resnet18_se (2,2,2,2), ir_se50 (3,4,14,3).
Input 112x112 by default; the flatten size is computed from ``input_size``.
``last_stage_stride=1`` (default 2) keeps the last stage at the third stage's resolution (the
same module keys), for a finer xCos grid at small inputs (6x6 at 48x48 instead of 3x3).
``feature_map`` is the last stage's output, before the output layer's BN2d.

The seed's ResNet-18 (a 1-channel 128x128 variant with a plain ResNet block) is served by
``in_channels=1, input_size=(128, 128)``; the block here is the IR-SE one the brief asks for.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from facetrust.errors import ConfigError, InputError
from facetrust.models.prelu import PReLU
from facetrust.models.registry import checked_blocks, checked_geometry, register_backbone


def _halve(size: int) -> int:
    # a 3x3/pad-1 or 1x1/pad-0 conv (or 1x1 max-pool) with stride 2: out = ceil(n / 2)
    return (size - 1) // 2 + 1


class SqueezeExcite(nn.Module):
    """x * sigmoid(W2 relu(W1 avgpool(x))): channel gate of SENet, W1 reduces by ``reduction``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)  # small widths (tests, the embedded default) keep >= 1
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class IRSEUnit(nn.Module):
    """Improved residual unit with SE: shortcut(x) + SE(BN(conv(PReLU(conv(BN(x))))))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, reduction: int = 16):
        super().__init__()
        if in_channels == out_channels:
            self.shortcut = nn.MaxPool2d(1, stride) if stride > 1 else nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.residual = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            SqueezeExcite(out_channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.residual(x)


class IRSEResNet(nn.Module):
    """IR-SE ResNet; ``forward(x)`` gives the (N, embedding_size) output of the BN1d (not normalised).

    ``forward(x, return_feature_map=True)`` also gives the last stage's map (N, 8*width, h, w);
    ``feature_map_shape`` is its (C, h, w) for ``input_size``.
    """

    def __init__(
        self,
        units: tuple[int, int, int, int],
        embedding_size: int = 512,
        input_size: tuple[int, int] = (112, 112),
        dropout: float = 0.0,
        width: int = 64,
        in_channels: int = 3,
        se_reduction: int = 16,
        last_stage_stride: int = 2,
    ):
        super().__init__()
        units = checked_blocks("resnet_se", "units", units, minimum=1)
        if se_reduction < 1:
            raise ConfigError(f"backbone se_reduction must be >= 1, got {se_reduction}")
        if last_stage_stride not in (1, 2):
            raise ConfigError(f"backbone last_stage_stride must be 1 or 2, got {last_stage_stride!r}")
        strides = (2, 2, 2, int(last_stage_stride))
        height, width_px = checked_geometry(width, embedding_size, input_size, "resnet_se")
        self.input_size = (height, width_px)
        channels = [width * 2**i for i in range(4)]

        self.input_layer = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            PReLU(width),
        )
        stages = []
        previous = width
        for out_channels, count, stride in zip(channels, units, strides):
            stage = [IRSEUnit(previous, out_channels, stride, se_reduction)]
            stage += [IRSEUnit(out_channels, out_channels, 1, se_reduction) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            previous = out_channels
            if stride == 2:
                height, width_px = _halve(height), _halve(width_px)
        self.body = nn.Sequential(*stages)
        self.feature_map_shape = (channels[-1], height, width_px)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(channels[-1]),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Flatten(1),
            nn.Linear(channels[-1] * height * width_px, embedding_size),
            nn.BatchNorm1d(embedding_size),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # Xavier for conv/linear weights, BN as identity, zero biases (face.evoLVe's IR-SE init).
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, return_feature_map: bool = False):
        if tuple(x.shape[-2:]) != self.input_size:
            raise InputError(f"{type(self).__name__} built for input {self.input_size}, got {tuple(x.shape[-2:])}")
        feature_map = self.body(self.input_layer(x))
        embedding = self.output_layer(feature_map)
        return (embedding, feature_map) if return_feature_map else embedding


@register_backbone("resnet18_se")
def resnet18_se(embedding_size=512, input_size=(112, 112), dropout=0.0, width=64, **options) -> IRSEResNet:
    """ResNet-18 with SE blocks, IR-SE style: stages (2, 2, 2, 2); see :class:`IRSEResNet`."""
    return IRSEResNet((2, 2, 2, 2), embedding_size, input_size, dropout, width, **options)


@register_backbone("ir_se50")
def ir_se50(embedding_size=512, input_size=(112, 112), dropout=0.0, width=64, **options) -> IRSEResNet:
    """IR-SE-50 (the xCos backbone): stages (3, 4, 14, 3); see :class:`IRSEResNet`."""
    return IRSEResNet((3, 4, 14, 3), embedding_size, input_size, dropout, width, **options)
