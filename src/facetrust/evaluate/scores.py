"""Comparison scores: cosine, SCF's κ-aware vMF score, PFE's mutual likelihood score.

``SCORES`` (a registry; CLI ``--score``, params ``variants.*.score``) names how two templates (or
two images) are compared; every metrics file records it.

==========  ==================================================================  ====================
score       pair score (larger = more likely the same identity)                 needs
==========  ==================================================================  ====================
cosine      x̂₁·x̂₂ of the pooled, L2-normalised features (InsightFace)           any pooling
scf_vmf     SCF Eq. 13: log ∫ vMF(x; μ₁, κ₁) vMF(x; μ₂, κ₂) dx                    pooling kappa or
            = log C_d(κ₁) + log C_d(κ₂) − log C_d(‖κ₁μ₁ + κ₂μ₂‖)                   kappa_media
pfe_mls     PFE Eq. 3 (½ and the constant dropped):                             pooling pfe
            −Σ_l [(μ₁ₗ − μ₂ₗ)² / (σ²₁ₗ + σ²₂ₗ) + log(σ²₁ₗ + σ²₂ₗ)]
==========  ==================================================================  ====================

Template representations for the uncertainty-aware scores:

- **scf_vmf**: the pooled natural parameter m = Σ κᵢ x̂ᵢ (SCF Eq. 14; with ``kappa_media`` the frames
  of a media are averaged first, as the InsightFace pipeline does): direction μ = m/‖m‖, κ = ‖m‖;
- **pfe_mls**: as PFE's own code fuses a template (``aggregate_PFE`` of seasonSH/PFE): per-dimension
  attention aₗᵢ = (1/σ²ₗᵢ) / Σⱼ (1/σ²ₗⱼ), μₗ = Σᵢ aₗᵢ μₗᵢ, renormalised as that code does
  (μ / (‖μ‖ + 1e-8)), and σ² = the element-wise **minimum** of the images' σ² (not the 1/Σ 1/σ² of
  the paper's Eq. for fusion; the code's choice keeps a template from becoming more certain than its
  best image).  With σ² per dimension the division by Σ 1/σ² changes the direction, not only the
  length; PFE's head predicts σ² per dimension (``uncertainty_per_dim``), the scalar σ² is the
  isotropic ablation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from facetrust.errors import ConfigError, InputError
from facetrust.evaluate.fusion import confidence_from_uncertainty, group_matrix, l2_normalize
from facetrust.registry import Registry

@dataclass(frozen=True)
class Score:
    """A comparison score: what it is, which template poolings it is defined for (``None``: any),
    the per-image uncertainty it reads (``None``, ``"kappa"`` = 1/uncertainty, ``"sigma_sq"``) and
    how it compares unit directions with their uncertainties (:meth:`compare`). Its template
    representation is built by ``templates`` (``None``: the pooled features themselves)."""

    description: str
    compare: Callable[..., np.ndarray]  # (unit_a, unc_a, unit_b, unc_b) -> (P,) float64
    poolings: tuple[str, ...] | None = None
    uncertainty: str | None = None
    templates: Callable[..., "ScoredTemplates"] | None = None

    def __str__(self) -> str:
        return self.description


SCORES: Registry[Score] = Registry("comparison score")
PAIR_CHUNK = 16384
PAIR_CHUNK = 16384


def check_score(score: str, pooling: str | None = None) -> str:
    """``score`` when registered and defined for ``pooling``; ConfigError naming what is allowed."""
    allowed = SCORES.get(score).poolings
    if pooling is not None and allowed is not None and pooling not in allowed:
        raise ConfigError(f"score {score!r} needs pooling {' or '.join(allowed)}, got pooling {pooling!r}")
    return score


def constant_like(uncertainty: np.ndarray | None, n: int, value) -> np.ndarray:
    """The control's uncertainty: ``value`` (a positive number) for all ``n`` images, or with
    ``value="mean"`` the geometric mean of the file's own ``uncertainty`` (so κ keeps its scale).

    For cosine and MLS scores any constant gives the same ranking (the pooled direction ignores a
    common factor, and MLS with equal σ² is a decreasing function of the distance); SCF's Eq. 13 is
    not scale-free, so its control keeps the row's typical κ rather than κ = 1.
    """
    if value == "mean":
        if uncertainty is None:
            raise InputError("constant_uncertainty='mean' needs the file's own uncertainty")
        u = np.asarray(uncertainty, dtype=np.float64)
        return np.full(n, float(np.exp(np.mean(np.log(confidence_from_uncertainty(1.0 / u, "uncertainty"))))))
    try:
        constant = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"constant_uncertainty: {value!r} is neither 'mean' nor a positive number") from None
    if not constant > 0:
        raise ConfigError(f"constant_uncertainty: {value!r} must be positive")
    return np.full(n, constant)


def score_description(score: str) -> str:
    return SCORES.get(score).description


# --------------------------------------------------------------------------- vMF score (SCF)


def log_vmf_normalizer(d: int, kappa: np.ndarray) -> np.ndarray:
    """log C_d(κ) in float64 (the project's stable Bessel code; torch imported on first use)."""
    import torch

    from facetrust.maths.bessel import log_vmf_normalizer as _log_c

    kappa = np.asarray(kappa, dtype=np.float64)
    return _log_c(d, torch.from_numpy(np.ascontiguousarray(kappa))).numpy()


def vmf_log_similarity(cos: np.ndarray, kappa1: np.ndarray, kappa2: np.ndarray, d: int) -> np.ndarray:
    """SCF Eq. 13 from the cosine of the two mean directions and the two concentrations.

    ‖κ₁μ₁ + κ₂μ₂‖ = sqrt(κ₁² + κ₂² + 2κ₁κ₂ cos θ); an antipodal pair of equal κ is clamped to 1e-30.
    """
    cos = np.clip(np.asarray(cos, dtype=np.float64), -1.0, 1.0)
    kappa1, kappa2 = np.asarray(kappa1, dtype=np.float64), np.asarray(kappa2, dtype=np.float64)
    combined = np.sqrt(np.maximum(kappa1**2 + kappa2**2 + 2.0 * kappa1 * kappa2 * cos, 0.0))
    return log_vmf_normalizer(d, kappa1) + log_vmf_normalizer(d, kappa2) - log_vmf_normalizer(d, np.maximum(combined, 1e-30))


# --------------------------------------------------------------------------- MLS (PFE)


def mls(mu1: np.ndarray, sigma_sq1: np.ndarray, mu2: np.ndarray, sigma_sq2: np.ndarray) -> np.ndarray:
    """PFE mutual likelihood score per row; σ² (P, D) per dimension or (P,) one per row."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    total = np.asarray(sigma_sq1, dtype=np.float64) + np.asarray(sigma_sq2, dtype=np.float64)
    squared = (mu1 - mu2) ** 2
    if total.ndim == 1:
        return -(squared.sum(axis=1) / total + mu1.shape[1] * np.log(total))
    return -(squared / total + np.log(total)).sum(axis=1)


# --------------------------------------------------------------------------- templates


@dataclass
class ScoredTemplates:
    """Template ids (sorted), unit directions (T, D) and the score's uncertainty per template:
    κ (T,) for scf_vmf, σ² (T, D) or (T,) for pfe_mls, None for cosine."""

    ids: np.ndarray
    directions: np.ndarray
    uncertainty: np.ndarray | None


def _media_weights(template_index: np.ndarray, media_ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    # InsightFace media step: Σ_media mean_frames(w·x) = Σ_i w_i x_i / count(template, media of i).
    _, media_index = np.unique(media_ids, return_inverse=True)
    key = template_index.astype(np.int64) * (int(media_index.max()) + 1) + media_index
    _, key_index, key_count = np.unique(key, return_inverse=True, return_counts=True)
    return weights / key_count[key_index]


def vmf_templates(features, template_ids, media_ids, uncertainty, *, media: bool) -> ScoredTemplates:
    """SCF Eq. 14 template: m = Σ κᵢ x̂ᵢ (frames of a media averaged first when ``media``);
    direction m/‖m‖, concentration ‖m‖.  ``uncertainty`` is 1/κ per image."""
    ids, index = np.unique(np.asarray(template_ids), return_inverse=True)
    kappa = confidence_from_uncertainty(uncertainty, "uncertainty (1/kappa)")
    weights = _media_weights(index, np.asarray(media_ids), kappa) if media else kappa
    pooled = group_matrix(index, ids.size, weights) @ l2_normalize(np.asarray(features, dtype=np.float64))
    norms = np.sqrt(np.einsum("ij,ij->i", pooled, pooled))
    return ScoredTemplates(ids, l2_normalize(pooled), norms)


PFE_NORMALIZE_EPS = 1e-8  # aggregate_PFE's l2_normalize: x / (eps + ||x||)


def pfe_code_templates(features, template_ids, sigma_sq) -> ScoredTemplates:
    """PFE's code fusion (``aggregate_PFE``): per-dimension precision-weighted mean of the unit μ,
    divided by the per-dimension precision sum, renormalised; element-wise min σ².

    ``sigma_sq`` (N, D) per dimension or (N,) one per image (then every dimension shares it)."""
    ids, index = np.unique(np.asarray(template_ids), return_inverse=True)
    sigma_sq = np.asarray(sigma_sq, dtype=np.float64)
    precision = confidence_from_uncertainty(sigma_sq, "sigma_sq")
    precision = precision if precision.ndim == 2 else precision[:, None]
    unit = l2_normalize(np.asarray(features, dtype=np.float64))
    members = group_matrix(index, ids.size)
    # attention a_li = (1/σ²_li) / Σ_j (1/σ²_lj): the division is per dimension, so it turns the mean.
    mean = np.asarray(members @ (unit * precision)) / np.asarray(members @ precision)
    norms = np.sqrt(np.einsum("ij,ij->i", mean, mean))
    minimum = np.full((ids.size,) + sigma_sq.shape[1:], np.inf)
    np.minimum.at(minimum, index, sigma_sq)
    return ScoredTemplates(ids, mean / (norms + PFE_NORMALIZE_EPS)[:, None], minimum)


def score_templates(score: str, pooling: str, features, template_ids, media_ids, uncertainty) -> ScoredTemplates:
    """The template representation that ``score`` compares (see the module docstring)."""
    check_score(score, pooling)
    if uncertainty is None:
        raise InputError(f"score {score!r} needs per-image uncertainty")
    return SCORES.get(score).templates(features, template_ids, media_ids, uncertainty, pooling)


def _rows(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    rows = pd.Index(ids).get_indexer(wanted)
    if (rows < 0).any():
        raise InputError(f"pairs: template {wanted[int(np.flatnonzero(rows < 0)[0])]} has no feature")
    return rows


def pair_scores(score: str, templates: ScoredTemplates, pairs: np.ndarray, *, chunk: int = PAIR_CHUNK) -> np.ndarray:
    """Score every (t1, t2) pair of template ids with ``score`` (float64, P)."""
    pairs = np.asarray(pairs)
    rows1, rows2 = _rows(templates.ids, pairs[:, 0]), _rows(templates.ids, pairs[:, 1])
    directions, unc = templates.directions, templates.uncertainty
    compare = SCORES.get(score).compare
    out = np.empty(pairs.shape[0], dtype=np.float64)
    for start in range(0, pairs.shape[0], chunk):
        a, b = rows1[start : start + chunk], rows2[start : start + chunk]
        out[start : start + chunk] = compare(directions[a], None if unc is None else unc[a],
                                             directions[b], None if unc is None else unc[b])
    return out


def image_pair_scores(score: str, embeddings, pfe_sigma: str = "per_dimension") -> np.ndarray:
    """``score`` of the image pairs (0, 1), (2, 3), … of a pair-set embeddings file (float64).

    pfe_mls reads σ² as :func:`~facetrust.evaluate.embeddings_file.pfe_sigma_sq` gives it for ``pfe_sigma``."""
    spec = SCORES.get(score)
    unit = l2_normalize(np.asarray(embeddings.features, dtype=np.float64))
    a, b = unit[0::2], unit[1::2]
    if spec.uncertainty is None:
        return spec.compare(a, None, b, None)
    if spec.uncertainty == "kappa":
        if embeddings.uncertainty is None:
            raise InputError(f"{embeddings.path}: score {score} needs key 'uncertainty' (1/kappa)")
        values = confidence_from_uncertainty(embeddings.uncertainty, "uncertainty (1/kappa)")
    else:
        from facetrust.evaluate.embeddings_file import pfe_sigma_sq

        values, _ = pfe_sigma_sq(embeddings, pfe_sigma)
        if values is None:
            raise InputError(f"{embeddings.path}: score {score} needs key 'uncertainty_per_dim' or 'uncertainty' (sigma^2)")
        values = np.asarray(values, dtype=np.float64)
    return spec.compare(a, values[0::2], b, values[1::2])


# --------------------------------------------------------------------------- the registered scores


def _cosine(a, _unc_a, b, _unc_b) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _vmf(a, kappa_a, b, kappa_b) -> np.ndarray:
    return vmf_log_similarity(np.einsum("ij,ij->i", a, b), kappa_a, kappa_b, a.shape[1])


SCORES.register("cosine")(Score(
    "cosine of the pooled L2-normalised features (InsightFace; dot product of unit templates)", _cosine))
SCORES.register("scf_vmf")(Score(
    "SCF Eq. 13: log of the integral of the two vMF densities (kappa-aware)", _vmf,
    poolings=("kappa", "kappa_media"), uncertainty="kappa",
    templates=lambda f, t, m, u, pooling: vmf_templates(f, t, m, u, media=pooling == "kappa_media")))
SCORES.register("pfe_mls")(Score(
    "PFE mutual likelihood score with PFE's code template fusion (aggregate_PFE: per-dimension "
    "attention-weighted mean renormalised, min sigma^2)", mls, poolings=("pfe",), uncertainty="sigma_sq",
    templates=lambda f, t, m, u, pooling: pfe_code_templates(f, t, u)))
