"""Image payloads to RGB pixels for the training and test paths: the checked decoder of
:mod:`facetrust.data.images` (libjpeg-turbo through simplejpeg for JPEGs, bounded in pixels,
strict about corrupt scan data; Pillow for other formats), in the two layouts callers want."""

from __future__ import annotations

import numpy as np

from facetrust.data.images import decode_image


def decode_rgb(payload: bytes, where: str = "image") -> np.ndarray:
    """RGB pixels of an encoded image as an H×W×3 uint8 array (C-contiguous, writable); InputError naming
    ``where`` for a bad image."""
    return np.require(decode_image(payload, where), requirements=["C", "W"])


def decode_rgb_tensor(payload: bytes, where: str = "image"):
    """RGB pixels of an encoded image as a 3×H×W uint8 ``torch.Tensor`` (a view, no copy)."""
    import torch

    return torch.from_numpy(decode_rgb(payload, where)).permute(2, 0, 1)
