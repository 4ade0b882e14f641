"""Fuzzing the parsers of untrusted files: only the project's own errors may escape.

Three targets, each fed by Hypothesis (property-based generation with mutation of valid files):

- ``recordio``: an InsightFace training set (``train.rec``, ``train.idx``, ``property``) written by
  the project's writer from generated records (IRHeader flags, labels with NaN/inf/1e30/negative
  values, ids, payloads), then optionally damaged (bytes overwritten, truncated, ``.idx`` lines
  replaced, ``property`` as arbitrary bytes).  Read with ``InsightFaceRecord`` (header, labels,
  every record, every image decoded), ``data inspect`` and ``data dump --jsonl`` (each line must
  be strict JSON);
- ``bin``: ``.bin`` pair sets: pickles of generated structures at protocols 0-5, then damaged
  (bytes flipped, truncated, spliced), plus raw bytes; read with ``load_bin``;
- ``ijb``: the three IJB meta files from generated tokens (names with ``..``/quotes/non-ASCII,
  20-digit ids, ``nan``/``inf``/``1e400``, non-UTF-8 lines, ``\\n``/``\\r\\n``/``\\r`` endings); read with
  ``read_ijb_protocol`` under both ``on_bad_image`` policies.

A case passes when it returns or raises :class:`facetrust.errors.InputError`; anything else is
reported with the input that caused it (Hypothesis shrinks it) and the script exits 1.  Each case
is timed (limit 1 s of CPU time: the wall time of a shared machine also counts others' work;
both are printed) and its peak allocation is traced with ``tracemalloc`` (limit 200 MB; Python
and numpy memory, which is where a parser allocates by a size it read).  Generation is
derandomised: the same command gives the same cases.

Usage: ``python benchmarks/fuzz_parsers.py [--examples 35000] [--targets recordio bin ijb]``
(full: 3 x 35,000 = 105,000 inputs, a few minutes on one core) or ``--quick`` (a few hundred per
target, seconds; what CI runs through ``tests/test_fuzz_parsers.py``).

``--mutations 1000000`` is the benchmark run: a seeded mutation loop (no Hypothesis, so ~100x more
inputs per second) over valid seed files of the three targets, with byte edits, CR-only and CRLF
line endings, huge integers and declared sizes near 2^32/2^64; it counts every exception other
than InputError instead of stopping at the first, and exits 1 if there was any.  CI runs a few
thousand (``tests/test_fuzz_parsers.py``).  Generated cases also cover CR-only endings, 5,000-digit
integers, class counts up to 10^30 and pickles declaring sizes up to 2^64.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import resource
import sys
import tempfile
import time
import traceback
import tracemalloc
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from facetrust.data.binset import load_bin
from facetrust.data.ijb import read_ijb_protocol
from facetrust.data.insightface import InsightFaceRecord
from facetrust.data.inspect import inspect_path, iter_dump
from facetrust.data.recordio import IRHeader, encode_record, pack
from facetrust.errors import InputError

TIME_LIMIT_S = 1.0
MEMORY_LIMIT_MB = 200.0
QUICK_EXAMPLES = 200

# ------------------------------------------------------------------------------ strategies

_special_floats = st.sampled_from([0.0, 1.0, 2.0, 3.0, -1.0, 0.5, 2.5, 1e30, -1e30, 3.4e38,
                                   float("nan"), float("inf"), float("-inf"), 16777216.0])
_label = st.one_of(_special_floats, st.floats(width=32), st.integers(0, 20).map(float))


@st.composite
def _record(draw):
    """One IRHeader record: a scalar label (flag 0) or a list of labels (flag = its length)."""
    labels = draw(st.one_of(_label, st.lists(_label, min_size=1, max_size=4)))
    rec_id = draw(st.integers(0, 2**64 - 1))
    payload = draw(st.one_of(st.binary(max_size=48), st.just(b"\xff\xd8\xff\xe0" + b"\0" * 12)))
    return pack(IRHeader(0, labels, rec_id, 0), payload)


@st.composite
def _damage(draw, data: bytes) -> bytes:
    """Overwrite, truncate or splice a few bytes of ``data``."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["overwrite", "truncate", "insert", "none"]))
        if not data or kind == "none":
            continue
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "overwrite":
            data[pos:pos + 4] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


_property = st.one_of(
    st.tuples(st.integers(-2, 30) | st.integers(2**31, 10**30), st.integers(-1, 200) | st.integers(10**5, 10**12),
              st.integers(-1, 200)).map(
        lambda t: f"{t[0]},{t[1]},{t[2]}".encode()),
    st.binary(max_size=24),
    st.text(max_size=12).map(lambda t: t.encode("utf-8")),
)


# \n, \r\n and a lone \r (old Mac) end a line alike in every text format we read
_line_ending = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def recordio_case(draw):
    """``(rec bytes, idx bytes, property bytes or None)`` of a generated, maybe damaged, set."""
    records = draw(st.lists(_record(), max_size=8))
    with_header = draw(st.booleans())
    if with_header:  # an InsightFace header (A, B), maybe with impossible values
        a, b = draw(_label), draw(_label)
        records = [pack(IRHeader(0, (a, b), 0, 0), b"")] + records
    keys = list(range(len(records))) if draw(st.booleans()) else draw(
        st.lists(st.integers(-3, 2**40), min_size=len(records), max_size=len(records), unique=True))
    # the framing of IndexedRecordIOWriter, in memory (a temporary directory per case costs more
    # than the case)
    rec_parts, idx_lines, offset = [], [], 0
    ending = draw(_line_ending)
    for key, record in zip(keys, records):
        encoded = encode_record(record)
        rec_parts.append(encoded)
        idx_lines.append(f"{key}\t{offset}{ending}")
        offset += len(encoded)
    rec, idx = b"".join(rec_parts), "".join(idx_lines).encode("ascii")
    if draw(st.booleans()):
        rec = draw(_damage(rec))
    if draw(st.booleans()):
        idx = draw(_damage(idx))
    prop = draw(st.one_of(st.none(), _property))
    return rec, idx, prop


_pickle_leaf = st.one_of(
    st.binary(max_size=16), st.booleans(), st.integers(-2**70, 2**70), st.none(), st.floats(),
    st.text(max_size=8),
    st.lists(st.booleans(), max_size=4).map(lambda v: np.array(v, dtype=bool)),
    st.binary(max_size=8).map(lambda b: np.frombuffer(b, dtype=np.uint8).copy()),
)
_pickle_tree = st.recursive(_pickle_leaf, lambda children: st.one_of(
    st.lists(children, max_size=5), st.tuples(children, children), st.dictionaries(st.text(max_size=3), children,
                                                                                 max_size=3)), max_leaves=12)


# Opcodes that declare a size or an index: BINBYTES/BINUNICODE/FRAME lengths, LONG_BINGET/PUT.
_SIZED_OPCODES = [b"B", b"X", b"\x95", b"j", b"r", b"\x8e", b"\x8d"]


@st.composite
def _declared_size(draw) -> bytes:
    """A pickle whose opcode declares a size or index the file cannot hold (up to 2^64 - 1)."""
    opcode = draw(st.sampled_from(_SIZED_OPCODES))
    width = 8 if opcode in (b"\x95", b"\x8e", b"\x8d") else 4
    value = draw(st.one_of(st.integers(0, 2**(8 * width) - 1), st.just(2**(8 * width) - 1)))
    return b"\x80\x04" + opcode + value.to_bytes(width, "little") + draw(st.binary(max_size=8)) + b"."


@st.composite
def bin_case(draw) -> bytes:
    """Bytes of a ``.bin`` file: a pickled (maybe well-formed) pair, maybe damaged, or raw bytes;
    or a pickle declaring sizes it does not hold, or naming one image many times (memo fan-out)."""
    kind = draw(st.integers(0, 11))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return draw(_declared_size())
    if kind == 2:
        image, n = draw(st.binary(min_size=1, max_size=64)), draw(st.integers(1, 400))
        return pickle.dumps(([image] * (2 * n), [True] * n), protocol=draw(st.integers(2, 5)))
    if draw(st.booleans()):
        n = draw(st.integers(0, 3))
        obj = ([draw(st.binary(max_size=12)) for _ in range(2 * n)],
               draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    else:
        obj = draw(_pickle_tree)
    data = pickle.dumps(obj, protocol=draw(st.integers(0, 5)))
    return draw(_damage(data)) if draw(st.booleans()) else data


_name = st.one_of(st.sampled_from(["1.jpg", "2.jpg", "3.jpg", "a/b.jpg", "../x.jpg", "/etc/passwd", "NA",
                                   '"q.jpg', "nan", "x\\y.jpg", "é.jpg"]),
                  st.text(st.characters(blacklist_categories=("Zs", "Cc", "Cs")), min_size=1, max_size=6))
_int_token = st.one_of(st.integers(-3, 12).map(str), st.sampled_from(
    ["12345678901234567890", "-99999999999999999999", "1_0", "1.5", "٣", "0x10", "", "9" * 5000, "-" + "9" * 400]))
_float_token = st.one_of(st.floats(-200, 200).map(repr), st.sampled_from(
    ["nan", "inf", "-inf", "1e400", "NaN", "0", "-1", "1e30", "Infinity", "abc", ""]))


def _lines(draw, columns) -> bytes:
    rows = draw(st.lists(st.tuples(*columns), max_size=6))
    ending = draw(_line_ending)
    text = ending.join(" ".join(row) for row in rows) + (ending if rows else "")
    data = text.encode("utf-8")
    if draw(st.integers(0, 7)) == 0:
        data += draw(st.binary(max_size=12))  # not UTF-8, or stray separators
    return data


@st.composite
def ijb_case(draw):
    """The bytes of ``face_tid_mid``, ``name_5pts_score`` and ``template_pair_label`` files."""
    faces = _lines(draw, [_name, _int_token, _int_token])
    points = _lines(draw, [_name] + [_float_token] * 11)
    pairs = _lines(draw, [_int_token, _int_token, st.sampled_from(["0", "1", "2", "-1", "x"])])
    return faces, points, pairs, draw(st.sampled_from(["fail", "skip"]))


# ------------------------------------------------------------------------------ targets


def run_recordio(case, tmp: Path) -> None:
    rec, idx, prop = case
    (tmp / "train.rec").write_bytes(rec)
    (tmp / "train.idx").write_bytes(idx)
    if prop is not None:
        (tmp / "property").write_bytes(prop)
    elif (tmp / "property").exists():
        (tmp / "property").unlink()
    for step in (_read_insightface, inspect_path, _dump):
        try:
            step(tmp)
        except InputError:
            pass


def _read_insightface(rec_dir: Path) -> None:
    record = InsightFaceRecord(rec_dir)
    record.labels  # noqa: B018 (reads every label)
    for i in range(len(record)):
        record.decode(i)


def _dump(rec_dir: Path) -> None:
    for obj in iter_dump(rec_dir):
        json.dumps(obj, allow_nan=False)


def run_bin(data: bytes, tmp: Path) -> None:
    (tmp / "x.bin").write_bytes(data)
    try:
        load_bin(tmp / "x.bin")
    except InputError:
        pass


def run_ijb(case, tmp: Path) -> None:
    faces, points, pairs, policy = case
    meta = tmp / "meta"
    meta.mkdir(exist_ok=True)
    (meta / "f_face_tid_mid.txt").write_bytes(faces)
    (meta / "f_name_5pts_score.txt").write_bytes(points)
    (meta / "f_template_pair_label.txt").write_bytes(pairs)
    try:
        read_ijb_protocol(tmp, "f", on_bad_image=policy)
    except InputError:
        pass


TARGETS = {"recordio": (recordio_case(), run_recordio), "bin": (bin_case(), run_bin),
           "ijb": (ijb_case(), run_ijb)}

# ------------------------------------------------------------------------------ mutation mode
# A plain seeded mutation loop, ~100x cheaper per input than Hypothesis's generation: what lets a
# benchmark run reach 10^6 inputs.  Valid files are mutated by byte edits plus the classes the
# generated cases may miss: CR-only line endings, huge integers, declared sizes near 2^32/2^64.


def _seed_files(tmp: Path) -> dict[str, dict[str, bytes]]:
    """One valid input per target, as ``{file name: bytes}``."""
    from facetrust.data.binset import write_bin
    from facetrust.data.insightface import write_insightface_dataset
    from PIL import Image
    import io

    def jpeg(seed: int) -> bytes:
        pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
        return buffer.getvalue()

    write_insightface_dataset(tmp / "rec", [(i // 2, jpeg(i)) for i in range(4)], 2, (16, 16))
    write_bin(tmp / "x.bin", [jpeg(10), jpeg(11), jpeg(12), jpeg(13)], [True, False])
    points = " ".join(["30.0", "40.0", "50.0", "40.0", "40.0", "50.0", "32.0", "60.0", "48.0", "60.0"])
    return {
        "recordio": {name: (tmp / "rec" / name).read_bytes() for name in ("train.rec", "train.idx", "property")},
        "bin": {"x.bin": (tmp / "x.bin").read_bytes()},
        "ijb": {"f_face_tid_mid.txt": b"1.jpg 5 50\n2.jpg 5 51\n3.jpg 6 60\n",
                "f_name_5pts_score.txt": "".join(f"{n}.jpg {points} 0.9\n" for n in (1, 2, 3)).encode(),
                "f_template_pair_label.txt": b"5 6 0\n6 5 1\n"},
    }


def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        op = int(rng.integers(0, 9))
        pos = int(rng.integers(0, len(data) + 1))
        if op == 0 and data:  # flip bits of one byte
            data[min(pos, len(data) - 1)] ^= int(rng.integers(1, 256))
        elif op == 1:  # overwrite a few bytes
            data[pos:pos + 4] = rng.integers(0, 256, int(rng.integers(1, 5)), dtype=np.uint8).tobytes()
        elif op == 2:  # truncate
            del data[pos:]
        elif op == 3:  # insert random bytes
            data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif op == 4 and data:  # duplicate a slice (repeated lines, records, pickle opcodes)
            end = min(len(data), pos + int(rng.integers(1, 64)))
            data[end:end] = data[pos:end]
        elif op == 5:  # CR-only or CRLF line endings
            data = bytearray(bytes(data).replace(b"\n", b"\r" if rng.integers(0, 2) else b"\r\n"))
        elif op == 6:  # a huge integer token
            data[pos:pos] = (b"-" if rng.integers(0, 2) else b"") + b"9" * int(rng.integers(19, 5000))
        elif op == 7 and len(data) >= 8:  # a declared size or index near 2^32 or 2^64
            width = 8 if rng.integers(0, 2) else 4
            at = min(pos, len(data) - width)
            value = (1 << (8 * width)) - int(rng.integers(1, 1 << 16))
            data[at:at + width] = value.to_bytes(width, "little")
        elif op == 8:  # a number with a huge exponent or a NaN where a number goes
            data[pos:pos] = rng.choice([b"1e400", b"nan", b"-inf", b"1e30", b"4294967296", b"18446744073709551616"])
    return bytes(data)


def _run_files(name: str, files: dict[str, bytes], tmp: Path, rng: np.random.Generator) -> None:
    if name == "recordio":
        run_recordio((files["train.rec"], files["train.idx"], files.get("property")), tmp)
    elif name == "bin":
        run_bin(files["x.bin"], tmp)
    else:
        run_ijb((files["f_face_tid_mid.txt"], files["f_name_5pts_score.txt"], files["f_template_pair_label.txt"],
                 "skip" if rng.integers(0, 2) else "fail"), tmp)


def mutation_fuzz(inputs: int, seed: int = 0, progress_every: int = 50_000) -> dict:
    """Run ``inputs`` mutated inputs, split evenly over the targets; never stops at a foreign
    exception: returns the count, the foreign exceptions (type and message, first 10) and timing."""
    import logging

    logging.disable(logging.WARNING)  # the skip policy logs every skipped row: millions of lines
    rng = np.random.default_rng(seed)
    foreign: dict[str, int] = {}
    examples: list[str] = []
    counts = {name: 0 for name in TARGETS}
    start = time.perf_counter()
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="fuzz-mutation-", dir=scratch) as tmp:
        tmp = Path(tmp)
        seeds = _seed_files(tmp / "seeds")
        names = list(TARGETS)
        for n in range(inputs):
            name = names[n % len(names)]
            files = dict(seeds[name])
            for file in rng.choice(sorted(files), int(rng.integers(1, len(files) + 1)), replace=False):
                files[str(file)] = _mutate(rng, files[str(file)])
            work = tmp / name
            work.mkdir(exist_ok=True)
            try:
                _run_files(name, files, work, rng)
            except InputError:
                pass
            except Exception as error:  # noqa: BLE001: counting the foreign ones is the point
                key = f"{name}: {type(error).__name__}"
                foreign[key] = foreign.get(key, 0) + 1
                if len(examples) < 10:
                    examples.append(f"{key}: {str(error)[:200]} (input {n}, seed {seed})")
            counts[name] += 1
            if progress_every and (n + 1) % progress_every == 0:
                print(f"mutation  inputs {n + 1:9d}  foreign exceptions {sum(foreign.values())}  "
                      f"wall {time.perf_counter() - start:7.1f} s", flush=True)
    return {"inputs": inputs, "per_target": counts, "foreign": foreign, "examples": examples,
            "wall_s": time.perf_counter() - start}


# ------------------------------------------------------------------------------ driver


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def fuzz_target(name: str, examples: int) -> dict:
    """Run ``examples`` generated cases of one target; return count, slowest case and its time.

    An exception other than InputError propagates (after Hypothesis shrinks the input)."""
    strategy, target = TARGETS[name]
    stats = {"target": name, "count": 0, "max_time_s": 0.0, "max_wall_s": 0.0, "max_memory_mb": 0.0}
    # a RAM disk where there is one: every case writes its files
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-", dir=scratch) as tmp:
        def timed(case) -> tuple[float, float, int]:
            """(CPU s, wall s, peak bytes allocated) of one case.

            CPU time is the limit (a shared machine's stalls are not the parser's); wall is shown.
            The garbage collector is paused: a full collection of Hypothesis's own state may
            otherwise land inside a case and be charged to it.  Memory is traced only inside the
            case (Python and numpy allocations), so Hypothesis's bookkeeping, which grows with the
            number of examples, is not counted against the parser."""
            gc.disable()
            tracemalloc.start()
            try:
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                target(case, Path(tmp))
                cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
                return cpu, wall, tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
                gc.enable()

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
                  print_blob=True)
        @given(strategy)
        def check(case):
            elapsed, wall, peak = timed(case)
            if elapsed > TIME_LIMIT_S:  # measure once more before calling it slow
                elapsed = min(elapsed, timed(case)[0])
            stats["count"] += 1
            stats["max_time_s"] = max(stats["max_time_s"], elapsed)
            stats["max_wall_s"] = max(stats["max_wall_s"], wall)
            stats["max_memory_mb"] = max(stats["max_memory_mb"], peak / 2**20)
            assert elapsed <= TIME_LIMIT_S, f"{name}: one case took {elapsed:.2f} s of CPU (limit {TIME_LIMIT_S} s)"
            assert peak <= MEMORY_LIMIT_MB * 2**20, f"{name}: one case allocated {peak / 2**20:.0f} MB"

        check()
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=35_000, help="generated inputs per target")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EXAMPLES} inputs per target (CI)")
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    parser.add_argument("--mutations", type=int, default=None, metavar="N",
                        help="instead: N mutated inputs over all targets (the benchmark run: 1000000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutation mode")
    parser.add_argument("--out", default=None, help="mutation mode: also write the figures and the machine to this JSON")
    args = parser.parse_args(argv)
    if args.mutations is not None:
        result = mutation_fuzz(args.mutations, args.seed)
        if args.out:
            sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py lives beside this script
            from harness import machine

            record = {"benchmark": "fuzz_parsers --mutations", "seed": args.seed, "inputs": result["inputs"],
                      "per_target": result["per_target"], "foreign_exceptions": sum(result["foreign"].values()),
                      "foreign_by_kind": result["foreign"], "wall_s": round(result["wall_s"], 1),
                      "machine": machine()}
            Path(args.out).write_text(json.dumps(record, indent=2, default=str) + "\n")
        per_target = "  ".join(f"{name} {count}" for name, count in result["per_target"].items())
        print(f"mutation  inputs {result['inputs']:9d} ({per_target})  foreign exceptions "
              f"{sum(result['foreign'].values())}  wall {result['wall_s']:.1f} s")
        for line in result["examples"]:
            print(f"  foreign: {line}", file=sys.stderr)
        return 1 if result["foreign"] else 0
    examples = QUICK_EXAMPLES if args.quick else args.examples
    baseline = _peak_rss_mb()
    total = 0
    for name in args.targets:
        start = time.perf_counter()
        try:
            stats = fuzz_target(name, examples)
        except Exception as error:  # an escape: the traceback's notes hold the shrunk input
            traceback.print_exc()
            print(f"{name}: FAILED: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        total += stats["count"]
        print(f"{name:9s} inputs {stats['count']:7d}  max CPU time per input {stats['max_time_s'] * 1e3:7.1f} ms "
              f"(wall {stats['max_wall_s'] * 1e3:7.1f} ms)  max memory per input {stats['max_memory_mb']:6.1f} MB  "
              f"total wall {time.perf_counter() - start:7.1f} s")
    print(f"total     inputs {total:7d}  limits per input: {TIME_LIMIT_S:.0f} s CPU, {MEMORY_LIMIT_MB:.0f} MB; "
          f"process peak {_peak_rss_mb():.0f} MB (started at {baseline:.0f} MB; Hypothesis's own "
          "bookkeeping grows with the number of inputs)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
