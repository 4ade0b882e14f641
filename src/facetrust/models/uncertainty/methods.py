"""Uncertainty methods by name: heads fitted on a frozen backbone, and the model's own estimates.

Two registries, one per way of getting an uncertainty:

- :data:`UNCERTAINTY_HEADS` — a module fitted on a frozen backbone's feature map
  (``facetrust fit-head``): PFE, SCF, SCF-G.  An entry says how to build the module, its loss,
  which batches it trains on, and how its output becomes the per-image uncertainty;
- :data:`MODEL_UNCERTAINTIES` — read off the trained model itself (``facetrust embed
  --uncertainty``): feature norm, MagFace norm, classifier entropy, ScaleFace scale.

Every uncertainty is (N,) float32 with larger = less certain (the embeddings-file convention,
``docs/FORMATS.md``).  Adding a method is one class with one decorator here; the CLI choices and the
params schema's enums are read from these registries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from facetrust.errors import InputError
from facetrust.models.uncertainty.baselines import classifier_entropy, embedding_norm_uncertainty
from facetrust.models.uncertainty.pfe import PFEHead, mls_loss, pfe_uncertainty
from facetrust.models.uncertainty.scf import SCFHead, initial_log_kappa, scf_g_loss, scf_loss, scf_uncertainty
from facetrust.registry import Registry

# (embedding (N, D) tensor, feature map (N, C, h, w) tensor or None) -> uncertainty (N,) float32 array;
# an estimator that reads the feature map has the attribute ``reads_feature_map = True``.
Estimator = Callable[[torch.Tensor, torch.Tensor], np.ndarray]


class FittedMethod:
    """An uncertainty head trained on a frozen backbone's outputs.

    ``batches``: ``"identity"`` (groups of images per identity: losses over genuine pairs) or
    ``"shuffled"``; ``needs_centres``: the loss compares with the classifier's class centres."""

    name: str = ""
    batches: str = "shuffled"
    needs_centres: bool = True
    # the space its reference combines uncertainties in (templates, pairs): "uncertainty" (sum sigma^2)
    # or "confidence" (average kappa); written into the embeddings file as `uncertainty_space`
    space: str = "uncertainty"

    def build(self, feature_map_shape: Sequence[int], embedding_size: int, config: Mapping[str, Any],
              init_log_kappa: float = 0.0) -> nn.Module:
        raise NotImplementedError

    def initial_log_kappa(self, mean_cos: float, embedding_size: int, radius: float) -> float:
        """The head's starting output (SCF: the κ that fits the mean cosine); 0 where unused."""
        return 0.0

    def loss(self, head: nn.Module, embeddings, feature_maps, labels, centres, radius: float) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, outputs: torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(uncertainty (N,) float32, extra arrays) from the head's raw outputs."""
        raise NotImplementedError


@dataclass(frozen=True)
class ModelUncertainty:
    """A model's own uncertainty estimate: ``build(config, extras, margin, scale_predictor) -> Estimator``
    (called through the object) and the space its reference combines it in (see ``FittedMethod.space``)."""

    build: Callable[..., Estimator]
    space: str

    def __call__(self, *args, **kwargs) -> Estimator:
        return self.build(*args, **kwargs)


def uncertainty_space(kind: str) -> str:
    """The space a fitted head (``pfe``, ``scf``, …) or a model uncertainty (``scale``, …) declares."""
    entry = UNCERTAINTY_HEADS.get(kind) if kind in UNCERTAINTY_HEADS else MODEL_UNCERTAINTIES.get(kind)
    return entry.space


UNCERTAINTY_HEADS: Registry[FittedMethod] = Registry("uncertainty head method")
MODEL_UNCERTAINTIES: Registry[ModelUncertainty] = Registry("model uncertainty")


def _model_uncertainty(name: str, space: str):
    def register(build):
        MODEL_UNCERTAINTIES.register(name)(ModelUncertainty(build, space))
        return build

    return register
# Kept for readers of the name: the fitted methods' registry.
FITTED_METHODS = UNCERTAINTY_HEADS


def _register_head(cls):
    UNCERTAINTY_HEADS.register(cls.name)(cls())
    return cls


@_register_head
class PFE(FittedMethod):
    """PFE (Shi & Jain, ICCV 2019): per-dimension log σ², MLS loss over genuine pairs;
    uncertainty = harmonic mean of σ² over dimensions, extra ``sigma_sq`` (N, D)."""

    name = "pfe"
    batches = "identity"
    needs_centres = False

    def build(self, feature_map_shape, embedding_size, config, init_log_kappa=0.0):
        return PFEHead(feature_map_shape, embedding_size, hidden=int(config["hidden"][0]))

    def loss(self, head, embeddings, feature_maps, labels, centres, radius):
        return mls_loss(embeddings, head(feature_maps), labels)

    def predict(self, outputs):
        return (pfe_uncertainty(outputs).numpy().astype(np.float32),
                {"sigma_sq": outputs.exp().numpy().astype(np.float32)})


@_register_head
class SCF(FittedMethod):
    """SCF (Li et al., CVPR 2021): log κ of an r-radius vMF, KL to the class centre;
    uncertainty = 1/κ, extra ``kappa`` (N,)."""

    name = "scf"
    space = "confidence"  # SCF averages kappa
    _loss = staticmethod(scf_loss)

    def build(self, feature_map_shape, embedding_size, config, init_log_kappa=0.0):
        return SCFHead(feature_map_shape, hidden=config["hidden"], init_log_kappa=init_log_kappa)

    def initial_log_kappa(self, mean_cos, embedding_size, radius):
        return initial_log_kappa(self.name, mean_cos, embedding_size, radius)

    def loss(self, head, embeddings, feature_maps, labels, centres, radius):
        return self._loss(embeddings, head(feature_maps), centres, labels, radius=radius)

    def predict(self, outputs):
        return scf_uncertainty(outputs).numpy().astype(np.float32), {"kappa": outputs.exp().numpy().astype(np.float32)}


@_register_head
class SCFGaussian(SCF):
    """SCF-G, the paper's Gaussian ablation: the same head with a Gaussian likelihood loss."""

    name = "scf_g"
    _loss = staticmethod(scf_g_loss)


def predict_uncertainty(head: nn.Module, method: str, embeddings, feature_maps,
                        batch_size: int = 1024) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-image uncertainty (float32 (N,), larger = less certain) and the head's parameters.

    SCF / SCF-G: uncertainty = 1/κ, extra ``{"kappa": (N,)}``; PFE: uncertainty = harmonic mean of
    σ² over dimensions, extra ``{"sigma_sq": (N, D)}``.  ``embeddings`` is accepted for symmetry
    with the model's own estimates (the heads read the feature map only).  Batched, no grad, the
    head in eval mode (BatchNorm running statistics)."""
    entry = UNCERTAINTY_HEADS.get(method)
    if len(feature_maps) != len(embeddings):
        raise InputError(f"predict_uncertainty: {len(embeddings)} embeddings but {len(feature_maps)} feature maps")
    head.eval()
    device = next(head.parameters()).device
    outputs = []
    with torch.no_grad():
        for begin in range(0, len(feature_maps), batch_size):
            chunk = torch.as_tensor(np.asarray(feature_maps[begin : begin + batch_size]), dtype=torch.float32)
            outputs.append(head(chunk.to(device)).cpu())
    return entry.predict(torch.cat(outputs) if outputs else torch.empty(0))


# ------------------------------------------------------------------ the model's own uncertainty


def _feature_norm(config, extras, margin, scale_predictor) -> Estimator:
    return lambda embedding, feature_map: embedding_norm_uncertainty(embedding).float().numpy()


_model_uncertainty("emb_norm", "confidence")(_feature_norm)
# MagFace trains the norm to be the quality: the same 1/‖f‖, a separate name so files say which model.
_model_uncertainty("magface", "confidence")(_feature_norm)


@_model_uncertainty("entropy", "uncertainty")  # the classifier entropy is an uncertainty
def _entropy(config, extras, margin, scale_predictor) -> Estimator:
    """Entropy of softmax(s·cos θ) against the trained class centres (the margin head's weight)."""
    if margin is None:
        raise InputError(f"{extras['path']}: uncertainty 'entropy' needs the class centres, which a pretrained "
                         f"backbone file does not hold")
    centres = margin.weight.detach()
    scale = float(config["head"].get("s", 64.0))
    return lambda embedding, feature_map: classifier_entropy(embedding, centres, scale).float().numpy()


@_model_uncertainty("scale", "confidence")  # ScaleFace averages the scales
def _scaleface(config, extras, margin, scale_predictor) -> Estimator:
    """ScaleFace: the predicted scale s is the confidence, uncertainty 1/s."""
    if scale_predictor is None:
        raise InputError(f"{extras['path']}: uncertainty 'scale' needs a ScaleFace model (head kind scaleface)")
    def estimate(embedding, feature_map):
        # a collapsed predictor (s -> 0) must not give inf
        return (1.0 / scale_predictor(feature_map).double().clamp_min(1e-12)).float().numpy()

    estimate.reads_feature_map = True  # embed asks the backbone for its map only when an estimate reads it
    return estimate
