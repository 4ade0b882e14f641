"""The metric registry (evaluate/metrics.py): what each entry computes, the record's key order, and
the entries' declarations."""

from __future__ import annotations

import numpy as np
import pytest

from facetrust.evaluate.metrics import METRICS, Metric, Scored, compute_metrics, shown_in, summary_keys
from facetrust.evaluate.pairs import ten_fold_accuracy
from facetrust.evaluate.roc import roc_points


def _scored(tar=None):
    rng = np.random.default_rng(0)
    labels = np.arange(2000) % 2
    scores = rng.normal(size=2000) + 1.5 * labels
    fpr, tpr, thresholds = roc_points(labels.astype(np.int8), scores)
    e1 = rng.normal(size=(200, 8))
    fold = ten_fold_accuracy(e1, e1 + rng.normal(size=(200, 8)), np.arange(200) % 2 == 0)
    return Scored(fpr, tpr, thresholds, (1e-3, 1e-2, 1e-1), tar=tar, folds=fold, val=fold)


def test_a_pair_set_record_holds_the_fold_metrics_then_the_roc_metrics_in_the_files_order():
    values = compute_metrics(_scored(), needs=("folds", "roc"))
    assert list(values) == ["accuracy", "accuracy_std", "fold_accuracies", "fold_thresholds", "val_at_far",
                            "val_std_at_far", "far_achieved", "tar_at_far", "threshold_at_far", "auc"]
    assert list(compute_metrics(_scored())) == ["tar_at_far", "threshold_at_far", "auc"]
    assert list(values["tar_at_far"]) == ["1e-03", "1e-02", "1e-01"]
    assert 0.5 < values["auc"] < 1 and values["tar_at_far"]["1e-03"] <= values["tar_at_far"]["1e-01"]
    assert values["val_at_far"] == {"1e-03": pytest.approx(_scored().val.val)}


def test_a_protocol_s_own_tar_reading_replaces_the_roc_s():
    exact = {"1e-03": 0.25, "1e-02": 0.5, "1e-01": 0.75}
    assert compute_metrics(_scored(tar=exact))["tar_at_far"] == exact
    assert compute_metrics(_scored())["tar_at_far"] != exact


def test_where_each_metric_is_shown_and_what_the_summary_prints():
    assert [key for key, _ in shown_in("table")] == ["tar_at_far"]
    assert [key for key, _ in shown_in("view")] == ["tar_at_far", "auc", "accuracy", "accuracy_std"]
    assert summary_keys() == {"tar_at_far", "tar_at_far_ci", "auc", "accuracy", "accuracy_ci"}
    tar = METRICS.get("tar_at_far")
    assert tar.columns({"1e-01": 0.9, "1e-03": 0.5}) == {"TAR@FAR=1e-03": 0.5, "TAR@FAR=1e-01": 0.9}
    assert METRICS.get("auc").columns(0.8) == {"auc": 0.8}


def test_a_metric_declares_what_it_needs_and_a_column_where_it_is_shown():
    with pytest.raises(ValueError, match="needs"):
        Metric("x", lambda scored: 0, needs="images")
    with pytest.raises(ValueError, match="column"):
        Metric("x", lambda scored: 0, shown=("table",))
    with pytest.raises(ValueError, match="shown"):
        Metric("x", lambda scored: 0, column="x", shown=("poster",))
