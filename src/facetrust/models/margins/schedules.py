"""SphereFace's λ annealing: how the A-Softmax target logit is fused with the plain one.

The original Caffe layer (``MarginInnerProduct``) does not use ψ(θ) alone as the target logit but

    f = (λ·‖x‖cos θ + ‖x‖ψ(θ)) / (1 + λ),     λ = max(λ_min, base·(1 + γ·iter)^(−power))

with base = 1000, γ = 0.12, power = 1, λ_min = 5, and ``iter`` incremented *before* λ is computed on
every training forward (so the first step uses iter = 1).

Why it matters ("loss stuck at 87.3"): 87.3 = −ln(FLT_MIN), the value Caffe's softmax loss prints
when the target probability underflows to zero.  With the full ψ from step 0 (m = 4: ψ drops to
−7 over [0, π] while the other logits stay near ‖x‖cos θ_j) a randomly initialised network puts
almost every sample far past the first branch, its target logit is hugely negative, the
probability underflows and the gradient is useless; the loss sits at 87.3 (or becomes NaN).  A
large λ first makes f ≈ ‖x‖cos θ (plain softmax, which trains from scratch), then the margin enters
gradually as λ decays; λ_min > 0 keeps a share of cos θ for good, because the pure m = 4 margin is
too hard a target to converge (the paper's released models use λ_min = 5).

The iteration counter is a buffer, so it is saved in the head's ``state_dict`` and a resumed run
continues the schedule instead of restarting it at λ = 1000.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from facetrust.errors import ConfigError


class LambdaAnnealing(nn.Module):
    """Blend ``(λ·plain + margin) / (1 + λ)`` with λ decaying over training forwards.

    Call it as ``fusion(plain_target, margin_target)``; in training mode each call first advances
    ``iteration`` by one.  In eval mode λ is read at the current iteration without advancing."""

    def __init__(self, base: float = 1000.0, gamma: float = 0.12, power: float = 1.0, lambda_min: float = 5.0):
        super().__init__()
        for key, value in (("base", base), ("gamma", gamma), ("lambda_min", lambda_min)):
            if value < 0:
                raise ConfigError(f"sphereface {key} must be >= 0, got {value}")
        self.base, self.gamma, self.power, self.lambda_min = float(base), float(gamma), float(power), float(lambda_min)
        # int64: an integer counter survives ``head.half()`` / ``.to(dtype)``, which cast float buffers.
        self.register_buffer("iteration", torch.zeros((), dtype=torch.int64))

    def lambda_at(self, iteration: int | torch.Tensor) -> torch.Tensor:
        """λ = max(λ_min, base·(1 + γ·iteration)^(−power)) as a float64 tensor (no host sync)."""
        iteration = torch.as_tensor(iteration, dtype=torch.float64, device=self.iteration.device)
        return (self.base * (1.0 + self.gamma * iteration) ** (-self.power)).clamp(min=self.lambda_min)

    @property
    def current_lambda(self) -> float:
        """λ at the current ``iteration`` (the value the last training forward used)."""
        return float(self.lambda_at(self.iteration))

    def forward(self, plain_target: torch.Tensor, margin_target: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.iteration += 1
        lam = self.lambda_at(self.iteration).to(plain_target.dtype)
        return (lam * plain_target + margin_target) / (1.0 + lam)

    def extra_repr(self) -> str:
        return f"base={self.base}, gamma={self.gamma}, power={self.power}, lambda_min={self.lambda_min}"
