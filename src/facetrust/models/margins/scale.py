"""How the fused cosines are scaled into logits, and ScaleFace's scale predictor.

A scale rule is called as ``rule(feature_norms, scale)`` and returns the per-sample scale (N,):

* :class:`FixedScale`        one s for every sample (NormFace, CosFace, ArcFace, MagFace);
* :class:`FeatureNormScale`  s = ‖x‖, A-Softmax's own scale (SphereFace multiplies ψ(θ) by the
  feature norm rather than by a fixed s; the norm keeps its gradient, as in the original);
* :class:`PerSampleScale`    s given by the caller per sample (ScaleFace: ``scale`` from
  :class:`ScaleHead`, gradient flows back into the scale head).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from facetrust.errors import ConfigError, InputError


class FixedScale(nn.Module):
    """s, the same for every sample."""

    def __init__(self, s: float):
        super().__init__()
        if not s > 0:
            raise ConfigError(f"scale s must be > 0, got {s}")
        self.s = float(s)

    def forward(self, feature_norms: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        return feature_norms.new_full(feature_norms.shape, self.s)

    def extra_repr(self) -> str:
        return f"s={self.s}"


class FeatureNormScale(nn.Module):
    """s = ‖x‖ per sample (A-Softmax)."""

    def forward(self, feature_norms: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        return feature_norms


class PerSampleScale(nn.Module):
    """s from the caller: ``scale`` must be a tensor of shape (N,) (or (N, 1)) of positive values."""

    def forward(self, feature_norms: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        if scale is None:
            raise InputError("scaleface head: forward(..., scale=) is required (the per-sample scale from ScaleHead)")
        scale = torch.as_tensor(scale, dtype=feature_norms.dtype, device=feature_norms.device)
        if scale.dim() == 2 and scale.shape[1] == 1:
            scale = scale[:, 0]
        if scale.shape != feature_norms.shape:
            raise InputError(
                f"scaleface head: scale has shape {tuple(scale.shape)}, expected ({feature_norms.shape[0]},)"
            )
        return scale


class ScaleHead(nn.Module):
    """ScaleFace's scale predictor: the backbone's last conv map → one positive scale per face.

    flatten(C·h·w) → Linear(hidden) → BatchNorm1d → PReLU (or ReLU) → Linear(1) → s_max·sigmoid.
    ``forward(feature_map)`` with feature_map (N, C, h, w) returns s (N,) in (0, s_max)."""

    def __init__(
        self,
        feature_map_shape: tuple[int, int, int],
        s_max: float = 64.0,
        hidden: int = 512,
        activation: str = "prelu",
    ):
        super().__init__()
        if len(feature_map_shape) != 3:
            raise ConfigError(f"ScaleHead feature_map_shape must be (C, h, w), got {feature_map_shape!r}")
        if not s_max > 0:
            raise ConfigError(f"ScaleHead s_max must be > 0, got {s_max}")
        activations = {"prelu": nn.PReLU, "relu": nn.ReLU}
        if activation not in activations:
            raise ConfigError(f"ScaleHead activation {activation!r} not allowed; allowed: {', '.join(activations)}")
        self.feature_map_shape = tuple(int(v) for v in feature_map_shape)
        self.s_max = float(s_max)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(self.feature_map_shape), hidden),
            nn.BatchNorm1d(hidden),
            activations[activation](),
            nn.Linear(hidden, 1),
        )

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        if tuple(feature_map.shape[1:]) != self.feature_map_shape:
            raise InputError(
                f"ScaleHead: feature map has shape {tuple(feature_map.shape[1:])}, expected {self.feature_map_shape}"
            )
        return self.s_max * torch.sigmoid(self.mlp(feature_map)[:, 0])
