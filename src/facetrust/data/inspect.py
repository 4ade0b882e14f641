"""``facetrust data inspect`` / ``data dump --jsonl``: what is in a RecordIO set, a .bin, an IJB dir.

``PATH`` may be a ``.rec``, an ``.idx`` (its ``.rec`` beside it), a directory holding ``train.rec``
(with ``train.idx`` and ``property`` when present), a ``.bin`` file, or an IJB directory with
``meta/<name>_face_tid_mid.txt``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Iterator, TextIO

from facetrust.errors import InputError
from facetrust.data.binset import load_bin
from facetrust.data.images import decode_image
from facetrust.data.insightface import PROPERTY_NAME, header_range, read_property
from facetrust.data.recordio import IndexedRecordIOReader, RecordIOReader, unpack


def _recordio_paths(path: Path) -> tuple[Path, Path | None] | None:
    """``(rec, idx or None)`` when ``path`` names a RecordIO set, else None."""
    if path.is_dir():
        rec = path / "train.rec"
        if not rec.is_file():
            return None
    elif path.suffix == ".rec":
        rec = path
    elif path.suffix == ".idx":
        rec = path.with_suffix(".rec")
        if not rec.is_file():
            raise InputError(f"{path}: no {rec.name} beside this .idx")
        return rec, path
    else:
        return None
    idx = rec.with_suffix(".idx")
    if os.path.lexists(idx) and not idx.is_file():  # a directory or a dangling link where the index goes
        raise InputError(f"{idx}: not a regular file (the index of {rec.name}); remove it to read {rec.name} "
                         f"without an index")
    return rec, (idx if idx.is_file() else None)


def _ijb_name(path: Path) -> str | None:
    found = sorted((path / "meta").glob("*_face_tid_mid.txt")) if path.is_dir() else []
    return found[0].name[: -len("_face_tid_mid.txt")] if found else None


def _iter_recordio(rec: Path, idx: Path | None) -> Iterator[tuple[int, bytes]]:
    """``(key, record)``: keys from the .idx in its order, else the record ordinal."""
    if idx is not None:
        with IndexedRecordIOReader(idx, rec) as reader:
            yield from reader
    else:
        with RecordIOReader(rec) as reader:
            for ordinal, (_offset, record) in enumerate(reader):
                yield ordinal, record


def _inspect_recordio(rec: Path, idx: Path | None) -> dict:
    summary: dict = {"format": "recordio", "rec": str(rec), "idx": str(idx) if idx else None}
    keys: list[int] = []
    header = None
    flag_counts: dict[int, int] = {}
    for key, record in _iter_recordio(rec, idx):
        head, _ = unpack(record, f"{rec} key {key}")
        keys.append(key)
        flag_counts[head.flag] = flag_counts.get(head.flag, 0) + 1
        if key == 0 and head.flag >= 2:  # InsightFace header record, if its range is valid
            try:
                header = header_range(head, f"{rec} key 0")
            except InputError as error:  # a plain RecordIO file may hold anything at key 0
                summary["header_problem"] = str(error)
    if idx is not None and not keys and rec.stat().st_size > 0:
        raise InputError(f"{idx}: an empty index beside a {rec.stat().st_size}-byte {rec.name}: the index lists "
                         f"none of its records (remove it to read {rec.name} record by record)")
    summary["records"] = len(keys)
    summary["keys"] = {"min": min(keys), "max": max(keys)} if keys else None
    summary["flags"] = {str(flag): n for flag, n in sorted(flag_counts.items())}
    if header is not None:
        first_identity, end = header
        summary["header"] = {
            "image_keys": [1, first_identity],  # half-open ranges
            "identity_keys": [first_identity, end],
        }
        summary["num_images"] = first_identity - 1
        summary["num_classes"] = end - first_identity
    else:
        summary["header"] = None
        summary["num_images"] = len(keys)
    prop_path = rec.parent / PROPERTY_NAME
    if os.path.lexists(prop_path):  # present but not a regular file: read_property names it
        num_classes, height, width = read_property(prop_path)
        summary["property"] = {"num_classes": num_classes, "height": height, "width": width}
        summary["num_classes"] = num_classes
    else:
        summary["property"] = None
    return summary


def _inspect_bin(path: Path) -> dict:
    bins, issame = load_bin(path)
    first_size = None
    if bins:
        first_size = list(decode_image(bins[0], path, "image 0").shape[:2])  # (h, w), as property files
    return {
        "format": "bin",
        "path": str(path),
        "images": len(bins),
        "pairs": len(issame),
        "genuine": sum(issame),
        "impostor": len(issame) - sum(issame),
        "first_image_size": first_size,
    }


def _read_columns(path: Path, min_columns: int) -> list[list[str]]:
    rows = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < min_columns:
                raise InputError(f"{path}: line {line_no} has {len(fields)} columns, expected {min_columns}")
            rows.append(fields)
    return rows


def _inspect_ijb(path: Path, name: str) -> dict:
    meta = path / "meta"
    faces = _read_columns(meta / f"{name}_face_tid_mid.txt", 3)
    summary = {
        "format": "ijb",
        "path": str(path),
        "name": name,
        "images": len(faces),
        "templates": len({row[1] for row in faces}),
        "media": len({row[2] for row in faces}),
        "pairs": None,
        "genuine": None,
    }
    pair_file = meta / f"{name}_template_pair_label.txt"
    if pair_file.is_file():
        pairs = _read_columns(pair_file, 3)
        summary["pairs"] = len(pairs)
        summary["genuine"] = sum(1 for row in pairs if row[2] == "1")
    return summary


def inspect_path(path: str | os.PathLike) -> dict:
    """A JSON-ready summary of a RecordIO set, a ``.bin`` set or an IJB directory.

    RecordIO: ``records``, ``keys`` (min/max), ``flags`` (count per IRHeader flag), ``header``
    (half-open ``image_keys`` and ``identity_keys`` ranges, or None), ``num_images``,
    ``num_classes``, ``property``.  ``.bin``: ``images``, ``pairs``, ``genuine``, ``impostor``,
    ``first_image_size`` ([h, w]).  IJB: ``images``, ``templates``, ``media``, ``pairs``,
    ``genuine``.  Raises :class:`InputError` for a path of none of these kinds.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    recordio = _recordio_paths(path)
    if recordio is not None:
        return _inspect_recordio(*recordio)
    if path.suffix == ".bin" and not path.is_dir():  # load_bin names a device or FIFO in its place
        return _inspect_bin(path)
    name = _ijb_name(path)
    if name is not None:
        return _inspect_ijb(path, name)
    raise InputError(
        f"{path}: not a .rec/.idx, a directory with train.rec, a .bin set or an IJB directory "
        "(meta/<name>_face_tid_mid.txt)"
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# JSON has no NaN or infinity; a label that is one is written as this string (float() reads it back).
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _json_label(value: float) -> float | str:
    return value if math.isfinite(value) else _NON_FINITE[repr(value)]


def iter_dump(path: str | os.PathLike) -> Iterator[dict]:
    """The objects :func:`dump_jsonl` writes, one per record (RecordIO) or image (``.bin``)."""
    path = Path(path)
    recordio = _recordio_paths(path) if path.exists() else None
    if recordio is not None:
        rec, idx = recordio
        for key, record in _iter_recordio(rec, idx):
            head, payload = unpack(record, f"{rec} key {key}")
            labels = [head.label] if head.flag == 0 else list(head.label)
            labels = [_json_label(float(v)) for v in labels]
            yield {"key": key, "flag": head.flag, "label": labels, "id": head.id,
                   "id2": head.id2, "payload_sha256": _sha256(payload)}
    elif path.suffix == ".bin" and path.is_file():
        bins, issame = load_bin(path)
        for index, image in enumerate(bins):
            yield {"index": index, "pair": index // 2, "issame": issame[index // 2],
                   "payload_sha256": _sha256(image)}
    else:
        raise InputError(f"{path}: dump reads a .rec/.idx, a directory with train.rec or a .bin set")


def dump_jsonl(path: str | os.PathLike, stream: TextIO) -> int:
    """Write one JSON object per line to ``stream`` (docs/FORMATS.md ``data dump --jsonl``).

    RecordIO: ``{"key", "flag", "label", "id", "id2", "payload_sha256"}`` with ``label`` always a
    list of floats (a NaN or infinite label, which JSON cannot hold, is the string ``"NaN"``,
    ``"Infinity"`` or ``"-Infinity"``, as ``float()`` reads them) and the hash over the bytes after the IRHeader and its labels; ``key`` is the
    ``.idx`` key, or the record ordinal for a ``.rec`` without ``.idx``.  ``.bin``:
    ``{"index", "pair", "issame", "payload_sha256"}``.  Returns the number of lines written.
    """
    count = 0
    for obj in iter_dump(path):
        stream.write(json.dumps(obj, allow_nan=False) + "\n")
        count += 1
    return count
