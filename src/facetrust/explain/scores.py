"""The xCos scoring stage: every pair of a ``.bin`` set scored by xCos, by the plain cosine of the
same network, and by the cosine of the frozen standard model (``facetrust explain score``).

All three read the original images only (no flip fusion, F0), so they differ in the score alone.
Writes the pair scores file of docs/FORMATS.md: ``issame``, ``score_names`` and one (P,) float64
array per score (``xcos``, ``cosine``, ``standard_cosine``), plus each pair's ``cosine_map`` and
``attention`` (P, h, w) for the figures, and the two model paths.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from facetrust.data.pairset import PairSet
from facetrust.models.xcos import load_xcos
from facetrust.formats import ISSAME, SCORE_NAMES
from facetrust.io import atomic_path

SCORES = ("xcos", "cosine", "standard_cosine")


def score_pair_set(model, standard, pairs: PairSet, input_size, standard_size, *, batch_pairs: int = 128) -> dict:
    """``{name: (P,) float64}`` for :data:`SCORES` plus ``cosine_map``/``attention`` (P, h, w) float32."""
    model.eval()
    standard.eval()
    out = {name: [] for name in (*SCORES, "cosine_map", "attention")}
    with torch.no_grad():
        for start in tqdm(range(0, len(pairs), batch_pairs), desc="xcos scores", unit="batch", leave=False):
            index = np.arange(start, min(start + batch_pairs, len(pairs)))
            result = model(pairs.faces(2 * index, input_size), pairs.faces(2 * index + 1, input_size))
            first = standard(pairs.faces(2 * index, standard_size))
            second = standard(pairs.faces(2 * index + 1, standard_size))
            out["xcos"].append(result.xcos.double().numpy())
            out["cosine"].append(result.grid_cosine.double().numpy())
            out["standard_cosine"].append(F.cosine_similarity(first, second, dim=1).double().numpy())
            out["cosine_map"].append(result.cosine_map.float().numpy())
            out["attention"].append(result.attention.float().numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def xcos_only(model, pairs: PairSet, input_size, *, batch_pairs: int = 128) -> np.ndarray:
    """(P,) float64 xCos of every pair (original images)."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_pairs):
            index = np.arange(start, min(start + batch_pairs, len(pairs)))
            out.append(model(pairs.faces(2 * index, input_size), pairs.faces(2 * index + 1, input_size)).xcos.double().numpy())
    return np.concatenate(out)


def run_xcos_scores(model_dir: str | os.PathLike, standard_dir: str | os.PathLike, pair_set: str | os.PathLike,
                    out_npz: str | os.PathLike, *, batch_pairs: int = 128, replicates=()) -> dict:
    """Score every pair of ``pair_set`` (a ``.bin``) with the xCos model of ``model_dir`` (and its
    ``replicates``, other seeds) and the standard model of ``standard_dir``; write ``out_npz``
    atomically; return a summary."""
    from facetrust.models.artifacts import load_model

    model, config, _ = load_xcos(model_dir)
    standard, standard_config, _ = load_model(standard_dir)
    pairs = PairSet(pair_set)
    scores = score_pair_set(model, standard, pairs, tuple(config["input_size"]), tuple(standard_config["input_size"]),
                            batch_pairs=batch_pairs)
    names = list(SCORES)
    for number, replicate in enumerate(replicates, start=1):
        other, other_config, _ = load_xcos(replicate)
        scores[f"xcos_replicate{number}"] = xcos_only(other, pairs, tuple(other_config["input_size"]),
                                                      batch_pairs=batch_pairs)
        names.append(f"xcos_replicate{number}")
    with atomic_path(out_npz, suffix=".npz") as tmp, tmp.open("wb") as handle:
        np.savez(handle, **{ISSAME: pairs.issame, SCORE_NAMES: np.array(names)}, **scores,
                 model=np.array(str(model_dir)), standard=np.array(str(standard_dir)))
    return {"pairs": len(pairs), "out": str(out_npz), "grid": list(scores["attention"].shape[1:]),
            **{f"mean_{name}": float(scores[name].mean()) for name in SCORES}}
