"""The ``decode`` stage's check: every record of a training RecordIO decodes to an image of the
declared size with a label in range; writes a manifest (counts, classes, size, sha256 of the files)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from facetrust.data.insightface import InsightFaceRecord
from facetrust.errors import InputError
from facetrust.io import write_text_atomic


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_dataset(path: str | Path, out: str | Path | None = None) -> dict:
    """Decode every image record of the InsightFace RecordIO set in ``path``; InputError on the first bad one."""
    rec_dir = Path(path)
    dataset = InsightFaceRecord(rec_dir)
    expected_size = tuple(dataset.image_size) if dataset.image_size else None
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    for i in tqdm(range(len(dataset)), desc=f"decode {rec_dir.name}", unit="img"):
        payload, label = dataset.read(i)
        key = int(dataset.image_keys[i])
        try:
            with Image.open(io.BytesIO(payload)) as image:
                image.load()
                size = (image.height, image.width)
        except (OSError, ValueError) as error:
            raise InputError(f"{rec_dir}: record {key} does not decode as an image: {error}") from None
        if expected_size and size != expected_size:
            raise InputError(f"{rec_dir}: record {key} is {size[0]}x{size[1]}, property says "
                             f"{expected_size[0]}x{expected_size[1]}")
        if not 0 <= label < dataset.num_classes:
            raise InputError(f"{rec_dir}: record {key} has label {label}, outside 0..{dataset.num_classes - 1}")
        counts[label] += 1
    manifest = {
        "path": str(rec_dir),
        "images": len(dataset),
        "num_classes": int(dataset.num_classes),
        "image_size": list(expected_size) if expected_size else None,
        "images_per_class": {"min": int(counts.min()), "max": int(counts.max()), "mean": float(counts.mean())},
        "empty_classes": int((counts == 0).sum()),
        "sha256": {name: _sha256(rec_dir / name) for name in ("train.rec", "train.idx") if (rec_dir / name).exists()},
    }
    if out:
        write_text_atomic(out, json.dumps(manifest, indent=2) + "\n")
    return manifest
