"""Template poolings as objects: how the image features of a template (and, for the
uncertainty-aware ones, their per-image uncertainties) become one L2-normalised template feature.

Each entry of :data:`POOLINGS` is a :class:`Pooling` that declares the
uncertainty it reads and carries its own fusion; :func:`facetrust.evaluate.ijb.template_features_float64`
checks the shapes and calls it, with no branch on the name.

==============  ==========================================================================  ===========
pooling         template feature                                                            reads
==============  ==========================================================================  ===========
mean            InsightFace ``eval_ijbc.py``: x_i/‖x_i‖ if N0, s_i·x_i if D1 (detector score),  nothing
                frames of a media averaged, media summed, L2-normalised; streams the rows
pfe             PFE: unit features fused by precision per dimension (``pfe_fuse``)          σ²
kappa           SCF Eq. 14: Σ κ_i x̂_i (``kappa_fuse``)                                      κ = 1/unc.
kappa_media     SCF README: κ in the detector score's place inside the InsightFace media      κ = 1/unc.
                average, then the template sum, L2-normalised
==============  ==========================================================================  ===========

``image_weight`` (per-image extra weights, e.g. a control's) multiplies the detector-score weight,
the precision or κ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from facetrust.errors import InputError
from facetrust.evaluate.fusion import confidence_from_uncertainty, group_matrix, kappa_fuse, l2_normalize, pfe_fuse, row_norms, weighted_group_sum
from facetrust.registry import Registry


@dataclass(frozen=True)
class Pooling:
    """A template pooling: ``fuse(embeddings, template_index, n_templates, media_ids, image_weight,
    uncertainty, *, normalize_images, use_detector_score, detector_scores) -> (T, D) float64``.

    ``uncertainty``: what it reads per image (``None``, ``"sigma_sq"`` or ``"kappa"``, the latter
    stored as 1/κ); ``streams``: it reads a :class:`~facetrust.npz.StoredRows` block by block."""

    description: str
    fuse: Callable[..., np.ndarray]
    uncertainty: str | None = None
    streams: bool = False

    def __str__(self) -> str:
        return self.description


POOLINGS: Registry[Pooling] = Registry("template pooling")


def check_pooling(pooling: str) -> str:
    """``pooling`` when it is a registered template pooling; ConfigError naming the allowed ones."""
    POOLINGS.get(pooling)
    return pooling


def mean_pooling_weights(template_index, media_ids, weights) -> np.ndarray:
    """Per-image weight ``weights[i] / (images in i's (template, media))``.

    Σ_media mean_frames(w·x) = Σ_i w_i x_i / count(media of i): one sparse product does the
    InsightFace media averaging and template sum at once.
    """
    _, media_index = np.unique(media_ids, return_inverse=True)
    key = template_index.astype(np.int64) * (int(media_index.max()) + 1) + media_index
    _, key_index, key_count = np.unique(key, return_inverse=True, return_counts=True)
    return weights / key_count[key_index]


def _mean(embeddings, template_index, n_templates, media_ids, image_weight, uncertainty, *, normalize_images,
          use_detector_score, detector_scores) -> np.ndarray:
    if normalize_images:
        image_weight = image_weight / np.maximum(row_norms(embeddings), 1e-12)
    if use_detector_score:
        if detector_scores is None:
            raise InputError("use_detector_score=True (D1) needs detector scores")
        image_weight = image_weight * np.asarray(detector_scores, dtype=np.float64)
    image_weight = mean_pooling_weights(template_index, media_ids, image_weight)
    pooled = weighted_group_sum(template_index, n_templates, image_weight, embeddings)
    pooled /= np.maximum(np.sqrt(np.einsum("ij,ij->i", pooled, pooled)), 1e-12)[:, None]  # l2_normalize, in place
    return pooled


def _pfe(embeddings, template_index, n_templates, media_ids, image_weight, uncertainty, **_flags) -> np.ndarray:
    unit = l2_normalize(embeddings.astype(np.float64))
    # Extra weights act as extra precision: σ²_i / w_i.
    sigma_sq = uncertainty / (image_weight if uncertainty.ndim == 1 else image_weight[:, None])
    mu, _ = pfe_fuse(unit, sigma_sq, template_index, n_templates)
    return l2_normalize(mu)


def _kappa(embeddings, template_index, n_templates, media_ids, image_weight, uncertainty, **_flags) -> np.ndarray:
    unit = l2_normalize(embeddings.astype(np.float64))
    kappa = confidence_from_uncertainty(uncertainty, "uncertainty (1/kappa)") * image_weight
    return kappa_fuse(unit, kappa, template_index, n_templates)


def _kappa_media(embeddings, template_index, n_templates, media_ids, image_weight, uncertainty,
                 **_flags) -> np.ndarray:
    unit = l2_normalize(embeddings.astype(np.float64))
    kappa = confidence_from_uncertainty(uncertainty, "uncertainty (1/kappa)") * image_weight
    media_weight = mean_pooling_weights(template_index, media_ids, kappa)
    pooled = group_matrix(template_index, n_templates, media_weight) @ unit
    return l2_normalize(pooled)


POOLINGS.register("mean")(Pooling("InsightFace eval_ijbc.py: media mean, template sum, L2 (N/D/F flags apply)", _mean,
                                  streams=True))
POOLINGS.register("pfe")(Pooling("PFE precision-weighted fusion of unit image features (sigma^2)", _pfe,
                                 uncertainty="sigma_sq"))
POOLINGS.register("kappa")(Pooling("SCF kappa-weighted sum of unit image features (Eq. 14)", _kappa,
                                   uncertainty="kappa"))
POOLINGS.register("kappa_media")(Pooling(
    "SCF README protocol: kappa as each unit image feature's weight inside the InsightFace media/template pipeline",
    _kappa_media, uncertainty="kappa"))
