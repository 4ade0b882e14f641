"""Every explanation method's maps for face 1 of a set of pairs, read the same way.

Each method gives, per pair, three maps over face 1 (docs/FORMATS.md "Explanation results"):

* ``support`` — signed, higher = this region argues for "same" (deletion of genuine pairs removes
  it first);
* ``against`` — signed, higher = this region argues for "different" (deletion of impostor pairs
  removes it first);
* ``dissimilarity`` — non-negative evidence against the match (known-truth localisation).

Methods, with τ the xCos decision threshold (the cosine-map palette is centred on it, as the xCos
figures are), c the cosine map and a the attention (both h x w grid cells):

=====================  ================================  ===========================  ==================
method                 support                           against                      dissimilarity
=====================  ================================  ===========================  ==================
``xcos_attention``     a                                 a                            a (attention mass)
``xcos_contribution``  a · (c − τ)  (Σ = xCos − τ)       −a · (c − τ)                 max(−a · (c − τ), 0)
``cosine_map``         c − τ                             τ − c                        max(τ − c, 0)
``random_cells``       uniform noise per cell            the same                     the same
``gradient``           similar-dims integrated gradient  −dissimilar-dims gradient    max(−dissimilar, 0)
``perturbation``       RISE slope                        −slope                       max(−slope, 0)
``random_pixels``      uniform noise per pixel           the same                     the same
=====================  ================================  ===========================  ==================

The attention has no sign: it ranks cells by weight for both kinds of pair, and its localisation
number is the attention mass on the occluder (xCos's claim: attention moves away from occluded
parts).  ``random_cells`` / ``random_pixels`` are the random-order baselines at the grid's and the
pixels' resolution; each map is compared with the baseline of its own resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from facetrust.explain.maps import gradient_map, perturbation_map
from facetrust.explain.xcos import XCosModel

GRID_METHODS = ("xcos_attention", "xcos_contribution", "cosine_map", "random_cells")
PIXEL_METHODS = ("gradient", "perturbation", "random_pixels")
METHODS = GRID_METHODS + PIXEL_METHODS
BASELINE = {**{m: "random_cells" for m in GRID_METHODS}, **{m: "random_pixels" for m in PIXEL_METHODS}}


@dataclass
class MapSettings:
    """Settings of the training-free maps (defaults = the schema's ``explain`` section)."""

    steps: int = 16  # integrated-gradient steps
    masks: int = 250  # RISE masks per pair
    cells: int = 6  # RISE grid
    keep_probability: float = 0.5
    batch_size: int = 128
    seed: int = 0


@dataclass
class MethodMaps:
    """(P, h, w) arrays of one method (see the module docstring)."""

    support: np.ndarray
    against: np.ndarray
    dissimilarity: np.ndarray


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
                  rng: np.random.Generator, *, progress: bool = True) -> dict[str, MethodMaps]:
    """The gradient and perturbation maps of the pair cosine of the xCos network's grid feature,
    and the random pixel order."""
    model.eval()
    support = {"gradient": [], "perturbation": []}
    against = {"gradient": [], "perturbation": []}
    for k in tqdm(range(images1.shape[0]), desc="maps", unit="pair", leave=False, disable=not progress):
        gradient = gradient_map(model.embedding, images1[k], images2[k], steps=settings.steps)
        support["gradient"].append(gradient.contributions["similar_dims"])
        against["gradient"].append(-gradient.contributions["dissimilar_dims"])
        slope = perturbation_map(model.embedding, images1[k], images2[k], num_masks=settings.masks,
                                 cells=settings.cells, keep_probability=settings.keep_probability,
                                 batch_size=settings.batch_size, seed=settings.seed + k,
                                 progress=False).contributions["slope"]
        support["perturbation"].append(slope)
        against["perturbation"].append(-slope)
    out = {name: MethodMaps(np.stack(support[name]), np.stack(against[name]), np.maximum(np.stack(against[name]), 0.0))
           for name in support}
    noise = rng.random((images1.shape[0], *images1.shape[2:]))
    out["random_pixels"] = MethodMaps(noise, noise, noise)
    return out


def all_methods(model: XCosModel, images1: torch.Tensor, images2: torch.Tensor, threshold: float,
                settings: MapSettings, rng: np.random.Generator, *, progress: bool = True) -> dict[str, MethodMaps]:
    """Every method of :data:`METHODS` for the pairs (images1[k], images2[k])."""
    return {**grid_methods(model, images1, images2, threshold, rng),
            **pixel_methods(model, images1, images2, settings, rng, progress=progress)}
