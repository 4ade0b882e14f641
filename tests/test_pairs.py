"""10-fold pair verification (InsightFace verification.py convention) and the angular Fisher score."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.model_selection import KFold

from facetrust.errors import InputError
from facetrust.evaluate.pairs import (
    angular_fisher_score,
    fold_indices,
    run_evaluate_pairs,
    ten_fold_accuracy,
)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_pairs(n_pairs, separation, seed, dim=32):
    """Pairs of noisy copies of random identities; ``separation`` scales identity over noise."""
    rng = np.random.default_rng(seed)
    issame = rng.random(n_pairs) < 0.5
    a = rng.standard_normal((n_pairs, dim))
    b = np.where(issame[:, None], a, rng.standard_normal((n_pairs, dim)))
    noise = 1.0 / max(separation, 1e-9)
    return (separation * a + rng.standard_normal(a.shape) * noise,
            separation * b + rng.standard_normal(a.shape) * noise, issame)


def insightface_loop_accuracy(emb1, emb2, issame, n_folds=10):
    """Independent loop version of InsightFace calculate_roc: best train threshold per fold."""
    diff = unit(emb1) - unit(emb2)
    dist = np.sum(diff * diff, axis=1)
    thresholds = np.arange(0, 4, 0.01)
    accs = []
    for train, test in KFold(n_splits=n_folds, shuffle=False).split(dist):
        def acc(t, idx):
            pred = dist[idx] < t
            return (np.sum(pred & issame[idx]) + np.sum(~pred & ~issame[idx])) / idx.size
        best = thresholds[int(np.argmax([acc(t, train) for t in thresholds]))]
        accs.append(acc(best, test))
    return np.mean(accs), np.std(accs)


@pytest.mark.parametrize("n, k", [(6000, 10), (7001, 10), (37, 4)])
def test_folds_are_sklearn_kfold_without_shuffle(n, k):
    ours = fold_indices(n, k)
    for got, (_, want) in zip(ours, KFold(n_splits=k, shuffle=False).split(np.zeros(n))):
        np.testing.assert_array_equal(got, want)
    assert len(ours) == k


def test_perfectly_separable_pairs_give_accuracy_one_and_random_pairs_about_half():
    e1, e2, same = make_pairs(2000, separation=10.0, seed=0)
    perfect = ten_fold_accuracy(e1, e2, same)
    assert perfect.accuracy == 1.0 and perfect.accuracy_std == 0.0 and perfect.val == 1.0
    rng = np.random.default_rng(1)
    chance = ten_fold_accuracy(rng.standard_normal((6000, 32)), rng.standard_normal((6000, 32)),
                               rng.random(6000) < 0.5)
    assert abs(chance.accuracy - 0.5) < 0.04


@pytest.mark.parametrize("seed", [2, 3])
def test_ten_fold_accuracy_matches_an_insightface_style_loop(seed):
    e1, e2, same = make_pairs(1200, separation=0.8, seed=seed)
    result = ten_fold_accuracy(e1, e2, same)
    mean, std = insightface_loop_accuracy(e1, e2, same)
    assert 0.6 < result.accuracy < 0.99
    assert result.accuracy == pytest.approx(mean, abs=1e-12)
    assert result.accuracy_std == pytest.approx(std, abs=1e-12)
    assert result.fold_accuracies.shape == (10,) and result.fold_thresholds.shape == (10,)
    cosine = ten_fold_accuracy(e1, e2, same, metric="cosine")
    assert cosine.accuracy == pytest.approx(result.accuracy, abs=2e-3)
    np.testing.assert_allclose(cosine.fold_thresholds, 1 - result.fold_thresholds / 2, atol=0.02)


def test_val_at_far_holds_the_far_budget_on_average():
    e1, e2, same = make_pairs(6000, separation=0.7, seed=4)
    result = ten_fold_accuracy(e1, e2, same, far_target=1e-2)
    assert 0.0 < result.val < 1.0
    assert result.far < 2.5e-2  # interpolated threshold: achieved FAR near the 1e-2 target


def test_angular_fisher_score_follows_the_sphereface_formula():
    # Two classes on the axes: class means (1, 0.5)/(…) etc. computed by hand via the formula.
    x = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 1.0]])
    labels = np.array([0, 0, 1, 1])
    m0, m1, m = x[:2].mean(0), x[2:].mean(0), x.mean(0)

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    s_w = sum(1 - cos(v, m0) for v in x[:2]) + sum(1 - cos(v, m1) for v in x[2:])
    s_b = 2 * (1 - cos(m0, m)) + 2 * (1 - cos(m1, m))
    assert angular_fisher_score(x, labels) == pytest.approx(s_w / s_b)
    # Tighter classes score lower (better).
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 16))
    labels = np.repeat(np.arange(5), 20)
    tight = centres[labels] + 0.1 * rng.standard_normal((100, 16))
    loose = centres[labels] + 1.0 * rng.standard_normal((100, 16))
    assert angular_fisher_score(tight, labels) < angular_fisher_score(loose, labels)


def test_run_evaluate_pairs_writes_plain_json_and_needs_issame(tmp_path):
    e1, e2, same = make_pairs(600, separation=1.0, seed=5)
    interleaved = np.empty((1200, e1.shape[1]), dtype=np.float32)
    interleaved[0::2], interleaved[1::2] = e1, e2
    images = np.array([f"{i}.jpg" for i in range(1200)])
    np.savez(tmp_path / "lfw.npz", image=images, embedding=interleaved, issame=same)
    metrics = run_evaluate_pairs(tmp_path / "lfw.npz", tmp_path / "m.json", roc_out=tmp_path / "roc.npz")
    assert json.loads((tmp_path / "m.json").read_text()) == metrics
    assert metrics["test_set"] == "lfw" and metrics["n_pairs"] == 600
    assert metrics["accuracy"] == pytest.approx(ten_fold_accuracy(e1, e2, same).accuracy)
    assert set(metrics["val_at_far"]) == {"1e-03"} and "1e-04" in metrics["tar_at_far"]
    assert metrics["settings"]["flags"] == "F1" and metrics["settings"]["metric"] == "squared_l2"
    assert (tmp_path / "roc.npz").exists()
    with pytest.raises(InputError, match="embedding_noflip"):
        run_evaluate_pairs(tmp_path / "lfw.npz", tmp_path / "m0.json", flip=False)
    np.savez(tmp_path / "bad.npz", image=images[:-1], embedding=interleaved[:-1], issame=same)
    with pytest.raises(InputError, match="1199 embeddings for 600 pairs"):
        run_evaluate_pairs(tmp_path / "bad.npz", tmp_path / "m1.json")
    np.savez(tmp_path / "noissame.npz", image=images, embedding=interleaved)
    with pytest.raises(InputError, match="'issame'"):
        run_evaluate_pairs(tmp_path / "noissame.npz", tmp_path / "m2.json")
