"""Five-point face alignment: a least-squares similarity transform onto the ArcFace template.

InsightFace aligns every face (``insightface.utils.face_align.norm_crop``) by estimating the
similarity transform (rotation, uniform scale, translation) that maps the five detected landmarks
onto a fixed 112×112 template with scikit-image's ``SimilarityTransform`` (Umeyama 1991) and
warping with ``cv2.warpAffine`` (bilinear, border value 0).  We call the same two libraries, so a
crop made here is the crop InsightFace makes, pixel for pixel (tests/test_align_insightface.py
checks this on real photographs).  cv2's bilinear warp computes with fixed-point weights (1/32 px
positions), which an exact bilinear interpolation differs from by up to a few grey levels.
SphereFace's 112×96 crops use the same template shifted 8 px left.  Pixel coordinates follow the
OpenCV convention (integer coordinates are pixel centres), so landmarks written by any detector in
that convention land on the template.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from facetrust.errors import InputError

# ArcFace 112×112 template (x, y): left eye, right eye, nose tip, left mouth corner, right mouth corner.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def arcface_template(output_size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """The five template points for an output of ``(height, width)`` pixels.

    ``(112, 112)`` is InsightFace's template; ``(112, 96)`` is SphereFace's (x − 8). Other sizes
    scale one of the two uniformly by ``height / 112``, so a 48×48 crop is the 112×112 crop resized.
    """
    height, width = output_size
    template = ARCFACE_TEMPLATE_112.copy()
    if width * 112 == height * 112:
        pass
    elif width * 112 == height * 96:
        template[:, 0] -= 8.0  # SphereFace convention: the 112×112 crop with 8 px cut on each side
    else:
        raise InputError(f"alignment output size {height}x{width}: aspect must be 1:1 or 112:96")
    return template * (height / 112.0)


def estimate_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform with ``target ≈ M @ [x, y, 1]`` (scikit-image's
    ``SimilarityTransform``, Umeyama 1991: never a reflection).

    Returns the 2×3 matrix M. Both inputs are (K, 2) with K ≥ 2 non-coincident points.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise InputError(f"landmarks must be two (K, 2) arrays, got {source.shape} and {target.shape}")
    if not np.all(np.isfinite(source)):
        raise InputError("landmarks contain NaN or infinite values")
    if ((source - source.mean(axis=0)) ** 2).sum() <= 1e-12:
        raise InputError("landmarks are degenerate (all points coincide)")
    transform = SimilarityTransform.from_estimate(source, target)
    if not transform:  # a FailedEstimation (poorly conditioned points) is falsy
        raise InputError(f"landmarks are degenerate: {transform}")
    return np.asarray(transform.params[:2, :], dtype=np.float64)


def warp_affine(image: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Warp an H×W(×C) uint8 image by the 2×3 forward ``matrix`` (source → output) with
    ``cv2.warpAffine``: bilinear, border 0, as InsightFace's ``norm_crop``."""
    height, width = output_size
    return cv2.warpAffine(np.ascontiguousarray(image), np.asarray(matrix, dtype=np.float64), (int(width), int(height)),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def align_face(image: np.ndarray, landmarks: np.ndarray, output_size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Align one face: map its five ``landmarks`` (5, 2; x, y) onto the template of ``output_size``."""
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    matrix = estimate_similarity(landmarks, arcface_template(output_size))
    return warp_affine(image, matrix, output_size)
