"""Angular margins: how a margin turns the target cosine into the target logit (before scaling).

Every margin of the family is one formula (InsightFace's "combined margin"):

    target(θ) = cos(m1·θ + m2) − m3,     θ = arccos(cos θ)

SphereFace is (m, 0, 0), ArcFace (1, m, 0), CosFace (1, 0, m).  The formula is only monotone in θ
while m1·θ + m2 ≤ π; past that point the target logit would *rise* again as the sample moves away
from its class, and training pushes the wrong way.  Each method extends it differently, and the
extension is an explicit choice here (:data:`EXTENSIONS`):

``"psi"``     SphereFace's ψ (Liu et al. 2017, Eq. 6): ψ(θ) = (−1)^k cos(m1θ + m2) − 2k for
              m1θ + m2 ∈ [kπ, (k+1)π]; continuous and strictly decreasing on [0, π].
``"linear"``  InsightFace's ``th``/``mm`` form for m1 = 1: once θ > π − m2 (cos θ < cos(π − m2)) use
              cos θ − m2·sin(m2) (a CosFace-style fallback, so the logit keeps decreasing).
``"easy"``    InsightFace's ``easy_margin``: the margin only where cos θ > 0, plain cos θ elsewhere.
``"none"``    the raw formula (InsightFace's MXNet combined margin), no extension.
"""

from __future__ import annotations

import math

import torch

from facetrust.errors import ConfigError

EXTENSIONS = ("psi", "linear", "easy", "none")


def safe_arccos(cos: torch.Tensor) -> torch.Tensor:
    """θ = arccos(cos) with cos clamped to [−1 + ε, 1 − ε] (ε = 2·machine eps of the dtype).

    arccos' derivative −1/√(1 − c²) is infinite at c = ±1, which happens when an embedding equals
    (or opposes) its class weight; the clamp keeps the value within ε and the gradient finite
    (zero outside the clamp)."""
    eps = 2 * torch.finfo(cos.dtype).eps
    return torch.acos(cos.clamp(-1 + eps, 1 - eps))


def chebyshev_cos_multiple(cos: torch.Tensor, m: int) -> torch.Tensor:
    """cos(m·θ) from cos θ for a non-negative integer m: the Chebyshev polynomial T_m(cos θ).

    SphereFace's form (T_2 = 2c² − 1, T_3 = 4c³ − 3c, T_4 = 8c⁴ − 8c² + 1): a polynomial in c, so
    value and gradient are exact and finite for every c, unlike cos(m·arccos c)."""
    if m < 0 or int(m) != m:
        raise ConfigError(f"chebyshev_cos_multiple: m must be a non-negative integer, got {m!r}")
    previous, current = torch.ones_like(cos), cos
    if m == 0:
        return previous
    for _ in range(int(m) - 1):  # T_{n+1} = 2c·T_n − T_{n−1}
        previous, current = current, 2 * cos * current - previous
    return current


def psi_branch(cos: torch.Tensor, m1: float, m2: float | torch.Tensor = 0.0) -> torch.Tensor:
    """k = ⌊(m1·θ + m2)/π⌋, the branch of SphereFace's ψ; piecewise constant, so no gradient."""
    with torch.no_grad():
        return torch.floor((m1 * safe_arccos(cos) + m2) / math.pi)


def angular_target(
    cos: torch.Tensor,
    m1: float = 1.0,
    m2: float | torch.Tensor = 0.0,
    m3: float = 0.0,
    extension: str = "linear",
) -> torch.Tensor:
    """The target logit cos(m1·θ + m2) − m3 (unscaled) for target cosines ``cos`` (N,), made
    monotone in θ by ``extension``.  ``m2`` may be a per-sample tensor (N,) (MagFace).

    Fast paths keep gradients exact: m1 = 1, m2 = 0 (CosFace, NormFace) never takes an arccos;
    integer m1 with m2 = 0 (SphereFace) uses the Chebyshev polynomial."""
    if extension not in EXTENSIONS:
        raise ConfigError(f"margin extension {extension!r} not allowed; allowed: {', '.join(EXTENSIONS)}")
    scalar_m2 = not torch.is_tensor(m2)
    if m1 == 1 and scalar_m2 and m2 == 0:
        return cos - m3  # θ + 0 ≤ π always: no extension needed
    if scalar_m2 and m2 == 0 and float(m1).is_integer():
        cos_margin = chebyshev_cos_multiple(cos, int(m1))
    else:
        cos_margin = torch.cos(m1 * safe_arccos(cos) + m2)

    if extension == "none":
        return cos_margin - m3
    if extension == "easy":
        return torch.where(cos > 0, cos_margin - m3, cos)
    if extension == "psi":
        k = psi_branch(cos, m1, m2)
        sign = 1 - 2 * torch.remainder(k, 2)  # (−1)^k
        return sign * cos_margin - 2 * k - m3
    # "linear": InsightFace th = cos(π − m), mm = sin(π − m)·m = m·sin m.
    if m1 != 1:
        raise ConfigError(f"margin extension 'linear' needs m1 = 1 (got m1={m1}); use 'psi' for m1 > 1")
    m2_tensor = torch.as_tensor(m2, dtype=cos.dtype, device=cos.device)
    threshold = torch.cos(math.pi - m2_tensor)
    fallback = cos - m2_tensor * torch.sin(m2_tensor)
    return torch.where(cos > threshold, cos_margin, fallback) - m3
