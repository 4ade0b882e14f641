"""InsightFace training sets: ``train.rec`` + ``train.idx`` + ``property`` ("num_classes,h,w").

Layout (InsightFace ``recognition/`` datasets, docs/FORMATS.md "RecordIO"):

* key 0: header record ``IRHeader(flag=2, label=(A, B))``;
* keys ``1 .. A-1``: images, a scalar float label (the class), id = the key;
* keys ``A .. B-1``: one record per identity, ``label=(first_image_key, end_image_key_exclusive)``.

Sets converted for DALI have no header record: every key is an image.  The reader follows
InsightFace's own test: record 0 with ``flag > 0`` is the header, otherwise there is none.
"""

from __future__ import annotations

import math
import os
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np

from facetrust.data.images import MAX_IMAGE_PIXELS, decode_image
from facetrust.errors import InputError
from facetrust.io import write_text_atomic
from facetrust.data.recordio import (
    IR_HEADER_SIZE,
    IndexedRecordIOReader,
    IndexedRecordIOWriter,
    IRHeader,
    pack,
    unpack,
    unpack_header,
)

REC_NAME, IDX_NAME, PROPERTY_NAME = "train.rec", "train.idx", "property"
# Header labels are float32: integers above 2^24 are not all representable.
_MAX_FLOAT32_INT = 1 << 24


def _header_record(first_identity_key: int, end_key: int) -> bytes:
    return pack(IRHeader(2, (float(first_identity_key), float(end_key)), 0, 0), b"")


def write_insightface_dataset(
    out_dir: str | os.PathLike,
    samples: Iterable[tuple[int, bytes]],
    num_classes: int,
    image_size: tuple[int, int],
) -> dict:
    """Write ``train.rec``, ``train.idx`` and ``property`` under ``out_dir`` (each atomically).

    ``samples`` yields ``(label, jpeg_bytes)`` grouped by label in increasing order, labels in
    ``[0, num_classes)``; it is consumed once, streaming (no image is kept).  Every class gets an
    identity record, an empty range ``(k, k)`` for a class without images.  ``image_size`` is
    ``(height, width)``.  Returns ``{"num_images", "num_classes", "header": (A, B)}``.
    Raises ValueError for labels out of order or out of range.
    """
    out_dir = Path(out_dir)
    height, width = (int(v) for v in image_size)
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    # first image key of each class; classes without images get the key the next image would have
    class_start = np.zeros(num_classes + 1, dtype=np.int64)
    next_class = 0  # classes below this one have their start recorded
    key = 1
    with IndexedRecordIOWriter(out_dir / IDX_NAME, out_dir / REC_NAME) as writer:
        # The header's values are known only at the end; its encoding has a fixed length
        # (24 + 2*4 bytes, no magic inside: positive floats never spell 0xced7230a), so write a
        # placeholder now and rewrite it in place, keeping record 0 first in the file.
        writer.write_idx(0, _header_record(0, 0))
        previous = -1
        for label, jpeg in samples:
            label = int(label)
            if not 0 <= label < num_classes:
                raise ValueError(f"sample label {label} outside [0, {num_classes})")
            if label < previous:
                raise ValueError(
                    f"samples must be grouped by label in increasing order: {label} after {previous}"
                )
            while next_class <= label:
                class_start[next_class] = key
                next_class += 1
            writer.write_idx(key, pack(IRHeader(0, float(label), key, 0), jpeg))
            previous = label
            key += 1
        class_start[next_class:] = key
        first_identity_key = key
        end_key = first_identity_key + num_classes
        if end_key >= _MAX_FLOAT32_INT:
            raise ValueError(f"{end_key} keys do not fit the float32 labels of the header record")
        for cls in range(num_classes):
            span = (float(class_start[cls]), float(class_start[cls + 1]))
            writer.write_idx(first_identity_key + cls, pack(IRHeader(2, span, 0, 0), b""))
        writer.rewrite_idx(0, _header_record(first_identity_key, end_key))
    write_text_atomic(out_dir / PROPERTY_NAME, f"{num_classes},{height},{width}")
    return {
        "num_images": first_identity_key - 1,
        "num_classes": num_classes,
        "header": (first_identity_key, end_key),
    }


def read_property(path: str | os.PathLike) -> tuple[int, int, int]:
    """Parse a ``property`` file: ``(num_classes, height, width)``, each a positive integer.

    Raises :class:`InputError` naming the file for anything else (including non-ASCII bytes).
    """
    from facetrust.input_files import read_regular

    path = Path(path)
    raw = read_regular(path, "property file", max_bytes=4096)
    try:
        values = tuple(int(v) for v in raw.decode("ascii").strip().split(","))
        if len(values) != 3 or min(values) < 1:
            raise ValueError
    except ValueError:  # UnicodeDecodeError included: the file is not ASCII text
        raise InputError(
            f"{path}: expected 'num_classes,height,width' (positive integers), got {raw[:80]!r}"
        ) from None
    return values


def _as_key(value: float, what: str, where: str) -> int:
    """A header float that must hold a non-negative integer exactly (float32 holds up to 2^24)."""
    if not (math.isfinite(value) and value == int(value) and 0 <= value <= _MAX_FLOAT32_INT):
        raise InputError(f"{where}: {what} is {value!r}, not an integer in [0, 2^24]")
    return int(value)


def header_range(head: IRHeader, where: str) -> tuple[int, int]:
    """``(A, B)`` of an InsightFace header record (``flag >= 2``): image keys ``1..A-1``, identity
    keys ``A..B-1``.  Raises :class:`InputError` naming ``where`` unless ``1 <= A <= B`` are
    integers (a NaN, 1e30 or 2.5 in the header is refused here)."""
    if head.flag < 2:
        raise InputError(f"{where}: flag {head.flag} and label {head.label}: not an InsightFace "
                         "header (A, B) with 1 <= A <= B")
    first_identity = _as_key(head.label[0], "header A (first identity key)", where)
    end = _as_key(head.label[1], "header B (end of identity keys)", where)
    if not 1 <= first_identity <= end:
        raise InputError(f"{where}: header (A={first_identity}, B={end}) is not 1 <= A <= B")
    return first_identity, end


def label_of(header: IRHeader, where: str, num_classes: int | None = None) -> int:
    """The class of an image record: its scalar label, or the first of its labels (InsightFace).

    Raises :class:`InputError` naming ``where`` for a label that is not a finite non-negative
    integer below ``num_classes`` (when given): NaN, inf, 1e30, -1 and 2.5 are refused.
    """
    value = header.label if header.flag == 0 else (header.label[0] if header.label else math.nan)
    if not (math.isfinite(value) and value == int(value) and 0 <= value <= _MAX_FLOAT32_INT):
        raise InputError(f"{where}: label {value!r} is not a class index (an integer in [0, 2^24])")
    label = int(value)
    if num_classes is not None and label >= num_classes:
        raise InputError(f"{where}: label {label} is outside 0..{num_classes - 1} "
                         f"({num_classes} classes)")
    return label


class InsightFaceRecord:
    """An InsightFace training set on disk, for random access from DataLoader workers.

    ``image_keys`` (np.int64) lists the image records; image ``i`` is key ``image_keys[i]``.
    ``num_classes`` comes from ``property`` when present, else the header, else the labels;
    ``image_size`` is ``(height, width)`` from ``property``, or None.
    ``header`` is ``(A, B)`` or None for a set without a header record.  Picklable.
    """

    def __init__(self, rec_dir: str | os.PathLike):
        self.rec_dir = Path(rec_dir)
        rec_path, idx_path = self.rec_dir / REC_NAME, self.rec_dir / IDX_NAME
        for path in (rec_path, idx_path):
            if not path.is_file():
                raise InputError(f"{path}: missing (an InsightFace set needs train.rec and train.idx)")
        self.reader = IndexedRecordIOReader(idx_path, rec_path)
        self.property: tuple[int, int, int] | None = None
        if os.path.lexists(self.rec_dir / PROPERTY_NAME):  # present but a directory or a FIFO: named, not ignored
            self.property = read_property(self.rec_dir / PROPERTY_NAME)
        self.header: tuple[int, int] | None = None
        self.image_keys = self._find_image_keys()
        self._check_property()

    def _check_property(self) -> None:
        """``property`` declares what training allocates (a num_classes x D weight matrix, H x W
        inputs): refuse a class count the records cannot hold (a class needs an image; 10^12 classes
        in a 4-image set would be a 2 TB allocation) or a decompression-bomb image size."""
        if self.property is None:
            return
        path = self.rec_dir / PROPERTY_NAME
        num_classes, height, width = self.property
        if num_classes > len(self.image_keys):
            raise InputError(f"{path}: declares {num_classes} classes, but the set holds only {len(self.image_keys)} "
                             "images (every class needs at least one)")
        if height * width > MAX_IMAGE_PIXELS:
            raise InputError(f"{path}: declares {height}x{width} images, more than the {MAX_IMAGE_PIXELS} pixels "
                             "an image may have")

    def _find_image_keys(self) -> np.ndarray:
        if 0 in self.reader:
            where = f"{self.reader.rec_path} key 0"
            head = unpack_header(self.reader.read_idx(0), where)
            if head.flag > 0:
                self.header = header_range(head, where)
                self._check_header_covers_index()
                return np.arange(1, self.header[0], dtype=np.int64)
        keys = np.asarray(self.reader.keys, dtype=np.int64)
        if keys.size == 0:
            raise InputError(f"{self.reader.idx_path}: no records (an empty training set)")
        return keys

    def _check_header_covers_index(self) -> None:
        """The header must account for every record: no key of 1..B-1 missing, no key outside,
        and identity records (keys A..B-1) that are identity records, not images it would drop."""
        first_identity, end = self.header
        where = f"{self.reader.idx_path}: header (A={first_identity}, B={end})"
        keys = self.reader.keys
        present = sum(1 for k in keys if 1 <= k < end)
        if present < end - 1:
            # at most len(keys) + 1 probes: the loop stops at the first key absent
            first = next(k for k in range(1, end) if k not in self.reader)
            raise InputError(f"{where} needs keys 1..{end - 1}; {end - 1 - present} missing, first {first}")
        outside = [k for k in keys if not 0 <= k < end]
        if outside:
            raise InputError(f"{where} covers keys 0..{end - 1}, but the index has {len(outside)} more "
                             f"(first {outside[0]}): those records would be silently dropped")
        if first_identity == 1:
            raise InputError(f"{where}: no image records (an empty training set)")
        for key in range(first_identity, end):
            head = unpack_header(self.reader.read_prefix(key, IR_HEADER_SIZE + 8),
                                 f"{self.reader.rec_path} key {key}")
            if head.flag < 2:
                raise InputError(
                    f"{self.reader.rec_path} key {key}: an image record (flag {head.flag}) where "
                    f"{where} puts identity records: the header would drop it from training")

    @property
    def num_classes(self) -> int:
        if self.property is not None:
            return self.property[0]
        if self.header is not None:
            return self.header[1] - self.header[0]
        return int(self.labels.max()) + 1 if len(self) else 0

    @property
    def image_size(self) -> tuple[int, int] | None:
        return None if self.property is None else (self.property[1], self.property[2])

    @cached_property
    def labels(self) -> np.ndarray:
        """Class of every image (np.int64, in ``image_keys`` order), read from headers only."""
        labels = np.empty(len(self.image_keys), dtype=np.int64)
        # flag <= 1 for image records in practice; 8 extra bytes cover a 2-float label.  A record with
        # more floats (flag 3: a label and two more values) is read again as far as its flag says,
        # so training reads every label ``data verify`` reads, from the same first float.
        prefix = IR_HEADER_SIZE + 8
        known = self._declared_classes()
        for i, key in enumerate(self.image_keys.tolist()):
            where = f"{self.reader.rec_path} key {key}"
            head = self.reader.read_prefix(key, prefix)
            flag = int.from_bytes(head[:4], "little") if len(head) >= 4 else 0
            if 4 * flag > prefix - IR_HEADER_SIZE:
                head = self.reader.read_prefix(key, IR_HEADER_SIZE + 4 * flag)
            labels[i] = label_of(unpack_header(head, where), where, known)
        return labels

    def _declared_classes(self) -> int | None:
        """The number of classes ``property`` or the header declares (None when neither does)."""
        if self.property is not None:
            return self.property[0]
        if self.header is not None:
            return self.header[1] - self.header[0]
        return None

    def __len__(self) -> int:
        return len(self.image_keys)

    def read(self, i: int) -> tuple[bytes, int]:
        """The encoded image of image ``i`` and its class.

        Raises :class:`InputError` naming the file and key for a label that is not a class index
        (NaN, inf, negative, non-integral, at or above the declared number of classes).
        """
        key = int(self.image_keys[i])
        where = f"{self.reader.rec_path} key {key}"
        header, payload = unpack(self.reader.read_idx(key), where)
        return payload, label_of(header, where, self._declared_classes())

    def decode(self, i: int, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """Image ``i`` decoded to RGB (np.uint8, H x W x 3) and its class.

        With ``out`` (a C-contiguous uint8 H x W x 3 array), a JPEG of exactly that size is decoded
        into it and the image returned is ``out`` (see :func:`~facetrust.data.images.decode_image`).
        Raises :class:`InputError` naming the file and key for a bad label or a bad image
        (:func:`facetrust.data.images.decode_image`: decompression bombs, corrupt JPEG data).
        """
        payload, label = self.read(i)
        return decode_image(payload, self.reader.rec_path, f"key {int(self.image_keys[i])}", out=out), label

    def decode_tensor(self, i: int):
        """Image ``i`` as a 3 x H x W uint8 ``torch.Tensor`` (the training sample path), and its class."""
        import torch

        image, label = self.decode(i)
        return torch.from_numpy(image).permute(2, 0, 1), label

    def close(self) -> None:
        self.reader.close()
