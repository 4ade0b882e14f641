"""``facetrust data pack rec`` against MXNet 1.9.1 itself (tests/mxnet_reference/im2rec_reference.py):
our ``train.lst`` is the list ``im2rec.py --list`` makes of the same folder, ``im2rec.py
--pass-through`` run on our list writes exactly our image records, and MXNet reads the packed set the
way InsightFace's loader does.  Runs in .venv-mxnet like tests/test_mxnet_compat.py; skips without it."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facetrust.cli import main
from facetrust.data.recordio import IndexedRecordIOReader

ROOT = Path(__file__).resolve().parents[1]
MXNET_PYTHON = ROOT / ".venv-mxnet" / "bin" / "python"
SCRIPT = ROOT / "tests" / "mxnet_reference" / "im2rec_reference.py"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not MXNET_PYTHON.exists(),
        reason=f"{MXNET_PYTHON} absent: create it with `python3 -m venv .venv-mxnet && "
        ".venv-mxnet/bin/pip install mxnet==1.9.1 'numpy<1.24'`",
    ),
]


def run_mxnet(*args) -> dict:
    done = subprocess.run([str(MXNET_PYTHON), str(SCRIPT), *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["mxnet"] == "1.9.1"
    return result


def _folder(root: Path, nested: bool) -> Path:
    """Identity folders of 32x32 JPEGs (stored byte for byte) and one PNG each (re-encoded)."""
    rng = np.random.default_rng(5)
    for k, name in enumerate(["carol", "alice", "bob"]):  # written out of order on purpose
        for n in range(3 + k):
            sub = "2020/" if nested and n == 1 else ""
            path = root / name / f"{sub}{n}.{'png' if n == 2 else 'jpg'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return root


def _pack(images: Path, out: Path) -> None:
    assert main(["data", "pack", "rec", str(images), "--out", str(out), "--size", "32,32"]) == 0


def test_our_list_is_im2rec_list_of_the_same_identity_folders(tmp_path):
    images = _folder(tmp_path / "images", nested=False)
    _pack(images, tmp_path / "ours")
    run_mxnet("list", tmp_path / "ref", images)
    theirs = [line.split("\t") for line in (tmp_path / "ref.lst").read_text().splitlines()]
    ours = [line.split("\t") for line in (tmp_path / "ours" / "train.lst").read_text().splitlines()]
    assert [(label, path) for _, label, path in ours] == [(label, path) for _, label, path in theirs]
    # im2rec counts from 0; our key 0 is the InsightFace header record, so images start at 1
    assert [int(i) for i, _, _ in ours] == [int(i) + 1 for i, _, _ in theirs]


def test_im2rec_pass_through_of_our_list_writes_our_image_records(tmp_path):
    images = _folder(tmp_path / "images", nested=True)
    _pack(images, tmp_path / "ours")
    (tmp_path / "ref").mkdir()
    shutil.copy(tmp_path / "ours" / "train.lst", tmp_path / "ref" / "train.lst")
    records = run_mxnet("pack", tmp_path / "ref" / "train", images)["records"]
    made = json.loads((tmp_path / "ours" / "pack.json").read_text())["made"]
    assert made == {"encoded": 3, "pass_through": 9}
    with IndexedRecordIOReader(tmp_path / "ours" / "train.idx", tmp_path / "ours" / "train.rec") as reader:
        ours = {key: reader.read_idx(key) for key in reader.keys}
    pass_through = [line.split("\t")[0] for line in (tmp_path / "ours" / "train.lst").read_text().splitlines()
                    if line.endswith(".jpg")]
    assert len(records) == 12
    for record in records:  # the JPEGs byte for byte, header (0, label, key, 0) included
        if str(record["key"]) in pass_through:
            assert bytes.fromhex(record["record_hex"]) == ours[record["key"]], record["key"]
        else:  # the PNG files: im2rec passes the PNG bytes through, we store the JPEG face2rec2 would
            assert bytes.fromhex(record["record_hex"])[:24] == ours[record["key"]][:24]


def test_mxnet_reads_the_packed_set_as_insightface_training_does(tmp_path):
    images = _folder(tmp_path / "images", nested=True)
    _pack(images, tmp_path / "ours")
    read = run_mxnet("read_set", tmp_path / "ours")
    report = json.loads((tmp_path / "ours" / "pack.json").read_text())
    assert read["flag"] == 2 and read["header"] == report["header"] == [13, 16]
    lst = [line.split("\t") for line in (tmp_path / "ours" / "train.lst").read_text().splitlines()]
    assert [(r["key"], r["id"], r["label"]) for r in read["images"]] == [(int(k), int(k), float(v)) for k, v, _ in lst]
    with IndexedRecordIOReader(tmp_path / "ours" / "train.idx", tmp_path / "ours" / "train.rec") as reader:
        for record in read["images"]:
            payload = reader.read_idx(record["key"])[24:]
            assert hashlib.sha256(payload).hexdigest() == record["payload_sha256"]
    # classes in sorted folder order: alice (4 images), bob (5), carol (3); ranges tile the image keys
    assert read["identities"] == [[1, 5], [5, 10], [10, 13]]
    assert report["classes"] == ["alice", "bob", "carol"]
