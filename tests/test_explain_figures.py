"""Explanation figures are written, deterministic PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facetrust.errors import ConfigError, InputError
from facetrust.report.explain_figures import plot_pair_map, plot_xcos_pairs, to_uint8
from facetrust.report.inversion_figures import plot_inversion_grid


def _pair(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    attention = rng.random((6, 6))
    return {"image1": torch.rand(3, 48, 48) * 2 - 1, "image2": rng.integers(0, 255, (48, 48, 3), dtype=np.uint8),
            "cosine_map": rng.uniform(-1, 1, (6, 6)), "attention": attention / attention.sum(),
            "xcos": 0.3, "issame": bool(seed % 2)}


def test_xcos_pair_figure_is_a_deterministic_png(tmp_path):
    pairs = [_pair(0), _pair(1)]
    first = plot_xcos_pairs(pairs, 0.245, tmp_path / "a.png")
    second = plot_xcos_pairs(pairs, 0.245, tmp_path / "b.png")
    assert first.read_bytes() == second.read_bytes()
    with Image.open(first) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]  # a row of four panels per pair
    with pytest.raises(InputError):
        plot_xcos_pairs([], 0.2, tmp_path / "c.png")
    with pytest.raises(ConfigError):
        plot_xcos_pairs(pairs, 0.2, tmp_path / "c.jpg")


def test_map_and_inversion_figures_are_written(tmp_path):
    image = torch.zeros(3, 24, 24)
    similarity, dissimilarity = np.random.default_rng(0).random((2, 24, 24))
    out = plot_pair_map(image, image, similarity, dissimilarity, tmp_path / "m.png", cosine=0.5, method="gradient",
                        box=(2, 3, 10, 12))
    assert out.stat().st_size > 0
    grid = plot_inversion_grid({1: [image, image], 4: [image]}, {1: to_uint8(image)}, tmp_path / "i.png")
    assert grid.stat().st_size > 0
    assert to_uint8(torch.ones(3, 2, 2)).tolist() == np.full((2, 2, 3), 255).tolist()
