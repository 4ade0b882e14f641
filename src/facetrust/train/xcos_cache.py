"""Frozen-backbone feature cache for xCos training: each image's feature map computed once.

With the backbone frozen (eval-mode BatchNorm, no gradient; xCos's cheaper variant and the
default here) a face's last convolutional map does not depend on the step, the batch or the branch
being trained, and neither does the frozen standard model's embedding.  So both are computed once
per image **and orientation** (original and mirrored: the trainer's per-epoch flip coin picks
one), and every training step reads them instead of decoding and running the backbone again:
thousands of steps, several seeds and the validation sweep cost one backbone pass.

:class:`FeatureCache` ``maps(indices, flipped)`` (n, C, h, w) and ``embeddings(indices, flipped)``
(n, D) L2-normalised; the cosine of two cached embeddings is :func:`facetrust.models.xcos.standard_cosine`
of the same images.  :func:`pair_set_cache` does the same for a ``.bin`` pair set (original images
only, F0, as the scoring stage reads them), for the validation figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from facetrust.data.transforms import fit_to_size, to_tensor


@dataclass
class FeatureCache:
    """Cached frozen outputs of every image: ``feature_maps`` (2, N, C, h, w) float32 and
    ``standard`` (2, N, D) float32 L2-normalised; axis 0 is the orientation (0 original, 1 mirrored)."""

    feature_maps: torch.Tensor
    standard: torch.Tensor

    def _pick(self, table: torch.Tensor, indices, flipped) -> torch.Tensor:
        indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        flipped = torch.as_tensor(np.asarray(flipped, dtype=np.int64))
        return table[flipped, indices]

    def maps(self, indices: Sequence[int], flipped: Sequence[bool]) -> torch.Tensor:
        return self._pick(self.feature_maps, indices, flipped)

    def embeddings(self, indices: Sequence[int], flipped: Sequence[bool]) -> torch.Tensor:
        return self._pick(self.standard, indices, flipped)


def _frozen_outputs(backbone: nn.Module, standard: nn.Module | None, own: torch.Tensor,
                    standard_images: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        embedding, feature_map = backbone(own, return_feature_map=True)
        if standard is not None:
            embedding = standard(standard_images)
    # NCHW whatever layout the frozen network ran in (models.registry.inference_layout): the branch
    # trains on the cache in the trainers' layout
    return feature_map.float().contiguous(), F.normalize(embedding.float(), dim=1)


def build_feature_cache(backbone: nn.Module, standard: nn.Module | None, decode: Callable[[int], np.ndarray],
                        count: int, input_size, standard_size=None, *, batch_size: int = 256,
                        progress: bool = True) -> FeatureCache:
    """Run the frozen ``backbone`` (and ``standard``; ``None`` when it *is* the backbone, whose own
    embedding is then the target) over images ``0 … count-1`` (``decode(i)`` -> uint8 H x W x 3)
    in both orientations.  Both models are put in eval mode."""
    backbone.eval()
    if standard is not None:
        standard.eval()
    # Filled in place, batch by batch: the batches' list, its concatenation and their stack were the
    # cache three times over at once (3 x 363 MB for the embedded default's 9,856 images at 6x6x128),
    # the peak of the whole train-xcos job.  The same values and the same contiguous layout.
    maps = embeddings = None
    for start in tqdm(range(0, count, batch_size), desc="xcos feature cache", unit="batch", leave=False,
                      disable=not progress):
        stop = min(start + batch_size, count)
        images = [decode(i) for i in range(start, stop)]
        for orientation in (0, 1):
            views = [image[:, ::-1] if orientation else image for image in images]
            own = torch.stack([to_tensor(fit_to_size(v, input_size)) for v in views])
            other = (torch.stack([to_tensor(fit_to_size(v, standard_size)) for v in views])
                     if standard is not None else None)
            feature_map, embedding = _frozen_outputs(backbone, standard, own, other)
            if maps is None:
                maps = feature_map.new_empty((2, count, *feature_map.shape[1:]))
                embeddings = embedding.new_empty((2, count, *embedding.shape[1:]))
            maps[orientation, start:stop] = feature_map
            embeddings[orientation, start:stop] = embedding
    if maps is None:  # no images: the shapes of an empty cache are unknown, as torch.cat of nothing
        raise ValueError("xcos feature cache: no images")
    return FeatureCache(maps, embeddings)


@dataclass
class PairSetCache:
    """A pair set's frozen outputs: ``first``/``second`` feature maps (P, C, h, w), ``target``
    (P,) float64 standard cosine, ``issame`` (P,) bool."""

    first: torch.Tensor
    second: torch.Tensor
    target: np.ndarray
    issame: np.ndarray


def pair_set_cache(backbone: nn.Module, standard: nn.Module | None, pairs, input_size, standard_size=None, *,
                   batch_pairs: int = 128) -> PairSetCache:
    """Feature maps and standard cosine of every pair of ``pairs`` (a :class:`~facetrust.data.pairset.PairSet`),
    original images only (F0)."""
    backbone.eval()
    if standard is not None:
        standard.eval()
    first, second, target = [], [], []
    for start in range(0, len(pairs), batch_pairs):
        index = np.arange(start, min(start + batch_pairs, len(pairs)))
        outputs = []
        for side in (0, 1):
            own = pairs.faces(2 * index + side, input_size)
            other = pairs.faces(2 * index + side, standard_size) if standard is not None else None
            outputs.append(_frozen_outputs(backbone, standard, own, other))
        first.append(outputs[0][0])
        second.append(outputs[1][0])
        target.append((outputs[0][1] * outputs[1][1]).sum(1).double().numpy())
    return PairSetCache(torch.cat(first), torch.cat(second), np.concatenate(target), np.asarray(pairs.issame, bool))
