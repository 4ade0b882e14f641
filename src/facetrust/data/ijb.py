"""IJB-B / IJB-C 1:1 verification protocol reader.

The release layout (docs/FORMATS.md "IJB-B/C"), all space separated, no header:

- ``meta/<name>_face_tid_mid.txt``        ``image template_id media_id``
- ``meta/<name>_name_5pts_score.txt``     ``image x1 y1 … x5 y5 detector_score``
  (left eye, right eye, nose, left mouth, right mouth, absolute pixel coordinates)
- ``meta/<name>_template_pair_label.txt`` ``template_id_1 template_id_2 label`` (1 = genuine)

Parsing is vectorised through the pandas C parser, so IJB-C (469,375 images, 15,658,489 pairs)
reads in seconds.  Only when the fast path rejects a file do we walk it line by line, to name the
first bad line in the error.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from facetrust.data.images import BadImagePolicy
from facetrust.errors import ConfigError, InputError
from facetrust.input_files import check_regular, refuse_huge_exponents

if TYPE_CHECKING:  # pandas (0.2 s to import) parses the text: a protocol served from the cache never needs it
    import pandas as pd

log = logging.getLogger("facetrust.data")

FACE_TID_MID = "{name}_face_tid_mid.txt"
NAME_5PTS_SCORE = "{name}_name_5pts_score.txt"
TEMPLATE_PAIR_LABEL = "{name}_template_pair_label.txt"


@dataclass(frozen=True)
class IJBProtocol:
    """One IJB 1:1 protocol, rows aligned with ``face_tid_mid.txt``.

    images: (N,) str, names relative to ``loose_crop/`` (e.g. ``"1.jpg"``).
    template_ids, media_ids: (N,) int64.
    landmarks: (N, 5, 2) float32 absolute (x, y); detector_scores: (N,) float32.
    pairs: (P, 2) int64 template ids; labels: (P,) int8, 1 = genuine.
    landmark_lines: (N,) int64, the line of each image in ``name_5pts_score.txt`` (for messages).
    skipped: the images left out under ``on_bad_image: skip`` (each logged with its reason).
    duplicate_pairs: repeated pairs left out under ``duplicate_pairs="drop"`` (0 otherwise).
    cache_key: the decoded-protocol cache entry these arrays are (:mod:`facetrust.data.ijb_cache`), None
    when parsed without the cache; what a derived cache (``evaluate.score_plan_cache``) is keyed by.
    """

    name: str
    images: np.ndarray
    template_ids: np.ndarray
    media_ids: np.ndarray
    landmarks: np.ndarray
    detector_scores: np.ndarray
    pairs: np.ndarray
    labels: np.ndarray
    landmark_lines: np.ndarray | None = None
    skipped: tuple[str, ...] = ()
    duplicate_pairs: int = 0
    cache_key: str | None = dataclass_field(default=None, compare=False)

    @property
    def n_templates(self) -> int:
        return int(np.unique(self.template_ids).size)


def find_protocol_name(ijb_dir: str | Path) -> str:
    """Return ``<name>`` when ``ijb_dir/meta`` holds exactly one ``<name>_face_tid_mid.txt``."""
    meta = Path(ijb_dir) / "meta"
    found = sorted(p.name[: -len("_face_tid_mid.txt")] for p in meta.glob("*_face_tid_mid.txt"))
    if len(found) != 1:
        raise InputError(
            f"{meta}: expected exactly one *_face_tid_mid.txt to infer the protocol name, "
            f"found {found or 'none'}; pass the name explicitly"
        )
    return found[0]


_INT64 = np.iinfo(np.int64)
_NON_FINITE = ("nan", "inf", "infinity")


def _field_problem(kind: type, field: str) -> str | None:
    """Why ``field`` is not a value of ``kind`` as the fast parser reads it, or None."""
    if kind is str:
        return None
    # Python's int()/float() accept what the C parser does not: "1_000", non-ASCII digits.
    if not field.isascii() or "_" in field:
        return f"{field[:40]!r} is not {kind.__name__}"
    try:
        value = kind(field)
    except ValueError:
        return f"{field[:40]!r} is not {kind.__name__}"
    if kind is int and not _INT64.min <= value <= _INT64.max:
        return f"{field[:40]!r} is outside the 64-bit integer range"
    # "nan"/"inf" are read (the row is then judged by the on_bad_image policy); "1e400" is not
    if kind is float and not np.isfinite(value) and field.lower().lstrip("+-") not in _NON_FINITE:
        return f"{field[:40]!r} overflows a 64-bit float"
    return None


def _first_bad_line(path: Path, kinds: list[type], parser_error: str) -> str:
    """Walk ``path`` and describe the first line that does not parse as ``kinds`` (slow path)."""
    for lineno, raw in enumerate(_raw_lines(path), start=1):
        try:
            fields = raw.decode("utf-8").split()
        except UnicodeDecodeError as exc:
            return f"line {lineno}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        if not fields:
            continue
        if len(fields) != len(kinds):
            return f"line {lineno}: expected {len(kinds)} fields, found {len(fields)}"
        for col, (kind, field) in enumerate(zip(kinds, fields), start=1):
            problem = _field_problem(kind, field)
            if problem:
                return f"line {lineno}, column {col}: {problem}"
    return f"not a table of {len(kinds)} space-separated columns ({parser_error})"


def _parse(path: Path, kinds: list[type], sep: str) -> tuple[pd.DataFrame | None, str]:
    """``(table, "")`` when ``path`` parses cleanly into ``kinds`` with ``sep`` (ints within
    int64, floats possibly NaN or infinite), else ``(None, why the parser refused it)``."""
    import pandas as pd

    dtypes = {i: (object if k is str else (np.int64 if k is int else np.float64)) for i, k in enumerate(kinds)}
    # Only "nan" in a float column is NaN (pandas reads "inf" itself); an image named "NA" or
    # '"x.jpg' is a name, neither a missing value nor a quote.
    nan_words = {i: ["nan", "NaN", "NAN", "-nan", "+nan"] for i, k in enumerate(kinds) if k is float}
    try:
        # pandas tries an int column through float first: "inf" warns before it is refused
        with np.errstate(invalid="ignore"):
            table = pd.read_csv(path, sep=sep, header=None, dtype=dtypes, engine="c", quoting=csv.QUOTE_NONE,
                                keep_default_na=False, na_values=nan_words or None, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file is empty") from None
    except (ValueError, OverflowError, TypeError, pd.errors.ParserError) as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:200]}"
    if table.shape[1] != len(kinds):
        return None, f"{table.shape[1]} columns"
    for i, kind in enumerate(kinds):
        column = table[i]
        if kind is int and column.dtype != np.int64:
            return None, f"column {i + 1} is not 64-bit integers"
        if kind is float and column.dtype != np.float64:
            return None, f"column {i + 1} is not numbers"
        if kind is str and not all(isinstance(v, str) for v in column):
            return None, f"column {i + 1} is not text"
    return table, ""


def _read_table(path: Path, kinds: list[type]) -> pd.DataFrame:
    """Read a headerless whitespace-separated table whose columns have the given Python types."""
    if not path.exists():
        raise InputError(f"{path}: protocol file not found")
    check_regular(path, "protocol file")  # a FIFO would block the parser
    refuse_huge_exponents(path)
    # The release separates fields by one space, which the C parser reads twice as fast as any
    # whitespace (sep=r"\s+"); the latter is the fallback for hand-edited files.
    parser_error = ""
    for sep in (" ", r"\s+"):
        table, parser_error = _parse(path, kinds, sep)
        if table is not None:
            return table
    raise InputError(f"{path}: {_first_bad_line(path, kinds, parser_error)}")


def _raw_lines(path: Path) -> list[bytes]:
    """The lines of ``path`` ended by ``\\n``, ``\\r\\n`` or a lone ``\\r`` alike (as the table parser
    reads them; bytes.splitlines splits at exactly these three)."""
    return Path(path).read_bytes().splitlines()


def _row_lines(path: Path) -> np.ndarray:
    """1-based line number of each table row (the parser skips blank lines); for error messages."""
    return np.asarray([n for n, raw in enumerate(_raw_lines(path), start=1) if raw.strip()], dtype=np.int64)


def _unsafe_name(name: str) -> bool:
    """An image name that could open a file outside ``loose_crop/``: absolute, with a ``..``
    component, a backslash or a NUL byte."""
    return (name.startswith("/") or ".." in PurePosixPath(name).parts or "\\" in name
            or "\x00" in name)


def _check_unique(path: Path, names: np.ndarray) -> None:
    import pandas as pd

    dup = pd.Index(names).duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise InputError(f"{path}: line {_row_lines(path)[row]}: image {str(names[row])!r} listed twice")


def _bad_rows(landmarks: np.ndarray, scores: np.ndarray, check_landmarks: bool = True) -> dict[int, str]:
    """Rows whose landmarks or detector score cannot be used, and why (row -> reason); landmarks
    only when ``check_landmarks`` (only alignment uses them)."""
    reasons: dict[int, str] = {}
    if check_landmarks:
        finite = np.isfinite(landmarks).all(axis=(1, 2))
        for row in np.flatnonzero(~finite):
            reasons[int(row)] = "landmarks are not finite numbers"
        with np.errstate(invalid="ignore", over="ignore"):
            spread = ((landmarks - landmarks.mean(axis=1, keepdims=True)) ** 2).sum(axis=(1, 2))
        for row in np.flatnonzero(finite & ~(spread > 1e-12)):
            reasons[int(row)] = "landmarks are degenerate (all five points coincide)"
    # D1 weighting multiplies each feature by its score: 0 erases it, a negative score flips it
    for row in np.flatnonzero(~(np.isfinite(scores) & (scores > 0))):
        reasons.setdefault(int(row), f"detector score {float(scores[row])!r} is not a positive finite number")
    return reasons


def _join_order(tid_path: Path, pts_path: Path, images: np.ndarray, pts_images: np.ndarray) -> np.ndarray:
    """Row of ``pts`` for each image of ``tid`` (the release lists both in the same order; a
    reordered file is joined by name).  InputError names the first image one file lacks."""
    import pandas as pd

    if images.shape == pts_images.shape and np.array_equal(images, pts_images):
        return np.arange(images.size)
    order = pd.Index(pts_images).get_indexer(images)
    if (order < 0).any():
        row = int(np.flatnonzero(order < 0)[0])
        raise InputError(f"{tid_path}: line {_row_lines(tid_path)[row]}: image {str(images[row])!r} "
                         f"is not in {pts_path.name}")
    if pts_images.size != images.size:
        row = int(np.flatnonzero(~pd.Index(pts_images).isin(images))[0])
        raise InputError(f"{pts_path}: line {_row_lines(pts_path)[row]}: image {str(pts_images[row])!r} "
                         f"is not in {tid_path.name}")
    return order


def _check_names(path: Path, names: np.ndarray) -> None:
    """Refuse image names that would open files outside ``loose_crop/`` (never a policy skip)."""
    for row, image in enumerate(names):
        if _unsafe_name(image):
            raise InputError(f"{path}: line {_row_lines(path)[row]}: image name {image[:80]!r} is absolute "
                             "or leaves loose_crop/ ('..', '\\', NUL): refused")


def _pairs_with_images(pair_path: Path, tid_path: Path, pair: pd.DataFrame, all_templates: np.ndarray,
                       kept_templates: np.ndarray, policy: BadImagePolicy) -> tuple[np.ndarray, np.ndarray]:
    """``(pairs, labels)``; a pair whose template has no image in the file is an error, one whose
    template lost all its images to skipped rows is dropped (and counted)."""
    pairs = pair[[0, 1]].to_numpy(dtype=np.int64)
    labels = pair[2].to_numpy(dtype=np.int64)
    bad_label = (labels != 0) & (labels != 1)
    if bad_label.any():
        row = int(np.flatnonzero(bad_label)[0])
        raise InputError(f"{pair_path}: line {_row_lines(pair_path)[row]}: label {labels[row]} is not 0 or 1")
    missing = ~(np.isin(pairs[:, 0], all_templates) & np.isin(pairs[:, 1], all_templates))
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        t1, t2 = pairs[row]
        absent = t1 if t1 not in all_templates else t2
        raise InputError(f"{pair_path}: line {_row_lines(pair_path)[row]}: template {absent} has no image "
                         f"in {tid_path.name}")
    emptied = ~(np.isin(pairs[:, 0], kept_templates) & np.isin(pairs[:, 1], kept_templates))
    if emptied.any():
        for template in np.setdiff1d(all_templates, kept_templates):
            count = int(((pairs[:, 0] == template) | (pairs[:, 1] == template)).sum())
            policy.handle(InputError(f"{pair_path}: template {template} has no image left after skipping; "
                                     f"its {count} pairs are left out"))
        pairs, labels = pairs[~emptied], labels[~emptied]
    return pairs, labels


DUPLICATE_PAIRS = ("error", "drop")


def _repeated_pairs(pair_path: Path, pairs: np.ndarray, policy: str, lines: np.ndarray | None = None) -> np.ndarray:
    """Mask of the rows of ``pairs`` (P, 2) that repeat an earlier pair (t1, t2), in the same order
    (a reversed pair is a different comparison to the protocol: its file lines are kept as given).

    A repeated pair counts twice in every TAR and FAR (3 M repeats moved TAR@FAR=1e-1 from 0.29 to
    0.79), so under ``"error"`` the first repeat is an error naming its line (``lines``: the file
    line of each row); ``"drop"`` returns the mask (each pair's first line is kept)."""
    import pandas as pd

    if policy not in DUPLICATE_PAIRS:
        raise ConfigError(f"duplicate pairs: {policy!r} is not one of {', '.join(DUPLICATE_PAIRS)}")
    low, high = pairs[:, 0], pairs[:, 1]
    repeated = pd.MultiIndex.from_arrays([low, high]).duplicated(keep="first")
    if repeated.any() and policy == "error":
        row = int(np.flatnonzero(repeated)[0])
        original = int(np.flatnonzero((low == low[row]) & (high == high[row]))[0])
        lines = _row_lines(pair_path) if lines is None else lines
        raise InputError(f"{pair_path}: line {lines[row]}: pair ({pairs[row, 0]}, {pairs[row, 1]}) repeats line "
                         f"{lines[original]} ({int(repeated.sum())} repeated pairs; evaluate --duplicate-pairs drop "
                         "leaves them out and counts them)")
    return repeated


def read_ijb_protocol(ijb_dir: str | Path, name: str | None = None, on_bad_image: str = "fail", *,
                      cache: bool = True, check_landmarks: bool = True,
                      duplicate_pairs: str = "error") -> IJBProtocol:
    """Read the three meta files of protocol ``name`` (``"ijbc"``, ``"ijbb"``) under ``ijb_dir``.

    Raises :class:`InputError` naming the file and line for a missing file, a wrong field count,
    a non-numeric or out-of-range field, text that is not UTF-8, an image name that is absolute
    or contains ``..``, an image listed in one image file and not the other, a duplicated image,
    a label other than 0/1, or a pair whose template has no image.
    A row with unusable landmarks (NaN, infinite, all five points equal) or detector score (not
    positive and finite) is an error under ``on_bad_image="fail"``; under ``"skip"`` the image is
    left out, logged and listed in ``skipped``, and so are the pairs of a template left empty.
    ``check_landmarks=False``: landmarks are read but not judged (a stage that does not align, such
    as evaluation, must not refuse a protocol for points it never uses).
    ``duplicate_pairs``: a pair (t1, t2) listed twice is an error (``"error"``),
    or every repeat is left out and counted in :attr:`IJBProtocol.duplicate_pairs` (``"drop"``).
    ``cache``: under ``on_bad_image="fail"`` a large protocol that passed every check is served
    from (and stored into) the decoded-protocol cache (:func:`facetrust.data.ijb_cache.cached_protocol`,
    keyed by the files' content); the result is the same either way.
    """
    ijb_dir = Path(ijb_dir)
    name = name or find_protocol_name(ijb_dir)
    policy = BadImagePolicy(on_bad_image, stage=f"IJB protocol {name}")
    meta = ijb_dir / "meta"
    paths = tuple(meta / pattern.format(name=name) for pattern in (FACE_TID_MID, NAME_5PTS_SCORE, TEMPLATE_PAIR_LABEL))
    if cache and on_bad_image == "fail" and duplicate_pairs == "error" and all(path.is_file() for path in paths):
        from facetrust.data.ijb_cache import cached_protocol

        return cached_protocol(paths, name, lambda: _parse_protocol(name, *paths, policy, check_landmarks),
                               IJBProtocol, "" if check_landmarks else "|no-landmark-checks")
    return _parse_protocol(name, *paths, policy, check_landmarks, duplicate_pairs)


def _parse_protocol(name: str, tid_path: Path, pts_path: Path, pair_path: Path, policy: BadImagePolicy,
                    check_landmarks: bool = True, duplicate_pairs: str = "error") -> IJBProtocol:
    """Parse and check the three text files (see :func:`read_ijb_protocol`)."""
    tid = _read_table(tid_path, [str, int, int])
    pts = _read_table(pts_path, [str] + [float] * 11)
    pair = _read_table(pair_path, [int, int, int])

    images = tid[0].to_numpy().astype(str)
    pts_images = pts[0].to_numpy().astype(str)
    _check_names(tid_path, images)
    _check_names(pts_path, pts_images)
    _check_unique(tid_path, images)
    _check_unique(pts_path, pts_images)
    order = _join_order(tid_path, pts_path, images, pts_images)

    # float32 as stored downstream, so a value that overflows it (1e300) is caught as infinite
    values = pts.iloc[:, 1:].to_numpy(dtype=np.float64)[order]
    with np.errstate(over="ignore"):
        landmarks = values[:, :10].reshape(-1, 5, 2).astype(np.float32)
        detector_scores = values[:, 10].astype(np.float32)
    template_ids = tid[1].to_numpy(dtype=np.int64)
    media_ids = tid[2].to_numpy(dtype=np.int64)
    landmark_lines = _row_lines(pts_path)[order]

    keep = np.ones(images.size, dtype=bool)
    for row, reason in sorted(_bad_rows(landmarks, detector_scores, check_landmarks).items()):
        policy.handle(InputError(f"{pts_path}: line {landmark_lines[row]}: image {str(images[row])!r}: {reason}"))
        keep[row] = False
    if duplicate_pairs == "error":  # checked on the file's rows, so the message names the right lines
        _repeated_pairs(pair_path, pair[[0, 1]].to_numpy(dtype=np.int64), "error")
    pairs, labels = _pairs_with_images(pair_path, tid_path, pair, np.unique(template_ids),
                                       np.unique(template_ids[keep]), policy)
    duplicates = 0
    if duplicate_pairs != "error":
        repeated = _repeated_pairs(pair_path, pairs, duplicate_pairs)
        duplicates = int(repeated.sum())
        if duplicates:
            log.warning("%s: %d repeated pairs left out (duplicate pairs: drop)", pair_path, duplicates)
            pairs, labels = pairs[~repeated], labels[~repeated]
    policy.log_total()
    return IJBProtocol(
        name=name,
        images=images[keep],
        template_ids=template_ids[keep],
        media_ids=media_ids[keep],
        landmarks=landmarks[keep],
        detector_scores=detector_scores[keep],
        pairs=pairs,
        labels=labels.astype(np.int8),
        landmark_lines=landmark_lines[keep],
        skipped=tuple(images[~keep].tolist()),
        duplicate_pairs=duplicates,
    )


TEMPLATE_IDENTITY = "{name}_template_identity.txt"


def read_template_identities(ijb_dir: str | Path, name: str) -> dict[int, int] | None:
    """``{template id: subject id}`` from ``meta/<name>_template_identity.txt`` (two integer columns),
    or None when the set has no such file (the public IJB-B/C 1:1 meta files do not; the synthetic
    benchmark writes it).  InputError names the file and line of a malformed row."""
    path = Path(ijb_dir) / "meta" / TEMPLATE_IDENTITY.format(name=name)
    if not path.is_file():
        return None
    table = _read_table(path, [int, int])
    return dict(zip(table[0].to_numpy(dtype=np.int64).tolist(), table[1].to_numpy(dtype=np.int64).tolist()))
