"""The DataLoader every trainer reads a :class:`~facetrust.train.dataset.RecordDataset` through,
and the step that turns its batches into the network's input.

The loader yields ``(images, labels)``: uint8 N x 3 x H x W and int64 N, as
:meth:`RecordDataset.__getitems__` built them (one call per batch, each JPEG decoded into its
slot; in a worker the batch is in shared memory already, so passing it to the main process copies
nothing).  :func:`batch_to_device` then moves the uint8 batch (a quarter of the float bytes) and
normalises it there once.

Workers are not persistent: the dataset's epoch (the flip coins) reaches a worker when it starts,
so each epoch starts its own workers, which also reopen the ``.rec`` file in their own process.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler, default_collate

from facetrust.data.transforms import normalize_batch
from facetrust.train.dataset import SampleBatch, worker_init


def collate_samples(samples):
    """A :class:`SampleBatch` as its ``(images, labels)`` tensors, unchanged; a list of
    ``(image, label)`` samples stacked by ``default_collate``."""
    if isinstance(samples, SampleBatch):
        return samples.images, samples.labels
    return default_collate(samples)


def make_loader(dataset, batch_size: int, *, sampler: Sampler | None = None, num_workers: int = 0,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                drop_last: bool = False) -> DataLoader:
    """A DataLoader of ``(uint8 images N x 3 x H x W, int64 labels)`` batches over ``dataset`` in
    ``sampler``'s order (the dataset's order when None); workers seeded by :func:`worker_init` from
    ``generator``; batches in pinned memory when ``device`` is a CUDA device."""
    return DataLoader(dataset, batch_size=int(batch_size), sampler=sampler, drop_last=drop_last,
                      num_workers=int(num_workers), collate_fn=collate_samples, worker_init_fn=worker_init,
                      generator=generator, pin_memory=torch.device(device).type == "cuda")


def batch_to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device | str):
    """``(float32 images normalised (x - 127.5) / 127.5, int64 labels)`` on ``device``
    (:func:`~facetrust.data.transforms.normalize_batch`)."""
    return normalize_batch(images, device), labels.to(device, non_blocking=True)
