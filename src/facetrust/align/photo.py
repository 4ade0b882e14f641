"""Photographs to model inputs: detect and align a face unless the image already is an aligned crop.

Every command that takes image files (``verify``, ``explain map``, ``explain xcos``) reads them here,
so a photograph is never squashed into the model's input. The policy, per image:

- an image of exactly the model's input size is taken as an aligned crop (what the pipeline's own
  crops are) and used as it is, and its note says so;
- with ``aligned=True`` (``--aligned``) any image is taken as an aligned crop: centre-cropped to the
  input's aspect ratio, then resized (:func:`facetrust.data.transforms.fit_to_size`; the aspect
  ratio is never changed by the resize);
- otherwise MTCNN (:mod:`facetrust.align.mtcnn`, the ``align`` stage's detector, with its subject
  rule :func:`~facetrust.align.mtcnn.choose_subject`: among faces scoring at least ``min_score``
  the one nearest the image centre) finds the five landmarks, and
  :func:`facetrust.align.warp.align_face` maps them onto the ArcFace template at the input size
  (InsightFace's ``norm_crop``, tests/test_align_insightface.py);
- an image where MTCNN finds no face is an :class:`~facetrust.errors.InputError` naming the file
  (exit 2), unless ``no_face="center-crop"`` asks for the centre crop of the ``--aligned`` path.

Each prepared face says what was done to it (``how`` and a one-line ``note`` for stderr).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from facetrust import options
from facetrust.errors import ConfigError, InputError

#: What happens to a photograph without a detectable face.
NO_FACE_POLICIES = ("error", "center-crop")
#: How a face reached the model's input size.
ALIGNED_INPUT, DETECTED, CENTER_CROP = "aligned_input", "detected", "center_crop"


@dataclass
class PreparedFace:
    """One image file as the model's input.

    ``pixels``: uint8 (H, W, 3) RGB at the input size.  ``how``: ``aligned_input`` (taken as an
    aligned crop), ``detected`` (MTCNN + alignment) or ``center_crop`` (no face, ``--no-face
    center-crop``).  ``landmarks``: with ``detected``, where the alignment sends the five detected
    points, in the crop's pixels (x, y); on the template up to the similarity fit's residual.
    ``detection``: with ``detected``, MTCNN's box, score and landmarks in the photograph's pixels,
    the number of faces found and the rule that chose this one.  ``note``: what was done, one line."""

    path: str
    pixels: np.ndarray
    how: str
    image_size: tuple[int, int]
    landmarks: np.ndarray | None = None
    detection: dict | None = None
    note: str | None = None

    def record(self) -> dict:
        """JSON-ready description (everything but the pixels)."""
        out = {"path": self.path, "how": self.how, "image_size": list(self.image_size),
               "input_size": list(self.pixels.shape[:2])}
        if self.landmarks is not None:
            out["aligned_landmarks"] = np.round(self.landmarks, 4).tolist()
        if self.detection is not None:
            out["detection"] = self.detection
        return out


def _check_policy(no_face: str) -> None:
    if no_face not in NO_FACE_POLICIES:
        raise ConfigError(f"--no-face {no_face!r}: allowed: {', '.join(NO_FACE_POLICIES)}")


def template_landmarks(landmarks: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Where :func:`~facetrust.align.warp.align_face` sends ``landmarks`` (5, 2) in its output."""
    from facetrust.align.warp import arcface_template, estimate_similarity

    matrix = estimate_similarity(landmarks, arcface_template(output_size))
    return np.asarray(landmarks, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def _size_text(size: Sequence[int]) -> str:
    return f"{int(size[1])}x{int(size[0])}"  # width x height, as image sizes are usually written


def _fit(path: str, pixels: np.ndarray, input_size, how: str, note: str | None) -> PreparedFace:
    from facetrust.data.transforms import fit_to_size

    return PreparedFace(path, np.ascontiguousarray(fit_to_size(pixels, input_size)), how, tuple(pixels.shape[:2]),
                        note=note)


def _centre_crop_note(pixels: np.ndarray, input_size) -> str:
    height, width = pixels.shape[:2]
    target_h, target_w = input_size
    if height * target_w > width * target_h:
        crop = (round(width * target_h / target_w), width)
    else:
        crop = (height, round(height * target_w / target_h))
    return f"the centre {_size_text(crop)} resized to {_size_text(input_size)} (aspect ratio kept)"


def _detected(path: str, pixels: np.ndarray, faces, input_size, min_score: float) -> PreparedFace | None:
    from facetrust.align.mtcnn import choose_subject
    from facetrust.align.warp import align_face

    chosen = choose_subject(faces, pixels.shape, min_score)
    if chosen is None:
        return None
    face, rule = chosen
    crop = align_face(pixels, face.landmarks, input_size)
    # box and landmarks at full precision: they reproduce the crop
    detection = {"detector": "mtcnn", "faces_found": len(faces), "face_choice": rule, "score": float(face.score),
                 "box": face.box.tolist(), "landmarks": face.landmarks.tolist()}
    note = (f"{path}: {_size_text(pixels.shape)} is not an aligned {_size_text(input_size)} crop: MTCNN found "
            f"{len(faces)} face(s), aligned the {rule.replace('_', ' ')} one (score {face.score:.3f}) onto the "
            f"ArcFace template at {_size_text(input_size)} (--aligned skips detection)")
    return PreparedFace(path, crop, DETECTED, tuple(pixels.shape[:2]), template_landmarks(face.landmarks, input_size),
                        detection, note)


def prepare_images(images: Sequence[tuple[str, np.ndarray]], input_size, *, aligned: bool = False,
                   no_face: str = "error", min_score: float = 0.9, detector=None) -> list[PreparedFace]:
    """Each ``(name, uint8 H×W×3 RGB pixels)`` as the model's input (module docstring); the images
    that need detection are detected together (same-sized ones in one MTCNN batch)."""
    _check_policy(no_face)
    input_size = tuple(int(v) for v in input_size)
    prepared: list[PreparedFace | None] = [None] * len(images)
    to_detect = []
    for i, (name, pixels) in enumerate(images):
        if tuple(pixels.shape[:2]) == input_size:
            prepared[i] = _fit(name, pixels, input_size, ALIGNED_INPUT,
                               f"{name}: {_size_text(pixels.shape)} is the model's input size: taken as an aligned "
                               f"crop, not detected (a photograph of another size is detected and aligned)")
        elif aligned:
            prepared[i] = _fit(name, pixels, input_size, ALIGNED_INPUT,
                               f"{name}: --aligned: {_size_text(pixels.shape)} taken as an aligned crop, "
                               f"{_centre_crop_note(pixels, input_size)}")
        else:
            to_detect.append(i)
    if to_detect:
        from facetrust.align.warp import arcface_template

        arcface_template(input_size)  # a size the template cannot take fails before detection
        if detector is None:
            from facetrust.align.mtcnn import default_detector

            detector = default_detector(threads=1)
        found = detector.detect_faces_batch([images[i][1] for i in to_detect])
        for i, faces in zip(to_detect, found):
            name, pixels = images[i]
            prepared[i] = _detected(name, pixels, faces, input_size, min_score)
            if prepared[i] is not None:
                continue
            smallest = getattr(detector, "min_face_size", 0)
            why = (f"this {_size_text(pixels.shape)} image is smaller than MTCNN's smallest face ({smallest} px): "
                   f"nothing to search" if min(pixels.shape[:2]) < smallest
                   else f"MTCNN finds no face in this {_size_text(pixels.shape)} image")
            if no_face == "error":
                raise InputError(f"{name}: {why} (--no-face center-crop uses its centre; --aligned if it is an "
                                 f"aligned crop)")
            prepared[i] = _fit(name, pixels, input_size, CENTER_CROP,
                               f"{name}: {why}; --no-face center-crop: "
                               f"{_centre_crop_note(pixels, input_size)}")
    return prepared  # type: ignore[return-value]


def prepare_files(paths: Sequence[str | Path], input_size, **options) -> list[PreparedFace]:
    """:func:`prepare_images` of image files (read by :func:`facetrust.data.images.read_image_file`:
    an unreadable or bad file is an InputError naming it)."""
    from facetrust.data.images import read_image_file

    return prepare_images([(str(path), read_image_file(path)) for path in paths], input_size, **options)


def add_photo_options(parser: argparse.ArgumentParser) -> None:
    """``--aligned``, ``--no-face``, ``--min-score``: how image files become the model's input
    (:mod:`facetrust.align.photo`), for every command that takes image files."""
    parser.add_argument("--aligned", action="store_true",
                        help="the images are aligned crops: skip detection (centre-cropped to the input's aspect, "
                             "then resized). Default: an image of the model's input size is taken as aligned, any "
                             "other is detected (MTCNN) and aligned onto the ArcFace template")
    parser.add_argument("--no-face", choices=NO_FACE_POLICIES, default="error",
                        help="an image where MTCNN finds no face: stop with exit 2 (error), or use its centre "
                             "crop (aspect ratio kept)")
    parser.add_argument("--min-score", type=options.probability, default=0.9,
                        help="faces this confident are subject candidates; the one nearest the centre wins "
                             "(align's rule)")
