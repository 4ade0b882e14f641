"""Our 112x112 crops are InsightFace's: on real photographs shipped with scikit-image (the
astronaut, LFW faces), detected with MTCNN, ``align_face`` equals InsightFace's ``norm_crop``
procedure (scikit-image ``SimilarityTransform.estimate`` from the five points to the ArcFace
template, then ``cv2.warpAffine`` bilinear with border 0) within one grey level, and the five
points land on the template (within the residual of the similarity fit)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("facenet_pytorch", reason="MTCNN needs facenet-pytorch")
cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is pinned in envs/requirements.txt")
skimage_data = pytest.importorskip("skimage.data")

from facetrust.align.mtcnn import MTCNNDetector  # noqa: E402
from facetrust.align.warp import ARCFACE_TEMPLATE_112, align_face, estimate_similarity  # noqa: E402

N_LFW_FACES = 40  # of lfw_subset's 100 faces: enough to see every pose of the subset, a few seconds


def insightface_norm_crop(image: np.ndarray, landmarks: np.ndarray, image_size: int = 112) -> np.ndarray:
    """InsightFace ``face_align.norm_crop`` as that code runs it: the template (112 px: unscaled,
    no x shift), ``SimilarityTransform().estimate(landmarks, template)``, the top two rows of its
    matrix, ``cv2.warpAffine(image, M, (size, size), borderValue=0.0)``."""
    from skimage import transform

    tform = transform.SimilarityTransform()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-image 0.26 deprecates estimate()
        assert tform.estimate(landmarks, ARCFACE_TEMPLATE_112 * (image_size / 112.0))
    return cv2.warpAffine(image, tform.params[0:2, :], (image_size, image_size), borderValue=0.0)


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return MTCNNDetector(threads=1)


@pytest.fixture(scope="module")
def lfw_faces() -> list[np.ndarray]:
    """The first faces of ``lfw_subset`` (25x25 grey in [0, 1]) as 100x100 RGB uint8 (MTCNN looks
    for faces of at least 20 px)."""
    faces = []
    for patch in skimage_data.lfw_subset()[:N_LFW_FACES]:
        grey = Image.fromarray(np.round(patch * 255).astype(np.uint8)).resize((100, 100), Image.BICUBIC)
        faces.append(np.asarray(grey.convert("RGB")))
    return faces


def _grey_level_difference(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def test_astronaut_crop_equals_insightface_norm_crop(detector):
    astronaut = skimage_data.astronaut()
    landmarks, score = detector.detect_landmarks(astronaut)
    assert score > 0.99
    ours, theirs = align_face(astronaut, landmarks, (112, 112)), insightface_norm_crop(astronaut, landmarks)
    assert _grey_level_difference(ours, theirs) <= 1
    assert ours.std() > 20  # a face, not an empty canvas


def test_lfw_crops_equal_insightface_and_their_landmarks_land_on_the_template(detector, lfw_faces):
    compared, residuals = 0, []
    for face in lfw_faces:
        found = detector.detect_landmarks(face)
        if found is None or found[1] < 0.9:
            continue
        ours = align_face(face, found[0], (112, 112))
        assert _grey_level_difference(ours, insightface_norm_crop(face, found[0])) <= 1
        compared += 1
        # where the crop's warp sends the five detected points (the matrix both procedures share)
        matrix = estimate_similarity(found[0], ARCFACE_TEMPLATE_112)
        moved = found[0] @ matrix[:, :2].T + matrix[:, 2]
        residuals.append(np.linalg.norm(moved - ARCFACE_TEMPLATE_112, axis=1).mean())
    assert compared >= 0.9 * len(lfw_faces)
    # The residual of a 4-DoF fit to real faces in several poses: a few pixels on the 112-px
    # template (eyes ~35 px apart); a face put anywhere else would be off by tens of pixels.
    assert np.median(residuals) < 3.0 and max(residuals) < 5.0


def test_redetected_astronaut_landmarks_are_where_the_warp_sends_them(detector):
    # lfw_subset's crops are too tight to re-detect after the warp (the 112 frame reaches past them);
    # the astronaut's face has its surroundings, so MTCNN finds it again in the crop.
    astronaut = skimage_data.astronaut()
    landmarks, _ = detector.detect_landmarks(astronaut)
    matrix = estimate_similarity(landmarks, ARCFACE_TEMPLATE_112)
    again, score = detector.detect_landmarks(align_face(astronaut, landmarks, (112, 112)))
    assert score > 0.9
    assert np.linalg.norm(again - (landmarks @ matrix[:, :2].T + matrix[:, 2]), axis=1).max() < 2.5
