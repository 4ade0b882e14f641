"""SphereFace's LFW protocol and the weighted 10-fold accuracies (issue 10, §1 and §2)."""

import numpy as np
import pytest

from facetrust.evaluate.pair_protocols import (
    concatenated_features,
    insightface_ten_fold_weighted,
    score_ten_fold,
    sphereface_accuracy,
    sphereface_ten_fold,
)
from facetrust.evaluate.pairs import pair_distance, run_evaluate_pairs, ten_fold_accuracy


def test_sphereface_accuracy_counts_ties_as_errors_both_ways():
    scores = np.array([0.5, 0.7, 0.5, 0.1])
    same = np.array([True, True, False, False])
    # at t = 0.5: genuine 0.5 is not above (error), impostor 0.5 is not below (error)
    assert sphereface_accuracy(scores, same, np.array([0.5]))[0] == pytest.approx(0.5)
    assert sphereface_accuracy(scores, same, np.array([0.3]))[0] == pytest.approx(0.75)


def test_sphereface_accuracy_on_the_grid_equals_counting_at_every_threshold():
    """The binned counts equal a direct count at each of evaluation.m's 20,001 thresholds, exactly,
    with pair weights (bootstrap counts, zeros included) and scores lying on thresholds."""
    rng = np.random.default_rng(7)
    thresholds = np.arange(-10000, 10001) / 10000
    for trial in range(6):
        n = 150
        scores = np.round(rng.uniform(-1, 1, n), 3)
        on_grid = rng.random(n) < 0.3
        scores[on_grid] = thresholds[rng.integers(0, thresholds.size, on_grid.sum())]
        same = rng.random(n) < 0.5
        weights = rng.integers(0, 4, n).astype(float) if trial % 2 else np.ones(n)
        genuine_above = ((scores[None, :] > thresholds[:, None]) & same) @ weights
        impostor_below = ((scores[None, :] < thresholds[:, None]) & ~same) @ weights
        expected = (genuine_above + impostor_below) / weights.sum()
        got = sphereface_accuracy(scores, same, thresholds, None if trial % 2 == 0 else weights)
        assert np.array_equal(got, expected), trial


def test_sphereface_protocol_on_a_tiny_hand_made_set():
    """Two folds of four pairs in 2-D: the training fold's mean is subtracted, then the mean of the
    tied best thresholds is applied to the test fold."""
    left = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0],
                     [1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 1.0]])
    right = np.array([[1.0, 0.1], [0.1, 1.0], [-1.0, 1.0], [0.0, 2.0],
                      [1.0, 0.2], [0.0, 1.0], [1.0, -1.0], [-1.0, 2.0]])
    issame = np.array([True, True, False, False, True, True, False, False])
    result = sphereface_ten_fold(left, right, issame, n_folds=2, thr_num=100)
    for fold, (test, train) in enumerate([(slice(0, 4), slice(4, 8)), (slice(4, 8), slice(0, 4))]):
        mu = np.vstack([left[train], right[train]]).mean(axis=0)
        a, b = left - mu, right - mu
        scores = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        grid = np.arange(-100, 101) / 100
        train_acc = [(np.sum(scores[train][issame[train]] > t) + np.sum(scores[train][~issame[train]] < t)) / 4
                     for t in grid]
        threshold = np.mean(grid[np.asarray(train_acc) == max(train_acc)])
        expected = (np.sum(scores[test][issame[test]] > threshold) + np.sum(scores[test][~issame[test]] < threshold)) / 4
        assert result.fold_thresholds[fold] == pytest.approx(threshold)
        assert result.fold_accuracies[fold] == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sphereface_ten_folds_at_once_equal_each_fold_done_by_hand_with_bootstrap_weights(seed):
    """All folds are scored and thresholded at once (one (P, K) score matrix); each fold must be
    what evaluation.m does to it alone, with pairs repeated by integer bootstrap weights (0 drops a pair)."""
    rng = np.random.default_rng(seed)
    n, d, thr_num = 230, 12, 1000
    left = rng.normal(size=(n, d))
    right = 0.6 * left + rng.normal(size=(n, d))
    issame = rng.random(n) < 0.5
    weights = rng.integers(0, 4, n).astype(float)
    result = sphereface_ten_fold(left, right, issame, thr_num=thr_num, weights=weights)
    grid = np.arange(-thr_num, thr_num + 1) / thr_num
    edges = np.r_[0, np.cumsum(np.full(10, n // 10) + (np.arange(10) < n % 10))]
    for fold in range(10):
        test = np.zeros(n, bool)
        test[edges[fold]:edges[fold + 1]] = True
        rows = np.repeat(np.arange(n)[~test], weights[~test].astype(int))  # the repeated training pairs
        mu = np.vstack([left[rows], right[rows]]).mean(axis=0)
        a, b = left - mu, right - mu
        scores = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        train_acc = np.array([(np.sum(scores[rows][issame[rows]] > t) + np.sum(scores[rows][~issame[rows]] < t))
                              for t in grid]) / rows.size
        threshold = np.mean(grid[train_acc == train_acc.max()])
        held = np.repeat(np.arange(n)[test], weights[test].astype(int))
        expected = (np.sum(scores[held][issame[held]] > threshold) + np.sum(scores[held][~issame[held]] < threshold))
        assert result.fold_thresholds[fold] == pytest.approx(threshold, abs=1e-12)
        assert result.fold_accuracies[fold] == pytest.approx(expected / held.size)


def test_concatenated_features_recover_the_flipped_image_from_the_sum():
    original, flipped = np.array([[1.0, 2.0]]), np.array([[3.0, -1.0]])
    assert concatenated_features(original + flipped, original).tolist() == [[1.0, 2.0, 3.0, -1.0]]


def test_weighted_insightface_accuracy_with_unit_weights_is_the_plain_protocol():
    rng = np.random.default_rng(0)
    emb1, emb2 = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    issame = rng.random(200) < 0.5
    emb2[issame] = emb1[issame] + 0.8 * rng.normal(size=(issame.sum(), 8))
    plain = ten_fold_accuracy(emb1, emb2, issame)
    weighted = insightface_ten_fold_weighted(pair_distance(emb1, emb2, "squared_l2"), issame, np.ones(200))
    assert weighted.fold_accuracies == pytest.approx(plain.fold_accuracies)
    doubled = insightface_ten_fold_weighted(pair_distance(emb1, emb2, "squared_l2"), issame, np.full(200, 2.0))
    assert doubled.accuracy == pytest.approx(plain.accuracy)


def test_score_ten_fold_picks_a_separating_threshold():
    scores = np.r_[np.linspace(0.6, 1.0, 10), np.linspace(-1.0, 0.4, 10)]
    issame = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    order = np.random.default_rng(1).permutation(20)
    assert score_ten_fold(scores[order], issame[order], n_folds=5).accuracy == 1.0


def test_evaluate_pairs_runs_both_protocols_and_records_which(tmp_path):
    rng = np.random.default_rng(2)
    n = 60
    centres = rng.normal(size=(n, 6))
    noflip = np.repeat(centres, 2, axis=0) + 0.4 * rng.normal(size=(2 * n, 6))
    issame = np.tile([True, False], n // 2)
    noflip[1::2][~issame] = rng.normal(size=((~issame).sum(), 6))
    embedding = noflip + (noflip + 0.1 * rng.normal(size=noflip.shape))
    path = tmp_path / "pairs.npz"
    np.savez(path, image=np.array([f"p/{i}" for i in range(2 * n)]), embedding=embedding.astype(np.float32),
             embedding_noflip=noflip.astype(np.float32), flip=True, issame=issame)
    insight = run_evaluate_pairs(path, tmp_path / "a.json")
    sphere = run_evaluate_pairs(path, tmp_path / "b.json", protocol="sphereface")
    assert insight["settings"]["protocol"] == "insightface" and sphere["settings"]["protocol"] == "sphereface"
    assert "evaluation.m" in sphere["settings"]["accuracy_thresholds"]
    assert 0.5 < sphere["accuracy"] <= 1.0
    assert sphere["n_genuine"] == n // 2 and sphere["n_impostor"] == n // 2
