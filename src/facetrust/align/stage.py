"""The ``align`` stage: IJB-style loose crops + 5 points -> aligned crops in an indexed RecordIO.

Output directory:
  aligned.rec / aligned.idx   key i = the i-th image of the protocol; IRHeader label = detector
                              score, id = i; payload = PNG of the aligned crop (lossless)
  index.csv                   image, detector_score, landmark_source (protocol order)
  manifest.json               counts, output size, method

Landmark methods: ``landmarks`` uses the set's own 5-point file and detector scores; ``mtcnn``
re-detects every loose crop with MTCNN (:mod:`facetrust.align.mtcnn`) and records MTCNN's score;
a crop where MTCNN finds no face falls back to the set's own landmarks and score
(``landmark_source`` = ``given``), so no image of the protocol is dropped.
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


def _align_chunk(crop_dir: str, names: list[str], landmarks: np.ndarray, scores: np.ndarray, output_size,
                 method: str) -> list[tuple[bytes, float, str]]:
    """Align one chunk; per image: (PNG payload, detector score, landmark source)."""
    detector = None
    if method == "mtcnn":
        from facetrust.align.mtcnn import default_detector

        detector = default_detector(threads=1)  # one per worker process; processes give the parallelism
    encoded = []
    for name, points, score in zip(names, landmarks, scores):
        path = Path(crop_dir) / name
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: cannot decode image: {error}") from None
        source = "given"
        if detector is not None:
            detected = detector.detect_landmarks(pixels)
            if detected is not None:
                points, score = detected
                source = "mtcnn"
        aligned = align_face(pixels, points, output_size)
        buffer = io.BytesIO()
        Image.fromarray(aligned).save(buffer, format="PNG")
        # float32 like the 5-point file, so the RecordIO label and index.csv hold the same value
        encoded.append((buffer.getvalue(), float(np.float32(score)), source))
    return encoded


def run_align(ijb_dir: Path, name: str, out_dir: Path, *, output_size=(112, 112), method: str = "landmarks",
              threads: int = 1) -> dict:
    """Align every image of protocol ``name`` under ``ijb_dir``; returns the manifest dict."""
    if method not in METHODS:
        raise ConfigError(f"align.method: unknown landmark method {method!r}; allowed: {', '.join(METHODS)}")
    protocol = read_ijb_protocol(ijb_dir, name)
    crop_dir = Path(ijb_dir) / "loose_crop"
    names = list(protocol.images)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = [(str(crop_dir), names[i : i + CHUNK], protocol.landmarks[i : i + CHUNK],
               protocol.detector_scores[i : i + CHUNK], tuple(output_size), method)
              for i in range(0, len(names), CHUNK)]
    scores = np.zeros(len(names), dtype=np.float32)
    sources: list[str] = []
    progress = tqdm(total=len(names), desc=f"align {name}", unit="img")
    with recordio.IndexedRecordIOWriter(out_dir / "aligned.idx", out_dir / "aligned.rec") as writer:
        executor = ProcessPoolExecutor(max_workers=threads) if threads > 1 else None
        try:
            results = (executor.map(_align_chunk, *zip(*chunks)) if executor
                       else (_align_chunk(*chunk) for chunk in chunks))
            key = 0
            for encoded in results:
                for payload, score, source in encoded:
                    header = recordio.IRHeader(0, score, key, 0)
                    writer.write_idx(key, recordio.pack(header, payload))
                    scores[key] = score
                    sources.append(source)
                    key += 1
                progress.update(len(encoded))
        finally:
            if executor:
                executor.shutdown()
    progress.close()
    with atomic_path(out_dir / "index.csv") as tmp:
        pd.DataFrame({"image": names, "detector_score": scores, "landmark_source": sources}).to_csv(tmp, index=False)
    manifest = {"name": name, "images": len(names), "output_size": list(output_size), "method": method,
                "detected": sources.count("mtcnn"), "given_landmarks": sources.count("given"),
                "source": str(ijb_dir)}
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
