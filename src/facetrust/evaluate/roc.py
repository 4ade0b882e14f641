"""ROC points and TAR at FAR, with the conventions written down.

Default convention (InsightFace ``eval_ijbc.py``, docs/FORMATS.md "Conventions"): the ROC is
``sklearn.metrics.roc_curve(labels, scores)`` with its defaults (``drop_intermediate=True``), and
TAR at a target FAR is the TPR of the ROC point whose FPR is nearest the target, ties broken
towards the larger TPR.  Two other readings are options and are recorded in the metrics file:

- ``"interpolate"``: linear interpolation of TPR against FPR on the upper ROC envelope
  (one point per distinct FPR, the largest TPR), as OpenSphere reads its curves;
- ``"strict"``: the largest TPR whose FPR does not exceed the target (an operating point that
  honours the FAR budget).

:func:`roc_points` returns exactly ``roc_curve``'s arrays but builds them from one value sort of
each class's scores (``np.sort``, no argsort and no gathers of the whole score array): sklearn
needs a stable argsort of all scores, which costs several times more at IJB-C's 15.7 M pairs.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from facetrust.errors import ConfigError, InputError
from facetrust.formats import TAR_METHODS, far_key, plain_float  # noqa: F401 (re-exported)
from facetrust.io import atomic_path, write_npz

DEFAULT_IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
SKLEARN_CONVENTION = "sklearn.metrics.roc_curve(drop_intermediate=True)"


def roc_points(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` exactly as ``sklearn.metrics.roc_curve(labels, scores)``.

    ``labels`` are 1 (genuine) / 0 (impostor); larger ``scores`` mean more similar.
    Raises :class:`InputError` when a class is missing or a score is not finite.
    """
    return roc_points_and_classes(labels, scores)[0]


def require_genuine_and_impostor(labels, source, what: str = "ROC") -> tuple[int, int]:
    """``(n_genuine, n_impostor)`` of 0/1 ``labels``; InputError naming ``source`` (the file the
    pairs come from) and both counts when either is 0: no ROC, TAR or EDC can be read without both."""
    labels = np.asarray(labels)
    n_genuine = int(np.count_nonzero(labels))
    n_impostor = int(labels.size) - n_genuine
    if n_genuine == 0 or n_impostor == 0:
        raise InputError(f"{source}: {what} needs genuine and impostor pairs; got {n_genuine} genuine and "
                         f"{n_impostor} impostor pairs")
    return n_genuine, n_impostor


def roc_points_and_classes(labels, scores):
    """``(roc_points(labels, scores), classes)``: ``classes`` is ``(impostor scores ascending,
    genuine scores ascending)`` when the fast path sorted them (float scores, 0/1 labels), else None.

    The sorted classes are what :mod:`facetrust.evaluate.exact_tar` counts in, so one sort serves both.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise InputError(f"labels {labels.shape} and scores {scores.shape} must be equal 1-D shapes")
    n_genuine = int(np.count_nonzero(labels))
    if n_genuine == 0 or n_genuine == labels.size:
        raise InputError(f"ROC needs genuine and impostor pairs; got {n_genuine} genuine and "
                         f"{labels.size - n_genuine} impostor pairs")
    if not np.isfinite(scores).all():
        raise InputError("scores contain NaN or inf")
    if scores.dtype in (np.float32, np.float64) and (labels.dtype == bool or _zero_one(labels)):
        genuine = labels.astype(bool, copy=False)
        impostor = scores[~genuine]
        impostor.sort()
        genuine_sorted = np.sort(scores[genuine])
        return _roc_from_sorted_classes(impostor, genuine_sorted, scores), (impostor, genuine_sorted)
    from sklearn.metrics import roc_curve

    return roc_curve(labels, scores), None


def _zero_one(labels: np.ndarray) -> bool:
    return labels.dtype.kind in "iu" and int(labels.min()) >= 0 and int(labels.max()) <= 1


def _value_runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an ascending array and how often each occurs (-0.0 == 0.0, as np.diff)."""
    if sorted_values.size == 0:
        return sorted_values, np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero(sorted_values[1:] != sorted_values[:-1])
    ends = np.append(ends, sorted_values.size - 1)
    return sorted_values[ends], np.diff(ends, prepend=-1)


def _roc_from_sorted_classes(impostor: np.ndarray, genuine_sorted: np.ndarray, scores: np.ndarray):
    """sklearn's ``roc_curve`` (``_binary_clf_curve`` + ``drop_intermediate``), built from sorted classes.

    sklearn sorts all scores descending; every run of equal scores is a candidate point whose
    counts (fps, tps) are the impostor / genuine scores at or above it, and ``drop_intermediate``
    keeps the two ends and every point whose step (its run's impostor and genuine counts) differs
    from the next one's.  Here the impostor scores are sorted by value once (in place); a run's fps
    is read off its start position, and only runs whose impostor count changes, or that touch a
    genuine score, can be kept, so everything after the sort works on those few points.  The
    genuine scores (few) are merged in by binary search.  ``impostor`` and ``genuine_sorted`` are the
    two classes' scores sorted ascending; ``scores`` (all of them) is read only for the sign of a 0.
    """
    n_impostor, n_genuine = impostor.size, genuine_sorted.size
    new_run = np.empty(n_impostor, dtype=bool)
    new_run[0] = True
    np.not_equal(impostor[1:], impostor[:-1], out=new_run[1:])
    run_start = np.flatnonzero(new_run)  # ascending runs of equal impostor scores
    del new_run
    run_count = np.empty_like(run_start)  # run lengths, without np.diff's concatenated copy
    np.subtract(run_start[1:], run_start[:-1], out=run_count[:-1])
    run_count[-1] = n_impostor - run_start[-1]
    n_runs = run_start.size
    # Genuine values: either on an impostor run (shared) or inserted before run ``run_at``.
    genuine_values, genuine_counts = _value_runs(genuine_sorted)
    position = np.searchsorted(impostor, genuine_values)
    shared = position < n_impostor
    shared[shared] = impostor[position[shared]] == genuine_values[shared]
    run_at = np.searchsorted(run_start, position)
    shared_runs, shared_counts = run_at[shared], genuine_counts[shared]
    new_at, new_counts, new_values = run_at[~shared], genuine_counts[~shared], genuine_values[~shared]

    # Candidate runs: impostor count differs from the previous run's, or next to a genuine value.
    # IJB-C's float32 scores tie often (13.5 M runs of 15.6 M impostors) and the kept points are
    # millions (3.2 M), so everything per candidate is one pass over the candidates, and each
    # genuine value is looked up among them (not each candidate among the genuine values).
    candidate = np.zeros(n_runs + 1, dtype=bool)
    np.not_equal(run_count[1:], run_count[:-1], out=candidate[1:n_runs])
    changed = candidate[:n_runs].copy()  # count differs from the previous run's (run 0: False)
    candidate[[0, n_runs - 1]] = True
    candidate[shared_runs] = True
    candidate[shared_runs + 1] = True
    candidate[new_at] = True
    runs = np.flatnonzero(candidate[:n_runs])
    del candidate
    genuine_on = np.zeros(runs.size, dtype=np.int64)  # genuine count of each candidate run
    genuine_on[np.searchsorted(runs, shared_runs)] = shared_counts
    previous_genuine = np.zeros(runs.size, dtype=np.int64)  # genuine count of the run before each
    after = np.searchsorted(runs, shared_runs + 1)  # every run after a shared one is a candidate
    inside = after < runs.size
    previous_genuine[after[inside]] = shared_counts[inside]
    # A run right after inserted genuine values steps from (0, h) to (count >= 1, .): always a corner.
    keep_run = changed[runs]
    del changed
    keep_run |= genuine_on != previous_genuine
    before_new = np.searchsorted(runs, new_at)
    at_run = before_new < runs.size
    before_new, new_run = before_new[at_run], new_at[at_run]
    keep_run[before_new[runs[before_new] == new_run]] = True
    # Inserted genuine values: a corner unless the previous entry is one with the same count.
    keep_new = np.r_[True, (new_at[1:] != new_at[:-1]) | (new_counts[1:] != new_counts[:-1])][: new_at.size]
    # The lowest and highest entries are always kept (sklearn keeps both ends).
    if not (new_at.size and new_at[0] == 0):
        keep_run[0] |= runs[0] == 0
    if new_at.size and new_at[-1] == n_runs:
        keep_new[-1] = True
    else:
        keep_run[-1] |= runs[-1] == n_runs - 1
    runs = runs[keep_run]
    new_at, new_values = new_at[keep_new], new_values[keep_new]

    # Impostors below each inserted genuine value: its run's start, or all of them after the last run
    # (looked up, not appended: a copy of run_start costs a pass over ~N fresh integers).
    below_new = np.where(new_at < n_runs, run_start[np.minimum(new_at, n_runs - 1)], n_impostor)
    insert_at = np.searchsorted(runs, new_at)
    kept_start = run_start[runs]
    values = np.insert(impostor[kept_start], insert_at, new_values)
    fps = n_impostor - np.insert(kept_start, insert_at, below_new)
    del kept_start
    # tps: genuine scores at or above each value.  Genuine values below values[i] are those whose
    # first larger value is at i or before: a count per position and a running sum, one pass
    # (the same integers as n_genuine - searchsorted(genuine_sorted, values)).
    below = np.bincount(np.searchsorted(values, genuine_sorted, side="right"), minlength=values.size + 1)
    tps = n_genuine - np.cumsum(below[: values.size])
    thresholds = values[::-1]
    if values[0] <= 0 <= values[-1]:
        # sklearn reports a run's last score in its stable descending order, i.e. the run's
        # earliest pair: for the 0 run that decides between -0.0 and 0.0.
        zero = np.searchsorted(-thresholds, 0.0)
        if zero < thresholds.size and thresholds[zero] == 0:
            thresholds = thresholds.copy()
            thresholds[zero] = scores[np.flatnonzero(scores == 0)[0]]
    tps = np.r_[0, tps[::-1]].astype(np.float64)
    fps = np.r_[0, fps[::-1]].astype(np.float64)
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, thresholds]


def area_under_curve(x, y) -> float:
    """Trapezoidal area under ``y(x)``, the same float as ``sklearn.metrics.auc`` (x monotone).

    Written out (scipy's ``trapezoid`` term by term, summed by ``np.sum``) so that evaluation does
    not import scikit-learn, which costs about half a second per process.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise InputError(f"area under curve: needs two 1-D arrays of equal length >= 2, got {x.shape}, {y.shape}")
    dx = np.diff(x)
    direction = 1
    if (dx < 0).any():
        if not (dx <= 0).all():
            raise InputError("area under curve: x is neither increasing nor decreasing")
        direction = -1
    return float(direction * np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def _tar_nearest(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    # InsightFace convention: nearest FPR point, ties to the larger TPR.
    distance = np.abs(fpr - far)
    tied = distance == distance.min()
    return float(tpr[tied].max())


def _tar_interpolate(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    # Upper envelope: one point per distinct FPR with its largest TPR (the top of a vertical step).
    unique_fpr, first = np.unique(fpr[::-1], return_index=True)
    envelope_tpr = tpr[::-1][first]  # reversed + first occurrence = last (largest TPR) per FPR
    return float(np.interp(far, unique_fpr, envelope_tpr))


def _tar_strict(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    allowed = fpr <= far
    return float(tpr[allowed].max()) if allowed.any() else 0.0


_TAR_FUNCTIONS = {"nearest": _tar_nearest, "interpolate": _tar_interpolate, "strict": _tar_strict}


def tar_at_far(fpr, tpr, fars: Iterable[float] = DEFAULT_IJB_FARS, method: str = "nearest") -> dict[str, float]:
    """``{far_key(far): TAR}`` read off an ROC (``fpr`` non-decreasing) with ``method``.

    ``method`` is ``"nearest"`` (default, InsightFace), ``"interpolate"`` or ``"strict"``
    (see the module docstring).
    """
    if method not in _TAR_FUNCTIONS:
        raise ConfigError(f"tar_method: {method!r} is not one of {list(TAR_METHODS)}")
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    tar_function = _TAR_FUNCTIONS[method]
    return {far_key(far): tar_function(fpr, tpr, float(far)) for far in fars}


#: How :func:`operating_points` picks each FAR's ROC point (written into every metrics file).
OPERATING_POINT_READING = ("the ROC point whose FPR is nearest the FAR (ties: the larger TPR; 'strict' TAR reading: "
                           "the largest TPR with FPR <= FAR); pairs scoring >= threshold are accepted")


def operating_points(fpr, tpr, thresholds, fars: Iterable[float] = DEFAULT_IJB_FARS,
                     method: str = "nearest") -> dict[str, dict[str, float | None]]:
    """``{far_key(far): {"threshold", "far", "tar"}}``: the decision threshold of each FAR's ROC point.

    The point is the one TAR is read at (:data:`OPERATING_POINT_READING`; the ``interpolate`` reading
    has no single point, so it gets the nearest one).  Accepting the evaluated pairs whose score is
    >= ``threshold`` gives exactly ``far`` (the point's FPR, not the target) and ``tar``.  A
    threshold of +inf (accept nothing: no point has a positive FPR that low) is written as None.
    """
    if method not in _TAR_FUNCTIONS:
        raise ConfigError(f"tar_method: {method!r} is not one of {list(TAR_METHODS)}")
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    points = {}
    for far in fars:
        if method == "strict":
            index = int(np.flatnonzero(fpr <= float(far))[-1])  # fpr[0] = 0: never empty; tpr ascends
        else:
            distance = np.abs(fpr - float(far))
            index = int(np.flatnonzero(distance == distance.min())[-1])  # the last tied point: the largest TPR
        points[far_key(far)] = {"threshold": plain_float(thresholds[index]), "far": plain_float(fpr[index]),
                                "tar": plain_float(tpr[index])}
    return points


def downsample_roc(fpr, tpr, thresholds, n_points: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At most about ``n_points`` ROC points, log-spaced in FPR, for plots (TAR is never read off it).

    Keeps the first and last points and, for each log-spaced FPR target, the last point at or
    below it, so the step shape survives.
    """
    fpr = np.asarray(fpr)
    if fpr.size <= n_points:
        return np.asarray(fpr), np.asarray(tpr), np.asarray(thresholds)
    positive = fpr[fpr > 0]
    low = positive.min() if positive.size else 1e-12
    targets = np.logspace(np.log10(low), 0.0, n_points)
    idx = np.searchsorted(fpr, targets, side="right") - 1
    idx = np.unique(np.concatenate([[0, fpr.size - 1], np.clip(idx, 0, fpr.size - 1)]))
    return fpr[idx], np.asarray(tpr)[idx], np.asarray(thresholds)[idx]


def write_roc(path: str | Path, fpr, tpr, thresholds, n_points: int = 2000) -> None:
    """Write downsampled ROC points to ``.npz`` (arrays ``fpr``, ``tpr``, ``threshold``) or ``.csv``."""
    path = Path(path)
    fpr, tpr, thresholds = downsample_roc(fpr, tpr, thresholds, n_points)
    if path.suffix == ".npz":
        write_npz(path, {"fpr": fpr.astype(np.float64), "tpr": tpr.astype(np.float64),
                         "threshold": thresholds.astype(np.float64)})
    elif path.suffix == ".csv":
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["fpr", "tpr", "threshold"])
            writer.writerows(zip(map(repr, map(float, fpr)), map(repr, map(float, tpr)), map(repr, map(float, thresholds))))
    else:
        raise ConfigError(f"roc_out: {str(path)!r} must end in .npz or .csv")


def tar_table(tars: Mapping[str, float]) -> dict[str, float | None]:
    """JSON-safe copy of a ``tar_at_far`` result."""
    return {key: plain_float(value) for key, value in tars.items()}
