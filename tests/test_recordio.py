"""facetrust.data.recordio: dmlc-core framing, pack/unpack, indexed access, hostile input."""

from __future__ import annotations

import multiprocessing
import pickle
import struct

import numpy as np
import pytest

from facetrust.data.recordio import (
    MAGIC,
    IndexedRecordIOReader,
    IndexedRecordIOWriter,
    IRHeader,
    RecordIOReader,
    RecordIOWriter,
    encode_record,
    pack,
    unpack,
    unpack_header,
)
from facetrust.errors import InputError

MAGIC_LE = struct.pack("<I", MAGIC)


def frame(cflag: int, data: bytes) -> bytes:
    """One part as the dmlc-core spec writes it, built independently of the module."""
    pad = b"\0" * (-len(data) % 4)
    return struct.pack("<II", MAGIC, (cflag << 29) | len(data)) + data + pad


def payloads(seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = [b"", b"a", b"abc", b"abcd", rng.bytes(1001)]
    out.append(MAGIC_LE)  # the whole payload is one aligned magic
    out.append(b"wxyz" + MAGIC_LE + b"tail!")  # aligned magic in the middle
    out.append(b"wxyz" + MAGIC_LE)  # aligned magic at the end: empty last part
    out.append(b"x" + MAGIC_LE + b"yy")  # unaligned: stored verbatim
    out.append(MAGIC_LE + MAGIC_LE + b"12345678" + MAGIC_LE + b"z")  # several, middle parts
    return out


def test_recordio_encodes_plain_payload_as_one_padded_part():
    assert encode_record(b"abcde") == frame(0, b"abcde")
    assert encode_record(b"") == frame(0, b"")


def test_recordio_splits_payload_at_aligned_magic():
    payload = b"wxyz" + MAGIC_LE + b"tail!"
    assert encode_record(payload) == frame(1, b"wxyz") + frame(3, b"tail!")
    assert encode_record(b"wxyz" + MAGIC_LE) == frame(1, b"wxyz") + frame(3, b"")
    assert encode_record(MAGIC_LE + MAGIC_LE + b"zz") == frame(1, b"") + frame(2, b"") + frame(3, b"zz")


def test_recordio_keeps_unaligned_magic_verbatim():
    payload = b"x" + MAGIC_LE + b"yy"
    assert encode_record(payload) == frame(0, payload)


def test_recordio_reads_records_split_around_magic(tmp_path):
    records = payloads()
    with RecordIOWriter(tmp_path / "a.rec") as writer:
        offsets = [writer.write(r) for r in records]
    with RecordIOReader(tmp_path / "a.rec") as reader:
        got = list(reader)
    assert [r for _, r in got] == records
    assert [o for o, _ in got] == offsets
    assert offsets[0] == 0 and all(o % 4 == 0 for o in offsets)


def test_indexed_recordio_round_trip_in_idx_order(tmp_path):
    records = payloads(1)
    keys = [7, 3, 100, 0, 1, 2, 50, 51, 52, 9]
    with IndexedRecordIOWriter(tmp_path / "a.idx", tmp_path / "a.rec") as writer:
        offsets = [writer.write_idx(k, r) for k, r in zip(keys, records)]
    lines = (tmp_path / "a.idx").read_text().splitlines()
    assert lines == [f"{k}\t{o}" for k, o in zip(keys, offsets)]
    with IndexedRecordIOReader(tmp_path / "a.idx", tmp_path / "a.rec") as reader:
        assert reader.keys == keys and len(reader) == len(keys)
        assert 100 in reader and 4 not in reader
        for k, r in reversed(list(zip(keys, records))):
            assert reader.read_idx(k) == r


def test_pack_scalar_and_array_labels_like_mxnet():
    scalar = pack(IRHeader(5, 3.0, 11, 12), b"img")
    assert scalar == struct.pack("<IfQQ", 0, 3.0, 11, 12) + b"img"  # flag reset to 0
    header, payload = unpack(scalar)
    assert header == IRHeader(0, 3.0, 11, 12) and payload == b"img"

    array = pack(IRHeader(0, [1.5, 2.0, -4.0], 1, 2), b"jpg")
    assert array == struct.pack("<IfQQ", 3, 0.0, 1, 2) + struct.pack("<3f", 1.5, 2.0, -4.0) + b"jpg"
    header, payload = unpack(array)
    assert header == IRHeader(3, (1.5, 2.0, -4.0), 1, 2) and payload == b"jpg"


def test_unpack_refuses_short_records():
    with pytest.raises(InputError, match="IRHeader"):
        unpack(b"\0" * 10, "x.rec key 4")
    short = struct.pack("<IfQQ", 3, 0.0, 0, 0) + b"\0" * 8
    with pytest.raises(InputError, match="x.rec key 4.*3 float32 labels"):
        unpack(short, "x.rec key 4")


@pytest.mark.parametrize("size", [0, 3, 4, 7, 15, 23])
def test_unpack_header_refuses_records_shorter_than_a_header(size):
    """Found by the 10^6-input mutation fuzz: a 4-23-byte record escaped as struct.error."""
    with pytest.raises(InputError, match=f"x.rec key 0: {size} bytes is shorter than the 24-byte IRHeader"):
        unpack_header(b"\x01" * size, "x.rec key 0")


def test_writer_is_atomic_on_exception(tmp_path):
    target = tmp_path / "a.rec"
    with pytest.raises(RuntimeError):
        with IndexedRecordIOWriter(tmp_path / "a.idx", target) as writer:
            writer.write_idx(0, b"data")
            assert not target.exists()
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_duplicate_key(tmp_path):
    with pytest.raises(ValueError, match="duplicate key 3"):
        with IndexedRecordIOWriter(tmp_path / "a.idx", tmp_path / "a.rec") as writer:
            writer.write_idx(3, b"x")
            writer.write_idx(3, b"y")


# --- hostile input ------------------------------------------------------------------------------


def write_raw(tmp_path, rec: bytes, idx: str | None = None):
    (tmp_path / "h.rec").write_bytes(rec)
    if idx is not None:
        (tmp_path / "h.idx").write_text(idx)
    return tmp_path / "h.idx", tmp_path / "h.rec"


@pytest.mark.parametrize(
    "rec, message",
    [
        (frame(0, b"abcd") + b"\x0a\x23", "truncated file.*offset 12"),
        (frame(0, b"abcd")[:-2], "runs past the end"),
        (struct.pack("<II", 0x12345678, 4) + b"abcd", "bad magic 0x12345678 at offset 0"),
        (struct.pack("<II", MAGIC, 100) + b"abcd", "length 100 at offset 0 runs past"),
        (frame(3, b"abcd"), "continuation part out of order at offset 0"),
        (frame(1, b"abcd") + frame(0, b"efgh"), "out of order at offset 12"),
        (frame(1, b"abcd"), "truncated file, expected a continuation part"),
        (struct.pack("<II", MAGIC, 5 << 29), "unknown continuation flag 5"),
    ],
)
def test_sequential_reader_names_file_and_offset_of_bad_record(tmp_path, rec, message):
    _, rec_path = write_raw(tmp_path, rec)
    with pytest.raises(InputError, match=message) as info:
        list(RecordIOReader(rec_path))
    assert "h.rec" in str(info.value)


def test_idx_offset_outside_file_is_refused(tmp_path):
    idx, rec = write_raw(tmp_path, frame(0, b"abcd"), "0\t0\n1\t400\n")
    with pytest.raises(InputError, match="key 1 points at offset 400, outside"):
        IndexedRecordIOReader(idx, rec)


def test_idx_offset_at_non_magic_is_refused_naming_key(tmp_path):
    idx, rec = write_raw(tmp_path, frame(0, b"abcdefgh") + frame(0, b"ijkl"), "0\t0\n1\t8\n")
    reader = IndexedRecordIOReader(idx, rec)
    assert reader.read_idx(0) == b"abcdefgh"
    with pytest.raises(InputError, match=r"h\.rec: record key 1 at offset 8: bad magic"):
        reader.read_idx(1)


@pytest.mark.parametrize(
    "idx_text, message",
    [
        ("0\t0\nnot-a-line\n", "line 2 is not 'key<TAB>offset'"),
        ("0\t0\n1\tx\n", "line 2 is not"),
        ("0 0\n", "line 1 is not"),
        ("0\t0\n0\t0\n", "line 2: duplicate key 0"),
        ("0\t-4\n", "negative offset"),
    ],
)
def test_malformed_idx_is_refused_naming_line(tmp_path, idx_text, message):
    idx, rec = write_raw(tmp_path, frame(0, b"abcd"), idx_text)
    with pytest.raises(InputError, match=message) as info:
        IndexedRecordIOReader(idx, rec)
    assert "h.idx" in str(info.value)


def test_missing_key_raises_instead_of_returning_none(tmp_path):
    idx, rec = write_raw(tmp_path, frame(0, b"abcd"), "0\t0\n")
    with pytest.raises(InputError, match="no key 5"):
        IndexedRecordIOReader(idx, rec).read_idx(5)


# --- DataLoader workers ---------------------------------------------------------------------------


def _read_in_child(reader, key, queue):
    queue.put(reader.read_idx(key))


def test_indexed_reader_pickles_without_handle_and_works_after_fork(tmp_path):
    records = payloads(2)
    with IndexedRecordIOWriter(tmp_path / "a.idx", tmp_path / "a.rec") as writer:
        for key, record in enumerate(records):
            writer.write_idx(key, record)
    reader = IndexedRecordIOReader(tmp_path / "a.idx", tmp_path / "a.rec")
    assert reader.read_idx(4) == records[4]  # parent opens its handle first
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._file._handle is None and clone.read_idx(6) == records[6]

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(reader, 9, queue))
    child.start()
    got = queue.get(timeout=30)
    child.join(timeout=30)
    assert got == records[9]
    assert reader.read_idx(1) == records[1]  # the parent's handle still works


def test_damaged_length_word_is_refused_before_allocating(tmp_path):
    import tracemalloc

    rec = tmp_path / "x.rec"
    with RecordIOWriter(rec) as writer:
        writer.write(b"a" * 16)
    data = bytearray(rec.read_bytes())
    data[4:8] = struct.pack("<I", (1 << 29) - 1)  # a 512 MB record in a 24-byte file
    rec.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"length 536870911 at offset 0 runs past the end of the file"):
            list(RecordIOReader(rec))
        (tmp_path / "x.idx").write_text("3\t0\n")
        with pytest.raises(InputError, match=r"key 3 at offset 0: length 536870911 at offset 0 runs past the end"):
            IndexedRecordIOReader(tmp_path / "x.idx", rec).read_idx(3)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_indexed_reader_gives_the_full_readers_bytes_and_notices_a_file_cut_after_opening(tmp_path):
    # plain ones (read in two preads) and ones split around the magic word; a plain one last
    records = payloads() + [b"a plain record"]
    with IndexedRecordIOWriter(tmp_path / "a.idx", tmp_path / "a.rec") as writer:
        for key, record in enumerate(records):
            writer.write_idx(key, record)
    reader = IndexedRecordIOReader(tmp_path / "a.idx", tmp_path / "a.rec")
    assert [reader.read_idx(key) for key in range(len(records))] == records
    last = len(records) - 1
    size = (tmp_path / "a.rec").stat().st_size
    with open(tmp_path / "a.rec", "r+b") as handle:
        handle.truncate(size - 4)  # the reader opened it at its full size
    with pytest.raises(InputError, match=f"key {last} at offset {reader.offset(last)}: length"):
        reader.read_idx(last)
