"""A RecordIO training set of natural-image 112×112 JPEGs for the decode benchmark.

InsightFace sets hold aligned 112×112 face crops, JPEG-encoded at about 4-7 KB.  Natural texture
matters for decode speed (entropy decoding dominates), so the images are random crops of
scikit-image's sample photographs (astronaut, chelsea, coffee, rocket, retina, …) at random
scales, resized to 112×112 and saved at JPEG quality 90-97 with 4:2:0 chroma subsampling, as
InsightFace's ``im2rec`` does.  Labels cycle over ``classes``.  Seeded; written once.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry", "hubble_deep_field", "cat")


def _photos() -> list[np.ndarray]:
    import skimage.data

    return [getattr(skimage.data, name)()[..., :3] for name in SOURCES]


def jpeg_faces(n_images: int, seed: int = 0, size: int = 112) -> list[bytes]:
    """``n_images`` JPEG byte strings of ``size``×``size`` natural-image crops."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = _photos()
    out = []
    for _ in range(n_images):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(size, min(photo.shape[:2]) + 1))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size), Image.BILINEAR)
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=int(rng.integers(90, 98)), subsampling=2)
        out.append(buffer.getvalue())
    return out


def ensure(work: Path, n_images: int = 4000, classes: int = 100, seed: int = 0) -> Path:
    """An InsightFace RecordIO directory (``train.rec``, ``train.idx``, ``property``) under ``work``."""
    from facetrust.data.insightface import write_insightface_dataset

    root = Path(work) / f"recordio-n{n_images}-c{classes}-s{seed}"
    if (root / "summary.json").is_file():
        return root
    images = jpeg_faces(n_images, seed)
    labels = np.sort(np.arange(n_images) % classes)
    write_insightface_dataset(root, zip(labels.tolist(), images), classes, (112, 112))
    sizes = np.array([len(b) for b in images])
    summary = {"n_images": n_images, "classes": classes, "seed": seed, "mean_jpeg_bytes": float(sizes.mean()),
               "min_jpeg_bytes": int(sizes.min()), "max_jpeg_bytes": int(sizes.max())}
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return root
