"""Five-point alignment: the similarity transform puts the landmarks on the ArcFace template."""

import numpy as np
import pytest

from facetrust.align.warp import (
    ARCFACE_TEMPLATE_112,
    align_face,
    arcface_template,
    estimate_similarity,
    warp_affine,
)
from facetrust.errors import InputError


def _similarity(scale, angle_deg, tx, ty):
    angle = np.deg2rad(angle_deg)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, [[tx], [ty]]])


def _apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_estimate_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 200, size=(5, 2))
    truth = _similarity(0.7, 23.0, 14.0, -9.0)
    estimated = estimate_similarity(source, _apply(truth, source))
    np.testing.assert_allclose(estimated, truth, atol=1e-9)


def test_estimate_similarity_is_least_squares_under_noise():
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 200, size=(5, 2))
    target = _apply(_similarity(1.3, -40.0, 5.0, 7.0), source) + rng.normal(0, 2.0, size=(5, 2))
    best = estimate_similarity(source, target)
    best_error = np.sum((_apply(best, source) - target) ** 2)
    for _ in range(200):  # no nearby similarity fits better
        scale, angle = rng.normal(1.3, 0.02), rng.normal(-40.0, 0.5)
        trial = _similarity(scale, angle, *rng.normal([5.0, 7.0], 1.0))
        assert np.sum((_apply(trial, source) - target) ** 2) >= best_error - 1e-9


def test_estimate_similarity_never_returns_a_reflection():
    source = ARCFACE_TEMPLATE_112.copy()
    mirrored = source * np.array([-1.0, 1.0])
    matrix = estimate_similarity(source, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_degenerate_landmarks_are_refused():
    with pytest.raises(InputError, match="degenerate"):
        estimate_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE_112)
    with pytest.raises(InputError, match="NaN"):
        estimate_similarity(np.full((5, 2), np.nan), ARCFACE_TEMPLATE_112)


def test_templates_for_112x96_and_scaled_sizes():
    np.testing.assert_allclose(arcface_template((112, 112)), ARCFACE_TEMPLATE_112)
    sphere = arcface_template((112, 96))
    np.testing.assert_allclose(sphere[:, 0], ARCFACE_TEMPLATE_112[:, 0] - 8.0)
    np.testing.assert_allclose(arcface_template((56, 56)), ARCFACE_TEMPLATE_112 / 2)
    with pytest.raises(InputError, match="aspect"):
        arcface_template((112, 80))


def _gaussian_blob(point, size, sigma=3.0):
    """A black canvas with one bright Gaussian blob centred on ``point`` (x, y)."""
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]]
    blob = 255 * np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / (2 * sigma**2))
    return np.repeat(np.rint(blob).astype(np.uint8)[..., None], 3, axis=2)


def _centroid(image):
    weights = image[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return np.array([(xs * weights).sum() / weights.sum(), (ys * weights).sum() / weights.sum()])


@pytest.mark.parametrize("output_size", [(112, 112), (112, 96), (48, 48)])
def test_alignment_puts_the_landmarks_on_the_template(output_size):
    # A loose crop with the face rotated, scaled and shifted: each of its five points, warped,
    # lands on the template point (blob centroids, so sub-pixel errors show).
    truth = _similarity(1.6, 17.0, 40.0, 25.0)
    landmarks = _apply(truth, ARCFACE_TEMPLATE_112)
    template = arcface_template(output_size)
    for k in range(5):
        loose_crop = _gaussian_blob(landmarks[k], (260, 260), sigma=4.0)
        aligned = align_face(loose_crop, landmarks, output_size)
        assert aligned.shape == (*output_size, 3)
        np.testing.assert_allclose(_centroid(aligned), template[k], atol=0.25)


def test_warp_identity_keeps_pixels_and_fills_outside_with_zero():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp_affine(image, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (20, 30)), image)
    shifted = warp_affine(image, np.array([[1.0, 0, 5], [0, 1.0, 0]]), (20, 30))
    assert np.all(shifted[:, :5] == 0)
    np.testing.assert_array_equal(shifted[:, 5:], image[:, :25])
