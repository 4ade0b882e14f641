"""A user's own image folders, as they would have them: rendered synthetic faces (the benchmark's
renderer, no pattern a test could exploit beyond identity) saved as files of mixed sizes and formats in
nested identity folders, plus one corrupt file and one image without a face.

``write_identity_folder``  ImageFolder tree: <root>/<name>/[<sub>/]<file>
``write_lfw_style_folder`` LFW naming: <root>/<name>/<name>_<n:04d>.jpg, with a pairs.txt and a
                           subjects CSV over the same images
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("jpg", "png", "bmp", "webp")
CORRUPT_NAME = "broken.jpg"
NO_FACE_NAME = "no_face.png"


def _face(identity: int, seed: int = 0) -> np.ndarray:
    from facetrust.data.synthetic.config import SynthConfig
    from facetrust.data.synthetic.images import render_clean

    return render_clean(seed, identity, SynthConfig.from_dict({"image_size": 112}))


def photo(identity: int, shot: int, seed: int = 0) -> Image.Image:
    """One "photograph" of ``identity``: the face at a size and place that vary with ``shot`` on a
    canvas of varying size and background, some brightness change."""
    rng = np.random.default_rng([seed, identity, shot])
    face = Image.fromarray(_face(identity, seed))
    side = int(rng.integers(80, 140))
    width, height = side + int(rng.integers(30, 90)), side + int(rng.integers(30, 90))
    canvas = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(60, 200, 3)))
    canvas.paste(face.resize((side, side), Image.BICUBIC),
                 (int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))))
    gain = float(rng.uniform(0.85, 1.15))
    return Image.fromarray(np.clip(np.asarray(canvas, np.float32) * gain, 0, 255).astype(np.uint8))


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fmt = {"jpg": "JPEG", "png": "PNG", "bmp": "BMP", "webp": "WEBP"}[path.suffix[1:]]
    image.save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    path.write_bytes(buffer.getvalue())


def write_identity_folder(root: Path, identities: int = 6, images: int = 6, first: int = 0, seed: int = 0) -> dict:
    """ImageFolder tree of ``identities`` x ``images``: formats cycle, every third image in a nested
    folder, plus ``CORRUPT_NAME`` (truncated JPEG) and ``NO_FACE_NAME`` (a blank canvas) in the first
    identity.  Returns {"classes": [...], "images": [relative paths], "corrupt": path, "no_face": path}."""
    classes, written = [], []
    for k in range(identities):
        name = f"person_{first + k:03d}"
        classes.append(name)
        for shot in range(images):
            sub = f"{2019 + shot % 2}/" if shot % 3 == 2 else ""
            relative = f"{name}/{sub}img_{shot:02d}.{FORMATS[(k + shot) % len(FORMATS)]}"
            _save(photo(first + k, shot, seed), root / relative)
            written.append(relative)
    corrupt = f"{classes[0]}/{CORRUPT_NAME}"
    good = io.BytesIO()
    photo(first, 99, seed).save(good, format="JPEG")
    (root / corrupt).write_bytes(good.getvalue()[:300])
    no_face = f"{classes[0]}/{NO_FACE_NAME}"
    _save(Image.new("RGB", (120, 90), (128, 128, 128)), root / no_face)
    return {"classes": classes, "images": written, "corrupt": corrupt, "no_face": no_face}


def write_lfw_style_folder(root: Path, identities: int = 6, images: int = 4, first: int = 100, seed: int = 0) -> dict:
    """<root>/<name>/<name>_<n:04d>.jpg (LFW naming), ``root``/pairs.txt (LFW format: a header line,
    all genuine pairs, as many impostor pairs) and ``root``/subjects.csv (image,subject,media)."""
    names = [f"person_{first + k:03d}" for k in range(identities)]
    for k, name in enumerate(names):
        for n in range(1, images + 1):
            _save(photo(first + k, n, seed), root / name / f"{name}_{n:04d}.jpg")
    genuine = [f"{name}\t{a}\t{b}" for name in names for a in range(1, images + 1) for b in range(a + 1, images + 1)]
    # impostor k: person k mod I against another person, offset 1 + (k div I) mod (I - 1)
    impostor = [f"{names[k % identities]}\t{1 + k % images}"
                f"\t{names[(k % identities + 1 + (k // identities) % (identities - 1)) % identities]}"
                f"\t{1 + (k // identities) % images}" for k in range(len(genuine))]
    (root / "pairs.txt").write_text(f"1\t{len(genuine)}\n" + "\n".join(genuine + impostor) + "\n")
    rows = [f"{name}/{name}_{n:04d}.jpg,{name},{name}_m{(n - 1) // 2}" for name in names for n in range(1, images + 1)]
    (root / "subjects.csv").write_text("image,subject,media\n" + "\n".join(rows) + "\n")
    return {"names": names, "n_genuine": len(genuine), "n_pairs": 2 * len(genuine)}
