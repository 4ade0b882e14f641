"""Shared fixtures of the explain-stage tests: a tiny synthetic benchmark and untrained models
saved in the project's checkpoint formats (deterministic, no training)."""

from __future__ import annotations

from pathlib import Path

import torch

from facetrust.data.synthetic import SynthConfig, synthesize
from facetrust.models.xcos import branch_state
from facetrust.train.xcos_parts import build_xcos
from facetrust.models.artifacts import build_backbone_from_config, build_margin, save_checkpoint, save_xcos_checkpoint

TINY_SYNTH = dict(image_size=24, loose_crop_size=48, train_identities=6, train_images_per_identity=[4, 5],
                  pair_identities=20, pair_images_per_identity=3, pair_folds=2, pairs_per_fold=20, ijb_identities=2,
                  ijb_templates_per_identity=[2, 2], ijb_media_per_template=[1, 1], ijb_frames_per_media=[1, 1],
                  ijb_impostor_pairs=2, strong_degradation_fraction=0.9)


def tiny_benchmark(out_dir: Path, seed: int = 3) -> Path:
    """A synthetic benchmark of 24 px crops whose pair set has occluded genuine pairs (0.3 s)."""
    synthesize(out_dir, SynthConfig.from_dict(TINY_SYNTH), seed=seed)
    return out_dir


def model_config(size: int = 24, seed: int = 0, **options) -> dict:
    return {"backbone": "iresnet", "backbone_options": {"layers": [1, 1, 1, 1], "width": 4, **options},
            "embedding_size": 16, "input_size": [size, size], "head": {"kind": "arcface", "s": 16.0, "m": 0.3},
            "seed": seed}


def save_model(out_dir: Path, num_classes: int = 6, size: int = 24, seed: int = 0) -> Path:
    """An untrained model (backbone + ArcFace head) written as a training checkpoint."""
    config = model_config(size, seed)
    torch.manual_seed(seed)
    backbone = build_backbone_from_config(config)
    margin, _ = build_margin(config, num_classes, backbone.feature_map_shape)
    save_checkpoint(Path(out_dir) / "checkpoint.pt", {
        "backbone": backbone.state_dict(), "head": margin.state_dict(), "config": config, "epoch": 1, "step": 1,
        "num_classes": num_classes, "feature_map_shape": list(backbone.feature_map_shape)})
    return Path(out_dir)


def save_xcos_model(out_dir: Path, num_classes: int = 6, size: int = 24, seed: int = 0) -> Path:
    """An untrained xCos model (3x3 grid at 24 px) written as an xCos checkpoint."""
    config = model_config(size, seed, last_stage_stride=1)
    torch.manual_seed(seed)
    backbone = build_backbone_from_config(config)
    model, head = build_xcos(backbone, num_classes, seed=seed)
    save_xcos_checkpoint(out_dir, {"backbone": backbone.state_dict(), "branch": branch_state(model),
                                   "head": head.state_dict(), "config": config, "num_classes": num_classes,
                                   "feature_map_shape": list(backbone.feature_map_shape),
                                   "grid_shape": list(model.grid_shape), "epoch": 0, "step": 0})
    return Path(out_dir)
