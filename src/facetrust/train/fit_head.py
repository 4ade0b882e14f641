"""Fit an uncertainty head (PFE, SCF, SCF-G) on a frozen backbone; load it; predict uncertainty.

What the caller gets:

- :func:`fit_head` ``(method, model_dir, rec_dir, out_dir, config) -> out_dir/head.pt`` — the stage;
- :func:`fit_head_on_features` — the same training from precomputed (embeddings, feature maps,
  labels, class centres), used by the stage and by tests;
- :func:`load_head` ``(head_dir) -> head module`` (eval mode; ``.method`` and ``.fit_config`` set);
- :func:`predict_uncertainty` ``(head, method, embeddings, feature_maps) -> (uncertainty, extra)``
  for the embed stage.

The backbone is frozen, so its outputs are computed once (batched, no grad, ``flip`` off) and
cached in a memory-mapped file under ``out_dir`` (removed afterwards): the head's epochs then cost
only the head. ``head.pt`` is a plain dict (``torch.load(weights_only=True)``)::

    format "facetrust-uncertainty-head", version 1, method, config (the resolved head config),
    feature_map_shape, embedding_size, state_dict
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from facetrust.errors import ConfigError, InputError
from facetrust.io import atomic_path, write_text_atomic
from facetrust.models.uncertainty.pfe import PFEHead, mls_loss, pfe_uncertainty
from facetrust.models.uncertainty.scf import (
    SCFHead,
    cos_to_centre,
    initial_log_kappa,
    scf_g_loss,
    scf_loss,
    scf_uncertainty,
)

HEAD_NAME = "head.pt"
LOG_NAME = "fit_log.csv"
FORMAT = "facetrust-uncertainty-head"
VERSION = 1
HEAD_METHODS = ("pfe", "scf", "scf_g")

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

    A ``method`` key, when present, is accepted and checked (it must be one of HEAD_METHODS)."""
    config = dict(config or {})
    method = config.pop("method", None)
    if method is not None and method not in HEAD_METHODS:
        raise ConfigError(f"fit-head config 'method' is {method!r}; allowed: {', '.join(HEAD_METHODS)}")
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise ConfigError(
            f"unknown fit-head config key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: method, {', '.join(sorted(DEFAULT_CONFIG))}"
        )
    resolved = {**DEFAULT_CONFIG, **config}
    resolved["hidden"] = [resolved["hidden"]] if isinstance(resolved["hidden"], int) else list(resolved["hidden"])
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
    if resolved["device"] not in ("auto", "cpu", "cuda") and not str(resolved["device"]).startswith("cuda:"):
        raise ConfigError(f"fit-head config 'device' is {resolved['device']!r}; allowed: auto, cpu, cuda, cuda:N")
    if method is not None:
        resolved["method"] = method
    return resolved


def _check_method(method: str) -> str:
    if method not in HEAD_METHODS:
        raise ConfigError(f"uncertainty head method {method!r} unknown; allowed: {', '.join(HEAD_METHODS)}")
    return method


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_head(
    method: str,
    feature_map_shape: Sequence[int],
    embedding_size: int,
    config: Mapping[str, Any],
    init_log_kappa: float = 0.0,
) -> nn.Module:
    """An untrained head for ``method`` (initialised from torch's global RNG: seed it first)."""
    _check_method(method)
    if method == "pfe":
        return PFEHead(feature_map_shape, embedding_size, hidden=int(config["hidden"][0]))
    return SCFHead(feature_map_shape, hidden=config["hidden"], init_log_kappa=init_log_kappa)


# ----------------------------------------------------------------------------------------------
# frozen backbone -> cached features


def class_centres_from(extras: Mapping[str, Any], model_dir: str | os.PathLike) -> torch.Tensor:
    """The classifier weights (num_classes, D) from ``load_model``'s extras (the margin head's
    ``weight``), or an InputError naming the checkpoint."""
    head_state = extras.get("head") or {}
    weight = head_state.get("weight") if isinstance(head_state, Mapping) else None
    if weight is None:
        raise InputError(
            f"{extras.get('path', model_dir)}: checkpoint has no margin head 'weight' " f"(SCF needs the class centres)"
        )
    return weight.detach().float().cpu()


def extract_features(
    backbone: nn.Module,
    dataset,
    batch_size: int,
    cache_dir: str | os.PathLike,
    device: torch.device,
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the frozen backbone once over ``dataset`` (items ``(image, label)``), no grad.

    Returns ``(embeddings (N, D) float32, feature_maps (N, C, h, w) float32, labels (N,) int64)``;
    the two float arrays are ``np.memmap`` files in ``cache_dir`` (so the set never has to fit in
    memory). Order = dataset order.
    """
    from torch.utils.data import DataLoader

    cache_dir = Path(cache_dir)
    n = len(dataset)
    if n == 0:
        raise InputError("fit-head: the training set has no images")
    loader = DataLoader(dataset, batch_size=int(batch_size), shuffle=False, num_workers=int(num_workers))
    backbone = backbone.to(device).eval()
    embeddings = feature_maps = None
    labels = np.empty(n, dtype=np.int64)
    start = 0
    with torch.no_grad():
        for images, batch_labels in tqdm(loader, desc="fit-head: backbone features", unit="batch"):
            embedding, feature_map = backbone(images.to(device), return_feature_map=True)
            if embeddings is None:  # shapes are known after the first batch
                embeddings = np.lib.format.open_memmap(
                    cache_dir / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, embedding.shape[1])
                )
                feature_maps = np.lib.format.open_memmap(
                    cache_dir / "feature_maps.npy", mode="w+", dtype=np.float32, shape=(n, *feature_map.shape[1:])
                )
            stop = start + len(images)
            embeddings[start:stop] = embedding.float().cpu().numpy()
            feature_maps[start:stop] = feature_map.float().cpu().numpy()
            labels[start:stop] = batch_labels.numpy()
            start = stop
    return embeddings, feature_maps, labels


# ----------------------------------------------------------------------------------------------
# training


def identity_batches(
    labels: np.ndarray, batch_size: int, images_per_class: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Index batches made of groups of ``images_per_class`` images of one identity (PFE's sampler:
    every batch has genuine pairs). Classes are shuffled and chunked; chunks of one image are
    dropped (they make no pair). Deterministic given ``rng``."""
    groups: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        for begin in range(0, len(members), images_per_class):
            chunk = members[begin : begin + images_per_class]
            if len(chunk) >= 2:
                groups.append(chunk)
    order = rng.permutation(len(groups))
    batches, current, size = [], [], 0
    for g in order:
        current.append(groups[g])
        size += len(groups[g])
        if size >= batch_size:
            batches.append(np.concatenate(current))
            current, size = [], 0
    if current:
        batches.append(np.concatenate(current))
    return batches


def _shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _loss(method: str, head: nn.Module, embeddings, feature_maps, labels, centres, radius) -> torch.Tensor:
    out = head(feature_maps)
    if method == "pfe":
        return mls_loss(embeddings, out, labels)
    loss_fn = scf_loss if method == "scf" else scf_g_loss
    return loss_fn(embeddings, out, centres, labels, radius=radius)


def fit_head_on_features(
    method: str,
    embeddings,
    feature_maps,
    labels,
    class_centres,
    out_dir: str | os.PathLike,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Train a ``method`` head on precomputed backbone outputs; write ``out_dir/head.pt`` and
    ``out_dir/fit_log.csv`` (epoch, loss, lr, seconds). Returns the path of ``head.pt``.

    embeddings (N, D), feature_maps (N, C, h, w): arrays or tensors (memmaps are read per batch);
    labels (N,) ints; class_centres (num_classes, D) (unused by PFE, may be None). Same seed and
    data -> bit-identical head on CPU.
    """
    _check_method(method)
    config = resolve_config(config)
    if config.get("method", method) != method:
        raise ConfigError(f"fit-head: method {method!r} but config 'method' is {config['method']!r}")
    config["method"] = method
    out_dir = Path(out_dir)
    device = _device(config["device"])
    labels_np = np.asarray(labels, dtype=np.int64)
    n, embedding_size = int(embeddings.shape[0]), int(embeddings.shape[1])
    feature_map_shape = tuple(int(s) for s in feature_maps.shape[1:])
    if method != "pfe":
        if class_centres is None:
            raise InputError(f"fit-head {method}: needs the class centres (the margin head's weight)")
        centres = torch.as_tensor(np.asarray(class_centres), dtype=torch.float32).to(device)
        if centres.shape[1] != embedding_size or labels_np.max() >= centres.shape[0] or labels_np.min() < 0:
            raise InputError(
                f"fit-head {method}: class centres {tuple(centres.shape)} do not fit embeddings "
                f"of size {embedding_size} with labels in [{labels_np.min()}, {labels_np.max()}]"
            )
    else:
        centres = None

    def batch(index: np.ndarray):
        index = np.sort(index)  # memmaps read fastest in order; the loss is order-free
        return (
            torch.as_tensor(np.asarray(embeddings[index]), dtype=torch.float32).to(device),
            torch.as_tensor(np.asarray(feature_maps[index]), dtype=torch.float32).to(device),
            torch.as_tensor(labels_np[index]).to(device),
        )

    torch.manual_seed(int(config["seed"]))
    init_log_kappa = 0.0
    if method != "pfe":  # start kappa at the value that fits the mean cosine (see SCFHead)
        probe = np.arange(0, n, max(1, n // 4096))
        emb, _, lab = batch(probe)
        mean_cos = float(cos_to_centre(emb, centres, lab).mean())
        init_log_kappa = initial_log_kappa(method, mean_cos, embedding_size, float(config["radius"]))
    head = build_head(method, feature_map_shape, embedding_size, config, init_log_kappa).to(device)
    if config["optimizer"] == "adam":
        optimizer = torch.optim.Adam(head.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    else:
        optimizer = torch.optim.SGD(
            head.parameters(), lr=config["lr"], momentum=0.9, weight_decay=config["weight_decay"]
        )
    step = int(config["lr_step_epochs"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step, config["lr_gamma"]) if step > 0 else None

    log_rows = []
    for epoch in range(int(config["epochs"])):
        rng = np.random.default_rng([int(config["seed"]), epoch])
        if method == "pfe":
            batches = identity_batches(labels_np, int(config["batch_size"]), int(config["images_per_class"]), rng)
            if not batches:
                raise InputError("fit-head pfe: no identity has two images; PFE needs genuine pairs")
        else:
            batches = _shuffled_batches(n, int(config["batch_size"]), rng)
        head.train()
        started, total, count = time.perf_counter(), 0.0, 0
        lr_now = optimizer.param_groups[0]["lr"]
        progress = tqdm(batches, desc=f"fit-head {method} epoch {epoch + 1}/{config['epochs']}", unit="batch")
        for index in progress:
            if len(index) < 2:  # BatchNorm needs two samples
                continue
            emb, fmap, lab = batch(index)
            loss = _loss(method, head, emb, fmap, lab, centres, float(config["radius"]))
            if not torch.isfinite(loss):
                raise RuntimeError(f"fit-head {method}: non-finite loss at epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            count += len(index)
            progress.set_postfix(loss=f"{total / count:.4f}")
        if scheduler is not None:
            scheduler.step()
        log_rows.append(
            {
                "epoch": epoch + 1,
                "loss": total / max(count, 1),
                "lr": lr_now,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        _write_log(out_dir / LOG_NAME, log_rows)

    payload = {
        "format": FORMAT,
        "version": VERSION,
        "method": method,
        "config": config,
        "feature_map_shape": list(feature_map_shape),
        "embedding_size": embedding_size,
        "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()},
    }
    path = out_dir / HEAD_NAME
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _write_log(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def load_frozen_backbone(model_dir: str | os.PathLike) -> tuple[nn.Module, tuple[int, int], torch.Tensor]:
    """``(backbone in eval mode, input_size (H, W), class centres (num_classes, D))`` of a trained model."""
    from facetrust.train.checkpoint import load_model

    backbone, train_config, extras = load_model(model_dir)
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    return backbone, tuple(train_config["input_size"]), class_centres_from(extras, model_dir)


def fit_head(
    method: str,
    model_dir: str | os.PathLike,
    rec_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """The fit-head stage: the frozen backbone of ``model_dir`` (``facetrust train`` output) run over
    the InsightFace RecordIO set in ``rec_dir`` (``train.rec``/``.idx``/``property``), then a
    ``method`` head trained on its outputs. Writes ``out_dir/head.pt`` and ``out_dir/fit_log.csv``;
    returns the path of ``head.pt``.
    """
    from facetrust.train.dataset import RecordDataset

    _check_method(method)
    resolved = resolve_config(config)
    backbone, input_size, centres = load_frozen_backbone(model_dir)
    dataset = RecordDataset(rec_dir, input_size, flip=False, seed=int(resolved["seed"]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(tempfile.mkdtemp(prefix=".features.", dir=out_dir))
    try:
        embeddings, feature_maps, labels = extract_features(
            backbone,
            dataset,
            int(resolved["extract_batch_size"]),
            cache_dir,
            _device(resolved["device"]),
            int(resolved["num_workers"]),
        )
        return fit_head_on_features(method, embeddings, feature_maps, labels, centres, out_dir, resolved)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# loading and prediction (embed stage)


def load_head(head_dir: str | os.PathLike, map_location="cpu") -> nn.Module:
    """The head saved in ``head_dir/head.pt`` (or that file), in eval mode, with attributes
    ``method`` (str) and ``fit_config`` (dict). InputError naming the file when it is missing,
    not loadable with ``weights_only=True`` or not a head file."""
    path = Path(head_dir)
    path = path if path.is_file() else path / HEAD_NAME
    if not path.is_file():
        raise InputError(f"{path}: no uncertainty head (expected {HEAD_NAME} written by 'facetrust fit-head')")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        raise InputError(f"{path}: not a loadable head file ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a facetrust uncertainty head (missing format {FORMAT!r})")
    if payload.get("version") != VERSION or payload.get("method") not in HEAD_METHODS:
        raise InputError(
            f"{path}: head version {payload.get('version')!r} / method {payload.get('method')!r} "
            f"not readable (version {VERSION}, methods {', '.join(HEAD_METHODS)})"
        )
    config = dict(payload["config"])
    head = build_head(payload["method"], payload["feature_map_shape"], int(payload["embedding_size"]), config)
    try:
        head.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path}: head weights do not fit a {payload['method']!r} head: {exc}") from None
    head.method = payload["method"]
    head.fit_config = config
    return head.eval()


def predict_uncertainty(
    head: nn.Module, method: str, embeddings, feature_maps, batch_size: int = 1024
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-image uncertainty (float32 (N,), larger = less certain) and the head's parameters.

    SCF / SCF-G: uncertainty = 1/kappa, extra ``{"kappa": (N,)}``; PFE: uncertainty = harmonic
    mean of sigma^2 over dimensions, extra ``{"sigma_sq": (N, D)}``. ``embeddings`` is accepted
    for symmetry with the baselines (the heads read the feature map only). Batched, no grad, the
    head in eval mode (BatchNorm running statistics)."""
    _check_method(method)
    if len(feature_maps) != len(embeddings):
        raise InputError(f"predict_uncertainty: {len(embeddings)} embeddings but {len(feature_maps)} feature maps")
    head.eval()
    device = next(head.parameters()).device
    outputs = []
    with torch.no_grad():
        for begin in range(0, len(feature_maps), batch_size):
            chunk = torch.as_tensor(np.asarray(feature_maps[begin : begin + batch_size]), dtype=torch.float32)
            outputs.append(head(chunk.to(device)).cpu())
    out = torch.cat(outputs) if outputs else torch.empty(0)
    if method == "pfe":
        return pfe_uncertainty(out).numpy().astype(np.float32), {"sigma_sq": out.exp().numpy().astype(np.float32)}
    return (scf_uncertainty(out).numpy().astype(np.float32), {"kappa": out.exp().numpy().astype(np.float32)})
