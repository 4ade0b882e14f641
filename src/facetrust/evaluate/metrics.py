"""Metrics as code: one registry of the verification metrics a metrics file holds.

Modelled on pytorch-metric-learning's ``AccuracyCalculator``: each entry of :data:`METRICS` is a
:class:`Metric` that computes one keyed value from what the protocol measured (a :class:`Scored`),
says what it needs (``"roc"``: the scores and labels of every pair; ``"folds"``: the 10-fold
protocol of a pair set), its column in the result tables and the DVC view, the key of its bootstrap
interval, and where it is shown.  The producers (``evaluate pairs|ijb``, ``evaluate pairs --scores``)
fill their records with :func:`compute_metrics`; ``report table``, ``report dvc-metrics`` and the
``evaluate`` command's printed summary iterate the registry, so a new metric is one entry.

=================  =======  ===================================================================
key                needs    value
=================  =======  ===================================================================
tar_at_far         roc      TAR at each FAR (IJB: exact float64 TAR; pair sets: nearest ROC point)
threshold_at_far   roc      the decision threshold, FAR and TAR of each FAR's ROC point
auc                roc      area under the ROC (trapezoid)
accuracy           folds    10-fold accuracy, mean over folds
accuracy_std       folds    its population std over folds
fold_accuracies    folds    each fold's accuracy
fold_thresholds    folds    each fold's threshold (chosen on the other nine)
val_at_far         folds    InsightFace VAL at the VAL FAR (threshold interpolated on nine folds)
val_std_at_far     folds    its std over folds
far_achieved       folds    the FAR those thresholds achieve on the test folds
=================  =======  ===================================================================

A record holds a protocol's needs in the order it names them (pair sets: ``("folds", "roc")``,
IJB: ``("roc",)``) and, within one need, the registry's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from facetrust.evaluate.roc import (area_under_curve, far_key, operating_points, plain_float, tar_at_far,
                                    tar_table)
from facetrust.registry import Registry

NEEDS = ("roc", "folds")
SHOWN = ("table", "view", "summary")  # result tables, the DVC metrics view, the printed summary


@dataclass(frozen=True)
class Scored:
    """What a protocol measured, for the metrics to read.

    ``fpr``, ``tpr``, ``thresholds``: the ROC of every pair (scikit-learn convention); ``fars`` the
    operating points asked for and ``tar_method`` how TAR is read at them; ``tar``: the protocol's
    own TAR reading where it has one (IJB: the exact float64 TAR), else TAR is read off the ROC.
    ``folds``: the 10-fold accuracy result (``accuracy``, ``accuracy_std``, ``fold_accuracies``,
    ``fold_thresholds``); ``val``: the InsightFace VAL result (``val``, ``val_std``, ``far``) at
    ``val_far``."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    fars: Sequence[float]
    tar_method: str = "nearest"
    tar: Mapping[str, float] | None = None
    folds: Any = None
    val: Any = None
    val_far: float = 1e-3


@dataclass(frozen=True)
class Metric:
    """A metric: ``compute(scored)`` gives its JSON value (a number, a list, or a map keyed by FAR).

    ``column``: its table and DVC-view column, ``{far}`` standing for the FAR key of a value per FAR
    (``TAR@FAR={far}``); ``interval``: the record key of its bootstrap interval (``[lo, hi]``, or a
    map of them per FAR) and ``ci_column`` that interval's columns (``{bound}`` is ``lo``/``hi``);
    ``shown``: where it appears (:data:`SHOWN`)."""

    description: str
    compute: Callable[[Scored], Any]
    needs: str = "roc"
    column: str | None = None
    interval: str | None = None
    ci_column: str | None = None
    shown: tuple[str, ...] = ()

    def __post_init__(self):
        if self.needs not in NEEDS:
            raise ValueError(f"metric needs {self.needs!r}: not one of {NEEDS}")
        unknown = set(self.shown) - set(SHOWN)
        if unknown:
            raise ValueError(f"metric shown in {sorted(unknown)}: not one of {SHOWN}")
        if self.shown and self.shown != ("summary",) and self.column is None:
            raise ValueError("a metric shown in a table or the DVC view needs its column")

    @property
    def per_far(self) -> bool:
        """Whether its value is a map from FAR key to a value (its column holds ``{far}``)."""
        return "{far}" in (self.column or "")

    def columns(self, value) -> dict[str, Any]:
        """``{column: number}`` of one metrics file's value (per-FAR values by ascending FAR)."""
        if self.per_far:
            return {self.column.format(far=key): value[key] for key in sorted(value, key=_far_order)}
        return {self.column: value}


METRICS: Registry[Metric] = Registry("metric")


def _far_order(key: str) -> float:
    try:
        return float(key)
    except ValueError:
        return float("inf")


def metric(key: str, description: str, **options) -> Callable:
    """Decorator: ``@metric("key", "description", needs=…, column=…)`` on ``compute(scored)``."""

    def decorator(compute):
        METRICS.register(key)(Metric(description, compute, **options))
        return compute

    return decorator


def compute_metrics(scored: Scored, needs: Sequence[str] = ("roc",)) -> dict[str, Any]:
    """The record's metric values: every metric of each need, in the order ``needs`` names them."""
    return {key: entry.compute(scored) for need in needs for key, entry in METRICS.items() if entry.needs == need}


def shown_in(place: str) -> list[tuple[str, Metric]]:
    """``(key, metric)`` of the metrics shown in ``place`` (:data:`SHOWN`), registry order."""
    return [(key, entry) for key, entry in METRICS.items() if place in entry.shown]


def summary_keys() -> set[str]:
    """The record keys the ``evaluate`` command prints: the summary metrics and their intervals."""
    return {k for key, entry in shown_in("summary") for k in (key, entry.interval) if k is not None}


@metric("tar_at_far", "TAR at each FAR", column="TAR@FAR={far}", interval="tar_at_far_ci",
        ci_column="ci_{bound}@FAR={far}", shown=("table", "view", "summary"))
def _tar_at_far(scored: Scored):
    tars = scored.tar if scored.tar is not None else tar_at_far(scored.fpr, scored.tpr, scored.fars,
                                                                method=scored.tar_method)
    return tar_table(tars)


@metric("threshold_at_far", "decision threshold, FAR and TAR of each FAR's ROC point")
def _threshold_at_far(scored: Scored):
    return operating_points(scored.fpr, scored.tpr, scored.thresholds, scored.fars, scored.tar_method)


@metric("auc", "area under the ROC", column="auc", shown=("view", "summary"))
def _auc(scored: Scored):
    return plain_float(area_under_curve(scored.fpr, scored.tpr))


@metric("accuracy", "10-fold accuracy (mean over folds)", needs="folds", column="accuracy", interval="accuracy_ci",
        shown=("view", "summary"))
def _accuracy(scored: Scored):
    return plain_float(scored.folds.accuracy)


@metric("accuracy_std", "10-fold accuracy, population std over folds", needs="folds", column="accuracy_std",
        shown=("view",))
def _accuracy_std(scored: Scored):
    return plain_float(scored.folds.accuracy_std)


@metric("fold_accuracies", "each fold's accuracy", needs="folds")
def _fold_accuracies(scored: Scored):
    return [plain_float(a) for a in scored.folds.fold_accuracies]


@metric("fold_thresholds", "each fold's threshold, chosen on the other folds", needs="folds")
def _fold_thresholds(scored: Scored):
    return [plain_float(t) for t in scored.folds.fold_thresholds]


@metric("val_at_far", "InsightFace VAL at the VAL FAR", needs="folds")
def _val_at_far(scored: Scored):
    return {far_key(scored.val_far): plain_float(scored.val.val)}


@metric("val_std_at_far", "VAL's std over folds", needs="folds")
def _val_std_at_far(scored: Scored):
    return {far_key(scored.val_far): plain_float(scored.val.val_std)}


@metric("far_achieved", "FAR achieved on the test folds at the VAL thresholds", needs="folds")
def _far_achieved(scored: Scored):
    return {far_key(scored.val_far): plain_float(scored.val.far)}
