"""Every explanation method's maps for face 1 of a set of pairs, read the same way.

Each method gives, per pair, three maps over face 1 (docs/FORMATS.md "Explanation results"):

* ``support`` — signed, higher = this region argues for "same" (deletion of genuine pairs removes
  it first);
* ``against`` — signed, higher = this region argues for "different" (deletion of impostor pairs
  removes it first);
* ``dissimilarity`` — non-negative evidence against the match (known-truth localisation).

Methods, with τ the xCos decision threshold (the cosine-map palette is centred on it, as the xCos
figures are), c the cosine map and a the attention (both h x w grid cells):

======================== ================================  ===========================  ==================
method                   support                           against                      dissimilarity
======================== ================================  ===========================  ==================
``xcos_attention``       a                                 a                            a (attention mass)
``xcos_contribution``    a · (c − τ)  (Σ = xCos − τ)       −a · (c − τ)                 max(−a · (c − τ), 0)
``cosine_map``           c − τ                             τ − c                        max(τ − c, 0)
``random_cells``         uniform noise per cell            the same                     the same
``xssab``                positive − negative (xSSAB)       negative − positive          max(negative − positive, 0)
``integrated_gradients`` similar-dims integrated gradient  −dissimilar-dims gradient    max(−dissimilar, 0)
``perturbation``         RISE slope                        −slope                       max(−slope, 0)
``random_pixels``        uniform noise per pixel           the same                     the same
======================== ================================  ===========================  ==================

The attention has no sign: it ranks cells by weight for both kinds of pair and carries no claim of
"for" or "against" (:data:`UNSIGNED`); its known-truth test is whether its mass on the occluder
drops when the occluder is removed (the clean twin).  ``random_cells`` / ``random_pixels`` are the
random-order baselines at the grid's and the pixels' resolution; each map is compared with the
baseline of its own resolution.  Grid methods explain xCos (τ = the xCos threshold of the
validation split); pixel methods explain the grid feature's cosine (xSSAB split at the EER
threshold of that cosine on the validation split).

Controls (:func:`control_maps`), maps that need no explanation method: ``abs_difference`` = |x1 − x2|
averaged over RGB (model-free), and ``norm_product`` = ‖g1_ij‖‖g2_ij‖/(‖g1‖‖g2‖) on the grid (the
flattened grid cosine is exactly Σ_ij of it times the cosine map c_ij).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from facetrust.explain.defaults import MapSettings  # noqa: F401 (re-exported: the stages' settings)
from facetrust.explain.maps import MAP_METHODS
from facetrust.models.xcos import XCosModel

GRID_METHODS = ("xcos_attention", "xcos_contribution", "cosine_map", "random_cells")
#: The pixel methods: every entry of the map registry (facetrust.explain.maps.MAP_METHODS), then the
#: random pixel order.
PIXEL_METHODS = (*MAP_METHODS.names(), "random_pixels")
METHODS = GRID_METHODS + PIXEL_METHODS
BASELINE = {**{m: "random_cells" for m in GRID_METHODS}, **{m: "random_pixels" for m in PIXEL_METHODS}}
RANDOM_ORDERS = ("random_cells", "random_pixels")
UNSIGNED = ("xcos_attention",)  # no "for"/"against" claims
#: maps that depend on a seed (beyond the random orders), as the registry declares them
STOCHASTIC = tuple(name for name, method in MAP_METHODS.items() if method.stochastic)
CONTROLS = ("abs_difference", "norm_product")


@dataclass(frozen=True)
class MapThresholds:
    """Thresholds the maps need, fitted on the validation split: τ (xCos) and xSSAB's thr."""

    xcos: float  # palette centre of the xCos maps (xCos threshold of best accuracy)
    cosine_eer: float  # EER threshold of the grid cosine (xSSAB's split at thr/d)


@dataclass
class MethodMaps:
    """(P, h, w) arrays of one method (see the module docstring); ``extras``: per-pair numbers
    (``completeness_gap`` of integrated gradients, ``split_fraction`` of the dimension splits)."""

    support: np.ndarray
    against: np.ndarray
    dissimilarity: np.ndarray
    extras: dict = field(default_factory=dict)


def _signed(values: list[np.ndarray]) -> MethodMaps:
    stacked = np.stack(values)
    return MethodMaps(stacked, -stacked, np.maximum(-stacked, 0.0))


def grid_methods(model: XCosModel, images1: torch.Tensor, images2: torch.Tensor, threshold: float,
                 rng: np.random.Generator) -> dict[str, MethodMaps]:
    """The xCos maps (attention, contribution, cosine map) and the random cell order."""
    model.eval()
    with torch.no_grad():
        output = model(images1, images2)
    cos = output.cosine_map.double().numpy()
    attention = output.attention.double().numpy()
    noise = rng.random(cos.shape)
    return {
        "xcos_attention": MethodMaps(attention, attention, attention),
        "xcos_contribution": _signed(list(attention * (cos - threshold))),
        "cosine_map": _signed(list(cos - threshold)),
        "random_cells": MethodMaps(noise, noise, noise),
    }


def pixel_methods(model: XCosModel, images1: torch.Tensor, images2: torch.Tensor, settings: MapSettings,
                  rng: np.random.Generator, *, cosine_threshold: float, progress: bool = True,
                  seed_offset: int = 0, only: tuple[str, ...] | None = None) -> dict[str, MethodMaps]:
    """Every map of the registry (:data:`~facetrust.explain.maps.MAP_METHODS`: xSSAB, the
    integrated-gradients split, the perturbation map, …) of the pair cosine of the xCos network's
    grid feature, and the random pixel order (``only``: a subset).  Pair k's seed is
    ``settings.seed + seed_offset + k``; xSSAB splits at ``cosine_threshold``."""
    model.eval()
    only = (*MAP_METHODS.names(), "random_pixels") if only is None else only
    support: dict[str, list] = {m: [] for m in only if m != "random_pixels"}
    against: dict[str, list] = {m: [] for m in support}
    extras: dict[str, dict[str, list]] = {m: {} for m in support}
    for k in tqdm(range(images1.shape[0]), desc="maps", unit="pair", leave=False, disable=not progress):
        for name in support:
            method = MAP_METHODS.get(name)
            result = method.compute(model.embedding, images1[k], images2[k],
                                    **method.options(settings, cosine_threshold, settings.seed + seed_offset + k))
            support[name].append(method.support(result))
            against[name].append(method.against(result))
            for key in method.extras:
                extras[name].setdefault(key, []).append(getattr(result, key))
    out = {name: MethodMaps(np.stack(support[name]), np.stack(against[name]),
                            np.maximum(np.stack(against[name]), 0.0),
                            {key: np.asarray(values, dtype=np.float64) for key, values in extras[name].items()})
           for name in support}
    if "random_pixels" in only:
        noise = rng.random((images1.shape[0], *images1.shape[2:]))
        out["random_pixels"] = MethodMaps(noise, noise, noise)
    return out


def all_methods(model: XCosModel, images1: torch.Tensor, images2: torch.Tensor, thresholds: MapThresholds,
                settings: MapSettings, rng: np.random.Generator, *, progress: bool = True) -> dict[str, MethodMaps]:
    """Every method of :data:`METHODS` for the pairs (images1[k], images2[k])."""
    return {**grid_methods(model, images1, images2, thresholds.xcos, rng),
            **pixel_methods(model, images1, images2, settings, rng, cosine_threshold=thresholds.cosine_eer,
                            progress=progress)}


def control_maps(model: XCosModel, images1: torch.Tensor, images2: torch.Tensor) -> dict[str, np.ndarray]:
    """The model-free ``abs_difference`` (P, H, W) and the ``norm_product`` grid weights (P, h, w)."""
    model.eval()
    with torch.no_grad():
        output = model(images1, images2)
    norm1, norm2 = output.grid1.norm(dim=1), output.grid2.norm(dim=1)  # (P, h, w) per-cell norms
    total = output.grid1.flatten(1).norm(dim=1) * output.grid2.flatten(1).norm(dim=1)
    weights = (norm1 * norm2 / total.view(-1, 1, 1)).double().numpy()
    difference = (images1 - images2).abs().mean(dim=1).double().numpy()
    return {"abs_difference": difference, "norm_product": weights}
