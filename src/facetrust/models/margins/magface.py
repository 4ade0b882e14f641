"""MagFace (Meng et al. 2021): a margin that grows with the feature norm, and the norm regulariser.

The feature norm a = ‖x‖ clamped to [l_a, u_a] (default [10, 110]) is the face's quality.  The
ArcFace margin becomes m(a) = l_m + (u_m − l_m)·(a − l_a)/(u_a − l_a) (linear from 0.45 to 0.8),
and g(a) = a/u_a² + 1/a (minimal at a = u_a, decreasing on [l_a, u_a]) rewards a large norm.  The
classification loss alone would pull every norm to the region where its margin is cheapest; λ_g·g
pushes easy samples to larger norms, which is what makes the norm a quality score.

How the trainer adds it: ``loss = cross_entropy(head(x, labels), labels) + head.extra_loss()``;
``extra_loss()`` is λ_g·mean(g(a)) over the batch of the last forward (λ_g = 35).  Both m(a) and g(a)
see the clamped norm, as in the official code, so norms outside [l_a, u_a] get no norm gradient.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from facetrust.errors import ConfigError
from facetrust.models.margins.angular import angular_target


class MagFaceMargin(nn.Module):
    """ArcFace margin with m2 = m(a) per sample; ``forward(target_cos, feature_norms)``."""

    def __init__(
        self,
        l_a: float = 10.0,
        u_a: float = 110.0,
        l_m: float = 0.45,
        u_m: float = 0.8,
        extension: str = "linear",
    ):
        super().__init__()
        if not 0 < l_a < u_a:
            raise ConfigError(f"magface needs 0 < l_a < u_a, got l_a={l_a}, u_a={u_a}")
        if not 0 <= l_m <= u_m:
            raise ConfigError(f"magface needs 0 <= l_m <= u_m, got l_m={l_m}, u_m={u_m}")
        self.l_a, self.u_a, self.l_m, self.u_m = float(l_a), float(u_a), float(l_m), float(u_m)
        self.extension = extension

    def margin(self, feature_norms: torch.Tensor) -> torch.Tensor:
        """m(a) for a = clamp(‖x‖, l_a, u_a): l_m at a ≤ l_a, u_m at a ≥ u_a, linear between."""
        a = feature_norms.clamp(self.l_a, self.u_a)
        return self.l_m + (self.u_m - self.l_m) * (a - self.l_a) / (self.u_a - self.l_a)

    def forward(self, target_cos: torch.Tensor, feature_norms: torch.Tensor) -> torch.Tensor:
        return angular_target(target_cos, m1=1.0, m2=self.margin(feature_norms), m3=0.0, extension=self.extension)

    def extra_repr(self) -> str:
        return f"l_a={self.l_a}, u_a={self.u_a}, l_m={self.l_m}, u_m={self.u_m}, extension={self.extension!r}"


class MagFaceRegulariser(nn.Module):
    """λ_g·mean(g(a)), g(a) = a/u_a² + 1/a with a = clamp(‖x‖, l_a, u_a); ``forward(feature_norms)``."""

    def __init__(self, l_a: float = 10.0, u_a: float = 110.0, lambda_g: float = 35.0):
        super().__init__()
        if lambda_g < 0:
            raise ConfigError(f"magface lambda_g must be >= 0, got {lambda_g}")
        self.l_a, self.u_a, self.lambda_g = float(l_a), float(u_a), float(lambda_g)

    def g(self, feature_norms: torch.Tensor) -> torch.Tensor:
        """g(a) per sample."""
        a = feature_norms.clamp(self.l_a, self.u_a)
        return a / self.u_a**2 + 1.0 / a

    def forward(self, feature_norms: torch.Tensor) -> torch.Tensor:
        return self.lambda_g * self.g(feature_norms).mean()

    def extra_repr(self) -> str:
        return f"l_a={self.l_a}, u_a={self.u_a}, lambda_g={self.lambda_g}"
