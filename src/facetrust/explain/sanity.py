"""Sanity checks for every map method (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
2018): model parameter randomisation, cascading from the top layers (issue 17 item 2).

The xCos network is re-initialised level by level from the top (:data:`CASCADE`: the xCos branch,
then the backbone's last stage, ..., down to the stem), each level keeping the levels above it
randomised.  After every re-initialisation the BatchNorm statistics of the whole network are
**recalibrated** on validation images (cumulative average over one pass), so the randomised network
is not degenerate (its embeddings keep a spread; the stage records the randomised network's pair
cosines).  Each method's map of the same pairs is computed on the trained and on each randomised
network and compared by the Spearman rank correlation (of the signed map and of its absolute value)
and SSIM (scikit-image; maps min-max scaled to [0, 1], grid maps upsampled to pixels), averaged
over pairs with a percentile bootstrap interval.  A method **passes** only when, at the fully
randomised network, the upper end of the 95 % interval of both |map| rank correlation and SSIM is
below ``max_similarity``: its map then depends on what the network learned.

The **seed-to-seed agreement** of every stochastic map (:data:`~facetrust.explain.method_maps.STOCHASTIC`)
is the Spearman correlation between its maps under two seeds, with an interval, on the same pairs.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from facetrust.errors import InputError
from facetrust.evaluate.bootstrap import bootstrap_ci
from facetrust.explain.faithfulness import upsample

#: Cascade levels, top first: (label, module names of the xCos network re-initialised at that level).
CASCADE = (
    ("xCos branch", ("attention", "grid_conv")),
    ("+ stage 4", ("backbone.layer4", "backbone.bn2")),
    ("+ stage 3", ("backbone.layer3",)),
    ("+ stages 2-1, stem", ("backbone.layer2", "backbone.layer1", "backbone.conv1", "backbone.bn1",
                            "backbone.prelu")),
)


def _reset(module: nn.Module, generator_seed: int) -> None:
    """Re-initialise every parameter of ``module`` with PyTorch's default initialisers (seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        for child in module.modules():
            if hasattr(child, "reset_parameters"):
                child.reset_parameters()


def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch: int = 128) -> None:
    """Recompute every BatchNorm's running statistics on ``images`` (cumulative average), eval mode after."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    was_frozen = getattr(model, "freeze_backbone", False)
    if was_frozen:
        model.freeze_backbone = False
    model.train()
    with torch.no_grad():
        for start in range(0, images.shape[0], batch):
            chunk = images[start:start + batch]
            model(chunk, chunk.flip(0))
    model.freeze_backbone = was_frozen
    model.eval()


def randomised_copy(model: nn.Module, levels: int, calibration: torch.Tensor, seed: int) -> nn.Module:
    """A copy of the xCos ``model`` with the top ``levels`` of :data:`CASCADE` re-initialised and
    its BatchNorm statistics recalibrated on ``calibration`` images."""
    if not 0 <= levels <= len(CASCADE):
        raise InputError(f"sanity: levels must lie in 0..{len(CASCADE)}, got {levels}")
    copy_ = copy.deepcopy(model)
    modules = dict(copy_.named_modules())
    for level, (_, names) in enumerate(CASCADE[:levels]):
        for offset, name in enumerate(names):
            if name not in modules:
                raise InputError(f"sanity: the network has no module {name!r} (cascade for iResNet xCos networks)")
            _reset(modules[name], seed + 1000 * level + offset)
    if levels:
        recalibrate_batchnorm(copy_, calibration)
    return copy_.eval()


def _pixels(values: np.ndarray, size: Sequence[int]) -> np.ndarray:
    return values if values.shape == tuple(size) else upsample(values, tuple(size))


def _scaled(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return np.zeros_like(values) if high <= low else (values - low) / (high - low)


def map_similarity(first: np.ndarray, second: np.ndarray, size: Sequence[int]) -> dict[str, float]:
    """Spearman of the signed maps and of their absolute values, and SSIM of the scaled |maps|."""
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)

    def rank(x: np.ndarray, y: np.ndarray) -> float:
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            return 0.0  # a constant map carries no order
        return float(spearmanr(x.ravel(), y.ravel())[0])

    ssim = structural_similarity(_scaled(_pixels(np.abs(a), size)), _scaled(_pixels(np.abs(b), size)),
                                 data_range=1.0)
    return {"spearman": rank(a, b), "spearman_abs": rank(np.abs(a), np.abs(b)), "ssim": float(ssim)}


def similarity_summary(trained: np.ndarray, other: np.ndarray, size, *, seed: int, n_boot: int) -> dict:
    """Per-pair similarities of two (P, h, w) map stacks: mean and interval of each measure."""
    rows = [map_similarity(trained[k], other[k], size) for k in range(trained.shape[0])]
    out = {}
    for key in ("spearman", "spearman_abs", "ssim"):
        values = np.array([row[key] for row in rows])
        out[key] = list(bootstrap_ci(lambda i: float(np.mean(values[i])), [np.arange(values.size)], seed=seed,
                                     n_boot=n_boot))
    return out


def passes(summary: dict, max_similarity: float) -> bool:
    """Adebayo's test: low similarity of |map| (rank and SSIM) after full randomisation."""
    return summary["spearman_abs"][2] < max_similarity and summary["ssim"][2] < max_similarity
