"""InsightFace ``.bin`` verification sets: a pickle of ``(bins, issame)``, loaded safely.

``bins`` holds 2N encoded images (pairs are images ``(0, 1), (2, 3), ...``), ``issame`` N bools.
Real files were written by Python 2 (``str`` images, so loading needs ``encoding='bytes'``) or
Python 3, some with ``issame`` as a numpy bool array.  A pickle can run any callable it names, so
the loader's ``find_class`` hands out no real callable at all: only harmless stand-ins for the
few globals such files name (see ``_ALLOWED``); everything else is refused, never executed.
Before unpickling, the opcode stream is scanned (``pickletools.genops``, which allocates nothing it
does not read) and every size the unpickler would allocate by is bounded by the file's size: memo
indices, frame lengths and byte-string lengths.  A 9-byte file naming memo slot 400,000,000 is
refused at once instead of costing gigabytes.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import reprlib
from pathlib import Path
from typing import Sequence

import numpy as np

from facetrust.errors import InputError
from facetrust.io import atomic_path

# Fixed so the same set gives the same bytes on every Python >= 3.4 (InsightFace's writers used
# HIGHEST_PROTOCOL, which depends on the interpreter).
BIN_PICKLE_PROTOCOL = 4

# numpy dtypes an array in a .bin may have: bool (issame) and uint8 (an encoded image).  A dtype
# with fields or objects would let raw bytes become pointers, so nothing else is admitted.
_SAFE_DTYPES = {"b1": np.dtype(bool), "?": np.dtype(bool), "u1": np.dtype(np.uint8)}
# numpy 1 pickles name numpy.core, numpy 2 numpy._core
_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")


class _FrozenClass(type):
    """Metaclass of the stand-ins: a pickle's BUILD opcode may set attributes on any object it can
    name, so a stand-in class must not let a file rewrite it for the files loaded after it."""

    def __setattr__(cls, name, value):
        raise pickle.UnpicklingError(f"a .bin file may not set attribute {name!r} on {cls.__name__}")


class _Dtype(metaclass=_FrozenClass):
    """Stand-in for ``numpy.dtype(name, align, copy)``: only whitelisted dtypes, state checked."""

    def __init__(self, name, align=False, copy=True):
        name = name.decode("ascii") if isinstance(name, bytes) else name
        if name not in _SAFE_DTYPES:
            raise pickle.UnpicklingError(f"numpy dtype {name!r} is not allowed in a .bin file")
        self.dtype = _SAFE_DTYPES[name]

    def __setstate__(self, state):
        # (version, byteorder, subdescr, names, fields, elsize, alignment, flags): a plain scalar
        # dtype has no sub-dtype, names or fields.
        if not isinstance(state, tuple) or len(state) < 5 or any(v is not None for v in state[2:5]):
            raise pickle.UnpicklingError("numpy dtype state with fields is not allowed in a .bin file")


class _Array(metaclass=_FrozenClass):
    """Stand-in for ``numpy.core.multiarray._reconstruct(ndarray, shape, dtype)`` + its state."""

    def __init__(self, subtype, shape, dtype):
        if subtype is not _NdarrayClass:
            raise pickle.UnpicklingError("only plain numpy.ndarray is allowed in a .bin file")
        self.array: np.ndarray | None = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("malformed numpy array state")
        _version, shape, dtype, _fortran, raw = state
        if not isinstance(dtype, _Dtype):
            raise pickle.UnpicklingError("numpy array state without an allowed dtype")
        if not isinstance(raw, (bytes, bytearray)) or not all(isinstance(n, int) for n in shape):
            raise pickle.UnpicklingError("numpy array state must hold raw bytes and an int shape")
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.dtype.itemsize != len(raw):
            raise pickle.UnpicklingError(
                f"numpy array of shape {tuple(shape)} needs {count} items, data has {len(raw)} bytes"
            )
        self.array = np.frombuffer(bytes(raw), dtype=dtype.dtype).reshape(shape)


class _NdarrayClass(metaclass=_FrozenClass):
    """Stand-in for ``numpy.ndarray`` as the first argument of ``_reconstruct``."""


def _scalar(dtype, raw=None):
    """Stand-in for ``numpy.core.multiarray.scalar(dtype, raw)`` (e.g. a numpy bool in a list)."""
    if not isinstance(dtype, _Dtype) or not isinstance(raw, (bytes, bytearray)):
        raise pickle.UnpicklingError("numpy scalar must be an allowed dtype with raw bytes")
    if len(raw) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar data has the wrong size")
    return np.frombuffer(bytes(raw), dtype=dtype.dtype)[0].item()


def _frombuffer(buffer, dtype, shape, order="C"):
    """Stand-in for ``numpy.core.numeric._frombuffer``: how numpy pickles arrays at protocol 5."""
    if not isinstance(dtype, _Dtype) or not isinstance(buffer, (bytes, bytearray)):
        raise pickle.UnpicklingError("numpy buffer must be in-band bytes with an allowed dtype")
    if not all(isinstance(n, int) for n in shape):
        raise pickle.UnpicklingError("numpy array shape must be ints")
    if int(np.prod(shape, dtype=np.int64)) * dtype.dtype.itemsize != len(buffer):
        raise pickle.UnpicklingError(f"numpy array of shape {tuple(shape)} does not match its data")
    return np.frombuffer(bytes(buffer), dtype=dtype.dtype).reshape(shape)


def _codecs_encode(text, encoding="utf-8"):
    """Stand-in for ``_codecs.encode``: how Python 3 pickles ``bytes`` at protocol <= 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only as latin1 bytes")
    return text.encode("latin1")


def _empty_bytes(*args):
    """Stand-in for ``builtins.bytes()``: protocol <= 2 writes empty bytes as ``bytes()``."""
    if args:
        raise pickle.UnpicklingError("builtins.bytes is allowed only without arguments")
    return b""


class _StandInFunction:
    """A stand-in function that a pickle cannot modify (BUILD on a plain function could set its
    ``__defaults__`` or ``__kwdefaults__`` for every later load)."""

    __slots__ = ("_function",)

    def __init__(self, function):
        object.__setattr__(self, "_function", function)

    def __setattr__(self, name, value):
        raise pickle.UnpicklingError(f"a .bin file may not set attribute {name!r} on a stand-in")

    def __call__(self, *args, **kwargs):
        return self._function(*args, **kwargs)


_ALLOWED = {
    **{(module, "_reconstruct"): _Array for module in _NUMPY_CORE},
    **{(module, "scalar"): _StandInFunction(_scalar) for module in _NUMPY_CORE},
    **{(module, "_frombuffer"): _StandInFunction(_frombuffer) for module in _NUMPY_NUMERIC},
    ("numpy", "ndarray"): _NdarrayClass,
    ("numpy", "dtype"): _Dtype,
    ("_codecs", "encode"): _StandInFunction(_codecs_encode),
    ("builtins", "bytes"): _StandInFunction(_empty_bytes),
    ("__builtin__", "bytes"): _StandInFunction(_empty_bytes),
}

# Opcodes that store into or read from the memo at an explicit index (MEMOIZE uses len(memo)).
_MEMO_INDEX_OPCODES = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}
# Opcodes that insert hashed keys: (name, stack items per key). A real .bin holds no dict or set.
_HASHED_INSERTS = {"SETITEM": 2, "SETITEMS": 2, "DICT": 2, "ADDITEMS": 1, "FROZENSET": 1}
# Keys a file may insert into dicts and sets, in all.  Python hashes an int k as k mod (2^61 - 1),
# so n keys k·(2^61 - 1) all collide and inserting them costs n²/2 comparisons (1 MB of them: 81 s);
# 4096 keys cost at most 8 M comparisons, a few milliseconds.
MAX_HASHED_KEYS = 4096
# A .bin's images, counted once per reference, may hold at most this many times the file's bytes.
# Each image of a real set is stored once (ratio <= 1); memo references let 5 MB name 2,000,000
# copies of one image, each decoded again by `embed`.
MAX_FANOUT = 16


def _check_opcodes(data: bytes) -> None:
    """Scan the pickle's opcodes without building anything; raise UnpicklingError for a memo
    index, frame or byte string that the file's size cannot account for, or for more than
    :data:`MAX_HASHED_KEYS` dict/set keys (hash-collision keys would cost quadratic time).

    The C unpickler sizes its memo table by the largest index it is given (16 bytes a slot) and
    allocates a counted byte string before reading it; ``genops`` only reads what is there.  A
    writer numbers memo slots 0, 1, 2, ..., one per opcode at most, so an index at or above the
    number of opcodes in the stream cannot come from a real writer.  The stack is followed by
    depth alone (as ``pickletools.dis`` does) to count the keys a SETITEMS or ADDITEMS inserts:
    linear in the file's size.
    """
    size = len(data)
    opcodes = 0
    largest_index = -1
    depth, marks, keys = 0, [], 0
    try:
        for opcode, arg, pos in pickletools.genops(data):
            opcodes += 1
            name = opcode.name
            if name in _MEMO_INDEX_OPCODES:
                index = int(arg)
                if not 0 <= index < size:
                    raise pickle.UnpicklingError(
                        f"memo index {index} at byte {pos} is impossible in a {size}-byte file")
                largest_index = max(largest_index, index)
            elif name == "FRAME" and arg > size - pos - 9:  # 9 = opcode + 8-byte length
                raise pickle.UnpicklingError(
                    f"frame of {arg} bytes at byte {pos} runs past the end of the {size}-byte file")
            before, after = opcode.stack_before, opcode.stack_after
            if pickletools.markobject in before or (name == "POP" and marks and marks[-1] == depth):
                if not marks:
                    raise pickle.UnpicklingError(f"{name} at byte {pos} without a MARK")
                mark = marks.pop()
                sliced = depth - mark
                if name in _HASHED_INSERTS:
                    keys += sliced // _HASHED_INSERTS[name]
                depth = mark - before.index(pickletools.markobject) if pickletools.markobject in before else mark
            else:
                if name == "SETITEM":
                    keys += 1
                depth -= len(before)
            if depth < 0:
                raise pickle.UnpicklingError(f"{name} at byte {pos} pops an empty stack")
            if keys > MAX_HASHED_KEYS:
                raise pickle.UnpicklingError(
                    f"more than {MAX_HASHED_KEYS} dict or set keys by byte {pos}: a .bin set holds no "
                    "dictionaries (hash-collision keys would cost quadratic time)")
            if pickletools.markobject in after:
                marks.append(depth)
            else:
                depth += len(after)
    except ValueError as exc:  # genops: a truncated argument, an unknown opcode
        raise pickle.UnpicklingError(str(exc)) from None
    if largest_index >= opcodes:
        raise pickle.UnpicklingError(
            f"memo index {largest_index} but the stream has only {opcodes} opcodes")


class _BinUnpickler(pickle.Unpickler):
    """Unpickler whose globals are only the stand-ins above; anything else is refused."""

    def find_class(self, module, name):
        module = module.decode("ascii") if isinstance(module, bytes) else module
        name = name.decode("ascii") if isinstance(name, bytes) else name
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed: a .bin set holds only bytes, bools and "
                "numpy bool/uint8 arrays; refusing to load it"
            ) from None


def _check_fanout(raw_bins, path: Path, size: int) -> None:
    """Refuse images that, counted once per reference, hold more than :data:`MAX_FANOUT` times the
    file's bytes (memo references to one image), before any is copied or decoded."""
    total = 0
    for item in raw_bins:
        item = _materialise(item)
        total += item.nbytes if isinstance(item, np.ndarray) else len(item) if isinstance(item, (bytes, bytearray)) else 0
        if total > MAX_FANOUT * size:
            raise InputError(
                f"{path}: its {len(raw_bins)} images reference more than {MAX_FANOUT} x the file's {size} bytes "
                "(one image named many times through the pickle memo); a .bin stores each image once")


def _materialise(value):
    return value.array if isinstance(value, _Array) else value


def _as_bytes(item, path: Path, index: int) -> bytes:
    item = _materialise(item)
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    raise InputError(f"{path}: image {index} is {type(item).__name__}, expected bytes")


_short_repr = reprlib.Repr()
_short_repr.maxlevel, _short_repr.maxstring, _short_repr.maxother = 2, 40, 40


def _as_bool(item, path: Path, index: int) -> bool:
    if isinstance(item, (bool, np.bool_)) or (isinstance(item, int) and item in (0, 1)):
        return bool(item)
    raise InputError(f"{path}: issame[{index}] is {_short_repr.repr(item)}, expected a bool")


def load_bin(path: str | os.PathLike) -> tuple[list[bytes], list[bool]]:
    """Load a ``.bin`` set; return ``(bins, issame)``: 2N image byte strings and N bools.

    Raises :class:`InputError` naming the file for a pickle that names any other global (nothing
    it names is called), for a wrong structure, or when ``len(bins) != 2 * len(issame)``.
    """
    from facetrust.input_files import read_regular

    path = Path(path)
    data = read_regular(path, ".bin set")  # a regular file: never a device or a FIFO
    if not data:
        raise InputError(f"{path}: empty file, not a .bin verification set")
    try:
        _check_opcodes(data)
        # encoding='bytes': Python 2 str (the images) must stay bytes; Python 3 pickles unaffected.
        loaded = _BinUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, OverflowError, UnicodeDecodeError,
            RecursionError) as exc:
        raise InputError(f"{path}: not a safe .bin verification set: {exc}") from None
    if not (isinstance(loaded, (tuple, list)) and len(loaded) == 2):
        raise InputError(f"{path}: expected a pickled (bins, issame) pair, got {type(loaded).__name__}")
    raw_bins, raw_issame = (_materialise(v) for v in loaded)
    if not isinstance(raw_bins, (list, tuple)):
        raise InputError(f"{path}: bins is {type(raw_bins).__name__}, expected a list of bytes")
    # np.ndim would build an array from a ragged list (ValueError); a list is one-dimensional here
    # and its items are checked one by one below.
    if not (isinstance(raw_issame, (list, tuple)) or (isinstance(raw_issame, np.ndarray) and raw_issame.ndim == 1)):
        raise InputError(f"{path}: issame is {type(raw_issame).__name__}, expected a list of bool")
    _check_fanout(raw_bins, path, len(data))
    bins = [_as_bytes(item, path, i) for i, item in enumerate(raw_bins)]
    issame = [_as_bool(item, path, i) for i, item in enumerate(list(raw_issame))]
    if len(bins) != 2 * len(issame):
        raise InputError(
            f"{path}: {len(bins)} images for {len(issame)} pairs; expected {2 * len(issame)}"
        )
    return bins, issame


def write_bin(path: str | os.PathLike, bins: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Write ``(bins, issame)`` as InsightFace does (list of bytes, list of bool), atomically."""
    bins = [bytes(b) for b in bins]
    issame = [bool(s) for s in issame]
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{len(bins)} images for {len(issame)} pairs; expected {2 * len(issame)}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            pickle.dump((bins, issame), handle, protocol=BIN_PICKLE_PROTOCOL)
