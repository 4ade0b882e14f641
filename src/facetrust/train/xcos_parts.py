"""Training pieces for xCos, to plug into the one hook-based trainer (build, batches, step).

* :func:`build_xcos` — the :class:`~facetrust.models.xcos.XCosModel` on a (trained) backbone
  and its margin head on the flattened grid feature.
* :func:`build_optimizers` — the paper's optimisers (ntubiolin/xcos training config): backbone,
  grid conv and margin head by SGD (lr 1e-3, momentum 0.9, weight decay 4e-5 on the network and
  4e-4 on the head), the attention by Adam (lr 1e-4, amsgrad).  The released config steps both
  by StepLR(8, 0.99); the schedule is the trainer's business.
* :func:`pair_batches` — a seeded sampler of genuine/impostor pairs over class labels.
* :func:`train_step` — one optimisation step on one pair batch; returns the loss parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn

from facetrust.errors import ConfigError, InputError
from facetrust.models.xcos import XCosModel, standard_cosine, xcos_loss

#: Margin-head defaults of the xCos repository: CosFace s=30 m=0.35, ArcFace s=64 m=0.5.
HEAD_DEFAULTS: dict[str, dict[str, float]] = {"cosface": {"s": 30.0, "m": 0.35}, "arcface": {"s": 64.0, "m": 0.5}}


def build_xcos(backbone: nn.Module, num_classes: int, *, head_kind: str = "cosface",
               head_options: Mapping | None = None, freeze_backbone: bool = False,
               temperature: float = 1.0, seed: int = 0) -> tuple[XCosModel, nn.Module]:
    """``(xCos model, margin head)``: the branch on ``backbone`` (its ``feature_map_shape`` sets
    the grid) and a head of ``head_kind`` over the 32·h·w grid feature.

    The branch's initial weights come from ``torch.manual_seed(seed)`` (restored afterwards), the
    head's from ``seed``; ``head_options`` override :data:`HEAD_DEFAULTS`."""
    from facetrust.models.margins import build_head

    options = {**HEAD_DEFAULTS.get(head_kind, {}), **dict(head_options or {})}
    options.setdefault("seed", int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = XCosModel(backbone, backbone.feature_map_shape, temperature=temperature,
                          freeze_backbone=freeze_backbone)
    head = build_head(head_kind, model.embedding_size, int(num_classes), **options)
    return model, head


class OptimizerSet:
    """Several optimisers stepped together (``zero_grad``, ``step``, ``state_dict`` as one)."""

    def __init__(self, **optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.step()

    def state_dict(self) -> dict:
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state: Mapping) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[name])


def build_optimizers(model: XCosModel, head: nn.Module, *, lr: float = 1e-3, momentum: float = 0.9,
                     weight_decay: float = 4e-5, head_weight_decay: float = 4e-4,
                     attention_lr: float = 1e-4, amsgrad: bool = True,
                     backbone_lr: float | None = None) -> OptimizerSet:
    """``OptimizerSet(sgd=..., adam=...)`` with the paper's groups (see the module docstring).

    ``backbone_lr`` (default ``lr``, as the paper) sets the backbone's own SGD group: a smaller
    rate lets a short run train the new grid conv and head fast without undoing the backbone it
    was initialised from.  With a frozen backbone the SGD groups hold only the grid conv and the
    head."""
    groups = [{"params": list(model.grid_conv.parameters()), "weight_decay": weight_decay},
              {"params": [p for p in head.parameters() if p.requires_grad], "weight_decay": head_weight_decay}]
    if not model.freeze_backbone:
        groups.insert(0, {"params": [p for p in model.backbone.parameters() if p.requires_grad],
                          "weight_decay": weight_decay, "lr": lr if backbone_lr is None else backbone_lr})
    sgd = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    adam = torch.optim.Adam(model.attention.parameters(), lr=attention_lr, amsgrad=amsgrad)
    return OptimizerSet(sgd=sgd, adam=adam)


@dataclass(frozen=True)
class PairBatch:
    """Indices into a labelled image set: pairs (first[k], second[k]), ``same[k]`` genuine."""

    first: np.ndarray  # int64 (B,)
    second: np.ndarray
    same: np.ndarray  # bool (B,)


def pair_batches(labels, batch_pairs: int, rng: np.random.Generator, *, genuine_fraction: float = 0.5,
                 num_batches: int | None = None) -> Iterator[PairBatch]:
    """Seeded pair batches over ``labels`` (class of each image).

    Each batch holds ``round(batch_pairs·genuine_fraction)`` genuine pairs (an image drawn
    uniformly among those whose class has >= 2 images, and a different image of its class) and
    the rest impostor pairs (an image drawn uniformly, and one drawn uniformly among the images of
    other classes), genuine first.  ``num_batches`` defaults to ``len(labels) // (2·batch_pairs)``
    (an epoch that shows about every image once).  Same ``rng`` state, same batches."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or labels.size < 2:
        raise InputError(f"pair sampler: need a 1-d array of at least 2 labels, got shape {labels.shape}")
    if batch_pairs < 1 or not 0.0 <= genuine_fraction <= 1.0:
        raise ConfigError(f"pair sampler: batch_pairs >= 1 and genuine_fraction in [0, 1] required, "
                          f"got {batch_pairs}, {genuine_fraction}")
    order = np.argsort(labels, kind="stable")
    classes, start, count = np.unique(labels[order], return_index=True, return_counts=True)
    class_of = np.searchsorted(classes, labels)  # dense class index of every image
    position = np.empty_like(order)
    position[order] = np.arange(order.size)  # where each image sits in the class-sorted order
    eligible = np.flatnonzero(count[class_of] >= 2)
    n_genuine = int(round(batch_pairs * genuine_fraction))
    if n_genuine and eligible.size == 0:
        raise InputError("pair sampler: no class has two images, so no genuine pair exists")
    if n_genuine < batch_pairs and classes.size < 2:
        raise InputError("pair sampler: a single class, so no impostor pair exists")
    if num_batches is None:
        num_batches = max(1, labels.size // (2 * batch_pairs))
    for _ in range(int(num_batches)):
        anchor = eligible[rng.integers(0, eligible.size, n_genuine)]
        c = class_of[anchor]
        within = position[anchor] - start[c]
        partner = order[start[c] + (within + rng.integers(1, count[c])) % count[c]]
        first = rng.integers(0, labels.size, batch_pairs - n_genuine)
        c = class_of[first]
        # uniform over the images outside the class block of ``first`` in the sorted order
        draw = rng.integers(0, labels.size - count[c])
        other = order[np.where(draw < start[c], draw, draw + count[c])]
        yield PairBatch(
            first=np.concatenate([anchor, first]).astype(np.int64),
            second=np.concatenate([partner, other]).astype(np.int64),
            same=np.concatenate([np.ones(n_genuine, bool), np.zeros(batch_pairs - n_genuine, bool)]),
        )


def train_step(model: XCosModel, head: nn.Module, standard: nn.Module, optimizers: OptimizerSet,
               images1: torch.Tensor, images2: torch.Tensor, labels1: torch.Tensor, labels2: torch.Tensor,
               *, identity_weight: float = 1.0, xcos_weight: float = 1.0,
               standard_images: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
    """One step on a pair batch: target = frozen ``standard`` cosine, loss = :func:`xcos_loss`,
    backward, step.  ``standard_images``: the same pairs at the standard model's input size when it
    differs from the xCos model's.  Returns ``{"loss", "identity", "xcos_mse", "xcos_mean",
    "target_mean"}``."""
    model.train()
    head.train()
    target = standard_cosine(standard, *(standard_images or (images1, images2)))
    loss = xcos_loss(model, head, images1, images2, labels1, labels2, target,
                     identity_weight=identity_weight, xcos_weight=xcos_weight)
    optimizers.zero_grad()
    loss.total.backward()
    optimizers.step()
    return {
        "loss": float(loss.total.detach()),
        "identity": float(loss.identity.detach()),
        "xcos_mse": float(loss.xcos_mse.detach()),
        "xcos_mean": float(loss.output.xcos.detach().mean()),
        "target_mean": float(target.mean()),
    }
