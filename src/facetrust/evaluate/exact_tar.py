"""TAR at FAR of the float64 pair scores, from float32 scores and a few pairs rescored in float64.

``evaluate ijb`` scores IJB-C's 15.7 M pairs as float32 dot products (sgemm speed) of unit template
features pooled in float64.  Where a genuine and an impostor score lie within the float32 rounding
error of each other, float32 may order them differently from float64, and a TAR read off the ROC
can then differ by a pair from the float64 computation (InsightFace ``eval_ijbc.py`` scores in
float64).  :func:`exact_tar_at_far` returns the TAR of the float64 scores at every FAR — the
float64 ROC's own points, under the convention of :mod:`facetrust.evaluate.roc` — while rescoring
only the pairs near the few genuine scores that decide each FAR.

Notation: N impostor and M genuine pairs; ``t`` a pair's given (float32) score, ``s`` its float64
score, E a bound on ``|t - s|`` (:func:`float32_dot_error_bound`); F(u) and G(u) count the impostor
and genuine pairs with ``s > u``.

Why the result is the float64 one
---------------------------------
1. The ROC (``sklearn.metrics.roc_curve``) has one point per distinct score value v, (F, G)
   counted at or above v; ``drop_intermediate`` keeps the first and last point and each point where
   the step into it (the counts at v) differs from the step out of it (the counts at the next lower
   value); (0, 0) is prepended.  So the kept points are the ends of the runs of equal steps.
2. For a genuine pair g, a pair can be on the other side of (or equal to) s_g in float64 than in
   float32 only if ``|t - s_g| <= E``, i.e. ``|t - t_g| <= 2E``.  Rescoring in float64 every pair
   with t in ``[t_g - 2E, t_g + 2E]`` (g's window) gives F(s_g), G(s_g) and the counts at s_g
   exactly: pairs with larger t are certainly above s_g, with smaller t certainly below, and those
   are counted in the sorted float32 classes.
3. Take a span of genuine pairs around the target (in float32 order, with margins) and every genuine
   pair whose t is within 2E of it: these are all the genuine pairs whose float64 score lies between
   the span's lowest and highest float64 score (2.).  Between two consecutive such values there are
   only impostors, as many as the difference of the exact F's (a genuine count there is checked to
   be 0): a horizontal run of points at one TPR.  Its last point is kept (the next step has a
   genuine pair) and so is the point before it (the step into it has one); which points inside it
   are kept depends on how the impostors tie in float64 (a run of distinct scores keeps none;
   equal scores, as duplicate templates give, make steps (k, 0) and keep the ends of their runs).
   The run's inside points all share its TPR.  Where no genuine pair lies above (below) the span,
   the run reaches the first (last) point, and sklearn keeps that first point wherever it is.
4. TAR is read twice off these points: with only the points certainly kept, and with every position
   inside every run kept too (only the positions next to the target matter).  The kept points are
   between the two, and a reading that the two extremes agree on is the same for everything in
   between (strict: an inside point never beats its run's first point; interpolate: inside points
   lie on the run's segment; nearest: an inside point either wins, with the run's TPR, or not).
   Where they disagree, the impostors of that run nearest the target are rescored — every pair
   whose t lies within E of the part of the run that decides — and their float64 ties give its
   kept points exactly (tied scores are grouped as ``roc_curve`` groups them).  So the pairs
   rescored are those the error bound cannot order against a deciding score, ties included.
5. TAR is read off these points only when points outside the span cannot change it
   (:func:`_read_tar`): a point above the span has FPR and TPR no larger than the span's top edge,
   one below no smaller than its bottom edge.  Otherwise the span is widened and the step repeated;
   the whole genuine range always decides.

Nothing is assumed about ties: repeated pairs, duplicate templates and quantised features are
handled exactly, and a violated error bound raises instead of returning a wrong TAR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from facetrust.errors import InputError
from facetrust.evaluate.roc import far_key, tar_at_far

FLOAT32_UNIT = 2.0**-24  # unit roundoff u of float32 (round to nearest)
FLOAT64_UNIT = 2.0**-53
FLOAT32_TINY = 2.0**-149  # the smallest float32 subnormal: the absolute error of an underflowing result
BUCKETS_MAX = 1 << 22  # buckets of the window table (exact in float32 bucket numbers)


def float32_dot_error_bound(dim: int) -> float:
    """A bound on ``|float32 dot product - float64 dot product|`` of two float64 vectors of norm <= 1.

    Each float64 feature x is rounded to float32, x̃ = x(1 + δ), |δ| <= u (u = 2^-24), so
    |x̃·ỹ − x·y| <= (2u + u²) Σ|x_i y_i| <= 2u + u²;  any float32 evaluation of the d-term sum (any
    order, with or without FMA, BLAS blocking included) errs by at most γ_d Σ|x̃_i ỹ_i| <= γ_d (1 + u)²,
    γ_d = d·u / (1 − d·u) (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., Eq. 3.5
    and Lemma 3.1); the float64 reference errs by γ_d in float64; underflow adds at most 2·d·2^-149.
    The sum gets a relative margin of 1e-6 for the float64 arithmetic of the windows built from it.
    """
    if dim < 1 or dim * FLOAT32_UNIT >= 0.5:
        raise ValueError(f"float32_dot_error_bound: dimension {dim} is out of range")
    gamma32 = dim * FLOAT32_UNIT / (1.0 - dim * FLOAT32_UNIT)
    gamma64 = dim * FLOAT64_UNIT / (1.0 - dim * FLOAT64_UNIT)
    bound = gamma32 * (1.0 + FLOAT32_UNIT) ** 2 + 2.0 * FLOAT32_UNIT + FLOAT32_UNIT**2 + gamma64
    return (bound + 2.0 * dim * FLOAT32_TINY) * (1.0 + 1e-6)


@dataclass
class ExactTar:
    """``tar_at_far`` ({far key: TAR} of the float64 scores) and how many pairs were rescored."""

    tar_at_far: dict[str, float]
    rescored_pairs: int


def exact_tar_at_far(scores: np.ndarray, labels: np.ndarray, rescore: Callable[[np.ndarray], np.ndarray],
                     error_bound: float, fars: Sequence[float], method: str = "nearest",
                     classes: tuple[np.ndarray, np.ndarray] | None = None) -> ExactTar:
    """TAR at each of ``fars`` (``method`` as :func:`~facetrust.evaluate.roc.tar_at_far`) of the ROC
    of the float64 scores ``rescore(np.arange(P))``, computed from ``scores`` (P,) with
    ``|scores - float64 scores| <= error_bound`` and ``rescore`` (pair indices -> their float64
    scores) called on the few pairs near the deciding genuine scores.

    ``labels`` (P,) are 1 genuine / 0 impostor; ``classes`` = (impostor scores ascending, genuine
    scores ascending), as :func:`~facetrust.evaluate.roc.roc_points_and_classes` returns them.
    """
    scores = np.asarray(scores)
    genuine_mask = np.asarray(labels).astype(bool, copy=False)
    if classes is None:
        impostor = np.sort(scores[~genuine_mask])
        classes = (impostor, np.sort(scores[genuine_mask]))
    if classes[0].size == 0 or classes[1].size == 0:
        raise InputError(f"TAR needs genuine and impostor pairs; got {classes[1].size} genuine of {scores.size}")
    spans = _Spans(classes[0], classes[1][::-1], float(error_bound), scores)
    result, rescored, widen = {}, {}, {float(far): 0 for far in fars}
    while widen:
        wanted = {far: spans.span(far, extra) for far, extra in widen.items()}
        _rescore_near(spans, scores, genuine_mask, rescore, rescored, list(wanted.values()))
        local = _Rescored(scores, genuine_mask, rescored)
        for far in list(widen):
            points = _span_points(spans, local, *wanted[far])
            while True:  # module docstring, 4.: read at both extremes; resolve a run where they differ
                tar, undecided = _read_bracketed(points, far, method)
                if undecided is None:
                    break
                _resolve_run(spans, scores, genuine_mask, rescore, rescored, points, *undecided)
            if tar is not None:
                result[far_key(far)] = tar
                del widen[far]
            else:
                widen[far] = max(1, 2 * widen[far])
    return ExactTar({far_key(far): result[far_key(far)] for far in fars}, len(rescored))


def _rescore_near(spans, scores, genuine_mask, rescore, rescored: dict[int, float], wanted) -> None:
    """Add to ``rescored`` (pair index -> float64 score) the genuine pairs of the ``wanted`` spans
    and every pair whose score t lies within E of one of their float64 scores (module docstring, 2.).

    Every such pair has t within 2E of a genuine pair's t: one pass finds those, the genuine ones
    are rescored, and of the others only those within E of a float64 genuine score (about half).
    """
    near = _pairs_in_windows(scores, *spans.windows(wanted), above=spans.above)
    if rescored:
        near = near[~np.isin(near, np.fromiter(rescored, dtype=np.int64, count=len(rescored)))]
    genuine = near[genuine_mask[near]]
    rescored.update(zip(genuine.tolist(), rescore(genuine).tolist()))
    values = np.unique(np.fromiter((rescored[i] for i in genuine.tolist()), dtype=np.float64, count=genuine.size))
    if values.size == 0:
        return
    lows = _round_out(values - spans.error, spans.dtype, -np.inf)
    highs = _round_out(values + spans.error, spans.dtype, np.inf)
    impostor = near[~genuine_mask[near]]
    t = scores[impostor]
    position = np.searchsorted(lows, t, "right") - 1  # the last window starting at or below t
    reach = np.maximum.accumulate(highs)  # windows overlap: the farthest end among those
    needed = impostor[(position >= 0) & (t <= reach[np.maximum(position, 0)])]
    rescored.update(zip(needed.tolist(), rescore(needed).tolist()))


def _round_out(values: np.ndarray, dtype, direction: float) -> np.ndarray:
    """``values`` (float64) rounded to ``dtype`` towards ``direction`` (-inf: down, +inf: up)."""
    rounded = np.asarray(values, dtype=np.float64).astype(dtype)
    wrong = rounded > values if direction < 0 else rounded < values
    rounded[wrong] = np.nextafter(rounded[wrong], dtype.type(direction))
    return rounded


class _Spans:
    """The sorted float32 classes: rigorous bounds on each genuine pair's exact F, and the span of
    genuine pairs (indices into the descending genuine scores) that decides a FAR; ``above``: the
    pairs' scores (in pair order) at or above a window's base (:class:`_ScoresAbove`)."""

    def __init__(self, impostor: np.ndarray, genuine_desc: np.ndarray, error_bound: float, scores: np.ndarray):
        self.impostor, self.genuine, self.error = impostor, genuine_desc, error_bound
        self.above = _ScoresAbove(scores)
        self.dtype = impostor.dtype
        self.n_impostor, self.n_genuine = impostor.size, genuine_desc.size
        # F(s_g) lies in [#(t > t_g + 2E), #(t >= t_g - 2E)]: both non-decreasing down the list.
        self.f_low = self.count_above(genuine_desc + 2.0 * error_bound)
        self.f_high = self.n_impostor - np.searchsorted(impostor, _round_out(genuine_desc - 2.0 * error_bound,
                                                                              self.dtype, -np.inf), "left")

    def count_above(self, values: np.ndarray, sorted_scores: np.ndarray | None = None) -> np.ndarray:
        """Number of ``sorted_scores`` (default: impostors) with t > each value (float64)."""
        sorted_scores = self.impostor if sorted_scores is None else sorted_scores
        up = _round_out(np.asarray(values, dtype=np.float64), self.dtype, np.inf)
        return sorted_scores.size - np.searchsorted(sorted_scores, up, "right")

    def span(self, far: float, extra: int) -> tuple[int, int]:
        """First and last genuine index of the span for ``far``: from the lowest genuine pair certainly
        above the target count to the second genuine position certainly below it, ``extra`` wider."""
        target = far * self.n_impostor
        first = int(np.searchsorted(self.f_high, target, "left")) - 1
        below = int(np.searchsorted(self.f_low, target, "right"))
        last = int(np.searchsorted(self.f_low, self.f_high[below], "right")) if below < self.n_genuine else below
        return max(first - extra, 0), min(last + extra, self.n_genuine - 1)

    def special_range(self, first: int, last: int) -> tuple[float, float]:
        """Scores t within which every genuine pair whose float64 score can lie in the span is."""
        return float(self.genuine[last]) - 2.0 * self.error, float(self.genuine[first]) + 2.0 * self.error

    def windows(self, spans: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Merged windows [t_g - 2E, t_g + 2E] (rounded outwards) of the genuine pairs of ``spans``."""
        chosen = []
        for first, last in spans:
            low, high = self.special_range(first, last)
            chosen.append(self.genuine[(self.genuine >= low) & (self.genuine <= high)].astype(np.float64))
        centres = np.unique(np.concatenate(chosen))
        lows = _round_out(centres - 2.0 * self.error, self.dtype, -np.inf)
        highs = _round_out(centres + 2.0 * self.error, self.dtype, np.inf)
        start = np.r_[True, lows[1:] > highs[:-1]]  # a window starts a merged one unless it overlaps
        return lows[start], np.maximum.reduceat(highs, np.flatnonzero(start))


class _ScoresAbove:
    """The pairs whose score is at or above a base, remembered for the lowest base asked so far:
    the windows of later calls sit at or above the first call's lowest, so each is a pass over
    that subset (IJB-C: a tenth of the pairs) instead of all 15.7 M scores."""

    def __init__(self, scores: np.ndarray):
        self.scores, self.base, self.kept, self.values = scores, None, None, None

    def __call__(self, base: float) -> tuple[np.ndarray, np.ndarray]:
        """(indices ascending, scores) of the pairs with ``score >= base`` (compared in the scores' dtype)."""
        threshold = self.scores.dtype.type(base)
        if self.base is None or threshold < self.base:
            self.kept = np.flatnonzero(self.scores >= threshold)
            self.base, self.values = threshold, self.scores[self.kept]
            return self.kept, self.values
        if threshold == self.base:
            return self.kept, self.values
        inside = np.flatnonzero(self.values >= threshold)
        return self.kept[inside], self.values[inside]


def _pairs_in_windows(scores: np.ndarray, lows: np.ndarray, highs: np.ndarray,
                      above: _ScoresAbove | None = None) -> np.ndarray:
    """Indices (ascending) of the pairs whose score lies in one of the disjoint ascending windows.

    One comparison with the lowest window keeps the pairs that can be inside (on IJB-C the windows
    sit in the top tenth of the scores; ``above`` remembers them between calls); for those, each
    score's bucket (width about the narrowest window) is looked up in a table marking the buckets
    that windows touch, with one bucket of slack on each side against the float rounding of the
    bucket number; the few candidates are then tested exactly.  Bucket 0 gathers the scores more
    than a bucket below the lowest window.
    """
    base = float(lows[0])
    kept, values = (above or _ScoresAbove(scores))(base)
    reach = float(highs[-1]) - base
    width = max(float(np.min(highs - lows)), reach / BUCKETS_MAX, 1e-300)
    n_buckets = int(reach / width) + 5
    first = np.floor((lows - base) / width).astype(np.int64) + 1  # bucket number + 2, less one of slack
    last = np.floor((highs - base) / width).astype(np.int64) + 3
    marks = np.zeros(n_buckets + 4, dtype=np.int64)
    np.add.at(marks, first, 1)
    np.add.at(marks, last + 1, -1)
    table = np.cumsum(marks[:-1]) > 0
    bucket = np.subtract(values, scores.dtype.type(base))
    np.multiply(bucket, scores.dtype.type(1.0 / width), out=bucket)
    np.clip(bucket, -2, n_buckets, out=bucket)
    bucket += 2
    candidates = np.flatnonzero(table[bucket.astype(np.int32)])
    values = values[candidates]
    position = np.searchsorted(lows, values, "right") - 1
    inside = (position >= 0) & (values <= highs[np.maximum(position, 0)])
    return kept[candidates[inside]]


class _Rescored:
    """The rescored pairs sorted by their given score t: t, float64 score s, genuine or not."""

    def __init__(self, scores: np.ndarray, genuine_mask: np.ndarray, rescored: dict[int, float]):
        index = np.fromiter(rescored, dtype=np.int64, count=len(rescored))
        exact = np.fromiter(rescored.values(), dtype=np.float64, count=len(rescored))
        order = np.argsort(scores[index], kind="stable")
        self.t, self.s, self.genuine = scores[index][order], exact[order], genuine_mask[index][order]

    def near(self, low: float, high: float, dtype) -> slice:
        """The rescored pairs with ``low <= t <= high`` (bounds rounded outwards to ``dtype``)."""
        lo = _round_out(np.array([low]), dtype, -np.inf)[0]
        hi = _round_out(np.array([high]), dtype, np.inf)[0]
        return slice(int(np.searchsorted(self.t, lo, "left")), int(np.searchsorted(self.t, hi, "right")))


@dataclass
class _Run:
    """A horizontal run of the float64 ROC: the impostors with float64 scores strictly between
    ``low`` and ``high`` (consecutive genuine values; +-inf past the first/last one), at positions
    F = ``start`` + 1 .. ``end`` with ``genuine`` genuine pairs above.  ``end`` is kept; positions
    ``start`` + 1 .. ``unknown_end`` - 1 may or may not be (module docstring, 3.)."""

    start: int
    end: int
    genuine: int
    high: float
    low: float
    unknown_end: int


@dataclass
class _SpanPoints:
    """Kept points of the float64 ROC over a span, as counts: ``impostors``/``genuine`` (K,) are
    certainly kept, ``runs`` hold the positions that may be; ``top``/``bottom`` (F, G) are the span's
    edges where points beyond are unknown (None where the span reaches the first/last point).
    ``n_impostor``/``n_genuine`` are N and M."""

    impostors: np.ndarray
    genuine: np.ndarray
    top: tuple[int, int] | None
    bottom: tuple[int, int] | None
    n_impostor: int
    n_genuine: int
    runs: list[_Run]

    def add(self, impostors: np.ndarray, genuine: np.ndarray) -> None:
        """Add certainly kept points (kept sorted by F, then G: an ROC's order)."""
        order = np.lexsort((np.r_[self.genuine, genuine], np.r_[self.impostors, impostors]))
        self.impostors = np.r_[self.impostors, impostors][order]
        self.genuine = np.r_[self.genuine, genuine][order]


def _span_points(spans: _Spans, local: _Rescored, first: int, last: int) -> _SpanPoints:
    """The float64 ROC's points over the span ``first..last`` (module docstring, 1.-3.)."""
    error = spans.error
    low, high = spans.special_range(first, last)
    near = local.near(low, high, spans.dtype)
    t, s, genuine = local.t[near], local.s[near], local.genuine[near]
    span_t = (t >= spans.genuine[last]) & (t <= spans.genuine[first]) & genuine
    top_value, bottom_value = float(s[span_t].max()), float(s[span_t].min())
    values = np.unique(s[genuine & (s >= bottom_value) & (s <= top_value)])[::-1]  # descending
    above = np.empty((values.size, 2), dtype=np.int64)  # (F, G) of each value
    at = np.empty((values.size, 2), dtype=np.int64)  # (impostors, genuine) scoring exactly the value
    for k, value in enumerate(values):
        window = local.near(value - error, value + error, spans.dtype)
        w_s, w_genuine = local.s[window], local.genuine[window]
        certain = spans.count_above(np.array([value + error]))[0]
        certain_genuine = spans.count_above(np.array([value + error]), spans.genuine[::-1])[0]
        above[k] = (certain + np.count_nonzero((w_s > value) & ~w_genuine),
                    certain_genuine + np.count_nonzero((w_s > value) & w_genuine))
        at[k] = (np.count_nonzero((w_s == value) & ~w_genuine), np.count_nonzero((w_s == value) & w_genuine))
    return _run_ends(values, above, at, spans.n_impostor, spans.n_genuine)


def _run_ends(values: np.ndarray, above: np.ndarray, at: np.ndarray, n_impostor: int, n_genuine: int) -> _SpanPoints:
    """Steps over the span — each genuine value's counts, and a run of impostors between — the
    points certainly kept (ends of runs of equal steps) and the runs (module docstring 1. and 3.)."""
    gaps = above[1:, 0] - above[:-1, 0] - at[:-1, 0]
    if (gaps < 0).any() or (above[1:, 1] != above[:-1, 1] + at[:-1, 1]).any():
        raise RuntimeError("exact TAR: a genuine pair between the rescored values (the float32 error bound failed)")
    steps = np.zeros((2 * len(at) + 1, 3), dtype=np.int64)  # (impostors, genuine, how many times)
    steps[1:-1:2, :2], steps[1:-1:2, 2] = at, 1
    steps[2:-1:2] = np.c_[np.ones_like(gaps), np.zeros_like(gaps), gaps]
    start, end = above[0], above[-1] + at[-1]
    top = None if start[1] == 0 else (int(start[0]), int(start[1]))  # no genuine above: run from (0, 0)
    bottom = None if end[1] == n_genuine else (int(end[0]), int(end[1]))
    steps[0] = (1, 0, start[0] if top is None else 0)
    steps[-1] = (1, 0, n_impostor - end[0] if bottom is None else 0)
    runs = [_Run(int(a[0]), int(a[0] + gap), int(a[1]), float(values[k]), float(values[k + 1]), int(a[0] + gap))
            for k, (a, gap) in enumerate(zip(above[:-1] + at[:-1], gaps)) if gap >= 2]
    if top is None and start[0] >= 2:
        runs.append(_Run(0, int(start[0]), 0, np.inf, float(values[0]), int(start[0])))
    if bottom is None and n_impostor - end[0] >= 2:
        runs.append(_Run(int(end[0]), n_impostor, n_genuine, float(values[-1]), -np.inf, n_impostor))
    first_is_genuine = steps[0, 2] == 0  # the first point is a genuine value's, not inside a run
    steps = steps[steps[:, 2] > 0]
    origin = np.zeros(2, dtype=np.int64) if top is None else start
    ends = origin + np.cumsum(steps[:, :2] * steps[:, 2:], axis=0)
    new_run = np.r_[(steps[1:, :2] != steps[:-1, :2]).any(axis=1), True]
    kept = ends[new_run]
    if bottom is not None:
        kept = kept[:-1]  # the span's last point: kept or not depends on the next step, unknown
    if top is None:  # sklearn keeps its first point; (0, 0) is prepended
        kept = np.r_[[[0, 0]], [steps[0, :2]] if first_is_genuine else np.zeros((0, 2), np.int64), kept]
    return _SpanPoints(kept[:, 0], kept[:, 1], top, bottom, n_impostor, n_genuine, runs)


def _read_bracketed(points: _SpanPoints, far: float, method: str):
    """``(TAR or None, None)`` when the certainly kept points and those plus every position inside
    the runs agree (module docstring, 4.); ``(None, (run, positions needed))`` for a run to resolve."""
    target = far * points.n_impostor
    candidates = np.arange(int(np.floor(target)) - 1, int(np.ceil(target)) + 2)
    extra_f, extra_g, touched = [], [], []
    for run in points.runs:
        inside = candidates[(candidates > run.start) & (candidates < run.unknown_end)]
        if inside.size:  # only the positions next to the target can be nearest
            extra_f.append(inside)
            extra_g.append(np.full(inside.size, run.genuine))
            touched.append(run)
    certain = _read_tar(points, far, method)
    if not touched:
        return certain, None
    widest = _SpanPoints(points.impostors, points.genuine, points.top, points.bottom, points.n_impostor,
                         points.n_genuine, [])
    widest.add(np.concatenate(extra_f), np.concatenate(extra_g))
    if certain == _read_tar(widest, far, method):
        return certain, None
    run = touched[0]
    # Inside points nearer the target than the run's end: positions above 2·target - end.
    return None, (run, int(np.ceil(2.0 * (run.end - target))) + 3, target, method)


def _resolve_run(spans: _Spans, scores, genuine_mask, rescore, rescored: dict[int, float], points: _SpanPoints,
                 run: _Run, needed: int, target: float, method: str) -> None:
    """Rescore the impostors of ``run`` at its lowest ``needed`` positions or more (for
    ``interpolate``, down to a kept point at or below ``target``, the segment's left end), and
    move those positions from unknown to known: their float64 tie groups give the kept ones.

    Every impostor whose float64 score lies in (low, u) has t within E of that interval, so
    rescoring the pairs with t in [low - E, u + E] finds them all; u is a float32 impostor score
    ``count`` positions above the run's bottom, doubled until enough positions are known.
    """
    error, impostor = spans.error, spans.impostor
    window_low = float(impostor[0]) if run.low == -np.inf else \
        float(_round_out(np.array([run.low - error]), spans.dtype, -np.inf)[0])
    base = int(np.searchsorted(impostor, impostor.dtype.type(window_low), "left"))
    known_before = run.end - run.unknown_end + 1  # each call learns more positions than this
    count = max(needed, known_before + 1, 1) + 2
    while True:
        stop = base + count
        whole = stop >= impostor.size or (run.high != np.inf and impostor[stop] >= run.high + error)
        upper = run.high if whole else float(impostor[stop])
        window_high = float(impostor[-1]) if upper == np.inf else \
            float(_round_out(np.array([upper + error]), spans.dtype, np.inf)[0])
        near = _pairs_in_windows(scores, np.array([window_low], spans.dtype), np.array([window_high], spans.dtype),
                                 above=spans.above)
        near = near[~genuine_mask[near]]
        new = np.array([i for i in near.tolist() if i not in rescored], dtype=np.int64)
        if new.size:
            rescored.update(zip(new.tolist(), rescore(new).tolist()))
        s = np.fromiter((rescored[i] for i in near.tolist()), dtype=np.float64, count=near.size)
        inside = s[(s > run.low) & (s < upper)]
        values, counts = np.unique(inside, return_counts=True)  # ascending: the run's bottom first
        position = run.end - np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)  # F of each value's point
        kept = np.r_[False, counts[1:] != counts[:-1]]  # the step into it differs from the step out
        if whole and run.high == np.inf and counts.size:
            kept[-1] = True  # sklearn keeps its first point
        if whole or (inside.size >= needed and inside.size > known_before
                     and (method != "interpolate" or (kept & (position <= target)).any())):
            break
        count *= 2
    if whole and inside.size != run.end - run.start:
        raise RuntimeError("exact TAR: an impostor run's count changed on rescoring (the float32 error bound failed)")
    kept &= position < run.unknown_end
    points.add(position[kept], np.full(int(kept.sum()), run.genuine))
    run.unknown_end = run.start + 1 if whole else min(run.unknown_end, run.end - inside.size + 1)


def _read_tar(points: _SpanPoints, far: float, method: str) -> float | None:
    """TAR at ``far`` when the span's points decide it (module docstring, 4.), else None."""
    fpr = points.impostors / np.float64(points.n_impostor)  # as roc.py: fps / fps[-1]
    tpr = points.genuine / np.float64(points.n_genuine)
    top = None if points.top is None else points.top[0] / np.float64(points.n_impostor)
    bottom = None if points.bottom is None else points.bottom[0] / np.float64(points.n_impostor)
    if fpr.size == 0:
        return None
    if method == "nearest":
        # Points above have F <= the top edge's and TPR no larger than any span point's, so they
        # cannot win a tie; points below have TPR no smaller: they must be strictly farther.
        distance = np.abs(fpr - far)
        best = distance.min()
        if top is not None and not (top <= far and far - top >= best):
            return None
        if bottom is not None and not (bottom >= far and bottom - far > best):
            return None
    elif method == "strict":
        if not (fpr <= far).any() or (bottom is not None and not bottom > far):
            return None
    else:  # interpolate: the span must hold both points around far, and no point beyond may share them
        left, right = fpr[fpr <= far], fpr[fpr > far]
        if (top is not None and not (left.size and top <= left.max())) or (
                bottom is not None and not (right.size and bottom > right.min())):
            return None
    return tar_at_far(fpr, tpr, [far], method=method)[far_key(far)]
