"""ONNX models: run a model-zoo ``.onnx`` file with onnxruntime, and export ours to ONNX.

:class:`OnnxBackbone` wraps an ``onnxruntime.InferenceSession`` as an ``nn.Module`` with our
backbone interface, fed with our pixel convention (converted to the model's own when its
``input`` convention differs).  CUDA is used when onnxruntime offers it (the ``onnxruntime-gpu``
build), the CPU otherwise.  What an ONNX file cannot do:

- gradients: the graph runs outside autograd, so gradient-based explanation maps need the
  PyTorch model (``.pth``);
- the feature map: a model-zoo file outputs the embedding only.  The uncertainty heads fitted on
  the feature map (PFE, SCF, SCF-G), ScaleFace's scale predictor and xCos read it, so they work
  only with an ONNX file that has a second output named ``feature_map`` — which
  ``facetrust export onnx --feature-map`` writes.  The embedding-based estimates (``emb_norm``,
  ``magface``) and every evaluation work with any file.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from facetrust.errors import InputError
from facetrust.models.pretrained import OUR_INPUT, to_model_input
from facetrust.models.registry import MAX_INPUT_SIDE

FEATURE_MAP_OUTPUT = "feature_map"
EMBEDDING_OUTPUT = "embedding"
INPUT_NAME = "input"
DEFAULT_OPSET = 17
#: What needs the feature map (and hence a PyTorch model or an ONNX file exported with it).
NEEDS_FEATURE_MAP = "the uncertainty heads PFE, SCF, SCF-G, ScaleFace's scale and xCos"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:  # pinned in envs/requirements.txt; a clear message where it was left out
        raise InputError("onnxruntime is not installed: pip install -r envs/requirements.txt") from None
    return onnxruntime


def providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, then the CPU."""
    available = _onnxruntime().get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def check_initializers(path: str | os.PathLike) -> None:
    """Refuse an ONNX file whose weights (initializers, and the values of Constant nodes) hold NaN or
    infinite values, naming the file and the initializer: such a model embeds every face as NaN."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnxruntime read it; a file onnx cannot (external data moved away) is named
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: its weights cannot be read to check them ({reason})") from None
    tensors = [(init.name, init) for init in model.graph.initializer]
    tensors += [(node.output[0] if node.output else node.name, attribute.t) for node in model.graph.node
                if node.op_type == "Constant" for attribute in node.attribute if attribute.type == onnx.AttributeProto.TENSOR]
    for name, tensor in tensors:
        values = numpy_helper.to_array(tensor)
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            raise InputError(f"{path}: initializer {str(name)[:80]!r} holds NaN or infinite values: not usable weights")


class OnnxBackbone(nn.Module):
    """An ONNX face model as a backbone: ``forward(x)`` -> embedding (N, D), no gradients.

    ``forward(x, return_feature_map=True)`` needs an output named ``feature_map``; without it an
    InputError says what needs it.  A file with a fixed batch size is run in chunks of that size."""

    def __init__(self, path: str | os.PathLike, convention: Mapping[str, Any] | None = None,
                 threads: int | None = None):
        super().__init__()
        ort = _onnxruntime()
        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers())
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/NoSuchFile classes
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{self.path}: not a loadable ONNX model ({reason})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (3, "3"):
            raise InputError(f"{self.path}: expected one NCHW input with 3 channels, got "
                             f"{[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        batch, _, height, width = inputs[0].shape
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        if not (isinstance(height, int) and isinstance(width, int)):
            raise InputError(f"{self.path}: input {self.input_name!r} has no fixed height and width ({inputs[0].shape})")
        if not (1 <= height <= MAX_INPUT_SIDE and 1 <= width <= MAX_INPUT_SIDE):
            raise InputError(f"{self.path}: input {self.input_name!r} is {height}x{width}; each side must be in "
                             f"[1, {MAX_INPUT_SIDE}] (facetrust.models.registry.MAX_INPUT_SIDE)")
        self.input_size = (height, width)
        check_initializers(self.path)
        outputs = [o.name for o in self.session.get_outputs()]
        self.embedding_output = EMBEDDING_OUTPUT if EMBEDDING_OUTPUT in outputs else outputs[0]
        self.has_feature_map = FEATURE_MAP_OUTPUT in outputs
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        self.embedding_size = shapes[self.embedding_output][-1]
        self.feature_map_shape = tuple(shapes[FEATURE_MAP_OUTPUT][1:]) if self.has_feature_map else None
        self.convention = dict(convention or OUR_INPUT)

    def _run(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        step = self.fixed_batch or len(batch) or 1
        parts = [self.session.run(names, {self.input_name: batch[i : i + step]}) for i in range(0, len(batch), step)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(names))]

    def forward(self, x: torch.Tensor, return_feature_map: bool = False):
        if x.requires_grad:
            raise InputError(f"{self.path}: an ONNX model gives no gradients; gradient-based maps need the "
                             f"PyTorch model (.pth)")
        if return_feature_map and not self.has_feature_map:
            raise InputError(f"{self.path}: this ONNX model outputs no {FEATURE_MAP_OUTPUT!r}; {NEEDS_FEATURE_MAP} "
                             f"read it. Use the .pth, or an ONNX file written by `facetrust export onnx "
                             f"--feature-map`. The embedding-based uncertainties (emb_norm, magface) work.")
        batch = to_model_input(x.detach(), self.convention).cpu().numpy().astype(np.float32, copy=False)
        names = [self.embedding_output] + ([FEATURE_MAP_OUTPUT] if return_feature_map else [])
        outputs = [torch.from_numpy(a).to(x.device) for a in self._run(np.ascontiguousarray(batch), names)]
        return (outputs[0], outputs[1]) if return_feature_map else outputs[0]


# ------------------------------------------------------------------------------------ export


class _ExportWrapper(nn.Module):
    def __init__(self, backbone: nn.Module, feature_map: bool):
        super().__init__()
        self.backbone, self.feature_map = backbone, feature_map

    def forward(self, x):
        return self.backbone(x, return_feature_map=self.feature_map)


def export_onnx(backbone: nn.Module, input_size, out_path: str | os.PathLike, *, feature_map: bool = False,
                opset: int = DEFAULT_OPSET, atomic: bool = True) -> Path:
    """Write ``backbone`` (eval mode, CPU) as ONNX with a dynamic batch axis; returns the path.

    Input ``input`` (N, 3, H, W) in our convention (RGB, (x - 127.5)/127.5); outputs ``embedding``
    (N, D) and, with ``feature_map``, ``feature_map`` (N, C, h, w).  Uses torch's TorchScript-based
    exporter (``dynamo=False``): it needs no extra package and gives the same bytes for the same
    weights."""
    from facetrust.io import atomic_path

    backbone = backbone.eval().cpu()
    example = torch.zeros(1, 3, *[int(v) for v in input_size])
    names = [EMBEDDING_OUTPUT] + ([FEATURE_MAP_OUTPUT] if feature_map else [])
    axes = {name: {0: "batch"} for name in [INPUT_NAME, *names]}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch >= 2.9 warns that this exporter is deprecated in favour of the torch.export one,
        # which needs onnxscript; the graphs of our convolutional backbones are the same.
        warnings.simplefilter("ignore")
        # the wrapper in eval mode: the exporter puts the module back in the mode it found it in
        torch.onnx.export(_ExportWrapper(backbone, feature_map).eval(), (example,), buffer, input_names=[INPUT_NAME],
                          output_names=names, dynamic_axes=axes, opset_version=int(opset), dynamo=False,
                          do_constant_folding=True)
    out_path = Path(out_path)
    if not atomic:
        out_path.write_bytes(buffer.getvalue())
        return out_path
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return out_path


def compare_with_torch(backbone: nn.Module, onnx_path: str | os.PathLike, input_size, *, batch_sizes=(1, 3),
                       seed: int = 0) -> dict:
    """Max absolute and relative difference between the PyTorch backbone and its ONNX export on
    seeded random inputs in [-1, 1] of each batch size (several sizes exercise the dynamic axis)."""
    onnx_model = OnnxBackbone(onnx_path)
    backbone.eval()
    generator = torch.Generator().manual_seed(seed)
    max_abs, max_ref = 0.0, 0.0
    with torch.no_grad():
        for n in batch_sizes:
            x = torch.rand(n, 3, *[int(v) for v in input_size], generator=generator) * 2 - 1
            expected, got = backbone(x), onnx_model(x)
            if got.shape != expected.shape:
                raise InputError(f"{onnx_path}: ONNX output {tuple(got.shape)} for batch {n}, PyTorch {tuple(expected.shape)}")
            max_abs = max(max_abs, float((got - expected).abs().max()))
            max_ref = max(max_ref, float(expected.abs().max()))
    return {"batch_sizes": list(batch_sizes), "max_abs_diff": max_abs, "max_abs_output": max_ref,
            "max_rel_diff": max_abs / max(max_ref, 1e-12)}
