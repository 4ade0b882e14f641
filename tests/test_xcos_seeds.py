"""xCos judged over training seeds and folds (facetrust.report.xcos_seeds) and the report built on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facetrust.formats import ISSAME, SCORE_NAMES
from facetrust.evaluate.bootstrap import crossed_bootstrap
from facetrust.report.xcos_seeds import replicate_names, seed_fold_analysis


def _pairs(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    issame = np.arange(n) % 2 == 0
    target = np.where(issame, 0.45, 0.05) + rng.normal(0, 0.12, n)
    return rng, issame, np.clip(target, -1, 1)


def test_a_copy_of_the_target_differs_by_nothing_and_noise_costs_accuracy():
    rng, issame, target = _pairs()
    scores = {"standard_cosine": target, "xcos": target.copy(), "xcos_replicate1": target.copy()}
    same = seed_fold_analysis(scores, issame, n_boot=200)
    assert same["difference"] == [0.0, 0.0, 0.0] and same["replicates"][0]["pearson_r"] == pytest.approx(1.0)
    noisy = {"standard_cosine": target, "xcos": target + rng.normal(0, 0.3, target.size),
             "xcos_replicate1": target + rng.normal(0, 0.3, target.size), "xcos_replicate2": target + rng.normal(0, 0.3, target.size)}
    worse = seed_fold_analysis(noisy, issame, n_boot=200)
    mean, low, high = worse["difference"]
    assert high < 0 and low < mean < high  # noise lowers accuracy, and the interval says so
    assert worse["seeds"] == 3 and worse["replicates"][0]["mse"] == pytest.approx(0.09, rel=0.15)


def test_the_crossed_interval_widens_with_the_seed_spread():
    folds = np.random.default_rng(1).normal(0, 0.002, (3, 10))
    narrow = crossed_bootstrap(folds, n_boot=500)
    spread = crossed_bootstrap(folds + np.array([[-0.02], [0.0], [0.02]]), n_boot=500)
    assert spread[2] - spread[1] > 3 * (narrow[2] - narrow[1])


def test_replicates_are_ordered_by_number():
    assert replicate_names({"xcos_replicate10": 0, "xcos": 0, "xcos_replicate2": 0, "cosine": 0}) == \
        ["xcos", "xcos_replicate2", "xcos_replicate10"]


def test_report_shows_seeds_fit_validation_and_published_baselines(tmp_path):
    from facetrust.report.xcos_report import write_xcos_report

    rng, issame, target = _pairs(600)
    scores = {"xcos": target + rng.normal(0, 0.02, target.size), "xcos_replicate1": target + rng.normal(0, 0.02, target.size),
              "cosine": target, "standard_cosine": target}
    (tmp_path / "xcos").mkdir()
    npz = tmp_path / "xcos" / "s.npz"
    np.savez(npz, **{ISSAME: issame, SCORE_NAMES: np.array(list(scores))}, **scores)
    metrics = tmp_path / "xcos" / "synth_lfw.xcos.json"
    metrics.write_text(json.dumps({"test_set": "synth_lfw", "accuracy": 0.9, "accuracy_std": 0.01}))
    record = {"validation_set": "data/synth/pairs/synth_val.bin", "criterion": "MSE",
              "candidates": [{"values": {"lr": 0.1}, "mse": 0.01, "pearson_r": 0.9, "accuracy_xcos": 0.9,
                              "accuracy_standard_cosine": 0.91, "pairs": 600}],
              "chosen": {"lr": 0.1}, "replicates": [{"seed": 1, "mse": 0.01, "accuracy_xcos": 0.9}]}
    validation = tmp_path / "xcos" / "validation.json"
    validation.write_text(json.dumps(record))
    claims = write_xcos_report([metrics], tmp_path / "x.md", table_csv=tmp_path / "x.csv", scores=npz,
                               validation=[validation], fit_png=tmp_path / "fit.png")
    text = (tmp_path / "x.md").read_text()
    assert "2 training seeds x 10 folds" in claims[0].text
    assert "99.52" in text and "99.30" in text and "-0.20" in text and "+0.38" in text
    assert "synth_val.bin" in text and "Pearson r" in text and (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"
