"""Learning-rate schedules, per optimisation step, with linear warm-up.

The LR is a pure function of the global step, so a resumed run needs only the step counter
(stored in the checkpoint as ``{"step": n}``) to continue on exactly the same curve.

* warm-up (InsightFace ``PolyScheduler``): ``lr · step / warmup_steps`` for step < warmup_steps;
* ``step``: ``lr · gamma^k``, k = number of milestones (in epochs) already reached;
* ``cosine``: ``lr · ½(1 + cos(π t))``, t = progress after warm-up in [0, 1];
* ``poly``: ``lr · (1 − t)^power`` (InsightFace: power 2).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Sequence

import torch

from facetrust.errors import ConfigError


class LRSchedule:
    """Sets ``optimizer``'s LR for each step; ``state_dict()`` / ``load_state_dict()`` hold the step."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: str,
        base_lr: float,
        steps_per_epoch: int,
        epochs: int,
        warmup_epochs: float = 0.0,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        power: float = 2.0,
    ):
        if kind not in ("step", "cosine", "poly"):
            raise ConfigError(f"lr_schedule {kind!r} not allowed; allowed: step, cosine, poly")
        self.optimizer = optimizer
        self.kind = kind
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_steps = self.steps_per_epoch * int(epochs)
        self.warmup_steps = int(round(float(warmup_epochs) * self.steps_per_epoch))
        self.milestone_steps = [int(m) * self.steps_per_epoch for m in milestones]
        self.gamma = float(gamma)
        self.power = float(power)
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        """The learning rate used by optimisation step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.kind == "step":
            return self.base_lr * self.gamma ** bisect_right(self.milestone_steps, step)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "cosine":
            return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.base_lr * (1.0 - progress) ** self.power

    @property
    def current_lr(self) -> float:
        return self.lr_at(self.step_count)

    def _apply(self) -> None:
        lr = self.current_lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        """Advance one optimisation step and set the LR of the next one."""
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self._apply()
