"""log I_nu, the Bessel ratio and the vMF normaliser against scipy / mpmath references."""

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy.special import ive

from facetrust.maths.bessel import (
    bessel_ratio,
    debye_polynomials,
    log_iv,
    log_vmf_normalizer,
)

DIMENSIONS = [2, 3, 8, 64, 81, 128, 512, 1024, 2048]
KAPPAS = [1e-3, 0.1, 1.0, 7.5, 50.0, 300.0, 1e3, 5e3, 1e4, 1e5]


def reference_log_iv(nu: float, kappa: float) -> float:
    """log I_nu(kappa): scipy's exponentially scaled ive where it is a normal float, mpmath where it
    underflows (large order, small kappa)."""
    scaled = ive(nu, kappa)
    if np.isfinite(scaled) and scaled > 1e-280:
        return math.log(scaled) + kappa
    with mpmath.workdps(40):
        return float(mpmath.log(mpmath.besseli(nu, kappa)))


def reference_ratio(nu: float, kappa: float) -> float:
    with mpmath.workdps(40):
        return float(mpmath.besseli(nu + 1, kappa) / mpmath.besseli(nu, kappa))


def test_debye_polynomials_match_the_published_closed_forms():
    # Abramowitz & Stegun 9.3.9: u1 = (3t - 5t^3)/24, u2 = (81t^2 - 462t^4 + 385t^6)/1152
    u = debye_polynomials()
    t = 0.37
    poly = lambda coefs: sum(float(c) * t**p for p, c in enumerate(coefs))  # noqa: E731
    assert poly(u[1]) == pytest.approx((3 * t - 5 * t**3) / 24, rel=1e-15)
    assert poly(u[2]) == pytest.approx((81 * t**2 - 462 * t**4 + 385 * t**6) / 1152, rel=1e-15)


@pytest.mark.parametrize("d", DIMENSIONS)
def test_log_iv_float64_matches_reference_over_kappa_grid(d):
    nu = d / 2 - 1
    kappa = torch.tensor(KAPPAS, dtype=torch.float64)
    ours = log_iv(nu, kappa).numpy()
    ref = np.array([reference_log_iv(nu, k) for k in KAPPAS])
    # relative error on log values, with an absolute floor where log I_nu crosses 0 (nu = 0 at small kappa)
    assert np.all(np.abs(ours - ref) <= 1e-10 * np.abs(ref) + 1e-12), np.abs(ours - ref) / np.abs(ref)


def test_log_iv_covers_huge_kappa_far_beyond_scipys_range():
    kappas = [1e7, 1e10, 1e15]
    ours = log_iv(511.0, torch.tensor(kappas, dtype=torch.float64)).numpy()
    with mpmath.workdps(40):
        ref = np.array([float(mpmath.log(mpmath.besseli(511, k))) for k in kappas])
    assert np.allclose(ours, ref, rtol=1e-15, atol=0)


@pytest.mark.parametrize("d", [3, 64, 512, 2048])
def test_log_iv_float32_is_accurate_and_keeps_dtype(d):
    nu = d / 2 - 1
    kappa = torch.tensor(KAPPAS, dtype=torch.float32)
    ours = log_iv(nu, kappa)
    assert ours.dtype == torch.float32
    ref = np.array([reference_log_iv(nu, float(k)) for k in kappa.tolist()])
    assert np.all(np.abs(ours.numpy() - ref) <= 1e-6 * np.abs(ref) + 1e-6)


@pytest.mark.parametrize("d", [2, 3, 100, 512, 1024, 2048])
def test_gradient_of_log_iv_is_ratio_plus_nu_over_kappa(d):
    nu = d / 2 - 1
    kappa = torch.tensor(KAPPAS, dtype=torch.float64, requires_grad=True)
    log_iv(nu, kappa).sum().backward()
    expected = np.array([reference_ratio(nu, k) + nu / k for k in KAPPAS])
    assert np.allclose(kappa.grad.numpy(), expected, rtol=1e-11, atol=0)


def test_gradients_agree_with_finite_differences():
    # central differences carry ~1e-16 * |log I| / eps of rounding: tolerances sized for that
    kappa = torch.tensor([0.02, 1.3, 40.0, 700.0], dtype=torch.float64, requires_grad=True)
    for nu in (0.0, 0.5, 12.0, 255.0):
        assert torch.autograd.gradcheck(lambda k: log_iv(nu, k), (kappa,), eps=1e-6, atol=1e-5, rtol=1e-6)
    for d in (3, 512):
        assert torch.autograd.gradcheck(lambda k: log_vmf_normalizer(d, k), (kappa,), eps=1e-6, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("d", [3, 512, 2048])
def test_bessel_ratio_is_the_mean_resultant_length(d):
    nu = d / 2 - 1
    ours = bessel_ratio(nu, torch.tensor(KAPPAS, dtype=torch.float64)).numpy()
    expected = np.array([reference_ratio(nu, k) for k in KAPPAS])
    assert np.allclose(ours, expected, rtol=1e-12, atol=0)
    assert np.all((ours > 0) & (ours < 1)) and np.all(np.diff(ours) > 0)


def test_vmf_normaliser_matches_closed_forms_in_two_and_three_dimensions():
    kappa = torch.tensor([1e-3, 0.5, 3.0, 40.0, 600.0], dtype=torch.float64)
    # S^2: C_3 = kappa / (4 pi sinh kappa); log sinh k = k + log1p(-e^{-2k}) - log 2
    log_sinh = kappa + torch.log1p(-torch.exp(-2 * kappa)) - math.log(2)
    expected3 = torch.log(kappa) - math.log(4 * math.pi) - log_sinh
    assert torch.allclose(log_vmf_normalizer(3, kappa), expected3, rtol=1e-12, atol=1e-13)
    # circle: C_2 = 1 / (2 pi I_0(kappa))
    expected2 = torch.tensor(
        [-math.log(2 * math.pi) - reference_log_iv(0.0, k) for k in kappa.tolist()], dtype=torch.float64
    )
    assert torch.allclose(log_vmf_normalizer(2, kappa), expected2, rtol=1e-12, atol=1e-13)


def test_vmf_normaliser_tends_to_uniform_density_and_its_gradient_does_not_cancel_at_small_kappa():
    d = 512
    kappa = torch.tensor([1e-6, 1e-3], dtype=torch.float64, requires_grad=True)
    value = log_vmf_normalizer(d, kappa)
    # kappa -> 0: C_d -> 1 / area(S^{d-1}) = Gamma(d/2) / (2 pi^{d/2})
    log_uniform = math.lgamma(d / 2) - math.log(2) - (d / 2) * math.log(math.pi)
    assert value[0].item() == pytest.approx(log_uniform, rel=1e-12)
    value.sum().backward()
    # d/dk log C_d = -A_d(k) ~ -k/d for small k: tiny, and exact to full relative precision
    assert np.allclose(kappa.grad.numpy(), -kappa.detach().numpy() / d, rtol=1e-5)
    assert kappa.grad[1].item() == pytest.approx(-reference_ratio(d / 2 - 1, 1e-3), rel=1e-12)


def test_float32_extremes_stay_finite_for_large_dimensions():
    kappa = torch.tensor([1e-3, 1.0, 1e5, 1e8], dtype=torch.float32, requires_grad=True)
    value = log_vmf_normalizer(2048, kappa)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(kappa.grad).all()
    assert kappa.grad.dtype == torch.float32


def test_refuses_negative_order_and_bad_dimension():
    with pytest.raises(ValueError, match="order"):
        log_iv(-1.0, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="dimension"):
        log_vmf_normalizer(1, torch.tensor([1.0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    kappa = torch.logspace(-3, 6, 200, dtype=torch.float64)
    cpu = log_vmf_normalizer(512, kappa)
    gpu = log_vmf_normalizer(512, kappa.cuda())
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-12, atol=0)
