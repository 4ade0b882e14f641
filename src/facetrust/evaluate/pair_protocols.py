"""Pair-set protocols beside InsightFace's: SphereFace's LFW evaluation, a score-generic 10-fold
accuracy, and weighted versions of both for the identity bootstrap.

**SphereFace** (wy1iu/sphereface ``test/code/evaluation.m``), which differs from InsightFace's
``verification.py`` (``evaluate.pairs``) in four ways:

1. the image feature is the *concatenation* [f(original); f(flipped)] (InsightFace sums them);
2. on each fold the mean feature of the nine training folds (both images of every training pair)
   is subtracted before L2 normalisation; score = cosine;
3. thresholds are −1 … 1 in steps of 1e-4 (``thrNum = 10000``), a genuine pair is accepted when its
   score is *above* the threshold and an impostor rejected when *below* (a tie is an error both
   ways), and the threshold is the **mean of all thresholds tied** at the best training accuracy;
4. folds are contiguous blocks of the pair list (``fold = ceil(i / 600)`` for LFW's 6,000 pairs).

The flipped image's feature is recovered from the embeddings file as ``embedding −
embedding_noflip`` (``embedding`` is the sum of the two, docs/FORMATS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facetrust.errors import ConfigError, InputError

SPHEREFACE_THRESHOLDS = 10000  # evaluation.m: getThreshold(..., 10000)


def fold_indices(n: int, n_folds: int = 10) -> list[np.ndarray]:
    """Test indices of each fold: contiguous blocks, the first ``n % n_folds`` one longer (= KFold, no shuffle)."""
    if not 2 <= n_folds <= n:
        raise ConfigError(f"n_folds: {n_folds} must be between 2 and the number of pairs ({n})")
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(edges[k], edges[k + 1]) for k in range(n_folds)]


@dataclass
class FoldAccuracy:
    """Per-fold accuracies and thresholds of a 10-fold protocol; ``accuracy`` is their mean."""

    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.fold_accuracies))

    @property
    def accuracy_std(self) -> float:
        return float(np.std(self.fold_accuracies))


def _weighted_counts(sorted_values: np.ndarray, sorted_weights: np.ndarray, thresholds: np.ndarray, side: str) -> np.ndarray:
    cumulative = np.r_[0.0, np.cumsum(sorted_weights)]
    return cumulative[np.searchsorted(sorted_values, thresholds, side=side)]


def sphereface_accuracy(scores, same, thresholds, weights=None) -> np.ndarray:
    """Accuracy at each of the increasing ``thresholds``: (genuine > t) + (impostor < t), over all
    pairs (weighted).

    Each score falls between two thresholds (a binary search into the grid); the weights per gap,
    summed from either end, give every threshold's counts at once: no sort of the scores and no
    search per threshold (about two thirds of the time per call on evaluation.m's 20,001-threshold
    grid).  With integer weights (pair counts) every sum is exact, so the accuracies are the same
    whatever the order of summation."""
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    w = np.ones(scores.size) if weights is None else np.asarray(weights, dtype=np.float64)
    return _correct_counts(scores, same, np.asarray(thresholds, dtype=np.float64), w)[0] / w.sum()


def _correct_counts(scores, same, thresholds, weights, groups=None, n_groups: int = 1) -> np.ndarray:
    """(n_groups, T) weighted counts of correct decisions at each threshold, scores of group g
    (``groups``, default all 0) counted in row g: one binned count per side for every group."""
    gaps = thresholds.size + 1
    bins = np.zeros(scores.size, dtype=np.intp) if groups is None else groups * gaps  # row g's first bin
    # genuine strictly above t_k  <=>  k < (thresholds below the score)
    below = np.bincount(np.searchsorted(thresholds, scores[same], side="left") + bins[same], weights[same],
                        minlength=n_groups * gaps).reshape(n_groups, gaps)
    accepted = np.cumsum(below[:, ::-1], axis=1)[:, ::-1][:, 1:]
    # impostor strictly below t_k  <=>  (thresholds at or below the score) <= k
    at_or_below = np.bincount(np.searchsorted(thresholds, scores[~same], side="right") + bins[~same], weights[~same],
                              minlength=n_groups * gaps).reshape(n_groups, gaps)
    rejected = np.cumsum(at_or_below, axis=1)[:, :-1]
    return accepted + rejected


def pair_dots(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(l·r, l·l, r·r)`` per pair: the part of :func:`sphereface_ten_fold` no weight changes."""
    left, right = np.asarray(left, dtype=np.float64), np.asarray(right, dtype=np.float64)
    return tuple(np.einsum("ij,ij->i", a, b) for a, b in ((left, right), (left, left), (right, right)))


def sphereface_ten_fold(left, right, issame, *, n_folds: int = 10, thr_num: int = SPHEREFACE_THRESHOLDS,
                        weights=None, dots=None) -> FoldAccuracy:
    """SphereFace's 10-fold LFW accuracy of concatenated features ``left``/``right`` (P, 2D).

    ``weights`` (P,) repeat pairs (bootstrap); the training mean and the accuracies are weighted.
    ``dots``: :func:`pair_dots` of the same features, computed once for many weightings.
    """
    left, right = np.asarray(left, dtype=np.float64), np.asarray(right, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if left.shape != right.shape or left.shape[0] != issame.size:
        raise InputError(f"sphereface protocol: features {left.shape}, {right.shape} and {issame.size} labels differ")
    w = np.ones(issame.size) if weights is None else np.asarray(weights, dtype=np.float64)
    thresholds = np.arange(-thr_num, thr_num + 1) / thr_num
    folds = fold_indices(issame.size, n_folds)
    fold_of = np.repeat(np.arange(n_folds), [fold.size for fold in folds])  # folds are contiguous blocks
    # Every fold at once.  Training weights per fold (K, P): the test pairs' weights zeroed.
    w_train = np.broadcast_to(w, (n_folds, w.size)).copy()
    w_train[fold_of, np.arange(w.size)] = 0.0
    train_sums = w_train.sum(axis=1)
    # the training folds' mean feature (both images of every training pair), one row per fold
    mu = (w_train @ left + w_train @ right) / (2.0 * train_sums[:, None])
    # cos(l − μ, r − μ) from dot products: (l·r − l·μ − r·μ + μ·μ) / (‖l − μ‖ ‖r − μ‖), with
    # ‖x − μ‖² = x·x − 2 x·μ + μ·μ; (P, K) scores, pair p scored with fold k's mean
    lr, ll, rr = pair_dots(left, right) if dots is None else dots
    lm, rm, mm = left @ mu.T, right @ mu.T, np.einsum("kj,kj->k", mu, mu)
    norms = np.sqrt(np.maximum(ll[:, None] - 2 * lm + mm, 0.0) * np.maximum(rr[:, None] - 2 * rm + mm, 0.0))
    scores = (lr[:, None] - lm - rm + mm) / np.maximum(norms, np.finfo(np.float64).tiny)
    # the training accuracy of every fold at every threshold (pair p's score under fold k's mean
    # counted in row k with its training weight; a test pair's weight is 0)
    train_accuracy = _correct_counts(scores.ravel(), np.repeat(issame, n_folds), thresholds, w_train.T.ravel(),
                                     np.tile(np.arange(n_folds), issame.size), n_folds) / train_sums[:, None]
    accuracies, chosen = [], []
    for k, test in enumerate(folds):
        best = train_accuracy[k] == train_accuracy[k].max()
        threshold = float(np.mean(thresholds[best]))  # tied thresholds averaged
        accuracies.append(sphereface_accuracy(scores[test, k], issame[test], np.array([threshold]), w[test])[0])
        chosen.append(threshold)
    return FoldAccuracy(np.asarray(accuracies), np.asarray(chosen))


def concatenated_features(embedding: np.ndarray, embedding_noflip: np.ndarray) -> np.ndarray:
    """[f(original); f(flipped)] from an embeddings file whose ``embedding`` sums the two."""
    original = np.asarray(embedding_noflip, dtype=np.float64)
    return np.hstack([original, np.asarray(embedding, dtype=np.float64) - original])


def score_ten_fold(scores, issame, *, n_folds: int = 10, weights=None) -> FoldAccuracy:
    """10-fold accuracy for any similarity score (larger = same): on each fold the training folds'
    best threshold among the midpoints of their sorted distinct scores (first on ties, as
    ``np.argmax``), "same" iff score > threshold."""
    scores, issame = np.asarray(scores, dtype=np.float64), np.asarray(issame, dtype=bool)
    w = np.ones(scores.size) if weights is None else np.asarray(weights, dtype=np.float64)
    accuracies, chosen = [], []
    for test in fold_indices(scores.size, n_folds):
        train = np.setdiff1d(np.arange(scores.size), test, assume_unique=True)
        distinct = np.unique(scores[train])
        candidates = np.r_[distinct[0] - 1.0, (distinct[1:] + distinct[:-1]) / 2.0, distinct[-1] + 1.0]
        train_accuracy = _accept_accuracy(scores[train], issame[train], candidates, w[train])
        threshold = float(candidates[int(np.argmax(train_accuracy))])
        accuracies.append(_accept_accuracy(scores[test], issame[test], np.array([threshold]), w[test])[0])
        chosen.append(threshold)
    return FoldAccuracy(np.asarray(accuracies), np.asarray(chosen))


def _accept_accuracy(scores, same, thresholds, weights) -> np.ndarray:
    """Accuracy of "same iff score > t" at each threshold (weighted)."""
    g_order, i_order = np.argsort(scores[same]), np.argsort(scores[~same])
    g, gw = scores[same][g_order], weights[same][g_order]
    i, iw = scores[~same][i_order], weights[~same][i_order]
    accepted = gw.sum() - _weighted_counts(g, gw, thresholds, "right")
    rejected = _weighted_counts(i, iw, thresholds, "right")  # impostor at or below t is rejected
    return (accepted + rejected) / weights.sum()


def insightface_ten_fold_weighted(distance, issame, weights, *, n_folds: int = 10, step: float = 0.01) -> FoldAccuracy:
    """InsightFace ``verification.py`` 10-fold accuracy (same iff squared-L2 distance < t,
    t = 0:4:step, first best threshold) with pair weights, for the bootstrap."""
    distance, issame = np.asarray(distance, dtype=np.float64), np.asarray(issame, dtype=bool)
    w = np.asarray(weights, dtype=np.float64)
    thresholds = np.arange(0.0, 4.0, step)
    accuracies, chosen = [], []
    for test in fold_indices(distance.size, n_folds):
        train = np.setdiff1d(np.arange(distance.size), test, assume_unique=True)
        train_accuracy = _below_accuracy(distance[train], issame[train], thresholds, w[train])
        best = int(np.argmax(train_accuracy))
        accuracies.append(_below_accuracy(distance[test], issame[test], thresholds[best:best + 1], w[test])[0])
        chosen.append(thresholds[best])
    return FoldAccuracy(np.asarray(accuracies), np.asarray(chosen))


def _below_accuracy(distance, same, thresholds, weights) -> np.ndarray:
    g_order, i_order = np.argsort(distance[same]), np.argsort(distance[~same])
    g, gw = distance[same][g_order], weights[same][g_order]
    i, iw = distance[~same][i_order], weights[~same][i_order]
    accepted = _weighted_counts(g, gw, thresholds, "left")  # genuine strictly below t
    rejected = iw.sum() - _weighted_counts(i, iw, thresholds, "left")
    return (accepted + rejected) / weights.sum()
