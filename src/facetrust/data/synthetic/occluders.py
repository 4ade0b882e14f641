"""Where the synthetic benchmark put each occluder: ``occluders.csv`` beside ``quality.csv``.

One row per row of ``quality.csv`` (same order, same ``set`` and ``image`` keys)::

    set, image, x0, y0, x1, y1, loose_x0, loose_y0, loose_x1, loose_y1

``x0 … y1`` is the occluder's box in the **aligned crop** of ``image_size`` pixels (the crop the
training set and the ``.bin`` pair set store, and the one the align stage writes for IJB at the
same size): it covers pixel columns ``x0 <= c < x1`` and rows ``y0 <= r < y1`` (exact integers for
aligned sets; for IJB loose crops the bounding box of the occluder mapped with the true face
placement, see :func:`facetrust.data.synthetic.images.loose_box_in_aligned_frame`).  ``loose_*``
is the exact box in the IJB loose crop, empty for aligned sets.  All cells but ``set`` and
``image`` are empty for an image without an occluder.

**Clean twins** (``pairs/<set>.twins.npz`` beside each pair set): the renderer draws every
occluder's parameters and paints it only when asked, so each occluded image has a twin rendered
from the same draws (identity, pose, light, blur, noise, JPEG) without the patch.  The file holds
``images`` (int64: .bin image numbers that carry an occluder) and ``pixels`` (uint8, N x H x W x 3:
each twin's decoded JPEG).  :func:`clean_twin` composes the twin used everywhere: the occluded
image's own pixels outside the box and the clean render's inside, so the two differ in the box
only (the patch's blur/JPEG spill of a pixel or two past the box edge stays in both).

A model that reads a resized crop (``input_size`` other than ``image_size``) sees the box through
:func:`box_in_input`, which mirrors :func:`facetrust.train.dataset.fit_to_size`.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from facetrust.errors import InputError

OCCLUDERS_NAME = "occluders.csv"
TWINS_SUFFIX = ".twins.npz"
OCCLUDER_COLUMNS = ("set", "image", "x0", "y0", "x1", "y1", "loose_x0", "loose_y0", "loose_x1", "loose_y1")

Box = tuple[float, float, float, float]


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def occluder_cells(set_name: str, image: str, aligned: Sequence[float] | None,
                   loose: Sequence[float] | None) -> list[str]:
    """One ``occluders.csv`` row (see the module docstring)."""
    aligned_cells = [_format(v) for v in aligned] if aligned is not None else [""] * 4
    loose_cells = [_format(v) for v in loose] if loose is not None else [""] * 4
    return [set_name, image, *aligned_cells, *loose_cells]


def read_occluders(path: str | os.PathLike) -> dict[str, Box | None]:
    """``{image key: aligned-crop box (x0, y0, x1, y1) or None}`` from an ``occluders.csv``.

    Raises InputError naming the file and the line for a missing column or a malformed box."""
    path = Path(path)
    try:
        handle = path.open(newline="")
    except FileNotFoundError:
        raise InputError(f"{path}: occluder file missing (written by 'facetrust synth')") from None
    boxes: dict[str, Box | None] = {}
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in OCCLUDER_COLUMNS[:6] if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            cells = [row[c] for c in ("x0", "y0", "x1", "y1")]
            if all(cell == "" for cell in cells):
                boxes[row["image"]] = None
                continue
            try:
                x0, y0, x1, y1 = (float(cell) for cell in cells)
            except ValueError:
                raise InputError(f"{path}: line {line} ({row['image']}): box {cells} is not four numbers") from None
            if not (x1 > x0 and y1 > y0):
                raise InputError(f"{path}: line {line} ({row['image']}): empty box {cells}")
            boxes[row["image"]] = (x0, y0, x1, y1)
    return boxes


def box_in_input(box: Sequence[float], image_size: Sequence[int], input_size: Sequence[int]) -> Box:
    """``box`` of an ``image_size`` (H, W) crop in the ``input_size`` (H, W) tensor a model reads.

    Mirrors ``fit_to_size``: centre crop to the input's aspect ratio, then a resize."""
    height, width = (int(v) for v in image_size)
    target_h, target_w = (int(v) for v in input_size)
    top = left = 0
    if height * target_w > width * target_h:
        crop_h = round(width * target_h / target_w)
        top, height = (height - crop_h) // 2, crop_h
    elif height * target_w < width * target_h:
        crop_w = round(height * target_w / target_h)
        left, width = (width - crop_w) // 2, crop_w
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = target_w / width, target_h / height
    x = np.clip([(x0 - left) * sx, (x1 - left) * sx], 0, target_w)
    y = np.clip([(y0 - top) * sy, (y1 - top) * sy], 0, target_h)
    return float(x[0]), float(y[0]), float(x[1]), float(y[1])


def box_mask(box: Sequence[float], size: Sequence[int]) -> np.ndarray:
    """Boolean (H, W) mask of the pixels whose centres lie inside ``box`` (pixel edges at integers)."""
    height, width = (int(v) for v in size)
    x0, y0, x1, y1 = (float(v) for v in box)
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    return ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]


def write_clean_twins(path: str | os.PathLike, images: Sequence[int], pixels: Sequence[np.ndarray],
                      size: Sequence[int]) -> None:
    """Write a ``<set>.twins.npz`` (module docstring); atomically, without pickles."""
    from facetrust.io import atomic_path

    stack = (np.stack(pixels).astype(np.uint8) if len(pixels)
             else np.zeros((0, int(size[0]), int(size[1]), 3), np.uint8))
    with atomic_path(Path(path), suffix=".npz") as tmp, tmp.open("wb") as handle:
        np.savez_compressed(handle, images=np.asarray(images, dtype=np.int64), pixels=stack)


def read_clean_twins(path: str | os.PathLike) -> dict[int, np.ndarray]:
    """``{.bin image number: clean render (H, W, 3) uint8}`` from a ``<set>.twins.npz``."""
    path = Path(path)
    from facetrust.npz import read_npz  # declared sizes checked, no pickles, errors naming the file and key

    data = read_npz(path, ["images", "pixels"], what="clean-twin file (written by 'facetrust synth')")
    images, pixels = data["images"], data["pixels"]
    if images.ndim != 1 or pixels.ndim != 4 or pixels.shape[0] != images.size or pixels.shape[3] != 3:
        raise InputError(f"{path}: images {images.shape} and pixels {pixels.shape} do not match")
    return {int(i): pixels[k] for k, i in enumerate(images.tolist())}


def clean_twin(occluded: np.ndarray, clean: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The clean twin of an occluded (H, W, 3) image: its own pixels outside ``box``, the clean
    render's inside (identical outside the box by construction)."""
    if occluded.shape != clean.shape:
        raise InputError(f"clean twin: image {occluded.shape} and clean render {clean.shape} differ in shape")
    twin = occluded.copy()
    inside = box_mask(box, occluded.shape[:2])
    twin[inside] = clean[inside]
    return twin
