"""The faithfulness stage (``facetrust explain faithfulness``): every explanation method of
:mod:`facetrust.explain.method_maps`, on one xCos network, scored two ways on a ``.bin`` pair set.

1. **Deletion / insertion** (:mod:`facetrust.explain.faithfulness`) on ``pairs`` pairs drawn at
   random (seeded), half genuine: face 1's regions replaced by grey (deletion) or restored from grey
   (insertion) in the order of the method's ``support`` map (genuine pairs) or ``against`` map
   (impostor pairs); tracked: the pair cosine of the network's grid feature, FNMR and FMR at the
   threshold whose FMR on all pairs of the set is ``threshold_fmr``.  Areas with bootstrap
   intervals, and each method's area minus its random baseline's with a paired interval.
2. **Known-truth localisation** on up to ``localisation_pairs`` genuine pairs with exactly one
   occluded face (``occluders.csv``), that face explained: the share of the ``dissimilarity`` map's
   mass inside the occluder box against the box's share of the image (and the pointing game).

Writes a JSON summary (docs/FORMATS.md "Explanation results") and an ``.npz`` of example maps of
the first localisation pairs for the report figure.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facetrust.data.synthetic.occluders import box_in_input, read_occluders
from facetrust.errors import InputError
from facetrust.explain.faithfulness import (
    FRACTIONS,
    best_accuracy_threshold,
    deletion_curves,
    localisation,
    paired_area_difference,
    threshold_at_fmr,
)
from facetrust.explain.method_maps import BASELINE, METHODS, MapSettings, all_methods
from facetrust.explain.pairset import PairSet
from facetrust.explain.xcos import load_xcos
from facetrust.io import atomic_path, write_json_atomic


@dataclass
class FaithfulnessSettings:
    """Defaults = the schema's ``explain`` section."""

    pairs: int = 120
    localisation_pairs: int = 60
    threshold_fmr: float = 0.01
    bootstrap: int = 1000
    examples: int = 4
    maps: MapSettings = field(default_factory=MapSettings)

    @classmethod
    def from_section(cls, section: dict, seed: int) -> "FaithfulnessSettings":
        """From a params ``explain`` section (its ``gradient``/``perturbation`` blocks feed the maps)."""
        gradient, perturbation = section.get("gradient") or {}, section.get("perturbation") or {}
        maps = MapSettings(steps=int(gradient.get("steps", 16)), masks=int(perturbation.get("masks", 250)),
                           cells=int(perturbation.get("cells", 6)),
                           keep_probability=float(perturbation.get("keep_probability", 0.5)),
                           batch_size=int(perturbation.get("batch_size", 128)), seed=int(seed))
        keys = ("pairs", "localisation_pairs", "threshold_fmr", "bootstrap", "examples")
        return cls(**{k: section[k] for k in keys if k in section}, maps=maps)


def _all_pair_scores(model, pairs: PairSet, size, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(grid cosine, xCos) of every pair of the set."""
    cosine, xcos = [], []
    with torch.no_grad():
        for start in range(0, len(pairs), batch):
            index = np.arange(start, min(start + batch, len(pairs)))
            output = model(pairs.faces(2 * index, size), pairs.faces(2 * index + 1, size))
            cosine.append(output.grid_cosine.double().numpy())
            xcos.append(output.xcos.double().numpy())
    return np.concatenate(cosine), np.concatenate(xcos)


def sample_pairs(issame: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` pair indices, half genuine, half impostor (sorted within each half), genuine first."""
    chosen = []
    for wanted, pool in ((count - count // 2, np.flatnonzero(issame)), (count // 2, np.flatnonzero(~issame))):
        if pool.size < wanted:
            raise InputError(f"faithfulness: asked for {wanted} pairs of a kind, the set has {pool.size}")
        chosen.append(np.sort(rng.choice(pool, wanted, replace=False)))
    return np.concatenate(chosen)


def occluded_pairs(pairs: PairSet, boxes: dict, count: int, rng: np.random.Generator) -> list[tuple[int, int, tuple]]:
    """Up to ``count`` genuine pairs with exactly one occluded face: (occluded image, other image, box)."""
    found = []
    for k in np.flatnonzero(pairs.issame):
        first, second = boxes.get(pairs.key(2 * k)), boxes.get(pairs.key(2 * k + 1))
        if (first is None) != (second is None):
            found.append((2 * k, 2 * k + 1, first) if first is not None else (2 * k + 1, 2 * k, second))
    if not found:
        raise InputError(f"{pairs.path}: no genuine pair with exactly one occluded face (occluders.csv)")
    keep = np.sort(rng.choice(len(found), min(count, len(found)), replace=False))
    return [found[i] for i in keep]


def _curves(model, images1, images2, maps, issame, threshold, settings) -> dict:
    """Deletion and insertion curves of every method, areas, and differences to the baselines."""
    out: dict[str, dict] = {}
    for mode in ("deletion", "insertion"):
        results = {}
        for method in METHODS:
            ranking = np.where(issame[:, None, None], maps[method].support, maps[method].against)
            results[method] = deletion_curves(model.embedding, images1, images2, ranking, issame, threshold,
                                              mode=mode, progress=False)
        for method, result in results.items():
            entry = out.setdefault(method, {})
            rates = result.rates()
            entry[mode] = {
                "curves": {"fnmr": rates["fnmr"].tolist(), "fmr": rates["fmr"].tolist(),
                           "cosine_genuine": result.cosine[issame].mean(axis=0).tolist(),
                           "cosine_impostor": result.cosine[~issame].mean(axis=0).tolist()},
                "areas": {k: list(v) for k, v in result.area_intervals(seed=settings.maps.seed,
                                                                       n_boot=settings.bootstrap).items()},
            }
            if method != BASELINE[method]:
                difference = paired_area_difference(result, results[BASELINE[method]], seed=settings.maps.seed,
                                                    n_boot=settings.bootstrap)
                entry[mode]["vs_baseline"] = {"baseline": BASELINE[method],
                                              **{k: list(v) for k, v in difference.items()}}
    return out


def _localise(maps, boxes, size, settings) -> dict:
    out = {}
    for method in METHODS:
        summary = localisation(maps[method].dissimilarity, boxes, size).summary(seed=settings.maps.seed,
                                                                                n_boot=settings.bootstrap)
        out[method] = {k: list(v) if isinstance(v, tuple) else v for k, v in summary.items()}
    return out


def run_faithfulness(model_dir: str | os.PathLike, pair_set: str | os.PathLike, occluders_csv: str | os.PathLike,
                     out_json: str | os.PathLike, examples_npz: str | os.PathLike,
                     settings: FaithfulnessSettings = FaithfulnessSettings(), *,
                     validation_set: str | os.PathLike) -> dict:
    """The stage (module docstring); returns the JSON it writes.  Every threshold is fitted on
    ``validation_set`` (identities in no test set), never on ``pair_set``."""
    if Path(validation_set).resolve() == Path(pair_set).resolve():
        raise InputError(f"{validation_set}: the validation set is the test set; thresholds must come from "
                         "a validation split (datasets.validation)")
    model, config, _ = load_xcos(model_dir)
    size = tuple(config["input_size"])
    pairs, boxes = PairSet(pair_set), read_occluders(occluders_csv)
    validation = PairSet(validation_set)
    rng = np.random.default_rng(settings.maps.seed)
    cosine, xcos = _all_pair_scores(model, validation, size)
    threshold = threshold_at_fmr(cosine, validation.issame, settings.threshold_fmr)
    xcos_threshold = best_accuracy_threshold(xcos, validation.issame)
    chosen = sample_pairs(pairs.issame, settings.pairs, rng)
    images1, images2 = pairs.faces(2 * chosen, size), pairs.faces(2 * chosen + 1, size)
    issame = pairs.issame[chosen]
    maps = all_methods(model, images1, images2, xcos_threshold, settings.maps, rng)
    curves = _curves(model, images1, images2, maps, issame, threshold, settings)
    occluded = occluded_pairs(pairs, boxes, settings.localisation_pairs, rng)
    loc1 = pairs.faces([a for a, _, _ in occluded], size)
    loc2 = pairs.faces([b for _, b, _ in occluded], size)
    box_pixels = np.array([box_in_input(box, pairs.image_size(), size) for _, _, box in occluded])
    loc_maps = all_methods(model, loc1, loc2, xcos_threshold, settings.maps, rng)
    result = {
        "model": str(model_dir), "test_set": pairs.name, "threshold_split": validation.name,
        "input_size": list(size),
        "grid": list(model.grid_shape[1:]), "settings": dataclasses.asdict(settings),
        "threshold": threshold, "threshold_fmr": settings.threshold_fmr, "xcos_threshold": xcos_threshold,
        "fractions": list(FRACTIONS), "pairs": {"genuine": int(issame.sum()), "impostor": int((~issame).sum())},
        "localisation_pairs": len(occluded),
        "methods": {m: {**curves[m], "localisation": loc} for m, loc in _localise(loc_maps, box_pixels, size,
                                                                                    settings).items()},
    }
    write_json_atomic(out_json, result)
    _write_examples(examples_npz, loc1, loc2, box_pixels, loc_maps, settings.examples, occluded, pairs)
    return result


def _write_examples(path, images1, images2, boxes, maps, count: int, occluded, pairs: PairSet) -> None:
    count = min(count, images1.shape[0])
    arrays = {"images1": images1[:count].numpy(), "images2": images2[:count].numpy(), "boxes": boxes[:count],
              "keys": np.array([pairs.key(a) for a, _, _ in occluded[:count]]), "methods": np.array(METHODS)}
    arrays.update({f"dissimilarity_{m}": maps[m].dissimilarity[:count] for m in METHODS})
    with atomic_path(Path(path), suffix=".npz") as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)
