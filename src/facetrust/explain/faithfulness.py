"""How faithful is a map?  Deletion / insertion curves and known-truth localisation.

**Deletion / insertion** (xSSAB's replacement protocol, Huber et al., WACV 2024; RISE's deletion
and insertion, Petsiuk et al., BMVC 2018).  A map (h, w) over face 1 of each pair ranks its cells
(pixels when h, w = H, W; the cells of a grid map otherwise, each covering the pixels whose
centres fall in it).  For every fraction f of ``fractions`` (default 0, 0.05, …, 0.95) the top
round(f·h·w) cells are replaced by the ``replacement`` image (deletion; default zeros = mid-grey),
or face 1 starts as the replacement and gets the top cells back (insertion); face 2 is fixed.
Tracked per pair: the cosine; per fraction: FNMR = share of genuine pairs below ``threshold`` and
FMR = share of impostor pairs at or above it, the threshold being fixed once on the intact set.
Areas (trapezoid over the fractions, divided by their span, so an area is a mean level):
``cosine_genuine``, ``cosine_impostor``, ``fnmr``, ``fmr``.  For genuine pairs rank by the
*similarity* map (a faithful map makes FNMR rise early: a large deletion area), for impostors by
the *dissimilarity* map (FMR rises early); :func:`random_maps` gives the random-order baseline.

**Known-truth localisation**: genuine pairs whose face 1 carries a recorded occluder box
(``occluders.csv`` of the synthetic benchmark).  Per pair, with D the non-negative
dissimilarity map upsampled (nearest) to the crop: mass ratio = Σ_box D / Σ D; box share =
box pixels / crop pixels (what a map spread evenly would score); pointing game = share of D's
maximal pixels that lie in the box (1 or 0 for a unique maximum).

Every summary comes with a percentile bootstrap confidence interval over pairs
(:func:`bootstrap_ci`, seeded; genuine and impostor pairs resampled separately).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from facetrust.evaluate.bootstrap import bootstrap_ci
from facetrust.errors import ConfigError, InputError

FRACTIONS = tuple(round(0.05 * k, 2) for k in range(20))  # 0 .. 0.95
MODES = ("deletion", "insertion")
#: Deletion to grey, insertion from grey, insertion from a blurred face (RISE).
CURVE_MODES = ("deletion", "insertion", "insertion_blur")


def area(fractions: Sequence[float], values: np.ndarray) -> float:
    """Normalised area under a curve: trapezoid over ``fractions`` divided by their span."""
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0 / (x[-1] - x[0]))


def random_maps(count: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(count, h, w) uniform random maps: the random-order baseline."""
    return np.random.default_rng(seed).random((count, *shape))


def cell_index(map_shape: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """(H, W) index of the map cell (row-major) that holds each pixel centre."""
    (h, w), (height, width) = map_shape, image_size
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return rows[:, None] * w + cols[None, :]


def upsample(values: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map at the (H, W) pixel grid, nearest cell (a cell's value on each of its pixels)."""
    values = np.asarray(values, dtype=np.float64)
    return values.ravel()[cell_index(values.shape, image_size)]


@dataclass
class CurveResult:
    """Deletion or insertion curves of one ordering over a set of pairs."""

    mode: str
    fractions: np.ndarray  # (F,)
    cosine: np.ndarray  # (P, F)
    issame: np.ndarray  # (P,) bool
    threshold: float

    def rates(self, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``fnmr`` and ``fmr`` per fraction (NaN without genuine / impostor pairs)."""
        indices = np.arange(self.issame.size) if indices is None else indices
        cosine, same = self.cosine[indices], self.issame[indices]
        genuine, impostor = cosine[same], cosine[~same]
        nan = np.full(self.fractions.size, np.nan)
        return {"fnmr": (genuine < self.threshold).mean(axis=0) if len(genuine) else nan,
                "fmr": (impostor >= self.threshold).mean(axis=0) if len(impostor) else nan}

    def areas(self, indices: np.ndarray | None = None) -> dict[str, float]:
        """Every area over the pairs ``indices`` (default all)."""
        return {name: self.area(name, indices) for name in ("fnmr", "fmr", "cosine_genuine", "cosine_impostor")}

    def area(self, name: str, indices: np.ndarray | None = None) -> float:
        """One area (``cosine_genuine``, ``cosine_impostor``, ``fnmr`` or ``fmr``) over ``indices``:
        what a bootstrap replicate recomputes, and nothing else."""
        indices = np.arange(self.issame.size) if indices is None else indices
        if name in ("fnmr", "fmr"):
            return area(self.fractions, self.rates(indices)[name])
        same = self.issame[indices]
        rows = self.cosine[indices][same if name == "cosine_genuine" else ~same]
        return area(self.fractions, rows.mean(axis=0)) if len(rows) else float("nan")

    def area_intervals(self, *, seed: int = 0, n_boot: int = 1000, level: float = 0.95) -> dict[str, tuple]:
        """``{area name: (estimate, low, high)}`` with a stratified bootstrap over pairs."""
        groups = [np.flatnonzero(self.issame), np.flatnonzero(~self.issame)]
        names = ("cosine_genuine", "cosine_impostor", "fnmr", "fmr")
        return {name: bootstrap_ci(lambda idx, n=name: self.area(n, idx), groups, seed=seed,
                                   n_boot=n_boot, level=level) for name in names}


def _edited_faces(image: torch.Tensor, replacement: torch.Tensor, order: np.ndarray, cells: np.ndarray,
                  counts: Sequence[int], mode: str) -> torch.Tensor:
    """(F, 3, H, W): face 1 with the first ``counts[j]`` cells of ``order`` replaced / inserted."""
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)  # position of each cell in the ordering
    pixel_rank = torch.from_numpy(rank[cells])
    edited = []
    for count in counts:
        chosen = (pixel_rank < count).unsqueeze(0)
        if mode == "deletion":
            edited.append(torch.where(chosen, replacement, image))
        else:
            edited.append(torch.where(chosen, image, replacement))
    return torch.stack(edited)


def deletion_curves(embed: Callable[[torch.Tensor], torch.Tensor], images1: torch.Tensor, images2: torch.Tensor,
                    maps: np.ndarray, issame, threshold: float, *, mode: str = "deletion",
                    fractions: Sequence[float] = FRACTIONS, replacement: torch.Tensor | None = None,
                    progress: bool = True) -> CurveResult:
    """Deletion (or insertion) curves of ``maps`` (P, h, w) over face 1 of the pairs (module
    docstring).  ``images1``/``images2`` are (P, 3, H, W) normalised tensors; ``embed`` runs in
    eval mode under ``no_grad``; ties in a map keep row-major order."""
    if mode not in MODES:
        raise ConfigError(f"faithfulness mode {mode!r} not allowed; allowed: {', '.join(MODES)}")
    maps = np.asarray(maps, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if maps.ndim != 3 or maps.shape[0] != images1.shape[0] or images1.shape != images2.shape \
            or issame.shape != (images1.shape[0],):
        raise InputError(f"faithfulness: maps {maps.shape}, images {tuple(images1.shape)} / "
                         f"{tuple(images2.shape)} and labels {issame.shape} do not describe the same pairs")
    fractions = np.asarray(fractions, dtype=np.float64)
    size = tuple(images1.shape[2:])
    replacement = torch.zeros_like(images1[0]) if replacement is None else replacement.to(images1)
    cells = cell_index(maps.shape[1:], size)
    counts = [int(round(f * maps[0].size)) for f in fractions]  # top round(f · h·w) cells
    cosine = np.empty((maps.shape[0], fractions.size))
    with torch.no_grad():
        references = F.normalize(embed(images2), dim=1)
        for k in tqdm(range(maps.shape[0]), desc=f"{mode} curves", unit="pair", leave=False, disable=not progress):
            order = np.argsort(-maps[k].ravel(), kind="stable")
            faces = _edited_faces(images1[k], replacement, order, cells, counts, mode)
            cosine[k] = (F.normalize(embed(faces), dim=1) @ references[k]).double().numpy()
    return CurveResult(mode, fractions, cosine, issame, float(threshold))


def edit_scores(pair_score: Callable[[torch.Tensor, int], np.ndarray], images1: torch.Tensor, maps: np.ndarray, *,
                mode: str, fractions: Sequence[float] = FRACTIONS, replacements: torch.Tensor | None = None,
                progress: bool = False) -> np.ndarray:
    """(P, F, S) scores of face 1 of each pair edited in the order of ``maps`` (P, h, w): deletion
    replaces the top cells by ``replacements[k]`` (default grey), insertion starts from
    ``replacements[k]`` and puts the top cells of face 1 back (RISE's insertion from a blurred
    canvas, or the restoration of a clean twin into its occluded image).  ``pair_score(faces, k)``
    scores (F, 3, H, W) edited faces against pair k's face 2: (F, S) for S scores."""
    if mode not in MODES:
        raise ConfigError(f"faithfulness mode {mode!r} not allowed; allowed: {', '.join(MODES)}")
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or maps.shape[0] != images1.shape[0]:
        raise InputError(f"faithfulness: maps {maps.shape} and images {tuple(images1.shape)} differ in pairs")
    size = tuple(images1.shape[2:])
    cells = cell_index(maps.shape[1:], size)
    counts = [int(round(f * maps[0].size)) for f in fractions]
    rows = []
    with torch.no_grad():
        for k in tqdm(range(maps.shape[0]), desc=f"{mode} curves", unit="pair", leave=False, disable=not progress):
            order = np.argsort(-maps[k].ravel(), kind="stable")
            replacement = torch.zeros_like(images1[k]) if replacements is None else replacements[k]
            faces = _edited_faces(images1[k], replacement, order, cells, counts, mode)
            rows.append(np.asarray(pair_score(faces, k), dtype=np.float64).reshape(len(counts), -1))
    return np.stack(rows)


def eer_threshold(scores, issame) -> tuple[float, float]:
    """``(threshold, EER)``: the threshold where FNMR (genuine below it) and FMR (impostors at or
    above it) are closest, among the observed scores; EER = their mean there."""
    scores = np.asarray(scores, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if not issame.any() or issame.all():
        raise InputError("EER: need genuine and impostor pairs")
    candidates = np.unique(scores)
    genuine, impostor = np.sort(scores[issame]), np.sort(scores[~issame])
    fnmr = np.searchsorted(genuine, candidates, side="left") / genuine.size
    fmr = 1.0 - np.searchsorted(impostor, candidates, side="left") / impostor.size
    best = int(np.argmin(np.abs(fnmr - fmr)))
    return float(candidates[best]), float((fnmr[best] + fmr[best]) / 2.0)


def threshold_at_fmr(scores, issame, fmr: float = 1e-2) -> float:
    """The smallest threshold whose FMR (impostor scores >= it) is at most ``fmr`` on these pairs."""
    impostor = np.sort(np.asarray(scores, dtype=np.float64)[~np.asarray(issame, dtype=bool)])
    if impostor.size == 0:
        raise InputError("threshold: no impostor pairs")
    allowed = int(np.floor(fmr * impostor.size))  # impostors that may lie at or above it
    return float(np.nextafter(impostor[-1], np.inf)) if allowed == 0 else float(impostor[impostor.size - allowed])


@dataclass
class Localisation:
    """Per-pair localisation numbers and their summaries (see the module docstring)."""

    mass_ratio: np.ndarray  # (P,) NaN where the map is all zero
    box_share: np.ndarray  # (P,)
    pointing: np.ndarray  # (P,)

    def summary(self, *, seed: int = 0, n_boot: int = 1000, level: float = 0.95) -> dict[str, object]:
        """Mean mass ratio and pointing game with bootstrap CIs, the chance levels, the lift."""
        valid = np.flatnonzero(np.isfinite(self.mass_ratio))
        mass = bootstrap_ci(lambda i: float(np.mean(self.mass_ratio[i])), [valid], seed=seed, n_boot=n_boot,
                            level=level)
        lift = bootstrap_ci(lambda i: float(np.mean(self.mass_ratio[i]) / np.mean(self.box_share[i])), [valid],
                            seed=seed, n_boot=n_boot, level=level)
        pointing = bootstrap_ci(lambda i: float(np.mean(self.pointing[i])), [valid], seed=seed, n_boot=n_boot,
                                level=level)
        return {"pairs": int(valid.size), "empty_maps": int(self.mass_ratio.size - valid.size),
                "mass_ratio": mass, "box_share": float(np.mean(self.box_share[valid])),
                "mass_lift": lift, "pointing": pointing}


def localisation(dissimilarity_maps: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int]) -> Localisation:
    """Mass ratio, box share and pointing game of non-negative ``dissimilarity_maps`` (P, h, w)
    against occluder ``boxes`` (P, 4: x0, y0, x1, y1 in the pixels of the (H, W) crop)."""
    from facetrust.data.synthetic.occluders import box_mask

    maps = np.asarray(dissimilarity_maps, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    if maps.ndim != 3 or boxes.shape != (maps.shape[0], 4):
        raise InputError(f"localisation: {maps.shape} maps but boxes of shape {boxes.shape}")
    if (maps < 0).any():
        raise InputError("localisation: dissimilarity maps must be non-negative")
    mass, share, pointing = (np.empty(maps.shape[0]) for _ in range(3))
    for k in range(maps.shape[0]):
        pixels = upsample(maps[k], image_size)
        inside = box_mask(boxes[k], image_size)
        total = pixels.sum()
        share[k] = inside.mean()
        mass[k] = pixels[inside].sum() / total if total > 0 else np.nan
        peak = pixels == pixels.max()
        pointing[k] = (peak & inside).sum() / peak.sum()
    return Localisation(mass, share, pointing)


AREA_NAMES = ("cosine_genuine", "cosine_impostor", "fnmr", "fmr")


def paired_area_difference(result: CurveResult, baseline: CurveResult, *, seed: int = 0, n_boot: int = 1000,
                           level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """``{area name: (estimate, low, high)}`` of ``result``'s area minus ``baseline``'s over the same
    pairs (e.g. a map against the random order), the pairs resampled together (stratified by
    genuine/impostor) so the interval is a paired one."""
    if result.issame.shape != baseline.issame.shape or (result.issame != baseline.issame).any() \
            or result.mode != baseline.mode:
        raise InputError("faithfulness: paired areas need the same pairs and mode")
    groups = [np.flatnonzero(result.issame), np.flatnonzero(~result.issame)]
    return {name: bootstrap_ci(lambda idx, n=name: result.area(n, idx) - baseline.area(n, idx), groups, seed=seed,
                               n_boot=n_boot, level=level) for name in AREA_NAMES}


def best_accuracy_threshold(scores, issame) -> float:
    """The score threshold (same iff score >= it) with the highest accuracy on these pairs: the
    midpoint between the two sorted scores where the best split falls (first one on ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    order = np.argsort(scores, kind="stable")
    s, same = scores[order], issame[order]
    # accepting everything from position i on: correct = genuine at >= i + impostors below i
    genuine_from = np.concatenate([np.cumsum(same[::-1])[::-1], [0]])
    impostor_below = np.concatenate([[0], np.cumsum(~same)])
    best = int(np.argmax(genuine_from + impostor_below))
    if best == 0:
        return float(np.nextafter(s[0], -np.inf))
    if best == s.size:
        return float(np.nextafter(s[-1], np.inf))
    return float((s[best - 1] + s[best]) / 2.0)
