"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint (``<out_dir>/checkpoint.pt``) is a dict of plain values only (tensors, state dicts,
ints, floats, strings, lists), so loading it never runs pickled code:

    format            "facetrust-train-checkpoint"
    version           1
    backbone, head    state dicts (InsightFace key layout for iResNets)
    scale_head        state dict of ScaleFace's scale predictor, or None
    optimizer         SGD state dict;  scheduler {"step": n};  scaler (AMP) state dict or {}
    epoch             completed epochs;  step  optimisation steps done
    num_classes, feature_map_shape, rng {"torch": ByteTensor, "cuda": [ByteTensor, ...]}
    config            TrainConfig.to_dict()
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from facetrust.errors import InputError
from facetrust.io import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
FORMAT = "facetrust-train-checkpoint"
VERSION = 1

_REQUIRED = ("backbone", "config", "epoch", "step", "num_classes")


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (plus format/version) to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    return path


def checkpoint_path(model_dir: str | os.PathLike) -> Path:
    """``model_dir/checkpoint.pt``, or ``model_dir`` itself when it is a file."""
    model_dir = Path(model_dir)
    return model_dir if model_dir.is_file() else model_dir / CHECKPOINT_NAME


def load_checkpoint(model_dir: str | os.PathLike, map_location="cpu") -> dict:
    """The checkpoint dict of ``model_dir`` (or a checkpoint file).

    Raises InputError naming the file when it is missing, not loadable with ``weights_only=True``
    (e.g. arbitrary pickled objects), or not a facetrust training checkpoint."""
    path = checkpoint_path(model_dir)
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint (expected {CHECKPOINT_NAME} written by 'facetrust train')")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise InputError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a facetrust training checkpoint (missing format {FORMAT!r})")
    missing = [key for key in _REQUIRED if key not in payload]
    if missing:
        raise InputError(f"{path}: checkpoint lacks key(s) {', '.join(missing)}")
    if payload.get("version") != VERSION:
        raise InputError(f"{path}: checkpoint version {payload.get('version')!r}, this facetrust reads {VERSION}")
    return payload


def build_backbone_from_config(config: dict) -> nn.Module:
    """The (untrained) backbone that a TrainConfig dict describes."""
    from facetrust.models import build_backbone

    return build_backbone(
        config["backbone"],
        embedding_size=int(config["embedding_size"]),
        input_size=tuple(config["input_size"]),
        **dict(config.get("backbone_options") or {}),
    )


def load_model(model_dir: str | os.PathLike, map_location="cpu") -> tuple[nn.Module, dict, dict]:
    """``(backbone in eval mode, config dict, extras)`` from a training output directory.

    ``extras``: ``head`` and ``scale_head`` state dicts (``scale_head`` None unless ScaleFace),
    ``num_classes``, ``feature_map_shape``, ``epoch``, ``step``, ``path``.  Rebuild the heads with
    :func:`build_heads` when the class centres or the scale predictor are needed."""
    payload = load_checkpoint(model_dir, map_location)
    path = checkpoint_path(model_dir)
    config = dict(payload["config"])
    backbone = build_backbone_from_config(config)
    try:
        backbone.load_state_dict(payload["backbone"], strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path}: backbone weights do not fit {config['backbone']!r}: {exc}") from None
    backbone.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
    extras = {
        "head": payload.get("head"),
        "scale_head": payload.get("scale_head"),
        "num_classes": int(payload["num_classes"]),
        "feature_map_shape": tuple(payload.get("feature_map_shape") or backbone.feature_map_shape),
        "epoch": int(payload["epoch"]),
        "step": int(payload["step"]),
        "path": str(path),
    }
    return backbone, config, extras


def build_heads(config: dict, extras: dict) -> tuple[nn.Module, nn.Module | None]:
    """``(margin head, scale head or None)`` rebuilt from a loaded model and its weights, in eval mode."""
    from facetrust.train.trainer import build_heads as _build

    head, scale_head = _build(config, extras["num_classes"], extras["feature_map_shape"])
    head.load_state_dict(extras["head"], strict=True)
    head.eval()
    if scale_head is not None:
        scale_head.load_state_dict(extras["scale_head"], strict=True)
        scale_head.eval()
    return head, scale_head
