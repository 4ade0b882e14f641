"""One training loop for modules fitted on a frozen backbone (OpenSphere ``BaseTrainer`` style).

Subclasses differ only in their hooks:

- :meth:`FrozenTrainer.build` — the trainable module, its optimisers and LR schedulers;
- :meth:`FrozenTrainer.batches` — the batches of one epoch (indices, pairs, …), deterministic given
  the epoch;
- :meth:`FrozenTrainer.step` — forward + loss of one batch, with the number of samples it counts
  for (``None`` skips the batch);
- :meth:`FrozenTrainer.save` — write the fitted module; returns its path;
- optionally :meth:`FrozenTrainer.on_step_end` (per-step LR schedules, step logs) and
  :meth:`FrozenTrainer.on_epoch_end` (default: the per-epoch CSV log; a resumable trainer saves a
  checkpoint there).

The loop owns everything else: train mode, zero-grad / backward / optimiser steps, a non-finite
loss check, per-epoch scheduler steps, a tqdm bar and the per-epoch CSV log (epoch, loss, lr,
seconds), rewritten atomically after every epoch.  Uncertainty heads (PFE, SCF, SCF-G) train
through it on cached backbone outputs, ScaleFace's scale predictor on images
(:mod:`facetrust.train.scale_head`); the xCos branch on a frozen backbone plugs in with pair batches.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from facetrust.io import write_text_atomic


class FrozenTrainer:
    """Fit ``self.module`` for ``epochs`` epochs; ``fit()`` returns what :meth:`save` returns."""

    log_name = "fit_log.csv"

    def __init__(self, out_dir: str | Path, epochs: int, description: str):
        self.out_dir = Path(out_dir)
        self.epochs = int(epochs)
        self.description = description
        self.module: nn.Module | None = None
        self.optimizers: Sequence[torch.optim.Optimizer] = ()
        self.schedulers: Sequence[Any] = ()
        self.log_rows: list[dict] = []
        self.start_epoch = 0  # a resumed trainer's build() sets the first epoch still to run

    # ------------------------------------------------------------------------------ hooks
    def build(self) -> tuple[nn.Module, Sequence[torch.optim.Optimizer], Sequence[Any]]:
        raise NotImplementedError

    def batches(self, epoch: int) -> Iterable:
        raise NotImplementedError

    def step(self, batch) -> tuple[torch.Tensor, int] | None:
        raise NotImplementedError

    def save(self) -> Path:
        raise NotImplementedError

    def on_step_end(self, loss: torch.Tensor) -> None:
        """Called after every optimiser step with the batch's (detached) loss."""

    def on_epoch_end(self, epoch: int, mean_loss: float, lr: float, seconds: float) -> None:
        """Called after every epoch; the default rewrites the per-epoch CSV log."""
        self.log_rows.append({"epoch": epoch + 1, "loss": mean_loss, "lr": lr, "seconds": round(seconds, 3)})
        write_csv_log(self.out_dir / self.log_name, self.log_rows)

    # ------------------------------------------------------------------------------- loop
    def fit(self) -> Path:
        self.module, self.optimizers, self.schedulers = self.build()
        for epoch in range(self.start_epoch, self.epochs):
            self._run_epoch(epoch)
        return self.save()

    def _run_epoch(self, epoch: int) -> None:
        batches = self.batches(epoch)
        self.module.train()
        started, total, count = time.perf_counter(), 0.0, 0
        lr_now = self.optimizers[0].param_groups[0]["lr"]
        progress = tqdm(batches, desc=f"{self.description} epoch {epoch + 1}/{self.epochs}", unit="batch")
        for batch in progress:
            outcome = self.step(batch)
            if outcome is None:
                continue
            loss, n = outcome
            if not torch.isfinite(loss):
                raise RuntimeError(f"{self.description}: non-finite loss at epoch {epoch + 1}")
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in self.optimizers:
                optimizer.step()
            total += loss.item() * n
            count += n
            progress.set_postfix(loss=f"{total / count:.4f}")
            self.on_step_end(loss.detach())
        progress.close()
        for scheduler in self.schedulers:
            scheduler.step()
        self.on_epoch_end(epoch, total / max(count, 1), lr_now, time.perf_counter() - started)


def write_csv_log(path: Path, rows: list[dict]) -> None:
    """Rewrite ``path`` atomically with ``rows`` (a header from the first row's keys)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
