"""Training-free similarity maps for any embedding model ``embed(images) -> (N, D)``.

Both maps explain face 1 of a pair (x1, x2) with face 2 held fixed (swap the faces for the other
map); images are normalised tensors (3, H, W) as the model reads them, and the *baseline* b is
the "removed" image (default zeros = mid-grey after the (x - 127.5)/127.5 normalisation).
Each returns a :class:`PairMap` with two non-negative (H, W) evidence maps, ``similarity``
(where face 1 supports the match) and ``dissimilarity`` (where it argues against it), and the
signed maps they come from in ``contributions``.

**xSSAB map** (:func:`xssab_map`; Huber et al., "Efficient Explainable Face Verification based on
Similarity Score Argument Backpropagation", WACV 2024), literally: with ê1, ê2 the unit embeddings
and thr the decision threshold (the EER threshold of the validation split), the dimensions with
ê1_k ê2_k >= thr/d are the positive argument, the rest the negative one; the **plain gradient** of
each argument's sum with respect to x1, its absolute value averaged over RGB, gives the positive
and the negative map, and ``combined = positive − negative``.

**Integrated-gradients split map** (:func:`integrated_gradients_map`; integrated gradients,
Sundararajan et al., ICML 2017, applied to xSSAB's idea of splitting the cosine's dimensions, split
at 0 by default -- a variant, not xSSAB).
With ê = f/‖f‖ the cosine is cos(x, x2) = Σ_k ê(x)_k ê2_k.  The dimensions split by the sign of
their contribution at x1: S+ = {k : ê1_k ê2_k >= t/D}, S- = the rest (t = ``split_threshold``,
xSSAB's thr/d; 0 by default), so that cos = F+(x) + F-(x) with F±(x) = Σ_{k∈S±} ê(x)_k ê2_k.
For each part, integrated gradients along x(α) = b + α(x1 − b) (midpoint rule, ``steps``)::

    IG±[c, p] = (x1 − b)[c, p] · mean_α ∂F±/∂x[c, p](x(α))
    contributions["similar_dims"][p]    = Σ_c IG+[c, p]
    contributions["dissimilar_dims"][p] = Σ_c IG-[c, p]

and **Σ_p similar_dims + Σ_p dissimilar_dims = cos(x1, x2) − cos(b, x2)** (completeness, exact
as steps → ∞; ``completeness_gap`` is the left side minus the right side for the steps used).
Evidence: ``similarity = max(similar_dims, 0)`` (pixels that raise the agreeing dimensions),
``dissimilarity = max(−dissimilar_dims, 0)`` (pixels that push the disagreeing dimensions further
apart).  ``steps=1`` is gradient × (input − baseline) at the midpoint.

**Perturbation map** (:func:`perturbation_map`; RISE, Petsiuk et al., BMVC 2018, with
CorrRISE's (WACV 2024) signed similarity / dissimilarity reading).  ``num_masks`` random masks
M_i: a ``cells`` x ``cells`` grid of Bernoulli(``keep_probability``) cells, bilinearly upsampled
to (cells + 1) cell sizes and cropped at a random shift (RISE).  Face 1 becomes
b + M_i ⊙ (x1 − b) and scores s_i = cos(f(·), f(x2)).  Per pixel the least-squares slope of the
score on how much of that pixel is kept::

    contributions["slope"][p] = Σ_i (M_i(p) − M̄(p)) (s_i − s̄) / Σ_i (M_i(p) − M̄(p))²

i.e. the estimated change of the pair's cosine when pixel p goes from removed to kept (for
binary masks, the mean score with p kept minus with p removed).  ``similarity = max(slope, 0)``,
``dissimilarity = max(−slope, 0)``.  Masks come from ``numpy.random.default_rng(seed)``; scores
are computed in batches of ``batch_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from facetrust.errors import ConfigError, InputError
from facetrust.explain.defaults import DEFAULT_CELLS, DEFAULT_IG_STEPS, DEFAULT_MASKS
from facetrust.registry import Registry

EmbedFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PairMap:
    """Explanation of face 1 of a pair (see the module docstring for every field's definition)."""

    method: str
    similarity: np.ndarray  # (H, W) >= 0
    dissimilarity: np.ndarray  # (H, W) >= 0
    cosine: float  # cos(x1, x2)
    contributions: dict[str, np.ndarray] = field(default_factory=dict)  # signed (H, W) maps
    baseline_cosine: float | None = None  # cos(b, x2) (gradient map)
    completeness_gap: float | None = None  # integrated gradients: Σ contributions − (cosine − baseline_cosine)
    split_fraction: float | None = None  # share of embedding dimensions on the similar / positive side


def _check_pair(image1: torch.Tensor, image2: torch.Tensor) -> None:
    if image1.dim() != 3 or image1.shape != image2.shape:
        raise InputError(f"maps: expected two (3, H, W) images of one shape, got {tuple(image1.shape)} "
                         f"and {tuple(image2.shape)}")


def _unit(embed: EmbedFn, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(embed(images), dim=1)


def xssab_map(embed: EmbedFn, image1: torch.Tensor, image2: torch.Tensor, *, threshold: float) -> PairMap:
    """xSSAB's map of face 1 (module docstring): ``contributions`` holds ``positive``,
    ``negative`` (mean |∇| over RGB) and ``combined`` = positive − negative; ``similarity`` =
    max(combined, 0), ``dissimilarity`` = max(−combined, 0).  ``threshold`` is the decision
    threshold thr (the split is at thr/d)."""
    _check_pair(image1, image2)
    with torch.no_grad():
        reference = _unit(embed, image2.unsqueeze(0))[0]
    x = image1.detach().clone().requires_grad_(True)
    products = _unit(embed, x.unsqueeze(0))[0] * reference
    positive_dims = products.detach() >= threshold / products.numel()
    parts = {}
    for name, dims in (("positive", positive_dims), ("negative", ~positive_dims)):
        (gradient,) = torch.autograd.grad(products[dims].sum(), x, retain_graph=True)
        parts[name] = gradient.abs().mean(dim=0).double().numpy()
    combined = parts["positive"] - parts["negative"]
    return PairMap(method="xssab", similarity=np.maximum(combined, 0.0), dissimilarity=np.maximum(-combined, 0.0),
                   cosine=float(products.detach().sum()), contributions={**parts, "combined": combined},
                   split_fraction=float(positive_dims.double().mean()))


def integrated_gradients_map(embed: EmbedFn, image1: torch.Tensor, image2: torch.Tensor, *,
                             baseline: torch.Tensor | None = None, steps: int = DEFAULT_IG_STEPS,
                             split_threshold: float = 0.0) -> PairMap:
    """The integrated-gradient map of the pair's cosine, split into the similar and dissimilar
    embedding dimensions (module docstring).  ``embed`` must be differentiable (eval mode)."""
    _check_pair(image1, image2)
    if steps < 1:
        raise ConfigError(f"gradient map: steps must be >= 1, got {steps}")
    baseline = torch.zeros_like(image1) if baseline is None else baseline.to(image1)
    with torch.no_grad():
        reference = _unit(embed, image2.unsqueeze(0))[0]
        endpoints = _unit(embed, torch.stack([image1, baseline]))
    contribution = endpoints[0] * reference
    similar = contribution >= split_threshold / contribution.numel()  # S+ at x1 (xSSAB-style split)
    alphas = (torch.arange(steps, dtype=image1.dtype) + 0.5) / steps
    delta = image1 - baseline
    path = (baseline + alphas.view(-1, 1, 1, 1) * delta).requires_grad_(True)
    products = _unit(embed, path) * reference  # (steps, D)
    parts = {}
    for name, dims in (("similar_dims", similar), ("dissimilar_dims", ~similar)):
        (gradient,) = torch.autograd.grad(products[:, dims].sum(), path, retain_graph=True)
        parts[name] = (delta * gradient.mean(dim=0)).sum(dim=0).double().numpy()
    cosine, baseline_cosine = float(contribution.sum()), float((endpoints[1] * reference).sum())
    gap = float(sum(part.sum() for part in parts.values()) - (cosine - baseline_cosine))
    return PairMap(
        method="integrated_gradients",
        similarity=np.maximum(parts["similar_dims"], 0.0),
        dissimilarity=np.maximum(-parts["dissimilar_dims"], 0.0),
        cosine=cosine,
        contributions=parts,
        baseline_cosine=baseline_cosine,
        completeness_gap=gap,
        split_fraction=float(similar.double().mean()),
    )


def rise_masks(num_masks: int, size: tuple[int, int], *, cells: int = DEFAULT_CELLS, keep_probability: float = 0.5,
               seed: int = 0) -> torch.Tensor:
    """(num_masks, H, W) float32 soft masks in [0, 1] (RISE): upsampled random cell grids, shifted."""
    if num_masks < 2 or cells < 1 or not 0.0 < keep_probability < 1.0:
        raise ConfigError(f"perturbation map: need num_masks >= 2, cells >= 1, 0 < keep_probability < 1; "
                          f"got {num_masks}, {cells}, {keep_probability}")
    height, width = size
    rng = np.random.default_rng(seed)
    grid = (rng.random((num_masks, 1, cells, cells)) < keep_probability).astype(np.float32)
    cell_h, cell_w = -(-height // cells), -(-width // cells)
    up = F.interpolate(torch.from_numpy(grid), size=((cells + 1) * cell_h, (cells + 1) * cell_w),
                       mode="bilinear", align_corners=False)[:, 0].clamp_(0.0, 1.0)  # rounding past 1
    dy = rng.integers(0, cell_h, num_masks)
    dx = rng.integers(0, cell_w, num_masks)
    return torch.stack([up[i, dy[i]:dy[i] + height, dx[i]:dx[i] + width] for i in range(num_masks)])


def perturbation_map(embed: EmbedFn, image1: torch.Tensor, image2: torch.Tensor, *,
                     num_masks: int = DEFAULT_MASKS, cells: int = DEFAULT_CELLS, keep_probability: float = 0.5, batch_size: int = 128, seed: int = 0,
                     baseline: torch.Tensor | None = None, progress: bool = True) -> PairMap:
    """The RISE-style slope map of the pair's cosine on kept pixels of face 1 (module docstring)."""
    _check_pair(image1, image2)
    baseline = torch.zeros_like(image1) if baseline is None else baseline.to(image1)
    masks = rise_masks(num_masks, tuple(image1.shape[1:]), cells=cells, keep_probability=keep_probability,
                       seed=seed)
    scores = []
    with torch.no_grad():
        reference = _unit(embed, image2.unsqueeze(0))[0]
        cosine = float((_unit(embed, image1.unsqueeze(0))[0] * reference).sum())
        delta = image1 - baseline
        for start in tqdm(range(0, num_masks, batch_size), desc="perturbation map", unit="batch",
                          leave=False, disable=not progress):
            chunk = masks[start:start + batch_size].unsqueeze(1)
            scores.append((_unit(embed, baseline + chunk * delta) * reference).sum(dim=1))
    score = torch.cat(scores).double()
    centred_masks = masks.double() - masks.double().mean(dim=0)
    centred_scores = (score - score.mean()).view(-1, 1, 1)
    variance = (centred_masks**2).sum(dim=0)
    slope = (centred_masks * centred_scores).sum(dim=0) / variance.clamp_min(1e-12)
    slope = slope.numpy()
    return PairMap(
        method="perturbation",
        similarity=np.maximum(slope, 0.0),
        dissimilarity=np.maximum(-slope, 0.0),
        cosine=cosine,
        contributions={"slope": slope},
    )


@dataclass(frozen=True)
class MapMethod:
    """A pixel map method of :data:`MAP_METHODS`: what it computes and what it reads.

    ``compute(embed, image1, image2, **options)`` gives a :class:`PairMap`; ``options(settings,
    threshold, seed)`` are its keyword arguments, from the shared settings (``steps``, ``masks``,
    ``cells``, ``keep_probability``, ``batch_size``: ``explain.defaults.MapSettings``), the
    threshold fitted on the validation split and the pair's seed; ``support`` and ``against`` read
    the signed maps the faithfulness and sanity stages score (docs in ``explain.method_maps``);
    ``extras`` names the per-pair numbers they keep (PairMap attributes); ``stochastic``: the map
    depends on the seed (its seed-to-seed agreement is reported)."""

    description: str
    compute: Callable[..., PairMap]
    options: Callable[[Any, float | None, int], dict]
    support: Callable[[PairMap], np.ndarray]
    against: Callable[[PairMap], np.ndarray]
    extras: tuple[str, ...] = ()
    stochastic: bool = False
    resolution: str = "pixel"


#: The pixel map methods (``facetrust explain map --method``, ``verify --explain`` and the explain
#: stages); the grid methods of xCos are in :mod:`facetrust.explain.method_maps`.
MAP_METHODS: Registry[MapMethod] = Registry("map method")


def _needs_threshold(threshold: float | None) -> dict:
    if threshold is None:
        raise ConfigError("map method 'xssab': needs the EER threshold of a validation split (--threshold)")
    return {"threshold": float(threshold)}


MAP_METHODS.register("xssab")(MapMethod(
    "xSSAB (Huber et al., WACV 2024): |plain gradient| of the agreeing and disagreeing dimensions, split at thr/d",
    xssab_map, lambda settings, threshold, seed: _needs_threshold(threshold),
    support=lambda r: r.contributions["combined"], against=lambda r: -r.contributions["combined"],
    extras=("split_fraction",)))
MAP_METHODS.register("integrated_gradients")(MapMethod(
    "integrated gradients of the agreeing and disagreeing dimensions, split at 0 (a variant of xSSAB's idea)",
    integrated_gradients_map, lambda settings, threshold, seed: {"steps": settings.steps},
    support=lambda r: r.contributions["similar_dims"], against=lambda r: -r.contributions["dissimilar_dims"],
    extras=("completeness_gap", "split_fraction")))
MAP_METHODS.register("perturbation")(MapMethod(
    "RISE (Petsiuk et al., BMVC 2018): slope of the pair's cosine on how much of each pixel is kept",
    perturbation_map,
    lambda settings, threshold, seed: {"num_masks": settings.masks, "cells": settings.cells,
                                       "keep_probability": settings.keep_probability,
                                       "batch_size": settings.batch_size, "seed": seed, "progress": False},
    support=lambda r: r.contributions["slope"], against=lambda r: -r.contributions["slope"], stochastic=True))


def pair_map(method: str, embed: EmbedFn, image1: torch.Tensor, image2: torch.Tensor, **options) -> PairMap:
    """The map of :data:`MAP_METHODS` named ``method`` (its ``compute`` with ``options``)."""
    return MAP_METHODS.get(method).compute(embed, image1, image2, **options)


def method_map(method: str, embed: EmbedFn, image1: torch.Tensor, image2: torch.Tensor, settings, *,
               threshold: float | None = None, seed: int = 0) -> PairMap:
    """The map named ``method`` with its options read from the shared ``settings`` (MapMethod.options)."""
    entry = MAP_METHODS.get(method)
    return entry.compute(embed, image1, image2, **entry.options(settings, threshold, seed))
