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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facetrust.errors import InputError

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
    """

    name: str
    images: np.ndarray
    template_ids: np.ndarray
    media_ids: np.ndarray
    landmarks: np.ndarray
    detector_scores: np.ndarray
    pairs: np.ndarray
    labels: np.ndarray

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


def _first_bad_line(path: Path, kinds: list[type]) -> str:
    """Walk ``path`` and describe the first line that does not parse as ``kinds`` (slow path)."""
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if len(fields) != len(kinds):
                return f"line {lineno}: expected {len(kinds)} fields, found {len(fields)}"
            for col, (kind, field) in enumerate(zip(kinds, fields), start=1):
                if kind is str:
                    continue
                try:
                    kind(field)
                except ValueError:
                    return f"line {lineno}, column {col}: {field!r} is not {kind.__name__}"
    return "unparseable content"


def _parse(path: Path, kinds: list[type], sep: str) -> pd.DataFrame | None:
    """The table parsed with ``sep``, or None when it does not parse cleanly into ``kinds``."""
    dtypes = {i: (object if k is str else (np.int64 if k is int else np.float64)) for i, k in enumerate(kinds)}
    try:
        table = pd.read_csv(path, sep=sep, header=None, dtype=dtypes, engine="c")
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file is empty") from None
    except (ValueError, pd.errors.ParserError):
        return None
    if table.shape[1] != len(kinds) or table.isna().to_numpy().any():
        return None
    return table


def _read_table(path: Path, kinds: list[type]) -> pd.DataFrame:
    """Read a headerless whitespace-separated table whose columns have the given Python types."""
    if not path.is_file():
        raise InputError(f"{path}: protocol file not found")
    # The release separates fields by one space, which the C parser reads twice as fast as any
    # whitespace (sep=r"\s+"); the latter is the fallback for hand-edited files.
    for sep in (" ", r"\s+"):
        table = _parse(path, kinds, sep)
        if table is not None:
            return table
    raise InputError(f"{path}: {_first_bad_line(path, kinds)}")


def _check_unique(path: Path, names: np.ndarray) -> None:
    dup = pd.Index(names).duplicated()
    if dup.any():
        line = int(np.flatnonzero(dup)[0]) + 1
        raise InputError(f"{path}: line {line}: image {str(names[line - 1])!r} listed twice")


def read_ijb_protocol(ijb_dir: str | Path, name: str | None = None) -> IJBProtocol:
    """Read the three meta files of protocol ``name`` (``"ijbc"``, ``"ijbb"``) under ``ijb_dir``.

    Raises :class:`InputError` naming the file and line for a missing file, a wrong field count,
    a non-numeric field, an image listed in one image file and not the other, a duplicated image,
    a label other than 0/1, or a pair whose template has no image.
    """
    ijb_dir = Path(ijb_dir)
    name = name or find_protocol_name(ijb_dir)
    meta = ijb_dir / "meta"
    tid_path = meta / FACE_TID_MID.format(name=name)
    pts_path = meta / NAME_5PTS_SCORE.format(name=name)
    pair_path = meta / TEMPLATE_PAIR_LABEL.format(name=name)

    tid = _read_table(tid_path, [str, int, int])
    pts = _read_table(pts_path, [str] + [float] * 11)
    pair = _read_table(pair_path, [int, int, int])

    images = tid[0].to_numpy().astype(str)
    pts_images = pts[0].to_numpy().astype(str)
    _check_unique(tid_path, images)
    _check_unique(pts_path, pts_images)

    # The release lists both image files in the same order; join by name so that a reordered
    # file still works, and name the first image that one file has and the other lacks.
    if images.shape == pts_images.shape and np.array_equal(images, pts_images):
        order = np.arange(images.size)
    else:
        order = pd.Index(pts_images).get_indexer(images)
        if (order < 0).any():
            line = int(np.flatnonzero(order < 0)[0]) + 1
            raise InputError(f"{tid_path}: line {line}: image {str(images[line - 1])!r} is not in {pts_path.name}")
        if pts_images.size != images.size:
            extra = ~pd.Index(pts_images).isin(images)
            line = int(np.flatnonzero(extra)[0]) + 1
            raise InputError(f"{pts_path}: line {line}: image {str(pts_images[line - 1])!r} is not in {tid_path.name}")

    values = pts.iloc[:, 1:].to_numpy(dtype=np.float64)[order]
    landmarks = values[:, :10].reshape(-1, 5, 2).astype(np.float32)
    detector_scores = values[:, 10].astype(np.float32)
    template_ids = tid[1].to_numpy(dtype=np.int64)
    media_ids = tid[2].to_numpy(dtype=np.int64)

    pairs = pair[[0, 1]].to_numpy(dtype=np.int64)
    labels = pair[2].to_numpy(dtype=np.int64)
    bad_label = (labels != 0) & (labels != 1)
    if bad_label.any():
        line = int(np.flatnonzero(bad_label)[0]) + 1
        raise InputError(f"{pair_path}: line {line}: label {labels[line - 1]} is not 0 or 1")
    known = np.unique(template_ids)
    missing = ~(np.isin(pairs[:, 0], known) & np.isin(pairs[:, 1], known))
    if missing.any():
        line = int(np.flatnonzero(missing)[0]) + 1
        t1, t2 = pairs[line - 1]
        absent = t1 if t1 not in known else t2
        raise InputError(f"{pair_path}: line {line}: template {absent} has no image in {tid_path.name}")

    return IJBProtocol(
        name=name,
        images=images,
        template_ids=template_ids,
        media_ids=media_ids,
        landmarks=landmarks,
        detector_scores=detector_scores,
        pairs=pairs,
        labels=labels.astype(np.int8),
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
