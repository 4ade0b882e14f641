"""Reference IJB 1:1 evaluation written the InsightFace ``eval_ijbc.py`` way, for the benchmark.

Same algorithm and defaults as InsightFace's IJB 1:1 script (``recognition/_evaluation_/ijb``):
N1 (image features keep their norm), D1 (multiplied by the detector score), F1 (the embeddings file
already holds original + flipped); per template, frames of one media averaged and the media summed
(float32, one template at a time), stored as float64 and L2-normalised; pair scores gathered in
batches of 100,000 pairs through a template-id lookup table, float64 dot products;
``sklearn.metrics.roc_curve`` with its defaults, ``sklearn.metrics.auc``; TAR at the FPR nearest
each target, ties to the larger TPR (InsightFace flips the curve and takes the first minimum).
Written here from that description; no code is taken from InsightFace.

Run as a script it evaluates one protocol and prints a JSON line with the TARs, the AUC and the
time of each stage (``scoring_roc_s`` = pair scores + ROC, the figure the benchmark compares).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import auc, roc_curve

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
BATCH = 100_000


def read_table(path: Path) -> np.ndarray:
    return pd.read_csv(path, sep=" ", header=None).values


def template_features(features: np.ndarray, templates: np.ndarray, medias: np.ndarray):
    """(unique template ids, L2-normalised float64 template features), one template at a time."""
    unique_templates = np.unique(templates)
    pooled = np.zeros((unique_templates.size, features.shape[1]))
    for k, template in enumerate(unique_templates):
        members = np.where(templates == template)[0]
        member_features, member_medias = features[members], medias[members]
        media_values, media_sizes = np.unique(member_medias, return_counts=True)
        per_media = []
        for media, size in zip(media_values, media_sizes):
            frames = member_features[member_medias == media]
            per_media.append(frames if size == 1 else frames.mean(axis=0, keepdims=True))
        pooled[k] = np.sum(np.array(per_media), axis=0)
    norms = np.sqrt(np.einsum("ij,ij->i", pooled, pooled))
    return unique_templates, pooled / norms[:, None]


def pair_scores(unique_templates: np.ndarray, features: np.ndarray, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
    """float64 dot products, pairs gathered ``BATCH`` at a time through an id -> row table."""
    row_of = np.zeros((unique_templates.max() + 1, 1), dtype=int)
    row_of[unique_templates, 0] = np.arange(unique_templates.size)
    scores = np.zeros(t1.size)
    for start in range(0, t1.size, BATCH):
        batch = slice(start, start + BATCH)
        first = features[row_of[t1[batch]]]
        second = features[row_of[t2[batch]]]
        scores[batch] = np.sum(first * second, -1).ravel()
    return scores


def tar_nearest(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    distance = np.abs(fpr - far)
    return float(tpr[np.flatnonzero(distance == distance.min())[-1]])  # last = largest TPR


def evaluate(ijb_dir: Path, name: str, embeddings: Path, scores_out: Path | None = None) -> dict:
    times = {}
    start = time.perf_counter()
    meta = ijb_dir / "meta"
    media_table = read_table(meta / f"{name}_face_tid_mid.txt")
    templates, medias = media_table[:, 1].astype(int), media_table[:, 2].astype(int)
    pair_table = read_table(meta / f"{name}_template_pair_label.txt")
    t1, t2, labels = (pair_table[:, j].astype(int) for j in range(3))
    faceness = read_table(meta / f"{name}_name_5pts_score.txt")[:, -1].astype(np.float32)
    times["parse_s"] = time.perf_counter() - start

    start = time.perf_counter()
    with np.load(embeddings) as data:
        features = data["embedding"]
    times["load_s"] = time.perf_counter() - start

    start = time.perf_counter()
    features = features * faceness[:, None]  # D1; N1 keeps the norm; F1 is already summed
    unique_templates, template_norm_feats = template_features(features, templates, medias)
    times["pool_s"] = time.perf_counter() - start

    start, start_cpu = time.perf_counter(), time.process_time()
    scores = pair_scores(unique_templates, template_norm_feats, t1, t2)
    times["scores_s"] = time.perf_counter() - start
    middle, middle_cpu = time.perf_counter(), time.process_time()
    fpr, tpr, _ = roc_curve(labels, scores)
    area = auc(fpr, tpr)
    tars = {f"{far:.0e}": tar_nearest(fpr, tpr, far) for far in FARS}
    times["roc_s"] = time.perf_counter() - middle
    times["scoring_roc_s"] = times["scores_s"] + times["roc_s"]
    times["scoring_roc_cpu_s"] = time.process_time() - start_cpu
    times["roc_cpu_s"] = time.process_time() - middle_cpu
    if scores_out is not None:
        np.save(scores_out, scores)
    # Diagnostic, not timed: the same ROC read off the scores rounded to float32.
    fpr32, tpr32, _ = roc_curve(labels, scores.astype(np.float32))
    tars32 = {f"{far:.0e}": tar_nearest(fpr32, tpr32, far) for far in FARS}
    return {"tar_at_far": tars, "tar_at_far_float32_scores": tars32, "auc": float(area),
            "n_pairs": int(t1.size), "n_genuine": int(labels.sum()), "times": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", type=Path, required=True, help="IJB directory (meta/)")
    parser.add_argument("--name", default="ijbc")
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    parser.add_argument("--scores-out", type=Path, help="also save the float64 pair scores (.npy)")
    args = parser.parse_args()
    result = evaluate(args.protocol, args.name, args.embeddings, args.scores_out)
    args.out.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
