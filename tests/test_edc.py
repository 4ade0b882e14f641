"""EDC (issue 10, §3): hand-made cases with known answers."""

import numpy as np
import pytest

from facetrust.evaluate import edc


def test_hand_made_edc_with_tied_qualities_discarded_together():
    # mated scores; threshold fixed at 0.5: errors are the scores below it (0.1 and 0.3)
    scores = np.array([0.1, 0.9, 0.3, 0.8, 0.7, 0.6])
    quality = np.array([1.0, 1.0, 2.0, 3.0, 3.0, 4.0])
    curve = edc.edc_curve(scores, quality, "fnmr", threshold=0.5)
    # discard points at the start of each quality run: 0, 2 (both q=1 together), 3, 5, then closed at 1
    assert curve.discard.tolist() == pytest.approx([0, 2 / 6, 3 / 6, 5 / 6, 1.0])
    assert curve.error.tolist() == pytest.approx([2 / 6, 1 / 4, 0 / 3, 0.0, 0.0])
    # stepwise area to 0.4: 2/6 * 2/6 + 1/4 * (0.4 - 2/6)
    assert edc.pauc(curve, 0.4) == pytest.approx(2 / 6 * 2 / 6 + 0.25 * (0.4 - 2 / 6))


def test_starting_error_fixes_the_threshold_once_as_the_reference_quantile():
    scores = np.linspace(0, 1, 101)
    assert edc.comparison_threshold(scores, "fnmr", 0.05) == pytest.approx(np.quantile(scores, 0.05))
    assert edc.comparison_threshold(scores, "fmr", 0.05) == pytest.approx(np.quantile(scores, 0.95))
    curve = edc.edc_curve(scores, np.arange(101.0), "fmr", starting_error=0.05)
    assert curve.starting_error == pytest.approx(6 / 101)  # 0.95 … 1.00: scores >= the quantile are errors


def test_perfect_ranking_reaches_the_theoretical_best():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=2000)
    threshold = edc.comparison_threshold(scores, "fnmr", 0.1)
    quality = np.where(scores < threshold, 0.0, 1.0) + rng.random(2000) * 1e-3  # errors have the lowest quality
    curve = edc.edc_curve(scores, quality, "fnmr", starting_error=0.1)
    for limit in (0.05, 0.1, 0.2):
        best = edc.theoretical_best_area(curve.starting_error, limit)
        # the reference's best line se − d vs the exact (E − k)/(N − k): equal to O(se²)
        assert edc.edc_pauc(curve, limit) == pytest.approx(0.0, abs=0.01 * best + 1e-3)


def test_random_ranking_keeps_the_starting_error_so_its_area_grows_linearly():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=4000)
    areas = {limit: [] for limit in (0.1, 0.2, 0.4)}
    for _ in range(20):
        curve = edc.edc_curve(scores, rng.random(4000), "fnmr", starting_error=0.05)
        for limit in areas:
            areas[limit].append(edc.pauc(curve, limit))
    for limit, values in areas.items():
        assert np.mean(values) == pytest.approx(curve.starting_error * limit, rel=0.05)  # the diagonal se·limit


def test_theoretical_best_area_follows_the_reference_formula():
    assert edc.theoretical_best_area(0.05, 0.2) == pytest.approx(0.05**2 / 2)
    assert edc.theoretical_best_area(0.3, 0.1) == pytest.approx(0.3**2 / 2 - 0.2**2 / 2)


def test_integer_weights_act_as_repeated_comparisons():
    rng = np.random.default_rng(2)
    scores, quality = rng.normal(size=300), rng.integers(0, 30, 300).astype(float)
    weights = rng.integers(0, 3, 300)
    weighted = edc.edc_curve(scores, quality, "fnmr", starting_error=0.1, weights=weights)
    repeated = edc.edc_curve(np.repeat(scores, weights), np.repeat(quality, weights), "fnmr", starting_error=0.1)
    assert weighted.discard == pytest.approx(repeated.discard)
    assert weighted.error == pytest.approx(repeated.error)


def test_crfiqa_variant_recomputes_the_threshold_on_the_kept_pairs():
    # four mated pairs, the worst-quality one below every impostor; discarding it removes the error
    scores = np.array([0.9, 0.8, 0.7, 0.05, 0.1, 0.2, 0.3, 0.4])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    quality = np.array([4.0, 3.0, 2.0, 0.0, 5.0, 5.0, 5.0, 5.0])
    out = edc.crfiqa_erc(scores, labels, quality, [0.25], fractions=[0.0, 0.125])
    assert out["fnmr"]["2.5e-01"] == pytest.approx([0.25, 0.0])


def test_evaluate_edc_on_a_protocol_writes_bounds_and_intervals(tmp_path):
    import json

    from ijb_protocol_fixture import random_ijb

    from facetrust.evaluate.bootstrap import BootstrapSettings
    from facetrust.evaluate.edc_protocol import run_evaluate_edc

    root, images, embedding, noflip, _ = random_ijb(tmp_path / "ijb", seed=4)
    rng = np.random.default_rng(0)
    path = tmp_path / "emb.npz"
    np.savez(path, image=images, embedding=embedding, embedding_noflip=noflip,
             uncertainty=rng.uniform(0.1, 1.0, images.size).astype(np.float32), uncertainty_kind=np.array("scale"),
             uncertainty_space=np.array("confidence"))  # as embed writes it for ScaleFace
    metrics = run_evaluate_edc(path, tmp_path / "edc.json", ijb_dir=root, name="ijbx", starting_error=0.1,
                               discard_limit=0.3, random_draws=3, crfiqa_fmrs=[0.1],
                               bootstrap=BootstrapSettings(20, 1, 0.9, tmp_path / "edc.npz"))
    assert set(metrics["pauc"]) == {"method", "random", "oracle"}  # no quality.csv: no known_quality
    # the error-aware oracle is the bound: at the theoretical best (up to ties), below the method
    assert abs(metrics["pauc"]["oracle"]["fnmr"]) < 1e-3 and abs(metrics["pauc"]["oracle"]["fmr"]) < 1e-3
    assert metrics["pauc"]["oracle"]["fnmr"] <= metrics["pauc"]["method"]["fnmr"]
    lo, hi = metrics["pauc_ci"]["method"]["fnmr"]
    assert lo <= hi and metrics["settings"]["uncertainty_space"] == "confidence"
    assert json.loads((tmp_path / "edc.json").read_text())["protocol"] == "edc"
    with np.load(tmp_path / "edc.npz") as data:
        assert data["pauc_method_fnmr"].shape == (20,)
        assert str(data["design_digest"]) == metrics["bootstrap"]["design_digest"] and int(data["seed"]) == 1
