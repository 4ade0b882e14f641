"""PFE: Probabilistic Face Embeddings (Shi & Jain, ICCV 2019): a per-dimension variance sigma^2
around the frozen (normalised) embedding mu, learned with the mutual likelihood score (MLS).

What the caller gets:

- :class:`PFEHead` — feature map -> log sigma^2, shape (N, D);
- :func:`mls_loss` — mean -MLS over all genuine pairs of a batch;
- :func:`mls_score` — MLS between pairs of (mu, sigma^2) (images or fused templates);
- :func:`pfe_fuse` — the paper's precision-weighted fusion of several (mu, sigma^2) into one per
  template (PFE's code renormalises and takes the minimum sigma^2 instead; see its docstring);
- :func:`pfe_uncertainty` — the scalar for the embeddings file: the harmonic mean of sigma^2 (it
  ranks pairs in reject verification and EDC; ``embed`` also writes the per-dimension sigma^2 as
  ``uncertainty_per_dim``, which the evaluation's PFE fusion and MLS use).

mu is always the L2-normalised embedding, as in PFE (the MLS is computed on the unit sphere's
ambient coordinates).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from facetrust.models.uncertainty.scf import checked_head_sizes


class PFEHead(nn.Module):
    """Predicts log sigma^2 (N, embedding_size) from the conv map (N, C, h, w).

    Architecture (official PFE uncertainty module): flatten -> Linear -> BatchNorm1d -> ReLU ->
    Linear -> BatchNorm1d (no affine) -> ``log sigma^2 = gamma * x + beta`` with *scalar* learnable
    gamma, beta initialised to 1e-4 and -7. Why: the standardised BN output times a tiny gamma
    starts every sigma^2 at about exp(-7) ~ 1e-3, the scale of squared differences between
    normalised embeddings of one identity, and the learned gamma sets the spread of log sigma^2.
    """

    def __init__(
        self,
        feature_map_shape: Sequence[int],
        embedding_size: int,
        hidden: int | Sequence[int] = 512,
        gamma_init: float = 1e-4,
        beta_init: float = -7.0,
    ):
        super().__init__()
        hidden_width = hidden if isinstance(hidden, int) else int(list(hidden)[0])
        self.feature_map_shape = tuple(int(s) for s in feature_map_shape)
        self.embedding_size = int(embedding_size)
        checked_head_sizes("PFE", math.prod(self.feature_map_shape), [hidden_width], self.embedding_size)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(self.feature_map_shape), hidden_width),
            nn.BatchNorm1d(hidden_width),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_width, self.embedding_size),
            nn.BatchNorm1d(self.embedding_size, affine=False),
        )
        self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))
        self.beta = nn.Parameter(torch.tensor(float(beta_init)))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.gamma * self.net(feature_map) + self.beta


def _neg_mls_terms(mu1, sigma_sq1, mu2, sigma_sq2) -> torch.Tensor:
    # -MLS = sum_l (mu1 - mu2)^2 / (s1 + s2) + log(s1 + s2)   (PFE Eq. 3 with 1/2 and D log 2pi dropped)
    total = sigma_sq1 + sigma_sq2
    return ((mu1 - mu2) ** 2 / total + torch.log(total)).sum(dim=-1)


def mls_score(mu1: torch.Tensor, sigma_sq1: torch.Tensor, mu2: torch.Tensor, sigma_sq2: torch.Tensor) -> torch.Tensor:
    """Mutual likelihood score per row: -sum_l [(mu1-mu2)^2/(s1+s2) + log(s1+s2)] (larger = same
    identity more likely). mu are used as given (pass normalised or fused means); shapes (P, D)."""
    return -_neg_mls_terms(mu1, sigma_sq1, mu2, sigma_sq2)


def mls_loss(mu: torch.Tensor, log_sigma_sq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean -MLS over all genuine pairs (i < j, same label) of the batch; mu normalised here.

    Raises ValueError when the batch has no genuine pair (the sampler must draw several images per
    identity). Memory is O(P D) for P genuine pairs, small for identity-balanced batches.
    """
    mu = F.normalize(mu, dim=1)
    same = labels[:, None] == labels[None, :]
    i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
    keep = same[i, j]
    i, j = i[keep], j[keep]
    if len(i) == 0:
        raise ValueError("mls_loss: the batch holds no genuine pair (draw several images per identity)")
    sigma_sq = torch.exp(log_sigma_sq)
    return _neg_mls_terms(mu[i], sigma_sq[i], mu[j], sigma_sq[j]).mean()


def pfe_fuse(
    mu: torch.Tensor, sigma_sq: torch.Tensor, groups: torch.Tensor | None = None, num_groups: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision-weighted fusion as the PFE paper writes it: sigma^2 = 1 / sum 1/sigma_i^2,
    mu = sigma^2 sum mu_i/sigma_i^2 (the product of the images' Gaussians).

    mu, sigma_sq (N, D); ``groups`` (N,) int template index (one template when None). Returns
    (mu_fused (G, D), sigma_sq_fused (G, D)) exactly as that formula gives them: mu is *not*
    renormalised here. PFE's released code (``aggregate_PFE`` in seasonSH/PFE) fuses differently:
    it renormalises the fused mean and takes the element-wise *minimum* sigma^2 (not the harmonic
    sum), and that is what the evaluation's MLS template score uses
    (:func:`facetrust.evaluate.scores.pfe_code_templates`).
    """
    precision = 1.0 / sigma_sq
    if groups is None:
        groups = torch.zeros(len(mu), dtype=torch.long, device=mu.device)
        num_groups = 1
    n = int(num_groups) if num_groups is not None else int(groups.max()) + 1
    total_precision = torch.zeros(n, mu.shape[1], dtype=mu.dtype, device=mu.device).index_add_(0, groups, precision)
    weighted_mu = torch.zeros_like(total_precision).index_add_(0, groups, mu * precision)
    fused_sigma_sq = 1.0 / total_precision
    return weighted_mu * fused_sigma_sq, fused_sigma_sq


def pfe_uncertainty(log_sigma_sq: torch.Tensor) -> torch.Tensor:
    """Scalar uncertainty per image: the harmonic mean of sigma^2 over dimensions (as the PFE paper
    uses for risk-controlled recognition); larger = less certain. Equals 1 / mean precision."""
    return 1.0 / torch.exp(-log_sigma_sq).mean(dim=1)
