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

from facetrust.align.warp import align_face
from facetrust.data import recordio
from facetrust.data.ijb import read_ijb_protocol
from facetrust.errors import ConfigError, InputError
from facetrust.io import atomic_path, write_text_atomic

CHUNK = 256  # images per worker task: big enough to amortise process hand-off
METHODS = ("landmarks", "mtcnn")
#: What the align stage does with a loose crop where MTCNN finds no face.
NO_FACE_POLICIES = {"landmarks": "the set's own five points and detector score (landmark_source given)",
                    "error": "stop with an error naming the image"}


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot decode image: {error}") from None


def _mtcnn_landmarks(crop_dir: str, names, pixels, landmarks, scores, no_face: str, min_score: float) -> list[tuple]:
    """Per image (points, score, source, faces found, face choice): MTCNN's subject
    (:func:`facetrust.align.mtcnn.choose_subject`), or with no face the ``no_face`` policy."""
    from facetrust.align.mtcnn import choose_subject, default_detector

    detector = default_detector(threads=1)  # one per worker process; processes give the parallelism
    chosen = []
    for name, image, faces, points, score in zip(names, pixels, detector.detect_faces_batch(pixels), landmarks, scores):
        subject = choose_subject(faces, image.shape, min_score)
        if subject is not None:
            chosen.append((subject[0].landmarks, subject[0].score, "mtcnn", len(faces), subject[1]))
        elif no_face == "error":
            raise InputError(f"{Path(crop_dir) / name}: MTCNN finds no face (align --no-face error)")
        else:
            chosen.append((points, score, "given", 0, "no_face"))
    return chosen


def _align_chunk(crop_dir: str, names: list[str], landmarks: np.ndarray, scores: np.ndarray, output_size,
                 method: str, no_face: str = "landmarks", min_score: float = 0.9) -> list[tuple]:
    """Align one chunk; per image: (PNG payload, detector score, landmark source[, faces found,
    face choice] — the last two with MTCNN)."""
    pixels = [_decode(Path(crop_dir) / name) for name in names]
    if method == "mtcnn":
        chosen = _mtcnn_landmarks(crop_dir, names, pixels, landmarks, scores, no_face, min_score)
    else:
        chosen = [(points, score, "given") for points, score in zip(landmarks, scores)]
    encoded = []
    for image, (points, score, *record) in zip(pixels, chosen):
        buffer = io.BytesIO()
        Image.fromarray(align_face(image, points, output_size)).save(buffer, format="PNG")
        # float32 like the 5-point file, so the RecordIO label and index.csv hold the same value
        encoded.append((buffer.getvalue(), float(np.float32(score)), *record))
    return encoded


def run_align(ijb_dir: Path, name: str, out_dir: Path, *, output_size=(112, 112), method: str = "landmarks",
              threads: int = 1, no_face: str = "landmarks", min_score: float = 0.9) -> dict:
    """Align every image of protocol ``name`` under ``ijb_dir``; returns the manifest dict.

    With ``method="mtcnn"``, ``index.csv`` also records per image how many faces MTCNN found and
    which rule chose the subject (``nearest_centre``, ``highest_score``, ``no_face``); ``no_face``
    says what happens without a face: ``landmarks`` (the set's own points) or ``error``."""
    if method not in METHODS:
        raise ConfigError(f"align.method: unknown landmark method {method!r}; allowed: {', '.join(METHODS)}")
    if no_face not in NO_FACE_POLICIES:
        raise ConfigError(f"align.no_face: {no_face!r}; allowed: {', '.join(NO_FACE_POLICIES)}")
    protocol = read_ijb_protocol(ijb_dir, name)
    crop_dir = Path(ijb_dir) / "loose_crop"
    names = list(protocol.images)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = [(str(crop_dir), names[i : i + CHUNK], protocol.landmarks[i : i + CHUNK],
               protocol.detector_scores[i : i + CHUNK], tuple(output_size), method, no_face, min_score)
              for i in range(0, len(names), CHUNK)]
    scores = np.zeros(len(names), dtype=np.float32)
    records: list[tuple] = []
    progress = tqdm(total=len(names), desc=f"align {name}", unit="img")
    with recordio.IndexedRecordIOWriter(out_dir / "aligned.idx", out_dir / "aligned.rec") as writer:
        executor = ProcessPoolExecutor(max_workers=threads) if threads > 1 else None
        try:
            results = (executor.map(_align_chunk, *zip(*chunks)) if executor
                       else (_align_chunk(*chunk) for chunk in chunks))
            key = 0
            for encoded in results:
                for payload, score, *record in encoded:
                    header = recordio.IRHeader(0, score, key, 0)
                    writer.write_idx(key, recordio.pack(header, payload))
                    scores[key] = score
                    records.append(tuple(record))
                    key += 1
                progress.update(len(encoded))
        finally:
            if executor:
                executor.shutdown()
    progress.close()
    columns = ["landmark_source", "faces_found", "face_choice"] if method == "mtcnn" else ["landmark_source"]
    index = pd.DataFrame({"image": names, "detector_score": scores,
                          **{column: [r[k] for r in records] for k, column in enumerate(columns)}})
    with atomic_path(out_dir / "index.csv") as tmp:
        index.to_csv(tmp, index=False)
    sources = index["landmark_source"].tolist()
    manifest = {"name": name, "images": len(names), "output_size": list(output_size), "method": method,
                "detected": sources.count("mtcnn"), "given_landmarks": sources.count("given"),
                "source": str(ijb_dir)}
    if method == "mtcnn":
        from facetrust.align.mtcnn import FACE_CHOICE_POLICY

        manifest.update(face_choice=FACE_CHOICE_POLICY, min_score=float(min_score), no_face=NO_FACE_POLICIES[no_face])
    write_text_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_aligned(out_dir: Path) -> tuple[list[str], np.ndarray, "recordio.IndexedRecordIOReader"]:
    """Open an aligned directory: (image names, detector scores, reader keyed 0..N-1)."""
    out_dir = Path(out_dir)
    index_path = out_dir / "index.csv"
    try:
        index = pd.read_csv(index_path, dtype={"image": str})
    except FileNotFoundError:
        raise InputError(f"{index_path}: missing (not an aligned directory)") from None
    if list(index.columns[:2]) != ["image", "detector_score"]:
        raise InputError(f"{index_path}: expected columns image,detector_score, got {list(index.columns)}")
    reader = recordio.IndexedRecordIOReader(out_dir / "aligned.idx", out_dir / "aligned.rec")
    if len(reader) != len(index):
        raise InputError(f"{out_dir}: aligned.idx has {len(reader)} records but index.csv has {len(index)} rows")
    return index["image"].tolist(), index["detector_score"].to_numpy(np.float32), reader
