"""10-fold verification of precomputed pair scores (evaluate pairs --scores), e.g. xCos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from facetrust.cli import main
from facetrust.errors import InputError
from facetrust.evaluate.precomputed_scores import (
    paired_fold_difference,
    read_pair_scores,
    run_evaluate_pair_scores,
    ten_fold_scores,
)
from facetrust.evaluate.pairs import ten_fold_accuracy


def _pairs(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    issame = np.tile([True, False], n // 2)
    emb1 = rng.normal(size=(n, 8))
    emb2 = np.where(issame[:, None], emb1 + rng.normal(scale=1.2, size=(n, 8)), rng.normal(size=(n, 8)))
    return emb1, emb2, issame


def _write_scores(path, scores: dict, issame) -> None:
    np.savez(path, issame=issame, score_names=np.array(list(scores)), **scores)


def test_scores_are_read_exactly_as_the_cosine_of_embeddings():
    emb1, emb2, issame = _pairs()
    cosine = np.einsum("ij,ij->i", emb1, emb2) / np.linalg.norm(emb1, axis=1) / np.linalg.norm(emb2, axis=1)
    from_embeddings = ten_fold_accuracy(emb1, emb2, issame, metric="cosine")
    from_scores = ten_fold_scores(cosine, issame)
    assert from_scores.accuracy == pytest.approx(from_embeddings.accuracy)
    np.testing.assert_allclose(from_scores.fold_accuracies, from_embeddings.fold_accuracies)
    assert 0.6 < from_scores.accuracy < 1.0


def test_paired_difference_is_the_t_interval_of_the_fold_differences():
    emb1, emb2, issame = _pairs(seed=1)
    cosine = np.einsum("ij,ij->i", emb1, emb2) / np.linalg.norm(emb1, axis=1) / np.linalg.norm(emb2, axis=1)
    noisy = cosine + np.random.default_rng(2).normal(scale=0.3, size=cosine.size)
    better, worse = ten_fold_scores(cosine, issame), ten_fold_scores(noisy, issame)
    difference = paired_fold_difference(better, worse)
    folds = better.fold_accuracies - worse.fold_accuracies
    low, high = stats.t.interval(0.95, folds.size - 1, loc=folds.mean(), scale=stats.sem(folds))
    assert difference["mean"] == pytest.approx(folds.mean()) and difference["mean"] > 0
    assert (difference["low"], difference["high"]) == pytest.approx((low, high))
    same = paired_fold_difference(better, better)
    assert same["mean"] == same["low"] == same["high"] == 0.0


def test_metrics_file_and_cli_carry_the_paired_differences(tmp_path):
    emb1, emb2, issame = _pairs(seed=3)
    cosine = np.einsum("ij,ij->i", emb1, emb2) / np.linalg.norm(emb1, axis=1) / np.linalg.norm(emb2, axis=1)
    _write_scores(tmp_path / "s.npz", {"xcos": cosine * 0.9, "cosine": cosine}, issame)
    metrics = run_evaluate_pair_scores(tmp_path / "s.npz", tmp_path / "m.json", score="xcos", references=["cosine"])
    # a monotone transform of a score changes the threshold grid only: accuracies close, not equal by design
    assert metrics["paired_differences"]["cosine"]["mean"] == pytest.approx(0.0, abs=0.02)
    assert metrics["settings"]["score"] == "xcos" and len(metrics["fold_thresholds"]) == 10
    assert main(["evaluate", "pairs", "--scores", str(tmp_path / "s.npz"), "--score-key", "cosine",
                 "--out", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["accuracy"] == pytest.approx(
        ten_fold_scores(cosine, issame).accuracy)
    with pytest.raises(SystemExit) as refused:  # --scores is a flag of `evaluate pairs` only
        main(["evaluate", "ijb", "--scores", str(tmp_path / "s.npz"), "--out", str(tmp_path / "x.json")])
    assert refused.value.code == 2
    assert main(["evaluate", "pairs", "--scores", str(tmp_path / "s.npz"), "--score-key", "nope",
                 "--out", str(tmp_path / "x.json")]) == 2


def test_a_malformed_scores_file_is_refused_with_its_name_and_key(tmp_path):
    np.savez(tmp_path / "bad.npz", score_names=np.array(["xcos"]), xcos=np.zeros(4))
    with pytest.raises(InputError, match=r"bad\.npz: missing key 'issame'"):
        read_pair_scores(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", issame=np.ones(4, bool), score_names=np.array(["xcos"]), xcos=np.zeros(3))
    with pytest.raises(InputError, match="short.npz: score 'xcos' has shape"):
        read_pair_scores(tmp_path / "short.npz")
