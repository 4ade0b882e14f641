"""Saved models: training checkpoints and fitted uncertainty heads, written and read in one place.

Every stage that *uses* a trained model (embed, fit-head, evaluate with a model score, explain)
loads it from here, so those stages depend on :mod:`facetrust.models`, never on
:mod:`facetrust.train`.  Files are plain dicts of tensors and JSON-like values, read with
``torch.load(weights_only=True)`` so loading never runs pickled code.

Training checkpoint (``<model_dir>/checkpoint.pt``)::

    format            "facetrust-train-checkpoint"
    version           1
    backbone, head    state dicts (InsightFace key layout for iResNets); ``head`` is the margin head
                      (under Partial FC the processes' shards gathered: the same keys and shapes)
    scale_head        state dict of ScaleFace's scale predictor, or None
    optimizer         SGD state dict;  scheduler {"step": n};  scaler (AMP) state dict or {}
    epoch             completed epochs;  step  optimisation steps done
    num_classes, feature_map_shape, rng {"torch": ByteTensor, "cuda": [ByteTensor, ...]}
    config            TrainConfig.to_dict()

Pretrained model (``<model_dir>/pretrained.json``, written by ``facetrust import-model``): a
model trained elsewhere, by reference (docs/FORMATS.md "Pretrained models")::

    format "facetrust-pretrained", version 1, file_format "arcface_torch" | "onnx",
    path (as configured), sha256, config (backbone, backbone_options, embedding_size, input_size),
    input {channels, mean, std}, feature_map (whether the model gives its feature map)

``load_model`` also takes such a file directly: an arcface_torch ``backbone.pth`` (any iResNet
depth, inferred from the keys; strict load) or an ``.onnx`` file.

Fitted uncertainty head (``<head_dir>/head.pt``)::

    format "facetrust-uncertainty-head", version 1, method, config (the resolved fit config),
    feature_map_shape, embedding_size, state_dict

xCos checkpoint (``<xcos_dir>/xcos.pt``, written by ``facetrust train-xcos``)::

    format "facetrust-xcos-checkpoint", version 1
    backbone          state dict of the backbone the branch sits on (fine-tuned, or frozen)
    branch            state dict of the xCos branch: ``grid_conv.*`` and ``attention.*``
    head              state dict of the margin head on the flattened grid feature
    config            the resolved xCos config: the backbone's (backbone, backbone_options,
                      embedding_size, input_size) plus head, grid_channels, temperature,
                      freeze_backbone, init_from, standard and the training settings
    num_classes, feature_map_shape, grid_shape, epoch, step

(The key ``head`` of a checkpoint is the margin head; it keeps that name so that every checkpoint
written so far still loads.)
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from facetrust.errors import ConfigError, InputError
from facetrust.io import atomic_path
from facetrust.models.registry import check_stored, inference_layout
from facetrust.models.weights import weights_only_load

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
CHECKPOINT_FORMAT = "facetrust-train-checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED = ("backbone", "config", "epoch", "step", "num_classes")

PRETRAINED_NAME = "pretrained.json"
PRETRAINED_FORMAT = "facetrust-pretrained"
PRETRAINED_VERSION = 1

UNCERTAINTY_HEAD_NAME = "head.pt"
UNCERTAINTY_HEAD_FORMAT = "facetrust-uncertainty-head"
UNCERTAINTY_HEAD_VERSION = 1

XCOS_CHECKPOINT_NAME = "xcos.pt"
XCOS_CHECKPOINT_FORMAT = "facetrust-xcos-checkpoint"
XCOS_CHECKPOINT_VERSION = 1
_XCOS_REQUIRED = ("backbone", "branch", "head", "config", "num_classes", "grid_shape", "epoch", "step")

# Margin-head options that configure ScaleFace's scale predictor rather than the margin itself.
SCALE_PREDICTOR_OPTIONS = ("s_max", "hidden", "activation")


# ------------------------------------------------------------------------------------ files


def _save(path: Path, payload: dict) -> Path:
    # Serialised in memory first: torch's zip archive names its folder after the file it writes
    # to, and the temporary file's random name would make every save differ in bytes.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def _load(path: Path, what: str, writer: str, map_location, missing: str | None = None) -> dict:
    """``torch.load(weights_only=True)`` of ``path``; InputError naming the file otherwise.

    ``what`` names the kind of file (``checkpoint``, ``head file``).  torch's own message for a
    refused payload advises loading with ``weights_only=False``; that is never the right advice
    for a file of unknown origin, so only the first line of its reason is relayed."""
    if not path.exists():
        raise InputError(f"{path}: no {missing or what} (expected {path.name} written by '{writer}')")
    from facetrust.input_files import check_regular

    check_regular(path, what)  # a FIFO would block torch.load, a device would be read without end
    payload = weights_only_load(path, what, map_location)
    if not isinstance(payload, dict):
        raise InputError(f"{path}: not a facetrust {what} (a {type(payload).__name__}, not a dict)")
    return payload


# ------------------------------------------------------------------------- training checkpoints


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (plus format/version) to ``path`` atomically; returns the path."""
    return _save(Path(path), {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload})


def checkpoint_path(model_dir: str | os.PathLike) -> Path:
    """``model_dir/checkpoint.pt``, or ``model_dir`` itself when it is a file."""
    model_dir = Path(model_dir)
    return model_dir if model_dir.is_file() else model_dir / CHECKPOINT_NAME


def load_checkpoint(model_dir: str | os.PathLike, map_location="cpu") -> dict:
    """The checkpoint dict of ``model_dir`` (or a checkpoint file).

    Raises InputError naming the file when it is missing, not loadable with ``weights_only=True``
    (e.g. arbitrary pickled objects), or not a facetrust training checkpoint."""
    path = checkpoint_path(model_dir)
    return _checked_checkpoint(_load(path, "checkpoint", "facetrust train", map_location), path)


def _check_payload(payload: dict, path: Path, what: str, kind: str, fmt: str, required, version: int) -> dict:
    """``payload`` when it has format ``fmt``, the ``required`` keys and ``version``; InputError naming
    the file otherwise (``what``: "training checkpoint"; ``kind``: how the messages name the file)."""
    if payload.get("format") != fmt:
        raise InputError(f"{path}: not a facetrust {what} (missing format {fmt!r})")
    missing = [key for key in required if key not in payload]
    if missing:
        raise InputError(f"{path}: {kind} lacks key(s) {', '.join(missing)}")
    if payload.get("version") != version:
        raise InputError(f"{path}: {kind} version {payload.get('version')!r}, this facetrust reads {version}")
    return payload


def _checked_checkpoint(payload: dict, path: Path) -> dict:
    return _check_payload(payload, path, "training checkpoint", "checkpoint", CHECKPOINT_FORMAT, _REQUIRED,
                          CHECKPOINT_VERSION)


def build_backbone_from_config(config: Mapping[str, Any]) -> nn.Module:
    """The (untrained) backbone that a TrainConfig dict describes."""
    from facetrust.models.registry import build_backbone

    return build_backbone(
        config["backbone"],
        embedding_size=int(config["embedding_size"]),
        input_size=tuple(config["input_size"]),
        **dict(config.get("backbone_options") or {}),
    )


def build_margin(config: Mapping[str, Any], num_classes: int, feature_map_shape) -> tuple[nn.Module, nn.Module | None]:
    """``(margin head, ScaleFace scale predictor or None)``, untrained, for a TrainConfig dict.

    ``config["head"] = {kind, **options}``.  For ``kind: scaleface`` the options ``s_max``,
    ``hidden``, ``activation`` go to ``ScaleHead(feature_map_shape, ...)``, the rest to the margin.
    The margin's initial weights come from ``seed`` (the config's, unless the head options set one)."""
    from facetrust.models.margins import ScaleHead, build_head

    options = dict(config["head"])
    kind = options.pop("kind")
    options.setdefault("seed", int(config.get("seed", 0)))
    scale_predictor = None
    if kind == "scaleface":
        scale_options = {key: options.pop(key) for key in SCALE_PREDICTOR_OPTIONS if key in options}
        if "hidden" in scale_options:  # its size checked before it is allocated (head.hidden in params)
            from math import prod

            from facetrust.models.uncertainty.scf import checked_head_sizes

            checked_head_sizes("ScaleFace scale predictor", prod(int(v) for v in feature_map_shape),
                               [scale_options["hidden"]], 1)
        scale_predictor = ScaleHead(tuple(feature_map_shape), **scale_options)
    else:
        stray = sorted(set(SCALE_PREDICTOR_OPTIONS) & set(options))
        if stray:
            raise ConfigError(f"head option(s) {', '.join(stray)} only apply to kind 'scaleface', not {kind!r}")
    margin = build_head(kind, int(config["embedding_size"]), int(num_classes), **options)
    return margin, scale_predictor


def planned_backbone(path, config: Mapping[str, Any], state: Mapping, what: str = "checkpoint") -> None:
    """Check, before any tensor is allocated, that the backbone ``config`` describes is within the
    limits of :mod:`facetrust.models.registry` (width, blocks, input and embedding size, total
    values) and that ``state`` has exactly its keys and shapes; InputError naming the file otherwise."""
    from facetrust.models.registry import backbone_plan

    options = config.get("backbone_options") or {}
    if not isinstance(options, Mapping):
        raise InputError(f"{path}: {what} config 'backbone_options' is a {type(options).__name__}, not a mapping")
    if not isinstance(config.get("backbone", ""), str):
        raise InputError(f"{path}: {what} config 'backbone' is a {type(config['backbone']).__name__}, not a name")
    try:
        size = config["input_size"]
        shapes = backbone_plan(config["backbone"], embedding_size=config["embedding_size"],
                               input_size=tuple(size) if isinstance(size, (list, tuple)) else size, **dict(options))
    except KeyError as exc:
        raise InputError(f"{path}: {what} config lacks key {exc}") from None
    except ConfigError as exc:
        raise InputError(f"{path}: {what} config: {exc}") from None
    missing = [key for key in shapes if key not in state]
    unexpected = [key for key in state if key not in shapes]
    wrong = [(key, tuple(state[key].shape), shape) for key, shape in shapes.items()
             if key in state and isinstance(state[key], torch.Tensor) and tuple(state[key].shape) != shape]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {[str(k)[:60] for k in unexpected[:3]]}"
                  if unexpected else f"{wrong[0][0]}: file {wrong[0][1]}, model {wrong[0][2]}")
        raise InputError(f"{path}: backbone weights do not fit {str(config['backbone'])[:60]!r} as its {what} config "
                         f"describes it ({detail})")


def _check_finite(path: Path, part: str, state) -> None:
    """Refuse a state dict holding NaN or infinite values (a diverged or damaged run), naming the tensor."""
    if not isinstance(state, Mapping):
        raise InputError(f"{path}: checkpoint key {part!r} is a {type(state).__name__}, not a state dict")
    check_stored(path, part, state)  # before isfinite, which would allocate a broadcast view's size
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise InputError(f"{path}: {part} tensor {key!r} holds NaN or infinite values (a diverged run?)")


def load_model(model_dir: str | os.PathLike, map_location="cpu", settings: Mapping[str, Any] | None = None
               ) -> tuple[nn.Module, dict, dict]:
    """``(backbone in eval mode, config dict, extras)`` of a model.

    ``model_dir``: a training output directory (``checkpoint.pt``), a pretrained model's directory
    (``pretrained.json``), a checkpoint file, or a model trained elsewhere given as its file: an
    arcface_torch ``backbone.pth`` or an ``.onnx`` file (``settings``: its ``input_size`` and
    ``input`` convention, as under ``models.<name>`` in params).
    ``extras``: ``head`` (margin) and ``scale_head`` state dicts (``scale_head`` None unless
    ScaleFace; both None for a pretrained model), ``num_classes``, ``feature_map_shape``, ``epoch``,
    ``step``, ``path``, ``source`` (``train`` or ``pretrained``).  Rebuild the margin and scale
    predictor with :func:`load_margin` when the class centres or scales are needed."""
    path = Path(model_dir)
    if not path.exists() and path.suffix.lower() in (".pth", ".pt", ".onnx"):
        raise InputError(f"{path}: no such model file")
    if path.is_dir() and not (path / CHECKPOINT_NAME).exists() and (path / PRETRAINED_NAME).exists():
        return load_pretrained(path, map_location)
    if path.is_file() and path.suffix.lower() == ".onnx":
        return _load_pretrained_file(path, "onnx", dict(settings or {}), map_location)
    payload = _load(checkpoint_path(path), "checkpoint", "facetrust train", map_location)
    if path.is_file() and "format" not in payload:  # a plain state dict: trained elsewhere
        return _load_pretrained_file(path, "arcface_torch", dict(settings or {}), map_location, payload)
    path = checkpoint_path(model_dir)
    return _model_from_checkpoint(_checked_checkpoint(payload, path), path, map_location)


def _check_declared_sizes(path: Path, config: dict, payload: dict) -> None:
    """Refuse sizes the checkpoint declares but its weights cannot hold, before a model is built
    (building allocates them): an ``embedding_size`` or ``num_classes`` above the number of values
    the checkpoint stores (the last layer alone holds ``embedding_size`` of them, the margin head
    ``num_classes`` x ``embedding_size``), an ``input_size`` above the pixels an image may have."""
    from facetrust.data.images import MAX_IMAGE_PIXELS

    stored = sum(value.numel() for part in ("backbone", "head") if isinstance(payload.get(part), Mapping)
                 for value in payload[part].values() if isinstance(value, torch.Tensor))
    for key, value in (("embedding_size", config.get("embedding_size")), ("num_classes", payload.get("num_classes"))):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= max(stored, 1):
            raise InputError(f"{path}: {key} {str(value)[:40]} is not a positive integer the checkpoint's {stored} "
                             "stored values can hold")
    size = config.get("input_size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(n, int) and n >= 1 for n in size)
            and size[0] * size[1] <= MAX_IMAGE_PIXELS):
        raise InputError(f"{path}: input_size {str(size)[:60]} is not two positive integers of at most "
                         f"{MAX_IMAGE_PIXELS} pixels")


def _model_from_checkpoint(payload: dict, path: Path, map_location) -> tuple[nn.Module, dict, dict]:
    config = payload["config"]
    if not isinstance(config, Mapping):
        raise InputError(f"{path}: checkpoint key 'config' is a {type(config).__name__}, not a mapping")
    config = dict(config)
    _check_finite(path, "backbone", payload["backbone"])  # a state dict of real (not broadcast), finite tensors
    for part in ("head", "scale_head"):  # the margin's class centres: num_classes x embedding_size values
        if isinstance(payload.get(part), Mapping):
            check_stored(path, part, payload[part])
    _check_declared_sizes(path, config, payload)
    planned_backbone(path, config, payload["backbone"])  # the limits and shapes, before allocating
    try:
        backbone = build_backbone_from_config(config)
    except KeyError as exc:
        raise InputError(f"{path}: checkpoint config lacks key {exc}") from None
    try:
        backbone.load_state_dict(payload["backbone"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: backbone weights do not fit {config['backbone']!r}: {exc}") from None
    backbone.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
    inference_layout(backbone)
    extras = {
        "head": payload.get("head"),
        "scale_head": payload.get("scale_head"),
        "num_classes": int(payload["num_classes"]),
        "feature_map_shape": tuple(payload.get("feature_map_shape") or backbone.feature_map_shape),
        "epoch": int(payload["epoch"]),
        "step": int(payload["step"]),
        "path": str(path),
        "source": "train",
    }
    return backbone, config, extras


# --------------------------------------------------------------------------- pretrained models


def _load_pretrained_file(path: Path, file_format: str, settings: dict, map_location,
                          payload: dict | None = None) -> tuple[nn.Module, dict, dict]:
    """A model trained elsewhere from its file; see :mod:`facetrust.models.pretrained`."""
    from facetrust.models import pretrained

    convention = pretrained.input_convention(settings.get("input"))
    if file_format == "onnx":
        from facetrust.models.onnx_model import OnnxBackbone

        backbone = OnnxBackbone(path, convention)
        size = [int(v) for v in settings.get("input_size") or backbone.input_size]
        if tuple(size) != tuple(backbone.input_size):
            raise ConfigError(f"{path}: input_size {size} configured, the ONNX input is {list(backbone.input_size)}")
        if settings.get("embedding_size") not in (None, backbone.embedding_size):
            raise ConfigError(f"{path}: embedding_size {settings['embedding_size']} configured, the ONNX output "
                              f"has {backbone.embedding_size}")
        config = {"backbone": "onnx", "backbone_options": {}, "embedding_size": int(backbone.embedding_size),
                  "input_size": size}
    else:
        state = pretrained.state_from_payload(payload, path) if payload is not None else pretrained.read_state_dict(path)
        backbone, config = pretrained.load_arcface_torch(path, settings, state)
        if convention != pretrained.OUR_INPUT:
            backbone = pretrained.InputAdapter(backbone, convention).eval()
        backbone.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
        inference_layout(backbone)
    config.update(source="pretrained", file_format=file_format, input=convention)
    extras = {"head": None, "scale_head": None, "num_classes": 0, "epoch": 0, "step": 0, "path": str(path),
              "feature_map_shape": backbone.feature_map_shape, "source": "pretrained"}
    return backbone, config, extras


def import_pretrained(path: str | os.PathLike, out_dir: str | os.PathLike,
                      settings: Mapping[str, Any] | None = None) -> dict:
    """Check that ``path`` (arcface_torch ``.pth`` or ``.onnx``) loads with ``settings`` and write
    ``out_dir/pretrained.json`` describing it (with its sha256); returns the descriptor."""
    import json

    from facetrust.models.pretrained import file_format, sha256_of

    path, settings = Path(path), dict(settings or {})
    kind = file_format(path)
    if not path.is_file():
        raise InputError(f"{path}: no such pretrained model file")
    backbone, config, _ = _load_pretrained_file(path, kind, settings, "cpu")
    descriptor = {
        "format": PRETRAINED_FORMAT, "version": PRETRAINED_VERSION, "file_format": kind, "path": str(path),
        "sha256": sha256_of(path), "input": config["input"], "feature_map": backbone.feature_map_shape is not None,
        "config": {key: config[key] for key in ("backbone", "backbone_options", "embedding_size", "input_size")},
    }
    with atomic_path(Path(out_dir) / PRETRAINED_NAME) as tmp:
        tmp.write_text(json.dumps(descriptor, indent=2, sort_keys=True) + "\n")
    return descriptor


def load_pretrained(model_dir: str | os.PathLike, map_location="cpu") -> tuple[nn.Module, dict, dict]:
    """The model that ``model_dir/pretrained.json`` describes; InputError when the file it names
    is missing or no longer has the recorded sha256."""
    from facetrust.io import read_json
    from facetrust.models.pretrained import sha256_of

    descriptor_path = Path(model_dir) / PRETRAINED_NAME
    descriptor = read_json(descriptor_path, "pretrained model descriptor")
    if not isinstance(descriptor, dict) or descriptor.get("format") != PRETRAINED_FORMAT \
            or descriptor.get("version") != PRETRAINED_VERSION:
        raise InputError(f"{descriptor_path}: not a facetrust pretrained-model descriptor "
                         f"(format {PRETRAINED_FORMAT!r}, version {PRETRAINED_VERSION})")
    path = Path(descriptor["path"])
    if not path.is_file():
        raise InputError(f"{descriptor_path}: the model file {path} is missing")
    if sha256_of(path) != descriptor["sha256"]:
        raise InputError(f"{descriptor_path}: {path} changed since it was imported (sha256 differs); "
                         f"run `facetrust import-model` again")
    settings = {"input": descriptor["input"], **descriptor["config"]}
    return _load_pretrained_file(path, descriptor["file_format"], settings, map_location)


def load_margin(config: Mapping[str, Any], extras: Mapping[str, Any]) -> tuple[nn.Module, nn.Module | None]:
    """``(margin head, scale predictor or None)`` of a loaded model with its trained weights, in eval mode."""
    if extras.get("head") is None:
        raise InputError(f"{extras.get('path', 'model')}: a pretrained backbone has no margin head: what needs the "
                         f"class centres or ScaleFace's scale (uncertainty entropy and scale, SCF fitting, "
                         f"model inversion) cannot run on it; emb_norm, PFE and the maps can")
    margin, scale_predictor = build_margin(config, extras["num_classes"], extras["feature_map_shape"])
    margin.load_state_dict(extras["head"], strict=True)
    margin.eval()
    if scale_predictor is not None:
        scale_predictor.load_state_dict(extras["scale_head"], strict=True)
        scale_predictor.eval()
    return margin, scale_predictor


def class_centres(extras: Mapping[str, Any]) -> torch.Tensor:
    """The classifier weights (num_classes, D) of a loaded model (the margin head's ``weight``),
    or an InputError naming the checkpoint."""
    state = extras.get("head") or {}
    weight = state.get("weight") if isinstance(state, Mapping) else None
    if weight is None:
        raise InputError(f"{extras.get('path', 'checkpoint')}: checkpoint has no margin head 'weight' "
                         f"(the class centres)")
    return weight.detach().float().cpu()


def load_frozen_backbone(model_dir: str | os.PathLike) -> tuple[nn.Module, tuple[int, int], torch.Tensor | None]:
    """``(backbone in eval mode without gradients, input_size (H, W), class centres)`` of a model;
    the centres are None for a pretrained backbone (it comes without its classifier)."""
    backbone, config, extras = load_model(model_dir)
    backbone.requires_grad_(False)
    centres = class_centres(extras) if extras.get("source") != "pretrained" else None
    return backbone, tuple(config["input_size"]), centres


# ---------------------------------------------------------------------- fitted uncertainty heads


def uncertainty_head_path(head_dir: str | os.PathLike) -> Path:
    """``head_dir/head.pt``, or ``head_dir`` itself when it is a file."""
    path = Path(head_dir)
    return path if path.is_file() else path / UNCERTAINTY_HEAD_NAME


def save_uncertainty_head(out_dir: str | os.PathLike, method: str, head: nn.Module, config: Mapping[str, Any],
                          feature_map_shape, embedding_size: int) -> Path:
    """Write ``out_dir/head.pt`` atomically; returns its path."""
    payload = {
        "format": UNCERTAINTY_HEAD_FORMAT,
        "version": UNCERTAINTY_HEAD_VERSION,
        "method": method,
        "config": dict(config),
        "feature_map_shape": [int(s) for s in feature_map_shape],
        "embedding_size": int(embedding_size),
        "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()},
    }
    return _save(Path(out_dir) / UNCERTAINTY_HEAD_NAME, payload)


def load_uncertainty_head(head_dir: str | os.PathLike, map_location="cpu") -> nn.Module:
    """The head saved in ``head_dir/head.pt`` (or that file), in eval mode, with attributes
    ``method`` (str) and ``fit_config`` (dict).  InputError naming the file when it is missing,
    not loadable with ``weights_only=True`` or not a head file."""
    from facetrust.models.uncertainty.methods import FITTED_METHODS

    path = uncertainty_head_path(head_dir)
    payload = _load(path, "head file", "facetrust fit-head", map_location, missing="uncertainty head")
    if payload.get("format") != UNCERTAINTY_HEAD_FORMAT:
        raise InputError(f"{path}: not a facetrust uncertainty head (missing format {UNCERTAINTY_HEAD_FORMAT!r})")
    method = payload.get("method")
    if payload.get("version") != UNCERTAINTY_HEAD_VERSION or method not in FITTED_METHODS:
        raise InputError(
            f"{path}: head version {payload.get('version')!r} / method {method!r} not readable "
            f"(version {UNCERTAINTY_HEAD_VERSION}, methods {', '.join(FITTED_METHODS.names())})"
        )
    config = dict(payload["config"])
    state = payload.get("state_dict")
    if not isinstance(state, Mapping):
        raise InputError(f"{path}: head file key 'state_dict' is a {type(state).__name__}, not a state dict")
    check_stored(path, "head", state)
    try:
        head = FITTED_METHODS.get(method).build(payload["feature_map_shape"], int(payload["embedding_size"]), config)
    except (ConfigError, KeyError, TypeError, ValueError) as exc:  # sizes beyond the limits, a broken config
        raise InputError(f"{path}: head config: {type(exc).__name__ + ': ' if not isinstance(exc, ConfigError) else ''}"
                         f"{' '.join(str(exc).split())[:200]}") from None
    try:
        head.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path}: head weights do not fit a {method!r} head: {exc}") from None
    head.method = method
    head.fit_config = config
    return head.eval()


# ---------------------------------------------------------------------------- xCos checkpoints


def xcos_checkpoint_path(model_dir: str | os.PathLike) -> Path:
    """``model_dir/xcos.pt``, or ``model_dir`` itself when it is a file."""
    path = Path(model_dir)
    return path if path.is_file() else path / XCOS_CHECKPOINT_NAME


def is_xcos_model(model_dir: str | os.PathLike) -> bool:
    """Whether ``model_dir`` holds an xCos checkpoint (rather than a training checkpoint)."""
    path = Path(model_dir)
    return path.name == XCOS_CHECKPOINT_NAME if path.is_file() else (path / XCOS_CHECKPOINT_NAME).is_file()


def save_xcos_checkpoint(model_dir: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``model_dir/xcos.pt`` (the layout in the module docstring) atomically; returns its path."""
    missing = [key for key in _XCOS_REQUIRED if key not in payload]
    if missing:
        raise InputError(f"xcos checkpoint: payload lacks key(s) {', '.join(missing)}")
    return _save(Path(model_dir) / XCOS_CHECKPOINT_NAME,
                 {"format": XCOS_CHECKPOINT_FORMAT, "version": XCOS_CHECKPOINT_VERSION, **payload})


def load_xcos_checkpoint(model_dir: str | os.PathLike, map_location="cpu") -> tuple[nn.Module, dict, dict]:
    """``(backbone with its weights, in eval mode; config dict; extras)`` of an xCos checkpoint.

    ``extras``: ``branch`` and ``head`` state dicts, ``num_classes``, ``feature_map_shape``,
    ``grid_shape``, ``epoch``, ``step``, ``path``.  The branch module itself is
    :class:`facetrust.models.xcos.XCosModel` (built by :func:`facetrust.models.xcos.load_xcos`).
    InputError naming the file when it is missing, refused by the weights-only loader, not an xCos
    checkpoint, or its backbone does not fit its config."""
    path = xcos_checkpoint_path(model_dir)
    payload = _load(path, "xCos checkpoint", "facetrust train-xcos", map_location)
    _check_payload(payload, path, "xCos checkpoint", "xCos checkpoint", XCOS_CHECKPOINT_FORMAT, _XCOS_REQUIRED,
                   XCOS_CHECKPOINT_VERSION)
    if not isinstance(payload["config"], Mapping):
        raise InputError(f"{path}: xCos checkpoint key 'config' is a {type(payload['config']).__name__}, "
                         "not a mapping")
    config = dict(payload["config"])
    _check_finite(path, "backbone", payload["backbone"])
    planned_backbone(path, config, payload["backbone"], what="xCos checkpoint")  # before allocating
    try:
        backbone = build_backbone_from_config(config)
        backbone.load_state_dict(payload["backbone"], strict=True)
    except KeyError as exc:
        raise InputError(f"{path}: xCos checkpoint config lacks key {exc}") from None
    except RuntimeError as exc:
        raise InputError(f"{path}: backbone weights do not fit {config['backbone']!r}: {exc}") from None
    extras = {
        "branch": payload["branch"],
        "head": payload["head"],
        "num_classes": int(payload["num_classes"]),
        "feature_map_shape": tuple(payload.get("feature_map_shape") or backbone.feature_map_shape),
        "grid_shape": tuple(int(v) for v in payload["grid_shape"]),
        "epoch": int(payload["epoch"]),
        "step": int(payload["step"]),
        "path": str(path),
    }
    return inference_layout(backbone.eval()), config, extras
