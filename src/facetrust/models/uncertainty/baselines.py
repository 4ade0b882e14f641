"""Uncertainty baselines that need no trained head; each returns (N,) with larger = less certain.

- ``emb_norm``: 1/||f|| of the unnormalised embedding (a small norm marks a hard image; the norm of
  a margin-trained feature grows with recognisability);
- ``magface``: the same 1/||f|| for a MagFace-trained backbone, where the norm is trained to be the
  quality (MagFace clamps it to [10, 110]); a separate kind so the files say which model it came from;
- ``entropy``: entropy of softmax(s cos theta) against the trained classifier weights (class centres).

They are registered by name in :mod:`facetrust.models.uncertainty.methods`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def embedding_norm_uncertainty(embeddings: torch.Tensor) -> torch.Tensor:
    """1/||f|| per row of the unnormalised embeddings (N, D).

    The reciprocal (not -||f||) keeps every uncertainty positive, like SCF's 1/kappa and
    ScaleFace's 1/s, so ||f|| is the matching confidence for harmonic/product pair combinations."""
    return 1.0 / embeddings.norm(dim=1).clamp_min(1e-12)


def classifier_entropy(embeddings: torch.Tensor, class_centres: torch.Tensor, scale: float = 64.0) -> torch.Tensor:
    """Entropy (nats) of softmax(scale * cos(f, w_c)) over the C classes; class_centres (C, D).

    In [0, log C]; a confident image sits near one centre and has low entropy.
    """
    logits = scale * F.normalize(embeddings, dim=1) @ F.normalize(class_centres, dim=1).T
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)
