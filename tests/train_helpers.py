"""Shared fixtures of the training tests: a tiny, deterministic InsightFace RecordIO set."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from facetrust.data.insightface import write_insightface_dataset


def make_tiny_rec(out_dir: Path, num_classes: int = 4, per_class: int = 8, size=(16, 16), seed: int = 0) -> Path:
    """Write ``num_classes * per_class`` JPEGs (a random prototype per class plus noise)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, (num_classes, size[0], size[1], 3))

    def samples():
        for label in range(num_classes):
            for _ in range(per_class):
                image = np.clip(prototypes[label] + rng.normal(0, 20, prototypes[label].shape), 0, 255)
                buffer = io.BytesIO()
                Image.fromarray(image.astype(np.uint8)).save(buffer, format="JPEG", quality=95)
                yield label, buffer.getvalue()

    write_insightface_dataset(out_dir, samples(), num_classes, size)
    return out_dir


def tiny_config(**overrides) -> dict:
    """A TrainConfig dict for a 1-block-per-stage, width-4 iResNet on 16x16 images."""
    config = {
        "backbone": "iresnet",
        "backbone_options": {"layers": [1, 1, 1, 1], "width": 4},
        "embedding_size": 16,
        "input_size": [16, 16],
        "head": {"kind": "arcface", "s": 16.0, "m": 0.3},
        "epochs": 3,
        "batch_size": 8,
        "lr": 0.05,
        "warmup_epochs": 1,
        "threads": 1,
        "log_every": 2,
    }
    config.update(overrides)
    return config


def assert_same_tree(a, b, path: str = "") -> None:
    """Every tensor bit-identical and every other value equal, recursively."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"tensor differs at {path}"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"keys differ at {path}: {set(a) ^ set(b)}"
        for key in a:
            assert_same_tree(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"lengths differ at {path}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"value differs at {path}: {a!r} != {b!r}"
