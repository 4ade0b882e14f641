"""The faces of a ``.bin`` pair set, decoded on demand at a model's input size.

Pairs are images (2k, 2k + 1) (docs/FORMATS.md "`.bin` verification sets"); image ``i`` of
``<set>.bin`` is named ``<set>/<i>``, the key that ``quality.csv`` and ``occluders.csv`` use.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from facetrust.data.transforms import fit_to_size, to_tensor
from facetrust.errors import InputError


class PairSet:
    """``len()`` pairs; ``issame`` (P,) bool; ``faces(indices, size)`` -> (n, 3, H, W) tensor."""

    def __init__(self, path: str | os.PathLike):
        from facetrust.data.binset import load_bin

        self.path = Path(path)
        if self.path.suffix != ".bin":
            raise InputError(f"{self.path}: not a .bin pair set")
        self.payloads, issame = load_bin(self.path)
        self.issame = np.asarray(issame, dtype=bool)
        self.name = self.path.stem
        if len(self.payloads) != 2 * self.issame.size:
            raise InputError(f"{self.path}: {len(self.payloads)} images for {self.issame.size} pairs (need 2 per pair)")

    def __len__(self) -> int:
        return int(self.issame.size)

    def key(self, image: int) -> str:
        """The image's name in ``quality.csv`` / ``occluders.csv``."""
        return f"{self.name}/{int(image)}"

    def pixels(self, image: int) -> np.ndarray:
        """Image ``image`` as uint8 H x W x 3 RGB."""
        try:
            with Image.open(io.BytesIO(self.payloads[int(image)])) as decoded:
                return np.asarray(decoded.convert("RGB"))
        except (OSError, ValueError) as error:
            raise InputError(f"{self.path}: image {image} does not decode: {error}") from None

    def faces(self, images: Sequence[int], size: Sequence[int]) -> torch.Tensor:
        """(n, 3, H, W) normalised tensors of ``images`` at ``size`` (``fit_to_size``, as embed)."""
        return torch.stack([to_tensor(fit_to_size(self.pixels(i), size)) for i in images])

    def image_size(self) -> tuple[int, int]:
        """(H, W) of the stored crops (of the first image)."""
        return tuple(self.pixels(0).shape[:2])
