"""xCos training (Lin et al., arXiv 2003.05383, Sec. 3.3) as hooks on the one frozen-backbone loop.

The xCos branch (grid feature, attention; :mod:`facetrust.explain.xcos`) sits on a backbone
initialised from a trained model of ``params.yaml`` (``init_from``), as the released xCos models
were; a CosFace/ArcFace head trains the flattened grid feature, and xCos regresses the cosine of a
**frozen, separately trained standard model** (``standard``) on pairs.  Loss = identity loss +
MSE(xCos, standard cosine), weights 1 and 1.  Optimisers as the paper's (backbone, grid conv and
head by SGD, attention by Adam), their rates scaled to our budget in ``params.yaml``.

Hooks of :class:`facetrust.train.frozen.FrozenTrainer`:

- ``build``: seed and determinism, the training set, backbone (``init_from`` weights wherever the
  shapes agree: a different ``input_size`` or ``last_stage_stride`` changes only the unused
  flatten/FC layers), the branch and head (:func:`facetrust.explain.xcos_train.build_xcos`), the
  frozen standard model, the optimisers and a per-step cosine schedule;
- ``batches``: seeded genuine/impostor pair batches (:func:`facetrust.explain.xcos_train.pair_batches`);
- ``step``: decode both faces (one flip coin per image and epoch, as the backbone trainer), at
  the xCos input size and at the standard model's, then :func:`facetrust.explain.xcos.xcos_loss`
  against :func:`facetrust.explain.xcos.standard_cosine`;
- ``on_step_end``: the LR schedule; ``on_epoch_end``: ``fit_log.csv`` with the loss parts;
- ``save``: ``xcos.pt`` through :mod:`facetrust.models.artifacts`.

``freeze_backbone: true`` is the paper's cheaper variant: only the branch and the head learn.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from facetrust.data.transforms import fit_to_size, to_tensor
from facetrust.errors import ConfigError, InputError
from facetrust.explain.xcos import branch_state, standard_cosine, xcos_loss
from facetrust.explain.xcos_train import build_optimizers, build_xcos, pair_batches
from facetrust.io import write_json_atomic
from facetrust.models.artifacts import (
    build_backbone_from_config,
    load_checkpoint,
    load_model,
    save_xcos_checkpoint,
)
from facetrust.train.dataset import RecordDataset
from facetrust.train.frozen import FrozenTrainer, write_csv_log
from facetrust.train.parts import seed_everything, set_determinism

LR_SCHEDULES = ("cosine", "constant")


@dataclass
class XCosConfig:
    """One entry of ``params.yaml`` ``xcos:`` (flattened: the ``train`` block's keys sit beside the
    model's), plus the run's ``seed`` and ``threads``.  Defaults = the schema's."""

    init_from: str
    standard: str
    method: str | None = None
    input_size: tuple[int, int] = (112, 112)
    backbone_options: dict = field(default_factory=dict)
    head: dict = field(default_factory=lambda: {"kind": "cosface", "s": 30.0, "m": 0.35})
    grid_channels: int = 32
    temperature: float = 1.0
    freeze_backbone: bool = False
    epochs: int = 2
    batch_pairs: int = 64
    genuine_fraction: float = 0.5
    steps_per_epoch: int | None = None
    lr: float = 1e-3
    backbone_lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 4e-5
    head_weight_decay: float = 4e-4
    attention_lr: float = 1e-4
    amsgrad: bool = True
    lr_schedule: str = "cosine"
    identity_weight: float = 1.0
    xcos_weight: float = 1.0
    flip_augment: bool = True
    seed: int = 2026
    threads: int | None = None

    def __post_init__(self) -> None:
        self.input_size = tuple(int(v) for v in self.input_size)
        self.head = dict(self.head)
        self.backbone_options = dict(self.backbone_options)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"xcos config 'lr_schedule' is {self.lr_schedule!r}; allowed: {', '.join(LR_SCHEDULES)}")
        for key in ("epochs", "batch_pairs", "lr", "attention_lr", "grid_channels", "temperature"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"xcos config {key!r} must be > 0, got {getattr(self, key)!r}")
        if "kind" not in self.head:
            raise ConfigError("xcos config 'head' needs a 'kind' (cosface or arcface)")

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], *, seed: int, threads: int | None = None) -> "XCosConfig":
        """From a ``params.yaml`` ``xcos.<name>`` entry; ConfigError names an unknown key."""
        values = {key: value for key, value in entry.items() if key != "train"}
        values.update(entry.get("train") or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown xcos config key(s) {', '.join(map(repr, unknown))}; "
                              f"allowed: {', '.join(sorted(names))}")
        values.update(seed=int(seed), threads=threads)
        try:
            return cls(**values)
        except TypeError as exc:  # a missing init_from/standard or a value of the wrong type
            raise ConfigError(f"xcos config: {exc}") from None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["input_size"] = list(self.input_size)
        return out


def backbone_config(init_config: Mapping[str, Any], config: XCosConfig) -> dict:
    """The xCos backbone: the ``init_from`` model's architecture at the xCos input size, its
    ``backbone_options`` updated by the xCos entry's (e.g. ``last_stage_stride: 1``)."""
    return {"backbone": init_config["backbone"], "embedding_size": int(init_config["embedding_size"]),
            "input_size": list(config.input_size),
            "backbone_options": {**dict(init_config.get("backbone_options") or {}), **config.backbone_options}}


def load_matching(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy the tensors of ``state`` whose name and shape match ``module``'s; returns the names of
    ``module``'s tensors left at their initial values."""
    own = module.state_dict()
    shared = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
    own.update(shared)
    module.load_state_dict(own)
    return sorted(set(own) - set(shared))


class XCosTrainer(FrozenTrainer):
    """Train an xCos model (``config``) on the RecordIO set ``rec_dir``; ``fit()`` returns ``xcos.pt``."""

    def __init__(self, config: XCosConfig, rec_dir: str | Path, out_dir: str | Path, *,
                 log: Callable[[str], None] = print):
        super().__init__(out_dir, config.epochs, "xcos")
        self.config, self.rec_dir, self.log = config, Path(rec_dir), log
        self.step_count = 0

    # ---------------------------------------------------------------------------------- build
    def build(self):
        config = self.config
        if config.threads:
            torch.set_num_threads(config.threads)
        set_determinism(torch.device("cpu"))
        seed_everything(config.seed)
        self.dataset = RecordDataset(self.rec_dir, config.input_size, flip=config.flip_augment, seed=config.seed)
        self.labels = self.dataset.labels
        init = load_checkpoint(config.init_from)
        self.backbone_config = backbone_config(init["config"], config)
        backbone = build_backbone_from_config(self.backbone_config)
        untouched = load_matching(backbone, init["backbone"])
        self.log(f"xcos backbone from {config.init_from}; left at initial values: {untouched or 'none'}")
        self.model, self.head = build_xcos(backbone, self.dataset.num_classes, head_kind=config.head["kind"],
                                           head_options={k: v for k, v in config.head.items() if k != "kind"},
                                           freeze_backbone=config.freeze_backbone, temperature=config.temperature,
                                           seed=config.seed)
        self.standard, standard_config, _ = load_model(config.standard)
        self.standard.requires_grad_(False)
        self.standard_size = tuple(standard_config["input_size"])
        optimizers = build_optimizers(self.model, self.head, lr=config.lr, momentum=config.momentum,
                                      weight_decay=config.weight_decay, head_weight_decay=config.head_weight_decay,
                                      attention_lr=config.attention_lr, amsgrad=config.amsgrad,
                                      backbone_lr=config.backbone_lr)
        self.optimizer_set = optimizers
        self.steps_per_epoch = int(config.steps_per_epoch or max(1, len(self.labels) // (2 * config.batch_pairs)))
        total = self.steps_per_epoch * config.epochs
        factor = (lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total))) if config.lr_schedule == "cosine" \
            else (lambda step: 1.0)
        self.schedules = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in optimizers.optimizers.values()]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out_dir / "config.json", self.saved_config())
        module = torch.nn.ModuleDict({"xcos": self.model, "head": self.head})
        return module, list(optimizers.optimizers.values()), []

    def saved_config(self) -> dict:
        """What ``xcos.pt`` and ``config.json`` record: the backbone's config and the xCos settings."""
        return {**self.backbone_config, **{k: v for k, v in self.config.to_dict().items()
                                           if k not in ("input_size", "backbone_options")}}

    # -------------------------------------------------------------------------------- batches
    def batches(self, epoch: int):
        self.dataset.set_epoch(epoch)
        self.parts = {"identity": 0.0, "xcos_mse": 0.0, "pairs": 0}
        rng = np.random.default_rng([self.config.seed, epoch])
        return list(pair_batches(self.labels, self.config.batch_pairs, rng,
                                 genuine_fraction=self.config.genuine_fraction, num_batches=self.steps_per_epoch))

    def _faces(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The images ``indices`` at the xCos input size and at the standard model's."""
        own, standard = [], []
        for index in indices.tolist():
            image, _ = self.dataset.source.decode(index)
            if self.dataset.flips(index):
                image = image[:, ::-1]
            own.append(to_tensor(fit_to_size(image, self.config.input_size)))
            standard.append(to_tensor(fit_to_size(image, self.standard_size)))
        return torch.stack(own), torch.stack(standard)

    def step(self, batch):
        images1, standard1 = self._faces(batch.first)
        images2, standard2 = self._faces(batch.second)
        labels1 = torch.from_numpy(self.labels[batch.first])
        labels2 = torch.from_numpy(self.labels[batch.second])
        target = standard_cosine(self.standard, standard1, standard2)
        loss = xcos_loss(self.model, self.head, images1, images2, labels1, labels2, target,
                         identity_weight=self.config.identity_weight, xcos_weight=self.config.xcos_weight)
        n = len(batch.first)
        self.parts["identity"] += float(loss.identity.detach()) * n
        self.parts["xcos_mse"] += float(loss.xcos_mse.detach()) * n
        self.parts["pairs"] += n
        return loss.total, n

    def on_step_end(self, loss: torch.Tensor) -> None:
        for schedule in self.schedules:
            schedule.step()
        self.step_count += 1

    def on_epoch_end(self, epoch: int, mean_loss: float, lr: float, seconds: float) -> None:
        pairs = max(self.parts["pairs"], 1)
        self.log_rows.append({"epoch": epoch + 1, "step": self.step_count, "loss": round(mean_loss, 6),
                              "identity": round(self.parts["identity"] / pairs, 6),
                              "xcos_mse": round(self.parts["xcos_mse"] / pairs, 6), "lr": lr,
                              "seconds": round(seconds, 3)})
        write_csv_log(self.out_dir / self.log_name, self.log_rows)
        self.log(f"xcos epoch {epoch + 1}/{self.epochs}: loss {mean_loss:.4f}")

    def save(self) -> Path:
        return save_xcos_checkpoint(self.out_dir, {
            "backbone": {k: v.detach().cpu() for k, v in self.model.backbone.state_dict().items()},
            "branch": branch_state(self.model),
            "head": {k: v.detach().cpu() for k, v in self.head.state_dict().items()},
            "config": self.saved_config(),
            "num_classes": int(self.dataset.num_classes),
            "feature_map_shape": [int(v) for v in self.model.backbone.feature_map_shape],
            "grid_shape": [int(v) for v in self.model.grid_shape],
            "epoch": self.epochs,
            "step": self.step_count,
        })


def train_xcos(config: XCosConfig, rec_dir: str | Path, out_dir: str | Path, *,
               log: Callable[[str], None] = print) -> Path:
    """Train the xCos model ``config`` on ``rec_dir`` (InsightFace RecordIO); writes
    ``out_dir/{xcos.pt, config.json, fit_log.csv}`` and returns the path of ``xcos.pt``.
    Same config and data, same bytes on CPU."""
    if not (Path(rec_dir) / "train.rec").is_file():
        raise InputError(f"{rec_dir}: no train.rec (an InsightFace RecordIO training set)")
    return XCosTrainer(config, rec_dir, out_dir, log=log).fit()
