"""Image preprocessing shared by training, embedding and explanation: crop/resize to a model's
input size, and the pixel normalisation the models were trained with."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

# InsightFace arcface_torch (dataset.py): ToTensor() then Normalize(mean=0.5, std=0.5), i.e.
# (x - 127.5) / 127.5 -> [-1, 1].  (The older MXNet recipes used (x - 127.5) / 128.)
PIXEL_MEAN = 127.5
PIXEL_SCALE = 127.5


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 RGB -> float32 3 x H x W in [-1, 1] (InsightFace normalisation)."""
    image = np.ascontiguousarray(image)
    if not image.flags.writeable:  # e.g. np.asarray of a PIL image: torch.from_numpy warns on those
        image = image.copy()
    return normalize_chw(torch.from_numpy(image).permute(2, 0, 1))


def normalize_chw(image: torch.Tensor) -> torch.Tensor:
    """uint8 3 x H x W (or any shape, any strides; CPU) -> contiguous float32 (x - 127.5) / 127.5.

    One conversion pass and two in-place float32 passes; the floats equal numpy's
    ``(x.astype(np.float32) - 127.5) / 127.5`` (the same two IEEE operations per pixel).
    """
    out = torch.empty(image.shape, dtype=torch.float32)
    out.copy_(image)
    return out.sub_(PIXEL_MEAN).div_(PIXEL_SCALE)


def normalize_batch(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 N x 3 x H x W pixels (any strides) -> contiguous float32 (x - 127.5) / 127.5 on ``device``
    (default: where ``images`` are), the network's input.

    Every element gets exactly the float :func:`normalize_chw` gives it, on every device, so batches
    normalised here reach the network bit-identical to samples normalised one by one.  On the CPU it
    is the same two IEEE operations; elsewhere the uint8 batch (a quarter of the float bytes) is
    moved first and each pixel looks its float up in a 256-entry table computed on the CPU, because
    CUDA divides by a scalar as a multiplication by its reciprocal, which differs in the last bit
    for 126 of the 256 values.
    """
    device = images.device if device is None else torch.device(device)
    if device.type == "cpu":
        return normalize_chw(images.cpu())
    return _normalize_by_table(images, device)


def _normalize_by_table(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """:func:`normalize_batch` off the CPU: move the uint8 batch, then look every pixel's float up."""
    indices = images.to(device, non_blocking=True).reshape(-1).long()  # reshape: NCHW element order
    return _pixel_table(device).index_select(0, indices).view(images.shape)


_PIXEL_TABLES: dict[torch.device, torch.Tensor] = {}


def _pixel_table(device: torch.device) -> torch.Tensor:
    """The float of every uint8 value, computed on the CPU by :func:`normalize_chw`, kept on ``device``."""
    if device not in _PIXEL_TABLES:
        _PIXEL_TABLES[device] = normalize_chw(torch.arange(256, dtype=torch.uint8)).to(device)
    return _PIXEL_TABLES[device]


def fit_to_size(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Centre-crop ``image`` to the aspect ratio of ``size`` = (height, width), then resize to it.

    A 112x112 ArcFace crop becomes a 112x96 SphereFace crop by dropping 8 columns each side
    (the 96x112 template is the 112x112 one shifted by 8 px, docs/FORMATS.md "Alignment"), with no
    resampling.  Other sizes are resized with PIL's bilinear filter (antialiased when shrinking).
    """
    target_h, target_w = (int(v) for v in size)
    height, width = image.shape[:2]
    if (height, width) == (target_h, target_w):
        return image
    # Crop the longer side so that height/width == target_h/target_w (integer rounding).
    if height * target_w > width * target_h:
        crop_h = round(width * target_h / target_w)
        top = (height - crop_h) // 2
        image = image[top : top + crop_h]
    elif height * target_w < width * target_h:
        crop_w = round(height * target_w / target_h)
        left = (width - crop_w) // 2
        image = image[:, left : left + crop_w]
    if image.shape[:2] == (target_h, target_w):
        return np.ascontiguousarray(image)
    from PIL import Image

    resized = Image.fromarray(np.ascontiguousarray(image)).resize((target_w, target_h), Image.BILINEAR)
    return np.array(resized, dtype=np.uint8)  # writable (np.asarray of a PIL image is not)
