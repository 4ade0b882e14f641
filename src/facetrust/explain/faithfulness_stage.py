"""The faithfulness stage (``facetrust explain faithfulness``): every explanation method of
:mod:`facetrust.explain.method_maps`, on one xCos network, scored on a ``.bin`` test pair set with
every threshold taken from the validation split (``facetrust explain thresholds``).

1. **Deletion / insertion** (:mod:`facetrust.explain.faithfulness`) on ``pairs`` pairs drawn at
   random (seeded), half genuine: face 1's regions replaced by grey (deletion), restored from grey
   (insertion) or from a blurred copy of face 1 (``insertion_blur``, RISE's canvas) in the order of
   the method's ``support`` map (genuine pairs) or ``against`` map (impostor pairs).  Grid methods
   are scored on **xCos**, the score they explain (the grid cosine as a second column); pixel
   methods on the grid feature's cosine.  FNMR / FMR at two thresholds of the validation split:
   FMR = ``threshold_fmr`` and the EER point.  Areas with bootstrap intervals, and each method's
   area minus its random order's with a paired interval.
2. **Known-truth localisation** (:mod:`facetrust.explain.occluder_truth`) on the test set's genuine
   pairs with exactly one occluded face whose clean twin raises the cosine by at least the
   validation split's Δcos threshold (at most ``localisation_pairs``, seeded), each method against
   its controls; the attention's mass on the occluder against the twin's; restoration curves.

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
import torch.nn.functional as F

from facetrust.evaluate.bootstrap import bootstrap_ci
from facetrust.data.synthetic.occluders import read_clean_twins, read_occluders
from facetrust.errors import InputError
from facetrust.explain.faithfulness import (
    FRACTIONS,
    CurveResult,
    edit_scores,
    paired_area_difference,
)
from facetrust.explain.method_maps import (
    BASELINE,
    CONTROLS,
    GRID_METHODS,
    METHODS,
    RANDOM_ORDERS,
    UNSIGNED,
    MapSettings,
    MapThresholds,
    all_methods,
    control_maps,
)
from facetrust.explain.occluder_truth import (
    input_boxes,
    localisation_with_controls,
    occluded_genuine_pairs,
    occluder_deltas,
    qualifying_pairs,
    restoration_curves,
    twin_faces,
)
from facetrust.data.pairset import PairSet
from facetrust.explain.sanity import CASCADE, randomised_copy
from facetrust.models.xcos import load_xcos
from facetrust.io import atomic_path, read_json, write_json_atomic


@dataclass
class FaithfulnessSettings:
    """Defaults = the schema's ``explain`` section."""

    pairs: int = 48
    localisation_pairs: int = 32
    threshold_fmr: float = 0.01
    bootstrap: int = 1000
    examples: int = 4
    delta_fraction: float = 0.1
    blur_sigma: float = 2.0
    maps: MapSettings = field(default_factory=MapSettings)

    @classmethod
    def from_section(cls, section: dict, seed: int) -> "FaithfulnessSettings":
        """From a params ``explain`` section (its ``gradient``/``perturbation`` blocks feed the maps)."""
        maps = map_settings(section, seed)
        keys = ("pairs", "localisation_pairs", "threshold_fmr", "bootstrap", "examples", "delta_fraction",
                "blur_sigma")
        return cls(**{k: section[k] for k in keys if k in section}, maps=maps)


def map_settings(section: dict, seed: int) -> MapSettings:
    """MapSettings from a params ``explain`` section; the defaults are MapSettings' own (one place)."""
    return MapSettings.from_params({"explain": section}, seed=int(seed))


def read_thresholds(path: str | os.PathLike, test_set: PairSet) -> tuple[dict, MapThresholds]:
    """The thresholds JSON of ``facetrust explain thresholds``; refuses one fitted on the test set."""
    thresholds = read_json(path, "explain thresholds")
    try:
        split = thresholds["split"]
        maps = MapThresholds(xcos=float(thresholds["xcos"]["accuracy_threshold"]),
                             cosine_eer=float(thresholds["cosine"]["eer_threshold"]))
        float(thresholds["delta_cos"]["threshold"])
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: not an explain thresholds file (missing {error})") from None
    if split == test_set.name:
        raise InputError(f"{path}: thresholds were fitted on the test set {split!r}; they must come from a "
                         "validation split (datasets.validation)")
    return thresholds, maps


def sample_pairs(issame: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` pair indices, half genuine, half impostor (sorted within each half), genuine first."""
    chosen = []
    for wanted, pool in ((count - count // 2, np.flatnonzero(issame)), (count // 2, np.flatnonzero(~issame))):
        if pool.size < wanted:
            raise InputError(f"faithfulness: asked for {wanted} pairs of a kind, the set has {pool.size}")
        chosen.append(np.sort(rng.choice(pool, wanted, replace=False)))
    return np.concatenate(chosen)


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """RISE's insertion canvas: each image Gaussian-blurred (``sigma`` px, reflect padding)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def _pair_scorer(model, images2: torch.Tensor):
    """``score(faces, k)`` -> (F, 2): [grid cosine, xCos] of edited faces against pair k's face 2."""
    with torch.no_grad():
        grids2 = model.grid(images2)

    def score(faces: torch.Tensor, k: int) -> np.ndarray:
        grids = model.grid(faces)
        output = model.compare(grids, grids2[k:k + 1].expand_as(grids))
        return np.stack([output.grid_cosine.double().numpy(), output.xcos.double().numpy()], axis=1)

    return score


SCORE_COLUMNS = ("cosine", "xcos")


def _rates(scores: np.ndarray, issame: np.ndarray, fractions, operating: dict, settings) -> tuple[dict, dict]:
    """Curves and area intervals of one score (P, F) at the two validation thresholds."""
    curves, areas, results = {}, {}, {}
    for point in ("fmr", "eer"):
        result = CurveResult("deletion", np.asarray(fractions), scores, issame, operating[f"{point}_threshold"])
        rates = result.rates()
        curves[f"fnmr_at_{point}"], curves[f"fmr_at_{point}"] = rates["fnmr"].tolist(), rates["fmr"].tolist()
        intervals = result.area_intervals(seed=settings.maps.seed, n_boot=settings.bootstrap)
        areas[f"fnmr_at_{point}"], areas[f"fmr_at_{point}"] = list(intervals["fnmr"]), list(intervals["fmr"])
        areas["score_genuine"], areas["score_impostor"] = (list(intervals["cosine_genuine"]),
                                                          list(intervals["cosine_impostor"]))
        results[point] = result
    curves["score_genuine"] = scores[issame].mean(axis=0).tolist()
    curves["score_impostor"] = scores[~issame].mean(axis=0).tolist()
    return {"curves": curves, "areas": areas}, results


def _curves(model, images1, images2, maps, issame, thresholds: dict, settings) -> dict:
    """Deletion, insertion (grey) and insertion (blurred canvas) of every method (module docstring)."""
    scorer = _pair_scorer(model, images2)
    canvases = {"deletion": None, "insertion": None, "insertion_blur": blurred(images1, settings.blur_sigma)}
    out: dict[str, dict] = {}
    for mode, canvas in canvases.items():
        raw, results = {}, {}
        for method in METHODS:
            ranking = np.where(issame[:, None, None], maps[method].support, maps[method].against)
            raw[method] = edit_scores(scorer, images1, ranking, mode="deletion" if mode == "deletion" else "insertion",
                                      fractions=FRACTIONS, replacements=canvas)
        for method in METHODS:
            column = "xcos" if method in GRID_METHODS else "cosine"
            index = SCORE_COLUMNS.index(column)
            entry, results[method] = _rates(raw[method][:, :, index], issame, FRACTIONS, thresholds[column], settings)
            entry["score"] = column
            if method in GRID_METHODS:  # the grid cosine as a second column
                second, _ = _rates(raw[method][:, :, 0], issame, FRACTIONS, thresholds["cosine"], settings)
                entry["grid_cosine"] = second
            out.setdefault(method, {})[mode] = entry
        for method in METHODS:
            if method == BASELINE[method]:
                continue
            comparison = {"baseline": BASELINE[method]}
            for point in ("fmr", "eer"):
                difference = paired_area_difference(results[method][point], results[BASELINE[method]][point],
                                                    seed=settings.maps.seed, n_boot=settings.bootstrap)
                comparison[f"fnmr_at_{point}"] = list(difference["fnmr"])
                comparison[f"fmr_at_{point}"] = list(difference["fmr"])
                comparison["score_genuine"] = list(difference["cosine_genuine"])
            out[method][mode]["vs_baseline"] = comparison
    return out


def _attention_on_occluder(model, occluded, twins, others, boxes, size, settings) -> dict:
    """xCos attention mass inside the box with the occluder and with its clean twin (paired)."""
    from facetrust.explain.faithfulness import upsample
    from facetrust.data.synthetic.occluders import box_mask

    with torch.no_grad():
        with_occluder = model(occluded, others).attention.double().numpy()
        without = model(twins, others).attention.double().numpy()

    def mass(maps: np.ndarray) -> np.ndarray:
        return np.array([upsample(m, size)[box_mask(b, size)].sum() / upsample(m, size).sum()
                         for m, b in zip(maps, boxes)])

    a, b = mass(with_occluder), mass(without)
    everyone = [np.arange(a.size)]
    return {"pairs": int(a.size),
            "mass_occluded": list(bootstrap_ci(lambda i: float(np.mean(a[i])), everyone, seed=settings.maps.seed,
                                               n_boot=settings.bootstrap)),
            "mass_clean": list(bootstrap_ci(lambda i: float(np.mean(b[i])), everyone, seed=settings.maps.seed,
                                            n_boot=settings.bootstrap)),
            "difference": list(bootstrap_ci(lambda i: float(np.mean(a[i] - b[i])), everyone,
                                            seed=settings.maps.seed, n_boot=settings.bootstrap))}


def _known_truth(model, pairs: PairSet, boxes, twins, thresholds, map_thresholds, calibration, settings, rng):
    """Δcos of every occluded genuine pair, then localisation and restoration of the qualifying ones."""
    size = model.input_size
    items = occluded_genuine_pairs(pairs, boxes)
    if not items:
        raise InputError(f"{pairs.path}: no genuine pair with exactly one occluded face (occluders.csv)")
    deltas = occluder_deltas(model, pairs, items, twins, size)
    cut = float(thresholds["delta_cos"]["threshold"])
    qualifying = qualifying_pairs(deltas, cut)
    summary = {"threshold": cut, "threshold_split": thresholds["split"], "occluded_pairs": len(items),
               "qualifying": int(qualifying.size),
               "delta_cos_quartiles": np.quantile(deltas["delta_cos"], [0.25, 0.5, 0.75]).tolist(),
               "delta_xcos_quartiles": np.quantile(deltas["delta_xcos"], [0.25, 0.5, 0.75]).tolist()}
    if qualifying.size < 2:
        return summary, None
    keep = np.sort(rng.choice(qualifying, min(settings.localisation_pairs, qualifying.size), replace=False))
    chosen = [items[i] for i in keep]
    summary["localised"] = len(chosen)
    occluded = pairs.faces([i.occluded for i in chosen], size)
    others = pairs.faces([i.other for i in chosen], size)
    clean = twin_faces(pairs, chosen, twins, size)
    box_pixels = input_boxes(pairs, chosen, size)
    maps = all_methods(model, occluded, others, map_thresholds, settings.maps, rng)
    randomised = randomised_copy(model, len(CASCADE), calibration, settings.maps.seed)
    random_maps = all_methods(randomised, occluded, others, map_thresholds, settings.maps, rng)
    controls = control_maps(model, occluded, others)
    signed = [m for m in METHODS if m not in UNSIGNED]
    summary["localisation"] = localisation_with_controls(
        {m: maps[m].dissimilarity for m in signed},
        {m: random_maps[m].dissimilarity for m in signed if m not in RANDOM_ORDERS}, controls, box_pixels, size,
        seed=settings.maps.seed, n_boot=settings.bootstrap)
    summary["attention"] = _attention_on_occluder(model, occluded, clean, others, box_pixels, size, settings)
    orders = {**{m: maps[m].dissimilarity for m in signed}, **controls,
              **{f"randomised_network:{m}": random_maps[m].dissimilarity for m in signed if m not in RANDOM_ORDERS}}
    restoration, versus = restoration_curves(model, occluded, clean, others, orders,
                                             thresholds["cosine"]["eer_threshold"], seed=settings.maps.seed,
                                             n_boot=settings.bootstrap)
    for method in signed:
        if method in RANDOM_ORDERS:
            continue
        rivals = [*CONTROLS, f"randomised_network:{method}"]
        means = {r: restoration["orders"][r]["recovery_area"][0] for r in rivals}
        strongest = max(means, key=means.get)
        restoration["orders"][method].update(
            vs_random=versus(method, BASELINE[method]), strongest_control=strongest,
            vs_strongest_control=versus(method, strongest))
    summary["restoration"] = restoration
    summary["completeness_gap"] = {"integrated_gradients": maps["integrated_gradients"].extras["completeness_gap"].tolist()}
    examples = {"images1": occluded, "clean": clean, "images2": others, "boxes": box_pixels,
                "keys": [pairs.key(i.occluded) for i in chosen], "maps": maps, "random_maps": random_maps,
                "controls": controls}
    return summary, examples


def run_faithfulness(model_dir: str | os.PathLike, pair_set: str | os.PathLike, occluders_csv: str | os.PathLike,
                     out_json: str | os.PathLike, examples_npz: str | os.PathLike,
                     settings: FaithfulnessSettings = FaithfulnessSettings(), *,
                     twins_npz: str | os.PathLike, thresholds_json: str | os.PathLike,
                     validation_set: str | os.PathLike) -> dict:
    """The stage (module docstring); returns the JSON it writes.  Every threshold comes from
    ``thresholds_json`` (fitted on the validation split); ``validation_set`` only supplies the
    images on which the randomised control network's BatchNorm statistics are recalibrated."""
    model, config, _ = load_xcos(model_dir)
    size = tuple(config["input_size"])
    model.input_size = size
    pairs, boxes, twins = PairSet(pair_set), read_occluders(occluders_csv), read_clean_twins(twins_npz)
    thresholds, map_thresholds = read_thresholds(thresholds_json, pairs)
    validation = PairSet(validation_set)
    if validation.name == pairs.name:
        raise InputError(f"{validation_set}: the validation set is the test set")
    calibration = validation.faces(range(min(256, 2 * len(validation))), size)
    rng = np.random.default_rng(settings.maps.seed)
    chosen = sample_pairs(pairs.issame, settings.pairs, rng)
    images1, images2 = pairs.faces(2 * chosen, size), pairs.faces(2 * chosen + 1, size)
    issame = pairs.issame[chosen]
    maps = all_methods(model, images1, images2, map_thresholds, settings.maps, rng)
    curves = _curves(model, images1, images2, maps, issame, thresholds, settings)
    known, examples = _known_truth(model, pairs, boxes, twins, thresholds, map_thresholds, calibration, settings,
                                   rng)
    result = {
        "model": str(model_dir), "test_set": pairs.name, "threshold_split": thresholds["split"],
        "input_size": list(size), "grid": list(model.grid_shape[1:]), "settings": dataclasses.asdict(settings),
        "thresholds": {k: thresholds[k] for k in ("cosine", "xcos", "delta_cos", "threshold_fmr")},
        "fractions": list(FRACTIONS), "pairs": {"genuine": int(issame.sum()), "impostor": int((~issame).sum())},
        "completeness_gap": {"integrated_gradients": maps["integrated_gradients"].extras["completeness_gap"].tolist()},
        "split_fraction": {m: maps[m].extras["split_fraction"].tolist() for m in ("xssab", "integrated_gradients")},
        "methods": curves, "known_truth": known,
    }
    write_json_atomic(out_json, result)
    _write_examples(examples_npz, examples, settings.examples)
    return result


def _write_examples(path, examples, count: int) -> None:
    arrays: dict[str, np.ndarray] = {"methods": np.array(METHODS)}
    if examples is not None:
        count = min(count, examples["images1"].shape[0])
        arrays.update(images1=examples["images1"][:count].numpy(), clean=examples["clean"][:count].numpy(),
                      images2=examples["images2"][:count].numpy(), boxes=examples["boxes"][:count],
                      keys=np.array(examples["keys"][:count]))
        arrays.update({f"dissimilarity_{m}": examples["maps"][m].dissimilarity[:count] for m in METHODS})
        arrays.update({f"randomised_{m}": examples["random_maps"][m].dissimilarity[:count] for m in METHODS})
        arrays.update({f"control_{c}": v[:count] for c, v in examples["controls"].items()})
    with atomic_path(Path(path), suffix=".npz") as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)
