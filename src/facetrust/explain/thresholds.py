"""Every threshold of the explain stages, fitted on the validation split (``facetrust explain
thresholds``; issue 17 item 1): never on a test set.

On every pair of the validation ``.bin`` set (identities in no test or training set), for the xCos
network: the grid feature's cosine at FMR = ``threshold_fmr`` and at its EER point (xSSAB's thr;
the FNMR/FMR curves), xCos at the same two points and at its best accuracy (τ, the centre of the
xCos maps' palette, as the xCos figures use), and the Δcos threshold of the occluder test
(:func:`facetrust.explain.occluder_truth.delta_threshold`), with how many of the validation split's
own occluded genuine pairs reach it.  Written as one JSON that the faithfulness and sanity stages
read (docs/FORMATS.md "Explanation results").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facetrust.data.synthetic.occluders import read_clean_twins, read_occluders
from facetrust.errors import InputError
from facetrust.explain.faithfulness import best_accuracy_threshold, eer_threshold, threshold_at_fmr
from facetrust.explain.occluder_truth import (
    delta_threshold,
    occluded_genuine_pairs,
    occluder_deltas,
    qualifying_pairs,
    score_pairs,
)
from facetrust.data.pairset import PairSet
from facetrust.models.xcos import load_xcos
from facetrust.io import write_json_atomic


def _operating_points(scores: np.ndarray, issame: np.ndarray, fmr: float) -> dict[str, float]:
    eer_at, eer = eer_threshold(scores, issame)
    return {"fmr_threshold": threshold_at_fmr(scores, issame, fmr), "eer_threshold": eer_at, "eer": eer,
            "genuine_mean": float(scores[issame].mean()), "impostor_mean": float(scores[~issame].mean())}


def fit_thresholds(model_dir: str | os.PathLike, validation_set: str | os.PathLike,
                   occluders_csv: str | os.PathLike, twins_npz: str | os.PathLike, out_json: str | os.PathLike, *,
                   threshold_fmr: float = 0.01, delta_fraction: float = 0.1) -> dict:
    """Fit and write the thresholds (module docstring); returns the JSON written."""
    model, config, _ = load_xcos(model_dir)
    size = tuple(config["input_size"])
    pairs = PairSet(validation_set)
    images = np.arange(len(pairs))
    scores = score_pairs(model, pairs.faces(2 * images, size), pairs.faces(2 * images + 1, size))
    cosine = _operating_points(scores["cosine"], pairs.issame, threshold_fmr)
    xcos = _operating_points(scores["xcos"], pairs.issame, threshold_fmr)
    xcos["accuracy_threshold"] = best_accuracy_threshold(scores["xcos"], pairs.issame)
    delta = delta_threshold(scores["cosine"], pairs.issame, delta_fraction)
    items = occluded_genuine_pairs(pairs, read_occluders(occluders_csv))
    if not items:
        raise InputError(f"{validation_set}: no genuine pair with exactly one occluded face (occluders.csv)")
    deltas = occluder_deltas(model, pairs, items, read_clean_twins(twins_npz), size)
    delta.update(occluded_pairs=len(items), qualifying=int(qualifying_pairs(deltas, delta["threshold"]).size),
                 delta_cos_quartiles=np.quantile(deltas["delta_cos"], [0.25, 0.5, 0.75]).tolist())
    result = {"split": pairs.name, "model": str(model_dir), "pairs": len(pairs), "threshold_fmr": threshold_fmr,
              "cosine": cosine, "xcos": xcos, "delta_cos": delta}
    write_json_atomic(Path(out_json), result)
    return result
