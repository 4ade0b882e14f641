"""The align stage with ``method="mtcnn"``: loose crops are re-detected, the detector's landmarks and
score replace the set's, and a crop without a detectable face keeps the set's own."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("facenet_pytorch", reason="MTCNN needs facenet-pytorch (pip install --no-deps)")
skimage_data = pytest.importorskip("skimage.data", reason="real test photographs come from scikit-image")

from facetrust.align.mtcnn import default_detector  # noqa: E402
from facetrust.align.stage import read_aligned, run_align  # noqa: E402
from facetrust.data import recordio  # noqa: E402
from facetrust.errors import ConfigError  # noqa: E402
from ijb_protocol_fixture import write_ijb_dir  # noqa: E402


@pytest.fixture(scope="module")
def loose_set(tmp_path_factory):
    """Two real faces and one blank crop; the set's landmarks for the faces are deliberately off."""
    root = tmp_path_factory.mktemp("ijb")
    crops = {"face0.jpg": skimage_data.astronaut()[0:280, 100:360],
             "face1.jpg": np.repeat(skimage_data.camera()[60:260, 140:320, None], 3, axis=2),
             "blank.jpg": np.full((120, 120, 3), 128, np.uint8)}
    (root / "loose_crop").mkdir()
    for name, pixels in crops.items():
        Image.fromarray(pixels).save(root / "loose_crop" / name, quality=95)
    given = np.tile([[30.0, 40.0], [70.0, 40.0], [50.0, 60.0], [35.0, 80.0], [65.0, 80.0]], (3, 1, 1))
    write_ijb_dir(root, "ijbx", list(crops), [1, 2, 3], [1, 2, 3], [0.25, 0.5, 0.75], [(1, 2), (1, 3)], [0, 0],
                  landmarks=given)
    return root


def test_mtcnn_method_uses_detected_landmarks_and_falls_back_to_the_given_ones(loose_set, tmp_path):
    manifest = run_align(loose_set, "ijbx", tmp_path / "mtcnn", output_size=(112, 112), method="mtcnn")
    run_align(loose_set, "ijbx", tmp_path / "given", output_size=(112, 112), method="landmarks")
    assert manifest["method"] == "mtcnn" and manifest["detected"] == 2 and manifest["given_landmarks"] == 1
    index = pd.read_csv(tmp_path / "mtcnn" / "index.csv")
    assert index["landmark_source"].tolist() == ["mtcnn", "mtcnn", "given"]
    names, scores, reader = read_aligned(tmp_path / "mtcnn")
    _, _, given_reader = read_aligned(tmp_path / "given")
    assert scores[2] == np.float32(0.75) and np.all(scores[:2] >= 0.9)  # MTCNN's scores for the faces
    for key in range(3):
        header, payload = recordio.unpack(reader.read_idx(key))
        assert np.float32(header.label) == scores[key]
        aligned = np.asarray(Image.open(io.BytesIO(payload)))
        _, given_payload = recordio.unpack(given_reader.read_idx(key))
        same_as_given = np.array_equal(aligned, np.asarray(Image.open(io.BytesIO(given_payload))))
        assert same_as_given == (key == 2)
        if key < 2:  # the detected face sits on the template after alignment
            redetected = default_detector().detect_landmarks(aligned)
            assert redetected is not None and redetected[1] >= 0.9
    assert json.loads((tmp_path / "mtcnn" / "manifest.json").read_text())["detected"] == 2


def test_unknown_landmark_method_is_a_config_error(loose_set, tmp_path):
    with pytest.raises(ConfigError, match="mtcnn"):
        run_align(loose_set, "ijbx", tmp_path / "x", method="retinaface")


def test_cli_writes_the_face_choice_and_no_face_policies(loose_set, tmp_path, capsys):
    from facetrust.cli import main

    out = tmp_path / "cli"
    assert main(["align", "--in", str(loose_set), "--name", "ijbx", "--out", str(out), "--detector", "mtcnn"]) == 0
    index = pd.read_csv(out / "index.csv")
    assert list(index.columns) == ["image", "detector_score", "landmark_source", "faces_found", "face_choice"]
    assert index["face_choice"].tolist() == ["nearest_centre", "nearest_centre", "no_face"]
    assert index["faces_found"].tolist()[2] == 0 and min(index["faces_found"].tolist()[:2]) >= 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert "nearest the image centre" in manifest["face_choice"] and "own five points" in manifest["no_face"]
    # --no-face error: the blank crop stops the run, naming it, and nothing is left behind
    strict = tmp_path / "strict"
    code = main(["align", "--in", str(loose_set), "--name", "ijbx", "--out", str(strict), "--detector", "mtcnn",
                 "--no-face", "error"])
    assert code == 2 and "blank.jpg" in capsys.readouterr().err
    assert not (strict / "index.csv").exists()


def test_batched_detection_equals_one_image_at_a_time():
    import skimage.data

    detector = default_detector()
    faces = [np.asarray(Image.fromarray(np.round(p * 255).astype(np.uint8)).resize((100, 100)).convert("RGB"))
             for p in skimage.data.lfw_subset()[95:105]]  # faces and non-faces
    faces.append(skimage.data.astronaut())  # another size: its own batch
    batched = detector.detect_faces_batch(faces, batch_size=4)
    for image, together in zip(faces, batched):
        alone = detector.detect_faces(image)
        assert len(alone) == len(together)
        for a, b in zip(alone, together):
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
            assert abs(a.score - b.score) < 1e-5
    assert sum(bool(found) for found in batched) >= 5
