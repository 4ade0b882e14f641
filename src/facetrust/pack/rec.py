"""``facetrust data pack rec``: an ImageFolder tree → an InsightFace training set (``train.rec``,
``train.idx``, ``property``), what MXNet's ``im2rec.py`` and InsightFace's ``face2rec2.py`` make.

Written into one staging directory that replaces ``out`` when everything is written
(:func:`facetrust.io.staged_directory`), so the set appears whole or not at all:

* ``train.rec`` / ``train.idx`` / ``property``: :func:`facetrust.data.insightface.write_insightface_dataset`
  (record 0 = header with the image and identity key ranges, images keyed 1..N with
  ``IRHeader(0, label, key, 0)``, one identity record per class);
* ``train.lst``: im2rec's list file, ``key \\t label \\t relative path`` with the label printed as
  ``%f`` (``im2rec.py`` ``write_list``), one line per packed image in key order; ``im2rec.py
  --pass-through`` run on it writes the same image records;
* ``faces.csv``: per packed image its key, path, label, how it was made and, with MTCNN, the
  detector score, the five landmarks in the source image, how many faces MTCNN found in it
  (more than one: the subject rule chose one, and the log says how many images had several) and
  the source file's SHA-256 (what ``data pack bin|ijb --training-faces`` checks test images against);
* ``pack.json``: the settings, counts, classes, every skipped file with its reason, the files
  that are not images (``unsupported_files``) and the groups of byte-identical files
  (``duplicate_images``, with ``across_identities`` when one file sits under two identities).

Labels are indices of the sorted identity folders (:func:`facetrust.pack.faces.list_image_folder`),
fixed before any image is read, so skipping an image never renumbers the classes; a class whose
images were all skipped keeps an empty identity range.  Unlike ``im2rec --recursive``, which makes
every folder that holds images a class, nested folders belong to their top-level identity (the
ImageFolder convention).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from facetrust.data.images import BadImagePolicy
from facetrust.data.insightface import write_insightface_dataset
from facetrust.errors import InputError
from facetrust.io import staged_directory, write_json_atomic, write_text_atomic
from facetrust.pack.faces import CHUNK, IMAGE_EXTENSIONS, FacePreparer

LST_NAME, FACES_NAME, REPORT_NAME = "train.lst", "faces.csv", "pack.json"
log = logging.getLogger("facetrust.data")


def lst_line(key: int, label: int, path: str) -> str:
    """One line of an im2rec ``.lst`` file (``write_list``: ``'%d\\t' % index``, ``'%f\\t' % label``, path)."""
    if "\t" in path or "\n" in path:
        raise InputError(f"{path!r}: a tab or newline in a file name cannot be written to a .lst file")
    return "%d\t%f\t%s\n" % (key, float(label), path)


def face_row(key: int, path: str, label: int, face) -> list:
    # repr: the shortest text that reads back as the same float64, so the crop can be remade exactly
    points = [] if face.landmarks is None else [repr(float(v)) for v in face.landmarks.ravel()]
    return [key, path, label, face.how, f"{face.score:.6f}", *(points or [""] * 10),
            "" if face.faces_found is None else face.faces_found, face.source_sha256]


FACE_COLUMNS = ["key", "path", "label", "how", "score",
                *[f"{axis}{i}" for i in range(1, 6) for axis in ("x", "y")], "faces_found", "sha256"]


def duplicate_groups(digests: dict[str, list[tuple[str, int | None]]]) -> list[dict]:
    """The groups of byte-identical source files among ``digests`` (SHA-256 → ``[(path, label)]``),
    in the order first seen: ``{"sha256", "paths", "across_identities"}`` (labels None: not
    checked)."""
    groups = []
    for digest, members in digests.items():
        if len(members) > 1:
            labels = {label for _, label in members if label is not None}
            groups.append({"sha256": digest, "paths": [path for path, _ in members],
                           "across_identities": len(labels) > 1})
    return groups


def log_duplicates(groups: list[dict], root) -> None:
    if not groups:
        return
    across = [group for group in groups if group["across_identities"]]
    log.warning("data pack: %d groups of byte-identical image files in %s (%d under more than one identity; "
                "e.g. %s): listed in pack.json duplicate_images", len(groups), root, len(across),
                " = ".join((across or groups)[0]["paths"][:3]))


def pack_rec(root: str | Path, out_dir: str | Path, *, align: str = "none", size=(112, 112),
             on_bad_image: str = "fail", min_score: float = 0.9, threads: int | None = 1,
             encoding: str = "jpg") -> dict:
    """Pack the ImageFolder tree ``root`` into ``out_dir`` (module docstring); returns the report."""
    from facetrust.pack.faces import list_image_folder

    root, out_dir = Path(root), Path(out_dir)
    classes, images, ignored, unsupported = list_image_folder(root)
    if not images:
        raise InputError(f"{root}: no image files ({' '.join(IMAGE_EXTENSIONS)}) below the identity subfolders")
    policy = BadImagePolicy(on_bad_image, stage="data pack", key="--on-bad-image")
    preparer = FacePreparer(align=align, size=size, min_score=min_score, threads=threads, encoding=encoding)
    skipped: list[dict] = []
    lst, faces = io.StringIO(), io.StringIO()
    face_writer = csv.writer(faces, lineterminator="\n")
    face_writer.writerow(FACE_COLUMNS)
    per_class = [0] * len(classes)
    digests: dict[str, list[tuple[str, int]]] = {}
    several_faces = [0]  # packed images in which MTCNN found more than one face

    def samples():
        key = 1
        for start in range(0, len(images), CHUNK):
            chunk = images[start:start + CHUNK]
            for (path, label), face in zip(chunk, preparer.prepare_many([root / p for p, _ in chunk])):
                if isinstance(face, InputError):
                    policy.handle(face)
                    skipped.append({"path": path, "reason": str(face)})
                    continue
                lst.write(lst_line(key, label, path))
                face_writer.writerow(face_row(key, path, label, face))
                digests.setdefault(face.source_sha256, []).append((path, label))
                several_faces[0] += (face.faces_found or 1) > 1
                per_class[label] += 1
                key += 1
                yield label, face.payload

    with staged_directory(out_dir) as staging:
        summary = write_insightface_dataset(staging, samples(), len(classes), preparer.size)
        if summary["num_images"] == 0:
            raise InputError(f"{root}: every image was skipped ({len(skipped)}): nothing to pack")
        write_text_atomic(staging / LST_NAME, lst.getvalue())
        write_text_atomic(staging / FACES_NAME, faces.getvalue())
        report = {
            "kind": "rec", "source": str(root), "align": align, "size": list(preparer.size), "encoding": encoding,
            "num_images": summary["num_images"], "num_classes": summary["num_classes"],
            "header": list(summary["header"]), "classes": classes, "images_per_class": per_class,
            "empty_classes": [name for name, n in zip(classes, per_class) if n == 0],
            "made": dict(sorted(preparer.counts.items())), "ignored_files": ignored,
            "unsupported_files": unsupported, **policy.summary(), "skipped_images": skipped,
            "duplicate_images": duplicate_groups(digests),
        }
        write_json_atomic(staging / REPORT_NAME, report)
    policy.log_total()
    if ignored:
        log.warning("data pack: %d image files directly in %s belong to no identity folder and were left out",
                    len(ignored), root)
    if unsupported:
        log.warning("data pack: %d files below %s are not images (%s) and were left out, e.g. %s: listed in "
                    "pack.json unsupported_files", len(unsupported), root, " ".join(IMAGE_EXTENSIONS),
                    ", ".join(unsupported[:3]))
    multi = several_faces[0]
    if multi:
        log.warning("data pack: MTCNN found more than one face in %d packed images; the subject rule chose one "
                    "(faces.csv faces_found)", multi)
    log_duplicates(report["duplicate_images"], root)
    return report
