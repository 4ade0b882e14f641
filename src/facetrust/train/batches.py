"""Index batches for the modules fitted on cached backbone outputs (deterministic given ``rng``)."""

from __future__ import annotations

import numpy as np


def identity_batches(
    labels: np.ndarray, batch_size: int, images_per_class: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Index batches made of groups of ``images_per_class`` images of one identity (PFE's sampler:
    every batch has genuine pairs). Classes are shuffled and chunked; chunks of one image are
    dropped (they make no pair). Deterministic given ``rng``."""
    groups: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        for begin in range(0, len(members), images_per_class):
            chunk = members[begin : begin + images_per_class]
            if len(chunk) >= 2:
                groups.append(chunk)
    order = rng.permutation(len(groups))
    batches, current, size = [], [], 0
    for g in order:
        current.append(groups[g])
        size += len(groups[g])
        if size >= batch_size:
            batches.append(np.concatenate(current))
            current, size = [], 0
    if current:
        batches.append(np.concatenate(current))
    return batches


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A permutation of ``range(n)`` cut into batches of ``batch_size`` (the last may be shorter)."""
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
