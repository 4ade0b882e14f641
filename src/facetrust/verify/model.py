"""The model a verification runs: embeddings with the ``embed`` stage's flip convention, each face's
uncertainty where the model has one, and the pair score (cosine, SCF Eq. 13, PFE MLS or xCos).

Everything is computed as the pipeline computes it for a benchmark image, so a pair's score can be
held against a threshold read off that benchmark's ROC: :func:`facetrust.embed.embed_batch`
(original + mirrored embeddings summed, InsightFace F1, when ``flip``; the uncertainty of the
original image), and for one-image templates the IJB template scores reduce to the image scores
of :mod:`facetrust.evaluate.scores` (a single L2-normalised feature; κ-pooling gives κ, PFE's
fusion gives σ²).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from facetrust.errors import InputError

#: Which uncertainty kinds each model score needs.
SCORE_UNCERTAINTY = {"scf_vmf": ("scf", "scf_g"), "pfe_mls": ("pfe",)}
#: The quantity each uncertainty kind is the reciprocal of (``None``: the uncertainty itself).
CONFIDENCE_NAMES = {"scf": "kappa", "scf_g": "kappa", "scale": "scale", "magface": "feature_norm",
                    "emb_norm": "feature_norm", "pfe": None, "entropy": None}
UNCERTAINTY_NAMES = {"pfe": "sigma_sq (harmonic mean over dimensions)", "entropy": "classifier entropy"}
# A trained model whose margin head carries its own uncertainty estimate.
OWN_UNCERTAINTY = {"scaleface": "scale", "magface": "magface"}


@dataclass
class FaceModel:
    """A loaded model: ``embed`` (normalised inputs -> (N, D), differentiable unless ONNX), its input
    size, the uncertainty estimator and kind (None without), and the xCos network when it is one."""

    path: str
    input_size: tuple[int, int]
    embed: Callable[[torch.Tensor], torch.Tensor]
    estimate: Callable | None
    uncertainty_kind: str | None
    xcos: object | None = None
    onnx: bool = False

    @torch.no_grad()
    def features(self, pixels: list[np.ndarray], flip: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings (N, D) float32 (flip-fused when ``flip``) and uncertainties (N,) or None of
        uint8 (H, W, 3) crops at the input size."""
        from facetrust.data.transforms import to_tensor
        from facetrust.embed import embed_batch

        inputs = torch.stack([to_tensor(p) for p in pixels])
        if self.xcos is not None:
            return self.embed(inputs).float().numpy(), None
        original, fused, uncertainty = embed_batch(self.embed, inputs, flip=flip, estimate=self.estimate)
        return (fused if flip else original), uncertainty


def load_face_model(path: str | Path, *, head_dir: str | Path | None = None, uncertainty: str | None = None
                    ) -> FaceModel:
    """Any model facetrust loads (:func:`facetrust.models.artifacts.load_model`: a training output,
    an imported model, an arcface_torch ``.pth``, an ``.onnx`` file) or an xCos model directory.

    The uncertainty: a fitted head (``head_dir``, as ``embed --head``), else the named model
    estimate (``uncertainty``, as ``embed --uncertainty``), else the model's own when its margin
    head has one (ScaleFace's scale, MagFace's norm), else none."""
    from facetrust.models.artifacts import is_xcos_model, load_model

    if is_xcos_model(path):
        if head_dir is not None or uncertainty not in (None, "none"):
            raise InputError(f"{path}: an xCos model has no uncertainty head (--head/--uncertainty)")
        from facetrust.models.xcos import load_xcos

        model, config, _ = load_xcos(path)
        return FaceModel(str(path), tuple(config["input_size"]), model.embedding, None, None, xcos=model)
    from facetrust.embed import for_inference, uncertainty_estimator

    backbone, config, extras = load_model(path)
    backbone = for_inference(backbone)  # as ``embed`` runs it: batch norms folded
    if head_dir is None and uncertainty is None:
        uncertainty = OWN_UNCERTAINTY.get(str((config.get("head") or {}).get("kind")))
    estimate, kind = uncertainty_estimator(uncertainty, Path(head_dir) if head_dir else None, config, extras)
    return FaceModel(str(path), tuple(config["input_size"]), backbone, estimate, kind,
                     onnx=config.get("backbone") == "onnx")


def confidence_record(kind: str, uncertainty: float) -> dict:
    """A face's uncertainty as its method states it: SCF κ, ScaleFace s, MagFace ‖f‖ (= 1/u), PFE σ²."""
    record = {"uncertainty": float(uncertainty), "kind": kind,
              "convention": "larger = less certain (the embeddings-file uncertainty)"}
    name = CONFIDENCE_NAMES.get(kind)
    if name is not None:
        record[name] = float(1.0 / uncertainty)
    else:
        record[UNCERTAINTY_NAMES.get(kind, kind)] = float(uncertainty)
    return record


def pair_score(score: str, features1: np.ndarray, features2: np.ndarray, uncertainty1, uncertainty2,
               kind: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(score (P,), cosine (P,)) float64 of image pairs (row k of 1 against row k of 2)."""
    from facetrust.evaluate.fusion import confidence_from_uncertainty, l2_normalize
    from facetrust.evaluate.scores import vmf_log_similarity

    a = l2_normalize(np.asarray(features1, dtype=np.float64))
    b = l2_normalize(np.asarray(features2, dtype=np.float64))
    cosine = np.einsum("ij,ij->i", a, b)
    if score == "cosine":
        return cosine, cosine
    needed = SCORE_UNCERTAINTY.get(score)
    if needed is None:
        raise InputError(f"score {score!r}: verify computes cosine, scf_vmf, pfe_mls, or xcos with an xCos model")
    if kind not in needed:
        raise InputError(f"score {score} needs the uncertainty of a {' or '.join(needed)} head (--head DIR); "
                         f"this model gives {kind or 'none'}")
    if score == "scf_vmf":
        kappa1 = confidence_from_uncertainty(uncertainty1, "uncertainty (1/kappa)")
        kappa2 = confidence_from_uncertainty(uncertainty2, "uncertainty (1/kappa)")
        return vmf_log_similarity(cosine, kappa1, kappa2, a.shape[1]), cosine
    # Each image as a one-image template fused as PFE's aggregate_PFE does (its renormalisation has
    # a 1e-8 in the denominator), so an image pair scores exactly as IJB scores one-image templates.
    from facetrust.evaluate.scores import pair_scores as template_pair_scores, pfe_code_templates

    n = a.shape[0]
    templates = pfe_code_templates(np.concatenate([a, b]), np.arange(2 * n),
                                   np.concatenate([np.asarray(uncertainty1, np.float64),
                                                   np.asarray(uncertainty2, np.float64)]))
    return template_pair_scores("pfe_mls", templates, np.stack([np.arange(n), np.arange(n) + n], axis=1)), cosine
