"""xCos training (Lin et al., arXiv 2003.05383, Sec. 3.3) as hooks on the one frozen-backbone loop.

The xCos branch (grid feature, attention; :mod:`facetrust.models.xcos`) sits on a backbone
initialised from a trained model of ``params.yaml`` (``init_from``), as the released xCos models
were; a CosFace/ArcFace head trains the flattened grid feature, and xCos regresses the cosine of a
**frozen, separately trained standard model** (``standard``) on pairs.  Loss = identity loss +
MSE(xCos, standard cosine), weights 1 and 1.  Optimisers as the paper's (backbone, grid conv and
head by SGD, attention by Adam), their rates scaled to our budget in ``params.yaml``.

Hooks of :class:`facetrust.train.frozen.FrozenTrainer`:

- ``build``: seed and determinism, the training set, backbone (``init_from`` weights wherever the
  shapes agree: a different ``input_size`` or ``last_stage_stride`` changes only the unused
  flatten/FC layers), the branch and head (:func:`facetrust.train.xcos_parts.build_xcos`), the
  frozen standard model, the optimisers and a per-step cosine schedule;
- ``batches``: seeded genuine/impostor pair batches (:func:`facetrust.train.xcos_parts.pair_batches`);
- ``step``: decode both faces (one flip coin per image and epoch, as the backbone trainer), at
  the xCos input size and at the standard model's, then :func:`facetrust.models.xcos.xcos_loss`
  against :func:`facetrust.models.xcos.standard_cosine`;
- ``on_step_end``: the LR schedule; ``on_epoch_end``: ``fit_log.csv`` with the loss parts;
- ``save``: ``xcos.pt`` through :mod:`facetrust.models.artifacts`.

``freeze_backbone: true`` (the default) is the paper's cheaper variant: only the branch and the head
learn, the backbone stays the trained model that is also the regression target, so xCos is judged
against the very network it explains.  Its feature maps (and the standard model's embeddings) are
then computed once per image and orientation (:mod:`facetrust.train.xcos_cache`), so thousands of
steps, every seed and the validation sweep cost one backbone pass.

:func:`train_xcos` also owns the choices: ``select`` lists candidate values (e.g. learning rates);
each trains the first seed and is scored on a **validation pair set** (identities used for no
reported number) by the mean squared error of xCos to the standard cosine, the quantity xCos is
trained to reproduce; the lowest wins.  The chosen values then train ``replicates`` seeds (seed,
seed + 1, …): replicate 0 in ``out_dir``, replicate r in ``out_dir/replicate<r>``.
``validation.json`` records every candidate's and replicate's validation figures and the choice.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from facetrust.data.transforms import fit_to_size, to_tensor
from facetrust.errors import ConfigError, InputError
from facetrust.models.xcos import branch_state, standard_cosine, xcos_loss, xcos_loss_from_grids
from facetrust.train.xcos_cache import build_feature_cache, pair_set_cache
from facetrust.train.xcos_parts import build_optimizers, build_xcos, pair_batches
from facetrust.io import write_json_atomic
from facetrust.models.artifacts import (
    build_backbone_from_config,
    load_checkpoint,
    load_model,
    save_xcos_checkpoint,
)
from facetrust.models.registry import inference_layout
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
    freeze_backbone: bool = True
    cache_features: bool = True  # with a frozen backbone: feature maps computed once (same outputs)
    replicates: int = 1  # training seeds seed, seed + 1, …
    select: dict = field(default_factory=dict)  # {key: [candidates]}, chosen on the validation pairs
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
        self.select = {str(k): list(v) for k, v in dict(self.select).items()}
        selectable = {f.name for f in dataclasses.fields(self)} - {"select", "seed", "replicates", "init_from",
                                                                     "standard", "threads"}
        bad = sorted(set(self.select) - selectable)
        if bad:
            raise ConfigError(f"xcos config 'select': cannot choose {', '.join(map(repr, bad))}")
        if any(not values for values in self.select.values()):
            raise ConfigError("xcos config 'select': every key needs at least one candidate")
        if int(self.replicates) < 1:
            raise ConfigError(f"xcos config 'replicates' must be >= 1, got {self.replicates!r}")
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


@dataclass
class XCosSetup:
    """What every run of one ``train_xcos`` call shares: the training set, the initialised backbone
    (``init_from`` weights), the frozen standard model and, with a frozen backbone, the feature cache
    and the validation pairs' cache."""

    dataset: RecordDataset
    backbone_config: dict
    backbone: torch.nn.Module
    standard: torch.nn.Module
    standard_size: tuple[int, int]
    cache: Any = None
    validation: Any = None
    validation_path: str | None = None


def prepare(config: XCosConfig, rec_dir: str | Path, validation: str | Path | None = None, *,
            log: Callable[[str], None] = print) -> XCosSetup:
    """Load the data and models once; cache the frozen features (``freeze_backbone`` and
    ``cache_features``) of the training images and of the ``validation`` pair set (``.bin``)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    set_determinism(torch.device("cpu"))
    seed_everything(config.seed)  # layers that init_from does not fill start from the seed
    dataset = RecordDataset(rec_dir, config.input_size, flip=config.flip_augment, seed=config.seed)
    init = load_checkpoint(config.init_from)
    config_of_backbone = backbone_config(init["config"], config)
    backbone = build_backbone_from_config(config_of_backbone)
    untouched = load_matching(backbone, init["backbone"])
    log(f"xcos backbone from {config.init_from}; left at initial values: {untouched or 'none'}")
    standard, standard_config, _ = load_model(config.standard)
    standard.requires_grad_(False)
    standard_size = tuple(standard_config["input_size"])
    setup = XCosSetup(dataset, config_of_backbone, backbone, standard, standard_size)
    if validation is not None and not config.freeze_backbone:
        raise ConfigError("xcos: validation figures need a frozen backbone (freeze_backbone: true)")
    if config.freeze_backbone and config.cache_features:
        backbone.eval().requires_grad_(False)
        # the target is the backbone's own embedding when the standard model is the init model at the
        # same input size with every tensor loaded: one pass gives both
        same = (Path(config.standard).resolve() == Path(config.init_from).resolve() and not untouched
                and standard_size == tuple(config.input_size))
        other = None if same else standard
        log(f"xcos: caching the frozen feature maps of {len(dataset)} images x 2 orientations")
        # the frozen passes run channels-last on a copy; the checkpoint keeps the trainer's NCHW weights
        frozen = inference_layout(copy.deepcopy(backbone))
        setup.cache = build_feature_cache(frozen, other, lambda i: dataset.source.decode(i)[0], len(dataset),
                                          config.input_size, standard_size)
        if validation is not None:
            from facetrust.data.pairset import PairSet

            setup.validation = pair_set_cache(frozen, other, PairSet(validation), config.input_size, standard_size)
            setup.validation_path = str(validation)
    return setup


def validation_figures(model, cache) -> dict:
    """xCos on the validation pairs against the standard cosine: ``mse``, ``pearson_r`` and the 10-fold
    accuracies of both scores (original images, F0) with their difference."""
    from facetrust.evaluate.precomputed_scores import ten_fold_scores

    model.eval()
    with torch.no_grad():
        xcos = model.compare(model.grid_from_map(cache.first), model.grid_from_map(cache.second)).xcos
    xcos = xcos.double().numpy()
    accuracy = ten_fold_scores(xcos, cache.issame).accuracy
    reference = ten_fold_scores(cache.target, cache.issame).accuracy
    return {"mse": float(np.mean((xcos - cache.target) ** 2)), "pearson_r": float(np.corrcoef(xcos, cache.target)[0, 1]),
            "accuracy_xcos": float(accuracy), "accuracy_standard_cosine": float(reference),
            "accuracy_difference": float(accuracy - reference), "pairs": int(cache.issame.size)}


class XCosTrainer(FrozenTrainer):
    """Train an xCos model (``config``) on the RecordIO set ``rec_dir``; ``fit()`` returns ``xcos.pt``.

    ``setup`` (:func:`prepare`) shares data, models and the feature cache between runs;
    ``persist=False`` keeps the run in memory (a selection candidate) until :meth:`write_outputs`."""

    def __init__(self, config: XCosConfig, rec_dir: str | Path, out_dir: str | Path, *,
                 log: Callable[[str], None] = print, setup: XCosSetup | None = None, persist: bool = True):
        super().__init__(out_dir, config.epochs, "xcos")
        self.config, self.rec_dir, self.log = config, Path(rec_dir), log
        self.setup, self.persist = setup, persist
        self.step_count = 0

    # ---------------------------------------------------------------------------------- build
    def build(self):
        config = self.config
        if self.setup is None:
            self.setup = prepare(config, self.rec_dir, log=self.log)
        setup = self.setup
        seed_everything(config.seed)
        self.dataset = setup.dataset
        self.dataset.seed = config.seed  # this run's flip coins
        self.labels = self.dataset.labels
        self.backbone_config = setup.backbone_config
        backbone = copy.deepcopy(setup.backbone)
        self.model, self.head = build_xcos(backbone, self.dataset.num_classes, head_kind=config.head["kind"],
                                           head_options={k: v for k, v in config.head.items() if k != "kind"},
                                           freeze_backbone=config.freeze_backbone, temperature=config.temperature,
                                           seed=config.seed)
        self.standard, self.standard_size = setup.standard, setup.standard_size
        self.cache = setup.cache if config.freeze_backbone else None
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
        if self.persist:
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

    def _cached_loss(self, batch):
        """The loss from the feature cache: the same feature maps and target the uncached path computes."""
        flips1 = [self.dataset.flips(i) for i in batch.first.tolist()]
        flips2 = [self.dataset.flips(i) for i in batch.second.tolist()]
        maps = torch.cat([self.cache.maps(batch.first, flips1), self.cache.maps(batch.second, flips2)])
        target = (self.cache.embeddings(batch.first, flips1) * self.cache.embeddings(batch.second, flips2)).sum(1)
        return xcos_loss_from_grids(self.model, self.head, self.model.grid_from_map(maps),
                                    torch.from_numpy(self.labels[batch.first]), torch.from_numpy(self.labels[batch.second]),
                                    target, identity_weight=self.config.identity_weight,
                                    xcos_weight=self.config.xcos_weight)

    def step(self, batch):
        if self.cache is not None:
            loss = self._cached_loss(batch)
        else:
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
        # seconds are left out of the log: a rerun must give the same bytes
        self.log_rows.append({"epoch": epoch + 1, "step": self.step_count, "loss": round(mean_loss, 6),
                              "identity": round(self.parts["identity"] / pairs, 6),
                              "xcos_mse": round(self.parts["xcos_mse"] / pairs, 6), "lr": lr})
        if self.persist:
            write_csv_log(self.out_dir / self.log_name, self.log_rows)
        self.log(f"xcos epoch {epoch + 1}/{self.epochs}: loss {mean_loss:.4f}")

    def write_outputs(self, out_dir: str | Path) -> Path:
        """Write a run trained in memory (``persist=False``) to ``out_dir``: config, log, checkpoint."""
        self.out_dir, self.persist = Path(out_dir), True
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out_dir / "config.json", self.saved_config())
        write_csv_log(self.out_dir / self.log_name, self.log_rows)
        return self.save()

    def save(self) -> Path | None:
        if not self.persist:
            return None
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


def candidates(config: XCosConfig) -> list[dict]:
    """Every combination of the ``select`` values (in the order written), ``[{}]`` without any."""
    keys = list(config.select)
    return [dict(zip(keys, values)) for values in itertools.product(*(config.select[k] for k in keys))]


def replicate_dir(out_dir: str | Path, replicate: int) -> Path:
    """Where replicate ``replicate`` (seed + replicate) is written: ``out_dir`` itself for 0."""
    return Path(out_dir) if replicate == 0 else Path(out_dir) / f"replicate{replicate}"


def train_xcos(config: XCosConfig, rec_dir: str | Path, out_dir: str | Path, *, validation: str | Path | None = None,
               log: Callable[[str], None] = print) -> Path:
    """Train the xCos model ``config`` on ``rec_dir`` (InsightFace RecordIO); writes
    ``out_dir/{xcos.pt, config.json, fit_log.csv}`` (replicate 0), ``out_dir/replicate<r>/`` for the
    other seeds and, with a ``validation`` pair set, ``out_dir/validation.json``; returns the path
    of replicate 0's ``xcos.pt``.  ``select`` needs ``validation``.  Same config and data, same
    bytes on CPU."""
    if not (Path(rec_dir) / "train.rec").is_file():
        raise InputError(f"{rec_dir}: no train.rec (an InsightFace RecordIO training set)")
    if config.select and validation is None:
        raise ConfigError("xcos config 'select' chooses on a validation pair set: give --validation")
    setup = prepare(config, rec_dir, validation, log=log)
    record = {"validation_set": setup.validation_path,
              "criterion": "mean squared error of xCos to the standard cosine on the validation pairs (lowest wins)",
              "candidates": [], "replicates": []}
    runs = []
    for values in candidates(config):
        run = XCosTrainer(dataclasses.replace(config, **values), rec_dir, out_dir, log=log, setup=setup, persist=False)
        run.fit()
        figures = validation_figures(run.model, setup.validation) if setup.validation is not None else {}
        record["candidates"].append({"values": values, **figures})
        runs.append(run)
    best = min(range(len(runs)), key=lambda i: record["candidates"][i].get("mse", 0.0))
    record["chosen"] = record["candidates"][best]["values"]
    chosen = dataclasses.replace(config, **record["chosen"])
    # the other seeds first, replicate 0 (the rule's declared output) and validation.json last, so
    # that the declared files appear only once everything is written
    for replicate in range(config.replicates):
        run = runs[best]
        if replicate:
            run = XCosTrainer(dataclasses.replace(chosen, seed=config.seed + replicate), rec_dir,
                              replicate_dir(out_dir, replicate), log=log, setup=setup)
            run.fit()
        figures = validation_figures(run.model, setup.validation) if setup.validation is not None else {}
        record["replicates"].append({"replicate": replicate, "seed": config.seed + replicate,
                                     "dir": str(replicate_dir(out_dir, replicate)), **figures})
    first = runs[best].write_outputs(replicate_dir(out_dir, 0))
    if setup.validation is not None:
        write_json_atomic(Path(out_dir) / "validation.json", record)
    return first
