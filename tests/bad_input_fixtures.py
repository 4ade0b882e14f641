"""Small, deterministic bad inputs for tests/test_bad_inputs.py, written by the project's writers.

Images are encoded by Pillow; the hostile variants (a decompression bomb, corrupt JPEG scan data)
are valid files patched in a few bytes, so every fixture is a few kilobytes.
"""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from facetrust.data.binset import write_bin
from facetrust.data.insightface import write_insightface_dataset
from facetrust.data.recordio import IndexedRecordIOWriter, IRHeader, pack
from ijb_protocol_fixture import write_ijb_dir

SIZE = 32  # training images are SIZE x SIZE
CROP = 64  # IJB loose crops are CROP x CROP
# the ArcFace 112x112 template scaled into a CROP x CROP loose crop (x, y)
LANDMARKS = (np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]]) * 0.5 + 4).ravel()


def jpeg(seed: int, size: int = SIZE, quality: int = 90) -> bytes:
    """A noise JPEG (noise keeps the scan long enough to damage)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_bomb() -> bytes:
    """A valid JPEG whose frame header (SOF0) is patched to declare 60000 x 60000 pixels."""
    data = bytearray(jpeg(0))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width
    return bytes(data)


def png_bomb() -> bytes:
    """A PNG whose IHDR declares 60000 x 60000 RGB pixels (a few hundred bytes on disk)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


def corrupt_jpeg(seed: int = 0, size: int = SIZE) -> bytes:
    """A JPEG whose entropy-coded scan has 16 bytes overwritten: Pillow decodes it silently (to a
    partly wrong image); libjpeg reports 'Corrupt JPEG data'."""
    data = bytearray(jpeg(seed, size))
    sos = data.find(b"\xff\xda")
    data[sos + 200:sos + 216] = bytes(range(1, 17))
    return bytes(data)


def training_set(root: Path, payloads=None, labels=(0, 0, 1, 1), header=None, property_text=b"2,32,32",
                 identity_flag: int = 2) -> Path:
    """An InsightFace set: header record, image records ``1..N``, one identity record per class.

    ``labels`` may hold anything a float32 can (NaN, 1e30, -1, 2.5); ``header`` overrides (A, B).
    """
    root.mkdir(parents=True, exist_ok=True)
    payloads = payloads or [jpeg(i) for i in range(len(labels))]
    first_identity = len(labels) + 1
    classes = 2
    with IndexedRecordIOWriter(root / "train.idx", root / "train.rec") as writer:
        writer.write_idx(0, pack(IRHeader(2, header or (first_identity, first_identity + classes), 0, 0), b""))
        for key, (label, payload) in enumerate(zip(labels, payloads), start=1):
            writer.write_idx(key, pack(IRHeader(0, float(label), key, 0), payload))
        for cls in range(classes):
            span = (1.0 + 2 * cls, 3.0 + 2 * cls)
            record = pack(IRHeader(0, span if identity_flag else float(cls), 0, 0), b"")
            writer.write_idx(first_identity + cls, record)
    (root / "property").write_bytes(property_text)
    return root


def good_training_set(root: Path) -> Path:
    write_insightface_dataset(root, [(i // 2, jpeg(i)) for i in range(4)], 2, (SIZE, SIZE))
    return root


def empty_training_set(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.rec").write_bytes(b"")
    (root / "train.idx").write_bytes(b"")
    return root


def memo_bomb_bin(path: Path) -> Path:
    """9 bytes: protocol 2, None, LONG_BINPUT 400,000,000, STOP (a memo table of gigabytes)."""
    path.write_bytes(b"\x80\x02Nr" + struct.pack("<I", 400_000_000) + b".")
    return path


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def code_execution_bin(path: Path) -> Path:
    path.write_bytes(pickle.dumps(([b"a", b"b"], [_RunsShell(path.with_suffix(".pwned"))]), protocol=2))
    return path


def bin_with_images(path: Path, images: list[bytes]) -> Path:
    write_bin(path, images, [True] * (len(images) // 2))
    return path


def ijb_dir(root: Path, crops=None, landmarks=None, scores=(0.9, 0.8, 0.7)) -> Path:
    """Three loose crops (templates 5, 5, 6; one impostor pair), landmarks inside the crops."""
    names = ["1.jpg", "2.jpg", "3.jpg"]
    crops = crops or [jpeg(10 + i, CROP) for i in range(3)]
    (root / "loose_crop").mkdir(parents=True, exist_ok=True)
    for name, crop in zip(names, crops):
        (root / "loose_crop" / name).write_bytes(crop)
    points = np.tile(LANDMARKS, (3, 1)) if landmarks is None else landmarks
    write_ijb_dir(root, "ijbx", names, [5, 5, 6], [50, 51, 60], scores, [(5, 6)], [0], landmarks=points)
    return root


def edit(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` once in a text file (the first occurrence)."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def hash_collision_bin(path: Path, n_keys: int) -> Path:
    """A ``.bin`` pickle of ``([b"x", b"y"], [{k·(2^61 - 1): 0 for k < n_keys}])``, written opcode by
    opcode: every key hashes to 0, so building the dict here would itself cost n²/2 comparisons."""
    modulus = (1 << 61) - 1
    body = bytearray(b"\x80\x04((C\x01xC\x01yl(}(")  # PROTO 4, MARK, MARK, bytes, bytes, LIST, MARK, EMPTY_DICT, MARK
    for k in range(n_keys):
        value = k * modulus
        raw = value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)
        body += b"\x8a" + bytes([len(raw)]) + raw + b"K\x00"  # LONG1 key, BININT1 0
    body += b"ult."  # SETITEMS, LIST, TUPLE, STOP
    path.write_bytes(bytes(body))
    return path
