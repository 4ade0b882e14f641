"""Training samples read straight from an InsightFace RecordIO set, one record at a time.

Nothing is decoded ahead: each ``__getitem__`` reads and decodes one JPEG (so memory stays flat
and DataLoader workers share the work).  Every random choice is a function of
``(seed, epoch, index)``, so a sample looks the same whichever worker loads it and whether or not
the run was resumed.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from facetrust.data.insightface import InsightFaceRecord
from facetrust.data.transforms import fit_to_size, normalize_chw, to_tensor
from facetrust.train.flip_coins import flip_coins

COIN_BLOCK = 4096  # flip coins drawn per block of sample indices (a few µs per block)

class RecordDataset(Dataset):
    """``dataset[i] -> (image tensor 3 x H x W in [-1, 1], label int64 tensor)``.

    ``source`` is an ``InsightFaceRecord`` (or anything with ``labels``, ``__len__`` and
    ``decode(i) -> (uint8 HxWx3 RGB, label)``); a path opens one.  Call ``set_epoch`` before each
    epoch so flips change between epochs.
    """

    def __init__(self, source, input_size: Sequence[int], flip: bool = True, seed: int = 0):
        if isinstance(source, (str, os.PathLike)):
            source = InsightFaceRecord(source)
        self.source = source
        self.input_size = tuple(int(v) for v in input_size)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.epoch = 0

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.source.labels, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return int(getattr(self.source, "num_classes", int(self.labels.max()) + 1))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def flips(self, index: int) -> bool:
        """Whether sample ``index`` is mirrored this epoch: a coin from Generator(seed, epoch, index).

        Coins are drawn for a block of ``COIN_BLOCK`` indices at once (:func:`flip_coins`, the same
        bits as one Generator per sample at a fiftieth of the cost) and kept for the epoch.
        """
        if not self.flip:
            return False
        index = int(index)
        coins = getattr(self, "_coins", None)
        if coins is None or coins["drawn_for"] != (self.seed, self.epoch):
            coins = self._coins = {"drawn_for": (self.seed, self.epoch)}
        block = index // COIN_BLOCK
        if block not in coins:
            coins[block] = flip_coins(self.seed, self.epoch, np.arange(block * COIN_BLOCK, (block + 1) * COIN_BLOCK))
        return bool(coins[block][index - block * COIN_BLOCK])

    def __getitem__(self, index: int):
        if hasattr(self.source, "decode_tensor"):
            image, label = self.source.decode_tensor(int(index))
            if tuple(image.shape[1:]) != self.input_size:
                image = torch.from_numpy(fit_to_size(image.permute(1, 2, 0).numpy(), self.input_size)).permute(2, 0, 1)
            if self.flips(index):
                image = image.flip(2)
            return normalize_chw(image), torch.tensor(int(label), dtype=torch.int64)
        image, label = self.source.decode(int(index))
        image = fit_to_size(image, self.input_size)
        if self.flips(index):
            image = image[:, ::-1]
        return to_tensor(image), torch.tensor(int(label), dtype=torch.int64)


class EpochSampler(Sampler[int]):
    """Single-process order: a permutation drawn from Generator(seed + epoch), optionally
    skipping the first ``skip`` indices (resuming inside an epoch)."""

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True):
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip


class SkippingSampler(Sampler[int]):
    """Wrap a sampler with ``set_epoch`` (e.g. DistributedSampler) so that it can skip a prefix."""

    def __init__(self, base):
        self.base = base
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.base)[self.skip :])

    def __len__(self) -> int:
        return len(self.base) - self.skip


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` in each worker from torch's
    per-worker seed (itself derived from the loader's seeded generator)."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
