"""The ``decode`` stage's check: every record of a training RecordIO decodes to an image of the
declared size with a label in range; writes a manifest (counts, classes, size, sha256 of the files).

A bad record (undecodable, a decompression bomb, corrupt JPEG data, the wrong size, a label that is
not a class) stops the check (``on_bad_image: fail``, the default) or is counted, logged and left
out of the counts (``skip``); the manifest then lists how many were skipped and the first messages.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facetrust.data.images import BadImagePolicy, decode_image
from facetrust.data.insightface import InsightFaceRecord
from facetrust.errors import InputError
from facetrust.io import write_text_atomic


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_record(dataset: InsightFaceRecord, i: int, expected_size) -> int:
    """Decode image ``i``; return its label.  InputError names the set and key of a bad one."""
    key = int(dataset.image_keys[i])
    payload, label = dataset.read(i)
    height, width = decode_image(payload, dataset.reader.rec_path, f"key {key}").shape[:2]
    if expected_size and (height, width) != expected_size:
        raise InputError(f"{dataset.rec_dir}: record {key} is {height}x{width}, property says "
                         f"{expected_size[0]}x{expected_size[1]}")
    if not 0 <= label < dataset.num_classes:
        raise InputError(f"{dataset.rec_dir}: record {key} has label {label}, outside 0..{dataset.num_classes - 1}")
    return label


def verify_dataset(path: str | Path, out: str | Path | None = None, on_bad_image: str = "fail") -> dict:
    """Decode every image record of the InsightFace RecordIO set in ``path``; return the manifest.

    ``on_bad_image="fail"``: InputError on the first bad record.  ``"skip"``: bad records are
    logged, counted and left out of the class counts; the manifest adds ``on_bad_image``,
    ``skipped`` and ``skipped_examples``.
    """
    rec_dir = Path(path)
    policy = BadImagePolicy(on_bad_image, stage=f"data verify {rec_dir}")
    dataset = InsightFaceRecord(rec_dir)
    expected_size = tuple(dataset.image_size) if dataset.image_size else None
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    for i in tqdm(range(len(dataset)), desc=f"decode {rec_dir.name}", unit="img"):
        try:
            counts[_check_record(dataset, i, expected_size)] += 1
        except InputError as error:
            policy.handle(error)
    policy.log_total()
    manifest = {
        "path": str(rec_dir),
        "images": len(dataset),
        "num_classes": int(dataset.num_classes),
        "image_size": list(expected_size) if expected_size else None,
        "images_per_class": {"min": int(counts.min()), "max": int(counts.max()), "mean": float(counts.mean())},
        "empty_classes": int((counts == 0).sum()),
        "sha256": {name: _sha256(rec_dir / name) for name in ("train.rec", "train.idx") if (rec_dir / name).exists()},
    }
    if policy.skips:
        manifest.update(policy.summary())
    if out:
        write_text_atomic(out, json.dumps(manifest, indent=2) + "\n")
    return manifest
