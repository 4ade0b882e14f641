"""The fit-head stage: an uncertainty head (PFE, SCF, SCF-G) fitted on a frozen backbone.

What the caller gets:

- :func:`fit_head` ``(method, model_dir, rec_dir, out_dir, config) -> out_dir/head.pt`` — the stage;
- :func:`fit_head_on_features` — the same training from precomputed (embeddings, feature maps,
  labels, class centres), used by the stage and by tests;
- :func:`resolve_config` — the fit settings with their defaults.

The backbone is frozen, so its outputs are computed once (:mod:`facetrust.train.features`) and the
head's epochs cost only the head; the loop is :class:`facetrust.train.frozen.FrozenTrainer`.  The
methods themselves (module, loss, batches, prediction) are entries of
:data:`facetrust.models.uncertainty.methods.UNCERTAINTY_HEADS`; ``head.pt`` is written and read by
:mod:`facetrust.models.artifacts`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from facetrust import backbone_cache
from facetrust.errors import ConfigError, InputError
from facetrust.io import outputs_together
from facetrust.models.artifacts import UNCERTAINTY_HEAD_NAME, load_frozen_backbone, save_uncertainty_head
from facetrust.models.uncertainty.methods import UNCERTAINTY_HEADS, FittedMethod
from facetrust.models.uncertainty.scf import MAX_HIDDEN_LAYERS, MAX_HIDDEN_WIDTH, cos_to_centre
from facetrust.train.batches import identity_batches, shuffled_batches
from facetrust.train.features import extract_features
from facetrust.train.frozen import FrozenTrainer

LOG_NAME = FrozenTrainer.log_name

# Defaults chosen to converge on the small synthetic set in a few epochs (the official SCF recipe,
# lr 3e-5 / StepLR(2, 0.5) / 30 epochs / batch 1024, is tuned for MS1M's 5.8M images).
DEFAULT_CONFIG: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 256,
    "lr": 1e-3,
    "optimizer": "adam",  # or "sgd" (momentum 0.9)
    "weight_decay": 0.0,
    "lr_step_epochs": 0,  # StepLR step in epochs (0: constant lr), as the official SCF's StepLR(2, .5)
    "lr_gamma": 0.5,
    "seed": 2026,
    "radius": 64.0,  # SCF r; the class centres and embeddings are compared on this sphere
    "hidden": [512, 256],  # SCF: hidden widths; PFE: the first entry is its hidden width
    "images_per_class": 4,  # PFE: identity-balanced batches so each batch has genuine pairs
    "extract_batch_size": 128,
    "num_workers": 0,
    "device": "auto",  # "auto" = cuda when available, else cpu
}


def resolve_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """DEFAULT_CONFIG updated by ``config``; ConfigError for unknown keys or bad values.

    A ``method`` key, when present, is accepted and checked (a registered uncertainty head method)."""
    config = dict(config or {})
    method = config.pop("method", None)
    if method is not None and method not in UNCERTAINTY_HEADS:
        raise ConfigError(f"fit-head config 'method' is {method!r}; allowed: {', '.join(UNCERTAINTY_HEADS.names())}")
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise ConfigError(
            f"unknown fit-head config key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: method, {', '.join(sorted(DEFAULT_CONFIG))}"
        )
    resolved = {**DEFAULT_CONFIG, **config}
    resolved["hidden"] = [resolved["hidden"]] if isinstance(resolved["hidden"], int) else list(resolved["hidden"])
    _check_values(resolved)
    if method is not None:
        resolved["method"] = method
    return resolved


def _check_values(resolved: dict[str, Any]) -> None:
    for key in ("epochs", "batch_size", "lr", "radius", "extract_batch_size"):
        if not isinstance(resolved[key], (int, float)) or not resolved[key] > 0:
            raise ConfigError(f"fit-head config {key!r} must be a number > 0, got {resolved[key]!r}")
    if resolved["optimizer"] not in ("adam", "sgd"):
        raise ConfigError(f"fit-head config 'optimizer' is {resolved['optimizer']!r}; allowed: adam, sgd")
    if resolved["images_per_class"] < 2:
        raise ConfigError(
            f"fit-head config 'images_per_class' must be >= 2 (PFE needs genuine pairs), "
            f"got {resolved['images_per_class']!r}"
        )
    if not resolved["hidden"] or any(int(h) < 1 for h in resolved["hidden"]):
        raise ConfigError(f"fit-head config 'hidden' must list positive widths, got {resolved['hidden']!r}")
    if len(resolved["hidden"]) > MAX_HIDDEN_LAYERS or any(int(h) > MAX_HIDDEN_WIDTH for h in resolved["hidden"]):
        # before the backbone is loaded; the head's total size is checked when it is built
        raise ConfigError(f"fit-head config 'hidden' {str(resolved['hidden'])[:80]}: at most {MAX_HIDDEN_LAYERS} "
                          f"widths of at most {MAX_HIDDEN_WIDTH} (facetrust.models.uncertainty)")
    if resolved["device"] not in ("auto", "cpu", "cuda") and not str(resolved["device"]).startswith("cuda:"):
        raise ConfigError(f"fit-head config 'device' is {resolved['device']!r}; allowed: auto, cpu, cuda, cuda:N")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class UncertaintyHeadTrainer(FrozenTrainer):
    """Hooks of :class:`FrozenTrainer` for a registered uncertainty head on cached backbone outputs."""

    def __init__(self, method: str, embeddings, feature_maps, labels, class_centres, out_dir, config):
        self.entry: FittedMethod = UNCERTAINTY_HEADS.get(method)
        self.method = method
        self.config = config
        super().__init__(out_dir, int(config["epochs"]), f"fit-head {method}")
        self.device = _device(config["device"])
        self.embeddings, self.feature_maps = embeddings, feature_maps
        self.labels = np.asarray(labels, dtype=np.int64)
        self.embedding_size = int(embeddings.shape[1])
        self.feature_map_shape = tuple(int(s) for s in feature_maps.shape[1:])
        self.radius = float(config["radius"])
        self.centres = self._centres(class_centres) if self.entry.needs_centres else None

    def _centres(self, class_centres) -> torch.Tensor:
        if class_centres is None:
            raise InputError(f"fit-head {self.method}: needs the class centres (the margin head's weight)")
        centres = torch.as_tensor(np.asarray(class_centres), dtype=torch.float32).to(self.device)
        labels = self.labels
        if centres.shape[1] != self.embedding_size or labels.max() >= centres.shape[0] or labels.min() < 0:
            raise InputError(
                f"fit-head {self.method}: class centres {tuple(centres.shape)} do not fit embeddings "
                f"of size {self.embedding_size} with labels in [{labels.min()}, {labels.max()}]"
            )
        return centres

    def _batch(self, index: np.ndarray):
        index = np.sort(index)  # memmaps read fastest in order; the losses are order-free
        return (
            torch.as_tensor(np.asarray(self.embeddings[index]), dtype=torch.float32).to(self.device),
            torch.as_tensor(np.asarray(self.feature_maps[index]), dtype=torch.float32).to(self.device),
            torch.as_tensor(self.labels[index]).to(self.device),
        )

    def build(self):
        config = self.config
        torch.manual_seed(int(config["seed"]))
        init_log_kappa = 0.0
        if self.entry.needs_centres:  # start at the kappa that fits the mean cosine (see SCFHead)
            n = len(self.labels)
            emb, _, lab = self._batch(np.arange(0, n, max(1, n // 4096)))
            mean_cos = float(cos_to_centre(emb, self.centres, lab).mean())
            init_log_kappa = self.entry.initial_log_kappa(mean_cos, self.embedding_size, self.radius)
        head = self.entry.build(self.feature_map_shape, self.embedding_size, config, init_log_kappa).to(self.device)
        if config["optimizer"] == "adam":
            optimizer = torch.optim.Adam(head.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
        else:
            optimizer = torch.optim.SGD(head.parameters(), lr=config["lr"], momentum=0.9,
                                        weight_decay=config["weight_decay"])
        step = int(config["lr_step_epochs"])
        schedulers = [torch.optim.lr_scheduler.StepLR(optimizer, step, config["lr_gamma"])] if step > 0 else []
        return head, [optimizer], schedulers

    def batches(self, epoch: int):
        rng = np.random.default_rng([int(self.config["seed"]), epoch])
        if self.entry.batches == "identity":
            batches = identity_batches(self.labels, int(self.config["batch_size"]),
                                       int(self.config["images_per_class"]), rng)
            if not batches:
                raise InputError(f"fit-head {self.method}: no identity has two images; it needs genuine pairs")
            return batches
        return shuffled_batches(len(self.labels), int(self.config["batch_size"]), rng)

    def step(self, index: np.ndarray):
        if len(index) < 2:  # BatchNorm needs two samples
            return None
        emb, fmap, lab = self._batch(index)
        return self.entry.loss(self.module, emb, fmap, lab, self.centres, self.radius), len(index)

    def save(self) -> Path:
        return save_uncertainty_head(self.out_dir, self.method, self.module, self.config, self.feature_map_shape,
                                     self.embedding_size)


def fit_head_on_features(method: str, embeddings, feature_maps, labels, class_centres,
                         out_dir: str | os.PathLike, config: Mapping[str, Any] | None = None) -> Path:
    """Train a ``method`` head on precomputed backbone outputs; write ``out_dir/head.pt`` and
    ``out_dir/fit_log.csv`` (epoch, loss, lr, seconds).  Returns the path of ``head.pt``.

    embeddings (N, D), feature_maps (N, C, h, w): arrays or tensors (memmaps are read per batch);
    labels (N,) ints; class_centres (num_classes, D) (unused by PFE, may be None).  Same seed and
    data -> bit-identical head on CPU.
    """
    UNCERTAINTY_HEADS.get(method)
    config = resolve_config(config)
    if config.get("method", method) != method:
        raise ConfigError(f"fit-head: method {method!r} but config 'method' is {config['method']!r}")
    config["method"] = method
    trainer = UncertaintyHeadTrainer(method, embeddings, feature_maps, labels, class_centres, out_dir, config)
    with outputs_together(trainer.out_dir / UNCERTAINTY_HEAD_NAME, trainer.out_dir / LOG_NAME):
        return trainer.fit()


def fit_head(method: str, model_dir: str | os.PathLike, rec_dir: str | os.PathLike, out_dir: str | os.PathLike,
             config: Mapping[str, Any] | None = None) -> Path:
    """The fit-head stage: the frozen backbone of ``model_dir`` (``facetrust train`` output) run over
    the InsightFace RecordIO set in ``rec_dir`` (``train.rec``/``.idx``/``property``), then a
    ``method`` head trained on its outputs.  Writes ``out_dir/head.pt`` and ``out_dir/fit_log.csv``;
    returns the path of ``head.pt``.
    """
    from facetrust.train.dataset import RecordDataset

    UNCERTAINTY_HEADS.get(method)
    resolved = resolve_config(config)
    backbone, input_size, centres = load_frozen_backbone(model_dir)
    dataset = RecordDataset(rec_dir, input_size, flip=False, seed=int(resolved["seed"]))
    out_dir = Path(out_dir)
    with outputs_together(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        return _fit_head_in(method, backbone, dataset, out_dir, resolved, centres)


def _fit_head_in(method, backbone, dataset, out_dir: Path, resolved: dict, centres) -> Path:
    batch_size, device = int(resolved["extract_batch_size"]), _device(resolved["device"])
    entry = _features_entry(backbone, dataset, batch_size, device)
    cached = None if entry is None else backbone_cache.load(entry)
    if cached is not None:  # another head of this backbone extracted them: the same arrays
        logging.getLogger(__name__).info("fit-head: backbone features from the cache (%s)", entry[:16])
        return fit_head_on_features(method, cached["embeddings"], cached["feature_maps"], cached["labels"], centres,
                                    out_dir, resolved)
    cache_dir = Path(tempfile.mkdtemp(prefix=".features.", dir=out_dir))
    try:
        embeddings, feature_maps, labels = extract_features(
            backbone, dataset, batch_size, cache_dir, device, int(resolved["num_workers"]),
        )
        if entry is not None and embeddings.nbytes + feature_maps.nbytes <= backbone_cache.MAX_ENTRY_BYTES:
            backbone_cache.store(entry, {"embeddings": np.asarray(embeddings), "feature_maps": np.asarray(feature_maps),
                                         "labels": labels})
        return fit_head_on_features(method, embeddings, feature_maps, labels, centres, out_dir, resolved)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def _features_entry(backbone, dataset, batch_size: int, device: torch.device) -> str | None:
    """The backbone-output cache entry of the training set's features (:mod:`facetrust.backbone_cache`:
    the PFE, SCF and SCF-G heads of one model read the same ones), or None where it does not apply."""
    root = getattr(dataset.source, "rec_dir", None)
    shape = getattr(backbone, "feature_map_shape", None)
    if backbone_cache.cache_root() is None or root is None or shape is None:
        return None
    if len(dataset) * int(np.prod(shape)) * 4 > backbone_cache.MAX_ENTRY_BYTES:  # no hashing of a large set
        return None
    files = [Path(root) / name for name in ("train.idx", "train.rec", "property") if (Path(root) / name).is_file()]
    settings = {"kind": "fit-head features", "input_size": list(dataset.input_size), "flip": dataset.flip,
                "batch_size": batch_size, "device": str(device), "images": len(dataset)}
    return backbone_cache.entry_key(backbone, files, settings)
