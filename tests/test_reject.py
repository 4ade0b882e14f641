"""Reject verification: the fast curve equals recomputing sklearn's ROC on the kept pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facetrust.errors import ConfigError, InputError
from facetrust.evaluate.reject import (
    reject_curve,
    reject_curve_naive,
    pair_uncertainty,
    rejected_count,
    rejection_order,
    run_evaluate_reject,
    template_uncertainty,
)
from facetrust.evaluate.roc import roc_points, tar_at_far
from ijb_protocol_fixture import random_ijb


def random_case(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(200, 4000))
    labels = (rng.random(n) < rng.uniform(0.02, 0.4)).astype(np.int8)
    style = seed % 4
    if style == 0:
        scores = np.round(rng.normal(size=n) + labels, 1)  # heavy ties: drop_intermediate matters
    elif style == 1:
        scores = (rng.normal(size=n) + 2 * labels).astype(np.float32)
    elif style == 2:
        scores = rng.integers(0, 6, n).astype(float)  # a handful of distinct scores
    else:
        scores = rng.normal(size=n) + labels
    # Uncertainty that is tied, or correlated with the score (stresses the prefix growth).
    uncertainty = rng.integers(0, 10, n).astype(float) if seed % 2 else scores * 0.5 + rng.random(n)
    return scores, labels, uncertainty


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("method", ["nearest", "strict", "interpolate"])
def test_fast_curve_equals_naive_sklearn_recompute_exactly(seed, method):
    scores, labels, uncertainty = random_case(seed)
    fars = (1e-3, 5e-3, 1e-2, 5e-2, 0.2)
    fractions = np.arange(0.0, 0.95, 0.05)
    fast = reject_curve(scores, labels, uncertainty, fars, fractions, tar_method=method)
    naive = reject_curve_naive(scores, labels, uncertainty, fars, fractions, tar_method=method)
    np.testing.assert_array_equal(fast.tar, naive)


def test_fraction_zero_is_the_plain_tar_at_far():
    scores, labels, uncertainty = random_case(3)
    fpr, tpr, _ = roc_points(labels, scores)
    curve = reject_curve(scores, labels, uncertainty, (1e-2, 1e-1), [0.0])
    assert curve.tar[0].tolist() == list(tar_at_far(fpr, tpr, (1e-2, 1e-1)).values())


def test_hand_made_example_rejecting_the_uncertain_impostor_raises_tar():
    # Genuine scores 0.9, 0.8, 0.7, 0.4; impostors 0.95 (very uncertain), 0.5, 0.3, 0.2, 0.1.
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.95, 0.5, 0.3, 0.2, 0.1])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    uncertainty = np.array([0.1, 0.2, 0.3, 0.4, 9.0, 0.5, 0.6, 0.7, 0.8])
    # All pairs: at FAR 0 the nearest point is (0, 0) -> TAR 0 (the impostor outranks everyone).
    # Reject 1/9 of the pairs: the 0.95 impostor goes; genuine 0.9, 0.8, 0.7 precede every
    # impostor -> point (0, 3/4) is nearest FAR 0.
    curve = reject_curve(scores, labels, uncertainty, fars=[0.0], fractions=[0.0, 1 / 9])
    assert curve.n_rejected.tolist() == [0, 1]
    assert curve.tar[:, 0].tolist() == [0.0, 0.75]
    assert curve.n_impostor_kept.tolist() == [5, 4] and curve.n_genuine_kept.tolist() == [4, 4]


def test_rejection_order_is_most_uncertain_first_ties_by_index():
    u = np.array([1.0, 3.0, 3.0, 2.0, 3.0, 0.0])
    assert rejection_order(u).tolist() == [1, 2, 4, 3, 0, 5]
    assert [rejected_count(f, 100) for f in (0.07, 0.29, 0.5)] == [7, 29, 50]


def test_pair_uncertainty_combines_in_both_spaces():
    u1, u2 = np.array([1.0, 4.0]), np.array([3.0, 4.0])
    np.testing.assert_allclose(pair_uncertainty(u1, u2, "mean"), [2.0, 4.0])
    np.testing.assert_allclose(pair_uncertainty(u1, u2, "max"), [3.0, 4.0])
    np.testing.assert_allclose(pair_uncertainty(u1, u2, "harmonic"), [1.5, 4.0])
    np.testing.assert_allclose(pair_uncertainty(u1, u2, "product"), [3.0, 16.0])
    # ScaleFace scales s = 1/u: mean scale (1 + 1/3)/2 = 2/3 -> uncertainty 1.5.
    np.testing.assert_allclose(pair_uncertainty(u1, u2, "mean", space="confidence"), [1.5, 4.0])
    # Harmonic mean of the scales ranks exactly like the mean of the uncertainties.
    np.testing.assert_allclose(pair_uncertainty(u1, u2, "harmonic", space="confidence"),
                               pair_uncertainty(u1, u2, "mean"))
    with pytest.raises(InputError, match="positive"):
        pair_uncertainty(np.array([-1.0]), np.array([1.0]), "mean", space="confidence")
    with pytest.raises(ConfigError, match="pair_uncertainty"):
        pair_uncertainty(u1, u2, "median")


def test_template_uncertainty_mean_min_harmonic():
    u = np.array([1.0, 3.0, 2.0, 4.0])
    tids = np.array([7, 7, 5, 5])
    ids, mean = template_uncertainty(u, tids, "mean")
    assert ids.tolist() == [5, 7] and mean.tolist() == [3.0, 2.0]
    assert template_uncertainty(u, tids, "min")[1].tolist() == [2.0, 1.0]
    np.testing.assert_allclose(template_uncertainty(u, tids, "harmonic")[1], [8 / 3, 1.5])


def test_reject_curve_validates_fractions():
    with pytest.raises(ConfigError, match="reject_fractions"):
        reject_curve(np.arange(4.0), np.array([0, 1, 0, 1]), np.ones(4), fractions=[1.0])


def test_run_evaluate_reject_on_pairs_and_ijb_templates(tmp_path):
    rng = np.random.default_rng(0)
    n_pairs = 400
    same = rng.random(n_pairs) < 0.5
    a = rng.standard_normal((n_pairs, 8))
    b = np.where(same[:, None], a, rng.standard_normal((n_pairs, 8)))
    emb = np.empty((2 * n_pairs, 8), dtype=np.float32)
    emb[0::2] = a + 0.5 * rng.standard_normal(a.shape)
    emb[1::2] = b + 0.5 * rng.standard_normal(a.shape)
    unc = rng.uniform(0.5, 2.0, 2 * n_pairs).astype(np.float32)
    np.savez(tmp_path / "p.npz", image=np.array([f"{i}.jpg" for i in range(2 * n_pairs)]), embedding=emb,
             issame=same, uncertainty=unc, uncertainty_kind=np.array("scaleface_inv_scale"))
    out = run_evaluate_reject(tmp_path / "p.npz", tmp_path / "r.json", csv_out=tmp_path / "r.csv",
                              how="harmonic", space="confidence", fractions=[0.0, 0.1, 0.2])
    assert json.loads((tmp_path / "r.json").read_text()) == out
    assert out["protocol"] == "reject_pairs" and out["fractions"] == [0.0, 0.1, 0.2]
    assert out["n_rejected"] == [0, 40, 80] and len(out["tar_at_far"]["1e-04"]) == 3
    assert out["settings"]["uncertainty_kind"] == "scaleface_inv_scale"
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("fraction,n_rejected,n_genuine_kept,n_impostor_kept,TAR@FAR=1e-04") and len(lines) == 4

    root, images, e, _, arrays = random_ijb(tmp_path / "ijb", seed=7)
    unc = rng.uniform(0.5, 2.0, images.size).astype(np.float32)
    np.savez(tmp_path / "i.npz", image=images, embedding=e, uncertainty=unc)
    out = run_evaluate_reject(tmp_path / "i.npz", tmp_path / "ri.json", ijb_dir=root, fractions=[0.0, 0.3])
    assert out["protocol"] == "reject_ijb_templates" and out["n_pairs"] == len(arrays["labels"])
    assert out["settings"]["flags"] == "N1D1F1" and out["settings"]["template_uncertainty"] == "mean"
    np.savez(tmp_path / "nounc.npz", image=images, embedding=e)
    with pytest.raises(InputError, match="'uncertainty'"):
        run_evaluate_reject(tmp_path / "nounc.npz", tmp_path / "x.json", ijb_dir=root)


def test_template_uncertainty_is_aggregated_in_the_chosen_space():
    """ScaleFace averages the scales (confidence space); PFE sums sigma^2 (uncertainty space)."""
    from facetrust.evaluate.reject import method_space, template_uncertainty_in_space

    scales = np.array([2.0, 8.0, 4.0])
    ids, u = template_uncertainty_in_space(1.0 / scales, np.array([1, 1, 2]), "mean", "confidence")
    assert ids.tolist() == [1, 2] and u.tolist() == pytest.approx([1 / 5.0, 1 / 4.0])  # mean scale 5, not harmonic 3.2
    _, u = template_uncertainty_in_space(1.0 / scales, np.array([1, 1, 2]), "mean", "uncertainty")
    assert u.tolist() == pytest.approx([(0.5 + 0.125) / 2, 0.25])
    _, u = template_uncertainty_in_space(1.0 / scales, np.array([1, 1, 2]), "min", "confidence")
    assert u.tolist() == pytest.approx([1 / 8.0, 1 / 4.0])  # the most certain image
    assert method_space("method", "confidence") == "confidence" and method_space("method", "uncertainty") == "uncertainty"
    assert method_space("method", None) == "uncertainty" and method_space("confidence", "uncertainty") == "confidence"


def test_every_uncertainty_method_declares_the_space_its_reference_combines_in():
    """PFE sums sigma^2 and the classifier entropy is an uncertainty; SCF's kappa, ScaleFace's scale,
    MagFace's and the plain feature norm are confidences. Each method says so itself (embed writes it)."""
    from facetrust.models.uncertainty.methods import MODEL_UNCERTAINTIES, UNCERTAINTY_HEADS, uncertainty_space

    declared = {kind: uncertainty_space(kind) for kind in [*UNCERTAINTY_HEADS.names(), *MODEL_UNCERTAINTIES.names()]}
    assert declared == {"pfe": "uncertainty", "scf": "confidence", "scf_g": "confidence", "emb_norm": "confidence",
                        "magface": "confidence", "entropy": "uncertainty", "scale": "confidence"}


# --------------------------------------------------------------------------- ScaleFace's own reading


def _scaleface_thresholds(score_vec, label_vec, fars, epsilon=1e-8):
    """find_thresholds_by_FAR of ScaleFace's face_lib (after PFE), re-typed: impostor scores high to
    low, k = round(n·FAR); the k-th of them, or the top one + epsilon when k = 0."""
    score_neg = np.sort(score_vec[~label_vec])[::-1]
    counts = np.round(len(score_neg) * np.asarray(fars)).astype(np.int32)
    return np.array([score_neg[0] + epsilon if k == 0 else score_neg[k - 1] for k in counts])


def _scaleface_rejected_tar(scores, labels, uncertainty, fars, portions):
    """get_rejected_tar_far (uncertainty mode) + metrics.ROC, re-typed: pairs sorted by ascending
    uncertainty, the first int(n·(1 − portion)) kept, TAR = mean(score ≥ threshold) over genuine."""
    order = uncertainty.argsort()
    scores, labels = scores[order], labels[order].astype(bool)
    table = []
    for portion in portions:
        kept = int(scores.shape[0] * (1 - portion))
        s, lab = scores[:kept], labels[:kept]
        table.append([np.mean((s >= t)[lab]) for t in _scaleface_thresholds(s, lab, fars)])
    return np.array(table)


@pytest.mark.parametrize("seed", range(6))
def test_kth_impostor_reading_equals_scalefaces_code(seed):
    """Acceptance (issue 18): max |ΔTAR| = 0 against ScaleFace's reading on shared inputs."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1500, 6000))
    labels = (rng.random(n) < 0.3).astype(np.int8)
    scores = rng.normal(size=n) + 2.0 * labels
    if seed % 2:
        scores = np.round(scores, 2)  # tied scores
    uncertainty = rng.random(n) + 0.3 * (scores < 0.5)  # distinct values: both codes order them alike
    fars = (1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2)
    fractions = np.round(np.arange(0.0, 0.5 + 1e-9, 0.02), 10)
    ours = reject_curve(scores, labels, uncertainty, fars, fractions, tar_method="kth_impostor")
    assert np.array_equal(n - ours.n_rejected, [int(n * (1 - f)) for f in fractions])  # ScaleFace's count
    reference = _scaleface_rejected_tar(scores, labels, uncertainty, fars, fractions)
    assert np.max(np.abs(ours.tar - reference)) == 0.0
    naive = reject_curve_naive(scores, labels, uncertainty, fars, fractions, tar_method="kth_impostor")
    assert np.array_equal(ours.tar, naive, equal_nan=True)


def test_kth_impostor_differs_from_the_nearest_roc_point_where_few_impostors_decide():
    rng = np.random.default_rng(3)
    n = 6000
    labels = (rng.random(n) < 0.5).astype(np.int8)
    scores = rng.normal(size=n) + 1.5 * labels
    fars = (1e-3, 5e-3)
    nearest = reject_curve(scores, labels, np.zeros(n), fars, [0.0]).tar[0]
    kth = reject_curve(scores, labels, np.zeros(n), fars, [0.0], tar_method="kth_impostor").tar[0]
    assert not np.array_equal(nearest, kth)


def test_weighted_kth_impostor_equals_repeating_the_pairs():
    from facetrust.evaluate.reject import kth_impostor_tar

    rng = np.random.default_rng(5)
    n = 3000
    labels = (rng.random(n) < 0.3).astype(np.int8)
    scores = np.round(rng.normal(size=n) + 2 * labels, 2)
    weights = rng.integers(0, 4, n)
    fars = (1e-3, 1e-2, 1e-1)
    repeated = kth_impostor_tar(np.repeat(scores, weights), np.repeat(labels, weights), fars)
    assert np.array_equal(kth_impostor_tar(scores, labels, fars, weights=weights), repeated)


def test_reject_json_records_reading_per_fraction_flags_and_single_image_probes(tmp_path):
    from facetrust.evaluate.reject import single_image_probes
    from facetrust.data.ijb import read_ijb_protocol

    rng = np.random.default_rng(8)
    root, images, e, _, arrays = random_ijb(tmp_path / "ijb", seed=9)
    np.savez(tmp_path / "i.npz", image=images, embedding=e,
             uncertainty=rng.uniform(0.5, 2.0, images.size).astype(np.float32))
    full = run_evaluate_reject(tmp_path / "i.npz", tmp_path / "full.json", ijb_dir=root, fractions=[0.0, 0.5],
                               fars=[1e-2, 1e-1], tar_method="kth_impostor")
    assert full["settings"]["tar_method"] == "kth_impostor" and "round(n_impostor_kept" in full["settings"]["tar_reading"]
    kept = full["n_impostor_kept"]
    assert full["unresolved_fars_by_fraction"]["0"] == [k for k, f in (("1e-02", 1e-2), ("1e-01", 0.1))
                                                        if f < 10 / kept[0]]
    assert full["unresolved_fars_by_fraction"]["0.5"] == [k for k, f in (("1e-02", 1e-2), ("1e-01", 0.1))
                                                          if f < 10 / kept[1]]
    single = run_evaluate_reject(tmp_path / "i.npz", tmp_path / "single.json", ijb_dir=root, fractions=[0.0],
                                 fars=[1e-2, 1e-1], probe_templates="first_image")
    assert single["settings"]["probe_templates"].startswith("first_image")
    # the probe of every pair is its first listed image alone; enrolled templates keep all images
    protocol = read_ijb_protocol(root, "ijbx")
    probes = single_image_probes(protocol)
    for t_old, t_new in zip(protocol.pairs[:5, 1], probes.pairs[:5, 1]):
        first = protocol.images[np.flatnonzero(protocol.template_ids == t_old)[0]]
        assert probes.images[probes.template_ids == t_new].tolist() == [first]
    assert np.array_equal(probes.pairs[:, 0], protocol.pairs[:, 0]) and single["n_pairs"] == full["n_pairs"]
    with pytest.raises(ConfigError, match="probe_templates"):
        run_evaluate_reject(tmp_path / "i.npz", tmp_path / "x.json", ijb_dir=root, probe_templates="last")


@pytest.mark.parametrize("seed", range(8))
def test_bootstrap_reject_kth_equals_copying_and_zeroing_the_removed_pairs(seed):
    """The replicate statistic reads only prefixes (removal order, impostors down to the deepest
    threshold) and masks instead of copying: bit for bit the figures of zeroing the removed pairs'
    weights in a copy and reading the whole weighted list, on replicates with many zero weights,
    tied scores and uncertainties, and sizes across the prefix chunks."""
    from facetrust.evaluate.bootstrap import ClusterDesign, replicate_stream
    from facetrust.evaluate.reject import KTH_IMPOSTOR_EPSILON, PREFIX_CHUNK, KthImpostorReader, bootstrap_reject

    rng = np.random.default_rng(40 + seed)
    n = int(rng.integers(50, 6 * PREFIX_CHUNK))
    n_units, n_subjects = max(4, n // 8), max(2, n // 40)
    unit_subject = rng.integers(0, n_subjects, n_units)
    pair_units = rng.integers(0, n_units, (n, 2))
    labels = (unit_subject[pair_units[:, 0]] == unit_subject[pair_units[:, 1]]).astype(np.int8)
    labels[rng.random(n) < 0.05] = 1  # some genuine pairs across units
    pair_units[labels == 1, 1] = pair_units[labels == 1, 0]
    scores = np.round(rng.normal(size=n) + 2 * labels, int(rng.integers(1, 4)))
    uncertainty = np.round(rng.random(n), int(rng.integers(1, 3)))
    design = ClusterDesign(pair_units, unit_subject, labels, "test")
    fars = (1e-4, 1e-3, 1e-2, 1e-1, 0.5)
    fractions = [0.0, float(rng.uniform(0.01, 0.6)), 0.5]
    ours = bootstrap_reject(design, scores, labels, uncertainty, fars, fractions, tar_method="kth_impostor",
                            n_resamples=12, seed=seed)

    removal = rejection_order(uncertainty)
    reader = KthImpostorReader(scores, labels)
    expected = []
    for weights in replicate_stream(design, 12, seed):
        removed_weight = np.cumsum(weights[removal])
        row = []
        for fraction in fractions:
            n_removed = int(np.searchsorted(removed_weight, fraction * removed_weight[-1] + 1e-9, side="right"))
            kept = weights.copy()
            kept[removal[:n_removed]] = 0.0
            impostor, genuine = kept[reader.impostor_rows], kept[reader.genuine_rows]
            cumulative, genuine_cumulative = np.cumsum(impostor), np.cumsum(genuine)
            tar = np.full(len(fars), np.nan)
            if cumulative[-1] > 0 and genuine_cumulative[-1] > 0:
                for j, far in enumerate(fars):
                    k = int(np.round(cumulative[-1] * far))
                    if k == 0:
                        threshold = reader.impostor_scores[np.searchsorted(cumulative, 0.0, side="right")] + KTH_IMPOSTOR_EPSILON
                    else:
                        threshold = reader.impostor_scores[min(np.searchsorted(cumulative, k), cumulative.size - 1)]
                    accepted = np.searchsorted(reader.negated_genuine, -threshold, side="right")
                    tar[j] = (genuine_cumulative[accepted - 1] if accepted else 0.0) / genuine_cumulative[-1]
            row.append(tar)
        expected.append(row)
    assert np.array_equal(ours, np.array(expected), equal_nan=True)
    assert np.isfinite(ours).any()


def test_prefix_reaching_equals_searching_the_full_running_sum():
    """Across chunk edges, zero runs after the target is reached, targets hit exactly and past the end."""
    from facetrust.evaluate.reject import PREFIX_CHUNK, prefix_reaching

    rng = np.random.default_rng(11)
    for size in (1, 5, PREFIX_CHUNK, PREFIX_CHUNK + 1, 5 * PREFIX_CHUNK + 3):
        values = rng.integers(0, 3, size).astype(np.float64)
        values[rng.random(size) < 0.5] = 0.0
        cumulative = np.cumsum(values)
        targets = [0.0, 1e-9, 1.0, cumulative[-1], cumulative[-1] + 1, *rng.integers(0, int(cumulative[-1]) + 2, 20)]
        targets += [float(cumulative[min(PREFIX_CHUNK, size) - 1])]  # reached exactly at a chunk's end
        for target in targets:
            for side in ("left", "right"):
                index, before = prefix_reaching(lambda lo, hi: values[lo:hi], size, float(target), side)
                assert index == np.searchsorted(cumulative, target, side=side)
                assert before == (cumulative[index - 1] if index else 0.0)
