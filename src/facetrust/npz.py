"""Reading ``.npz`` archives fast: uncompressed members are read straight into their arrays.

``np.load`` reads an ``.npz`` member through ``zipfile``, which copies the bytes in chunks and
runs a CRC-32 over them (about 2 s for IJB-C's 0.96 GB of embeddings).  ``np.savez`` stores
members uncompressed, one ``.npy`` file each, so a member's array is a contiguous byte range of
the archive: :func:`load_npz` parses the ``.npy`` header and reads that range into the array in
one ``readinto`` (0.2 s for the same file from the page cache).  Compressed members, and anything
this reader does not recognise, go through ``np.load``.  Pickled (object) arrays are refused, as
with ``allow_pickle=False``.

``load_npz(..., mapped=True)`` maps the members instead (copy-on-write, so a write stays in the
process): for an archive our own program wrote with :func:`save_npz_aligned` and never rewrites in
place, such as the IJB protocol cache.  Reading fresh anonymous memory faults one 4 KiB page at a
time, while a file mapping's read faults map 16 pages of the page cache at once: IJB-C's cached
protocol (313 MB) loads and is first read in 0.03 s mapped against 0.19-0.32 s read, 3.8 k
against 76 k page faults.  Embeddings files are read, not mapped (a user's file may be rewritten
under a running job; the streamed matrix reuses one buffer instead, :class:`StoredRows`).

:class:`StoredRows` goes one step further for a large 2-D member (IJB-C's embeddings): rows are
read a block at a time into a buffer the caller reuses, so the whole matrix is never in memory.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from facetrust.input_files import check_regular

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip local file header, 30 bytes
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _stored_layout(handle, info: zipfile.ZipInfo):
    """``(offset, shape, fortran_order, dtype)`` of a plain stored ``.npy`` member, else None."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    handle.seek(info.header_offset)
    fields = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
    if fields[0] != b"PK\x03\x04":
        return None
    handle.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
    start = handle.tell()
    try:
        version = np.lib.format.read_magic(handle)
        reader = _HEADER_READERS.get(version)
        if reader is None:
            return None
        shape, fortran_order, dtype = reader(handle)
    except ValueError:
        return None
    if dtype.hasobject:
        return None  # np.load refuses it with a clear message
    count = int(np.prod(shape, dtype=np.int64))
    if handle.tell() - start + count * dtype.itemsize > info.file_size:
        return None
    return handle.tell(), shape, fortran_order, dtype


# Deflate cannot compress better than about 1032:1 (RFC 1951: a 258-byte match in at most 2 bits);
# a member declaring more is lying about its size.
MAX_DEFLATE_RATIO = 1032


def _check_declared_size(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    """Refuse a member whose ``.npy`` header declares more bytes than the member holds, or whose
    declared uncompressed size its compressed bytes cannot hold, before anything is allocated:
    ``np.load`` allocates an array of the declared shape and then reads into it."""
    key = info.filename[:-4]
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise ValueError(f"{path}: member {key!r} declares {info.file_size} bytes but stores {info.compress_size}")
    if info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 1024:
        raise ValueError(f"{path}: member {key!r} declares {info.file_size} bytes, more than its "
                         f"{info.compress_size} compressed bytes can hold")
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            reader = _HEADER_READERS.get(version)
            if reader is None:
                return  # np.load names the version it cannot read
            shape, _fortran, dtype = reader(member)
            header = member.tell() if member.seekable() else None
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, NotImplementedError):
        return  # not a .npy header: np.load refuses the member with its own message
    count = 1
    for n in shape:
        count *= int(n)  # Python ints: a declared shape cannot overflow the check
    if count * dtype.itemsize > info.file_size - (header or 0):
        raise ValueError(f"{path}: member {key!r} declares shape {tuple(shape)} of {dtype} "
                         f"({count * dtype.itemsize} bytes), more than its {info.file_size} bytes hold")


def _stored_member(handle, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The member's array read from ``handle``, or None when it is not a plain stored ``.npy``."""
    layout = _stored_layout(handle, info)
    if layout is None:
        return None
    offset, shape, fortran_order, dtype = layout
    handle.seek(offset)
    array = np.empty(shape, dtype=dtype, order="F" if fortran_order else "C")
    if array.nbytes and handle.readinto(array.reshape(-1, order="A").view(np.uint8)) != array.nbytes:
        return None
    return array


def load_npz(path: str | Path, keys: Iterable[str] | None = None, *, mapped: bool = False) -> dict[str, np.ndarray]:
    """``{key: array}`` for ``keys`` (default: every member) of the ``.npz`` at ``path``.

    Raises ``KeyError`` for a missing key, ``ValueError``/``OSError`` (as ``np.load``) for a file
    that is not an ``.npz`` or holds pickles, and ``ValueError`` for a member whose declared shape
    or size its bytes cannot hold (checked before anything is allocated).
    ``mapped``: members stored aligned to their dtype are copy-on-write views of a memory map of the
    file (module docstring: only for files nothing truncates or rewrites in place); the others are read.
    """
    path = Path(path)
    check_regular(path, ".npz archive")
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        wanted = list(members) if keys is None else list(keys)
        for key in wanted:
            if key not in members:
                raise KeyError(f"{key} is not a member of {path}")
        out: dict[str, np.ndarray] = {}
        fallback = []
        for key in wanted:
            _check_declared_size(archive, members[key], path)
        mapping = None
        for key in wanted:
            if mapped:
                layout = _stored_layout(handle, members[key])
                if layout is not None and layout[0] % layout[3].alignment == 0:
                    if mapping is None:
                        mapping = _map_copy_on_write(handle)
                    offset, shape, fortran_order, dtype = layout
                    count = int(np.prod(shape, dtype=np.int64))
                    if count == 0:
                        out[key] = np.empty(shape, dtype=dtype, order="F" if fortran_order else "C")
                    elif fortran_order:
                        out[key] = np.frombuffer(mapping, dtype=dtype, count=count, offset=offset).reshape(shape[::-1]).T
                    else:
                        out[key] = np.frombuffer(mapping, dtype=dtype, count=count, offset=offset).reshape(shape)
                    continue
            array = _stored_member(handle, members[key])
            if array is None:
                fallback.append(key)
            else:
                out[key] = array
    if fallback:
        with np.load(path, allow_pickle=False) as data:
            out.update({key: data[key] for key in fallback})
    return {key: out[key] for key in wanted}


def read_npz_holding(path: str | Path, marker: str, keys: Iterable[str], *, optional: Iterable[str] = (),
                     what: str = ".npz file") -> dict[str, np.ndarray] | None:
    """:func:`read_npz` of ``keys`` (and ``optional``) when the file holds the member ``marker``, else
    None (an older or another kind of file); InputError naming the file when it is not readable."""
    from facetrust.errors import InputError

    try:
        present = npz_keys(path)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable {what} ({error})") from None
    return read_npz(path, keys, optional=optional, what=what) if marker in present else None


def read_npz(path: str | Path, keys: Iterable[str] | None = None, *, optional: Iterable[str] = (),
             what: str = ".npz file") -> dict[str, np.ndarray]:
    """:func:`load_npz` for a file given on the command line: ``keys`` (default: every member) and
    those of ``optional`` the file holds; InputError naming the file (and the key) for a missing
    file, a missing key, a file that is not an ``.npz``, a pickled member, or a member whose declared
    shape its bytes cannot hold (checked before anything is allocated)."""
    from facetrust.errors import InputError

    path = Path(path)
    keys = None if keys is None else list(keys)
    optional = list(optional)
    try:
        if keys is None and not optional:
            wanted = None
        else:
            present = set(npz_keys(path)) if optional else set()
            wanted = [*(keys or ()), *(key for key in optional if key in present and key not in (keys or ()))]
        return load_npz(path, wanted)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: {what} missing") from None
    except KeyError as error:
        key = str(error.args[0]).split(" is not a member", 1)[0] if error.args else "?"
        raise InputError(f"{path}: missing key {key!r} ({what})") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError, struct.error) as error:
        text = " ".join(str(error).split())[:300]
        if text.startswith(f"{path}: "):  # the declared-size checks name the member and the sizes
            raise InputError(f"{text} ({what})") from None
        raise InputError(f"{path}: not a readable {what} ({text or type(error).__name__})") from None


def _map_copy_on_write(handle):
    import mmap

    return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)


#: Where :func:`save_npz_aligned` starts every member's data: a multiple of this many bytes.
ALIGN = 64
_PADDING_ID = 0xD935  # the zip "extra field" id that Android's zipalign pads with


def save_npz_aligned(handle, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to the open binary file ``handle`` as an uncompressed ``.npz`` (what
    ``np.savez`` writes, readable by ``np.load``) whose every member's data starts at a multiple of
    :data:`ALIGN` bytes, so that :func:`load_npz` can map it.  Each member's local header is padded
    with an extra field (the zipalign way).  Object arrays are refused, as by ``np.savez(...,
    allow_pickle=False)``."""
    import io

    with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, value in arrays.items():
            array = np.asanyarray(value)
            if array.dtype.hasobject:
                raise ValueError(f"member {key!r}: object arrays are not written")
            if not (array.flags.c_contiguous or array.flags.f_contiguous):
                array = np.ascontiguousarray(array)
            header = io.BytesIO()
            fields = np.lib.format.header_data_from_array_1_0(array)
            try:
                np.lib.format.write_array_header_1_0(header, fields)
            except ValueError:  # a header too long for format 1.0
                header = io.BytesIO()
                np.lib.format.write_array_header_2_0(header, fields)
            body = (array.T if fields["fortran_order"] else array).reshape(-1).view(np.uint8)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = header.tell() + body.nbytes
            zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule: a zip64 local header
            start = handle.tell() + _LOCAL_HEADER.size + len(info.filename.encode()) + (20 if zip64 else 0)
            pad = -(start + 4 + header.tell()) % ALIGN
            info.extra = struct.pack("<HH", _PADDING_ID, pad) + bytes(pad)
            with archive.open(info, "w", force_zip64=zip64) as out:
                out.write(header.getvalue())
                out.write(body.data)


def check_declared_sizes(path: str | Path) -> None:
    """ValueError for any ``.npy`` member of the ``.npz`` at ``path`` whose declared shape or size
    its bytes cannot hold (see :func:`load_npz`); for readers that then call ``np.load``."""
    path = Path(path)
    check_regular(path, ".npz archive")
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename.endswith(".npy"):
                _check_declared_size(archive, info, path)


def npz_keys(path: str | Path) -> list[str]:
    """Member names of an ``.npz`` (without ``.npy``)."""
    check_regular(path, ".npz archive")
    with zipfile.ZipFile(path) as archive:
        return [name[:-4] for name in archive.namelist() if name.endswith(".npy")]


class StoredRows:
    """A C-ordered 2-D ``.npz`` member, read on demand a block of rows at a time.

    ``shape``, ``dtype`` and ``ndim`` are the array's; ``rows[a:b]`` reads those rows,
    :meth:`read_into` fills a caller's buffer, and ``np.asarray(rows)`` reads everything.
    ``check(start, block)`` (optional) sees every block read, e.g. to refuse non-finite rows.
    """

    ndim = 2

    def __init__(self, path: Path, offset: int, shape: tuple[int, int], dtype: np.dtype,
                 check: Callable[[int, np.ndarray], None] | None = None):
        self.path, self.offset, self.shape, self.dtype, self.check = Path(path), offset, shape, dtype, check

    def __len__(self) -> int:
        return self.shape[0]

    def read_into(self, start: int, out: np.ndarray) -> np.ndarray:
        """Rows ``start … start + len(out)`` into ``out`` (C-contiguous, this dtype); returns ``out``."""
        row_bytes = self.shape[1] * self.dtype.itemsize
        if not (0 <= start and start + len(out) <= self.shape[0]) or out.dtype != self.dtype:
            raise ValueError(f"{self.path}: rows {start}..{start + len(out)} of {self.shape} as {out.dtype}")
        with open(self.path, "rb") as handle:
            handle.seek(self.offset + start * row_bytes)
            if out.nbytes and handle.readinto(out.reshape(-1).view(np.uint8)) != out.nbytes:
                raise OSError(f"{self.path}: file ends inside the array")
        if self.check is not None:
            self.check(start, out)
        return out

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.shape[0])
            return self.read_into(start, np.empty((max(stop - start, 0), self.shape[1]), dtype=self.dtype))
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None):
        array = self[:]
        return array if dtype is None else array.astype(dtype)


def stored_rows(path: str | Path, key: str, check: Callable[[int, np.ndarray], None] | None = None) -> StoredRows | None:
    """:class:`StoredRows` for member ``key`` when it is a stored (uncompressed) C-ordered 2-D array, else None."""
    path = Path(path)
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        try:
            info = archive.getinfo(f"{key}.npy")
        except KeyError:
            return None
        layout = _stored_layout(handle, info)
    if layout is None or layout[2] or len(layout[1]) != 2:
        return None
    offset, shape, _, dtype = layout
    return StoredRows(path, offset, shape, dtype, check)
