"""Stable log I_nu(kappa) and the von Mises-Fisher normaliser, on device, differentiable in kappa.

What the caller gets:

- :func:`log_iv` ``(nu, kappa) -> log I_nu(kappa)``, the modified Bessel function of the first kind;
- :func:`bessel_ratio` ``(nu, kappa) -> I_{nu+1}(kappa) / I_nu(kappa)`` (A_d(kappa) of the vMF with
  ``nu = d/2 - 1``: the mean resultant length, in (0, 1));
- :func:`log_vmf_normalizer` ``(d, kappa) -> log C_d(kappa)``, C_d the vMF density normaliser on the
  unit sphere S^{d-1}: ``log C_d = (d/2-1) log kappa - (d/2) log 2pi - log I_{d/2-1}(kappa)``.

``nu`` (or ``d``) is a Python number, ``kappa`` a tensor of any shape with kappa > 0, float32 or
float64, any device. Results have kappa's dtype and device. No CPU / scipy round trip.

Method (all in float64 internally, whatever the input dtype: float32 loses the ratio to
cancellation for kappa >> nu, and the cost is negligible next to a backbone):

1. Uniform asymptotic (Debye) expansion at an order N >= ``_DEBYE_MIN_ORDER`` (Abramowitz & Stegun
   9.7.7; DLMF 10.41.3). With S = sqrt(N^2 + kappa^2) and t = N / S::

       log I_N(kappa) = -1/2 log(2 pi) - 1/2 log S + S + N log(kappa / (N + S))
                        + log sum_k u_k(t) / N^k

   (the usual -1/2 log(2 pi N) - 1/4 log(1 + z^2) with z = kappa/N folds into -1/2 log S).
   It is uniform in kappa in (0, inf): the same formula holds for kappa = 1e-3 and kappa = 1e8.
   The polynomials u_k are generated exactly (fractions) by their recurrence (DLMF 10.41.9).
2. The ratio r_N = I_{N+1}/I_N from the difference of two such expansions, written without
   cancellation (every difference of square roots rationalised, log1p where the argument is small).
3. For small orders nu < ``_DEBYE_MIN_ORDER`` (e.g. d = 3) start at N = nu + m and run the
   three-term recurrence I_{k-1} = I_{k+1} + (2k/kappa) I_k *downwards* in ratio form,
   r_{k-1} = 1 / (r_k + 2k/kappa), which is the stable direction for I (the minimal solution);
   log I_nu = log I_N - sum_{k=nu}^{N-1} log r_k.

Gradients (custom autograd Functions, exact rather than differentiated through the expansion):
d/dkappa log I_nu(kappa) = r_nu + nu/kappa (from I'_nu = I_{nu+1} + (nu/kappa) I_nu), and
d/dkappa log C_d(kappa) = -r_nu, computed directly so that the nu/kappa terms never cancel
(they would, at small kappa, if autograd went through ``nu*log(kappa) - log_iv``).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
from torch.autograd.function import once_differentiable

# Debye expansion used from this order on; below it, the downward recurrence bridges the gap.
# With _DEBYE_TERMS terms, log I at N >= 40 agrees with mpmath to ~1e-14 relative (tests/test_bessel.py).
_DEBYE_MIN_ORDER = 40.0
_DEBYE_TERMS = 8


@functools.lru_cache(maxsize=None)
def debye_polynomials(n_terms: int = _DEBYE_TERMS) -> tuple[tuple[Fraction, ...], ...]:
    """Coefficients (ascending powers of t) of u_0 ... u_{n_terms-1} of the Debye expansion.

    Recurrence (DLMF 10.41.9): u_{k+1}(t) = 1/2 t^2 (1 - t^2) u_k'(t) + 1/8 int_0^t (1 - 5 s^2) u_k(s) ds,
    u_0 = 1. Exact rational arithmetic, so the coefficients are exact.
    """
    polys: list[list[Fraction]] = [[Fraction(1)]]
    for _ in range(n_terms - 1):
        u = polys[-1]
        nxt = [Fraction(0)] * (len(u) + 3)
        for power, coef in enumerate(u):
            if coef == 0:
                continue
            if power > 0:  # 1/2 t^2 (1 - t^2) * power * coef * t^(power-1)
                nxt[power + 1] += Fraction(1, 2) * power * coef
                nxt[power + 3] -= Fraction(1, 2) * power * coef
            # 1/8 int_0^t (1 - 5 s^2) coef s^power ds
            nxt[power + 1] += Fraction(1, 8) * coef / (power + 1)
            nxt[power + 3] -= Fraction(5, 8) * coef / (power + 3)
        while nxt and nxt[-1] == 0:
            nxt.pop()
        polys.append(nxt)
    return tuple(tuple(p) for p in polys)


@functools.lru_cache(maxsize=64)
def _series_coefficients(order: float) -> tuple[float, ...]:
    """Coefficients (ascending powers of t) of sum_{k>=1} u_k(t) / order^k: for a fixed order the
    whole correction is one polynomial in t, so it costs one Horner pass instead of one per u_k."""
    polys = debye_polynomials()
    degree = max(len(p) for p in polys)
    combined = [Fraction(0)] * degree
    for k, coefs in enumerate(polys):
        if k == 0:
            continue
        for power, coef in enumerate(coefs):
            combined[power] += coef / Fraction(order) ** k
    return tuple(float(c) for c in combined)


def _debye_log_series(order: float, t: torch.Tensor) -> torch.Tensor:
    """log sum_k u_k(t) / order^k (the correction factor of the Debye expansion; close to 0)."""
    acc = torch.zeros_like(t)
    for coef in reversed(_series_coefficients(order)):
        acc = acc * t + coef  # Horner
    return torch.log1p(acc)


def _debye_log_iv_and_log_ratio(order: float, kappa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log I_N(kappa), log(I_{N+1}(kappa)/I_N(kappa))) by the Debye expansion, N = order large."""
    n0, n1 = order, order + 1.0
    s0 = torch.sqrt(n0 * n0 + kappa * kappa)
    s1 = torch.sqrt(n1 * n1 + kappa * kappa)
    series0 = _debye_log_series(n0, n0 / s0)
    log_iv = -0.5 * math.log(2.0 * math.pi) - 0.5 * torch.log(s0) + s0 + n0 * torch.log(kappa / (n0 + s0)) + series0
    # Difference of the two expansions, rationalised: s1 - s0 = (n1^2 - n0^2) / (s1 + s0).
    ds = (n1 * n1 - n0 * n0) / (s1 + s0)
    log_ratio = (
        -0.5 * torch.log1p(ds / s0)
        + ds
        + torch.log(kappa / (n1 + s1))
        - n0 * torch.log1p((1.0 + ds) / (n0 + s0))
        + (_debye_log_series(n1, n1 / s1) - series0)
    )
    return log_iv, log_ratio


def log_iv_and_ratio(nu: float, kappa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log I_nu(kappa), I_{nu+1}(kappa)/I_nu(kappa)) in float64, no autograd. kappa > 0, nu >= 0."""
    nu = float(nu)
    if nu < 0:
        raise ValueError(f"log_iv: order nu must be >= 0, got {nu}")
    kappa = kappa.to(torch.float64)
    steps = max(0, math.ceil(_DEBYE_MIN_ORDER - nu))
    top = nu + steps
    log_iv, log_ratio = _debye_log_iv_and_log_ratio(top, kappa)
    ratio = torch.exp(log_ratio)
    # Downward recurrence in ratio form: r_{k-1} = 1 / (r_k + 2k/kappa), k = top ... nu+1.
    for j in range(steps):
        k = top - j
        ratio = 1.0 / (ratio + 2.0 * k / kappa)
        log_iv = log_iv - torch.log(ratio)  # log I_{k-1} = log I_k - log r_{k-1}
    return log_iv, ratio


class _LogIv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa: torch.Tensor, nu: float) -> torch.Tensor:
        log_iv, ratio = log_iv_and_ratio(nu, kappa)
        grad = ratio + nu / kappa.to(torch.float64)  # d/dkappa log I_nu = r_nu + nu/kappa
        ctx.save_for_backward(grad.to(kappa.dtype))
        return log_iv.to(kappa.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None


class _LogVmfNormalizer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa: torch.Tensor, d: int) -> torch.Tensor:
        nu = d / 2.0 - 1.0
        log_iv, ratio = log_iv_and_ratio(nu, kappa)
        k64 = kappa.to(torch.float64)
        log_c = nu * torch.log(k64) - (d / 2.0) * math.log(2.0 * math.pi) - log_iv
        ctx.save_for_backward((-ratio).to(kappa.dtype))  # d/dkappa log C_d = -A_d(kappa)
        return log_c.to(kappa.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None


def _check_kappa(kappa: torch.Tensor) -> torch.Tensor:
    if not isinstance(kappa, torch.Tensor):
        kappa = torch.as_tensor(kappa, dtype=torch.float64)
    if not kappa.is_floating_point():
        kappa = kappa.to(torch.float64)
    return kappa


def log_iv(nu: float, kappa: torch.Tensor) -> torch.Tensor:
    """log I_nu(kappa) for a scalar order nu >= 0 and kappa > 0 (any shape, dtype kept).

    Differentiable in kappa with the exact derivative I_{nu+1}/I_nu + nu/kappa.
    """
    return _LogIv.apply(_check_kappa(kappa), float(nu))


def bessel_ratio(nu: float, kappa: torch.Tensor) -> torch.Tensor:
    """I_{nu+1}(kappa) / I_nu(kappa) (no gradient). With nu = d/2 - 1 this is the vMF's A_d(kappa)."""
    kappa = _check_kappa(kappa)
    return log_iv_and_ratio(nu, kappa.detach())[1].to(kappa.dtype)


def log_vmf_normalizer(d: int, kappa: torch.Tensor) -> torch.Tensor:
    """log C_d(kappa) = (d/2-1) log kappa - (d/2) log 2pi - log I_{d/2-1}(kappa), d >= 2, kappa > 0.

    C_d(kappa) exp(kappa mu.x) is the vMF density on the unit sphere S^{d-1} (w.r.t. surface measure).
    Differentiable in kappa: d/dkappa log C_d(kappa) = -I_{d/2}(kappa)/I_{d/2-1}(kappa).
    """
    if int(d) != d or d < 2:
        raise ValueError(f"log_vmf_normalizer: dimension d must be an integer >= 2, got {d}")
    return _LogVmfNormalizer.apply(_check_kappa(kappa), int(d))
