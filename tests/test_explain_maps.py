"""Training-free maps: the gradient map's completeness and both maps finding planted regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facetrust.errors import ConfigError
from facetrust.explain.maps import integrated_gradients_map, pair_map, perturbation_map, rise_masks
from facetrust.models import build_backbone

SIZE = 24
AGREE = (slice(2, 10), slice(3, 11))  # rows, cols where face 2 equals face 1
DISAGREE = (slice(14, 22), slice(12, 20))  # where face 2 is face 1 negated


def _region(rows_cols) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[rows_cols] = True
    return mask


def _toy_pair():
    """A model that reads only two regions; face 2 agrees with face 1 in one, disagrees in the other."""
    generator = torch.Generator().manual_seed(0)
    image1 = torch.rand(3, SIZE, SIZE, generator=generator) + 0.5  # positive: removal lowers magnitude
    image2 = image1.clone()
    image2[:, DISAGREE[0], DISAGREE[1]] *= -1
    read = torch.from_numpy(_region(AGREE) | _region(DISAGREE))

    def embed(images: torch.Tensor) -> torch.Tensor:
        inside = images[:, :, read].flatten(1)
        return torch.cat([inside, torch.full((images.shape[0], 8), 3.0)], dim=1)

    return embed, image1, image2


@pytest.mark.parametrize("method, options", [("integrated_gradients", {"steps": 8}),
                                             ("perturbation", {"num_masks": 600, "cells": 6, "seed": 1})])
def test_map_finds_the_planted_agreeing_and_disagreeing_regions(method, options):
    embed, image1, image2 = _toy_pair()
    result = pair_map(method, embed, image1, image2, progress=False, **options) if method == "perturbation" \
        else pair_map(method, embed, image1, image2, **options)
    agree, disagree = _region(AGREE), _region(DISAGREE)
    for evidence, region in ((result.similarity, agree), (result.dissimilarity, disagree)):
        top = np.argsort(evidence.ravel())[::-1][: region.sum()]
        assert region.ravel()[top].mean() > 0.8  # the strongest pixels are the planted ones
        assert evidence[region].mean() > 5 * evidence[~region].mean()


def test_gradient_parts_sum_to_the_cosine_change_from_the_baseline():
    torch.manual_seed(0)
    model = build_backbone("iresnet", embedding_size=16, input_size=(32, 32), layers=[1, 1, 1, 1], width=4).eval()
    generator = torch.Generator().manual_seed(5)
    image1, noise = torch.randn(2, 3, 32, 32, generator=generator)
    image2 = image1 + 0.5 * noise  # the same "face", perturbed: far more alike than the grey baseline
    result = integrated_gradients_map(model, image1, image2, steps=128)
    parts = result.contributions["similar_dims"].sum() + result.contributions["dissimilar_dims"].sum()
    change = result.cosine - result.baseline_cosine
    assert abs(change) > 0.05  # a non-trivial change to explain
    assert parts == pytest.approx(change, abs=0.02 * abs(change) + 1e-3)
    assert result.completeness_gap == pytest.approx(parts - change)
    with torch.no_grad():
        unit = torch.nn.functional.normalize(model(torch.stack([image1, image2])), dim=1)
    assert result.cosine == pytest.approx(float(unit[0] @ unit[1]), abs=1e-5)
    coarse = integrated_gradients_map(model, image1, image2, steps=2)
    assert abs(coarse.completeness_gap) > abs(result.completeness_gap)  # the gap shrinks with steps


def test_rise_masks_are_seeded_and_keep_about_the_requested_share():
    masks = rise_masks(400, (20, 28), cells=5, keep_probability=0.3, seed=2)
    assert masks.shape == (400, 20, 28)
    assert torch.equal(masks, rise_masks(400, (20, 28), cells=5, keep_probability=0.3, seed=2))
    assert not torch.equal(masks, rise_masks(400, (20, 28), cells=5, keep_probability=0.3, seed=3))
    assert 0.25 < float(masks.mean()) < 0.35 and float(masks.min()) >= 0 and float(masks.max()) <= 1
    with pytest.raises(ConfigError):
        rise_masks(1, (8, 8))


def test_perturbation_map_is_reproducible_and_batch_size_free():
    embed, image1, image2 = _toy_pair()
    a = perturbation_map(embed, image1, image2, num_masks=64, batch_size=64, seed=4, progress=False)
    b = perturbation_map(embed, image1, image2, num_masks=64, batch_size=7, seed=4, progress=False)
    assert np.allclose(a.contributions["slope"], b.contributions["slope"], atol=1e-6)
