"""SphereFace-4/20/36/64: the residual CNNs of SphereFace (Liu et al., CVPR 2017, Table 2).

Layout (input 112x96, as in the paper's Caffe prototxt ``sphereface_model.prototxt``)::

    stage s in 1..4:  conv3x3 stride 2 -> C_s channels, PReLU          ("stage conv")
                      units_s x [conv3x3 -> PReLU -> conv3x3 -> PReLU] + identity
    flatten (C_4 * h * w) -> FC -> embedding                           ("fc5")

with C = width * (1, 2, 4, 8) = (64, 128, 256, 512) and residual units per stage
sphere4 (0,0,0,0), sphere20 (1,2,4,1), sphere36 (2,4,8,2), sphere64 (3,8,16,3).
No BatchNorm anywhere; every conv has a bias; PReLU is per channel (Caffe default 0.25).

Initialisation follows the released prototxt, not PyTorch defaults:
- stage convs and fc5: Caffe "xavier" filler = U(-sqrt(3/fan_in), +sqrt(3/fan_in));
- residual-unit convs: Gaussian, std 0.01;
- every bias 0.  The prototxt also gives residual-unit biases ``lr_mult: 0`` (they never move
  from 0); ``freeze_residual_bias=True`` (default) reproduces that with ``requires_grad=False``.

The embedding is fc5's raw output (not normalised).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from facetrust.errors import InputError
from facetrust.models.prelu import PReLU
from facetrust.models.registry import checked_blocks, checked_geometry, register_backbone

SPHERE_UNITS: dict[str, tuple[int, int, int, int]] = {
    "sphere4": (0, 0, 0, 0),
    "sphere20": (1, 2, 4, 1),
    "sphere36": (2, 4, 8, 2),
    "sphere64": (3, 8, 16, 3),
}


def caffe_xavier_(weight: torch.Tensor) -> None:
    """Caffe's XavierFiller (variance_norm FAN_IN): U(-a, a) with a = sqrt(3 / fan_in)."""
    fan_in = weight[0].numel()  # in_channels * kh * kw for a conv, in_features for a Linear
    bound = math.sqrt(3.0 / fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)


def _halve(size: int) -> int:
    # 3x3 conv, stride 2, padding 1: out = floor((n + 2 - 3) / 2) + 1 = ceil(n / 2)
    return (size - 1) // 2 + 1


class SphereResidualUnit(nn.Module):
    """x + PReLU(conv(PReLU(conv(x)))): two 3x3 convs at constant width, no BatchNorm."""

    def __init__(self, channels: int, freeze_bias: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.act1 = PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.act2 = PReLU(channels)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)  # prototxt: gaussian std 0.01
            nn.init.zeros_(conv.bias)
            conv.bias.requires_grad_(not freeze_bias)  # prototxt: bias lr_mult 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act2(self.conv2(self.act1(self.conv1(x))))


class SphereStage(nn.Sequential):
    """Stride-2 3x3 conv + PReLU, then ``units`` residual units at the new width."""

    def __init__(self, in_channels: int, out_channels: int, units: int, freeze_bias: bool = True):
        conv = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        caffe_xavier_(conv.weight)
        nn.init.zeros_(conv.bias)
        layers = [conv, PReLU(out_channels)]
        layers += [SphereResidualUnit(out_channels, freeze_bias) for _ in range(units)]
        super().__init__(*layers)


class FlattenFCNet(nn.Module):
    """SphereFace-style head: conv ``body`` -> flatten -> (dropout) -> ``fc`` embedding.

    Subclasses set ``input_size``, ``body``, ``dropout`` and ``fc``; the flatten fixes the input size."""

    def forward(self, x: torch.Tensor, return_feature_map: bool = False):
        if tuple(x.shape[-2:]) != self.input_size:
            # fc5's input size is fixed by input_size; a wrong crop would fail later, less clearly.
            raise InputError(f"{type(self).__name__} built for input {self.input_size}, got {tuple(x.shape[-2:])}")
        feature_map = self.body(x)
        embedding = self.fc(self.dropout(torch.flatten(feature_map, 1)))
        return (embedding, feature_map) if return_feature_map else embedding


class SphereNet(FlattenFCNet):
    """SphereFace residual CNN; ``forward(x)`` gives the (N, embedding_size) fc5 output.

    ``forward(x, return_feature_map=True)`` also gives the last stage's output map
    (N, 8*width, h, w); ``feature_map_shape`` is its (C, h, w) for ``input_size``.
    """

    def __init__(
        self,
        units: tuple[int, int, int, int],
        embedding_size: int = 512,
        input_size: tuple[int, int] = (112, 96),
        dropout: float = 0.0,
        width: int = 64,
        in_channels: int = 3,
        freeze_residual_bias: bool = True,
    ):
        super().__init__()
        units = checked_blocks("sphere", "units", units, minimum=0)
        height, width_px = checked_geometry(width, embedding_size, input_size, "sphere")
        self.input_size = (height, width_px)
        channels = [width * 2**i for i in range(4)]
        stages = []
        previous = in_channels
        for out_channels, count in zip(channels, units):
            stages.append(SphereStage(previous, out_channels, count, freeze_residual_bias))
            previous = out_channels
            height, width_px = _halve(height), _halve(width_px)
        self.body = nn.Sequential(*stages)
        self.feature_map_shape = (channels[-1], height, width_px)
        # The paper has no dropout; it is offered (default off) for the shared signature.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels[-1] * height * width_px, embedding_size)
        caffe_xavier_(self.fc.weight)  # prototxt fc5: xavier, bias 0
        nn.init.zeros_(self.fc.bias)



def _make_factory(name: str):
    units = SPHERE_UNITS[name]

    def factory(embedding_size=512, input_size=(112, 96), dropout=0.0, width=64, **options) -> SphereNet:
        return SphereNet(units, embedding_size, input_size, dropout, width, **options)

    factory.__name__ = name
    factory.__doc__ = f"SphereFace-{name[6:]} (residual units per stage {units}); see :class:`SphereNet`."
    return register_backbone(name)(factory)


sphere4 = _make_factory("sphere4")
sphere20 = _make_factory("sphere20")
sphere36 = _make_factory("sphere36")
sphere64 = _make_factory("sphere64")
