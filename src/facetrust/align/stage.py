"""The ``align`` stage: IJB-style loose crops + 5 points -> aligned crops in an indexed RecordIO.

Output directory:
  aligned.rec / aligned.idx   key i = the i-th image of the protocol; IRHeader label = detector
                              score, id = i; payload = PNG of the aligned crop (lossless)
  index.csv                   image, detector_score, landmark_source (protocol order)
  manifest.json               counts, output size, method

Landmark methods: ``landmarks`` uses the set's own 5-point file and detector scores; ``mtcnn``
re-detects every loose crop with MTCNN (:mod:`facetrust.align.mtcnn`, batched over same-sized
crops) and records MTCNN's score.  Its two policies are written down: ``index.csv`` gets
``faces_found`` and ``face_choice`` per image (the subject rule of
:func:`facetrust.align.mtcnn.choose_subject`, or ``no_face``), and ``manifest.json`` states both
rules.  By default (``no_face="landmarks"``) a crop where MTCNN finds no face falls back to the
set's own landmarks and score (``landmark_source`` = ``given``), so no image of the protocol is
dropped; ``no_face="error"`` stops instead.

A bad image (see :func:`run_align`) stops the stage naming the file and its meta line
(``on_bad_image: fail``, the default) or is left out and counted (``skip``).
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from facetrust.data import recordio
from facetrust.data.ijb import NAME_5PTS_SCORE, read_ijb_protocol
from facetrust.data.images import BadImagePolicy, read_image_file
from facetrust.input_files import check_inside, refuse_huge_exponents
from facetrust.errors import ConfigError, InputError
from facetrust.io import atomic_path, outputs_together, write_text_atomic

CHUNK = 256  # images per worker task: big enough to amortise process hand-off
METHODS = ("landmarks", "mtcnn")
# A landmark more than this fraction of the image's size beyond its border is not a face in it:
# the warp would sample outside the image and give a black crop.
LANDMARK_MARGIN = 0.25
#: What the align stage does with a loose crop where MTCNN finds no face.
NO_FACE_POLICIES = {"landmarks": "the set's own five points and detector score (landmark_source given)",
                    "error": "stop with an error naming the image"}


def landmarks_problem(points: np.ndarray, height: int, width: int) -> str | None:
    """Why five landmarks (5, 2; x, y) cannot align an ``height`` x ``width`` image, or None."""
    points = np.asarray(points, dtype=np.float64)
    if not np.isfinite(points).all():
        return "landmarks are not finite numbers"
    margin_x, margin_y = LANDMARK_MARGIN * width, LANDMARK_MARGIN * height
    outside = ((points[:, 0] < -margin_x) | (points[:, 0] > width - 1 + margin_x)
               | (points[:, 1] < -margin_y) | (points[:, 1] > height - 1 + margin_y))
    if outside.any():
        x, y = points[int(np.flatnonzero(outside)[0])]
        return (f"landmark ({x:.6g}, {y:.6g}) lies far outside the {width}x{height} image "
                f"(more than {LANDMARK_MARGIN:.0%} of its size beyond the border)")
    return None


def _align_one(path: Path, pixels: np.ndarray, points: np.ndarray, score: float, output_size) -> tuple[bytes, float]:
    """Align one decoded loose crop: (PNG payload, detector score as float32); InputError if bad."""
    problem = landmarks_problem(points, *pixels.shape[:2])
    if problem:
        raise InputError(problem)
    buffer = io.BytesIO()
    from facetrust.align.warp import align_face  # cv2 and scikit-image: 0.5 s, not for readers of aligned sets

    Image.fromarray(align_face(pixels, points, output_size)).save(buffer, format="PNG")
    # float32 like the 5-point file, so the RecordIO label and index.csv hold the same value
    return buffer.getvalue(), float(np.float32(score))


def _landmark_choices(paths, pixels, landmarks, scores, method: str, no_face: str, min_score: float) -> list:
    """Per image (points, score, record): the set's points (record: ``("given",)``), or with MTCNN
    its subject (:func:`facetrust.align.mtcnn.choose_subject`; record: source, faces found, face
    choice) detected in batches of same-sized crops, else the ``no_face`` policy.  Images that did
    not decode (None) stay None."""
    if method != "mtcnn":
        return [(points, score, ("given",)) for points, score in zip(landmarks, scores)]
    from facetrust.align.mtcnn import choose_subject, default_detector

    detector = default_detector(threads=1)  # one per worker process; processes give the parallelism
    decoded = [i for i, image in enumerate(pixels) if image is not None]
    faces = dict(zip(decoded, detector.detect_faces_batch([pixels[i] for i in decoded])))
    chosen = []
    for i, (path, points, score) in enumerate(zip(paths, landmarks, scores)):
        subject = choose_subject(faces[i], pixels[i].shape, min_score) if i in faces else None
        if subject is not None:
            chosen.append((subject[0].landmarks, subject[0].score, ("mtcnn", len(faces[i]), subject[1])))
        elif i in faces and no_face == "error":
            raise InputError(f"{path}: MTCNN finds no face (align --no-face error)")
        else:
            chosen.append((points, score, ("given", 0, "no_face")))
    return chosen


def _align_chunk(crop_dir: str, names: list[str], landmarks: np.ndarray, scores: np.ndarray, output_size,
                 method: str, wheres: list[str], no_face: str = "landmarks", min_score: float = 0.9,
                 allow_external_links: bool = False) -> list:
    """Align one chunk; per image its (PNG payload, detector score, landmark source[, faces found,
    face choice] — the last two with MTCNN), or the message of its InputError (the parent applies
    the on_bad_image policy)."""
    paths = [Path(crop_dir) / name for name in names]
    pixels, errors = [], {}
    for i, path in enumerate(paths):
        try:
            # a crop linked out of the set (loose_crop/, as resolved) is refused, as a '..' name is
            check_inside(path, crop_dir, "loose crop", allow_external_links)
            pixels.append(read_image_file(path))
        except InputError as error:
            pixels.append(None)
            errors[i] = str(error)
    chosen = _landmark_choices(paths, pixels, landmarks, scores, method, no_face, min_score)
    encoded: list = []
    for i, (path, where, (points, score, record)) in enumerate(zip(paths, wheres, chosen)):
        if i in errors:
            encoded.append(errors[i])
            continue
        try:
            encoded.append((*_align_one(path, pixels[i], points, score, output_size), *record))
        except InputError as error:
            message = str(error)
            # decoding errors name the file already; landmark errors get the file and meta line
            encoded.append(message if message.startswith(str(path)) else f"{path} ({where}): {message}")
    return encoded


def run_align(ijb_dir: Path, name: str, out_dir: Path, *, output_size=(112, 112), method: str = "landmarks",
              threads: int = 1, on_bad_image: str = "fail", no_face: str = "landmarks",
              min_score: float = 0.9, allow_external_links: bool = False) -> dict:
    """Align every image of protocol ``name`` under ``ijb_dir``; returns the manifest dict.

    A crop that is a symlink leaving ``loose_crop/`` (as resolved) is an error of that image unless
    ``allow_external_links``; a device, FIFO or socket in place of a crop is refused unread.

    A bad image (unreadable, a decompression bomb, corrupt JPEG data, landmarks far outside it,
    unusable landmarks or detector score in the meta files) raises InputError naming the file and
    meta line (``on_bad_image="fail"``), or is left out, logged and counted (``"skip"``: the
    manifest then adds ``on_bad_image``, ``skipped``, ``skipped_examples`` and ``skipped_images``).

    With ``method="mtcnn"``, ``index.csv`` also records per image how many faces MTCNN found and
    which rule chose the subject (``nearest_centre``, ``highest_score``, ``no_face``); ``no_face``
    says what happens without a face: ``landmarks`` (the set's own points) or ``error``.
    """
    if method not in METHODS:
        raise ConfigError(f"align.method: unknown landmark method {method!r}; allowed: {', '.join(METHODS)}")
    if no_face not in NO_FACE_POLICIES:
        raise ConfigError(f"align.no_face: {no_face!r}; allowed: {', '.join(NO_FACE_POLICIES)}")
    policy = BadImagePolicy(on_bad_image, stage=f"align {name}", key="align.on_bad_image")
    protocol = read_ijb_protocol(ijb_dir, name, on_bad_image=on_bad_image)
    crop_dir = Path(ijb_dir) / "loose_crop"
    names = list(protocol.images)
    pts_name = NAME_5PTS_SCORE.format(name=protocol.name)
    wheres = [f"{pts_name} line {line}" for line in protocol.landmark_lines]
    # all four files or none (a full disk must not leave a .rec/.idx without its index.csv), and
    # no empty directory after a failure
    out_dir = Path(out_dir)
    outputs = [out_dir / file for file in ("aligned.rec", "aligned.idx", "index.csv", "manifest.json")]
    with outputs_together(*outputs, out_dir):
        return _write_aligned(out_dir, ijb_dir, name, protocol, names, wheres, crop_dir, policy, output_size,
                              method, threads, no_face, min_score, allow_external_links)


def _write_aligned(out_dir, ijb_dir, name, protocol, names, wheres, crop_dir, policy, output_size, method,
                   threads, no_face, min_score, allow_external_links=False) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = [(str(crop_dir), names[i : i + CHUNK], protocol.landmarks[i : i + CHUNK],
               protocol.detector_scores[i : i + CHUNK], tuple(output_size), method, wheres[i : i + CHUNK],
               no_face, min_score, allow_external_links)
              for i in range(0, len(names), CHUNK)]
    kept, scores, records, skipped = [], [], [], list(protocol.skipped)
    progress = tqdm(total=len(names), desc=f"align {name}", unit="img")
    with recordio.IndexedRecordIOWriter(out_dir / "aligned.idx", out_dir / "aligned.rec") as writer:
        executor = ProcessPoolExecutor(max_workers=threads) if threads > 1 else None
        try:
            results = (executor.map(_align_chunk, *zip(*chunks)) if executor
                       else (_align_chunk(*chunk) for chunk in chunks))
            position = 0
            for encoded in results:
                for result in encoded:
                    image = names[position]
                    position += 1
                    if isinstance(result, str):
                        policy.handle(InputError(result))
                        skipped.append(image)
                        continue
                    payload, score, *record = result
                    key = len(kept)
                    writer.write_idx(key, recordio.pack(recordio.IRHeader(0, score, key, 0), payload))
                    kept.append(image)
                    scores.append(score)
                    records.append(record)
                progress.update(len(encoded))
        finally:
            if executor:
                executor.shutdown(cancel_futures=True)
    progress.close()
    policy.log_total()
    columns = ["landmark_source", "faces_found", "face_choice"] if method == "mtcnn" else ["landmark_source"]
    with atomic_path(out_dir / "index.csv") as tmp:
        pd.DataFrame({"image": kept, "detector_score": np.asarray(scores, dtype=np.float32),
                      **{column: [r[k] for r in records] for k, column in enumerate(columns)}}).to_csv(tmp, index=False)
    sources = [r[0] for r in records]
    manifest = {"name": name, "images": len(kept), "output_size": list(output_size), "method": method,
                "detected": sources.count("mtcnn"), "given_landmarks": sources.count("given"),
                "source": str(ijb_dir)}
    if method == "mtcnn":
        from facetrust.align.mtcnn import FACE_CHOICE_POLICY

        manifest.update(face_choice=FACE_CHOICE_POLICY, min_score=float(min_score), no_face=NO_FACE_POLICIES[no_face])
    if policy.skips:
        manifest.update(policy.summary())
        manifest.update(skipped=len(skipped), skipped_images=skipped)
    write_text_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_aligned(out_dir: Path) -> tuple[list[str], np.ndarray, "recordio.IndexedRecordIOReader"]:
    """Open an aligned directory: (image names, detector scores, reader keyed 0..N-1)."""
    out_dir = Path(out_dir)
    index_path = out_dir / "index.csv"
    try:
        if index_path.exists():
            refuse_huge_exponents(index_path)  # pandas' parser crashes on a 5-digit exponent
        index = pd.read_csv(index_path, dtype={"image": str})
    except FileNotFoundError:
        raise InputError(f"{index_path}: missing (not an aligned directory)") from None
    if list(index.columns[:2]) != ["image", "detector_score"]:
        raise InputError(f"{index_path}: expected columns image,detector_score, got {list(index.columns)}")
    reader = recordio.IndexedRecordIOReader(out_dir / "aligned.idx", out_dir / "aligned.rec")
    if len(reader) != len(index):
        raise InputError(f"{out_dir}: aligned.idx has {len(reader)} records but index.csv has {len(index)} rows")
    return index["image"].tolist(), index["detector_score"].to_numpy(np.float32), reader
