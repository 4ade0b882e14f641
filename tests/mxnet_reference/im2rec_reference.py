"""MXNet's own ``im2rec.py`` (``mxnet/tools/im2rec.py`` of MXNet 1.9.1) as the reference for
``facetrust data pack rec`` (run under .venv-mxnet; imports nothing from facetrust).

    python im2rec_reference.py list PREFIX ROOT
        ``im2rec.py --list --recursive --no-shuffle PREFIX ROOT``: writes PREFIX.lst
    python im2rec_reference.py pack PREFIX ROOT
        ``im2rec.py --pass-through --num-thread 1 PREFIX ROOT``: packs PREFIX.lst into PREFIX.rec/.idx,
        then prints JSON {"mxnet", "records": [{"key", "record_hex"}, ...]} read back with
        ``MXIndexedRecordIO``
    python im2rec_reference.py read_set REC_DIR
        reads REC_DIR/train.rec through ``MXIndexedRecordIO`` the way InsightFace's training loader
        does (record 0's label = image/identity key range) and prints JSON {"header", "images":
        [{"key", "label", "id", "payload_sha256"}], "identities": [[first, end], ...]}

im2rec imports OpenCV at the top, though its list and pass-through paths never call it; .venv-mxnet
has no OpenCV, so a stand-in module that fails when used is put in its place first.
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import sys
import types
import warnings

warnings.filterwarnings("ignore")
import mxnet as mx  # noqa: E402


class _NoOpenCV(types.ModuleType):
    def __getattr__(self, name):
        raise RuntimeError(f"im2rec used cv2.{name}: the reference runs only the list and pass-through paths")


def _im2rec(*argv: str) -> None:
    sys.modules.setdefault("cv2", _NoOpenCV("cv2"))
    script = os.path.join(os.path.dirname(mx.__file__), "tools", "im2rec.py")
    saved, sys.argv = sys.argv, [script, *argv]
    stdout, sys.stdout = sys.stdout, sys.stderr  # im2rec prints progress; keep stdout for our JSON
    try:
        names = runpy.run_path(script, run_name="__main__")
        if "record" in names:  # the single-threaded path leaves its MXIndexedRecordIO open (unflushed)
            names["record"].close()
    finally:
        sys.argv, sys.stdout = saved, stdout


def _read_set(rec_dir: str) -> dict:
    record = mx.recordio.MXIndexedRecordIO(os.path.join(rec_dir, "train.idx"), os.path.join(rec_dir, "train.rec"), "r")
    header, _ = mx.recordio.unpack(record.read_idx(0))
    first, end = int(header.label[0]), int(header.label[1])
    images = []
    for key in range(1, first):
        head, payload = mx.recordio.unpack(record.read_idx(key))
        images.append({"key": key, "label": float(head.label), "id": int(head.id),
                       "payload_sha256": hashlib.sha256(payload).hexdigest()})
    identities = []
    for key in range(first, end):
        head, _ = mx.recordio.unpack(record.read_idx(key))
        identities.append([int(head.label[0]), int(head.label[1])])
    return {"header": [first, end], "flag": int(header.flag), "images": images, "identities": identities}


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "list":
        _im2rec("--list", "--recursive", "--no-shuffle", argv[1], argv[2])
        result = {}
    elif len(argv) == 3 and argv[0] == "pack":
        _im2rec("--pass-through", "--num-thread", "1", argv[1], argv[2])
        record = mx.recordio.MXIndexedRecordIO(argv[1] + ".idx", argv[1] + ".rec", "r")
        result = {"records": [{"key": int(k), "record_hex": record.read_idx(k).hex()} for k in record.keys]}
    elif len(argv) == 2 and argv[0] == "read_set":
        result = _read_set(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    json.dump({"mxnet": mx.__version__, **result}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
