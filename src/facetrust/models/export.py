"""The ``export`` stage: a model of ours (or an arcface_torch ``backbone.pth``) written as ONNX and
kept only when onnxruntime reproduces the PyTorch outputs (facetrust.models.onnx_model)."""

from __future__ import annotations

import os

from facetrust.errors import InputError
from facetrust.io import atomic_path
from facetrust.models.artifacts import load_model
from facetrust.models.onnx_model import (DEFAULT_OPSET, EMBEDDING_OUTPUT, FEATURE_MAP_OUTPUT, compare_with_torch,
                                         export_onnx)


def run_export_onnx(model_dir: str | os.PathLike, out_path: str | os.PathLike, *, feature_map: bool = False,
                    opset: int = DEFAULT_OPSET, tolerance: float = 1e-4, seed: int = 0) -> dict:
    """The ``export onnx`` stage: export the model of ``model_dir`` (anything ``load_model`` takes
    but an ONNX file), run the file with onnxruntime beside PyTorch and keep it only when the
    largest difference relative to the largest output is at most ``tolerance``; returns the
    comparison (RuntimeError, no file written, otherwise)."""
    backbone, config, _ = load_model(model_dir)
    if config.get("file_format") == "onnx":
        raise InputError(f"{model_dir}: already an ONNX model")
    input_size = tuple(config["input_size"])
    with atomic_path(out_path, suffix=".onnx") as tmp:
        export_onnx(backbone, input_size, tmp, feature_map=feature_map, opset=opset, atomic=False)
        comparison = compare_with_torch(backbone, tmp, input_size, seed=seed)
        if not comparison["max_rel_diff"] <= tolerance:
            raise RuntimeError(f"{out_path}: ONNX and PyTorch outputs differ by {comparison['max_abs_diff']:.3g} "
                               f"(relative {comparison['max_rel_diff']:.3g} > {tolerance:g}); not written")
    return {"out": str(out_path), "input_size": list(input_size), "embedding_size": int(config["embedding_size"]),
            "outputs": [EMBEDDING_OUTPUT] + ([FEATURE_MAP_OUTPUT] if feature_map else []), "opset": int(opset),
            "input": "RGB, (x - 127.5) / 127.5, NCHW float32, dynamic batch", **comparison}
