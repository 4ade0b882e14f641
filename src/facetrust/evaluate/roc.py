"""ROC points and TAR at FAR, with the conventions written down.

Default convention (InsightFace ``eval_ijbc.py``, docs/FORMATS.md "Conventions"): the ROC is
``sklearn.metrics.roc_curve(labels, scores)`` with its defaults (``drop_intermediate=True``), and
TAR at a target FAR is the TPR of the ROC point whose FPR is nearest the target, ties broken
towards the larger TPR.  Two other readings are options and are recorded in the metrics file:

- ``"interpolate"``: linear interpolation of TPR against FPR on the upper ROC envelope
  (one point per distinct FPR, the largest TPR), as OpenSphere reads its curves;
- ``"strict"``: the largest TPR whose FPR does not exceed the target (an operating point that
  honours the FAR budget).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from sklearn.metrics import roc_curve

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
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise InputError(f"labels {labels.shape} and scores {scores.shape} must be equal 1-D shapes")
    n_genuine = int(np.count_nonzero(labels))
    if n_genuine == 0 or n_genuine == labels.size:
        raise InputError(f"ROC needs genuine and impostor pairs; got {n_genuine} genuine of {labels.size}")
    if not np.isfinite(scores).all():
        raise InputError("scores contain NaN or inf")
    return roc_curve(labels, scores)


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
