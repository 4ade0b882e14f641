"""MTCNN detection on real photographs shipped with scikit-image (no download) and on the synthetic
benchmark's loose crops: geometry of the landmarks, equivariance, subject choice, round trip
through the 5-point alignment, determinism and input checks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

pytest.importorskip("facenet_pytorch", reason="MTCNN needs facenet-pytorch (pip install --no-deps)")
skimage_data = pytest.importorskip("skimage.data", reason="real test photographs come from scikit-image")
torch = pytest.importorskip("torch")

from facetrust.align.mtcnn import DetectedFace, MTCNNDetector  # noqa: E402
from facetrust.align.warp import arcface_template, estimate_similarity  # noqa: E402
from facetrust.errors import InputError  # noqa: E402

LEFT_EYE, RIGHT_EYE, NOSE, LEFT_MOUTH, RIGHT_MOUTH = range(5)


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return MTCNNDetector(threads=1)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


def _assert_plausible_face(face: DetectedFace) -> None:
    x1, y1, x2, y2 = face.box
    points = face.landmarks
    assert points.shape == (5, 2) and face.box.shape == (4,)
    assert np.all((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2))
    assert points[LEFT_EYE, 0] < points[RIGHT_EYE, 0]
    assert points[LEFT_MOUTH, 0] < points[RIGHT_MOUTH, 0]
    assert max(points[LEFT_EYE, 1], points[RIGHT_EYE, 1]) < points[NOSE, 1]
    assert points[NOSE, 1] < min(points[LEFT_MOUTH, 1], points[RIGHT_MOUTH, 1])


def test_astronaut_face_has_landmarks_inside_its_box_in_anatomical_order(detector, astronaut):
    faces = detector.detect_faces(astronaut)
    confident = [face for face in faces if face.score >= 0.9]
    assert len(confident) == 1  # Eileen Collins is the only person in the photograph
    _assert_plausible_face(confident[0])
    assert [face.score for face in faces] == sorted((face.score for face in faces), reverse=True)


def test_camera_grey_image_is_accepted_and_its_face_found(detector):
    faces = detector.detect_faces(skimage_data.camera())  # 2-D uint8
    assert faces and faces[0].score >= 0.9
    _assert_plausible_face(faces[0])


def test_landmarks_move_with_a_crop_and_mirror_with_a_flip(detector, astronaut):
    reference = detector.detect_faces(astronaut)[0].landmarks
    y0, x0 = 20, 150
    cropped = detector.detect_faces(astronaut[y0:260, x0:330])[0].landmarks
    np.testing.assert_allclose(cropped + [x0, y0], reference, atol=2.0)
    flipped = detector.detect_faces(astronaut[:, ::-1])[0].landmarks
    mirrored = flipped.copy()
    mirrored[:, 0] = astronaut.shape[1] - 1 - mirrored[:, 0]  # pixel centres: x -> W - 1 - x
    mirrored = mirrored[[RIGHT_EYE, LEFT_EYE, NOSE, RIGHT_MOUTH, LEFT_MOUTH]]  # image left <-> right
    np.testing.assert_allclose(mirrored, reference, atol=3.0)


def test_lfw_subset_faces_are_found_and_non_faces_rejected(detector):
    # lfw_subset: 100 face crops then 100 non-face patches, 25x25 grey in [0, 1]; MTCNN searches
    # faces of >= 20 px, so upsample 4x.
    patches = skimage_data.lfw_subset()
    found = []
    for patch in patches[:150]:  # all 100 faces, 50 non-faces (keeps the test short)
        pixels = Image.fromarray(np.round(patch * 255).astype(np.uint8)).resize((100, 100), Image.BICUBIC)
        result = detector.detect_landmarks(np.asarray(pixels))
        found.append(result is not None and result[1] >= 0.9)
    assert sum(found[:100]) >= 90
    assert sum(found[100:]) <= 3


def test_aligning_the_astronaut_puts_redetected_landmarks_on_the_arcface_template(detector, astronaut):
    from facetrust.align.warp import align_face

    landmarks, score = detector.detect_landmarks(astronaut)
    aligned = align_face(astronaut, landmarks, (112, 112))
    assert aligned.shape == (112, 112, 3)
    redetected, rescore = detector.detect_landmarks(aligned)
    assert rescore >= 0.9
    # Where the similarity transform sends the detected points: the re-detection must agree with the
    # warp (detector and warp share the pixel-centre convention) ...
    matrix = estimate_similarity(landmarks, arcface_template((112, 112)))
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.linalg.norm(redetected - mapped, axis=1).max() < 2.5
    # ... and lie near the template, up to the residual of a 4-DoF fit to a real, slightly turned face.
    assert np.linalg.norm(redetected - arcface_template((112, 112)), axis=1).mean() < 6.0


def _two_face_canvas(centre_face: np.ndarray, edge_face: np.ndarray) -> np.ndarray:
    canvas = np.full((240, 600, 3), 90, np.uint8)
    h, w = edge_face.shape[:2]
    canvas[30 : 30 + h, 0:w] = edge_face
    h, w = centre_face.shape[:2]
    canvas[120 - h // 2 : 120 - h // 2 + h, 300 - w // 2 : 300 - w // 2 + w] = centre_face
    return canvas


def test_loose_crop_subject_is_the_confident_face_nearest_the_centre(detector, astronaut):
    sharp = astronaut[30:210, 150:300]  # 180x150 around the face
    soft = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(1)).resize((100, 120), Image.BICUBIC))
    top_is_off_centre = []
    # Both arrangements: whichever face scores higher, the one at the centre is the subject.
    for centre_face, edge_face in ((soft, sharp), (sharp[30:150, 25:125], soft)):
        canvas = _two_face_canvas(centre_face, edge_face)
        faces = [face for face in detector.detect_faces(canvas) if face.score >= 0.9]
        assert len(faces) == 2
        landmarks, score = detector.detect_landmarks(canvas)
        assert 250 < landmarks[:, 0].min() and landmarks[:, 0].max() < 350
        chosen = [face for face in faces if np.array_equal(face.landmarks, landmarks)]
        assert len(chosen) == 1 and chosen[0].score == score
        top_is_off_centre.append(faces[0].landmarks[:, 0].max() < 250)
    assert any(top_is_off_centre)  # the choice is by position, not by score


def test_without_a_confident_face_the_best_scored_detection_is_returned(detector, astronaut):
    faces = detector.detect_faces(astronaut)
    landmarks, score = detector.detect_landmarks(astronaut, min_score=1.01)  # nothing reaches 1.01
    assert score == faces[0].score
    np.testing.assert_array_equal(landmarks, faces[0].landmarks)


def test_images_without_faces_give_no_detection(detector):
    rng = np.random.default_rng(0)
    assert detector.detect_faces(np.zeros((120, 160, 3), np.uint8)) == []
    assert detector.detect_landmarks(np.full((64, 64, 3), 128, np.uint8)) is None
    assert detector.detect_faces(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) == []  # < min face


def test_detection_is_deterministic_across_calls_and_detectors(detector, astronaut):
    first = detector.detect_faces(astronaut)
    again = detector.detect_faces(astronaut)
    fresh = MTCNNDetector(threads=1).detect_faces(astronaut)
    for other in (again, fresh):
        assert len(other) == len(first)
        for a, b in zip(first, other):
            np.testing.assert_array_equal(a.box, b.box)
            np.testing.assert_array_equal(a.landmarks, b.landmarks)
            assert a.score == b.score


def test_torch_thread_setting_is_restored_after_detection(detector):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        detector.detect_faces(skimage_data.camera()[:128, :128])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("image", [np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 2), np.uint8),
                                   np.zeros((2, 64, 64, 3), np.uint8)])
def test_non_rgb_uint8_input_is_refused(detector, image):
    with pytest.raises(InputError, match="MTCNN input"):
        detector.detect_faces(image)


def test_synthetic_loose_crops_when_detected_are_localised_near_their_rendered_landmarks(detector):
    # The benchmark's faces are drawn, not photographed: MTCNN finds only some of them (the align
    # stage uses the set's given landmarks by default). Those it does find must be localised.
    synthetic = pytest.importorskip("facetrust.data.synthetic.images")
    config = synthetic.SynthConfig()
    errors = []
    for index in range(12):
        identity = synthetic.identity_of(0, index)
        rng = synthetic.keyed_rng(0, synthetic.STREAM_IJB, index, 0)
        shot = synthetic.sample_shot(identity, rng, config)
        rendered = synthetic.render_loose(identity, shot, rng, config)
        pixels = np.asarray(Image.open(io.BytesIO(rendered.jpeg)).convert("RGB"))
        result = detector.detect_landmarks(pixels)
        if result is not None and result[1] >= 0.9:
            scale = shot.side / 112.0  # canvas px per aligned-frame px
            errors.append(np.linalg.norm(result[0] - rendered.landmarks, axis=1).mean() / scale)
    print(f"MTCNN found {len(errors)} of 12 synthetic loose crops")
    assert len(errors) >= 2, f"only {len(errors)} of 12 synthetic loose crops detected"
    assert np.median(errors) < 6.0  # aligned-frame px (112 scale)
