"""``MarginHead``: one classifier layer from which every margin softmax is composed.

A head is three choices (OpenSphere's decomposition):

1. **logits**  ``"cosine"``: cos θ_j = x̂·ŵ_j (normalised features and weights), or ``"linear"``:
   W·x + b (plain softmax, the baseline; no margin, no scale).
2. **margin fusion**  a margin module maps the target cosine (and the feature norm) to the target
   logit (:func:`angular_target`, :class:`MagFaceMargin`); an optional fusion blends it with the
   plain cosine (SphereFace's :class:`LambdaAnnealing`); every non-target logit stays cos θ_j.
3. **scale**  a rule maps (feature norm, caller's scale) to s per sample (fixed s, ‖x‖, ScaleFace).

``build_head(kind, ...)`` wires the published methods from these parts; each kind is a few
arguments, not a class.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from facetrust.errors import ConfigError, InputError
from facetrust.models.margins.angular import EXTENSIONS, angular_target
from facetrust.models.margins.scale import FixedScale

LOGIT_FORMS = ("cosine", "linear")


def cosine_matrix(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """cos θ_j (N, C) between embeddings (N, D) and class weights (C, D), both L2-normalised here,
    clamped to [−1, 1] (rounding can step past it, and the margins take arccos)."""
    weight = weight.to(embeddings.dtype)
    return F.linear(F.normalize(embeddings, dim=1), F.normalize(weight, dim=1)).clamp(-1.0, 1.0)


class AngularMargin(nn.Module):
    """Target logit cos(m1·θ + m2) − m3 (see :mod:`.angular`); ``forward(target_cos, feature_norms)``."""

    def __init__(self, m1: float = 1.0, m2: float = 0.0, m3: float = 0.0, extension: str = "linear"):
        super().__init__()
        if extension not in EXTENSIONS:
            raise ConfigError(f"margin extension {extension!r} not allowed; allowed: {', '.join(EXTENSIONS)}")
        if extension == "linear" and m1 != 1:
            raise ConfigError(f"margin extension 'linear' needs m1 = 1 (got m1={m1}); use 'psi'")
        self.m1, self.m2, self.m3, self.extension = float(m1), float(m2), float(m3), extension

    def forward(self, target_cos: torch.Tensor, feature_norms: torch.Tensor) -> torch.Tensor:
        return angular_target(target_cos, self.m1, self.m2, self.m3, self.extension)

    def extra_repr(self) -> str:
        return f"m1={self.m1}, m2={self.m2}, m3={self.m3}, extension={self.extension!r}"


class MarginHead(nn.Module):
    """Classifier producing logits (N, num_classes) for ``nn.CrossEntropyLoss``.

    ``weight`` (num_classes × embedding_size) holds one row per class: the class centres (SCF and
    the inversion attack read them).  ``forward(embeddings, labels=None, scale=None)``:
    embeddings (N, D) unnormalised; with ``labels`` (N,) the target logits carry the margin, with
    ``labels=None`` (evaluation) the logits are the plain scaled cosines s·cos θ_j.
    ``extra_loss()`` is the regulariser of the last forward (MagFace), else a zero tensor; the
    trainer adds it to the cross entropy.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        logits: str = "cosine",
        margin: nn.Module | None = None,
        fusion: nn.Module | None = None,
        scale: nn.Module | None = None,
        regulariser: nn.Module | None = None,
        detach_margin: bool = False,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if logits not in LOGIT_FORMS:
            raise ConfigError(f"logits {logits!r} not allowed; allowed: {', '.join(LOGIT_FORMS)}")
        if embedding_size < 1 or num_classes < 2:
            raise ConfigError(f"need embedding_size >= 1 and num_classes >= 2, got {embedding_size}, {num_classes}")
        if logits == "linear" and any(part is not None for part in (margin, fusion, scale, regulariser)):
            raise ConfigError("a 'linear' (plain softmax) head takes no margin, fusion, scale or regulariser")
        self.embedding_size, self.num_classes, self.logit_form = embedding_size, num_classes, logits
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        self.bias = nn.Parameter(torch.zeros(num_classes)) if logits == "linear" else None
        self.margin, self.fusion, self.regulariser = margin, fusion, regulariser
        self.scale = scale if scale is not None or logits == "linear" else FixedScale(1.0)
        # InsightFace's arcface_torch adds the margin under no_grad: the forward value carries the
        # margin, the gradient is that of s·cos θ.  Off by default: we differentiate the margin
        # (the papers' definition, InsightFace's older losses and pytorch-metric-learning).
        self.detach_margin = bool(detach_margin)
        self._extra_loss: torch.Tensor | None = None
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise ``weight`` (and ``bias``) from ``generator`` (deterministic given its seed)."""
        with torch.no_grad():
            if self.logit_form == "linear":  # nn.Linear's default range
                bound = 1.0 / math.sqrt(self.embedding_size)
                self.weight.uniform_(-bound, bound, generator=generator)
                self.bias.zero_()
            else:  # InsightFace: N(0, 0.01); only the direction matters
                self.weight.normal_(0.0, 0.01, generator=generator)

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        """cos θ_j (N, num_classes) between each embedding and each class weight."""
        return cosine_matrix(embeddings, self.weight)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._check_inputs(embeddings, labels)
        self._extra_loss = None
        if self.logit_form == "linear":
            return F.linear(embeddings, self.weight, self.bias)

        # Mixed precision: the margin takes arccos near ±1 and logits reach s = 64, which half
        # precision resolves to ~1e-2; the head always runs in float32 or wider (as InsightFace's
        # partial FC does), outside autocast.
        compute_dtype = torch.promote_types(self.weight.dtype, torch.float32)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return self._margin_logits(embeddings.to(compute_dtype), labels, scale)

    def _margin_logits(
        self, embeddings: torch.Tensor, labels: torch.Tensor | None, scale: torch.Tensor | None
    ) -> torch.Tensor:
        feature_norms = embeddings.norm(dim=1)
        cos = self.cosines(embeddings)
        if labels is not None and self.margin is not None:
            index = labels.long().view(-1, 1)
            target_cos = cos.gather(1, index)[:, 0]
            target = self.target_logits(target_cos, feature_norms)
            cos = cos.scatter(1, index, target.unsqueeze(1).to(cos.dtype))
        if labels is not None and self.regulariser is not None:
            self._extra_loss = self.regulariser(feature_norms)
        return cos * self.scale(feature_norms, scale).unsqueeze(1)

    def target_logits(self, target_cos: torch.Tensor, feature_norms: torch.Tensor) -> torch.Tensor:
        """The target logits before scaling (N,) for the target cosines (N,): the margin, fused with
        the plain cosine when the kind does (SphereFace's λ), without its gradient under
        ``detach_margin``.  Partial FC (:mod:`facetrust.train.partial_fc`) calls it on its sampled
        class centres, so both heads share one margin."""
        target = self.margin(target_cos, feature_norms)
        if self.fusion is not None:
            target = self.fusion(target_cos, target)
        if self.detach_margin:
            target = target_cos + (target - target_cos).detach()
        return target

    def extra_loss(self) -> torch.Tensor:
        """The regulariser term of the last forward with labels (MagFace's λ_g·mean g(a)), else 0."""
        if self._extra_loss is None:
            return self.weight.new_zeros(())
        return self._extra_loss

    def _check_inputs(self, embeddings: torch.Tensor, labels: torch.Tensor | None) -> None:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            raise InputError(
                f"margin head: embeddings have shape {tuple(embeddings.shape)}, expected (N, {self.embedding_size})"
            )
        if labels is None:
            return
        if labels.shape != (embeddings.shape[0],) or labels.dtype.is_floating_point:
            raise InputError(
                f"margin head: labels must be integers of shape ({embeddings.shape[0]},), "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        if labels.device.type == "cpu" and labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            # Checked on the CPU only: on an accelerator this would synchronise every step.
            raise InputError(
                f"margin head: labels must lie in [0, {self.num_classes}), got {labels.min()}..{labels.max()}"
            )

    def extra_repr(self) -> str:
        return (
            f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
            f"logits={self.logit_form!r}, detach_margin={self.detach_margin}"
        )
