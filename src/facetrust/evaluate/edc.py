"""Error-versus-Discard Characteristic (EDC): how the face-quality field scores a quality measure.

Definition (Schlett et al., "Considerations on the evaluation of biometric quality assessment
algorithms", arXiv 2303.13294; the ``edc.py`` of dasec/quality-assessment-evaluation; ISO/IEC
29794-5), with pair quality larger = better:

1. pair quality = min of the two qualities (for uncertainties: the larger uncertainty);
2. the comparison-score threshold is fixed **once**, at a starting error: on mated comparisons the
   ``starting_error`` quantile of their scores (FNM-EDC, error = score < threshold), on non-mated
   ones the ``1 − starting_error`` quantile (FM-EDC, error = score ≥ threshold);
3. comparisons are sorted by pair quality and discarded from the lowest; comparisons of equal
   quality are discarded **together** (one EDC point per distinct quality);
4. error fraction = remaining errors / remaining comparisons, against the discarded fraction;
5. **pAUC** up to a discard limit with stepwise interpolation, **minus** the area under the
   theoretical best (the error falling one-for-one with the discarded fraction:
   se²/2 − (se − limit)²/2 when limit < se, else se²/2).  Smaller is better; 0 is perfect.

A random ranking keeps the expected error at the starting error (its pAUC grows linearly with the
limit, se·limit − best: the diagonal of the area plot); a ranking that discards the errors first
reaches the theoretical best (pAUC − best = 0).

**ERC after CR-FIQA** (the protocol of fdbtrs/CR-FIQA's ``ERC``, labelled ``crfiqa``; *not* its
exact threshold rule, so its numbers are not CR-FIQA's): the threshold is *recomputed* on the kept
pairs at each discard fraction as the ``numpy.quantile`` (linear) of the kept non-mated scores at
1 − FMR (1e-3, 1e-4), FNMR is read at it; fractions 0…0.95 in steps of 0.05; area by the trapezoid
rule over the full range.  CR-FIQA's code picks its threshold another way, which moves FNMR by up
to 0.0125 at FMR 1e-3 on small sets.

Bootstrap: :func:`edc_pauc` takes integer weights (a replicate of
:mod:`facetrust.evaluate.bootstrap`), which act as repeated comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from facetrust.errors import ConfigError, InputError

ERROR_TYPES = ("fnmr", "fmr")
CURVE_POINTS = 1500  # points kept per stored curve (the pAUC is computed on the full curve)
CRFIQA_FRACTIONS = tuple(np.round(np.arange(0.0, 0.95 + 1e-9, 0.05), 10))


@dataclass
class EdcCurve:
    """One EDC: discarded fraction → error fraction (a step function), its threshold and start."""

    discard: np.ndarray
    error: np.ndarray
    threshold: float
    starting_error: float


def comparison_threshold(scores: np.ndarray, error: str, starting_error: float) -> float:
    """The threshold fixed once: the ``starting_error`` (FNMR) or ``1 − starting_error`` (FMR)
    quantile of the scores (``numpy.quantile``, linear), as the reference computes it."""
    if error not in ERROR_TYPES:
        raise ConfigError(f"edc error: {error!r} is not one of {list(ERROR_TYPES)}")
    if not 0.0 < starting_error < 1.0:
        raise ConfigError(f"edc starting_error: {starting_error} must lie in (0, 1)")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise InputError(f"edc: no {'mated' if error == 'fnmr' else 'non-mated'} comparisons to fix the "
                         f"{error.upper()} threshold on")
    quantile = starting_error if error == "fnmr" else 1.0 - starting_error
    return float(np.quantile(scores, quantile))


def edc_curve(scores, quality, error: str = "fnmr", *, starting_error: float = 0.05,
              threshold: float | None = None, weights=None) -> EdcCurve:
    """The EDC of comparisons of one kind (mated for ``"fnmr"``, non-mated for ``"fmr"``).

    ``quality`` larger = better; ``weights`` (non-negative integers) repeat comparisons (bootstrap).
    ``threshold`` None fixes it from ``starting_error`` on the (weighted) scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.float64)
    if scores.shape != quality.shape or scores.ndim != 1 or scores.size == 0:
        raise InputError(f"edc: scores {scores.shape} and qualities {quality.shape} must be equal non-empty 1-D")
    if np.isnan(quality).any():
        raise InputError(f"edc: qualities must not be NaN (comparison {int(np.flatnonzero(np.isnan(quality))[0])} "
                         f"of the {'mated' if error == 'fnmr' else 'non-mated'} ones)")
    if not np.isfinite(scores).all():
        raise InputError(f"edc: scores must be finite (comparison {int(np.flatnonzero(~np.isfinite(scores))[0])} "
                         f"of the {'mated' if error == 'fnmr' else 'non-mated'} ones)")
    order = np.argsort(quality, kind="stable")
    scores, quality = scores[order], quality[order]
    w = np.ones(scores.size) if weights is None else np.asarray(weights, dtype=np.float64)[order]
    keep = w > 0
    scores, quality, w = scores[keep], quality[keep], w[keep]
    if threshold is None:
        repeated = np.repeat(scores, w.astype(np.int64)) if weights is not None else scores
        threshold = comparison_threshold(repeated, error, starting_error)
    is_error = scores < threshold if error == "fnmr" else scores >= threshold
    remaining_errors = np.cumsum((w * is_error)[::-1])[::-1]
    discarded = np.r_[0.0, np.cumsum(w)[:-1]]
    starts = np.r_[0, np.flatnonzero(quality[1:] != quality[:-1]) + 1]  # ties discarded together
    total = float(w.sum())
    discard = discarded[starts] / total
    error_fraction = remaining_errors[starts] / (total - discarded[starts])
    if discard[-1] != 1.0:  # the reference closes the curve at 100 % discarded
        discard, error_fraction = np.r_[discard, 1.0], np.r_[error_fraction, 0.0]
    return EdcCurve(discard, error_fraction, float(threshold), float(error_fraction[0]))


def pauc(curve: EdcCurve, limit: float) -> float:
    """Area under the step curve from 0 to ``limit`` (the reference's stepwise interpolation)."""
    if not 0.0 <= limit <= 1.0:
        raise ConfigError(f"edc discard_limit: {limit} must lie in [0, 1]")
    right = np.minimum(np.r_[curve.discard[1:], 1.0], limit)
    widths = np.clip(right - curve.discard, 0.0, None)
    return float(np.sum(curve.error * widths))


def theoretical_best_area(starting_error: float, limit: float) -> float:
    """Area under max(0, se − d) for d in [0, limit]: se²/2 − (se − limit)²/2 when limit < se."""
    area = starting_error**2 / 2.0
    if limit < starting_error:
        area -= (starting_error - limit) ** 2 / 2.0
    return float(area)


def edc_pauc(curve: EdcCurve, limit: float) -> float:
    """pAUC minus the theoretical best (0 = perfect ranking; smaller is better)."""
    return pauc(curve, limit) - theoretical_best_area(curve.starting_error, limit)


def thin_curve(curve: EdcCurve, n_points: int = CURVE_POINTS) -> tuple[list[float], list[float]]:
    """At most about ``n_points`` points of the step curve for plots (first point of each grid cell)."""
    if curve.discard.size <= n_points:
        return curve.discard.tolist(), curve.error.tolist()
    cells = np.floor(curve.discard * n_points).astype(np.int64)
    keep = np.r_[True, cells[1:] != cells[:-1]]
    keep[-1] = True
    return curve.discard[keep].tolist(), curve.error[keep].tolist()


def crfiqa_erc(scores, labels, quality, fmrs: Sequence[float], fractions: Sequence[float] = CRFIQA_FRACTIONS) -> dict:
    """An ERC after CR-FIQA's (threshold rule: ours, see the module docstring): per discarded fraction of *all* pairs (lowest quality first), FNMR of the kept
    mated pairs at the threshold that gives the kept non-mated pairs each FMR; plus its full-range
    trapezoid area.  Returns ``{"fractions": [...], "fnmr": {fmr_key: [...]}, "auc": {fmr_key: a}}``."""
    from facetrust.formats import far_key, plain_float

    scores = np.asarray(scores, dtype=np.float64)
    genuine = np.asarray(labels).astype(bool)
    order = np.argsort(np.asarray(quality, dtype=np.float64), kind="stable")
    out = {"fractions": [float(f) for f in fractions], "fnmr": {}, "auc": {}}
    for fmr in fmrs:
        curve = []
        for fraction in fractions:
            kept = np.zeros(scores.size, dtype=bool)
            kept[order[int(np.floor(fraction * scores.size)):]] = True
            mated, non_mated = scores[kept & genuine], scores[kept & ~genuine]
            if mated.size == 0 or non_mated.size == 0:
                curve.append(float("nan"))
                continue
            threshold = np.quantile(non_mated, 1.0 - fmr)
            curve.append(float(np.mean(mated < threshold)))
        values = np.asarray(curve)
        finite = np.isfinite(values)
        area = np.trapezoid(values[finite], np.asarray(fractions)[finite]) if finite.sum() > 1 else float("nan")
        out["fnmr"][far_key(fmr)] = [plain_float(v) for v in values]
        out["auc"][far_key(fmr)] = plain_float(area)
    return out
