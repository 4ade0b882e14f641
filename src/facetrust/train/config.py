"""Training configuration: one flat dataclass, built from a dict or from ``params.yaml``.

``TrainConfig.from_dict`` refuses unknown keys (ConfigError naming them); ``to_dict`` is
JSON-serialisable and is what ``config.json`` and the checkpoint store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from facetrust.errors import ConfigError

LR_SCHEDULES = ("step", "cosine", "poly")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")

# Keys that may differ between a run and its resumption: they change how fast a run goes or when
# it stops, never the numbers it computes.
RUNTIME_KEYS = frozenset({"num_workers", "threads", "max_steps", "log_every"})


@dataclass
class TrainConfig:
    """Everything ``facetrust.train.train`` needs besides the data and output paths."""

    backbone: str
    head: dict = field(default_factory=lambda: {"kind": "arcface"})
    backbone_options: dict = field(default_factory=dict)
    embedding_size: int = 512
    input_size: tuple[int, int] = (112, 112)
    epochs: int = 10
    batch_size: int = 128  # global batch: split across DDP processes
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)  # step schedule, in epochs
    gamma: float = 0.1  # step schedule factor
    poly_power: float = 2.0  # InsightFace PolyScheduler: (1 - t)^2
    warmup_epochs: float = 1.0
    seed: int = 2026
    num_workers: int = 0
    flip_augment: bool = True
    threads: int | None = None
    max_steps: int | None = None
    log_every: int = 50
    # Start from a trained model (a training output directory or its checkpoint.pt): its backbone,
    # and its head weights when they have the same shape.  With freeze_backbone / freeze_head those
    # parts stay fixed (eval-mode BatchNorm, no gradient): ScaleFace's scale head on a frozen
    # recognition model.
    init_from: str | None = None
    freeze_backbone: bool = False
    freeze_head: bool = False
    # Partial FC (An et al., CVPR 2022): {sample_rate: r}; the class centres sharded over the DDP
    # processes, r of each shard sampled per step (facetrust.train.partial_fc).  None: the full FC.
    partial_fc: dict | None = None
    # The layout the model trains in (facetrust.train.trainer.training_layout): "auto" is
    # channels-last (NHWC) for one CPU process where the backbone allows it, NCHW ("contiguous")
    # otherwise.  Checkpoints are NCHW whatever the layout.
    memory_format: str = "auto"

    def __post_init__(self) -> None:
        self.input_size = _size(self.input_size)
        self.head = dict(self.head)
        self.backbone_options = dict(self.backbone_options)
        self.milestones = [int(m) for m in self.milestones]
        if isinstance(self.partial_fc, Mapping):
            self.partial_fc = dict(self.partial_fc)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad key and what it allows."""
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ConfigError(f"train config 'backbone' must be a backbone name, got {self.backbone!r}")
        if "kind" not in self.head:
            raise ConfigError("train config 'head' needs a 'kind' (e.g. {'kind': 'arcface'})")
        if self.memory_format not in MEMORY_FORMATS:
            raise ConfigError(
                f"train config 'memory_format' is {self.memory_format!r}; allowed: {', '.join(MEMORY_FORMATS)}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"train config 'lr_schedule' is {self.lr_schedule!r}; allowed: {', '.join(LR_SCHEDULES)}"
            )
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                    "embedding_size": self.embedding_size, "log_every": self.log_every}
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"train config {key!r} must be > 0, got {value!r}")
        non_negative = {"momentum": self.momentum, "weight_decay": self.weight_decay,
                        "warmup_epochs": self.warmup_epochs, "num_workers": self.num_workers,
                        "seed": self.seed}
        for key, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"train config {key!r} must be >= 0, got {value!r}")
        for key in ("max_steps", "threads"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"train config {key!r} must be >= 1 or null, got {value!r}")
        if (self.freeze_backbone or self.freeze_head) and self.init_from is None:
            raise ConfigError("train config 'freeze_backbone'/'freeze_head' need 'init_from' (a trained model)")
        if self.freeze_backbone and self.freeze_head and self.head.get("kind") != "scaleface":
            raise ConfigError("train config freezes the backbone and the head: nothing left to train "
                              "(only kind 'scaleface' adds a trainable scale head)")
        self._validate_margin()
        from facetrust.train.partial_fc import check_partial_fc

        check_partial_fc(self.partial_fc, self.head.get("kind"), self.freeze_head)
        if self.lr_schedule == "step" and sorted(self.milestones) != self.milestones:
            raise ConfigError(f"train config 'milestones' must be increasing, got {self.milestones}")

    def _validate_margin(self) -> None:
        """The margin's kind and options, checked now rather than after the data is read: a tiny
        head is built (its own seeded generator: the global RNG is not touched)."""
        from facetrust.models.artifacts import SCALE_PREDICTOR_OPTIONS
        from facetrust.models.margins import build_head

        options = dict(self.head)
        kind = options.pop("kind")
        if kind == "scaleface":
            options = {k: v for k, v in options.items() if k not in SCALE_PREDICTOR_OPTIONS}
        build_head(kind, 2, 2, **options)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a flat dict; unknown keys raise ConfigError listing the allowed ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"unknown train config key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(names))}"
            )
        if "backbone" not in values:
            raise ConfigError("train config needs 'backbone'")
        try:
            return cls(**dict(values))
        except TypeError as exc:  # a value of the wrong type (e.g. a string for epochs)
            raise ConfigError(f"train config: {exc}") from None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], model: str) -> "TrainConfig":
        """Assemble the config of ``params['models'][model]`` (params.yaml layout): the model's
        backbone/head/sizes, its ``train`` block, and the top-level ``seed`` and ``threads``."""
        models = params.get("models", {})
        if model not in models:
            raise ConfigError(f"params: no model {model!r} under 'models'; have: {', '.join(sorted(models))}")
        entry = dict(models[model])
        values = {key: entry[key] for key in
                  ("backbone", "backbone_options", "embedding_size", "input_size", "head") if key in entry}
        values.update(entry.get("train", {}) or {})
        for key in ("seed", "threads"):
            if key in params:
                values.setdefault(key, params[key])
        return cls.from_dict(values)

    def to_dict(self) -> dict:
        """JSON-serialisable plain dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["input_size"] = list(self.input_size)
        if out["partial_fc"] is None:  # a run without it keeps the config.json (and checkpoint) it always had
            del out["partial_fc"]
        return out

    def differs_from(self, other: "TrainConfig") -> list[str]:
        """Keys whose values differ, ignoring RUNTIME_KEYS (used to refuse a mismatched resume)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in set(mine) | set(theirs) if k not in RUNTIME_KEYS and mine.get(k) != theirs.get(k))


def _size(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"train config 'input_size' must be [height, width], got {value!r}") from None
    if height < 1 or width < 1:
        raise ConfigError(f"train config 'input_size' must be positive, got {value!r}")
    return (height, width)
