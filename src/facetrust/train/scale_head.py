"""ScaleFace's protocol: a scale predictor trained on a frozen recognition model.

ScaleFace (Kail et al., "ScaleFace: Uncertainty-aware Deep Metric Learning") keeps a trained
ArcFace backbone and its class centres fixed and learns only s_i = s_max·sigmoid(g(feature map)),
the per-image scale of the ArcFace logits s_i·cos(θ + m), on the training images.  Unlike the
uncertainty heads it sees augmented images (a fresh flip coin per image and epoch), so the frozen
backbone runs on every batch instead of on a cache; otherwise it is one more set of hooks on
:class:`facetrust.train.frozen.FrozenTrainer`:

- ``build``: seed, the training set, backbone + margin + scale predictor (built and initialised
  exactly as the backbone trainer does, from ``init_from``), SGD on the predictor and the warm-up /
  cosine schedule of :class:`facetrust.train.schedule.LRSchedule`;
- ``batches``: the epoch's shuffled image batches (same sampler and seeds as the backbone trainer);
- ``step``: ArcFace cross-entropy with the predicted scales; ``on_step_end``: the per-step schedule
  and ``train_log.csv``; ``on_epoch_end``: a resumable training checkpoint (the checkpoint format of
  :mod:`facetrust.models.artifacts`, so ``embed --uncertainty scale`` reads it like any model).

:func:`facetrust.train.trainer.train` hands a config here when the backbone and the margin are
both frozen, so the same params give the same numbers whichever entry point is used.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from facetrust.errors import ConfigError, InputError
from facetrust.io import write_json_atomic
from facetrust.models.artifacts import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    build_backbone_from_config,
    build_margin,
    load_checkpoint,
    save_checkpoint,
)
from facetrust.train.config import TrainConfig
from facetrust.train.dataset import EpochSampler, RecordDataset
from facetrust.train.distributed import DistInfo
from facetrust.train.frozen import FrozenTrainer
from facetrust.train.loader import batch_to_device, make_loader
from facetrust.train.parts import (
    LOG_NAME,
    TrainCsvLog,
    TrainModel,
    initialise_from,
    restore_rng,
    rng_state,
    seed_everything,
    set_determinism,
)
from facetrust.train.schedule import LRSchedule


class ScaleHeadTrainer(FrozenTrainer):
    """Train only the ScaleFace scale predictor of ``config`` (backbone and margin frozen)."""

    log_name = LOG_NAME

    def __init__(self, config: TrainConfig, rec_dir: str | Path, out_dir: str | Path, *, resume: bool,
                 log: Callable[[str], None], info: DistInfo):
        if info.distributed:
            raise ConfigError("train config freezes the backbone and the margin: the scale predictor "
                              "trains in one process (run it without torchrun)")
        if config.head.get("kind") != "scaleface" or not (config.freeze_backbone and config.freeze_head):
            raise ConfigError("the scale-head trainer needs head kind 'scaleface' with freeze_backbone "
                              "and freeze_head")
        super().__init__(out_dir, config.epochs, "scale head")
        self.config, self.rec_dir, self.resume, self.log, self.info = config, Path(rec_dir), resume, log, info
        self.checkpoint_file = self.out_dir / CHECKPOINT_NAME
        self.step_count = 0

    # ---------------------------------------------------------------------------------- build
    def build(self):
        config, device = self.config, self.info.device
        if config.threads:
            torch.set_num_threads(config.threads)
        set_determinism(device)
        seed_everything(config.seed)
        self.dataset = RecordDataset(self.rec_dir, config.input_size, flip=config.flip_augment, seed=config.seed)
        self.num_classes = self.dataset.num_classes
        self.steps_per_epoch = len(self.dataset) // config.batch_size
        if self.steps_per_epoch < 1:
            raise InputError(f"{self.rec_dir}: {len(self.dataset)} images, fewer than one batch of {config.batch_size}")
        backbone = build_backbone_from_config(config.to_dict())
        margin, predictor = build_margin(config.to_dict(), self.num_classes, backbone.feature_map_shape)
        self.model = TrainModel(backbone, margin, predictor, frozen=("backbone", "head"))
        resuming = self.resume and self.checkpoint_file.is_file()
        if not resuming:
            initialise_from(self.model, config.init_from, self.log)
        self.model.to(device)
        self.optimizer = torch.optim.SGD(self.model.scale_head.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.schedule = LRSchedule(self.optimizer, config.lr_schedule, config.lr, self.steps_per_epoch, config.epochs,
                                   config.warmup_epochs, config.milestones, config.gamma, config.poly_power)
        total_steps = self.steps_per_epoch * config.epochs
        self.stop_at = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
        self.epochs = -(-self.stop_at // self.steps_per_epoch)
        if resuming:
            self._restore()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out_dir / CONFIG_NAME, config.to_dict())
        self.csv_log = TrainCsvLog(self.out_dir / self.log_name, self.step_count if self.resume else None)
        self.sampler = EpochSampler(len(self.dataset), config.seed)
        self.loader_generator = torch.Generator()
        self.loader = make_loader(self.dataset, config.batch_size, sampler=self.sampler, num_workers=config.num_workers,
                                  generator=self.loader_generator, device=device, drop_last=True)
        return self.model, [self.optimizer], []

    def _restore(self) -> None:
        state = load_checkpoint(self.checkpoint_file)
        mismatch = self.config.differs_from(TrainConfig.from_dict(state["config"]))
        if mismatch:
            raise ConfigError(f"{self.checkpoint_file}: cannot resume, config differs in {', '.join(mismatch)}")
        self.model.backbone.load_state_dict(state["backbone"])
        self.model.head.load_state_dict(state["head"])
        self.model.scale_head.load_state_dict(state["scale_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], self.info.device)
        self.start_epoch, self.step_count = int(state["epoch"]), int(state["step"])
        self.log(f"resuming {self.checkpoint_file} at epoch {self.start_epoch}, step {self.step_count}")

    # -------------------------------------------------------------------------------- batches
    def batches(self, epoch: int):
        done_in_epoch = self.step_count - epoch * self.steps_per_epoch
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch, skip=done_in_epoch * self.config.batch_size)
        self.loader_generator.manual_seed(self.config.seed * 1_000_003 + epoch)  # worker seeds
        self.epoch = epoch
        self.end_of_epoch = min(self.stop_at, (epoch + 1) * self.steps_per_epoch)
        self.window = [0.0, 0.0, 0, time.perf_counter()]  # loss, accuracy, steps, start
        return itertools.islice(self.loader, self.end_of_epoch - self.step_count)

    def step(self, batch):
        images, labels = batch_to_device(*batch, self.info.device)
        self.lr = self.schedule.current_lr
        logits, extra = self.model(images, labels)
        self.correct = (logits.detach().argmax(1) == labels).float().mean()
        return F.cross_entropy(logits.float(), labels) + extra, len(images)

    def on_step_end(self, loss: torch.Tensor) -> None:
        self.schedule.step()
        self.step_count += 1
        window = self.window
        window[0] += loss
        window[1] += self.correct
        window[2] += 1
        if self.step_count % self.config.log_every == 0 or self.step_count == self.end_of_epoch:
            elapsed = max(time.perf_counter() - window[3], 1e-9)
            self.csv_log.write(self.epoch + 1, self.step_count, float(window[0] / window[2]), float(window[1] / window[2]), self.lr,
                               window[2] * self.config.batch_size / elapsed)
            self.window = [0.0, 0.0, 0, time.perf_counter()]

    def on_epoch_end(self, epoch: int, mean_loss: float, lr: float, seconds: float) -> None:
        completed = epoch + 1 if self.step_count == (epoch + 1) * self.steps_per_epoch else epoch
        if completed > epoch:
            self.log(f"epoch {completed}/{self.config.epochs} done (step {self.step_count})")
        save_checkpoint(self.checkpoint_file, self._payload(completed))

    def _payload(self, epoch: int) -> dict:
        return {
            "backbone": self.model.backbone.state_dict(),
            "head": self.model.head.state_dict(),
            "scale_head": self.model.scale_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": {},
            "epoch": epoch,
            "step": self.step_count,
            "num_classes": self.num_classes,
            "feature_map_shape": list(self.model.backbone.feature_map_shape),
            "rng": rng_state(self.info.device),
            "config": self.config.to_dict(),
        }

    def fit(self) -> Path:
        try:
            return super().fit()
        finally:
            if hasattr(self, "csv_log"):
                self.csv_log.close()

    def save(self) -> Path:
        if not self.checkpoint_file.is_file():  # nothing left to do on resume
            save_checkpoint(self.checkpoint_file, self._payload(self.start_epoch))
        return self.checkpoint_file
