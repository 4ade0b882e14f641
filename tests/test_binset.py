"""facetrust.data.binset: .bin verification sets load safely, from Python 2 and 3 writers."""

from __future__ import annotations

import os
import pickle
import pickletools
import struct

import numpy as np
import pytest

from facetrust.data.binset import load_bin, write_bin
from facetrust.errors import InputError

BINS = [b"\xff\xd8jpeg-%d" % i for i in range(6)]
ISSAME = [True, False, True]


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_bin_loader_refuses_code_execution(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps((BINS[:2], [_RunsShell(marker)]), protocol=protocol))
    with pytest.raises(InputError, match=r"evil\.bin.*(posix|os|nt)\.system is not allowed"):
        load_bin(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, refused",
    [
        ((BINS[:2], np.array([True], dtype=object)), "dtype 'O8' is not allowed"),
        (([eval], [True]), "(__builtin__|builtins).eval is not allowed"),
        ((BINS[:2], np.ma.masked_array([True])), "numpy.ma.core"),
    ],
)
def test_bin_loader_refuses_other_globals(tmp_path, payload, refused):
    path = tmp_path / "x.bin"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(InputError, match=refused):
        load_bin(path)


def test_bin_round_trip(tmp_path):
    write_bin(tmp_path / "lfw.bin", BINS, ISSAME)
    bins, issame = load_bin(tmp_path / "lfw.bin")
    assert bins == BINS and issame == ISSAME
    assert all(type(b) is bytes for b in bins) and all(type(s) is bool for s in issame)
    assert [p.name for p in tmp_path.iterdir()] == ["lfw.bin"]  # no temporary left behind


def _py2_str(data: bytes) -> bytes:
    """A Python 2 ``str`` as cPickle writes it: SHORT_BINSTRING or BINSTRING."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def test_bin_loads_python2_protocol2_pickle_with_str_images(tmp_path):
    images = BINS[:3] + [bytes(range(256)) * 2, b"", b"\x80\x02U"]  # one long, one empty
    body = b"".join(_py2_str(b) for b in images)
    flags = b"".join(b"\x88" if s else b"\x89" for s in ISSAME)
    # PROTO 2, ( list MARK images APPENDS, list MARK bools APPENDS ) TUPLE2, STOP
    data = b"\x80\x02]q\x00(" + body + b"e]q\x01(" + flags + b"e\x86q\x02."
    (tmp_path / "py2.bin").write_bytes(data)
    bins, issame = load_bin(tmp_path / "py2.bin")
    assert bins == images and issame == ISSAME


def test_bin_loads_python3_protocol2_bytes(tmp_path):
    # Python 3 writes bytes at protocol 2 as _codecs.encode(str, 'latin1'), b"" as bytes()
    images = [b"", b"\x00\xff\x80abc", b"x", b""]
    (tmp_path / "p2.bin").write_bytes(pickle.dumps((images, [False, True]), protocol=2))
    assert load_bin(tmp_path / "p2.bin") == (images, [False, True])


def _as_numpy1(data: bytes) -> bytes:
    """Rename numpy._core globals to numpy 1's numpy.core, fixing string lengths and frames."""
    if data[1] < 4:  # GLOBAL opcodes: newline-terminated text
        return data.replace(b"numpy._core", b"numpy.core")
    for name in (b"numpy._core.multiarray", b"numpy._core.numeric"):
        old = b"\x8c" + bytes([len(name)]) + name  # SHORT_BINUNICODE
        new_name = name.replace(b"numpy._core", b"numpy.core")
        data = data.replace(old, b"\x8c" + bytes([len(new_name)]) + new_name)
    return pickletools.optimize(data)  # re-frames protocol 4+ pickles


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("numpy1_names", [False, True])
def test_bin_accepts_numpy_bool_issame(tmp_path, protocol, numpy1_names):
    data = pickle.dumps((BINS, np.array(ISSAME)), protocol=protocol)
    data2 = pickle.dumps((BINS, [np.bool_(s) for s in ISSAME]), protocol=protocol)
    if numpy1_names:  # files written with numpy 1 name numpy.core, numpy 2 numpy._core
        data, data2 = (_as_numpy1(d) for d in (data, data2))
    for blob in (data, data2):
        (tmp_path / "np.bin").write_bytes(blob)
        bins, issame = load_bin(tmp_path / "np.bin")
        assert bins == BINS and issame == ISSAME and all(type(s) is bool for s in issame)


def test_bin_accepts_uint8_array_images(tmp_path):
    images = [np.frombuffer(b, dtype=np.uint8) for b in BINS]
    (tmp_path / "u8.bin").write_bytes(pickle.dumps((images, ISSAME), protocol=2))
    assert load_bin(tmp_path / "u8.bin")[0] == BINS


@pytest.mark.parametrize(
    "payload, message",
    [
        ((BINS[:5], ISSAME), "5 images for 3 pairs"),
        ([BINS, ISSAME, 1], "expected a pickled \\(bins, issame\\) pair"),
        ((BINS[:4] + ["text", "x"], ISSAME), "image 4 is str, expected bytes"),
        ((BINS, [True, 2, False]), "issame\\[1\\] is 2"),
        ({"bins": BINS}, "expected a pickled"),
    ],
)
def test_bin_structure_is_validated(tmp_path, payload, message):
    (tmp_path / "bad.bin").write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(InputError, match=r"bad\.bin.*" + message):
        load_bin(tmp_path / "bad.bin")


def test_truncated_bin_is_input_error(tmp_path):
    data = pickle.dumps((BINS, ISSAME), protocol=4)
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.bin: not a safe"):
        load_bin(tmp_path / "cut.bin")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x80\x02Nr" + struct.pack("<I", 400_000_000) + b".", "memo index 400000000 at byte 3 is impossible"),
        (b"\x80\x02" + b"N0" * 5 + b"h\x0e.", "memo index 14 but the stream has only 13 opcodes"),
        (b"\x80\x04\x95" + struct.pack("<Q", 1 << 40) + b"N.", "frame of 1099511627776 bytes"),
        (b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"abc.", "expected 1099511627776 bytes in a bytes8"),
        (b"", "empty file"),
    ],
)
def test_sizes_in_the_pickle_are_bounded_by_the_file_size(tmp_path, data, message):
    path = tmp_path / "bomb.bin"
    path.write_bytes(data)
    with pytest.raises(InputError, match=message):
        load_bin(path)


def test_a_pickle_cannot_rewrite_the_stand_ins_for_later_loads(tmp_path):
    # GLOBAL numpy.ndarray, then BUILD with a slot state {'__init__': None}: setattr on the class
    evil = b"\x80\x02cnumpy\nndarray\nN}X\x08\x00\x00\x00__init__Ns\x86b."
    path = tmp_path / "poison.bin"
    path.write_bytes(evil)
    with pytest.raises(InputError, match="may not set attribute '__init__'"):
        load_bin(path)
    write_bin(tmp_path / "ok.bin", BINS, ISSAME)
    assert load_bin(tmp_path / "ok.bin") == (BINS, ISSAME)


def test_ragged_issame_is_input_error_not_value_error(tmp_path):
    path = tmp_path / "ragged.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b"], [[], ()]), protocol=0))
    with pytest.raises(InputError, match=r"issame\[0\] is \[\], expected a bool"):
        load_bin(path)


def test_hash_collision_dictionaries_are_refused_in_linear_time(tmp_path):
    """Python hashes an int k as k mod (2^61 - 1): a 1 MB pickle of such keys took 81 s to load."""
    import time

    import bad_input_fixtures as fx

    path = fx.hash_collision_bin(tmp_path / "collide.bin", 100_000)
    assert path.stat().st_size > 1_000_000
    start = time.perf_counter()
    with pytest.raises(InputError, match="more than 4096 dict or set keys"):
        load_bin(path)
    assert time.perf_counter() - start < 2.0


def test_memo_references_count_against_the_file_size_but_sharing_within_reason_loads(tmp_path):
    import pickle

    image = b"\xff\xd8\xff" + bytes(range(256)) * 40
    shared = tmp_path / "shared.bin"
    shared.write_bytes(pickle.dumps(([image] * 8, [True] * 4), protocol=4))  # 8 names, 8x the bytes: allowed
    assert len(load_bin(shared)[0]) == 8
    fanned = tmp_path / "fanned.bin"
    fanned.write_bytes(pickle.dumps(([image] * 40, [True] * 20), protocol=4))
    with pytest.raises(InputError, match="reference more than 16 x the file's"):
        load_bin(fanned)
