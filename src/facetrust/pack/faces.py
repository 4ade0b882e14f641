"""Turning a user's image files into face crops for ``facetrust data pack`` (docs/FORMATS.md "Packing").

Shared by the three packers (``rec``, ``pairs``, ``ijb``):

* :func:`list_image_folder` lists an ImageFolder tree (one subfolder per identity, images found
  recursively below it) in a deterministic order: identities sorted by name, label = index in
  that order, images sorted by their path relative to the root;
* :class:`FacePreparer` reads one file (bounded decode, :mod:`facetrust.data.images`) and makes
  the stored image: with ``align="mtcnn"`` the subject's five MTCNN landmarks
  (:func:`facetrust.align.mtcnn.choose_subject`) and the InsightFace ``norm_crop`` warp
  (:func:`facetrust.align.warp.align_face`); with ``align="none"`` the image is taken as a crop
  already, and one of another size is centre-cropped to the output's aspect ratio and resized
  (never stretched).  A file already in the stored encoding that needs no change is stored byte
  for byte, as ``im2rec --pass-through`` and InsightFace's ``lfw2pack`` store files; everything
  else is encoded as ``face2rec2.py`` does (``cv2.imencode``: JPEG quality 95, or lossless PNG).

A file that does not decode, or in which MTCNN finds no face, raises :class:`InputError`
naming the file; the packers pass it to the ``on_bad_image`` policy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from facetrust.errors import ConfigError, InputError

# The formats users' folders hold (torchvision's ImageFolder's list, and JPEG's other names;
# im2rec's default is .jpeg/.jpg/.png).  Compared case-insensitively.  Any other file below an
# identity folder is listed in the pack report as not an image (``unsupported_files``).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
ALIGN_METHODS = ("none", "mtcnn")
ENCODINGS = ("jpg", "png")
# face2rec2.py / im2rec.py default JPEG quality.
JPEG_QUALITY = 95
# Images decoded (and detected, in batches of equal size) together: bounds memory.
CHUNK = 64
_SIGNATURES = {"jpg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_image_folder(root: str | os.PathLike) -> tuple[list[str], list[tuple[str, int]], list[str], list[str]]:
    """``(classes, images, ignored, unsupported)`` of an ImageFolder tree.

    ``classes``: the names of the top-level subfolders, sorted (code-point order, as Python
    sorts); ``images``: ``(relative posix path, label)`` of every image file below each class
    folder at any depth, sorted by path; ``ignored``: image files directly in ``root`` (no
    identity); ``unsupported``: the other files below the class folders (no image extension:
    ``notes.txt``, ``Thumbs.db``, ``clip.gif``), relative posix paths, sorted.  Hidden files and
    folders (``.name``) are skipped.  InputError when ``root`` is not a directory or holds no class
    folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory (expected one subfolder of images per identity)")
    entries = sorted(os.listdir(root))
    classes = [name for name in entries if not name.startswith(".") and (root / name).is_dir()]
    ignored = [name for name in entries if is_image_name(name) and (root / name).is_file()]
    if not classes:
        raise InputError(f"{root}: no identity subfolders (expected <root>/<identity>/<image>)")
    images, unsupported = [], []
    for label, name in enumerate(classes):
        found = []
        for folder, dirs, files in os.walk(root / name):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [(Path(folder) / f).relative_to(root).as_posix() for f in files if is_image_name(f)]
            unsupported += [(Path(folder) / f).relative_to(root).as_posix() for f in files
                            if not f.startswith(".") and not is_image_name(f)]
        images += [(path, label) for path in sorted(found)]
    return classes, images, ignored, sorted(unsupported)


@dataclass
class PreparedFace:
    """One stored image: ``payload`` (encoded bytes), ``landmarks`` (5, 2) in the source image
    (None without detection), the detector ``score`` (1.0 without detection), ``how`` it was made
    (``pass_through`` | ``encoded`` | ``resized`` | ``aligned``), the source ``shape``, the faces
    MTCNN found in it (None without detection; the subject is one of them) and the SHA-256 of the
    source file (duplicates are reported by the packers)."""

    payload: bytes
    how: str
    shape: tuple[int, int]
    landmarks: np.ndarray | None = None
    score: float = 1.0
    faces_found: int | None = None
    source_sha256: str = ""


@dataclass
class FacePreparer:
    """Make the stored crop of one image file (module docstring); ``size`` is ``(height, width)``."""

    align: str = "none"
    size: tuple[int, int] = (112, 112)
    min_score: float = 0.9
    threads: int | None = 1
    encoding: str = "jpg"
    counts: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.align not in ALIGN_METHODS:
            raise ConfigError(f"--align {self.align!r}: expected one of {', '.join(ALIGN_METHODS)}")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"--encoding {self.encoding!r}: expected one of {', '.join(ENCODINGS)}")
        self.size = (int(self.size[0]), int(self.size[1]))
        if min(self.size) < 1:
            raise ConfigError(f"--size {self.size}: both sides must be positive")
        if self.align == "mtcnn":
            from facetrust.align.warp import arcface_template

            arcface_template(self.size)  # refuses a size the template has no convention for

    def read(self, path: Path) -> tuple[bytes, np.ndarray]:
        """The file's bytes and RGB pixels; InputError naming the file when it is not a readable image."""
        from facetrust.data.images import MAX_IMAGE_FILE_BYTES, decode_image
        from facetrust.input_files import read_regular

        # a regular file only, bounded: a FIFO in a photo folder would block the pack for ever
        raw = read_regular(path, "image", max_bytes=MAX_IMAGE_FILE_BYTES)
        return raw, decode_image(raw, path)

    def prepare(self, path: Path) -> PreparedFace:
        return self.prepare_many([path])[0]

    def prepare_chunked(self, paths: list[Path], chunk: int = CHUNK) -> list[PreparedFace | InputError]:
        """:meth:`prepare_many` ``chunk`` files at a time: only one chunk's pixels are in memory."""
        results: list = []
        for start in range(0, len(paths), chunk):
            results += self.prepare_many(paths[start:start + chunk])
        return results

    def prepare_many(self, paths: list[Path]) -> list[PreparedFace | InputError]:
        """:meth:`prepare` of each path, MTCNN run in batches of same-sized images; an image that
        fails comes back as its InputError (the caller applies the on_bad_image policy)."""
        decoded: list = []
        for path in paths:
            try:
                decoded.append(self.read(path))
            except InputError as error:
                decoded.append(error)
        faces: dict[int, list] = {}
        if self.align == "mtcnn":
            from facetrust.align.mtcnn import default_detector

            ok = [i for i, item in enumerate(decoded) if not isinstance(item, InputError)]
            found = default_detector(threads=self.threads).detect_faces_batch([decoded[i][1] for i in ok])
            faces = dict(zip(ok, found))
        results: list = []
        for i, (path, item) in enumerate(zip(paths, decoded)):
            if isinstance(item, InputError):
                results.append(item)
                continue
            try:
                results.append(self._make(path, *item, faces.get(i)))
            except InputError as error:
                results.append(error)
        for result in results:
            key = "bad" if isinstance(result, InputError) else result.how
            self.counts[key] = self.counts.get(key, 0) + 1
        return results

    def _make(self, path: Path, raw: bytes, pixels: np.ndarray, faces) -> PreparedFace:
        import hashlib

        face = self._stored(path, raw, pixels, faces)
        face.source_sha256 = hashlib.sha256(raw).hexdigest()
        return face

    def _stored(self, path: Path, raw: bytes, pixels: np.ndarray, faces) -> PreparedFace:
        shape = (int(pixels.shape[0]), int(pixels.shape[1]))
        if self.align == "mtcnn":
            from facetrust.align.mtcnn import choose_subject
            from facetrust.align.warp import align_face

            chosen = choose_subject(faces or [], pixels.shape, self.min_score)
            if chosen is None:
                raise InputError(f"{path}: MTCNN finds no face (--align mtcnn)")
            face = chosen[0]
            crop = align_face(pixels, face.landmarks, self.size)
            return PreparedFace(self.encode(crop), "aligned", shape, face.landmarks.copy(), float(face.score),
                                len(faces))
        if shape == self.size:
            if raw.startswith(_SIGNATURES[self.encoding]):
                return PreparedFace(raw, "pass_through", shape)
            return PreparedFace(self.encode(pixels), "encoded", shape)
        return PreparedFace(self.encode(crop_resize(pixels, self.size)), "resized", shape)

    def encode(self, pixels: np.ndarray) -> bytes:
        return encode_image(pixels, self.encoding)


def crop_resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The largest centred window of ``pixels`` with the aspect ratio of ``size`` (H, W), resized to
    it with ``cv2.INTER_AREA`` (shrinking) or ``INTER_LINEAR`` (enlarging): the aspect ratio is
    kept, nothing is stretched."""
    import cv2

    height, width = pixels.shape[:2]
    out_h, out_w = size
    # window h/w == out_h/out_w, as large as fits
    if height * out_w > width * out_h:
        win_w, win_h = width, max(1, round(width * out_h / out_w))
    else:
        win_h, win_w = height, max(1, round(height * out_w / out_h))
    top, left = (height - win_h) // 2, (width - win_w) // 2
    window = np.ascontiguousarray(pixels[top:top + win_h, left:left + win_w])
    interpolation = cv2.INTER_AREA if win_h >= out_h else cv2.INTER_LINEAR
    return cv2.resize(window, (out_w, out_h), interpolation=interpolation)


def encode_image(pixels: np.ndarray, encoding: str = "jpg") -> bytes:
    """RGB uint8 → JPEG (quality 95) or PNG bytes as ``face2rec2.py`` encodes (``cv2.imencode`` of BGR)."""
    import cv2

    options = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if encoding == "jpg" else []
    ok, buffer = cv2.imencode(f".{encoding}", np.ascontiguousarray(pixels[:, :, ::-1]), options)
    if not ok:  # cv2 fails only for an empty or malformed array: our bug, not the user's input
        raise RuntimeError(f"cv2.imencode failed for an array of shape {pixels.shape}")
    return buffer.tobytes()


#: Examples of overlapping images a pack report lists (the count covers all of them).
OVERLAP_EXAMPLES = 20


def training_digests(faces_csv: str | os.PathLike) -> tuple[dict[str, str], set[str]]:
    """``({SHA-256 of a source file: its path}, {identity folder})`` of a training pack's
    ``faces.csv`` (``data pack rec`` writes the column); InputError naming the file for one without it."""
    import csv
    import io

    from facetrust.input_files import read_regular

    path = Path(faces_csv)
    text = read_regular(path, "training faces.csv", max_bytes=2**31).decode("utf-8", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "sha256" not in reader.fieldnames or "path" not in reader.fieldnames:
        raise InputError(f"{path}: no 'path' and 'sha256' columns (a faces.csv of 'facetrust data pack rec'; "
                         f"pack the training folder again)")
    digests, identities = {}, set()
    for row in reader:
        if row.get("sha256"):
            digests[row["sha256"]] = row["path"]
        identities.add((row.get("path") or "").split("/", 1)[0])
    return digests, identities - {""}


def identity_key(name: str) -> str:
    """A person's name as compared across sets: case, spaces, hyphens and underscores do not count
    (``George_W_Bush`` = ``george w bush``)."""
    return "_".join(part for part in re.split(r"[\s_\-]+", str(name).casefold()) if part)


def training_overlap(prepared: dict[str, "PreparedFace | InputError"], training: tuple[dict[str, str], set[str]] | None,
                     faces_csv, identities: Iterable[str] = ()) -> dict | None:
    """What a test pack shares with the training pack (``training`` of :func:`training_digests`),
    for its report: the images (``{name: prepared face}``) whose source files are byte for byte a
    training image, and the test ``identities`` named like a training identity folder
    (:func:`identity_key`; the same name need not be the same person, but usually is):
    ``{"training_faces", "images", "examples": [[test image, training image], ...], "identities",
    "identity_examples"}``; None without a training pack to check against.  Logged when any."""
    import logging

    if training is None:
        return None
    digests, trained = training
    log = logging.getLogger("facetrust.data")
    found = [[name, digests[face.source_sha256]] for name, face in prepared.items()
             if isinstance(face, PreparedFace) and face.source_sha256 in digests]
    if found:
        log.warning("data pack: %d test images are byte-identical to training images of %s (e.g. %s = %s): a test "
                    "that saw its images in training; listed in the report's in_training_set", len(found), faces_csv,
                    *found[0])
    trained_keys = {identity_key(name) for name in trained}
    shared = sorted({str(name) for name in identities if identity_key(name) in trained_keys})
    if shared:
        log.warning("data pack: %d test identities are named like training identities of %s (e.g. %s): a test of "
                    "people the model was trained on; listed in the report's in_training_set", len(shared),
                    faces_csv, shared[0])
    return {"training_faces": str(faces_csv), "images": len(found), "examples": found[:OVERLAP_EXAMPLES],
            "identities": len(shared), "identity_examples": shared[:OVERLAP_EXAMPLES]}
