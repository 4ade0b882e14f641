"""Reject verification (ScaleFace): TAR at FAR after dropping the least certain pairs.

For each fraction f the ``floor(f · P)`` pairs with the largest pair uncertainty are removed (ties:
the earlier pair first) and TAR at each FAR is read off ``sklearn.metrics.roc_curve`` of the kept
pairs with the nearest-FPR convention (``evaluate.roc``).  The result is bit-identical to that
naive recompute, but nothing is sorted in full:

1. select the top of the score order the largest FAR needs (``np.partition``, then a sort of those
   pairs only); give every pair a stand-in for its removal rank (position in the uncertainty
   order) that compares with every ``floor(f · P)`` as the rank would (:func:`threshold_ranks`:
   a partition at those counts, no argsort), so "kept at f" is ``rank >= floor(f · P)``;
2. the ROC of the kept pairs is the cumulative count of kept genuine / impostor pairs at the end
   of every group of equal scores that still holds a kept pair, thinned exactly as sklearn's
   ``drop_intermediate`` does;
3. every target FAR ≤ max(fars) lies near the top of the score order, so only a prefix of the
   sorted pairs is needed: the prefix is grown until it holds two kept ROC points with distinct
   FPR above the largest target, which guarantees that no later point can be nearer (or tie).

Pair uncertainty is stored *larger = less certain* (``evaluate.fusion``).  ScaleFace combines the
two images' predicted scales s (confidences); with ``uncertainty = 1 / s`` that is
``pair_uncertainty(u1, u2, how, space="confidence")``: the combination is taken over 1/u and
inverted back.  ``how`` is ``"mean"``, ``"max"``, ``"min"``, ``"harmonic"`` or ``"product"``.

TAR readings (``tar_method``, recorded in every reject JSON): the ROC readings of ``evaluate.roc``
(``nearest``, the InsightFace default; ``interpolate``; ``strict``) or ``kth_impostor``, ScaleFace's
own (stat-ml/scale-face ``face_lib``, after PFE's ``find_thresholds_by_FAR``): the kept impostor
scores sorted from high to low, k = round(n_impostor · FAR) (NumPy's round-half-to-even), the
threshold is the k-th of them (the largest plus 1e-8 when k = 0), and TAR is the fraction of kept
genuine scores ≥ the threshold (:func:`kth_impostor_tar`), with ScaleFace's kept count
int(n · (1 − fraction)).  Where few impostors decide a FAR the nearest ROC vertex and the k-th
impostor fall on different operating points, so the two readings give different TARs.

Which FARs a fraction can resolve is judged on the impostor pairs **kept** at that fraction
(``unresolved_fars_by_fraction``): rejecting pairs removes impostors, and a FAR that 10 impostors
resolved with none rejected may rest on 5 at 50 % rejected.

Template-level variant (IJB): a template's uncertainty is the mean (or min, or harmonic mean) of
its images', taken **in the chosen space** (:func:`template_uncertainty_in_space`): in confidence
space the template's confidence is the mean of its images' confidences (ScaleFace averages the
scales), in uncertainty space the mean of their uncertainties (PFE's reference sums σ²).  Template
pairs are then rejected like image pairs.  ``space="method"`` takes each method's own space
(the ``uncertainty_space`` the embeddings file's method declared).  ``probe_templates``:
``"all_images"`` pools every template as the method does (ScaleFace's "full" setup), ``"first_image"``
is ScaleFace's single-image-probe variant (``equal_uncertainty_enroll``: the second template of
every pair, the probe, is its first image alone, feature and uncertainty; the enrolled template is
pooled as usual).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from facetrust.errors import ConfigError, InputError
from facetrust.formats import metrics_record, naming_file, tar_column
from facetrust.evaluate.roc import (TAR_METHODS, far_key, plain_float, require_genuine_and_impostor, roc_points,
                                    tar_at_far)
from facetrust.io import atomic_path, outputs_together, write_json_atomic

REJECT_FARS = (1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2)  # ScaleFace
KTH_IMPOSTOR = "kth_impostor"  # ScaleFace's TAR reading (module docstring)
REJECT_TAR_METHODS = TAR_METHODS + (KTH_IMPOSTOR,)
TAR_READINGS = {
    "nearest": "ROC point nearest the target FAR, ties to the larger TAR (InsightFace eval_ijbc.py)",
    "interpolate": "linear interpolation of TAR on the upper ROC envelope",
    "strict": "largest TAR whose FAR does not exceed the target",
    "kth_impostor": "ScaleFace's code: threshold at the round(n_impostor_kept * FAR)-th highest kept impostor score "
                    "(half to even; its score + 1e-8 when 0), TAR = kept genuine scores >= threshold",
}
KTH_IMPOSTOR_EPSILON = 1e-8  # find_thresholds_by_FAR's epsilon above the top impostor when k = 0
PROBE_TEMPLATES = ("all_images", "first_image")
DEFAULT_FRACTIONS = tuple(np.round(np.arange(0.0, 0.5 + 1e-9, 0.01), 10))
PAIR_HOWS = ("mean", "max", "min", "harmonic", "product")
SPACES = ("uncertainty", "confidence")
TEMPLATE_HOWS = ("mean", "min", "harmonic")

def _positive(values: np.ndarray, what: str) -> np.ndarray:
    if not (values > 0).all():
        raise InputError(f"{what}: needs positive uncertainties (entry {int(np.flatnonzero(~(values > 0))[0])})")
    return values


def _combine(a: np.ndarray, b: np.ndarray, how: str) -> np.ndarray:
    if how == "mean":
        return (a + b) / 2.0
    if how == "max":
        return np.maximum(a, b)
    if how == "min":
        return np.minimum(a, b)
    if how == "harmonic":
        _positive(a, "harmonic"), _positive(b, "harmonic")
        return 2.0 / (1.0 / a + 1.0 / b)
    return a * b  # product


def pair_uncertainty(u1, u2, how: str = "mean", space: str = "uncertainty") -> np.ndarray:
    """Uncertainty of each pair from its two members' uncertainties (float64, larger = less certain).

    ``space="uncertainty"`` combines u1, u2 directly; ``space="confidence"`` combines c = 1/u
    (ScaleFace scales, SCF κ) and returns 1 / combined confidence.
    """
    if how not in PAIR_HOWS:
        raise ConfigError(f"pair_uncertainty: {how!r} is not one of {list(PAIR_HOWS)}")
    if space not in SPACES:
        raise ConfigError(f"uncertainty_space: {space!r} is not one of {list(SPACES)}")
    u1 = np.asarray(u1, dtype=np.float64)
    u2 = np.asarray(u2, dtype=np.float64)
    if u1.shape != u2.shape:
        raise InputError(f"pair uncertainties have shapes {u1.shape} and {u2.shape}")
    if not (np.isfinite(u1).all() and np.isfinite(u2).all()):
        raise InputError("pair uncertainty: uncertainties must be finite")
    if space == "uncertainty":
        if how == "product":
            _positive(u1, "product"), _positive(u2, "product")
        return _combine(u1, u2, how)
    c1 = 1.0 / _positive(u1, "confidence space")
    c2 = 1.0 / _positive(u2, "confidence space")
    return 1.0 / _combine(c1, c2, how)


def template_uncertainty(image_uncertainty, template_ids, how: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """``(template_ids_unique, uncertainty)``: per template the mean / min / harmonic mean of its images'."""
    if how not in TEMPLATE_HOWS:
        raise ConfigError(f"template_uncertainty: {how!r} is not one of {list(TEMPLATE_HOWS)}")
    u = np.asarray(image_uncertainty, dtype=np.float64)
    unique_ids, index = np.unique(np.asarray(template_ids), return_inverse=True)
    counts = np.bincount(index, minlength=unique_ids.size)
    if how == "mean":
        return unique_ids, np.bincount(index, weights=u, minlength=unique_ids.size) / counts
    if how == "harmonic":
        inverse = 1.0 / _positive(u, "harmonic template uncertainty")
        return unique_ids, counts / np.bincount(index, weights=inverse, minlength=unique_ids.size)
    out = np.full(unique_ids.size, np.inf)
    np.minimum.at(out, index, u)
    return unique_ids, out


def method_space(space: str, declared: str | None) -> str:
    """``space`` itself, or for ``"method"`` the space the embeddings file's method declared
    (``uncertainty_space``, written by ``embed`` from the method's own declaration); a file without
    that key is read in uncertainty space."""
    if space == "method":
        return declared or "uncertainty"
    if space not in SPACES:
        raise ConfigError(f"uncertainty_space: {space!r} is not one of {list(SPACES) + ['method']}")
    return space


def template_uncertainty_in_space(image_uncertainty, template_ids, how: str = "mean",
                                  space: str = "uncertainty") -> tuple[np.ndarray, np.ndarray]:
    """:func:`template_uncertainty` with the aggregation taken over confidences 1/u when
    ``space="confidence"`` (then inverted back, so the result is still larger = less certain)."""
    if space == "uncertainty":
        return template_uncertainty(image_uncertainty, template_ids, how)
    confidence = 1.0 / _positive(np.asarray(image_uncertainty, dtype=np.float64), "confidence space")
    # "min" uncertainty = the most certain image = the max confidence: min of -c, negated.
    if how == "min":
        ids, negated = template_uncertainty(-confidence, template_ids, "min")
        return ids, 1.0 / -negated
    ids, pooled = template_uncertainty(confidence, template_ids, how)
    return ids, 1.0 / pooled


def kth_impostor_tar(scores, labels, fars: Sequence[float], weights=None, order=None) -> np.ndarray:
    """TAR at each FAR read as ScaleFace's code reads it (module docstring): threshold at the
    round(n·FAR)-th highest impostor score, TAR = share of genuine scores ≥ it.

    ``weights`` (integer bootstrap multiplicities; 0 leaves a pair out) count each pair that many
    times, as if it were repeated; ``order`` (optional) sorts ``scores`` from high to low, so that
    replicates need no sort of their own.  NaN when a class is empty."""
    return KthImpostorReader(scores, labels, order)(fars, weights)


class KthImpostorReader:
    """:func:`kth_impostor_tar` for many weightings of one set of scored pairs: the pairs are put
    in score order once, so a weighting costs two gathers and two cumulative sums.

    The weights are integer multiplicities, so every sum below is exact and equals the one the
    repeated pairs would give, in any order."""

    def __init__(self, scores, labels, order=None):
        scores = np.asarray(scores, dtype=np.float64)
        genuine = np.asarray(labels).astype(bool)
        if order is None:
            order = np.argsort(-scores, kind="stable")
        self.size = scores.size
        self.impostor_rows = order[~genuine[order]]  # high to low
        self.impostor_scores = scores[self.impostor_rows]
        self.genuine_rows = order[genuine[order]]
        self.negated_genuine = -scores[self.genuine_rows]  # ascending

    def __call__(self, fars: Sequence[float], weights=None) -> np.ndarray:
        w = np.ones(self.size) if weights is None else np.asarray(weights, dtype=np.float64)
        impostor_weight, genuine_weight = w.take(self.impostor_rows), w.take(self.genuine_rows)
        return self.read(fars, lambda lo, hi: impostor_weight[lo:hi], float(impostor_weight.sum()), genuine_weight)

    def read(self, fars: Sequence[float], impostor_prefix: Callable[[int, int], np.ndarray], impostor_total: float,
             genuine_weight: np.ndarray) -> np.ndarray:
        """TAR at ``fars`` from weights in the reader's orders: ``impostor_prefix(lo, hi)`` gives the
        weights of impostors ``lo:hi`` from the highest score down (``w.take(impostor_rows[lo:hi])``),
        ``impostor_total`` their sum, ``genuine_weight`` = ``w.take(genuine_rows)``.

        Only the impostors down to the deepest threshold are read (:func:`prefix_reaching`): at FAR
        <= 1e-2 a few per cent of them."""
        out = np.full(len(fars), np.nan)
        genuine_total = float(genuine_weight.sum()) if genuine_weight.size else 0.0
        if impostor_total == 0 or genuine_total == 0:
            return out
        size = self.impostor_rows.size
        pieces: dict[tuple[int, int], np.ndarray] = {}  # every search reads the same chunks: gather each once

        def impostor_piece(lo: int, hi: int) -> np.ndarray:
            if (lo, hi) not in pieces:
                pieces[lo, hi] = impostor_prefix(lo, hi)
            return pieces[lo, hi]

        for j, far in enumerate(fars):
            k = int(np.round(impostor_total * float(far)))
            if k == 0:  # just above the highest impostor present (the first of positive weight)
                first, _ = prefix_reaching(impostor_piece, size, 0.0, "right")
                threshold = self.impostor_scores[first] + KTH_IMPOSTOR_EPSILON
            else:  # the first impostor whose running weight reaches k (its own weight is > 0)
                first, _ = prefix_reaching(impostor_piece, size, k, "left")
                threshold = self.impostor_scores[min(first, size - 1)]
            accepted = int(np.searchsorted(self.negated_genuine, -threshold, side="right"))  # genuine >= threshold
            out[j] = (float(genuine_weight[:accepted].sum()) if accepted else 0.0) / genuine_total
        return out


#: Elements :func:`prefix_reaching` reads first; each further read is twice the last.
PREFIX_CHUNK = 4096


def prefix_reaching(values: Callable[[int, int], np.ndarray], size: int, target: float, side: str) -> tuple[int, float]:
    """``(i, s)``: ``i = np.searchsorted(np.cumsum(v), target, side)`` for the non-negative
    integer-valued weights ``v`` (bootstrap multiplicities) that ``values(lo, hi)`` gives piece by
    piece (``v[lo:hi]``, ``size`` in all), and ``s`` = the sum of ``v[:i]``.

    The pieces are read in growing chunks until the running sum passes ``target``: a search that
    ends early reads and sums only that far.  Partial sums of integers below 2^53 are exact in
    float64 in any order, so ``i`` and ``s`` are those of the full running sum."""
    lo, chunk, running = 0, PREFIX_CHUNK, 0.0
    while lo < size:
        hi = min(size, lo + chunk)
        piece = values(lo, hi)
        piece_sum = float(piece.sum())
        if (running + piece_sum > target) if side == "right" else (running + piece_sum >= target):
            cumulative = np.cumsum(piece)
            cumulative += running
            inside = int(np.searchsorted(cumulative, target, side=side))
            return lo + inside, (float(cumulative[inside - 1]) if inside else running)
        running += piece_sum
        lo, chunk = hi, 2 * chunk
    return size, running


def unresolved_by_fraction(fars: Sequence[float], fractions, n_impostor_kept) -> dict[str, list[str]]:
    """``{fraction: [FAR keys]}``: the FARs below 10 / (impostors kept at that fraction)."""
    from facetrust.evaluate.bootstrap import unresolved_fars

    return {f"{float(f):g}": unresolved_fars(fars, int(n)) for f, n in zip(fractions, n_impostor_kept)}


def rejected_count(fraction: float, n_pairs: int, tar_method: str = "nearest") -> int:
    """Pairs removed at ``fraction``: floor(fraction · n_pairs), robust to 0.07 · 100 = 7.000000000000001;
    with ScaleFace's reading (``kth_impostor``) its own count, n − int(n · (1 − fraction)) (it keeps
    the first int(n · (1 − fraction)) pairs of the uncertainty order)."""
    if tar_method == KTH_IMPOSTOR:
        return n_pairs - int(n_pairs * (1 - fraction))
    return int(np.floor(fraction * n_pairs + 1e-7))


def rejection_order(uncertainty: np.ndarray) -> np.ndarray:
    """Pair indices in removal order: most uncertain first, ties the earlier pair first.

    Same as ``np.argsort(-uncertainty, kind="stable")``; an unstable (faster) sort is followed by
    putting the indices inside each run of equal values back in ascending order.
    """
    negated = -np.asarray(uncertainty, dtype=np.float64)
    order = np.argsort(negated, kind="quicksort")
    sorted_values = negated[order]
    run_starts = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    if run_starts.all():
        return order
    run_id = np.cumsum(run_starts) - 1
    return np.sort(run_id * np.int64(order.size) + order) % order.size


def threshold_ranks(uncertainty: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For every pair a stand-in Y for its removal rank r (position in :func:`rejection_order`)
    with ``Y >= n  ⇔  r >= n`` for each ``n`` in ``thresholds``: Y = the largest threshold ≤ r (or 0).

    No sort of all pairs: one selection (``np.partition`` at the thresholds) gives the last value
    removed at each threshold, a binary search places every pair between them, and only pairs
    tied with one of those values are ordered by index (the tie rule of :func:`rejection_order`).
    """
    neg = -np.asarray(uncertainty, dtype=np.float64)  # removal order: ascending neg, then index
    n_pairs = neg.size
    cuts = np.unique(np.asarray(thresholds, dtype=np.int64))
    cuts = cuts[(cuts > 0) & (cuts <= n_pairs)]
    if cuts.size == 0:
        return np.zeros(n_pairs, dtype=np.int64)
    last_removed = np.partition(neg, cuts - 1)[cuts - 1]  # non-decreasing with the threshold
    values = np.unique(last_removed)
    slot = np.searchsorted(values, neg)  # boundary values below each pair
    tied = values[np.minimum(slot, values.size - 1)] == neg
    # Pairs strictly before each boundary value in the removal order.
    before = np.cumsum(np.bincount(slot, minlength=values.size + 1))[: values.size]
    before -= np.bincount(slot[tied], minlength=values.size)
    # Thresholds whose last removed value is below each pair: from its slot, without a second search.
    kept_for = np.r_[np.searchsorted(last_removed, values), last_removed.size][slot]
    tied_pairs = np.flatnonzero(tied)  # ascending index: the tie order
    if tied_pairs.size:
        value_of = slot[tied_pairs]
        order = np.argsort(value_of, kind="stable")
        tied_pairs, value_of = tied_pairs[order], value_of[order]
        starts = np.flatnonzero(np.r_[True, value_of[1:] != value_of[:-1]])
        for first, stop in zip(starts, np.r_[starts[1:], tied_pairs.size]):
            k = value_of[first]
            lo, hi = np.searchsorted(last_removed, values[k], "left"), np.searchsorted(last_removed, values[k], "right")
            # At threshold j with this last value, the first (cut_j - before) tied pairs are removed.
            tie_rank = np.arange(stop - first)
            kept_for[tied_pairs[first:stop]] += np.searchsorted(cuts[lo:hi] - before[k], tie_rank, side="right")
    return np.r_[0, cuts][kept_for]


def descending_score_order(scores: np.ndarray) -> np.ndarray:
    """Indices that sort ``scores`` from largest to smallest (order inside ties unspecified).

    float32 scores (IJB pair scores) are sorted as packed 64-bit keys (order-preserving bits of
    the score above the index), which ``np.sort`` handles several times faster than ``argsort``.
    """
    n = scores.size
    if scores.dtype != np.float32 or n >= 2**32:
        return np.argsort(scores, kind="quicksort")[::-1]
    bits = np.ascontiguousarray(scores).view(np.uint32)
    # IEEE-754 order trick: flip all bits of negatives, set the sign bit of non-negatives.
    ordered = np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))
    keys = (ordered.astype(np.uint64) << np.uint64(32)) | np.arange(n, dtype=np.uint64)
    keys.sort()
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)[::-1]


@dataclass
class RejectCurve:
    """TAR at each FAR (rows: fractions) after rejecting the least certain pairs."""

    fractions: np.ndarray
    n_rejected: np.ndarray
    n_genuine_kept: np.ndarray
    n_impostor_kept: np.ndarray
    fars: tuple[float, ...]
    tar: np.ndarray  # (n_fractions, n_fars)
    tar_method: str

    def to_frame(self) -> pd.DataFrame:
        """One row per fraction: fraction, n_rejected, n_genuine_kept, n_impostor_kept, TAR@FAR=… columns."""
        frame = pd.DataFrame({
            "fraction": self.fractions,
            "n_rejected": self.n_rejected,
            "n_genuine_kept": self.n_genuine_kept,
            "n_impostor_kept": self.n_impostor_kept,
        })
        for j, far in enumerate(self.fars):
            frame[tar_column(far)] = self.tar[:, j]
        return frame

    def to_json(self) -> dict:
        """Plain-JSON form: lists per fraction, ``tar_at_far`` maps a FAR key to its list (NaN -> null)."""
        return {
            "fractions": [float(f) for f in self.fractions],
            "n_rejected": [int(n) for n in self.n_rejected],
            "n_genuine_kept": [int(n) for n in self.n_genuine_kept],
            "n_impostor_kept": [int(n) for n in self.n_impostor_kept],
            "tar_at_far": {far_key(far): [plain_float(t) for t in self.tar[:, j]] for j, far in enumerate(self.fars)},
            "tar_method": self.tar_method,
            "unresolved_fars_by_fraction": unresolved_by_fraction(self.fars, self.fractions, self.n_impostor_kept),
        }


class _SortedPairs:
    """The top pairs by descending score (whole groups of equal scores), with removal ranks.

    Only the top ``limit`` pairs (and every pair tied with the last of them) are sorted: a
    selection (``np.partition``, linear time) finds them, so the cost is O(P + K log K) for the K
    pairs the largest target FAR needs instead of a sort of all P pairs.  ``size`` is the number of
    pairs held; ``complete`` says whether they are all P pairs.
    """

    def __init__(self, scores: np.ndarray, labels: np.ndarray, removal_rank: np.ndarray, limit: int | None = None):
        n_pairs = scores.size
        if limit is None or limit >= n_pairs:
            chosen = None
            order = descending_score_order(scores)  # ties in any order: only group ends matter
        else:
            cutoff = np.partition(scores, n_pairs - limit)[n_pairs - limit]
            chosen = np.flatnonzero(scores >= cutoff)  # the top `limit` pairs and all ties of the last
            order = chosen[descending_score_order(scores[chosen])]
        self.total = n_pairs
        sorted_scores = scores[order]
        self.genuine = labels[order].astype(bool)
        self.rank = removal_rank[order]
        self.size = order.size
        self.complete = self.size == n_pairs
        # Runs of equal scores (sklearn: np.where(np.diff(y_score))): last position, run of each pair.
        new_group = np.diff(sorted_scores) != 0
        self.group_ends = np.r_[np.flatnonzero(new_group), self.size - 1]
        self.group_id = np.r_[0, np.cumsum(new_group, dtype=np.int32)]
        self.impostor_cumsum = np.cumsum(~self.genuine)

    def prefix_end(self, impostors_needed: int) -> int:
        """Smallest prefix length ending on a score group that holds ``impostors_needed`` impostors."""
        position = int(np.searchsorted(self.impostor_cumsum, impostors_needed, side="left"))
        if position >= self.size:
            return self.size
        group = int(np.searchsorted(self.group_ends, position, side="left"))
        return int(self.group_ends[group]) + 1

    def roc_prefix(self, n_rejected: int, length: int, n_genuine: int, n_impostor: int):
        """(fpr, tpr, complete) of the kept pairs' sklearn ROC over the first ``length`` sorted pairs.

        Only points whose ``drop_intermediate`` fate is known are returned; ``complete`` says
        whether the prefix is the whole set (then the curve is exactly sklearn's).
        """
        complete = length >= self.size and self.complete
        kept = np.flatnonzero(self.rank[:length] >= n_rejected)
        genuine = self.genuine[kept]
        group = self.group_id[kept]
        # Each group of equal scores holding a kept pair is one point, at its last kept pair.
        ends = np.flatnonzero(np.r_[group[1:] != group[:-1], kept.size > 0])
        tps = np.cumsum(genuine)[ends]
        fps = ends + 1 - tps
        if complete:
            if tps.size > 2:  # sklearn's drop_intermediate: keep the ends and every change of step
                keep = np.r_[True, self._step_changes(fps, tps), True]
                fps, tps = fps[keep], tps[keep]
        elif tps.size >= 2:  # the last point's fate needs the next group: leave it out
            keep = np.r_[True, self._step_changes(fps, tps)]
            fps, tps = fps[:-1][keep], tps[:-1][keep]
        else:
            fps, tps = fps[:0], tps[:0]
        zero = np.zeros(1)
        fpr = np.concatenate([zero, fps]) / float(n_impostor)
        tpr = np.concatenate([zero, tps]) / float(n_genuine)
        return fpr, tpr, complete

    @staticmethod
    def _step_changes(fps: np.ndarray, tps: np.ndarray) -> np.ndarray:
        """For points 1 .. n-2: does the step after differ from the step before (np.diff(·, 2) != 0)?"""
        step_f, step_t = np.diff(fps), np.diff(tps)
        return (step_f[1:] != step_f[:-1]) | (step_t[1:] != step_t[:-1])


def _prefix_suffices(fpr: np.ndarray, far_max: float) -> bool:
    """True when two returned points have distinct FPR above ``far_max`` (nothing later can be nearer)."""
    above = fpr[fpr > far_max]
    return above.size >= 2 and above[-1] > above[0]


def reject_curve(
    scores,
    labels,
    pair_uncertainty,
    fars: Sequence[float] = REJECT_FARS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    tar_method: str = "nearest",
    progress: bool = False,
) -> RejectCurve:
    """TAR at ``fars`` for every rejected ``fraction`` of the most uncertain pairs (see module docstring).

    ``labels`` 1 = genuine; ``pair_uncertainty`` larger = less certain.  A fraction that leaves no
    genuine or no impostor pair gets NaN.  Equal to recomputing ``roc_curve`` on the kept pairs.
    """
    if tar_method not in REJECT_TAR_METHODS:
        raise ConfigError(f"tar_method: {tar_method!r} is not one of {list(REJECT_TAR_METHODS)}")
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    uncertainty = np.asarray(pair_uncertainty, dtype=np.float64)
    if not (scores.ndim == 1 and scores.shape == labels.shape == uncertainty.shape):
        raise InputError(f"scores {scores.shape}, labels {labels.shape}, uncertainty {uncertainty.shape} must match")
    if not np.isin(labels, (0, 1)).all():
        raise InputError("labels must be 1 (genuine) or 0 (impostor)")
    if not np.isfinite(scores).all() or np.isnan(uncertainty).any():
        raise InputError("scores must be finite and uncertainties not NaN")
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.size == 0 or (fractions < 0).any() or (fractions >= 1).any():
        raise ConfigError(f"reject_fractions: each fraction must lie in [0, 1); got {fractions.tolist()}")
    fars = tuple(float(f) for f in fars)
    far_max = max(fars)
    n_pairs = scores.size
    genuine = labels.astype(bool)

    n_rejected = np.array([rejected_count(f, n_pairs, tar_method) for f in fractions], dtype=np.int64)
    rank = threshold_ranks(uncertainty, n_rejected)  # kept at fraction i  ⇔  rank >= n_rejected[i]
    genuine_removed = np.searchsorted(np.sort(rank[genuine]), n_rejected)
    n_genuine = int(genuine.sum())
    impostors_needed = int(np.ceil(far_max * (n_pairs - n_genuine) * 1.1)) + 16
    # Enough pairs to hold the impostors the largest FAR needs, whatever the genuine pairs among them,
    # and twice that: the large fractions reject about half of them.
    pairs = _SortedPairs(scores, genuine, rank, limit=2 * impostors_needed + n_genuine)

    n_genuine_kept = n_genuine - genuine_removed
    n_impostor_kept = (n_pairs - n_rejected) - n_genuine_kept
    if tar_method == KTH_IMPOSTOR:
        tar = np.full((fractions.size, len(fars)), np.nan)
        reader = KthImpostorReader(scores, genuine)  # one sort; a rejected pair weighs 0
        for i in tqdm(range(fractions.size), desc="reject fractions", disable=not progress):
            tar[i] = reader(fars, rank >= n_rejected[i])
        return RejectCurve(fractions, n_rejected, n_genuine_kept, n_impostor_kept, fars, tar, tar_method)
    tar = np.full((fractions.size, len(fars)), np.nan)
    # Start from the prefix that would serve the unrejected set, with slack; grow on demand.
    length = pairs.prefix_end(impostors_needed)
    for i in tqdm(range(fractions.size), desc="reject fractions", disable=not progress):
        if n_genuine_kept[i] == 0 or n_impostor_kept[i] == 0:
            continue
        while True:
            fpr, tpr, complete = pairs.roc_prefix(int(n_rejected[i]), length, int(n_genuine_kept[i]),
                                                  int(n_impostor_kept[i]))
            if complete or _prefix_suffices(fpr, far_max):
                break
            wanted = int(pairs.impostor_cumsum[length - 1]) * 2 + 16
            if length >= pairs.size and not pairs.complete:  # select more of the score order
                pairs = _SortedPairs(scores, genuine, rank, limit=wanted + n_genuine)
            length = pairs.prefix_end(wanted)
        tar[i] = list(tar_at_far(fpr, tpr, fars, method=tar_method).values())
    return RejectCurve(fractions, n_rejected, n_genuine_kept, n_impostor_kept, fars, tar, tar_method)


def reject_curve_naive(scores, labels, pair_uncertainty, fars=REJECT_FARS, fractions=DEFAULT_FRACTIONS,
                       *, tar_method: str = "nearest") -> np.ndarray:
    """Reference: (n_fractions, n_fars) TAR by re-running ``roc_curve`` on the kept pairs per fraction."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    removal = rejection_order(pair_uncertainty)
    out = np.full((len(fractions), len(fars)), np.nan)
    for i, fraction in enumerate(fractions):
        keep = np.ones(scores.size, dtype=bool)
        keep[removal[: rejected_count(fraction, scores.size, tar_method)]] = False
        kept_labels = labels[keep]
        if kept_labels.all() or not kept_labels.any():
            continue
        if tar_method == KTH_IMPOSTOR:
            out[i] = kth_impostor_tar(scores[keep], kept_labels, fars)
            continue
        fpr, tpr, _ = roc_points(kept_labels, scores[keep])
        out[i] = list(tar_at_far(fpr, tpr, fars, method=tar_method).values())
    return out


def write_reject_csv(path: str | Path, curve: RejectCurve) -> None:
    """The curve as CSV, one row per fraction (empty cell for NaN)."""
    frame = curve.to_frame()
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(frame.columns)
        for row in frame.itertuples(index=False):
            writer.writerow(["" if isinstance(v, float) and np.isnan(v) else v for v in row])


def bootstrap_reject(design, scores, labels, pair_unc, fars: Sequence[float], fractions: Sequence[float], *,
                     tar_method: str = "nearest", n_resamples: int = 1000, seed: int = 0,
                     progress: bool = False, within: bool = False) -> np.ndarray:
    """(n_resamples, len(fractions), len(fars)) TAR replicates of the reject curve at ``fractions``.

    In a replicate (subjects and templates resampled, :mod:`facetrust.evaluate.bootstrap`) the most
    uncertain pairs are removed until their weight would exceed ``fraction`` of the replicate's
    total weight; TAR is read off the weighted ROC of the rest.
    """
    from facetrust.evaluate.bootstrap import SortedScores, bootstrap_statistic

    removal = rejection_order(pair_unc)
    fractions = np.asarray(fractions, dtype=np.float64)
    if tar_method == KTH_IMPOSTOR:
        statistic = _kth_reject_statistic(scores, labels, removal, fars, fractions)
    else:
        genuine = np.asarray(labels).astype(bool)
        sorted_scores = SortedScores(scores, labels)

        def statistic(weights: np.ndarray) -> np.ndarray:
            removed_weight = np.cumsum(weights[removal])
            out = np.full((fractions.size, len(fars)), np.nan)
            for i, fraction in enumerate(fractions):
                n_removed = int(np.searchsorted(removed_weight, fraction * removed_weight[-1] + 1e-9, side="right"))
                kept = weights.copy()
                kept[removal[:n_removed]] = 0.0
                if kept[genuine].sum() == 0 or kept[~genuine].sum() == 0:
                    continue
                fpr, tpr = sorted_scores.roc(kept, far_max=max(fars))
                out[i] = list(tar_at_far(fpr, tpr, fars, method=tar_method).values())
            return out.ravel()

    flat = bootstrap_statistic(design, statistic, n_resamples=n_resamples, seed=seed, progress=progress,
                               within=within)
    return flat.reshape(n_resamples, fractions.size, len(fars))


def _kth_reject_statistic(scores, labels, removal: np.ndarray, fars: Sequence[float], fractions: np.ndarray):
    """The replicate statistic of :func:`bootstrap_reject` with ScaleFace's reading: in a replicate
    the pairs ``removal[:n]`` are removed, n the most uncertain pairs whose weight stays within the
    fraction, and TAR is read off the rest (:class:`KthImpostorReader`).

    The pairs' removal ranks are put in the reader's score orders once; a replicate then reads the
    weights in removal order only as far as the fraction reaches, the impostors only down to the
    deepest threshold (:func:`prefix_reaching`), and masks the removed pairs in what it reads: no copy
    of the weights and no running sum over all pairs.  Integer weights make every sum exact, so each
    figure is the one the copy-and-zero reading gives (tests/test_reject.py checks it bit for bit)."""
    reader = KthImpostorReader(scores, labels)
    rank = np.empty(removal.size, dtype=np.int64)
    rank[removal] = np.arange(removal.size)
    impostor_rank, genuine_rank = rank[reader.impostor_rows], rank[reader.genuine_rows]

    def statistic(weights: np.ndarray) -> np.ndarray:
        total = float(weights.sum())
        genuine_weight = weights.take(reader.genuine_rows)
        out = np.empty((fractions.size, len(fars)))
        for i, fraction in enumerate(fractions):
            target = fraction * total + 1e-9
            if target < 1.0:  # integer weights: no pair of positive weight is removed
                n_removed, removed = 0, 0.0
            else:
                n_removed, removed = prefix_reaching(lambda lo, hi: weights.take(removal[lo:hi]), removal.size,
                                                     target, "right")
            kept_genuine = genuine_weight if n_removed == 0 else np.where(genuine_rank < n_removed, 0.0, genuine_weight)

            def impostors(lo: int, hi: int, n_removed: int = n_removed) -> np.ndarray:
                piece = weights.take(reader.impostor_rows[lo:hi])
                return piece if n_removed == 0 else np.where(impostor_rank[lo:hi] < n_removed, 0.0, piece)

            impostor_total = total - removed - float(kept_genuine.sum())
            out[i] = reader.read(fars, impostors, impostor_total, kept_genuine)
        return out.ravel()

    return statistic


def single_image_probes(protocol):
    """ScaleFace's single-image-probe setup: the probe (second template) of every pair becomes its
    first image alone (first in the protocol's listing), under a new template id; enrolled
    templates are unchanged.  Returns the modified protocol (images of the new templates appended)."""
    import dataclasses

    probes, first_rows = np.unique(protocol.template_ids, return_index=True)
    used = np.unique(protocol.pairs[:, 1])
    rows = first_rows[np.searchsorted(probes, used)]
    offset = int(protocol.template_ids.max()) + 1
    new_ids = used + offset

    def extend(array, extra):
        return np.concatenate([array, extra])

    pairs = protocol.pairs.copy()
    pairs[:, 1] = pairs[:, 1] + offset
    return dataclasses.replace(
        protocol,
        images=extend(protocol.images, protocol.images[rows]),
        template_ids=extend(protocol.template_ids, new_ids.astype(protocol.template_ids.dtype)),
        media_ids=extend(protocol.media_ids, protocol.media_ids[rows]),
        landmarks=extend(protocol.landmarks, protocol.landmarks[rows]),
        detector_scores=extend(protocol.detector_scores, protocol.detector_scores[rows]),
        landmark_lines=None if protocol.landmark_lines is None else extend(protocol.landmark_lines,
                                                                           protocol.landmark_lines[rows]),
        pairs=pairs,
    )


def _reject_inputs(embeddings, embeddings_path, ijb_dir, name, *, template_how, space, fars, normalize_images,
                   use_detector_score, pooling, tar_method, score, failed_images=None, identities_csv=None,
                   probe_templates="all_images", pfe_sigma="per_dimension"):
    """(scores, labels, u1, u2, test set, protocol name, settings, bootstrap design) of a reject run."""
    from facetrust.evaluate.bootstrap import ijb_design, pair_set_design
    from facetrust.evaluate.pairs import pair_distance, pair_embeddings

    if probe_templates not in PROBE_TEMPLATES:
        raise ConfigError(f"probe_templates: {probe_templates!r} is not one of {list(PROBE_TEMPLATES)}")
    if ijb_dir is None:
        emb1, emb2, issame = pair_embeddings(embeddings.path, embeddings.features, embeddings.issame)
        require_genuine_and_impostor(issame, embeddings.path, "reject verification")  # as evaluate pairs refuses it
        design = pair_set_design(embeddings.images, issame.astype(np.int8), identities_csv, embeddings.path)
        return (-pair_distance(emb1, emb2, "cosine"), issame.astype(np.int8), embeddings.uncertainty[0::2],
                embeddings.uncertainty[1::2], Path(embeddings_path).stem, "reject_pairs",
                {"score": "cosine of L2-normalised image features"}, design)
    from facetrust.data.ijb import TEMPLATE_PAIR_LABEL, read_ijb_protocol
    from facetrust.evaluate.ijb import align_images, evaluate_ijb, ijb_settings

    from facetrust.evaluate.enrolment import enrolled_protocol

    protocol, failures = enrolled_protocol(read_ijb_protocol(ijb_dir, name, check_landmarks=False), embeddings, failed_images)
    design = ijb_design(ijb_dir, protocol)  # the subjects of the pairs, whatever represents a probe
    scored = single_image_probes(protocol) if probe_templates == "first_image" else protocol
    require_genuine_and_impostor(scored.labels, Path(ijb_dir) / "meta" / TEMPLATE_PAIR_LABEL.format(name=protocol.name),
                                 "reject verification")
    roc_method = tar_method if tar_method in TAR_METHODS else "nearest"  # only the scores are used here
    result = evaluate_ijb(embeddings, scored, fars=fars, normalize_images=normalize_images,
                          use_detector_score=use_detector_score, pooling=pooling, tar_method=roc_method,
                          progress=True, score=score, pfe_sigma=pfe_sigma)
    rows = align_images(embeddings.images, scored.images, embeddings.path)
    # each image's: NaN, or not positive where inverted (templates pool them, so a pair's need not be finite yet)
    check_uncertainty_rows(embeddings, rows, finite=False, positive=needs_positive("mean", space, template_how))
    with naming_file(embeddings.path):  # the uncertainties are the file's
        tids, t_unc = template_uncertainty_in_space(embeddings.uncertainty[rows], scored.template_ids, template_how,
                                                    space)
    index = pd.Index(tids)
    settings = ijb_settings(normalize_images=normalize_images, use_detector_score=use_detector_score,
                            flip=embeddings.flip, pooling=pooling, tar_method=tar_method, score=score,
                            pfe_sigma_kind=result.metrics["settings"].get("pfe_sigma_sq"))
    settings.update(template_uncertainty=template_how, template_uncertainty_space=space,
                    probe_templates=probe_templates + (" (ScaleFace single-image probes: the second template of "
                                                       "each pair is its first image)"
                                                       if probe_templates == "first_image" else ""))
    if failures is not None:
        settings["failure_to_enrol"] = failures.record()
    return (result.scores, result.labels, t_unc[index.get_indexer(scored.pairs[:, 0])],
            t_unc[index.get_indexer(scored.pairs[:, 1])], protocol.name, "reject_ijb_templates", settings, design)


def check_uncertainty_rows(embeddings, rows=None, *, finite: bool = True, positive: bool = False,
                           why: str = "reject verification cannot rank it") -> None:
    """InputError naming the embeddings file, the row and its image for an uncertainty (of
    ``rows``, default every row) that is NaN, or not finite when ``finite``, or not positive when
    ``positive`` (where it is inverted into a confidence or multiplied/harmonically averaged)."""
    u = np.asarray(embeddings.uncertainty, dtype=np.float64)
    index = np.arange(u.size) if rows is None else np.asarray(rows)
    values = u[index]
    for bad, what in ((np.isnan(values), "is NaN"), (~np.isfinite(values) if finite else None, "is {value:g}"),
                      (~(values > 0) if positive else None, "is {value:g}, not positive as {how} needs")):
        if bad is not None and bad.any():
            first = int(index[np.flatnonzero(bad)[0]])
            count = int(bad.sum())
            raise InputError(f"{embeddings.path}: key 'uncertainty' row {first} ({str(embeddings.images[first])!r}) "
                             f"{what.format(value=u[first], how=positive)} ({count} such row{'s' * (count > 1)}): "
                             f"{why}")


def needs_positive(how: str, space: str, template_how: str | None = None) -> str | bool:
    """What inverts or multiplies the uncertainties, or False."""
    reasons = [text for test, text in ((space == "confidence", "confidence space"),
                                       (how in ("harmonic", "product"), f"pair uncertainty {how!r}"),
                                       (template_how == "harmonic", "harmonic template uncertainty")) if test]
    return ", ".join(reasons) or False


def run_evaluate_reject(
    embeddings_path: str | Path,
    out_json: str | Path,
    *,
    ijb_dir: str | Path | None = None,
    name: str | None = None,
    csv_out: str | Path | None = None,
    how: str = "mean",
    space: str = "uncertainty",
    template_how: str = "mean",
    fars: Sequence[float] = REJECT_FARS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    flip: bool = True,
    normalize_images: bool = False,
    use_detector_score: bool = True,
    pooling: str = "mean",
    tar_method: str = "nearest",
    score: str = "cosine",
    bootstrap=None,
    failed_images: str | Path | None = None,
    identities_csv: str | Path | None = None,
    probe_templates: str = "all_images",
    pfe_sigma: str = "per_dimension",
) -> dict:
    """File-level reject verification; writes ``out_json`` (+ ``csv_out``) and returns the JSON dict.

    With ``ijb_dir`` the protocol is IJB 1:1 (template pairs scored as :func:`evaluate_ijb` with
    ``score``, template uncertainty by ``template_how`` in ``space``); without it the embeddings file
    is a pair set (``issame``; cosine of L2-normalised features).  ``space="method"`` takes the
    method's own space.  The file must hold ``uncertainty``.  ``failed_images`` (IJB): images
    alignment left out; the pairs of templates left without images are left out of the curve
    (:mod:`facetrust.evaluate.enrolment`, counted in ``failure_to_enrol``).  ``bootstrap``
    (:class:`~facetrust.evaluate.bootstrap.BootstrapSettings`) adds TAR replicates with none and
    with the largest fraction rejected (``reject_tar_ci``), saved as ``tar`` and ``tar_rejected``;
    a pair set's subjects come from ``identities_csv`` (else one cluster per pair, stated in the
    JSON).  ``tar_method`` may be ``kth_impostor`` (ScaleFace's reading); ``probe_templates`` and
    ``pfe_sigma`` as in the module docstring and :func:`~facetrust.evaluate.embeddings_file.pfe_sigma_sq`.
    """
    from facetrust.evaluate.bootstrap import interval_table, resolution_fields, unit_description, write_replicates
    from facetrust.evaluate.embeddings_file import load_embeddings

    embeddings = load_embeddings(embeddings_path, flip=flip)
    if embeddings.uncertainty is None:
        raise InputError(f"{embeddings.path}: missing key 'uncertainty' (reject verification ranks pairs by it)")
    resolved_space = method_space(space, embeddings.uncertainty_space)
    if ijb_dir is None:  # a pair set ranks every row (an IJB protocol only its own images: checked below)
        check_uncertainty_rows(embeddings, positive=needs_positive(how, resolved_space))
    scores, labels, u1, u2, testset, protocol_name, extra, design = _reject_inputs(
        embeddings, embeddings_path, ijb_dir, name, template_how=template_how, space=resolved_space, fars=fars,
        normalize_images=normalize_images, use_detector_score=use_detector_score, pooling=pooling,
        tar_method=tar_method, score=score, failed_images=failed_images, identities_csv=identities_csv,
        probe_templates=probe_templates, pfe_sigma=pfe_sigma)
    settings = {
        "pair_uncertainty": how,
        "uncertainty_space": resolved_space,
        "uncertainty_space_setting": space,
        "uncertainty_kind": embeddings.uncertainty_kind,
        "rejection": ("n_pairs - int(n_pairs * (1 - fraction)) most uncertain pairs removed (ScaleFace's count)"
                      if tar_method == KTH_IMPOSTOR else "floor(fraction * n_pairs) most uncertain pairs removed")
                     + ", ties the earlier pair first",
        "flip": bool(flip),
        **extra,
        "tar_method": tar_method,
        "tar_reading": TAR_READINGS[tar_method],
    }
    with naming_file(embeddings.path):  # its uncertainties and the scores of its features
        pair_unc = pair_uncertainty(u1, u2, how, resolved_space)
        curve = reject_curve(scores, labels, pair_unc, fars, fractions, tar_method=tar_method, progress=True)
    n_genuine = int(np.count_nonzero(labels))
    values = {**curve.to_json(), **resolution_fields(fars, labels.size - n_genuine)}
    if bootstrap is not None and bootstrap.n_resamples > 0:
        compared = [float(curve.fractions[0]), float(curve.fractions[-1])]
        replicates = bootstrap_reject(design, scores, labels, pair_unc, fars, compared, tar_method=tar_method,
                                      n_resamples=bootstrap.n_resamples, seed=bootstrap.seed, progress=True,
                                      within=bootstrap.within)
        values["reject_tar_ci"] = {f"{fraction:g}": interval_table(fars, replicates[:, i], bootstrap.level)
                                   for i, fraction in enumerate(compared)}
        values["bootstrap"] = {"n_resamples": bootstrap.n_resamples, "seed": bootstrap.seed,
                               "level": bootstrap.level, "unit": unit_description(design, bootstrap.within),
                               "n_subjects": design.n_subjects, "design_digest": design.digest(),
                               "fractions": compared,
                               "replicates": None if bootstrap.replicates_out is None else str(bootstrap.replicates_out)}
        if bootstrap.replicates_out is not None:
            write_replicates(bootstrap.replicates_out, fars=fars, tar=replicates[:, 0], design=design,
                             n_resamples=bootstrap.n_resamples, seed=bootstrap.seed, level=bootstrap.level,
                             extra={"tar_rejected": replicates[:, 1], "fractions": np.asarray(compared)})
    metrics = metrics_record(testset, protocol_name, n_pairs=labels.size, n_genuine=n_genuine,
                             settings=settings, embeddings=embeddings_path, **values)
    with outputs_together(out_json, csv_out):
        write_json_atomic(out_json, metrics)
        if csv_out is not None:
            write_reject_csv(csv_out, curve)
    return metrics
