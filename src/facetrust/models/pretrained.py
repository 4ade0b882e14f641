"""Models trained elsewhere: an InsightFace ``arcface_torch`` ``backbone.pth``, or an ONNX file.

What the caller gets is the same ``nn.Module`` interface as our own backbones (``forward(x,
return_feature_map=False)``, ``feature_map_shape``), fed with our pixel convention, so ``embed``,
``evaluate`` and the explanation stages run unchanged.  Loading goes through
:func:`facetrust.models.artifacts.load_model`; this module holds the format-specific parts.

Input convention (docs/FORMATS.md "Pretrained models"): our pipeline hands every model RGB
112x112 crops normalised as (x - 127.5) / 127.5, NCHW float32 — exactly what arcface_torch trains
on (``dataset.py``: ToTensor + Normalize(0.5, 0.5) on RGB) and what its ``torch2onnx.py`` exports.
A model that expects BGR, or other mean/std (e.g. a graph with its own Sub/Mul in front: mean 0,
std 1), states so with ``input: {channels, mean, std}`` and the adapter below converts.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from facetrust.data.transforms import PIXEL_MEAN, PIXEL_SCALE
from facetrust.errors import ConfigError, InputError

#: The convention our pipeline feeds every model (facetrust.data.transforms.to_tensor).
OUR_INPUT = {"channels": "rgb", "mean": PIXEL_MEAN, "std": PIXEL_SCALE}
PRETRAINED_FORMATS = ("arcface_torch", "onnx")
_LAYER_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def file_format(path: str | os.PathLike) -> str:
    """``"onnx"`` for ``*.onnx``, ``"arcface_torch"`` for a PyTorch state dict (``.pth``/``.pt``)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pth", ".pt"):
        return "arcface_torch"
    raise InputError(f"{path}: not a pretrained model file (expected an arcface_torch backbone .pth or an .onnx file)")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_convention(settings: Mapping[str, Any] | None) -> dict:
    """The model's input convention: ``OUR_INPUT`` updated by ``settings``; ConfigError on bad values."""
    convention = {**OUR_INPUT, **dict(settings or {})}
    if convention["channels"] not in ("rgb", "bgr"):
        raise ConfigError(f"input.channels: {convention['channels']!r} is not one of ['rgb', 'bgr']")
    if not float(convention["std"]) > 0:
        raise ConfigError(f"input.std: must be > 0, got {convention['std']!r}")
    return {"channels": convention["channels"], "mean": float(convention["mean"]), "std": float(convention["std"])}


def to_model_input(x: torch.Tensor, convention: Mapping[str, Any]) -> torch.Tensor:
    """Our (x - 127.5)/127.5 RGB batch re-expressed in the model's own ``convention``."""
    if dict(convention) == OUR_INPUT:
        return x
    pixels = x * PIXEL_SCALE + PIXEL_MEAN
    if convention["channels"] == "bgr":
        pixels = pixels.flip(1)
    return (pixels - convention["mean"]) / convention["std"]


# ------------------------------------------------------------------ arcface_torch backbone.pth


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an arcface_torch ``backbone.pth`` (``torch.save(backbone.state_dict())``),
    read with ``weights_only=True``; see :func:`state_from_payload`."""
    from facetrust.input_files import check_regular
    from facetrust.models.weights import weights_only_load

    if not Path(path).exists():
        raise InputError(f"{path}: no such pretrained model file")
    check_regular(path, "pretrained model file")  # a FIFO would block torch.load
    return state_from_payload(weights_only_load(path, "PyTorch state dict"), path)


def state_from_payload(payload, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a loaded ``.pth`` payload: the payload itself, or its ``state_dict``
    entry.  A uniform ``module.`` prefix (saved from a DataParallel/DDP wrapper) is dropped."""
    state = payload
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a state dict of tensors (an arcface_torch backbone.pth holds only tensors)")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    from facetrust.models.registry import check_stored

    check_stored(path, "state dict", state)  # a few stored bytes standing for a large tensor: refused
    return dict(state)


def infer_iresnet(state: Mapping[str, torch.Tensor], path: Path | str = "state dict") -> dict:
    """``{"layers", "width", "embedding_size"}`` of the iResNet whose InsightFace-layout state dict
    this is: block counts from the ``layer{k}.{i}.`` keys, width from ``conv1``, the embedding
    size from ``fc``.  InputError naming the file when the keys are not an iResNet's."""
    for key in ("conv1.weight", "fc.weight", "features.running_mean"):
        if key not in state:
            raise InputError(f"{path}: key {key!r} missing: not an InsightFace iResNet state dict "
                             f"(keys start {', '.join(list(state)[:4])})")
    if state["conv1.weight"].dim() != 4 or state["fc.weight"].dim() != 2:
        raise InputError(f"{path}: conv1.weight / fc.weight have shapes {tuple(state['conv1.weight'].shape)} / "
                         f"{tuple(state['fc.weight'].shape)}: not an iResNet's")
    blocks = [set() for _ in range(4)]
    for key in state:
        match = _LAYER_KEY.match(key)
        if match:
            blocks[int(match.group(1)) - 1].add(int(match.group(2)))
    if not all(blocks) or any(sorted(found) != list(range(len(found))) for found in blocks):
        raise InputError(f"{path}: layer1..layer4 blocks are missing or not numbered 0..n-1: not an iResNet state dict")
    return {"layers": [len(found) for found in blocks], "width": int(state["conv1.weight"].shape[0]),
            "embedding_size": int(state["fc.weight"].shape[0])}


def iresnet_name(layers) -> str:
    """``iresnet50`` … for the named depths, ``iresnet`` (with explicit ``layers``) otherwise."""
    from facetrust.models.backbones.iresnet import DEPTH_LAYERS

    for depth, counts in DEPTH_LAYERS.items():
        if list(counts) == list(layers):
            return f"iresnet{depth}"
    return "iresnet"


def load_arcface_torch(path: Path, settings: Mapping[str, Any], state: Mapping[str, torch.Tensor] | None = None
                       ) -> tuple[nn.Module, dict]:
    """``(iResNet in eval mode with the file's weights, config)``; strict key load.

    ``settings``: the model's params (``input_size``, optional ``backbone``, ``embedding_size``).
    The depth and width come from the file; a configured ``backbone``/``embedding_size`` that
    disagrees with it is a ConfigError naming the key."""
    from facetrust.models.registry import backbone_plan, build_backbone

    state = read_state_dict(path) if state is None else state
    found = infer_iresnet(state, path)
    name = iresnet_name(found["layers"])
    configured = settings.get("backbone")
    if configured and configured not in (name, "iresnet"):
        raise ConfigError(f"{path}: backbone {configured!r} configured, but the file holds {name} "
                          f"(blocks {found['layers']}, width {found['width']})")
    if settings.get("embedding_size") not in (None, found["embedding_size"]):
        raise ConfigError(f"{path}: embedding_size {settings['embedding_size']} configured, the file's fc gives "
                          f"{found['embedding_size']}")
    options = {"width": found["width"]} if name != "iresnet" else {"width": found["width"], "layers": found["layers"]}
    input_size = _input_size(path, settings.get("input_size"))
    # Nothing is allocated before the architecture the keys describe is known to be within the limits
    # (models.registry) with exactly the file's shapes, and its values finite (the tensors are real
    # saved weights, not broadcast views: state_from_payload).
    try:
        shapes = backbone_plan(name, embedding_size=found["embedding_size"], input_size=tuple(input_size), **options)
    except ConfigError as exc:
        raise InputError(f"{path}: the iResNet its keys describe (blocks {found['layers']}, width {found['width']} "
                         f"from conv1.weight, embedding {found['embedding_size']} from fc.weight, input size "
                         f"{input_size}) is not built: {exc}") from None
    mismatch = _first_mismatch(shapes, state)
    if mismatch:
        raise InputError(f"{path}: weights do not fit {name} at input size {input_size} "
                         f"(set the model's input_size to the size it was trained on): {mismatch}")
    check_finite_weights(path, state)  # after the shapes: each check is as large as the model, no larger
    backbone = build_backbone(name, embedding_size=found["embedding_size"], input_size=tuple(input_size), **options)
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit {name} at input size {input_size} "
                         f"(set the model's input_size to the size it was trained on): {str(exc).splitlines()[0]} "
                         f"{_first_mismatch(backbone.state_dict(), state)}") from None
    config = {"backbone": name, "backbone_options": options, "embedding_size": found["embedding_size"],
              "input_size": input_size}
    return backbone.eval(), config


def _first_mismatch(ours: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> str:
    """The first difference between the model's state (key -> tensor or shape) and the file's, or ''."""
    for key, value in state.items():
        if key in ours and tuple(ours[key] if isinstance(ours[key], tuple) else ours[key].shape) != tuple(value.shape):
            theirs = ours[key] if isinstance(ours[key], tuple) else tuple(ours[key].shape)
            return f"({key}: file {tuple(value.shape)}, model {theirs})"
    extra = sorted(set(state) - set(ours))[:3]
    if extra:
        return f"(unexpected keys {extra})"
    missing = sorted(set(ours) - set(state))[:3]
    return f"(missing keys {missing})" if missing else ""


def _input_size(path, value) -> list[int]:
    """The configured input size (default 112x112) as two integers; ConfigError naming it otherwise."""
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return [112, 112]
    try:
        size = [int(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: input_size {str(value)[:60]} is not (height, width)") from None
    if len(size) != 2:
        raise ConfigError(f"{path}: input_size {str(value)[:60]} is not (height, width)")
    return size


def check_finite_weights(path, state: Mapping[str, torch.Tensor]) -> None:
    """Refuse a state dict with NaN or infinite values (a diverged or damaged model: every embedding
    would be NaN), naming the file and the tensor's key."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise InputError(f"{path}: tensor {str(key)[:80]!r} holds NaN or infinite values: not usable weights")


class InputAdapter(nn.Module):
    """A backbone that expects another pixel convention, fed with ours."""

    def __init__(self, backbone: nn.Module, convention: Mapping[str, Any]):
        super().__init__()
        self.backbone = backbone
        self.convention = dict(convention)
        self.feature_map_shape = getattr(backbone, "feature_map_shape", None)

    def forward(self, x: torch.Tensor, return_feature_map: bool = False):
        return self.backbone(to_model_input(x, self.convention), return_feature_map=return_feature_map)
