"""SCF: Spherical Confidence Face (Li et al., CVPR 2021, "Spherical Confidence Learning for Face
Recognition"): a concentration kappa per image, learned on a frozen backbone.

What the caller gets:

- :class:`SCFHead` — feature map -> log kappa, shape (N,);
- :func:`scf_loss` — KL(delta || r-radius vMF) per batch (SCF), :func:`scf_g_loss` — the Gaussian
  ablation (SCF-G);
- :func:`vmf_pair_log_similarity` — the kappa-aware 1:1 score (the paper's Eq. 13);
- :func:`kappa_weighted_pool` — kappa-weighted template aggregation (the paper's Eq. 14);
- :func:`scf_uncertainty` — 1/kappa, the scalar written to the embeddings file (larger = less certain).

The paper's PDF was not available to us; every formula below is derived in its docstring and tested
(Eq. 13 against quadrature on S^2), rather than transcribed.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from facetrust.maths.bessel import bessel_ratio, log_vmf_normalizer

# Smallest concentration the head can emit: kappa = KAPPA_MIN + exp(raw). The official code does the
# same with 1e-6 (log kappa = log(1e-6 + exp(raw))); it keeps log kappa finite when raw -> -inf.
#
# Not comparable with the official kappa values: the official code evaluates log I_{d/2-1}(kappa)
# as log(1e-6 + scipy.special.ive(d/2-1, kappa)) + kappa, i.e. it floors ive at 1e-6. At d = 512
# ive(255, kappa) is below 1e-20 for kappa up to several hundred, so there the floor, not the Bessel
# function, sets the loss: its gradient in kappa and the kappa it converges to differ from the exact
# objective that :func:`log_vmf_normalizer` computes here (tests/test_scores.py shows the floored
# formula departing from the exact one at d = 512). Our kappa scale is the exact one.
KAPPA_MIN = 1e-6


# Sizes of a head MLP on the flattened feature map, checked before any layer is allocated (a
# params.yaml ``hidden: [1073741824]`` or a head file's config would otherwise ask for gigabytes).
#: Width of one hidden layer: the official SCF uses 12544 and 6272 on a 512x7x7 map.
MAX_HIDDEN_WIDTH = 16384
#: Hidden layers of one head (the official heads have 1 or 2).
MAX_HIDDEN_LAYERS = 16
#: Values of a whole head: 2**29 = 537 M, 2 GiB of float32, above the official SCF head's 394 M.
MAX_HEAD_VALUES = 2**29


def checked_head_sizes(name: str, in_features: int, hidden: Sequence[int], out_features: int) -> list[int]:
    """``hidden`` as a list of widths, each in [1, MAX_HIDDEN_WIDTH], at most MAX_HIDDEN_LAYERS of them,
    and the MLP ``in_features -> hidden... -> out_features`` (with its BatchNorms) within
    MAX_HEAD_VALUES; ConfigError naming ``hidden`` otherwise."""
    from facetrust.errors import ConfigError

    try:
        widths = [int(h) for h in hidden]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} head: 'hidden' must list layer widths, got {str(hidden)[:80]}") from None
    if not widths or len(widths) > MAX_HIDDEN_LAYERS or min(widths) < 1 or max(widths) > MAX_HIDDEN_WIDTH:
        raise ConfigError(f"{name} head: 'hidden' {str(hidden)[:80]}: 1 to {MAX_HIDDEN_LAYERS} widths in "
                          f"[1, {MAX_HIDDEN_WIDTH}] (facetrust.models.uncertainty.scf.MAX_HIDDEN_WIDTH)")
    values, width = 0, int(in_features)
    for h in [*widths, int(out_features)]:
        values += width * h + 5 * h + 1  # Linear weight and bias; BatchNorm1d weight, bias, running stats
        width = h
    if values > MAX_HEAD_VALUES:
        raise ConfigError(f"{name} head: 'hidden' {widths} on {in_features:,} input values would hold {values:,} values, "
                          f"above the limit {MAX_HEAD_VALUES:,} (2 GiB of float32)")
    return widths


def _mlp(in_features: int, hidden: Sequence[int], out_features: int) -> tuple[nn.Sequential, nn.Linear]:
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        width = h
    last = nn.Linear(width, out_features)
    layers.append(last)
    return nn.Sequential(*layers), last


class SCFHead(nn.Module):
    """Predicts log kappa (N,) from the backbone's last conv map (N, C, h, w).

    Architecture: flatten -> [Linear -> BatchNorm1d -> ReLU] per entry of ``hidden`` -> Linear -> 1
    (the official repository uses C*h*w -> C*h*w/2 -> C*h*w/4 -> 1; TFace adds the BatchNorms; on a
    512x7x7 map that is 25088 -> 12544 -> 6272 -> 1, so ``hidden`` is configurable).

    Positivity and range: the raw output is mapped to ``log kappa = log(KAPPA_MIN + exp(raw))`` (as
    the official code), so kappa > KAPPA_MIN > 0 and log kappa is smooth; there is no upper clamp
    because :func:`log_vmf_normalizer` is stable for every kappa. ``init_log_kappa`` sets the final
    bias so training starts near a sensible concentration (for d = 512 the optimum kappa is in the
    hundreds to thousands; starting at kappa = 1 wastes thousands of steps).
    """

    def __init__(
        self, feature_map_shape: Sequence[int], hidden: Sequence[int] | int = (512, 256), init_log_kappa: float = 0.0
    ):
        super().__init__()
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        self.feature_map_shape = tuple(int(s) for s in feature_map_shape)
        hidden = checked_head_sizes("SCF", math.prod(self.feature_map_shape), hidden, 1)
        self.net, last = _mlp(math.prod(self.feature_map_shape), hidden, 1)
        with torch.no_grad():
            last.weight.mul_(0.1)  # start close to the constant init_log_kappa
            last.bias.fill_(float(init_log_kappa))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        raw = self.net(feature_map).squeeze(1)
        return torch.logaddexp(raw, torch.full_like(raw, math.log(KAPPA_MIN)))


def cos_to_centre(mu: torch.Tensor, class_centres: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """cos theta between each embedding and its class centre; both normalised, so it is
    mu.w_c / r for mu, w_c rescaled to radius r as in the official code."""
    return (F.normalize(mu, dim=1) * F.normalize(class_centres[labels], dim=1)).sum(dim=1)


def scf_loss(
    mu: torch.Tensor, log_kappa: torch.Tensor, class_centres: torch.Tensor, labels: torch.Tensor, radius: float = 64.0
) -> torch.Tensor:
    """Mean over the batch of KL(delta(z - r mu_hat) || vMF_r(z; w_c_hat, kappa)), SCF's objective.

    mu (N, d) embeddings (any norm), log_kappa (N,), class_centres (C, d) classifier weights (any
    norm), labels (N,) int. Derivation: the r-radius vMF (SCF Sec. 3) is the unit vMF pushed to the
    sphere of radius r, with density ``C_d(kappa) exp(kappa cos theta) / r^(d-1)`` w.r.t. the surface
    measure of that sphere, C_d(kappa) = kappa^(d/2-1) / ((2 pi)^(d/2) I_{d/2-1}(kappa)). For a Dirac
    q = delta at r mu_hat, KL(q || p) = E_q[log q] - log p(r mu_hat); E_q[log q] does not depend on
    kappa and is dropped, so::

        loss = -kappa cos theta                     # exponent of the vMF at the embedding
               - (d/2 - 1) log kappa                # numerator of C_d
               + log I_{d/2-1}(kappa)               # Bessel function in the denominator of C_d
               + (d/2) log 2 pi                     # (2 pi)^(d/2) in the denominator of C_d
               + d log r                            # radius; the official code writes d log r
                                                    # (a strict surface density gives (d-1) log r);
                                                    # a constant in kappa either way

    i.e. ``-kappa cos theta - log C_d(kappa) + d log r``. Its kappa-derivative is A_d(kappa) - cos theta,
    so at the optimum the mean resultant length A_d(kappa) equals the cosine to the class centre:
    images far from their centre get a small kappa. cos theta is treated as fixed data here (the
    backbone and the classifier are frozen); gradients flow to log_kappa only through kappa.
    """
    d = mu.shape[1]
    cos_theta = cos_to_centre(mu, class_centres, labels).detach()
    log_kappa = log_kappa.reshape(-1)
    kappa = torch.exp(log_kappa)
    loss = -kappa * cos_theta - log_vmf_normalizer(d, kappa) + d * math.log(radius)
    return loss.mean()


def scf_g_loss(
    mu: torch.Tensor, log_kappa: torch.Tensor, class_centres: torch.Tensor, labels: torch.Tensor, radius: float = 64.0
) -> torch.Tensor:
    """SCF-G (the paper's Gaussian ablation): the same Dirac KL against an isotropic Gaussian.

    The target is N(z; r w_c_hat, sigma^2 I_d) in R^d with sigma^2 = 1/kappa, evaluated at the
    embedding z = r mu_hat. Dropping E_q[log q] as for SCF::

        loss = -log N(r mu_hat; r w_c_hat, I/kappa)
             = (d/2) log 2 pi - (d/2) log kappa + kappa ||r mu_hat - r w_c_hat||^2 / 2
             = (d/2) log 2 pi - (d/2) log kappa + kappa r^2 (1 - cos theta)

    (||a - b||^2 = 2 - 2 cos theta for unit vectors). The optimum is kappa* = d / (2 r^2 (1 - cos theta)),
    decreasing in the angle as for SCF, but set by a Euclidean distance that ignores the sphere.
    """
    d = mu.shape[1]
    cos_theta = cos_to_centre(mu, class_centres, labels).detach()
    log_kappa = log_kappa.reshape(-1)
    loss = (
        0.5 * d * math.log(2.0 * math.pi) - 0.5 * d * log_kappa + torch.exp(log_kappa) * radius**2 * (1.0 - cos_theta)
    )
    return loss.mean()


def initial_log_kappa(method: str, mean_cos: float, d: int, radius: float = 64.0) -> float:
    """A starting log kappa that fits a batch whose mean cosine to the centres is ``mean_cos``.

    SCF: solve A_d(kappa) = mean_cos (bisection in log kappa on :func:`bessel_ratio`);
    SCF-G: the closed-form optimum d / (2 r^2 (1 - mean_cos)).
    """
    c = min(max(float(mean_cos), 1e-3), 1.0 - 1e-6)
    if method == "scf_g":
        return math.log(d / (2.0 * radius**2 * (1.0 - c)))
    lo, hi = math.log(1e-6), math.log(1e12)
    for _ in range(80):  # A_d is increasing in kappa
        mid = 0.5 * (lo + hi)
        a = float(bessel_ratio(d / 2.0 - 1.0, torch.tensor(math.exp(mid), dtype=torch.float64)))
        lo, hi = (mid, hi) if a < c else (lo, mid)
    return 0.5 * (lo + hi)


def vmf_pair_log_similarity(
    mu_i: torch.Tensor, kappa_i: torch.Tensor, mu_j: torch.Tensor, kappa_j: torch.Tensor
) -> torch.Tensor:
    """kappa-aware 1:1 score (SCF Eq. 13): log of int_{S^{d-1}} vMF(x; mu_i, kappa_i) vMF(x; mu_j, kappa_j) dx.

    Rows are pairs: mu_i, mu_j (P, d) (normalised here), kappa_i, kappa_j (P,). Derivation: the
    product of the two densities is C_d(kappa_i) C_d(kappa_j) exp((kappa_i mu_i + kappa_j mu_j).x),
    and int exp(k.x) dx over S^{d-1} = 1 / C_d(||k||) (the normaliser of a vMF with parameter k), so

        log s_ij = log C_d(kappa_i) + log C_d(kappa_j) - log C_d(||kappa_i mu_i + kappa_j mu_j||).

    On the r-radius sphere every term gains the same -(d-1) log r, i.e. a constant. Larger = more
    likely the same identity. Antipodal pairs with equal kappa give ||.|| = 0, clamped to 1e-30
    where log C_d has reached its finite limit (minus the log of the sphere's area).
    """
    d = mu_i.shape[1]
    kappa_i, kappa_j = kappa_i.reshape(-1), kappa_j.reshape(-1)
    combined = kappa_i[:, None] * F.normalize(mu_i, dim=1) + kappa_j[:, None] * F.normalize(mu_j, dim=1)
    norm = combined.norm(dim=1).clamp_min(1e-30)
    return log_vmf_normalizer(d, kappa_i) + log_vmf_normalizer(d, kappa_j) - log_vmf_normalizer(d, norm)


def kappa_weighted_pool(
    mu: torch.Tensor, kappa: torch.Tensor, groups: torch.Tensor | None = None, num_groups: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """kappa-weighted aggregation (SCF Eq. 14): returns (unit mean direction, aggregated kappa).

    mu (N, d) (normalised here), kappa (N,). ``groups`` (N,) int maps each image to a template
    0 .. num_groups-1 (all images form one template when None). The pooled parameter is
    m = sum_i kappa_i mu_i: the product of vMFs with a common-direction likelihood is a vMF with
    parameter m, so its direction is m / ||m|| and its concentration ||m||.
    """
    weighted = kappa.reshape(-1, 1) * F.normalize(mu, dim=1)
    if groups is None:
        pooled = weighted.sum(dim=0, keepdim=True)
    else:
        n = int(num_groups) if num_groups is not None else int(groups.max()) + 1
        pooled = torch.zeros(n, mu.shape[1], dtype=weighted.dtype, device=weighted.device)
        pooled.index_add_(0, groups, weighted)
    pooled_kappa = pooled.norm(dim=1)
    return F.normalize(pooled, dim=1), pooled_kappa


def scf_uncertainty(log_kappa: torch.Tensor) -> torch.Tensor:
    """The scalar uncertainty SCF writes to the embeddings file: 1/kappa (a variance-like number,
    larger = less certain; its inverse is the pooling weight kappa of Eq. 14)."""
    return torch.exp(-log_kappa)
