"""MXNet's own RecordIO, as the reference for facetrust.data.recordio (run under .venv-mxnet).

Standalone on purpose: it imports mxnet (1.9.1, numpy < 1.24) and nothing from facetrust, so the
bytes it writes and the values it reads come from MXNet alone.

    python make_reference.py write OUT_DIR
        writes OUT_DIR/ref.idx + ref.rec (every case in CASES, through MXIndexedRecordIO and
        recordio.pack) and an InsightFace-layout set in OUT_DIR/insightface/; prints JSON
        {"cases": [...], "insightface": {...}} describing what it wrote.
    python make_reference.py read IDX REC
        reads IDX/REC with MXIndexedRecordIO (idx order) and MXRecordIO (sequential scan) and
        prints JSON {"indexed": [...], "sequential": [...]}: each record's unpacked header and
        payload in hex.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import warnings

warnings.filterwarnings("ignore")
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

MAGIC = struct.pack("<I", 0xCED7230A)


def _cases():
    """(key, label, id, id2, payload): aligned/unaligned magic, several labels, empty payloads."""
    rng = np.random.RandomState(7)
    noise = rng.randint(0, 256, size=301).astype(np.uint8).tobytes()
    return [
        (0, 1.0, 0, 0, b""),
        (1, 2.5, 11, 3, b"abc"),
        (2, 3.0, 12, 0, b"wxyz" + MAGIC + b"tail!"),  # aligned magic inside the payload
        (5, 4.0, 13, 0, b"x" + MAGIC + b"yy"),  # magic at an offset not 4-aligned in the record
        (3, [1.0, 2.0, 3.0], 14, 0, b"abcd" + MAGIC),
        (4, [0.5, -1.25], 15, 9, noise),
        (9, [7.0], 16, 0, MAGIC + MAGIC + b"12345678" + MAGIC + b"z"),
        (8, [3.0, 9.0], 0, 0, b""),
        (7, 0.0, 0, 0, MAGIC[:2]),
        # Magic aligned within the *record* (header 24 bytes + 1 label = 28, then payload offset 0)
        (6, [2.0], 17, 0, MAGIC + b"rest"),
    ]


def _write(out_dir: str) -> dict:
    os.makedirs(os.path.join(out_dir, "insightface"), exist_ok=True)
    record = mx.recordio.MXIndexedRecordIO(
        os.path.join(out_dir, "ref.idx"), os.path.join(out_dir, "ref.rec"), "w"
    )
    cases = []
    for key, label, rec_id, rec_id2, payload in _cases():
        record.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, label, rec_id, rec_id2), payload))
        cases.append({"key": key, "label": label, "id": rec_id, "id2": rec_id2, "payload_hex": payload.hex()})
    record.close()
    return {"cases": cases, "insightface": _write_insightface(os.path.join(out_dir, "insightface"))}


def _write_insightface(rec_dir: str) -> dict:
    """The layout InsightFace's recognition sets have: header, images, identity ranges."""
    labels = [0, 0, 1, 1, 1, 3]  # class 2 has no image: an empty identity range
    num_classes = 4
    record = mx.recordio.MXIndexedRecordIO(
        os.path.join(rec_dir, "train.idx"), os.path.join(rec_dir, "train.rec"), "w"
    )
    first_identity = len(labels) + 1
    end = first_identity + num_classes
    record.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(0, [first_identity, end], 0, 0), b""))
    payloads = []
    for i, label in enumerate(labels):
        payload = ("image-%d-of-class-%d" % (i, label)).encode() + MAGIC
        payloads.append(payload.hex())
        record.write_idx(i + 1, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), i + 1, 0), payload))
    for cls in range(num_classes):
        keys = [i + 1 for i, label in enumerate(labels) if label == cls]
        start = keys[0] if keys else 1 + sum(1 for label in labels if label < cls)
        span = [float(start), float(start + len(keys))]
        record.write_idx(first_identity + cls, mx.recordio.pack(mx.recordio.IRHeader(0, span, 0, 0), b""))
    record.close()
    with open(os.path.join(rec_dir, "property"), "w") as handle:
        handle.write("%d,%d,%d" % (num_classes, 112, 112))
    return {"labels": labels, "num_classes": num_classes, "header": [first_identity, end],
            "payload_hex": payloads}


def _describe(item: bytes) -> dict:
    header, payload = mx.recordio.unpack(item)
    label = header.label
    labels = [float(label)] if header.flag == 0 else [float(v) for v in label]
    return {"flag": int(header.flag), "label": labels, "id": int(header.id), "id2": int(header.id2),
            "payload_hex": payload.hex(), "record_hex": item.hex()}


def _read(idx_path: str, rec_path: str) -> dict:
    indexed = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, "r")
    out = {"indexed": [], "sequential": []}
    for key in indexed.keys:
        out["indexed"].append({"key": int(key), **_describe(indexed.read_idx(key))})
    indexed.close()
    sequential = mx.recordio.MXRecordIO(rec_path, "r")
    while True:
        item = sequential.read()
        if item is None:  # MXNet's end of file (and, infamously, its answer to some errors)
            break
        out["sequential"].append(_describe(item))
    sequential.close()
    return out


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "write":
        result = _write(argv[1])
    elif len(argv) == 3 and argv[0] == "read":
        result = _read(argv[1], argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    json.dump({"mxnet": mx.__version__, **result}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
