"""SCF, SCF-G and PFE heads, losses, scores and pooling; the head-free baselines."""

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import ive

from facetrust.errors import ConfigError
from facetrust.models.uncertainty import (
    PFEHead,
    SCFHead,
    bessel_ratio,
    classifier_entropy,
    kappa_weighted_pool,
    mls_loss,
    mls_score,
    pfe_fuse,
    pfe_uncertainty,
    scf_g_loss,
    scf_loss,
    scf_uncertainty,
    vmf_pair_log_similarity,
)
from facetrust.models.uncertainty.scf import initial_log_kappa


def _random_unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


# ---------------------------------------------------------------- SCF


def test_scf_loss_equals_the_kl_formula_evaluated_with_scipy():
    d, radius = 512, 64.0
    mu = _random_unit(5, d, 0) * 3.0  # any norm: the loss normalises
    centres = _random_unit(3, d, 1) * 7.0
    labels = torch.tensor([0, 1, 2, 1, 0])
    # move embeddings towards their centre so cos theta spans a useful range
    mu = mu + torch.linspace(0.5, 30, 5, dtype=torch.float64)[:, None] * F.normalize(centres[labels], dim=1)
    kappa = np.array([50.0, 300.0, 900.0, 2500.0, 10000.0])
    ours = scf_loss(mu, torch.tensor(np.log(kappa)), centres, labels, radius)
    cos = (F.normalize(mu, dim=1) * F.normalize(centres[labels], dim=1)).sum(1).numpy()
    nu = d / 2 - 1
    log_iv = np.log(ive(nu, kappa)) + kappa
    expected = -kappa * cos - nu * np.log(kappa) + log_iv + d / 2 * math.log(2 * math.pi) + d * math.log(radius)
    assert ours.item() == pytest.approx(expected.mean(), rel=1e-12)


@pytest.mark.parametrize("cos", [0.3, 0.6, 0.9])
def test_scf_loss_is_minimised_where_mean_resultant_length_equals_cosine(cos):
    d = 512
    centre = torch.zeros(1, d, dtype=torch.float64)
    centre[0, 0] = 1.0
    mu = torch.zeros(1, d, dtype=torch.float64)
    mu[0, 0], mu[0, 1] = cos, math.sqrt(1 - cos**2)
    labels = torch.tensor([0])
    best = initial_log_kappa("scf", cos, d)
    assert bessel_ratio(d / 2 - 1, torch.tensor(math.exp(best), dtype=torch.float64)).item() == pytest.approx(
        cos, rel=1e-9
    )
    log_kappa = torch.tensor([best], dtype=torch.float64, requires_grad=True)
    loss = scf_loss(mu, log_kappa, centre, labels)
    loss.backward()
    assert abs(log_kappa.grad.item()) < 1e-6 * math.exp(best)
    for shift in (-0.3, 0.3):
        assert scf_loss(mu, torch.tensor([best + shift], dtype=torch.float64), centre, labels) > loss


def test_scf_g_loss_matches_gaussian_negative_log_likelihood_and_its_optimum():
    d, radius = 16, 4.0
    mu, centres = _random_unit(4, d, 2), _random_unit(2, d, 3)
    labels = torch.tensor([0, 1, 1, 0])
    log_kappa = torch.tensor([0.1, -0.5, 1.2, 0.0], dtype=torch.float64)
    sigma = torch.exp(-0.5 * log_kappa)
    nll = -torch.distributions.Normal(radius * centres[labels], sigma[:, None]).log_prob(radius * mu).sum(1)
    assert scf_g_loss(mu, log_kappa, centres, labels, radius).item() == pytest.approx(nll.mean().item(), rel=1e-12)
    cos = (mu * centres[labels]).sum(1)
    optimum = torch.log(d / (2 * radius**2 * (1 - cos))).requires_grad_(True)
    scf_g_loss(mu, optimum, centres, labels, radius).backward()
    assert optimum.grad.abs().max() < 1e-12


def _sphere_quadrature(n_theta=200, n_phi=400):
    u, w = np.polynomial.legendre.leggauss(n_theta)  # u = cos(theta) on [-1, 1]
    phi = np.arange(n_phi) * 2 * np.pi / n_phi  # periodic trapezoid: spectrally accurate
    uu, pp = np.meshgrid(u, phi, indexing="ij")
    s = np.sqrt(1 - uu**2)
    points = np.stack([s * np.cos(pp), s * np.sin(pp), uu], -1).reshape(-1, 3)
    weights = (w[:, None] * np.full(n_phi, 2 * np.pi / n_phi)[None, :]).reshape(-1)
    return points, weights


def test_pair_similarity_is_the_log_integral_of_two_vmf_densities_on_s2():
    points, weights = _sphere_quadrature()
    mu_i, mu_j = _random_unit(4, 3, 4), _random_unit(4, 3, 5)
    mu_j[3] = -mu_i[3]  # an antipodal pair as well
    kappa_i = torch.tensor([0.5, 3.0, 12.0, 5.0], dtype=torch.float64)
    kappa_j = torch.tensor([2.0, 0.1, 9.0, 5.0], dtype=torch.float64)

    def density(mu, kappa):  # C_3(kappa) exp(kappa mu.x), C_3 = kappa / (4 pi sinh kappa)
        return kappa / (4 * np.pi * np.sinh(kappa)) * np.exp(kappa * points @ mu)

    expected = [
        math.log(
            np.sum(weights * density(mu_i[p].numpy(), kappa_i[p].item()) * density(mu_j[p].numpy(), kappa_j[p].item()))
        )
        for p in range(4)
    ]
    ours = vmf_pair_log_similarity(mu_i * 2.5, kappa_i, mu_j, kappa_j)  # unnormalised input is fine
    assert np.allclose(ours.numpy(), expected, rtol=1e-9, atol=1e-10)


def test_pair_similarity_prefers_close_directions_and_confident_agreement():
    d = 512
    base = _random_unit(1, d, 6)
    near = F.normalize(base + 0.02 * _random_unit(1, d, 7), dim=1)
    far = _random_unit(1, d, 8)
    k = torch.tensor([800.0], dtype=torch.float64)
    assert vmf_pair_log_similarity(base, k, near, k) > vmf_pair_log_similarity(base, k, far, k)


def test_kappa_weighted_pool_gives_direction_and_concentration_per_template():
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0], [3.0, 0.0]], dtype=torch.float64)
    kappa = torch.tensor([3.0, 4.0, 1.0, 2.0], dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 1])
    direction, pooled = kappa_weighted_pool(mu, kappa, groups)
    # template 0: 3*(1,0) + 4*(0,1) = (3,4): kappa 5, direction (0.6, 0.8)
    assert torch.allclose(direction[0], torch.tensor([0.6, 0.8], dtype=torch.float64))
    assert pooled[0].item() == pytest.approx(5.0)
    assert torch.allclose(direction[1], F.normalize(torch.tensor([2.0, 1.0], dtype=torch.float64), dim=0))
    # the pooled vMF is the normalised product of the members' likelihoods: its log density
    # differs from the sum of theirs by a constant over the sphere
    one_dir, one_kappa = kappa_weighted_pool(mu[:2], kappa[:2])
    x = _random_unit(5, 2, 9)
    summed = (kappa[:2, None] * F.normalize(mu[:2], dim=1) @ x.T).sum(0)
    assert torch.allclose(summed, one_kappa * (one_dir @ x.T)[0])


def test_scf_head_emits_positive_kappa_from_its_initial_value():
    torch.manual_seed(0)
    head = SCFHead((4, 3, 3), hidden=[8], init_log_kappa=5.0).eval()
    log_kappa = head(torch.randn(6, 4, 3, 3))
    assert log_kappa.shape == (6,)
    assert torch.allclose(log_kappa, torch.full((6,), 5.0), atol=0.5)
    # the smooth floor: kappa >= 1e-6 whatever the raw output
    with torch.no_grad():
        head.net[-1].bias.fill_(-1e4)
    assert torch.all(head(torch.randn(2, 4, 3, 3)) >= math.log(1e-6) - 1e-6)
    assert torch.allclose(scf_uncertainty(torch.tensor([0.0, math.log(4.0)])), torch.tensor([1.0, 0.25]))


# ---------------------------------------------------------------- PFE


def test_mls_loss_is_the_mean_over_all_genuine_pairs():
    g = torch.Generator().manual_seed(10)
    mu = torch.randn(6, 5, generator=g, dtype=torch.float64)
    log_sigma_sq = torch.randn(6, 5, generator=g, dtype=torch.float64) - 3
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    unit, var = F.normalize(mu, dim=1), log_sigma_sq.exp()
    terms = [
        ((unit[i] - unit[j]) ** 2 / (var[i] + var[j]) + torch.log(var[i] + var[j])).sum()
        for i in range(6)
        for j in range(i + 1, 6)
        if labels[i] == labels[j]
    ]
    assert len(terms) == 4
    assert mls_loss(mu, log_sigma_sq, labels).item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-12)
    with pytest.raises(ValueError, match="genuine pair"):
        mls_loss(mu[:3], log_sigma_sq[:3], torch.tensor([0, 1, 2]))


def test_mls_score_is_symmetric_and_prefers_the_same_mean():
    mu = _random_unit(2, 8, 11)
    s1, s2 = torch.full((1, 8), 0.01, dtype=torch.float64), torch.full((1, 8), 0.05, dtype=torch.float64)
    assert torch.allclose(mls_score(mu[:1], s1, mu[1:], s2), mls_score(mu[1:], s2, mu[:1], s1))
    assert mls_score(mu[:1], s1, mu[:1], s2) > mls_score(mu[:1], s1, mu[1:], s2)


def test_pfe_fusion_is_the_product_of_gaussians():
    mu = torch.tensor([[0.0, 1.0], [2.0, 1.0], [5.0, 5.0]], dtype=torch.float64)
    sigma_sq = torch.tensor([[1.0, 4.0], [3.0, 4.0], [2.0, 2.0]], dtype=torch.float64)
    fused_mu, fused_var = pfe_fuse(mu, sigma_sq, torch.tensor([0, 0, 1]))
    # dim 0: precisions 1 and 1/3 -> var 3/4, mean (0*1 + 2/3) * 3/4 = 0.5; dim 1: equal -> mean 1, var 2
    assert torch.allclose(fused_var[0], torch.tensor([0.75, 2.0], dtype=torch.float64))
    assert torch.allclose(fused_mu[0], torch.tensor([0.5, 1.0], dtype=torch.float64))
    assert torch.allclose(fused_mu[1], mu[2]) and torch.allclose(fused_var[1], sigma_sq[2])


def test_pfe_head_starts_at_small_variance_and_uncertainty_is_the_harmonic_mean():
    torch.manual_seed(0)
    head = PFEHead((4, 2, 2), embedding_size=6, hidden=10).train()
    log_sigma_sq = head(torch.randn(8, 4, 2, 2))
    assert log_sigma_sq.shape == (8, 6)
    assert torch.allclose(log_sigma_sq, torch.full_like(log_sigma_sq, -7.0), atol=1e-3)  # gamma 1e-4, beta -7
    variances = torch.tensor([[1.0, 4.0, 4.0]])
    assert pfe_uncertainty(variances.log()).item() == pytest.approx(3 / (1 + 0.25 + 0.25))


# ---------------------------------------------------------------- baselines


def _model_uncertainty(kind, embeddings, margin=None, config=None):
    """A registered model uncertainty evaluated on ``embeddings`` (no feature map needed)."""
    from facetrust.models.uncertainty.methods import MODEL_UNCERTAINTIES

    return torch.from_numpy(MODEL_UNCERTAINTIES.get(kind)(config or {}, {}, margin, None)(embeddings, None))


def test_embedding_norm_baseline_marks_small_norms_uncertain_and_magface_is_the_same_score():
    emb = torch.tensor([[3.0, 4.0], [0.3, 0.4], [30.0, 40.0]])
    u = _model_uncertainty("emb_norm", emb)
    assert torch.allclose(u, torch.tensor([1 / 5.0, 1 / 0.5, 1 / 50.0]))
    assert u[1] > u[0] > u[2] > 0  # the smallest norm is the least certain
    assert torch.equal(_model_uncertainty("magface", emb), u)


def test_classifier_entropy_is_low_at_a_centre_and_high_between_centres():
    centres = torch.eye(4)
    at_centre = torch.tensor([[5.0, 0.0, 0.0, 0.0]])
    between = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    low, high = classifier_entropy(torch.cat([at_centre, between]), centres, scale=16.0)
    assert 0 <= low < 1e-3 and high == pytest.approx(math.log(2), rel=1e-3)
    assert classifier_entropy(torch.zeros(1, 4) + 1, centres, scale=16.0).item() == pytest.approx(math.log(4))
    margin = types.SimpleNamespace(weight=centres)
    registered = _model_uncertainty("entropy", torch.cat([at_centre, between]), margin, {"head": {"s": 16.0}})
    assert torch.allclose(registered, torch.stack([low, high]))
    with pytest.raises(ConfigError, match="allowed: emb_norm, magface, entropy, scale"):
        _model_uncertainty("nope", at_centre)
