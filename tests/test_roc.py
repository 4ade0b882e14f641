"""ROC points and TAR@FAR conventions (InsightFace nearest point, interpolate, strict)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from facetrust.errors import ConfigError, InputError
from facetrust.evaluate.roc import downsample_roc, far_key, roc_points, tar_at_far, write_roc


def brute_force_rates(labels, scores, thresholds):
    """(fpr, tpr) of "accept iff score >= t" by direct counting."""
    genuine = scores[labels == 1]
    impostor = scores[labels == 0]
    tpr = np.array([(genuine >= t).mean() for t in thresholds])
    fpr = np.array([(impostor >= t).mean() for t in thresholds])
    return fpr, tpr


def brute_force_nearest(fpr, tpr, far):
    """Python loop: smallest |fpr - far|, then the largest tpr."""
    best = None
    for f, t in zip(fpr, tpr):
        key = (abs(f - far), -t)
        if best is None or key < best[0]:
            best = (key, t)
    return best[1]


@pytest.mark.parametrize("seed", range(5))
def test_roc_points_match_direct_counting_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(500) < 0.3).astype(int)
    scores = np.round(rng.normal(size=500) + labels, 2)  # ties on purpose
    fpr, tpr, thresholds = roc_points(labels, scores)
    ref = roc_curve(labels, scores)
    for got, want in zip((fpr, tpr, thresholds), ref):
        np.testing.assert_array_equal(got, want)
    bf_fpr, bf_tpr = brute_force_rates(labels, scores, thresholds)
    np.testing.assert_allclose(fpr, bf_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tpr, bf_tpr, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_tar_at_far_nearest_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    labels = (rng.random(3000) < 0.2).astype(int)
    scores = rng.normal(size=3000) + 1.5 * labels
    fpr, tpr, _ = roc_points(labels, scores)
    fars = (1e-4, 1e-3, 5e-3, 1e-2, 1e-1, 0.5)
    got = tar_at_far(fpr, tpr, fars)
    assert list(got) == [far_key(f) for f in fars]
    for far in fars:
        assert got[far_key(far)] == brute_force_nearest(fpr, tpr, far)


def test_nearest_breaks_ties_towards_the_larger_tpr():
    # Vertical step at FPR 0: (0, 0) and (0, 0.5) are both nearest to FAR 0.
    fpr = np.array([0.0, 0.0, 0.5, 1.0])
    tpr = np.array([0.0, 0.5, 0.5, 1.0])
    assert tar_at_far(fpr, tpr, [0.0])["0e+00"] == 0.5
    # Exactly equidistant below and above (binary fractions): 0.25 and 0.75 around 0.5 -> above.
    fpr = np.array([0.0, 0.25, 0.75, 1.0])
    tpr = np.array([0.1, 0.6, 0.8, 1.0])
    assert tar_at_far(fpr, tpr, [0.5])["5e-01"] == 0.8
    assert tar_at_far(fpr, tpr, [0.49])["4.9e-01"] == 0.6


def test_strict_and_interpolate_read_the_roc_as_documented():
    fpr = np.array([0.0, 0.0, 0.1, 0.1, 0.5, 1.0])
    tpr = np.array([0.0, 0.2, 0.4, 0.6, 0.9, 1.0])
    strict = tar_at_far(fpr, tpr, [0.05, 0.1, 0.3], method="strict")
    assert strict == {"5e-02": 0.2, "1e-01": 0.6, "3e-01": 0.6}
    interp = tar_at_far(fpr, tpr, [0.05, 0.3], method="interpolate")
    # Upper envelope (0, 0.2), (0.1, 0.6), (0.5, 0.9): linear in between.
    assert interp["5e-02"] == pytest.approx(0.4)
    assert interp["3e-01"] == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="tar_method"):
        tar_at_far(fpr, tpr, [0.1], method="closest")


def test_far_key_formats_design_metric_keys():
    assert [far_key(f) for f in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)] == [
        "1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"]
    assert far_key(5e-4) == "5e-04"
    assert far_key(2.5e-4) == "2.5e-04"


def test_roc_points_refuses_one_class_and_non_finite_scores():
    with pytest.raises(InputError, match="genuine and impostor"):
        roc_points(np.ones(4), np.arange(4.0))
    with pytest.raises(InputError, match="NaN"):
        roc_points(np.array([0, 1]), np.array([0.0, np.nan]))


def test_write_roc_downsamples_log_spaced_and_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    labels = (rng.random(200_000) < 0.05).astype(int)
    scores = rng.normal(size=labels.size) + 2 * labels
    fpr, tpr, thr = roc_points(labels, scores)
    assert fpr.size > 2000
    small = downsample_roc(fpr, tpr, thr, 500)
    assert small[0].size <= 502 and small[0][0] == 0.0 and small[0][-1] == 1.0
    assert np.all(np.diff(small[0]) >= 0)
    write_roc(tmp_path / "roc.npz", fpr, tpr, thr, n_points=500)
    with np.load(tmp_path / "roc.npz") as data:
        np.testing.assert_array_equal(data["fpr"], small[0])
        np.testing.assert_array_equal(data["threshold"], small[2])
    write_roc(tmp_path / "roc.csv", fpr, tpr, thr, n_points=500)
    rows = (tmp_path / "roc.csv").read_text().splitlines()
    assert rows[0] == "fpr,tpr,threshold" and len(rows) == small[0].size + 1
    with pytest.raises(ConfigError):
        write_roc(tmp_path / "roc.txt", fpr, tpr, thr)


@pytest.mark.parametrize("method", ["nearest", "strict"])
def test_operating_points_are_thresholds_that_give_the_read_far_and_tar(method):
    """Accepting the pairs scoring >= the stored threshold gives exactly the point's FAR and TAR, and
    TAR is the one tar_at_far reads (so a decision at that threshold is the benchmark's operating point)."""
    from facetrust.evaluate.roc import operating_points

    rng = np.random.default_rng(7)
    labels = np.r_[np.ones(300, dtype=np.int8), np.zeros(3000, dtype=np.int8)]
    scores = np.round(np.r_[rng.normal(0.6, 0.2, 300), rng.normal(0.0, 0.2, 3000)], 3)  # ties on purpose
    fpr, tpr, thresholds = roc_points(labels, scores)
    fars = [1e-3, 1e-2, 1e-1]
    points = operating_points(fpr, tpr, thresholds, fars, method)
    tars = tar_at_far(fpr, tpr, fars, method=method)
    for far in fars:
        point = points[far_key(far)]
        assert point["threshold"] is not None
        measured_fpr, measured_tpr = brute_force_rates(labels, scores, [point["threshold"]])
        assert measured_fpr[0] == point["far"] and measured_tpr[0] == point["tar"] == tars[far_key(far)]
        if method == "strict":
            assert point["far"] <= far


def test_operating_point_below_every_impostor_is_accept_nothing():
    from facetrust.evaluate.roc import operating_points

    labels = np.array([1, 1, 0, 0, 0])
    scores = np.array([0.1, 0.9, 0.95, 0.5, 0.2])  # the best impostor beats most genuine pairs
    fpr, tpr, thresholds = roc_points(labels, scores)
    point = operating_points(fpr, tpr, thresholds, [1e-6], "strict")["1e-06"]
    assert point == {"threshold": None, "far": 0.0, "tar": 0.0}  # +inf: JSON null
