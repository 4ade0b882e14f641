"""InsightFace training sets: ``train.rec`` + ``train.idx`` + ``property`` ("num_classes,h,w").

Layout (InsightFace ``recognition/`` datasets, REFERENCES.md "Data formats"):

* key 0: header record ``IRHeader(flag=2, label=(A, B))``;
* keys ``1 .. A-1``: images, a scalar float label (the class), id = the key;
* keys ``A .. B-1``: one record per identity, ``label=(first_image_key, end_image_key_exclusive)``.

Sets converted for DALI have no header record: every key is an image.  The reader follows
InsightFace's own test: record 0 with ``flag > 0`` is the header, otherwise there is none.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np

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
    """Parse a ``property`` file: ``(num_classes, height, width)``."""
    path = Path(path)
    text = path.read_text().strip()
    try:
        num_classes, height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{path}: expected 'num_classes,height,width', got {text[:80]!r}") from None
    return num_classes, height, width


def _label_of(header: IRHeader) -> int:
    # InsightFace: an array label on an image record holds the class first.
    return int(header.label if header.flag == 0 else header.label[0])


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
        if (self.rec_dir / PROPERTY_NAME).is_file():
            self.property = read_property(self.rec_dir / PROPERTY_NAME)
        self.header: tuple[int, int] | None = None
        self.image_keys = self._find_image_keys()

    def _find_image_keys(self) -> np.ndarray:
        if 0 in self.reader:
            head = unpack_header(self.reader.read_idx(0), f"{self.reader.rec_path} key 0")
            if head.flag > 0:
                first_identity, end = (int(v) for v in head.label[:2]) if head.flag >= 2 else (0, 0)
                if head.flag < 2 or not 1 <= first_identity <= end:
                    raise InputError(
                        f"{self.reader.rec_path}: key 0 has flag {head.flag} and label "
                        f"{head.label}: not an InsightFace header (A, B) with 1 <= A <= B"
                    )
                missing = [k for k in range(1, end) if k not in self.reader]
                if missing:
                    raise InputError(
                        f"{self.reader.idx_path}: header (A={first_identity}, B={end}) needs keys "
                        f"1..{end - 1}; {len(missing)} missing, first {missing[0]}"
                    )
                self.header = (first_identity, end)
                return np.arange(1, first_identity, dtype=np.int64)
        return np.asarray(self.reader.keys, dtype=np.int64)

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
        # flag <= 1 for image records in practice; 8 extra bytes cover a 2-float label.
        prefix = IR_HEADER_SIZE + 8
        for i, key in enumerate(self.image_keys.tolist()):
            head = unpack_header(self.reader.read_prefix(key, prefix),
                                 f"{self.reader.rec_path} key {key}")
            labels[i] = _label_of(head)
        return labels

    def __len__(self) -> int:
        return len(self.image_keys)

    def read(self, i: int) -> tuple[bytes, int]:
        """The encoded image of image ``i`` and its class."""
        key = int(self.image_keys[i])
        header, payload = unpack(self.reader.read_idx(key), f"{self.reader.rec_path} key {key}")
        return payload, _label_of(header)

    def decode(self, i: int) -> tuple[np.ndarray, int]:
        """Image ``i`` decoded to RGB (np.uint8, H x W x 3) and its class."""
        from facetrust.data.decode import decode_rgb

        payload, label = self.read(i)
        return decode_rgb(payload, f"{self.reader.rec_path} key {int(self.image_keys[i])}"), label

    def decode_tensor(self, i: int):
        """Image ``i`` decoded to RGB as a 3 x H x W uint8 ``torch.Tensor``, and its class."""
        from facetrust.data.decode import decode_rgb_tensor

        payload, label = self.read(i)
        return decode_rgb_tensor(payload, f"{self.reader.rec_path} key {int(self.image_keys[i])}"), label

    def close(self) -> None:
        self.reader.close()
