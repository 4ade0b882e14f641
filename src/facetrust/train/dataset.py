"""Training samples read straight from an InsightFace RecordIO set, one record at a time.

Nothing is decoded ahead: each sample is read and decoded when it is asked for (so memory stays
flat and DataLoader workers share the work).  A set small enough to hold decoded
(:data:`DECODED_CACHE_BYTES`: the embedded default's 9,856 images at 32 x 32 are 30 MB) keeps each
sample as decoded the first time, in the process that trains (not in DataLoader workers, which
start afresh every epoch), so later epochs skip the JPEG decode and the resize; the pixels are the
same bytes either way, mirrored afresh each epoch.  Every random choice is a function of
``(seed, epoch, index)``, so a sample looks the same whichever worker loads it and whether or not
the run was resumed.

Samples are uint8 pixels, not yet normalised: a DataLoader batch is a quarter of the float bytes
to pass between processes (and to the GPU), and :func:`facetrust.data.transforms.normalize_batch`
turns it into the network's input in one pass per batch, giving every pixel the float it had when
samples were normalised one by one.  A loader asks for a whole batch at once
(:meth:`RecordDataset.__getitems__`): each JPEG is decoded straight into its slot of the batch.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Sequence as SequenceABC
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from facetrust.data.insightface import InsightFaceRecord
from facetrust.data.transforms import fit_to_size, normalize_chw, to_tensor  # noqa: F401 (re-exported)
from facetrust.train.flip_coins import flip_coins

COIN_BLOCK = 4096  # flip coins drawn per block of sample indices (a few µs per block)
#: A set whose decoded samples take at most this many bytes keeps them after their first decode
#: (one uint8 N x H x W x 3 array, filled as samples are first asked for).  Reading, decoding and
#: resizing a sample of the embedded default takes ~0.07 ms, about 5 % of a training step's time
#: per sample on a CPU core; a real training set (millions of images) is far above the limit.
DECODED_CACHE_BYTES = 256 << 20


class SampleBatch(SequenceABC):
    """A batch as :meth:`RecordDataset.__getitems__` returns it: ``images`` uint8 N x 3 x H x W (a
    view of N x H x W x 3 memory) and ``labels`` int64 N.  :func:`facetrust.train.loader.collate_samples`
    passes the two tensors on as they are; as a sequence of ``(image, label)`` pairs it also suits
    any other collate function."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, k: int):
        return self.images[k], int(self.labels[k])


class RecordDataset(Dataset):
    """``dataset[i] -> (uint8 image 3 x H x W, int label)``; ``dataset.__getitems__(indices)`` -> a
    :class:`SampleBatch`.  Images are RGB at ``input_size`` (cropped/resized by
    :func:`~facetrust.data.transforms.fit_to_size`), mirrored by the seeded coin of :meth:`flips`.

    ``source`` is an ``InsightFaceRecord`` (or anything with ``labels``, ``__len__`` and
    ``decode(i) -> (uint8 HxWx3 RGB, label)``, optionally ``decode(i, out=array)``); a path opens
    one.  Call ``set_epoch`` before each epoch so flips change between epochs.
    """

    def __init__(self, source, input_size: Sequence[int], flip: bool = True, seed: int = 0):
        if isinstance(source, (str, os.PathLike)):
            source = InsightFaceRecord(source)
        self.source = source
        self.input_size = tuple(int(v) for v in input_size)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.epoch = 0
        self._decodes_into = "out" in inspect.signature(source.decode).parameters
        # the samples kept decoded (pixels N x H x W x 3, labels N, filled N): _decoded_samples
        self._decoded = None
        self._keeps_decoded = len(self) * math.prod(self.input_size) * 3 <= DECODED_CACHE_BYTES

    def __getstate__(self) -> dict:
        # what a DataLoader worker gets: no decoded samples (and it keeps none: _decoded_samples)
        state = dict(self.__dict__)
        state["_decoded"] = None
        return state

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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = np.empty((*self.input_size, 3), dtype=np.uint8)
        label = self._load_into(int(index), pixels)
        return torch.from_numpy(pixels).permute(2, 0, 1), label

    def __getitems__(self, indices: Sequence[int]) -> SampleBatch:
        """The samples ``indices`` as one batch, each decoded into its slot (what a DataLoader with
        automatic batching calls instead of ``__getitem__`` per index)."""
        indices = [int(i) for i in indices]
        images = _empty_batch((len(indices), *self.input_size, 3))
        slots = images.numpy()
        labels = np.empty(len(indices), dtype=np.int64)
        for k, index in enumerate(indices):
            labels[k] = self._load_into(index, slots[k])
        return SampleBatch(images.permute(0, 3, 1, 2), torch.from_numpy(labels))

    def _load_into(self, index: int, out: np.ndarray) -> int:
        """Decode sample ``index`` into ``out`` (uint8 H x W x 3, C-contiguous), mirrored by its coin;
        return its label."""
        flip = self.flips(index)
        decoded = self._decoded_samples()
        if decoded is not None:
            pixels, labels, filled = decoded
            if not filled[index]:
                labels[index] = self._decode_into(index, pixels[index])
                filled[index] = True
            if flip:
                cv2.flip(pixels[index], 1, dst=out)
            else:
                out[...] = pixels[index]
            return int(labels[index])
        # A mirrored sample is decoded beside its slot, then mirrored into it by one copy.
        target = self._scratch() if flip else out
        label = self._decode_into(index, target)
        if flip:
            # OpenCV's flip: a fifth of the time of torch.flip + copy on 3-byte pixels, and numpy's
            # negative-stride copy is ten times slower still.
            cv2.flip(target, 1, dst=out)
        return label

    def _decode_into(self, index: int, out: np.ndarray) -> int:
        """Sample ``index`` unmirrored in ``out``; its label."""
        if self._decodes_into:
            image, label = self.source.decode(index, out=out)
        else:
            image, label = self.source.decode(index)
        if image is not out:  # another size (or a source without `out`): crop or resize
            out[...] = fit_to_size(image, self.input_size)
        return int(label)

    def _decoded_samples(self):
        """``(pixels, labels, filled)`` of the samples kept decoded, made on the first call; None in a
        DataLoader worker or for a set above :data:`DECODED_CACHE_BYTES` (as it was when the dataset
        was made)."""
        if self._decoded is None and self._keeps_decoded and get_worker_info() is None:
            self._decoded = (np.empty((len(self), *self.input_size, 3), dtype=np.uint8),
                             np.empty(len(self), dtype=np.int64), np.zeros(len(self), dtype=bool))
        return self._decoded

    def _scratch(self) -> np.ndarray:
        """A uint8 H x W x 3 buffer of this process, reused for every mirrored sample."""
        scratch = getattr(self, "_scratch_pixels", None)
        if scratch is None:
            scratch = self._scratch_pixels = np.empty((*self.input_size, 3), dtype=np.uint8)
        return scratch


def _empty_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor of ``shape``; in shared memory inside a DataLoader worker, as
    ``default_collate`` does, so sending the batch to the main process copies nothing."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


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
