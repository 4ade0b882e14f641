"""``facetrust data pack --align mtcnn`` on real photographs that ship with the dependencies:
matplotlib's ``grace_hopper.jpg`` (512x600), scikit-image's astronaut (512x512) and ``lfw_subset``
faces.  What is asserted is what is true of any working detector + aligner: MTCNN finds the face,
and the stored crop is InsightFace's ``norm_crop`` of the detected five points (scikit-image
similarity + ``cv2.warpAffine``, tests/test_align_insightface.py) with those points on the template."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("facenet_pytorch", reason="MTCNN needs facenet-pytorch")
cbook = pytest.importorskip("matplotlib.cbook")
skimage_data = pytest.importorskip("skimage.data")

from facetrust.align.mtcnn import choose_subject, default_detector  # noqa: E402
from facetrust.align.warp import ARCFACE_TEMPLATE_112, estimate_similarity  # noqa: E402
from facetrust.cli import main  # noqa: E402
from facetrust.data.binset import load_bin  # noqa: E402
from facetrust.data.images import decode_image, read_image_file  # noqa: E402
from facetrust.data.insightface import InsightFaceRecord  # noqa: E402
from test_align_insightface import insightface_norm_crop  # noqa: E402

N_LFW = 12


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """An ImageFolder tree of the shipped photographs: Grace Hopper's file as it is and a PNG crop of
    it, the astronaut, and lfw_subset faces (25x25 grey, enlarged to 100x100 as MTCNN needs >= 20 px)."""
    root = tmp_path_factory.mktemp("photos") / "people"
    (root / "hopper").mkdir(parents=True)
    hopper = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    shutil.copy(hopper, root / "hopper" / "grace_hopper.jpg")
    Image.open(hopper).convert("RGB").crop((40, 60, 480, 560)).save(root / "hopper" / "cropped.png")
    (root / "astronaut").mkdir()
    Image.fromarray(skimage_data.astronaut()).save(root / "astronaut" / "astronaut.png")
    (root / "lfw").mkdir()
    for k, patch in enumerate(skimage_data.lfw_subset()[:N_LFW]):
        grey = Image.fromarray(np.round(patch * 255).astype(np.uint8)).resize((100, 100), Image.BICUBIC)
        grey.convert("RGB").save(root / "lfw" / f"{k:02d}.png")
    return root


@pytest.fixture(scope="module")
def packed(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "rec"
    assert main(["data", "pack", "rec", str(photos), "--out", str(out), "--align", "mtcnn", "--encoding", "png",
                 "--on-bad-image", "skip"]) == 0
    return out


def _faces(out: Path) -> list[dict]:
    with open(out / "faces.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_mtcnn_finds_the_face_in_every_photograph(packed):
    report = json.loads((packed / "pack.json").read_text())
    skipped = [s["path"] for s in report["skipped_images"]]
    assert not [p for p in skipped if not p.startswith("lfw/")]  # Hopper (both) and the astronaut
    assert len(skipped) <= N_LFW // 10  # lfw_subset's tight 25-px crops: nearly all found
    rows = {row["path"]: row for row in _faces(packed)}
    assert {"hopper/grace_hopper.jpg", "hopper/cropped.png", "astronaut/astronaut.png"} <= set(rows)
    for path in ("hopper/grace_hopper.jpg", "astronaut/astronaut.png"):
        points = np.array([float(rows[path][f"{a}{i}"]) for i in range(1, 6) for a in "xy"]).reshape(5, 2)
        assert float(rows[path]["score"]) > 0.99
        left_eye, right_eye, nose, mouth_left, mouth_right = points
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]  # the template's order
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    # the crop of Hopper's photograph moved her landmarks by the crop offset
    full = np.array([float(rows["hopper/grace_hopper.jpg"][f"{a}{i}"]) for i in range(1, 6) for a in "xy"])
    cropped = np.array([float(rows["hopper/cropped.png"][f"{a}{i}"]) for i in range(1, 6) for a in "xy"])
    assert np.abs((full - cropped).reshape(5, 2) - [40, 60]).max() < 3.0


def test_every_stored_crop_is_insightface_norm_crop_of_the_detected_points(photos, packed):
    dataset = InsightFaceRecord(packed)
    residuals = []
    for i, row in enumerate(_faces(packed)):
        pixels = read_image_file(photos / row["path"])
        face, _ = choose_subject(default_detector().detect_faces(pixels), pixels.shape)
        recorded = np.array([float(row[f"{a}{k}"]) for k in range(1, 6) for a in "xy"]).reshape(5, 2)
        # faces.csv holds the detection (the pack detects same-sized images in batches: equal to
        # one-at-a-time detection up to float rounding)
        assert np.abs(recorded - face.landmarks).max() < 1e-3
        stored = decode_image(dataset.read(i)[0], packed / "train.rec", i)
        theirs = insightface_norm_crop(pixels, recorded)
        assert np.abs(stored.astype(np.int16) - theirs.astype(np.int16)).max() <= 1, row["path"]
        matrix = estimate_similarity(recorded, ARCFACE_TEMPLATE_112)
        moved = recorded @ matrix[:, :2].T + matrix[:, 2]
        residuals.append(np.linalg.norm(moved - ARCFACE_TEMPLATE_112, axis=1).mean())
    # the points land on the template up to the 4-DoF fit residual (a few px; eyes are 35 px apart)
    assert np.median(residuals) < 3.0 and max(residuals) < 5.0


def test_a_pair_list_of_the_photographs_packs_to_a_bin_of_aligned_crops(photos, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("hopper/grace_hopper.jpg,hopper/cropped.png,1\nhopper/grace_hopper.jpg,astronaut/astronaut.png,0\n")
    out = tmp_path / "photos.bin"
    assert main(["data", "pack", "bin", str(pairs), "--images", str(photos), "--out", str(out), "--align", "mtcnn",
                 "--encoding", "png"]) == 0
    bins, issame = load_bin(out)
    assert issame == [True, False] and len(bins) == 4
    assert bins[0] == bins[2]  # one image, prepared once, stored for each pair it is in
    hopper = read_image_file(photos / "hopper" / "grace_hopper.jpg")
    face, _ = choose_subject(default_detector().detect_faces(hopper), hopper.shape)
    stored = decode_image(bins[0], out)
    assert np.abs(stored.astype(np.int16) - insightface_norm_crop(hopper, face.landmarks).astype(np.int16)).max() <= 1
