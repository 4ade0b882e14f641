"""Byte compatibility with MXNet 1.9.1 itself, both ways (tests/mxnet_reference/make_reference.py).

MXNet runs in its own venv (``.venv-mxnet``: mxnet 1.9.1 needs numpy < 1.24, the project pins
numpy 2), called through a subprocess.  Without that venv these tests skip and say how to make it.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import pytest

from facetrust.data.insightface import InsightFaceRecord, write_insightface_dataset
from facetrust.data.inspect import dump_jsonl
from facetrust.data.recordio import (
    IndexedRecordIOReader,
    IndexedRecordIOWriter,
    IRHeader,
    RecordIOReader,
    pack,
    unpack,
)

ROOT = Path(__file__).resolve().parents[1]
MXNET_PYTHON = ROOT / ".venv-mxnet" / "bin" / "python"
SCRIPT = ROOT / "tests" / "mxnet_reference" / "make_reference.py"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not MXNET_PYTHON.exists(),
        reason=f"{MXNET_PYTHON} absent: create it with `python3 -m venv .venv-mxnet && "
        ".venv-mxnet/bin/pip install mxnet==1.9.1 'numpy<1.24'`",
    ),
]


def run_mxnet(*args) -> dict:
    done = subprocess.run(
        [str(MXNET_PYTHON), str(SCRIPT), *map(str, args)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("mxnet_ref")
    result = run_mxnet("write", out)
    assert result["mxnet"] == "1.9.1"
    return out, result


def case_records(cases):
    for case in cases:
        label = case["label"]
        header = IRHeader(0, tuple(label) if isinstance(label, list) else label, case["id"], case["id2"])
        yield case["key"], pack(header, bytes.fromhex(case["payload_hex"]))


def test_writer_output_is_byte_identical_to_mxnet(reference, tmp_path):
    ref_dir, result = reference
    with IndexedRecordIOWriter(tmp_path / "ours.idx", tmp_path / "ours.rec") as writer:
        for key, record in case_records(result["cases"]):
            writer.write_idx(key, record)
    assert (tmp_path / "ours.rec").read_bytes() == (ref_dir / "ref.rec").read_bytes()
    assert (tmp_path / "ours.idx").read_bytes() == (ref_dir / "ref.idx").read_bytes()


def test_reader_reads_mxnet_written_records(reference):
    ref_dir, result = reference
    expected = dict(case_records(result["cases"]))
    with IndexedRecordIOReader(ref_dir / "ref.idx", ref_dir / "ref.rec") as reader:
        assert reader.keys == [case["key"] for case in result["cases"]]
        for key in reader.keys:
            assert reader.read_idx(key) == expected[key]
    sequential = [record for _, record in RecordIOReader(ref_dir / "ref.rec")]
    assert sequential == [expected[case["key"]] for case in result["cases"]]


def test_mxnet_reads_records_we_wrote(tmp_path):
    ours = [
        (10, pack(IRHeader(0, (1.0, 2.0), 1, 2), b"\x0a\x23\xd7\xce" * 3 + b"end")),
        (2, pack(IRHeader(0, 5.0, 3, 4), b"")),
        (4, pack(IRHeader(0, 6.0, 5, 6), b"ab\x0a\x23\xd7\xce")),
        (3, pack(IRHeader(0, (9.0,), 7, 8), b"1234\x0a\x23\xd7\xce")),
    ]
    with IndexedRecordIOWriter(tmp_path / "o.idx", tmp_path / "o.rec") as writer:
        for key, record in ours:
            writer.write_idx(key, record)
    read = run_mxnet("read", tmp_path / "o.idx", tmp_path / "o.rec")
    assert [r["key"] for r in read["indexed"]] == [key for key, _ in ours]
    for got, (_, record) in zip(read["indexed"], ours):
        header, payload = unpack(record)
        assert bytes.fromhex(got["record_hex"]) == record
        assert bytes.fromhex(got["payload_hex"]) == payload
        assert got["flag"] == header.flag
        assert got["label"] == ([header.label] if header.flag == 0 else list(header.label))
        assert (got["id"], got["id2"]) == (header.id, header.id2)
    assert [bytes.fromhex(r["record_hex"]) for r in read["sequential"]] == [r for _, r in ours]


def test_insightface_set_is_byte_identical_to_mxnet_layout(reference, tmp_path):
    ref_dir, result = reference
    spec = result["insightface"]
    samples = zip(spec["labels"], (bytes.fromhex(h) for h in spec["payload_hex"]))
    summary = write_insightface_dataset(tmp_path, samples, spec["num_classes"], (112, 112))
    assert list(summary["header"]) == spec["header"]
    for name in ("train.rec", "train.idx", "property"):
        assert (tmp_path / name).read_bytes() == (ref_dir / "insightface" / name).read_bytes(), name


def test_insightface_reader_reads_mxnet_written_set(reference):
    ref_dir, result = reference
    spec = result["insightface"]
    dataset = InsightFaceRecord(ref_dir / "insightface")
    assert dataset.header == tuple(spec["header"])
    assert dataset.num_classes == spec["num_classes"] and dataset.image_size == (112, 112)
    assert dataset.labels.tolist() == spec["labels"]
    assert [dataset.read(i)[0].hex() for i in range(len(dataset))] == spec["payload_hex"]


def test_mxnet_reads_our_insightface_set_and_dump_agrees(tmp_path):
    labels = [0, 1, 1, 2]
    payloads = [b"img%d" % i + b"\x0a\x23\xd7\xce" for i in range(len(labels))]
    write_insightface_dataset(tmp_path, zip(labels, payloads), 3, (112, 96))
    read = run_mxnet("read", tmp_path / "train.idx", tmp_path / "train.rec")
    by_key = {r["key"]: r for r in read["indexed"]}
    assert by_key[0]["flag"] == 2 and by_key[0]["label"] == [5.0, 8.0]
    assert [by_key[k]["label"] for k in (5, 6, 7)] == [[1.0, 2.0], [2.0, 4.0], [4.0, 5.0]]
    assert [by_key[k + 1]["label"][0] for k in range(4)] == [float(v) for v in labels]

    stream = io.StringIO()
    dump_jsonl(tmp_path, stream)
    dumped = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [d["key"] for d in dumped] == [r["key"] for r in read["indexed"]]
    for ours, theirs in zip(dumped, read["indexed"]):
        assert ours["label"] == theirs["label"] and ours["flag"] == theirs["flag"]
        assert ours["payload_sha256"] == hashlib.sha256(bytes.fromhex(theirs["payload_hex"])).hexdigest()
