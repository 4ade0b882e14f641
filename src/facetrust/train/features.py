"""Backbone outputs computed once for the modules fitted on a frozen backbone.

The backbone is frozen, so its embeddings and feature maps are computed once (batched, no grad,
flip off) and cached in memory-mapped files: the fitted module's epochs then cost only the module,
and the set never has to fit in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from facetrust.errors import InputError


def extract_features(
    backbone: nn.Module,
    dataset,
    batch_size: int,
    cache_dir: str | os.PathLike,
    device: torch.device,
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the frozen backbone once over ``dataset`` (a :class:`~facetrust.train.dataset.RecordDataset`:
    uint8 images, normalised per batch), no grad.

    Returns ``(embeddings (N, D) float32, feature_maps (N, C, h, w) float32, labels (N,) int64)``;
    the two float arrays are ``np.memmap`` files in ``cache_dir`` (so the set never has to fit in
    memory). Order = dataset order.
    """
    from facetrust.train.loader import batch_to_device, make_loader

    cache_dir = Path(cache_dir)
    n = len(dataset)
    if n == 0:
        raise InputError("fit-head: the training set has no images")
    loader = make_loader(dataset, batch_size, num_workers=num_workers, device=device)
    backbone = backbone.to(device).eval()
    embeddings = feature_maps = None
    labels = np.empty(n, dtype=np.int64)
    start = 0
    with torch.no_grad():
        for images, batch_labels in tqdm(loader, desc="fit-head: backbone features", unit="batch"):
            inputs, _ = batch_to_device(images, batch_labels, device)
            embedding, feature_map = backbone(inputs, return_feature_map=True)
            if embeddings is None:  # shapes are known after the first batch
                embeddings = np.lib.format.open_memmap(
                    cache_dir / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, embedding.shape[1])
                )
                feature_maps = np.lib.format.open_memmap(
                    cache_dir / "feature_maps.npy", mode="w+", dtype=np.float32, shape=(n, *feature_map.shape[1:])
                )
            stop = start + len(images)
            embeddings[start:stop] = embedding.float().cpu().numpy()
            feature_maps[start:stop] = feature_map.float().cpu().numpy()
            labels[start:stop] = batch_labels.numpy()
            start = stop
    return embeddings, feature_maps, labels
