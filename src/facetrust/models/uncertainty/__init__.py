"""Uncertainty heads fitted on a frozen backbone (PFE, SCF, SCF-G), their losses and scores,
the stable vMF normaliser they rest on, and head-free baselines."""

from facetrust.models.uncertainty.baselines import classifier_entropy, embedding_norm_uncertainty
from facetrust.maths.bessel import bessel_ratio, log_iv, log_vmf_normalizer
from facetrust.models.uncertainty.pfe import PFEHead, mls_loss, mls_score, pfe_fuse, pfe_uncertainty
from facetrust.models.uncertainty.scf import (
    MAX_HEAD_VALUES,
    MAX_HIDDEN_LAYERS,
    MAX_HIDDEN_WIDTH,
    SCFHead,
    kappa_weighted_pool,
    scf_g_loss,
    scf_loss,
    scf_uncertainty,
    vmf_pair_log_similarity,
)

__all__ = [
    "MAX_HEAD_VALUES",
    "MAX_HIDDEN_LAYERS",
    "MAX_HIDDEN_WIDTH",
    "classifier_entropy",
    "embedding_norm_uncertainty",
    "bessel_ratio",
    "log_iv",
    "log_vmf_normalizer",
    "PFEHead",
    "mls_loss",
    "mls_score",
    "pfe_fuse",
    "pfe_uncertainty",
    "SCFHead",
    "kappa_weighted_pool",
    "scf_g_loss",
    "scf_loss",
    "scf_uncertainty",
    "vmf_pair_log_similarity",
]
