"""``facetrust data pack ijb``: a folder of images + a CSV ``image,subject[,media]`` → an IJB-style
1:1 verification set (docs/FORMATS.md "IJB-B/C"), the layout ``facetrust align`` and
``evaluate ijb`` read:

* ``loose_crop/<n><ext>``: each image's file, byte for byte, numbered 1.. in template order;
* ``meta/<name>_face_tid_mid.txt``: ``image template media``;
* ``meta/<name>_name_5pts_score.txt``: ``image x1 y1 … x5 y5 score``: MTCNN's five points and
  score (``--align mtcnn``) or, for images that are aligned crops already (``--align none``), the
  ArcFace template at the image's size with score 1;
* ``meta/<name>_template_pair_label.txt``: ``template1 template2 label``;
* ``meta/<name>_template_identity.txt``: ``template subject`` (subjects numbered 1.. in sorted
  name order), what the subject bootstrap reads;
* ``pack.json``: settings, counts, subjects, each loose crop's source file, the skipped images.

Templates: IJB templates are sets of media of one subject.  A subject's media (the ``media``
column; without it every image is its own media), sorted, are dealt round-robin into
``templates_per_subject`` templates (fewer when the subject has fewer media).  Pairs: every two
templates of one subject are a genuine pair; impostor pairs are drawn uniformly without replacement
among template pairs of different subjects with a generator seeded by ``seed``
(``numpy.random.default_rng``), as many as asked (default: 10 per genuine pair, at most all).
The directory is written in a staging directory that replaces ``out`` at the end (all or nothing).
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path, PurePosixPath

import numpy as np

from facetrust.data.images import BadImagePolicy
from facetrust.errors import InputError
from facetrust.io import staged_directory, write_json_atomic, write_text_atomic
from facetrust.pack.faces import IMAGE_EXTENSIONS, FacePreparer, training_digests, training_overlap

MAX_CSV_BYTES = 512 * 1024 * 1024
IMPOSTORS_PER_GENUINE = 10


def read_subjects(path: Path) -> list[dict]:
    """Rows ``{"image", "subject", "media", "line"}`` of the subjects CSV (header ``image,subject[,media]``)."""
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise InputError(f"{path}: larger than {MAX_CSV_BYTES} bytes; not a subjects list")
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read subjects CSV: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if "image" not in header or "subject" not in header:
        raise InputError(f"{path}: line 1: header {header} must name the columns image and subject (and optionally media)")
    column = {name: header.index(name) for name in ("image", "subject", "media") if name in header}
    rows, seen = [], {}
    for number, row in enumerate(reader, start=2):
        if not row or all(not field.strip() for field in row):
            continue
        if len(row) != len(header):
            raise InputError(f"{path}: line {number}: {len(row)} fields for the {len(header)} columns of the header")
        image, subject = row[column["image"]].strip(), row[column["subject"]].strip()
        media = row[column["media"]].strip() if "media" in column else image
        if not image or not subject or not media:
            raise InputError(f"{path}: line {number}: an empty image, subject or media field")
        if image in seen:
            raise InputError(f"{path}: line {number}: image {image!r} listed twice (first on line {seen[image]})")
        if image.startswith("/") or ".." in PurePosixPath(image).parts:
            raise InputError(f"{path}: line {number}: image {image!r} must be a path inside --images")
        seen[image] = number
        rows.append({"image": image, "subject": subject, "media": media, "line": number})
    if not rows:
        raise InputError(f"{path}: no image rows")
    return rows


def plan_templates(rows: list[dict], templates_per_subject: int) -> list[dict]:
    """Give each row ``subject_id``, ``template`` and ``media_id`` (module docstring); rows come back
    in template, media, image order."""
    subjects = sorted({row["subject"] for row in rows})
    template = media_id = 0
    planned = []
    for subject_id, subject in enumerate(subjects, start=1):
        mine = [row for row in rows if row["subject"] == subject]
        media = sorted({row["media"] for row in mine})
        count = min(templates_per_subject, len(media))
        media_of = {m: (template + 1 + i % count, media_id + 1 + i) for i, m in enumerate(media)}
        for row in sorted(mine, key=lambda r: (media_of[r["media"]], r["image"])):
            planned.append({**row, "subject_id": subject_id, "template": media_of[row["media"]][0],
                            "media_id": media_of[row["media"]][1]})
        template += count
        media_id += len(media)
    return sorted(planned, key=lambda r: (r["template"], r["media_id"], r["image"]))


def make_pairs(template_subject: dict[int, int], impostor_pairs: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Genuine pairs (all template pairs of a subject) and ``impostor_pairs`` sampled ones, sorted by template ids."""
    from facetrust.data.synthetic.writer import _impostor_template_pairs

    templates = np.asarray(sorted(template_subject), dtype=np.int64)
    subject = np.asarray([template_subject[t] for t in templates.tolist()], dtype=np.int64)
    i, j = np.triu_indices(len(templates), 1)
    genuine = subject[i] == subject[j]
    genuine_pairs = np.stack([i[genuine], j[genuine]], 1)
    available = int((~genuine).sum())
    wanted = IMPOSTORS_PER_GENUINE * len(genuine_pairs) if impostor_pairs is None else int(impostor_pairs)
    if impostor_pairs is not None and wanted > available:
        raise InputError(f"--impostor-pairs {wanted}: only {available} template pairs of different subjects exist")
    wanted = min(wanted, available)
    _, codes = np.unique(subject, return_inverse=True)
    impostor = _impostor_template_pairs(np.random.default_rng(seed), codes, wanted) if wanted else np.zeros((0, 2), np.int64)
    pairs = np.concatenate([genuine_pairs, impostor]).astype(np.int64)
    labels = np.concatenate([np.ones(len(genuine_pairs), np.int64), np.zeros(len(impostor), np.int64)])
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return templates[pairs[order]], labels[order]


def _landmarks(face, path: Path) -> tuple[np.ndarray, float]:
    if face.landmarks is not None:
        return face.landmarks, face.score
    from facetrust.align.warp import arcface_template

    try:  # an aligned crop: its landmarks are where the template puts them
        return arcface_template(face.shape), 1.0
    except InputError:
        raise InputError(f"{path}: a {face.shape[0]}x{face.shape[1]} image is not an aligned crop (1:1 or 112:96); "
                         "use --align mtcnn to detect its face") from None


def pack_ijb(images: str | Path, subjects: str | Path, out_dir: str | Path, *, name: str, align: str = "none",
             templates_per_subject: int = 2, impostor_pairs: int | None = None, seed: int = 0,
             on_bad_image: str = "fail", min_score: float = 0.9, threads: int | None = 1,
             training_faces: str | Path | None = None) -> dict:
    """Pack ``images`` listed in the ``subjects`` CSV into the IJB-style directory ``out_dir``;
    ``training_faces`` (a training pack's ``faces.csv``): the report's ``in_training_set`` lists the
    images that are byte for byte training images."""
    images, subjects, out_dir = Path(images), Path(subjects), Path(out_dir)
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise InputError(f"--name {name!r}: use letters, digits, '_' and '-' (it names the meta files)")
    if templates_per_subject < 1:
        raise InputError(f"--templates-per-subject {templates_per_subject}: must be at least 1")
    if impostor_pairs is not None and impostor_pairs < 0:  # before any image is read, not 0 impostors after
        raise InputError(f"--impostor-pairs {impostor_pairs}: must be at least 0")
    digests = None if training_faces is None else training_digests(training_faces)  # a bad file: before any work
    rows = read_subjects(subjects)
    for row in rows:
        if Path(row["image"]).suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"{subjects}: line {row['line']}: {row['image']!r} is not one of {', '.join(IMAGE_EXTENSIONS)}")
    policy = BadImagePolicy(on_bad_image, stage="data pack", key="--on-bad-image")
    # the loose crops are the files themselves: the preparer only decodes and detects (its crops are unused)
    preparer = FacePreparer(align=align, size=(112, 112), min_score=min_score, threads=threads)
    prepared = preparer.prepare_chunked([images / row["image"] for row in rows])
    kept, skipped = [], []
    for row, face in zip(rows, prepared):
        if not isinstance(face, InputError):
            try:
                row = {**row, "points": _landmarks(face, images / row["image"])}
            except InputError as error:
                face = error
        if isinstance(face, InputError):
            policy.handle(InputError(f"{subjects}: line {row['line']}: {face}"))
            skipped.append({"image": row["image"], "line": row["line"], "reason": str(face)})
            continue
        kept.append(row)
    if not kept:
        raise InputError(f"{subjects}: every image was skipped ({len(skipped)}): nothing to pack")
    planned = plan_templates(kept, templates_per_subject)
    template_subject = {row["template"]: row["subject_id"] for row in planned}
    pairs, labels = make_pairs(template_subject, impostor_pairs, seed)
    if not labels.any():
        raise InputError(f"{subjects}: no subject has two templates, so there is no genuine pair")
    faces, points, sources = [], [], {}
    with staged_directory(out_dir) as staging:
        (staging / "loose_crop").mkdir()
        for number, row in enumerate(planned, start=1):
            loose = f"{number}{Path(row['image']).suffix.lower()}"
            shutil.copyfile(images / row["image"], staging / "loose_crop" / loose)
            sources[loose] = row["image"]
            faces.append(f"{loose} {row['template']} {row['media_id']}\n")
            landmarks, score = row["points"]
            points.append(loose + "".join(f" {v:.3f}" for v in np.ravel(landmarks)) + f" {score:.6f}\n")
        meta = staging / "meta"
        write_text_atomic(meta / f"{name}_face_tid_mid.txt", "".join(faces))
        write_text_atomic(meta / f"{name}_name_5pts_score.txt", "".join(points))
        write_text_atomic(meta / f"{name}_template_pair_label.txt",
                          "".join(f"{a} {b} {label}\n" for (a, b), label in zip(pairs.tolist(), labels.tolist())))
        write_text_atomic(meta / f"{name}_template_identity.txt",
                          "".join(f"{t} {s}\n" for t, s in sorted(template_subject.items())))
        report = {
            "kind": "ijb", "name": name, "source": str(images), "subjects_csv": str(subjects), "align": align,
            "seed": seed, "templates_per_subject": templates_per_subject, "n_images": len(planned),
            "n_subjects": len(set(template_subject.values())), "n_templates": len(template_subject),
            "n_pairs": int(len(labels)), "n_genuine": int(labels.sum()),
            "subjects": sorted({row["subject"] for row in planned}),
            "landmarks": "mtcnn" if align == "mtcnn" else "template", "loose_crop_sources": sources,
            **policy.summary(), "skipped_images": skipped,
        }
        overlap = training_overlap({row["image"]: face for row, face in zip(rows, prepared)}, digests, training_faces,
                                   {row["subject"] for row in rows})
        if overlap is not None:
            report["in_training_set"] = overlap
        write_json_atomic(staging / "pack.json", report)
    policy.log_total()
    return report
