"""facetrust.data.inspect: summaries and JSONL dumps of RecordIO, .bin and IJB inputs."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import pytest
from PIL import Image

from facetrust.data.binset import write_bin
from facetrust.data.insightface import write_insightface_dataset
from facetrust.data.inspect import dump_jsonl, inspect_path
from facetrust.data.recordio import IndexedRecordIOWriter, IRHeader, RecordIOWriter, pack
from facetrust.errors import InputError

MAGIC_LE = b"\x0a\x23\xd7\xce"


def jpeg(shade: int, size=(9, 7)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size[1], size[0]), (shade, shade, shade)).save(buffer, format="JPEG")
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def insightface_dir(tmp_path):
    images = [(0, jpeg(10)), (0, jpeg(60) + MAGIC_LE), (2, jpeg(120))]
    write_insightface_dataset(tmp_path / "faces", images, num_classes=3, image_size=(9, 7))
    return tmp_path / "faces", images


def test_inspect_recordio_reports_header_ranges_and_property(insightface_dir):
    rec_dir, images = insightface_dir
    summaries = [inspect_path(p) for p in (rec_dir, rec_dir / "train.rec", rec_dir / "train.idx")]
    assert summaries[0] == summaries[1] == summaries[2]
    summary = summaries[0]
    assert summary["format"] == "recordio" and summary["records"] == 1 + 3 + 3
    assert summary["keys"] == {"min": 0, "max": 6}
    assert summary["header"] == {"image_keys": [1, 4], "identity_keys": [4, 7]}
    assert summary["num_images"] == 3 and summary["num_classes"] == 3
    assert summary["property"] == {"num_classes": 3, "height": 9, "width": 7}
    assert summary["flags"] == {"0": 3, "2": 4}
    json.dumps(summary)  # JSON-ready


def test_dump_recordio_labels_are_lists_and_hash_the_payload(insightface_dir):
    rec_dir, images = insightface_dir
    stream = io.StringIO()
    assert dump_jsonl(rec_dir / "train.idx", stream) == 7
    rows = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert set(rows[0]) == {"key", "flag", "label", "id", "id2", "payload_sha256"}
    assert rows[0] == {"key": 0, "flag": 2, "label": [4.0, 7.0], "id": 0, "id2": 0,
                       "payload_sha256": sha(b"")}
    for row, (label, image) in zip(rows[1:4], images):
        assert row["flag"] == 0 and row["label"] == [float(label)]
        assert row["payload_sha256"] == sha(image) and row["id"] == row["key"]
    assert [row["label"] for row in rows[4:]] == [[1.0, 3.0], [3.0, 3.0], [3.0, 4.0]]


def test_dump_rec_without_idx_uses_record_ordinals(tmp_path):
    records = [pack(IRHeader(0, (1.5, 2.5), 7, 8), b"a" * 5), pack(IRHeader(0, 3.0, 9, 1), MAGIC_LE)]
    with IndexedRecordIOWriter(tmp_path / "x.idx", tmp_path / "x.rec") as writer:
        writer.write_idx(40, records[0])
        writer.write_idx(12, records[1])
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tmp_path / "x.rec", alone / "x.rec")
    with_idx, without_idx = io.StringIO(), io.StringIO()
    dump_jsonl(tmp_path / "x.rec", with_idx)
    dump_jsonl(alone / "x.rec", without_idx)
    keyed = [json.loads(line) for line in with_idx.getvalue().splitlines()]
    ordinal = [json.loads(line) for line in without_idx.getvalue().splitlines()]
    assert [row["key"] for row in keyed] == [40, 12]
    assert [row["key"] for row in ordinal] == [0, 1]
    assert [row["label"] for row in ordinal] == [[1.5, 2.5], [3.0]]
    assert ordinal[1]["payload_sha256"] == sha(MAGIC_LE) and ordinal[0]["id2"] == 8
    summary = inspect_path(alone / "x.rec")
    assert summary["idx"] is None and summary["records"] == 2 and summary["property"] is None


def test_inspect_and_dump_bin(tmp_path):
    bins = [jpeg(s, size=(11, 5)) for s in (0, 50, 100, 150)]
    write_bin(tmp_path / "lfw.bin", bins, [True, False])
    summary = inspect_path(tmp_path / "lfw.bin")
    assert summary["pairs"] == 2 and summary["genuine"] == 1 and summary["images"] == 4
    assert summary["first_image_size"] == [11, 5]
    stream = io.StringIO()
    dump_jsonl(tmp_path / "lfw.bin", stream)
    rows = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["index"], r["pair"], r["issame"]) for r in rows] == [
        (0, 0, True), (1, 0, True), (2, 1, False), (3, 1, False)]
    assert [r["payload_sha256"] for r in rows] == [sha(b) for b in bins]


def test_inspect_ijb_directory_counts_templates_media_pairs(tmp_path):
    meta = tmp_path / "IJBX" / "meta"
    meta.mkdir(parents=True)
    (meta / "ijbx_face_tid_mid.txt").write_text(
        "1.jpg 1 100\n2.jpg 1 100\n3.jpg 1 101\n4.jpg 2 102\n5.jpg 3 103\n")
    (meta / "ijbx_template_pair_label.txt").write_text("1 2 0\n1 3 1\n2 3 0\n")
    summary = inspect_path(tmp_path / "IJBX")
    assert summary["name"] == "ijbx"
    assert (summary["images"], summary["templates"], summary["media"]) == (5, 3, 4)
    assert (summary["pairs"], summary["genuine"]) == (3, 1)


def test_inspect_refuses_unknown_paths(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt: not a .rec"):
        inspect_path(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="no such file"):
        inspect_path(tmp_path / "missing.rec")
    with pytest.raises(InputError, match="dump reads"):
        dump_jsonl(tmp_path / "notes.txt", io.StringIO())


def test_inspect_reports_corrupt_recordio_with_offset(tmp_path):
    with RecordIOWriter(tmp_path / "c.rec") as writer:
        writer.write(pack(IRHeader(0, 1.0, 0, 0), b"abcdefgh"))
        writer.write(pack(IRHeader(0, 2.0, 0, 0), b"ijkl"))
    data = (tmp_path / "c.rec").read_bytes()
    (tmp_path / "c.rec").write_bytes(data[:-3])
    with pytest.raises(InputError, match=r"c\.rec: record at offset 40: length 28 .* past the end"):
        inspect_path(tmp_path / "c.rec")
