"""ArcFace model inversion (arXiv 1801.07698v4, Algorithm 1 / Eq. 8) with DeepInversion's options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from facetrust.errors import ConfigError
from facetrust.explain.inversion import (
    BatchNormStatistics,
    InversionConfig,
    ablation,
    class_probabilities,
    cosine_lr,
    invert,
    tv_l2,
)
from facetrust.models import build_backbone
from facetrust.models.margins import build_head

SIZE = 16
FAST = InversionConfig(iterations=25, images_per_class=2, warmup_iterations=5, seed=3)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    backbone = build_backbone("iresnet", embedding_size=16, input_size=(SIZE, SIZE), layers=[1, 1, 1, 1], width=4)
    backbone.train()
    with torch.no_grad():  # give the BN layers non-trivial running statistics
        for _ in range(3):
            backbone(torch.randn(8, 3, SIZE, SIZE) * 0.5 + 0.1)
    head = build_head("arcface", 16, 5, s=16.0, m=0.3, seed=seed)
    return backbone.eval(), head.eval()


def test_inversion_raises_the_target_probability_over_its_start():
    backbone, head = _model()
    result = invert(backbone, head, [1, 3], (SIZE, SIZE), FAST, progress=False)
    labels = result["labels"]
    assert labels.tolist() == [1, 1, 3, 3] and result["images"].shape == (4, 3, SIZE, SIZE)
    start = class_probabilities(backbone, head, result["start"]).gather(1, labels.view(-1, 1))
    end = class_probabilities(backbone, head, result["images"]).gather(1, labels.view(-1, 1))
    assert (end > start).all() and float(end.mean()) > 2 * float(start.mean())
    assert result["images"].min() >= -1 and result["images"].max() <= 1  # clipped to the pixel range
    again = invert(backbone, head, [1, 3], (SIZE, SIZE), FAST, progress=False)
    assert torch.equal(again["images"], result["images"])  # seeded


def test_bn_term_vanishes_when_the_batch_matches_the_running_statistics():
    layer = nn.Sequential(nn.BatchNorm2d(4)).eval()
    x = torch.randn(6, 4, 8, 8)
    with torch.no_grad():
        layer[0].running_mean.copy_(x.mean(dim=(0, 2, 3)))
        layer[0].running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))
    for form in ("arcface", "deepinversion"):
        with BatchNormStatistics(layer, form) as statistics:
            layer(x)
            assert float(statistics.loss()) == pytest.approx(0.0, abs=1e-5)
            statistics.reset()
            layer(x + 1.0)  # every channel's mean off by 1, spread unchanged
            # Eq. 8: Σ 1² over 4 channels; DeepInversion: ‖1‖₂ = 2, x10 on the first BN layer
            expected = 4.0 if form == "arcface" else 10 * 2.0
            assert float(statistics.loss()) == pytest.approx(expected, rel=1e-4)
            statistics.reset()
            layer(2 * (x - x.mean(dim=(0, 2, 3), keepdim=True)) + x.mean(dim=(0, 2, 3), keepdim=True))
            running_std = torch.sqrt(layer[0].running_var + layer[0].eps)
            if form == "arcface":  # doubled spread: Σ (2σ − σ)² up to eps, a std (not variance) term
                assert float(statistics.loss()) == pytest.approx(float((running_std**2).sum()), rel=1e-3)
    assert not layer[0]._forward_hooks  # hooks removed on exit


def test_ablations_drop_their_term_and_report_verifier_numbers():
    backbone, head = _model()
    verifier, verifier_head = _model(seed=1)
    real = {c: torch.randn(3, 3, SIZE, SIZE) for c in (1, 2, 3)}
    config = dataclasses.replace(FAST, iterations=10)
    results = ablation(backbone, head, verifier, verifier_head, [1, 3], (SIZE, SIZE), real, config, progress=False)
    assert set(results) == {"full", "no_bn", "no_class"}
    for run in results.values():
        checks = run["checks"]
        assert 0 <= checks["top1"] <= 1 and 0 < checks["target_probability"] < 1
        assert -1 <= checks["cosine_own"] <= 1 and 0 <= checks["own_nearest"] <= 1
    full, no_bn = results["full"]["log"][-1], results["no_bn"]["log"][-1]
    assert full["loss"] > full["class"] and no_bn["loss"] == pytest.approx(
        no_bn["class"] + 1e-4 * no_bn["tv_l2"] + 1e-5 * no_bn["l2"], rel=1e-5)
    with pytest.raises(ConfigError):
        InversionConfig().ablated("tv")


def test_schedule_warms_up_then_decays_and_tv_is_zero_on_flat_images():
    lrs = [cosine_lr(i, 0.2, 200, 100) for i in range(200)]
    assert lrs[0] == pytest.approx(0.002) and lrs[99] == pytest.approx(0.2)
    assert np.all(np.diff(lrs[100:]) <= 0) and lrs[-1] < 1e-3
    assert float(tv_l2(torch.ones(2, 3, 5, 5))) == 0.0 and float(tv_l2(torch.randn(2, 3, 5, 5))) > 0
