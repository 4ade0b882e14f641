"""Pieces shared by the backbone trainer and the frozen-backbone trainers: the trained module, its
initialisation from another model, seeding and determinism, RNG state, and ``train_log.csv``."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from facetrust.errors import ConfigError
from facetrust.io import atomic_path
from facetrust.models.artifacts import load_checkpoint

LOG_NAME = "train_log.csv"
LOG_COLUMNS = ("epoch", "step", "loss", "accuracy", "lr", "images_per_s")


class TrainModel(nn.Module):
    """Backbone + margin head (+ ScaleFace scale head) as one module, so DDP syncs them all.

    ``forward(images, labels) -> (logits, extra_loss)``; embeddings reach the head unnormalised
    (MagFace needs their norm; the heads normalise themselves).  Parts named in ``frozen``
    ("backbone", "head") get no gradient and stay in eval mode (fixed BatchNorm statistics)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, scale_head: nn.Module | None = None,
                 frozen: tuple[str, ...] = ()):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.scale_head = scale_head
        self.frozen = tuple(frozen)
        for name in self.frozen:
            getattr(self, name).requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def forward(self, images: torch.Tensor, labels: torch.Tensor):
        with torch.set_grad_enabled(torch.is_grad_enabled() and "backbone" not in self.frozen):
            if self.scale_head is None:
                embeddings, feature_map = self.backbone(images), None
            else:
                embeddings, feature_map = self.backbone(images, return_feature_map=True)
        if feature_map is None:
            logits = self.head(embeddings, labels)
        else:
            logits = self.head(embeddings, labels, scale=self.scale_head(feature_map))
        extra = self.head.extra_loss() if hasattr(self.head, "extra_loss") else logits.new_zeros(())
        return logits, extra


def initialise_from(model: TrainModel, source: str, log) -> None:
    """Copy the backbone (strictly) and, where shapes agree, the head weights of a trained model."""
    state = load_checkpoint(source)
    try:
        model.backbone.load_state_dict(state["backbone"], strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"train config 'init_from' {source}: backbone does not fit: {exc}") from None
    head_state = model.head.state_dict()
    shared = {k: v for k, v in (state.get("head") or {}).items()
              if k in head_state and head_state[k].shape == v.shape}
    head_state.update(shared)
    model.head.load_state_dict(head_state)
    log(f"initialised from {source}: backbone, head tensors {sorted(shared) or 'none'}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(device: torch.device) -> None:
    """Deterministic kernels on CPU (the same run gives the same bytes).  Not the debugging aid
    that comes with them, filling every new tensor with NaN before a kernel overwrites it: it
    changes no value (no kernel reads memory it has not written) and cost ~15 % of a training
    step on the embedded default (``aten::fill_`` on every ``torch.empty``)."""
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = False
    else:  # GPU runs are repeatable up to non-deterministic CUDA kernels (atomics in backward)
        torch.backends.cudnn.benchmark = False


def _complete_row(row: list[str]) -> bool:
    """A full log row: every column present and numeric (a kill can tear the last line)."""
    if len(row) != len(LOG_COLUMNS):
        return False
    try:
        int(row[0]), int(row[1])
        [float(value) for value in row[2:]]
    except ValueError:
        return False
    return True


def _rows_up_to(path: Path, resume_step: int) -> list[list[str]]:
    """The log rows of ``path`` up to the checkpoint's step: rows a killed run logged after its
    last checkpoint are redone, and a torn last line (``5,`` or ``5,4``) is dropped."""
    with path.open(newline="", errors="replace") as handle:
        rows = list(csv.reader(handle))[1:]
    return [row for row in rows if _complete_row(row) and int(row[1]) <= resume_step]


class TrainCsvLog:
    """``train_log.csv`` on rank 0: rows are appended and flushed as training goes."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        kept: list[list[str]] = []
        if resume_step is not None and path.is_file():
            kept = _rows_up_to(path, resume_step)
        with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(LOG_COLUMNS)
            writer.writerows(kept)
        self.handle = path.open("a", newline="")
        self.writer = csv.writer(self.handle)

    def write(self, epoch: int, step: int, loss: float, accuracy: float, lr: float, images_per_s: float):
        self.writer.writerow([epoch, step, f"{loss:.6f}", f"{accuracy:.6f}", f"{lr:.8g}", f"{images_per_s:.1f}"])
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
