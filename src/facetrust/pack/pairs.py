"""``facetrust data pack bin``: a list of image pairs → an InsightFace ``.bin`` pair set, as
InsightFace's ``lfw2pack.py`` makes ``lfw.bin``: a pickle of ``(list of encoded images, list of
bool)``, the two images of pair ``i`` at ``2i`` and ``2i + 1`` (:func:`facetrust.data.binset.write_bin`).

Two list formats:

* LFW ``pairs.txt`` (Huang et al. 2007; what ``lfw2pack.py`` reads through ``lfw.get_paths``): an
  optional first line ``folds pairs_per_fold``, then ``name n1 n2`` (a genuine pair) or
  ``name1 n1 name2 n2`` (an impostor pair), the image of ``name n`` being
  ``<images>/<name>/<name>_<n:04d>.<ext>``;
* a CSV of ``path1,path2,label`` (label 1/0 or true/false; a header row is recognised by its
  label field), paths relative to ``--images``.

Pairs keep the file's order, so the 10 folds of an LFW list stay the 10 folds of the set.  Each
image is read and prepared once (:class:`facetrust.pack.faces.FacePreparer`) however many
pairs it is in; a pair with a bad image is dropped under ``--on-bad-image skip`` and listed in the
report (``<out stem>.pack.json``), written together with the ``.bin``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from facetrust.data.binset import write_bin
from facetrust.data.images import BadImagePolicy
from facetrust.errors import InputError
from facetrust.io import outputs_together, write_json_atomic
from facetrust.pack.faces import IMAGE_EXTENSIONS, FacePreparer, training_digests, training_overlap

PAIR_FORMATS = ("auto", "lfw", "csv")
MAX_LIST_BYTES = 512 * 1024 * 1024  # a pair list larger than this is not a list of pairs
_TRUE, _FALSE = ("1", "true", "same", "yes"), ("0", "false", "different", "no")


def report_path(out: str | Path) -> Path:
    return Path(out).with_suffix(".pack.json")


def _read_text(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_LIST_BYTES:
            raise InputError(f"{path}: larger than {MAX_LIST_BYTES} bytes; not a pair list")
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read pair list: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _lfw_number(value: str, path: Path, line: int) -> int:
    if not value.isdigit():
        raise InputError(f"{path}: line {line}: image number {value!r} is not a non-negative integer")
    return int(value)


def read_lfw_pairs(path: Path, ext: str = "jpg") -> list[tuple[str, str, bool, int]]:
    """``(image 1, image 2, is same, line)`` of an LFW ``pairs.txt``; InputError names the line."""
    pairs = []
    lines = _read_text(path).splitlines()
    for number, text in enumerate(lines, start=1):
        fields = text.split()
        if not fields:
            continue
        if number == 1 and len(fields) <= 2 and all(f.isdigit() for f in fields):
            continue  # the "folds pairs_per_fold" header line
        if len(fields) == 3:
            name, a, b = fields
            pairs.append((f"{name}/{name}_{_lfw_number(a, path, number):04d}.{ext}",
                          f"{name}/{name}_{_lfw_number(b, path, number):04d}.{ext}", True, number))
        elif len(fields) == 4:
            name1, a, name2, b = fields
            pairs.append((f"{name1}/{name1}_{_lfw_number(a, path, number):04d}.{ext}",
                          f"{name2}/{name2}_{_lfw_number(b, path, number):04d}.{ext}", False, number))
        else:
            raise InputError(f"{path}: line {number}: {len(fields)} fields; an LFW pair line has 3 "
                             "(name n1 n2: same person) or 4 (name1 n1 name2 n2: different people)")
    return pairs


def _label(value: str) -> bool | None:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def read_csv_pairs(path: Path) -> list[tuple[str, str, bool, int]]:
    """``(image 1, image 2, is same, line)`` of a CSV ``path1,path2,label``; InputError names the line."""
    pairs = []
    for number, row in enumerate(csv.reader(io.StringIO(_read_text(path))), start=1):
        if not row or all(not field.strip() for field in row):
            continue
        if len(row) != 3:
            raise InputError(f"{path}: line {number}: {len(row)} fields; expected path1,path2,label")
        same = _label(row[2])
        if same is None:
            if number == 1 and not pairs:
                continue  # a header row
            raise InputError(f"{path}: line {number}: label {row[2]!r} is not 1/0 or true/false")
        first, second = row[0].strip(), row[1].strip()
        if not first or not second:
            raise InputError(f"{path}: line {number}: an empty image path")
        pairs.append((first, second, same, number))
    return pairs


def lfw_files_found(root: Path, names: set[str]) -> dict[str, str]:
    """For each of ``names`` (``person/person_0001.jpg``) that does not exist below ``root``, the one
    image file of the same folder and stem with another image extension or case (``.JPG``,
    ``.jpeg``, ``.png``), when there is exactly one: ``{name: found name}``."""
    listings: dict[Path, dict[str, list[str]]] = {}
    found = {}
    for name in sorted(names):
        path = root / name
        if path.exists() or path.is_symlink():
            continue
        folder = path.parent
        if folder not in listings:
            by_stem: dict[str, list[str]] = {}
            if folder.is_dir():
                for entry in sorted(folder.iterdir()):
                    if entry.suffix.lower() in IMAGE_EXTENSIONS:
                        by_stem.setdefault(entry.stem, []).append(entry.name)
            listings[folder] = by_stem
        candidates = listings[folder].get(path.stem, [])
        if len(candidates) == 1:
            found[name] = (Path(name).parent / candidates[0]).as_posix()
    return found


def read_pairs(path: str | Path, fmt: str = "auto", ext: str = "jpg") -> list[tuple[str, str, bool, int]]:
    path = Path(path)
    if fmt not in PAIR_FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(PAIR_FORMATS)}")
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() == ".csv" else "lfw"
    pairs = read_csv_pairs(path) if fmt == "csv" else read_lfw_pairs(path, ext)
    if not pairs:
        raise InputError(f"{path}: no pairs")
    return pairs


def pack_bin(pairs_file: str | Path, out: str | Path, *, images: str | Path | None = None, fmt: str = "auto",
             ext: str = "jpg", align: str = "none", size=(112, 112), on_bad_image: str = "fail",
             min_score: float = 0.9, threads: int | None = 1, encoding: str = "jpg",
             training_faces: str | Path | None = None) -> dict:
    """Pack the pairs of ``pairs_file`` into the ``.bin`` file ``out`` (module docstring)."""
    pairs_file, out = Path(pairs_file), Path(out)
    root = Path(images) if images is not None else pairs_file.parent
    digests = None if training_faces is None else training_digests(training_faces)  # a bad file: before any work
    pairs = read_pairs(pairs_file, fmt, ext)
    renamed: dict[str, str] = {}
    if fmt == "lfw" or (fmt == "auto" and pairs_file.suffix.lower() != ".csv"):
        # pairs.txt names images by person and number only: one saved as .JPG, .jpeg or .png is found too
        renamed = lfw_files_found(root, {name for a, b, _, _ in pairs for name in (a, b)})
        pairs = [(renamed.get(a, a), renamed.get(b, b), same, line) for a, b, same, line in pairs]
    policy = BadImagePolicy(on_bad_image, stage="data pack", key="--on-bad-image")
    preparer = FacePreparer(align=align, size=size, min_score=min_score, threads=threads, encoding=encoding)
    names = sorted({name for a, b, _, _ in pairs for name in (a, b)})
    prepared = dict(zip(names, preparer.prepare_chunked([root / name for name in names])))
    bins, issame, skipped = [], [], []
    for first, second, same, line in pairs:
        bad = [prepared[n] for n in (first, second) if isinstance(prepared[n], InputError)]
        if bad:
            error = InputError(f"{pairs_file}: line {line}: {bad[0]}")
            policy.handle(error)
            skipped.append({"line": line, "reason": str(bad[0])})
            continue
        bins += [prepared[first].payload, prepared[second].payload]
        issame.append(same)
    if not issame:
        raise InputError(f"{pairs_file}: every pair was skipped ({len(skipped)}): nothing to pack")
    report = {"kind": "bin", "source": str(pairs_file), "images": str(root), "align": align,
              "size": list(preparer.size), "encoding": encoding,
              "n_pairs": len(issame), "n_genuine": int(sum(issame)),
              "n_images": len(names), "made": dict(sorted(preparer.counts.items())),
              "found_with_another_extension": len(renamed), **policy.summary(), "skipped_pairs": skipped}
    # an LFW pairs.txt names people (name/name_0001.jpg); a CSV's first folder is taken as the person
    people = {name.split("/", 1)[0] for name in names if "/" in name}
    overlap = training_overlap(prepared, digests, training_faces, people)
    if overlap is not None:
        report["in_training_set"] = overlap
    with outputs_together(out, report_path(out)):
        write_bin(out, bins, issame)
        write_json_atomic(report_path(out), report)
    policy.log_total()
    return report
