"""Five-point face alignment: a least-squares similarity transform onto the ArcFace template.

InsightFace aligns every face by estimating the similarity transform (rotation, uniform scale,
translation) that maps the five detected landmarks onto a fixed 112×112 template and warping with
border value 0. SphereFace's 112×96 crops use the same template shifted 8 px left. Pixel coordinates
follow the OpenCV convention (integer coordinates are pixel centres), so landmarks written by any
detector in that convention land on the template.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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
    """Least-squares similarity transform (Umeyama 1991) with ``target ≈ M @ [x, y, 1]``.

    Returns the 2×3 matrix M. Both inputs are (K, 2) with K ≥ 2 non-coincident points.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise InputError(f"landmarks must be two (K, 2) arrays, got {source.shape} and {target.shape}")
    if not np.all(np.isfinite(source)):
        raise InputError("landmarks contain NaN or infinite values")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = (source_centred**2).sum() / len(source)
    if source_variance <= 1e-12:
        raise InputError("landmarks are degenerate (all points coincide)")
    covariance = target_centred.T @ source_centred / len(source)
    u, singular_values, vt = np.linalg.svd(covariance)
    # Umeyama Eq. 39–43: flip the last axis if the best orthogonal map is a reflection.
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = (singular_values * sign).sum() / source_variance
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def warp_affine(image: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Warp an H×W(×C) uint8 image by the 2×3 forward ``matrix`` (source → output), bilinear, border 0."""
    height, width = output_size
    forward = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    source_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    source_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    coordinates = np.stack([source_y, source_x])
    channels = image[..., None] if image.ndim == 2 else image
    warped = np.stack(
        [
            ndimage.map_coordinates(channels[..., c].astype(np.float32), coordinates, order=1, mode="constant", cval=0.0)
            for c in range(channels.shape[-1])
        ],
        axis=-1,
    )
    warped = np.clip(np.rint(warped), 0, 255).astype(np.uint8)
    return warped[..., 0] if image.ndim == 2 else warped


def align_face(image: np.ndarray, landmarks: np.ndarray, output_size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Align one face: map its five ``landmarks`` (5, 2; x, y) onto the template of ``output_size``."""
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    matrix = estimate_similarity(landmarks, arcface_template(output_size))
    return warp_affine(image, matrix, output_size)
