"""The papers' own comparison scores and the control rows (issue 10, §1)."""

import json

import numpy as np
import pytest
from scipy.special import ive
from scipy.stats import multivariate_normal

from facetrust.errors import ConfigError
from facetrust.evaluate.embeddings_file import EmbeddingsFile, load_embeddings
from facetrust.evaluate.ijb import run_evaluate_ijb
from facetrust.evaluate.scores import (
    check_score,
    constant_like,
    mls,
    pair_scores,
    pfe_code_templates,
    vmf_log_similarity,
    vmf_templates,
)
from ijb_protocol_fixture import random_ijb


def _log_c3(kappa):
    # closed form on S^2: C_3(k) = k / (4 pi sinh k)
    return np.log(kappa) - np.log(4 * np.pi) - (kappa + np.log1p(-np.exp(-2 * kappa)) - np.log(2))


def test_scf_eq13_matches_quadrature_on_the_sphere():
    """log ∫ vMF(x; μ1, κ1) vMF(x; μ2, κ2) dx on S², by a fine (θ, φ) grid, equals Eq. 13."""
    theta = np.linspace(0, np.pi, 601)
    phi = np.linspace(0, 2 * np.pi, 601, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    x = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1)
    area = np.sin(t) * (theta[1] - theta[0]) * (phi[1] - phi[0])
    for k1, k2, angle in [(2.0, 5.0, 0.3), (8.0, 8.0, 1.2), (0.5, 3.0, 2.5)]:
        mu1 = np.array([0.0, 0.0, 1.0])
        mu2 = np.array([np.sin(angle), 0.0, np.cos(angle)])
        density = np.exp(_log_c3(k1) + k1 * x @ mu1) * np.exp(_log_c3(k2) + k2 * x @ mu2)
        expected = np.log(np.sum(density * area))
        got = vmf_log_similarity(np.array([np.cos(angle)]), np.array([k1]), np.array([k2]), 3)[0]
        assert got == pytest.approx(expected, abs=2e-4)


def _official_style(cos, k1, k2, d, floor):
    """Eq. 13 written the way the public SCF evaluation code writes it (scipy ive, + floor)."""
    k12 = np.sqrt(k1**2 + k2**2 + 2 * k1 * k2 * cos)

    def log_iv(k):
        return np.log(floor + ive(d / 2 - 1, k)) + k

    return ((d / 2 - 1) * (np.log(k1) + np.log(k2) - np.log(k12)) - (log_iv(k1) + log_iv(k2) - log_iv(k12))
            - d / 2 * np.log(2 * np.pi))


def test_scf_eq13_orders_pairs_as_the_official_formula():
    rng = np.random.default_rng(0)
    d = 16
    cos = rng.uniform(0.0, 1.0, 200)
    k1, k2 = rng.uniform(10, 50, 200), rng.uniform(10, 50, 200)
    ours = vmf_log_similarity(cos, k1, k2, d)
    official = _official_style(cos, k1, k2, d, floor=0.0)
    assert np.allclose(ours, official, rtol=1e-9, atol=1e-9)
    assert np.array_equal(np.argsort(ours), np.argsort(official))
    # The official code floors ive at 1e-6: at d = 512 and kappa in the hundreds ive is ~1e-30, so
    # its values (and the kappa scale it learns) are not comparable with the exact formula.
    assert ive(255, 500.0) < 1e-20
    floored = _official_style(cos[:5], k1[:5] * 20, k2[:5] * 20, 512, floor=1e-6)
    exact = vmf_log_similarity(cos[:5], k1[:5] * 20, k2[:5] * 20, 512)
    assert not np.allclose(floored, exact, atol=1.0)


def test_mls_equals_twice_the_gaussian_log_likelihood_of_the_difference():
    """PFE: MLS = 2 log N(μ1 − μ2; 0, σ1² + σ2²) + D log 2π (½ and the constant dropped)."""
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    s1, s2 = rng.uniform(0.1, 1.0, (3, 5)), rng.uniform(0.1, 1.0, (3, 5))
    for i in range(3):
        direct = 2 * multivariate_normal(mean=np.zeros(5), cov=np.diag(s1[i] + s2[i])).logpdf(mu1[i] - mu2[i])
        assert mls(mu1[i : i + 1], s1[i : i + 1], mu2[i : i + 1], s2[i : i + 1])[0] == pytest.approx(
            direct + 5 * np.log(2 * np.pi))
    scalar = mls(mu1, s1[:, 0], mu2, s2[:, 0])
    assert scalar == pytest.approx(mls(mu1, np.repeat(s1[:, :1], 5, 1), mu2, np.repeat(s2[:, :1], 5, 1)))


def test_pfe_template_fusion_as_pfe_code_min_sigma_and_renormalised_mean():
    features = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    sigma = np.array([[1.0, 4.0], [0.5, 1.0], [2.0, 2.0]])
    t = pfe_code_templates(features, np.array([7, 7, 9]), sigma)
    assert t.ids.tolist() == [7, 9]
    assert t.uncertainty[0].tolist() == [0.5, 1.0]  # element-wise minimum, not 1/Σ1/σ²
    # aggregate_PFE: per dimension (Σ μ/σ²) / (Σ 1/σ²) = (1/3, 1/1.25), then renormalised
    assert t.directions[0] == pytest.approx([0.38462, 0.92308], abs=1e-5)
    assert t.directions[0] == pytest.approx(np.array([1 / 3, 0.8]) / np.hypot(1 / 3, 0.8))
    assert np.linalg.norm(t.directions[1]) == pytest.approx(1.0)


def _aggregate_pfe_retyped(mu, sigma_sq):
    """PFE's ``aggregate_PFE`` (seasonSH/Probabilistic-Face-Embeddings, utils), re-typed from its
    description: attention = (1/σ²) / Σ (1/σ²) over the images, per dimension; μ = Σ μ·attention;
    σ² = min over the images; μ / (1e-8 + ‖μ‖)."""
    attention = 1.0 / sigma_sq
    attention = attention / attention.sum(axis=0, keepdims=True)
    mu_new = (mu * attention).sum(axis=0)
    return mu_new / (1e-8 + np.linalg.norm(mu_new)), sigma_sq.min(axis=0)


def _pair_mls_retyped(mu1, mu2, sigma_sq1, sigma_sq2):
    """PFE's ``pair_MLS_score``: −Σ (μ1 − μ2)²/(σ1² + σ2²) + log(σ1² + σ2²) per row."""
    total = sigma_sq1 + sigma_sq2
    return -np.sum((mu1 - mu2) ** 2 / total + np.log(total), axis=1)


def test_mls_of_fused_templates_equals_pfe_aggregate_and_pair_mls():
    """Acceptance (issue 18): our pfe_mls of fused templates = PFE's aggregate_PFE + pair_MLS_score."""
    rng = np.random.default_rng(18)
    n_templates, d = 40, 16
    sizes = rng.integers(1, 6, n_templates)
    template_ids = np.repeat(np.arange(n_templates) * 3 + 5, sizes)
    features = rng.normal(size=(template_ids.size, d))
    sigma_sq = np.exp(rng.normal(-3.0, 1.0, size=(template_ids.size, d)))  # per dimension, spread
    templates = pfe_code_templates(features, template_ids, sigma_sq)
    pairs = np.array([rng.choice(templates.ids, 2, replace=False) for _ in range(300)])
    ours = pair_scores("pfe_mls", templates, pairs)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)  # PFE's μ are unit embeddings
    reference = {t: _aggregate_pfe_retyped(unit[template_ids == t], sigma_sq[template_ids == t])
                 for t in templates.ids.tolist()}
    mu1 = np.array([reference[t][0] for t in pairs[:, 0]])
    mu2 = np.array([reference[t][0] for t in pairs[:, 1]])
    s1 = np.array([reference[t][1] for t in pairs[:, 0]])
    s2 = np.array([reference[t][1] for t in pairs[:, 1]])
    expected = _pair_mls_retyped(mu1, mu2, s1, s2)
    assert np.max(np.abs(ours - expected)) <= 1e-9
    # the old fusion (no division by the per-dimension precision sum) is measurably different
    members = (template_ids[None, :] == templates.ids[:, None]).astype(float)
    undivided = members @ (unit / sigma_sq)
    undivided /= np.linalg.norm(undivided, axis=1, keepdims=True)
    assert np.max(1.0 - np.einsum("ij,ij->i", undivided, templates.directions)) > 1e-3


def test_vmf_template_is_eq14_sum_and_media_averaging_changes_it():
    features = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    u = 1.0 / np.array([2.0, 1.0, 1.0])
    plain = vmf_templates(features, np.array([1, 1, 1]), np.array([1, 2, 2]), u, media=False)
    assert plain.uncertainty[0] == pytest.approx(np.hypot(2.0, 2.0))
    media = vmf_templates(features, np.array([1, 1, 1]), np.array([1, 2, 2]), u, media=True)
    assert media.uncertainty[0] == pytest.approx(np.hypot(2.0, 1.0))  # frames of media 2 averaged


def test_scores_refuse_a_pooling_they_are_not_defined_for():
    with pytest.raises(ConfigError, match="needs pooling kappa or kappa_media"):
        check_score("scf_vmf", "mean")
    with pytest.raises(ConfigError, match="needs pooling pfe"):
        check_score("pfe_mls", "kappa")


def _ijb_files(tmp_path, uncertainty):
    root, images, embedding, noflip, arrays = random_ijb(tmp_path / "ijb", seed=3)
    path = tmp_path / "emb.npz"
    np.savez(path, image=images, embedding=embedding, embedding_noflip=noflip,
             uncertainty=uncertainty(images.size).astype(np.float32), uncertainty_kind=np.array("scf"))
    return root, path


def _tars(metrics_path):
    return json.loads(open(metrics_path).read())["tar_at_far"]


def test_control_equals_the_uncertainty_row_when_the_uncertainty_is_constant(tmp_path):
    rng = np.random.default_rng(0)
    root, varying = _ijb_files(tmp_path / "a", lambda n: rng.uniform(0.01, 1.0, n))
    _, constant = _ijb_files(tmp_path / "b", lambda n: np.full(n, 0.25))
    for pooling, score in [("kappa", "cosine"), ("kappa", "scf_vmf"), ("kappa_media", "cosine"), ("pfe", "pfe_mls")]:
        row = run_evaluate_ijb(constant, root, "ijbx", tmp_path / "row.json", pooling=pooling, score=score)
        control = run_evaluate_ijb(varying, root, "ijbx", tmp_path / "control.json", pooling=pooling, score=score,
                                   constant_uncertainty=0.25)
        assert row["tar_at_far"] == control["tar_at_far"], (pooling, score)
        assert control["settings"]["uncertainty"].startswith("constant")
    # For cosine (and MLS with equal sigma^2) the constant does not matter, and pfe and kappa
    # pooling of unit features give the same control.
    a = run_evaluate_ijb(varying, root, "ijbx", tmp_path / "c1.json", pooling="kappa", constant_uncertainty=1.0)
    b = run_evaluate_ijb(varying, root, "ijbx", tmp_path / "c2.json", pooling="pfe", constant_uncertainty=7.0)
    c = run_evaluate_ijb(varying, root, "ijbx", tmp_path / "c3.json", pooling="pfe", score="pfe_mls",
                         constant_uncertainty="mean")
    assert a["tar_at_far"] == b["tar_at_far"] == c["tar_at_far"]
    varying_row = run_evaluate_ijb(varying, root, "ijbx", tmp_path / "v.json", pooling="kappa")
    assert varying_row["tar_at_far"] != a["tar_at_far"]


def test_constant_mean_is_the_geometric_mean_and_bad_values_are_refused():
    assert constant_like(np.array([1.0, 4.0]), 3, "mean") == pytest.approx([2.0, 2.0, 2.0])
    with pytest.raises(ConfigError, match="positive"):
        constant_like(None, 2, -1)


def test_image_pair_scores_rank_pairs_in_evaluate_pairs(tmp_path):
    from facetrust.evaluate.scores import image_pair_scores

    rng = np.random.default_rng(2)
    features = rng.normal(size=(8, 4))
    kappa = rng.uniform(5, 20, 8)
    file = EmbeddingsFile(tmp_path, np.arange(8).astype(str), features, True, 1 / kappa, "scf", None, None,
                          np.array([True, False, True, False]))
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    cos = np.einsum("ij,ij->i", unit[0::2], unit[1::2])
    assert image_pair_scores("cosine", file) == pytest.approx(cos)
    assert image_pair_scores("scf_vmf", file) == pytest.approx(vmf_log_similarity(cos, kappa[0::2], kappa[1::2], 4))
    assert load_embeddings  # the file-level reader is what evaluate pairs uses (tested in test_pairs)


def test_pair_scores_cosine_matches_dot_products():
    from facetrust.evaluate.scores import ScoredTemplates

    rng = np.random.default_rng(3)
    directions = rng.normal(size=(4, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    templates = ScoredTemplates(np.array([10, 11, 12, 13]), directions, None)
    pairs = np.array([[10, 11], [12, 13], [13, 10]])
    expected = [directions[0] @ directions[1], directions[2] @ directions[3], directions[3] @ directions[0]]
    assert pair_scores("cosine", templates, pairs) == pytest.approx(expected)


def test_pfe_rows_use_the_per_dimension_sigma_and_say_so_the_isotropic_row_is_an_ablation(tmp_path):
    root, images, embedding, noflip, _ = random_ijb(tmp_path / "ijb", seed=5)
    rng = np.random.default_rng(6)
    per_dim = np.exp(rng.normal(-3.0, 1.0, embedding.shape)).astype(np.float32)
    harmonic = (1.0 / np.mean(1.0 / per_dim.astype(np.float64), axis=1)).astype(np.float32)
    path = tmp_path / "pfe.npz"
    np.savez(path, image=images, embedding=embedding, embedding_noflip=noflip, uncertainty=harmonic,
             uncertainty_kind=np.array("pfe"), uncertainty_per_dim=per_dim)
    assert load_embeddings(path).uncertainty_per_dim.shape == embedding.shape
    for score in ("cosine", "pfe_mls"):
        own = run_evaluate_ijb(path, root, "ijbx", tmp_path / "own.json", pooling="pfe", score=score)
        ablation = run_evaluate_ijb(path, root, "ijbx", tmp_path / "iso.json", pooling="pfe", score=score,
                                    pfe_sigma="isotropic")
        assert own["settings"]["pfe_sigma_sq"].startswith("per_dimension")
        assert ablation["settings"]["pfe_sigma_sq"].startswith("isotropic ablation")
        from facetrust.data.ijb import read_ijb_protocol
        from facetrust.evaluate.ijb import evaluate_ijb

        protocol, embeddings = read_ijb_protocol(root, "ijbx"), load_embeddings(path)
        a = evaluate_ijb(embeddings, protocol, pooling="pfe", score=score).scores
        b = evaluate_ijb(embeddings, protocol, pooling="pfe", score=score, pfe_sigma="isotropic").scores
        assert np.max(np.abs(np.asarray(a, float) - np.asarray(b, float))) > 1e-3, score
    without = tmp_path / "scalar.npz"
    np.savez(without, image=images, embedding=embedding, uncertainty=harmonic, uncertainty_kind=np.array("pfe"))
    metrics = run_evaluate_ijb(without, root, "ijbx", tmp_path / "s.json", pooling="pfe")
    assert metrics["settings"]["pfe_sigma_sq"] == "isotropic (the file holds no uncertainty_per_dim)"
