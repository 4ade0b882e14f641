"""A contact sheet of a written synthetic benchmark, for the README and for eyeballing."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facetrust.data.insightface import InsightFaceRecord
from facetrust.data.recordio import unpack
from facetrust.io import atomic_path

_LANDMARK_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 128, 255), (255, 255, 0), (255, 0, 255)]


def _decode(payload: bytes, tile: int) -> Image.Image:
    with Image.open(io.BytesIO(payload)) as image:
        return image.convert("RGB").resize((tile, tile), Image.BICUBIC)


def _train_rows(train_dir: Path, identities: int, per_identity: int, tile: int) -> list[list[Image.Image]]:
    record = InsightFaceRecord(train_dir)
    try:
        rows = []
        if record.header is None:
            return rows
        first_identity_key = record.header[0]
        for label in range(min(identities, record.num_classes)):
            span, _ = unpack(record.reader.read_idx(first_identity_key + label))
            start, end = (int(v) for v in span.label[:2])
            keys = range(start, min(end, start + per_identity))
            rows.append([_decode(unpack(record.reader.read_idx(k))[1], tile) for k in keys])
        return rows
    finally:
        record.close()


def _loose_row(ijb_dir: Path, count: int, tile: int) -> list[Image.Image]:
    meta = next((ijb_dir / "meta").glob("*_name_5pts_score.txt"))
    tiles = []
    for line in meta.read_text().splitlines()[:count]:
        fields = line.split()
        with Image.open(ijb_dir / "loose_crop" / fields[0]) as image:
            canvas = image.convert("RGB")
        scale = tile / canvas.width
        canvas = canvas.resize((tile, tile), Image.BICUBIC)
        draw = ImageDraw.Draw(canvas)
        points = np.asarray(fields[1:11], dtype=float).reshape(5, 2) * scale
        for (x, y), colour in zip(points, _LANDMARK_COLOURS):
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((2, 2), f"{float(fields[11]):.2f}", fill=(255, 255, 255))
        tiles.append(canvas)
    return tiles


def contact_sheet(out_dir: str | os.PathLike, png_path: str | os.PathLike, identities: int = 6,
                  images_per_identity: int = 8, tile: int = 96) -> Path:
    """Write a PNG grid: rows of training images (one identity per row), then loose crops.

    Loose crops show the 5 landmarks of the ``name_5pts_score`` file (red left eye, green right
    eye, blue nose, yellow/magenta mouth corners) and the detector score.  Returns the path.
    """
    out_dir = Path(out_dir)
    rows = _train_rows(out_dir / "train", identities, images_per_identity, tile)
    ijb_dirs = sorted((out_dir / "ijb").glob("*/loose_crop"))
    if ijb_dirs:
        loose = _loose_row(ijb_dirs[0].parent, 2 * images_per_identity, tile)
        rows += [loose[:images_per_identity], loose[images_per_identity:]]
    rows = [row for row in rows if row]
    columns = max(len(row) for row in rows)
    sheet = Image.new("RGB", (columns * tile, len(rows) * tile), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            sheet.paste(image, (c * tile, r * tile))
    png_path = Path(png_path)
    with atomic_path(png_path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return png_path
