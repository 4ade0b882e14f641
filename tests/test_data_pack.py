"""``facetrust data pack rec|bin|ijb``: a user's folders -> InsightFace RecordIO, .bin pair set, IJB-style
set; deterministic order and bytes, the on_bad_image policy, all-or-nothing outputs, and every output
accepted by the project's own readers (``data verify``/``inspect``, the IJB reader, ``align``).
MXNet's own readers and im2rec: tests/test_data_pack_mxnet.py; real photographs with MTCNN:
tests/test_data_pack_photos.py."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facetrust.cli import main
from facetrust.data.binset import load_bin
from facetrust.data.images import decode_image, read_image_file
from facetrust.data.insightface import InsightFaceRecord
from facetrust.pack.faces import crop_resize, encode_image, list_image_folder
from own_data_fixture import CORRUPT_NAME, NO_FACE_NAME, write_identity_folder, write_lfw_style_folder

SIZE = "32,32"


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("user") / "train"
    return root, write_identity_folder(root, identities=4, images=4)


@pytest.fixture(scope="module")
def lfw_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("lfw_style") / "test"
    return root, write_lfw_style_folder(root, identities=4, images=3)


def _aligned_crops(root: Path, subjects: int = 3, per_subject: int = 4) -> Path:
    """112x112 JPEG 'aligned crops' (rendered faces at the template) and a subjects CSV with media."""
    from facetrust.data.synthetic.config import SynthConfig
    from facetrust.data.synthetic.images import render_clean

    config = SynthConfig.from_dict({"image_size": 112})
    rows = []
    for s in range(subjects):
        face = render_clean(0, s, config)
        for n in range(per_subject):
            relative = f"s{s}/{n}.jpg"
            (root / f"s{s}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(face.astype(np.int16) + 6 * n, 0, 255).astype(np.uint8)).save(root / relative)
            rows.append(f"{relative},subject {s},clip{n // 2}")
    (root / "subjects.csv").write_text("image,subject,media\n" + "\n".join(rows) + "\n")
    return root


# --------------------------------------------------------------------------- listing and crops


def test_listing_is_sorted_identities_with_nested_images_and_labels_fixed_by_folder_order(tmp_path):
    for relative in ("b/x.JPG", "a/2020/z.png", "a/y.webp", "a/.hidden.jpg", "c/notes.txt", "loose.jpg",
                     "a/.cache/k.jpg", "d/deep/er/w.bmp"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    classes, images, ignored, unsupported = list_image_folder(tmp_path)
    assert classes == ["a", "b", "c", "d"]  # c has no image: still class 2, so labels never shift
    assert images == [("a/2020/z.png", 0), ("a/y.webp", 0), ("b/x.JPG", 1), ("d/deep/er/w.bmp", 3)]
    assert ignored == ["loose.jpg"]
    assert unsupported == ["c/notes.txt"]


def test_resize_crops_the_centre_to_the_aspect_instead_of_stretching():
    wide = np.zeros((64, 192, 3), np.uint8)
    wide[:, 64:128] = 200  # the centre square is bright, the sides dark
    out = crop_resize(wide, (32, 32))
    assert out.shape == (32, 32, 3) and out.min() == 200  # a squash would bring the dark sides in
    tall = np.zeros((90, 30, 3), np.uint8)
    tall[30:60] = 255
    assert crop_resize(tall, (28, 28)).min() == 255


# --------------------------------------------------------------------------- rec


def test_rec_pack_writes_an_insightface_set_the_readers_accept(user_folder, tmp_path, capsys):
    root, written = user_folder
    out = tmp_path / "rec"
    assert main(["data", "pack", "rec", str(root), "--out", str(out), "--size", SIZE, "--on-bad-image", "skip"]) == 0
    report = json.loads((out / "pack.json").read_text())
    # without detection only the corrupt file is bad; a faceless image is just another crop
    assert [s["path"] for s in report["skipped_images"]] == [written["corrupt"]]
    assert str(root / written["corrupt"]) in report["skipped_images"][0]["reason"]
    assert report["classes"] == written["classes"] and report["skipped"] == 1
    lst = (out / "train.lst").read_text().splitlines()
    assert all(re.fullmatch(r"\d+\t\d+\.000000\t\S+", line) for line in lst)
    keys, labels, paths = zip(*(line.split("\t") for line in lst))
    assert [int(k) for k in keys] == list(range(1, len(lst) + 1))
    assert list(paths) == sorted(set(written["images"]) | {written["no_face"]})
    assert [float(v) for v in labels] == [written["classes"].index(p.split("/")[0]) for p in paths]

    dataset = InsightFaceRecord(out)
    assert dataset.num_classes == 4 and dataset.image_size == (32, 32) and len(dataset) == len(lst)
    assert dataset.labels.tolist() == [int(float(v)) for v in labels]
    assert all(dataset.decode(i)[0].shape == (32, 32, 3) for i in range(len(dataset)))
    assert (out / "property").read_text() == "4,32,32"
    capsys.readouterr()
    assert main(["data", "verify", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == len(lst)
    assert main(["data", "inspect", str(out)]) == 0
    inspected = json.loads(capsys.readouterr().out)
    assert inspected["num_images"] == len(lst) and inspected["num_classes"] == 4


def test_the_same_folder_packed_twice_gives_the_same_bytes(user_folder, tmp_path):
    root, _ = user_folder
    for out in ("a", "b"):
        assert main(["data", "pack", "rec", str(root), "--out", str(tmp_path / out), "--size", SIZE,
                     "--on-bad-image", "skip"]) == 0
    first, second = _tree_hashes(tmp_path / "a"), _tree_hashes(tmp_path / "b")
    assert set(first) == {"train.rec", "train.idx", "property", "train.lst", "faces.csv", "pack.json",
                          ".facetrust-output"}  # the marker: only a previous pack's --out is replaced
    assert first == second


def test_a_bad_image_under_fail_exits_2_naming_it_and_leaves_the_old_output(user_folder, tmp_path, capsys):
    root, written = user_folder
    out = tmp_path / "rec"
    assert main(["data", "pack", "rec", str(root), "--out", str(out), "--size", SIZE, "--on-bad-image", "skip"]) == 0
    previous = _tree_hashes(out)
    assert main(["data", "pack", "rec", str(root), "--out", str(out), "--size", SIZE]) == 2
    err = capsys.readouterr().err
    assert CORRUPT_NAME in err and "Traceback" not in err
    assert _tree_hashes(out) == previous  # the previous pack, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec", "rec.provenance.json"]  # no staging left
    assert main(["data", "pack", "rec", str(tmp_path / "absent"), "--out", str(tmp_path / "x")]) == 2
    assert "absent" in capsys.readouterr().err


def test_pass_through_keeps_a_jpeg_of_the_right_size_byte_for_byte(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "in" / "a").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "in" / "a" / "1.jpg")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "in" / "a" / "2.png")
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "in" / "a" / "3.jpg")
    assert main(["data", "pack", "rec", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--size", SIZE]) == 0
    dataset = InsightFaceRecord(tmp_path / "out")
    assert dataset.read(0)[0] == (tmp_path / "in" / "a" / "1.jpg").read_bytes()
    assert dataset.read(1)[0][:3] == b"\xff\xd8\xff"  # the PNG, encoded as JPEG
    assert json.loads((tmp_path / "out" / "pack.json").read_text())["made"] == {
        "encoded": 1, "pass_through": 1, "resized": 1}


def test_duplicates_non_images_and_a_fifo_are_reported_not_silently_packed_or_waited_on(tmp_path, caplog):
    import os

    rng = np.random.default_rng(1)
    for relative in ("a/1.jpg", "a/2.JFIF", "b/1.tiff"):
        (tmp_path / "in" / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / "in" / relative, format="TIFF" if relative.endswith("tiff") else "JPEG")
    (tmp_path / "in" / "a" / "copy.jpg").write_bytes((tmp_path / "in" / "a" / "1.jpg").read_bytes())
    (tmp_path / "in" / "b" / "wrong_identity.jpg").write_bytes((tmp_path / "in" / "a" / "1.jpg").read_bytes())
    (tmp_path / "in" / "b" / "notes.txt").write_text("x")
    (tmp_path / "in" / "b" / "clip.gif").write_bytes(b"GIF89a")
    (tmp_path / "in" / "a" / ".DS_Store").write_bytes(b"\0")
    os.mkfifo(tmp_path / "in" / "b" / "pipe.jpg")  # read_bytes would block for ever
    with caplog.at_level("WARNING", logger="facetrust.data"):
        assert main(["data", "pack", "rec", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--size", SIZE,
                     "--on-bad-image", "skip"]) == 0
    report = json.loads((tmp_path / "out" / "pack.json").read_text())
    assert report["num_images"] == 5 and report["unsupported_files"] == ["b/clip.gif", "b/notes.txt"]
    assert [s["path"] for s in report["skipped_images"]] == ["b/pipe.jpg"]
    assert "not a regular file" in report["skipped_images"][0]["reason"]
    [group] = report["duplicate_images"]
    assert group["paths"] == ["a/1.jpg", "a/copy.jpg", "b/wrong_identity.jpg"] and group["across_identities"]
    logged = caplog.text
    assert "not images" in logged and "byte-identical" in logged and "1 under more than one identity" in logged


def test_mtcnn_pack_leaves_out_the_corrupt_and_the_faceless_image_and_stores_the_norm_crop(tmp_path):
    from facetrust.align.mtcnn import choose_subject, default_detector
    from facetrust.align.warp import align_face

    root = tmp_path / "train"
    written = write_identity_folder(root, identities=2, images=2)
    out = tmp_path / "rec"
    assert main(["data", "pack", "rec", str(root), "--out", str(out), "--size", SIZE, "--align", "mtcnn",
                 "--encoding", "png", "--on-bad-image", "skip"]) == 0
    report = json.loads((out / "pack.json").read_text())
    assert {s["path"] for s in report["skipped_images"]} == {written["corrupt"], written["no_face"]}
    assert "MTCNN finds no face" in next(s["reason"] for s in report["skipped_images"] if NO_FACE_NAME in s["path"])
    dataset = InsightFaceRecord(out)
    paths = [line.split("\t")[2] for line in (out / "train.lst").read_text().splitlines()]
    assert paths == sorted(written["images"])
    rows = (out / "faces.csv").read_text().splitlines()[1:]
    for i, (path, row) in enumerate(zip(paths, rows)):
        pixels = read_image_file(root / path)
        face, _ = choose_subject(default_detector().detect_faces(pixels), pixels.shape)
        recorded = np.array([float(v) for v in row.split(",")[5:15]]).reshape(5, 2)
        assert int(row.split(",")[15]) >= 1  # faces_found
        assert np.abs(recorded - face.landmarks).max() < 1e-3  # the subject MTCNN finds
        stored = decode_image(dataset.read(i)[0], "test")
        assert np.array_equal(stored, align_face(pixels, recorded, (32, 32)))  # PNG: lossless


# --------------------------------------------------------------------------- bin


def test_lfw_pairs_txt_becomes_a_bin_in_file_order(lfw_folder, tmp_path, capsys):
    root, written = lfw_folder
    out = tmp_path / "pairs.bin"
    assert main(["data", "pack", "bin", str(root / "pairs.txt"), "--out", str(out), "--size", SIZE]) == 0
    bins, issame = load_bin(out)
    lines = (root / "pairs.txt").read_text().splitlines()[1:]
    assert issame == [len(line.split()) == 3 for line in lines] and len(issame) == written["n_pairs"]
    name, a, b = lines[0].split()  # a genuine pair: the two files it names, in order, centre-cropped
    for stored, number in zip(bins[:2], (a, b)):
        pixels = read_image_file(root / name / f"{name}_{int(number):04d}.jpg")
        assert stored == encode_image(crop_resize(pixels, (32, 32)))
    assert all(decode_image(b_, "bin").shape == (32, 32, 3) for b_ in bins)
    capsys.readouterr()
    assert main(["data", "inspect", str(out)]) == 0
    inspected = json.loads(capsys.readouterr().out)
    assert (inspected["pairs"], inspected["genuine"]) == (written["n_pairs"], written["n_genuine"])
    assert json.loads(out.with_suffix(".pack.json").read_text())["n_pairs"] == written["n_pairs"]
    again = tmp_path / "again.bin"
    assert main(["data", "pack", "bin", str(root / "pairs.txt"), "--out", str(again), "--size", SIZE]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_lfw_pairs_find_images_saved_with_another_extension_or_case(lfw_folder, tmp_path):
    import shutil

    root, written = lfw_folder
    copy = tmp_path / "lfw"
    shutil.copytree(root, copy)
    first, second = written["names"][:2]
    (copy / first / f"{first}_0001.jpg").rename(copy / first / f"{first}_0001.JPG")
    Image.open(copy / second / f"{second}_0002.jpg").save(copy / second / f"{second}_0002.png")
    (copy / second / f"{second}_0002.jpg").unlink()
    out = tmp_path / "pairs.bin"
    assert main(["data", "pack", "bin", str(copy / "pairs.txt"), "--out", str(out), "--size", SIZE]) == 0
    report = json.loads(out.with_suffix(".pack.json").read_text())
    assert report["skipped"] == 0 and report["n_pairs"] == written["n_pairs"]
    assert report["found_with_another_extension"] == 2
    bins, _ = load_bin(out)
    reference, _ = load_bin(_pack_reference(root, tmp_path))
    assert bins[0] == reference[0]  # the .JPG is the same file under another name


def test_test_images_that_are_training_images_are_reported_by_both_test_packers(lfw_folder, tmp_path, capsys, caplog):
    import shutil

    root, written = lfw_folder
    train = tmp_path / "train"
    first, second = written["names"][:2]
    (train / "someone").mkdir(parents=True)
    shutil.copy(root / first / f"{first}_0001.jpg", train / "someone" / "leaked.jpg")  # a test photo in training
    Image.open(root / second / f"{second}_0002.jpg").rotate(5).save(train / "someone" / "other.jpg")
    (train / second.replace("_", " ").title()).mkdir()  # "Person 101": the test's person_101 by another spelling
    Image.open(root / second / f"{second}_0003.jpg").rotate(9).save(train / second.replace("_", " ").title() / "x.jpg")
    assert main(["data", "pack", "rec", str(train), "--out", str(tmp_path / "rec"), "--size", SIZE]) == 0
    faces = tmp_path / "rec" / "faces.csv"
    with caplog.at_level("WARNING", logger="facetrust.data"):
        assert main(["data", "pack", "bin", str(root / "pairs.txt"), "--out", str(tmp_path / "p.bin"), "--size", SIZE,
                     "--training-faces", str(faces)]) == 0
    overlap = json.loads((tmp_path / "p.pack.json").read_text())["in_training_set"]
    assert overlap == {"training_faces": str(faces), "images": 1,
                       "examples": [[f"{first}/{first}_0001.jpg", "someone/leaked.jpg"]],
                       "identities": 1, "identity_examples": [second]}
    assert "1 test images are byte-identical to training images" in caplog.text
    assert "1 test identities are named like training identities" in caplog.text

    subjects = tmp_path / "subjects.csv"
    subjects.write_text((root / "subjects.csv").read_text())
    assert main(["data", "pack", "ijb", str(root), "--subjects", str(subjects), "--name", "t", "--out",
                 str(tmp_path / "ijb"), "--align", "mtcnn", "--on-bad-image", "skip", "--training-faces",
                 str(faces)]) == 0
    overlap = json.loads((tmp_path / "ijb" / "pack.json").read_text())["in_training_set"]
    assert overlap["images"] == 1 and overlap["examples"] == [[f"{first}/{first}_0001.jpg", "someone/leaked.jpg"]]
    assert overlap["identities"] == 1 and overlap["identity_examples"] == [second]  # the subjects CSV's names

    (tmp_path / "old_faces.csv").write_text("key,path,label\n1,a.jpg,0\n")  # a faces.csv without digests
    assert main(["data", "pack", "bin", str(root / "pairs.txt"), "--out", str(tmp_path / "q.bin"), "--size", SIZE,
                 "--training-faces", str(tmp_path / "old_faces.csv")]) == 2
    assert "old_faces.csv: no 'path' and 'sha256' columns" in capsys.readouterr().err


def _pack_reference(root, tmp_path):
    out = tmp_path / "reference.bin"
    assert main(["data", "pack", "bin", str(root / "pairs.txt"), "--out", str(out), "--size", SIZE]) == 0
    return out


def test_a_csv_pair_list_with_a_header_and_a_missing_image_under_skip(lfw_folder, tmp_path):
    root, written = lfw_folder
    name = written["names"][0]
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(f"path1,path2,label\n{name}/{name}_0001.jpg,{name}/{name}_0002.jpg,1\n"
                        f"{name}/{name}_0001.jpg,{name}/missing.jpg,0\n"
                        f"{name}/{name}_0003.jpg,{written['names'][1]}/{written['names'][1]}_0001.jpg,false\n")
    out = tmp_path / "csv.bin"
    assert main(["data", "pack", "bin", str(csv_file), "--images", str(root), "--out", str(out), "--size", SIZE,
                 "--on-bad-image", "skip"]) == 0
    bins, issame = load_bin(out)
    assert issame == [True, False] and len(bins) == 4
    report = json.loads(out.with_suffix(".pack.json").read_text())
    assert [s["line"] for s in report["skipped_pairs"]] == [3] and "missing.jpg" in report["skipped_pairs"][0]["reason"]
    assert main(["data", "pack", "bin", str(csv_file), "--images", str(root), "--out", str(tmp_path / "f.bin"),
                 "--size", SIZE]) == 2
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.pack.json").exists()


@pytest.mark.parametrize("text, fmt, where", [
    ("10\t300\nalice 1\n", "lfw", "line 2: 2 fields"),
    ("alice 1 x\n", "lfw", "line 1: image number 'x'"),
    ("a.jpg,b.jpg,1\na.jpg,b.jpg,maybe\n", "csv", "line 2: label 'maybe'"),
    ("a.jpg,b.jpg\n", "csv", "line 1: 2 fields"),
])
def test_a_malformed_pair_list_exits_2_naming_the_line(tmp_path, capsys, text, fmt, where):
    pairs = tmp_path / f"pairs.{'csv' if fmt == 'csv' else 'txt'}"
    pairs.write_text(text)
    assert main(["data", "pack", "bin", str(pairs), "--out", str(tmp_path / "x.bin")]) == 2
    err = capsys.readouterr().err
    assert str(pairs) in err and where in err and "Traceback" not in err


# --------------------------------------------------------------------------- ijb


def test_ijb_pack_templates_pairs_and_the_readers(tmp_path, capsys):
    from facetrust.data.ijb import read_ijb_protocol, read_template_identities

    root = _aligned_crops(tmp_path / "crops")
    out = tmp_path / "ijb"
    assert main(["data", "pack", "ijb", str(root), "--subjects", str(root / "subjects.csv"), "--name", "mine",
                 "--out", str(out), "--seed", "3"]) == 0
    protocol = read_ijb_protocol(out, "mine")
    identity = read_template_identities(out, "mine")
    assert len(protocol.images) == 12 and protocol.n_templates == 6  # 3 subjects x 2 templates
    # a media (clip) is never split between templates; a template holds one subject
    sources = json.loads((out / "pack.json").read_text())["loose_crop_sources"]
    rows = {}
    for image, template, media in zip(protocol.images, protocol.template_ids, protocol.media_ids):
        rows.setdefault(int(media), set()).add(int(template))
        assert (out / "loose_crop" / image).read_bytes() == (root / sources[image]).read_bytes()
    assert all(len(t) == 1 for t in rows.values())
    first, second = np.vectorize(identity.get)(protocol.pairs).T
    assert np.array_equal(protocol.labels == 1, first == second)  # genuine = same subject
    assert int(protocol.labels.sum()) == 3  # one genuine pair of templates per subject
    # 10 impostors per genuine pair (30) capped at all pairs of different subjects: C(6,2) - 3 = 12
    assert int((protocol.labels == 0).sum()) == 12
    # aligned crops (--align none): the template's landmarks, score 1
    assert np.allclose(protocol.landmarks[0], [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                               [41.5493, 92.3655], [70.7299, 92.2041]], atol=1e-3)
    assert np.all(protocol.detector_scores == 1.0)
    capsys.readouterr()
    assert main(["data", "inspect", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["templates"] == 6
    assert main(["align", "--in", str(out), "--name", "mine", "--out", str(tmp_path / "aligned"), "--size", SIZE]) == 0


def test_ijb_impostor_sample_follows_the_seed(tmp_path):
    root = _aligned_crops(tmp_path / "crops", subjects=5, per_subject=4)
    texts = []
    for seed in (1, 1, 2):
        out = tmp_path / f"ijb{len(texts)}"
        assert main(["data", "pack", "ijb", str(root), "--subjects", str(root / "subjects.csv"), "--name", "m",
                     "--out", str(out), "--seed", str(seed), "--impostor-pairs", "6"]) == 0
        texts.append((out / "meta" / "m_template_pair_label.txt").read_text())
    labels = [line.split()[2] for line in texts[0].splitlines()]
    assert labels.count("0") == 6 and labels.count("1") == 5  # two media per subject: two templates each
    assert texts[0] == texts[1] and texts[0] != texts[2]


def test_ijb_bad_rows_exit_2_naming_the_line(tmp_path, capsys):
    root = _aligned_crops(tmp_path / "crops", subjects=2, per_subject=2)
    csv_file = root / "subjects.csv"
    csv_file.write_text(csv_file.read_text() + "s0/0.jpg,subject 0,clip9\n")
    assert main(["data", "pack", "ijb", str(root), "--subjects", str(csv_file), "--name", "m",
                 "--out", str(tmp_path / "o")]) == 2
    assert "line 6: image 's0/0.jpg' listed twice" in capsys.readouterr().err
    Image.new("RGB", (90, 40)).save(root / "wide.jpg")
    csv_file.write_text("image,subject\ns0/0.jpg,a\nwide.jpg,a\n")
    assert main(["data", "pack", "ijb", str(root), "--subjects", str(csv_file), "--name", "m",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "wide.jpg" in err and "not an aligned crop" in err and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- params


def test_a_packed_set_must_be_read_from_where_it_is_packed():
    from facetrust.config import validate_params
    from facetrust.errors import ConfigError

    params = {"models": {"m": {"backbone": "iresnet", "head": {"kind": "arcface"}}},
              "datasets": {"source": "files", "train": "data/mine", "pack": {"train": "photos"}}}
    with pytest.raises(ConfigError, match="datasets.train: 'data/mine'.*'data/packed/train'"):
        validate_params(params)
    params["datasets"]["train"] = "data/packed/train"
    assert validate_params(params)["datasets"]["pack"]["align"] == "mtcnn"
