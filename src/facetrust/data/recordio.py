"""MXNet RecordIO in pure Python, byte-compatible with ``MXIndexedRecordIO`` and ``recordio.pack``.

Framing (dmlc-core ``recordio.cc``), every word little-endian::

    [u32 magic 0xced7230a][u32 cflag << 29 | length][length bytes][zero pad to 4]

A payload that holds the magic word at a 4-byte aligned offset is split there: the 4 magic bytes
are dropped and the pieces are written as parts with ``cflag`` 1 (first), 2 (middle), 3 (last; may
be empty); a payload without aligned magic is one part with ``cflag`` 0.  Only the last part can
have a length that is not a multiple of 4, so the zero padding only ever follows the last part.
The reader re-inserts the magic between parts.  Magic at an unaligned offset is stored verbatim.

``.idx`` files are text, one ``key<TAB>offset`` line per record, the offset of its first part.

Record payloads written by ``pack`` start with an ``IRHeader`` (``<IfQQ``, 24 bytes: flag, label,
id, id2); when ``flag > 0``, ``flag`` float32 labels follow the header, then the image bytes.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import struct
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, NamedTuple

import numpy as np

from facetrust.errors import InputError
from facetrust.io import atomic_path

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")  # magic, cflag << 29 | length
_LENGTH_MASK = (1 << 29) - 1
# dmlc-core refuses records of 2^29 bytes or more: the length field has 29 bits.
MAX_PART_LENGTH = _LENGTH_MASK

_IR_HEADER = struct.Struct("<IfQQ")  # MXNet's "IfQQ" in native order: identical on x86/ARM LE
IR_HEADER_SIZE = _IR_HEADER.size  # 24

# cflag values of the parts of one record (dmlc-core RecordIOWriter::EncodeLRec)
_WHOLE, _FIRST, _MIDDLE, _LAST = 0, 1, 2, 3


class IRHeader(NamedTuple):
    """The header MXNet packs in front of every image record.

    ``label`` is a float when ``flag == 0`` and a tuple of ``flag`` floats otherwise.
    """

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


# ---------------------------------------------------------------------------------------------
# pack / unpack (mx.recordio.pack / unpack)
# ---------------------------------------------------------------------------------------------


def pack(header: IRHeader | tuple, payload: bytes) -> bytes:
    """Return ``IRHeader + [float32 labels] + payload``, exactly as ``mx.recordio.pack`` does.

    A scalar label is stored in the header with ``flag = 0`` (the given flag is ignored, as in
    MXNet); a sequence label sets ``flag = len(label)``, stores 0.0 in the header's label field and
    prepends the labels as float32.
    """
    header = IRHeader(*header)
    label = header.label
    if isinstance(label, numbers.Number):  # MXNet's test, so bools and numpy scalars agree
        head = _IR_HEADER.pack(0, float(label), int(header.id), int(header.id2))
        return head + bytes(payload)
    labels = np.asarray(label, dtype="<f4").ravel()
    head = _IR_HEADER.pack(labels.size, 0.0, int(header.id), int(header.id2))
    return head + labels.tobytes() + bytes(payload)


def unpack(record: bytes, where: str = "record") -> tuple[IRHeader, bytes]:
    """Split a packed record into its ``IRHeader`` and the bytes that follow header and labels.

    ``where`` names the record in error messages (e.g. ``"train.rec key 12"``).
    Raises :class:`InputError` when the record is shorter than its header says.
    """
    if len(record) < IR_HEADER_SIZE:
        raise InputError(
            f"{where}: {len(record)} bytes is shorter than the {IR_HEADER_SIZE}-byte IRHeader"
        )
    flag, label, rec_id, rec_id2 = _IR_HEADER.unpack_from(record, 0)
    if flag == 0:
        return IRHeader(0, label, rec_id, rec_id2), bytes(record[IR_HEADER_SIZE:])
    end = IR_HEADER_SIZE + 4 * flag
    if len(record) < end:
        raise InputError(
            f"{where}: IRHeader flag {flag} announces {flag} float32 labels ({4 * flag} bytes) "
            f"but only {len(record) - IR_HEADER_SIZE} bytes follow the header"
        )
    labels = tuple(float(x) for x in np.frombuffer(record, dtype="<f4", count=flag,
                                                   offset=IR_HEADER_SIZE))
    return IRHeader(flag, labels, rec_id, rec_id2), bytes(record[end:])


def unpack_header(record: bytes, where: str = "record") -> IRHeader:
    """Like :func:`unpack` but only the header (the record may stop after its labels)."""
    return unpack(record[: IR_HEADER_SIZE + 4 * _peek_flag(record)], where)[0]


def _peek_flag(record: bytes) -> int:
    """The IRHeader's label count, or 0 for a record too short to hold a header (which
    :func:`unpack` then refuses with the record's name)."""
    return _IR_HEADER.unpack_from(record, 0)[0] if len(record) >= IR_HEADER_SIZE else 0


# ---------------------------------------------------------------------------------------------
# framing
# ---------------------------------------------------------------------------------------------


def _frame_part(cflag: int, part: bytes | memoryview, pad: bool) -> list[bytes]:
    out = [_FRAME.pack(MAGIC, (cflag << 29) | len(part)), bytes(part)]
    if pad and len(part) % 4:
        out.append(b"\0" * (4 - len(part) % 4))
    return out


def encode_record(record: bytes) -> bytes:
    """Return the on-disk bytes of one record: its parts, framed and padded (dmlc-core rules)."""
    if len(record) > MAX_PART_LENGTH:
        raise ValueError(f"RecordIO records must be shorter than 2^29 bytes, got {len(record)}")
    view = memoryview(record)
    pieces: list[bytes] = []
    start = 0
    # dmlc-core scans whole words only (i < lower_align); an aligned magic word becomes a split.
    pos = record.find(_MAGIC_BYTES)
    while pos != -1:
        if pos % 4 == 0:
            pieces += _frame_part(_FIRST if start == 0 else _MIDDLE, view[start:pos], pad=False)
            start = pos + 4
            pos = record.find(_MAGIC_BYTES, start)
        else:
            pos = record.find(_MAGIC_BYTES, pos + 1)
    pieces += _frame_part(_LAST if start else _WHOLE, view[start:], pad=True)
    return b"".join(pieces)


def _read_exact(handle: BinaryIO, n: int) -> bytes:
    data = handle.read(n)
    return data if data is not None else b""


def _file_size(handle: BinaryIO) -> int:
    try:
        return os.fstat(handle.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # an in-memory stream
        position = handle.tell()
        size = handle.seek(0, os.SEEK_END)
        handle.seek(position)
        return size


def read_record_at(
    handle: BinaryIO, offset: int, path: str | os.PathLike, key: int | None = None
) -> tuple[bytes, int]:
    """Read the record whose first part starts at ``offset``; return ``(record, next_offset)``.

    Raises :class:`InputError` naming ``path``, ``key`` (when given) and the offset of the bad
    part for: a short frame header, a wrong magic word, a length past the end of the file, a
    continuation part out of order, an unknown cflag.
    """
    where = f"{path}: record" + (f" key {key}" if key is not None else "") + f" at offset {offset}"
    # read(n) allocates n bytes before it reads: a damaged length word (up to 512 MB) must be
    # checked against what the file holds first.
    size = _file_size(handle)
    handle.seek(offset)
    parts: list[bytes] = []
    pos = offset
    expect_continuation = False
    while True:
        head = _read_exact(handle, _FRAME.size)
        if len(head) < _FRAME.size:
            state = "a continuation part" if expect_continuation else "a frame header"
            raise InputError(f"{where}: truncated file, expected {state} at offset {pos}")
        magic, lrec = _FRAME.unpack(head)
        if magic != MAGIC:
            raise InputError(
                f"{where}: bad magic 0x{magic:08x} at offset {pos} (expected 0x{MAGIC:08x}); "
                "not a RecordIO file or a wrong .idx offset"
            )
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        if cflag > _LAST:
            raise InputError(f"{where}: unknown continuation flag {cflag} at offset {pos}")
        if expect_continuation != (cflag in (_MIDDLE, _LAST)):
            what = "a continuation part (cflag 2 or 3)" if expect_continuation else "a first part"
            raise InputError(
                f"{where}: continuation part out of order at offset {pos}: found cflag {cflag}, "
                f"expected {what}"
            )
        padded = (length + 3) & ~3
        left = size - pos - _FRAME.size
        body = _read_exact(handle, padded) if padded <= left else b""
        if len(body) < padded:
            raise InputError(
                f"{where}: length {length} at offset {pos} runs past the end of the file "
                f"(only {max(left, 0)} bytes left)"
            )
        parts.append(body[:length])
        pos += _FRAME.size + padded
        if cflag in (_WHOLE, _LAST):
            return _MAGIC_BYTES.join(parts), pos
        expect_continuation = True


def read_whole_record(fd: int, file_size: int, offset: int) -> bytes | None:
    """The record at ``offset`` when it is a single part (cflag 0) lying inside the file, read with
    two ``os.pread`` calls and no seek; ``None`` for anything else (a split record, a bad frame,
    a length past ``file_size``), which :func:`read_record_at` then joins or explains.

    It accepts exactly the records :func:`read_record_at` returns after one part, with the same
    checks (magic, cflag, padded length within the file), so the two give the same bytes.
    """
    head = os.pread(fd, _FRAME.size, offset)
    if len(head) < _FRAME.size:
        return None
    magic, lrec = _FRAME.unpack(head)
    length = lrec & _LENGTH_MASK
    # The size check comes before the read: pread allocates `length` bytes first (a damaged
    # length word may claim up to 512 MB).
    if magic != MAGIC or lrec >> 29 != _WHOLE or offset + _FRAME.size + ((length + 3) & ~3) > file_size:
        return None
    body = os.pread(fd, length, offset + _FRAME.size)
    return body if len(body) == length else None


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------


class RecordIOWriter:
    """Write a ``.rec`` file atomically: a temporary name, renamed onto ``path`` by :meth:`close`.

    Use as a context manager; on an exception the temporary file is removed and ``path`` is left
    untouched.  :meth:`write` returns the offset of the record (what ``.idx`` stores).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._handle: BinaryIO = self._stack.enter_context(open(tmp, "w+b"))
        self._offset = 0

    def write(self, record: bytes) -> int:
        """Append one record (already packed); return the offset of its first part."""
        offset = self._offset
        data = encode_record(bytes(record))
        self._handle.write(data)
        self._offset += len(data)
        return offset

    def tell(self) -> int:
        """The offset the next record will get."""
        return self._offset

    def _rewrite_at(self, offset: int, record: bytes) -> None:
        """Overwrite the record at ``offset`` by one whose encoding has exactly the same length."""
        data = encode_record(bytes(record))
        self._handle.flush()
        _, end = read_record_at(self._handle, offset, self.path)
        if end - offset != len(data):
            raise ValueError(
                f"{self.path}: cannot rewrite the record at offset {offset}: its encoding is "
                f"{len(data)} bytes, the record there takes {end - offset}"
            )
        self._handle.seek(offset)
        self._handle.write(data)
        self._handle.seek(self._offset)

    def close(self) -> None:
        """Flush and rename the temporary file onto ``path``."""
        self._stack.close()

    def abort(self, exc: BaseException | None = None) -> None:
        """Remove the temporary file; ``path`` is left untouched."""
        err = exc or RuntimeError("aborted")
        self._stack.__exit__(type(err), err, err.__traceback__)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)


class IndexedRecordIOWriter:
    """Write a ``.rec`` and its ``.idx`` atomically, like ``MXIndexedRecordIO(idx, rec, 'w')``.

    Keys are ints, unique; the ``.idx`` lists them in the order they were written.
    """

    def __init__(self, idx_path: str | os.PathLike, rec_path: str | os.PathLike):
        self.idx_path = Path(idx_path)
        self._stack = contextlib.ExitStack()
        self._rec = self._stack.enter_context(RecordIOWriter(rec_path))
        idx_tmp = self._stack.enter_context(atomic_path(self.idx_path))
        self._idx = self._stack.enter_context(open(idx_tmp, "w", encoding="ascii", newline="\n"))
        self._offsets: dict[int, int] = {}

    @property
    def rec_path(self) -> Path:
        return self._rec.path

    def write_idx(self, key: int, record: bytes) -> int:
        """Append ``record`` under ``key``; return its offset.  A duplicate key is a ValueError."""
        key = int(key)
        if key in self._offsets:
            raise ValueError(f"{self.idx_path}: duplicate key {key}")
        offset = self._rec.write(record)
        self._offsets[key] = offset
        self._idx.write(f"{key}\t{offset}\n")
        return offset

    def rewrite_idx(self, key: int, record: bytes) -> None:
        """Replace the record of ``key`` by one with an encoding of exactly the same length.

        Lets a streaming writer put a header at key 0 before it knows the header's values.
        """
        self._rec._rewrite_at(self._offsets[int(key)], record)

    def close(self) -> None:
        """Rename both temporary files onto their paths."""
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stack.__exit__(exc_type, exc, tb)


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------


class _ForkSafeFile:
    """A binary file handle that reopens itself in a new process and pickles without itself.

    DataLoader workers fork (or spawn and unpickle) the dataset; a handle shared with the parent
    would share its file position, so each process opens its own.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such RecordIO file")
        self._handle: BinaryIO | None = None
        self._pid: int | None = None
        self._fd, self._size_at_open = -1, 0

    @property
    def handle(self) -> BinaryIO:
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self.path, "rb")
            self._pid = os.getpid()
            self._fd = self._handle.fileno()
            self._size_at_open = os.fstat(self._fd).st_size
        return self._handle

    def fd_and_size(self) -> tuple[int, int]:
        """This process's file descriptor and the file's size when it was opened (for ``pread``)."""
        if self._handle is None or self._pid != os.getpid():
            _ = self.handle  # opens the file in this process
        return self._fd, self._size_at_open

    def size(self) -> int:
        return os.fstat(self.handle.fileno()).st_size

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle, self._pid = None, None

    def __getstate__(self):
        return {"path": self.path, "_handle": None, "_pid": None, "_fd": -1, "_size_at_open": 0}


class _Reader:
    """Readers own one fork-safe file handle; ``with`` closes it."""

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecordIOReader(_Reader):
    """Read a ``.rec`` file by a sequential scan (no ``.idx`` needed).

    Iterating yields ``(offset, record)`` pairs in file order: ``offset`` is where the record's
    first part starts (what an ``.idx`` would hold), ``record`` the payload with the magic words
    between parts restored.  Picklable; safe to use after fork.
    """

    def __init__(self, path: str | os.PathLike):
        self._file = _ForkSafeFile(path)
        self.path = self._file.path

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        handle = self._file.handle
        size = self._file.size()
        offset = 0
        while offset < size:
            record, offset_next = read_record_at(handle, offset, self.path)
            yield offset, record
            offset = offset_next

    def read_at(self, offset: int) -> bytes:
        """The record whose first part starts at ``offset``."""
        return read_record_at(self._file.handle, offset, self.path)[0]



def read_idx(idx_path: str | os.PathLike) -> tuple[list[int], dict[int, int]]:
    """Parse an ``.idx`` file; return ``(keys in file order, key -> offset)``.

    Blank lines are skipped.  A malformed line, a negative offset or a duplicate key raises
    :class:`InputError` naming the file and the line.
    """
    idx_path = Path(idx_path)
    if not idx_path.is_file():
        raise InputError(f"{idx_path}: no such .idx file")
    keys: list[int] = []
    offsets: dict[int, int] = {}
    with open(idx_path, "rb") as handle:
        # \n, \r\n and a lone \r end a line alike (a file iterator splits at \n only)
        lines = (part for chunk in handle for part in chunk.splitlines())
        for line_no, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line:
                continue
            fields = line.split(b"\t")
            try:
                if len(fields) != 2:
                    raise ValueError
                key, offset = int(fields[0]), int(fields[1])
            except ValueError:
                raise InputError(
                    f"{idx_path}: line {line_no} is not 'key<TAB>offset' with integers: "
                    f"{raw[:80]!r}"
                ) from None
            if offset < 0:
                raise InputError(f"{idx_path}: line {line_no}: key {key} has negative offset {offset}")
            if not (-(2**63) <= key < 2**63 and offset < 2**63):  # a 5,000-digit key would overflow later
                raise InputError(f"{idx_path}: line {line_no}: key or offset outside the 64-bit integer range: "
                                 f"{raw[:80]!r}")
            if key in offsets:
                raise InputError(f"{idx_path}: line {line_no}: duplicate key {key}")
            keys.append(key)
            offsets[key] = offset
    return keys, offsets


class IndexedRecordIOReader(_Reader):
    """Random access to a ``.rec`` through its ``.idx``, like ``MXIndexedRecordIO(..., 'r')``.

    ``keys`` lists the keys in ``.idx`` order; ``read_idx(key)`` returns the record bytes.
    Offsets past the end of the ``.rec``, and two keys on one offset, are refused when the index is
    loaded; an offset that does not point at a record start is refused when read.  Picklable (without its file handle) and
    safe to use after fork: each process opens its own handle.
    """

    def __init__(self, idx_path: str | os.PathLike, rec_path: str | os.PathLike):
        self.idx_path = Path(idx_path)
        self._file = _ForkSafeFile(rec_path)
        self.rec_path = self._file.path
        self.keys, self._offsets = read_idx(self.idx_path)
        size = self.rec_path.stat().st_size
        owner: dict[int, int] = {}
        for key in self.keys:
            offset = self._offsets[key]
            if offset + _FRAME.size > size:
                raise InputError(
                    f"{self.idx_path}: key {key} points at offset {offset}, outside "
                    f"{self.rec_path} ({size} bytes)"
                )
            # two keys on one record would make every reader (training included) see it twice
            first = owner.setdefault(offset, key)
            if first != key:
                raise InputError(f"{self.idx_path}: key {key} points at offset {offset}, the record of key {first}: "
                                 "each key must index its own record")

    def offset(self, key: int) -> int:
        """Offset of the first part of ``key``'s record in the ``.rec``."""
        try:
            return self._offsets[key]
        except KeyError:
            raise InputError(f"{self.idx_path}: no key {key}") from None

    def read_idx(self, key: int) -> bytes:
        """The record stored under ``key``.  Raises :class:`InputError` for a missing or bad key."""
        offset = self.offset(key)
        # The common single-part record in two preads; split or damaged ones through the full reader.
        record = read_whole_record(*self._file.fd_and_size(), offset)
        if record is None:
            record = read_record_at(self._file.handle, offset, self.rec_path, key)[0]
        return record

    def read_prefix(self, key: int, n: int) -> bytes:
        """At least the first ``n`` bytes of ``key``'s record (all of it when shorter).

        Cheap when the first part holds them: reads only the frame header and ``n`` bytes.
        """
        handle = self._file.handle
        offset = self.offset(key)
        handle.seek(offset)
        head = _read_exact(handle, _FRAME.size)
        if len(head) == _FRAME.size:
            magic, lrec = _FRAME.unpack(head)
            cflag, length = lrec >> 29, lrec & _LENGTH_MASK
            if magic == MAGIC and cflag in (_WHOLE, _FIRST) and length >= n:
                data = _read_exact(handle, n)
                if len(data) == n:
                    return data
        return self.read_idx(key)  # rare or bad: the full reader checks and explains

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: object) -> bool:
        return key in self._offsets

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(key, record)`` in ``.idx`` order."""
        for key in self.keys:
            yield key, self.read_idx(key)



def write_indexed(
    idx_path: str | os.PathLike, rec_path: str | os.PathLike, items: Iterable[tuple[int, bytes]]
) -> None:
    """Write ``(key, record)`` pairs to an indexed RecordIO pair of files (atomic)."""
    with IndexedRecordIOWriter(idx_path, rec_path) as writer:
        for key, record in items:
            writer.write_idx(key, record)
