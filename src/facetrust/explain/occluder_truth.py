"""Known truth from the synthetic benchmark's occluders and their clean twins (issue 17 item 3).

A genuine pair with exactly one occluded face (``occluders.csv``) has, for that face, a **clean
twin** (:func:`facetrust.data.synthetic.occluders.clean_twin`: identical outside the box).  Per pair
Δcos = cos(twin, x2) − cos(occluded, x2) on the grid feature's cosine (and Δ of xCos): how much the
occluder changed the score.  Only pairs with Δcos >= a threshold fitted on the validation split are
localised: an occluder that does not change the score need not be marked by a faithful map.

**Localisation with controls** (:func:`localisation_with_controls`): per pair, lift = (share of
the non-negative map's mass inside the box) / (box's share of the image).  Every method meets
controls that would expose a broken one: the same method on a weight-randomised network
(:mod:`facetrust.explain.sanity`), the model-free |x1 − x2| map and the grid's norm-product
weights.  "Points at the occluder" holds only when the paired lift over the **strongest** control
(highest mean lift) has a 95 % bootstrap interval above 0.

**Restoration** (:func:`restoration_curves`; xSSAB's replacement protocol and XFR's inpainting
game, with the exact clean twin instead of inpainting): starting from the occluded face, the twin's
pixels are put back in the order of a map; tracked: the recovery (cos − cos_occluded) /
(cos_twin − cos_occluded) and FNMR at the validation split's EER threshold; compared with a random
order and the controls by the paired area difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from facetrust.data.synthetic.occluders import box_in_input, clean_twin
from facetrust.data.transforms import fit_to_size, to_tensor
from facetrust.errors import InputError
from facetrust.evaluate.bootstrap import bootstrap_ci
from facetrust.explain.faithfulness import area, edit_scores, localisation
from facetrust.data.pairset import PairSet

RESTORE_FRACTIONS = tuple(round(0.025 * k, 3) for k in range(21))  # 0 .. 0.5 of the image


@dataclass(frozen=True)
class OccludedPair:
    """A genuine pair with one occluded face: .bin image numbers and the box (stored-crop px)."""

    occluded: int
    other: int
    box: tuple[float, float, float, float]


def occluded_genuine_pairs(pairs: PairSet, boxes: Mapping[str, tuple | None]) -> list[OccludedPair]:
    """Every genuine pair of ``pairs`` with exactly one occluded face, in pair order."""
    found = []
    for k in np.flatnonzero(pairs.issame):
        first, second = boxes.get(pairs.key(2 * k)), boxes.get(pairs.key(2 * k + 1))
        if (first is None) != (second is None):
            found.append(OccludedPair(2 * k, 2 * k + 1, first) if first is not None
                         else OccludedPair(2 * k + 1, 2 * k, second))
    return found


def twin_faces(pairs: PairSet, items: Sequence[OccludedPair], twins: Mapping[int, np.ndarray],
               size: Sequence[int]) -> torch.Tensor:
    """(n, 3, H, W) clean twins of the occluded faces, at the model's input size."""
    faces = []
    for item in items:
        if item.occluded not in twins:
            raise InputError(f"{pairs.path}: image {item.occluded} has an occluder but no clean twin")
        twin = clean_twin(pairs.pixels(item.occluded), twins[item.occluded], item.box)
        faces.append(to_tensor(fit_to_size(twin, size)))
    return torch.stack(faces) if faces else torch.zeros((0, 3, *size))


def input_boxes(pairs: PairSet, items: Sequence[OccludedPair], size: Sequence[int]) -> np.ndarray:
    """(n, 4) boxes in the model's input pixels."""
    return np.array([box_in_input(item.box, pairs.image_size(), size) for item in items]).reshape(-1, 4)


def score_pairs(model, images1: torch.Tensor, images2: torch.Tensor, batch: int = 256) -> dict[str, np.ndarray]:
    """(n,) grid cosine and xCos of the pairs (images1[k], images2[k])."""
    cosine, xcos = [], []
    with torch.no_grad():
        for start in range(0, images1.shape[0], batch):
            output = model(images1[start:start + batch], images2[start:start + batch])
            cosine.append(output.grid_cosine.double().numpy())
            xcos.append(output.xcos.double().numpy())
    if not cosine:
        return {"cosine": np.zeros(0), "xcos": np.zeros(0)}
    return {"cosine": np.concatenate(cosine), "xcos": np.concatenate(xcos)}


def occluder_deltas(model, pairs: PairSet, items: Sequence[OccludedPair], twins: Mapping[int, np.ndarray],
                    size: Sequence[int]) -> dict[str, np.ndarray]:
    """Per pair: cos and xCos of the occluded face and of its twin against face 2, and the Δs."""
    occluded = pairs.faces([i.occluded for i in items], size)
    others = pairs.faces([i.other for i in items], size)
    clean = twin_faces(pairs, items, twins, size)
    with_occluder, without = score_pairs(model, occluded, others), score_pairs(model, clean, others)
    return {"cos_occluded": with_occluder["cosine"], "cos_clean": without["cosine"],
            "xcos_occluded": with_occluder["xcos"], "xcos_clean": without["xcos"],
            "delta_cos": without["cosine"] - with_occluder["cosine"],
            "delta_xcos": without["xcos"] - with_occluder["xcos"]}


def delta_threshold(cosine: np.ndarray, issame: np.ndarray, fraction: float) -> dict[str, float]:
    """Δcos threshold = ``fraction`` × (mean genuine − mean impostor cosine) of a (validation) set:
    an occluder "matters" when it moves the score by that share of the genuine–impostor gap."""
    gap = float(np.mean(cosine[issame]) - np.mean(cosine[~issame]))
    return {"threshold": fraction * gap, "fraction": float(fraction), "genuine_impostor_gap": gap}


def qualifying_pairs(deltas: Mapping[str, np.ndarray], threshold: float) -> np.ndarray:
    """Indices of the pairs whose occluder lowers the cosine by at least ``threshold`` (Δcos >= it)."""
    return np.flatnonzero(np.asarray(deltas["delta_cos"]) >= float(threshold))


def _lifts(maps: np.ndarray, boxes: np.ndarray, size) -> np.ndarray:
    result = localisation(np.maximum(maps, 0.0), boxes, size)
    return result.mass_ratio / result.box_share  # NaN for an all-zero map


def localisation_with_controls(methods: Mapping[str, np.ndarray], randomised: Mapping[str, np.ndarray],
                               controls: Mapping[str, np.ndarray], boxes: np.ndarray, size, *, seed: int,
                               n_boot: int) -> dict:
    """Per method: mean lift with its interval, each control's, the strongest control and the
    paired lift over it (module docstring).  Maps are non-negative (P, h, w) dissimilarity maps."""
    def interval(values: np.ndarray) -> list[float]:
        valid = np.flatnonzero(np.isfinite(values))
        if valid.size == 0:
            return [float("nan")] * 3
        return list(bootstrap_ci(lambda i: float(np.mean(values[i])), [valid], seed=seed, n_boot=n_boot))

    control_lifts = {name: _lifts(maps, boxes, size) for name, maps in controls.items()}
    out = {"controls": {name: {"lift": interval(lifts)} for name, lifts in control_lifts.items()}}
    for method, maps in methods.items():
        own = _lifts(maps, boxes, size)
        lifts = dict(control_lifts)
        if method in randomised:
            lifts = {"randomised_network": _lifts(randomised[method], boxes, size), **lifts}
        entry = {"pairs": int(np.isfinite(own).sum()), "lift": interval(own),
                 "box_share": float(np.mean(localisation(np.ones_like(maps), boxes, size).box_share)),
                 "control_lifts": {name: interval(values) for name, values in lifts.items()}}
        means = {name: float(np.nanmean(values)) if np.isfinite(values).any() else -np.inf
                 for name, values in lifts.items()}
        strongest = max(means, key=means.get)
        entry["strongest_control"] = strongest
        entry["lift_over_strongest"] = interval(own - lifts[strongest])
        out[method] = entry
    return out


def restoration_curves(model, occluded: torch.Tensor, twins: torch.Tensor, images2: torch.Tensor,
                       orders: Mapping[str, np.ndarray], threshold: float, *, seed: int, n_boot: int,
                       fractions: Sequence[float] = RESTORE_FRACTIONS) -> dict:
    """Restore each twin into its occluded face in each order's sequence (module docstring).

    ``orders``: name -> (P, h, w) maps (higher = restored first); ``threshold``: the grid cosine's
    EER threshold of the validation split (FNMR of these genuine pairs)."""
    with torch.no_grad():
        references = F.normalize(model.embedding(images2), dim=1)
        start = (F.normalize(model.embedding(occluded), dim=1) * references).sum(dim=1).double().numpy()
        end = (F.normalize(model.embedding(twins), dim=1) * references).sum(dim=1).double().numpy()

    def pair_score(faces: torch.Tensor, k: int) -> np.ndarray:
        return (F.normalize(model.embedding(faces), dim=1) @ references[k]).double().numpy()[:, None]

    span = np.where(np.abs(end - start) > 1e-9, end - start, np.nan)
    curves = {}
    for name, maps in orders.items():
        cosine = edit_scores(pair_score, twins, maps, mode="insertion", fractions=fractions,
                             replacements=occluded)[:, :, 0]
        curves[name] = {"cosine": cosine, "recovery": (cosine - start[:, None]) / span[:, None]}
    x = np.asarray(fractions, dtype=np.float64)
    valid = np.flatnonzero(np.isfinite(span))

    def recovery_area(name: str, i: np.ndarray) -> float:
        return area(x, np.nanmean(curves[name]["recovery"][i], axis=0))

    out = {"fractions": list(map(float, fractions)), "pairs": int(valid.size), "threshold": float(threshold),
           "fnmr_occluded": float(np.mean(start < threshold)), "fnmr_clean": float(np.mean(end < threshold)),
           "orders": {}}
    for name, curve in curves.items():
        out["orders"][name] = {
            "recovery": np.nanmean(curve["recovery"][valid], axis=0).tolist(),
            "cosine": curve["cosine"].mean(axis=0).tolist(),
            "fnmr": (curve["cosine"] < threshold).mean(axis=0).tolist(),
            "recovery_area": list(bootstrap_ci(lambda i, n=name: recovery_area(n, i), [valid], seed=seed,
                                               n_boot=n_boot)),
        }

    def versus(name: str, other: str) -> list[float]:
        return list(bootstrap_ci(lambda i: recovery_area(name, i) - recovery_area(other, i), [valid], seed=seed,
                                 n_boot=n_boot))

    return out, versus
