"""Faithfulness: deletion / insertion curves order a perfect map before a random one; localisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facetrust.evaluate.bootstrap import bootstrap_ci
from facetrust.errors import InputError
from facetrust.explain.faithfulness import (
    area,
    deletion_curves,
    localisation,
    random_maps,
    threshold_at_fmr,
    upsample,
)

SIZE = 16
READ = (slice(4, 10), slice(5, 12))  # the only pixels the toy model reads


def _embed(images: torch.Tensor) -> torch.Tensor:
    return images[:, :, READ[0], READ[1]].flatten(1)


def _pairs(n: int = 12):
    generator = torch.Generator().manual_seed(0)
    images1 = torch.rand(n, 3, SIZE, SIZE, generator=generator) + 0.2
    noise = torch.randn(n, 3, SIZE, SIZE, generator=generator)
    issame = np.arange(n) % 2 == 0
    images2 = torch.where(torch.from_numpy(issame).view(-1, 1, 1, 1), images1 + 0.05 * noise, noise)
    return images1, images2, issame


def test_deletion_of_a_perfect_map_beats_a_random_order_and_insertion_mirrors_it():
    images1, images2, issame = _pairs()
    perfect = np.zeros((len(issame), SIZE, SIZE))
    perfect[:, READ[0], READ[1]] = 1.0
    perfect += random_maps(len(issame), (SIZE, SIZE), seed=5) * 1e-3  # break ties inside the region
    shuffled = random_maps(len(issame), (SIZE, SIZE), seed=1)
    with torch.no_grad():
        unit = torch.nn.functional.normalize
        scores = (unit(_embed(images1), dim=1) * unit(_embed(images2), dim=1)).sum(1).numpy()
    threshold = float(scores[~issame].max()) + 1e-6  # every genuine pair accepted, no impostor
    best = deletion_curves(_embed, images1, images2, perfect, issame, threshold, progress=False)
    rand = deletion_curves(_embed, images1, images2, shuffled, issame, threshold, progress=False)
    assert best.rates()["fnmr"][0] == 0 and best.rates()["fmr"][0] == 0  # intact set: threshold as fixed
    best_area, rand_area = best.areas(), rand.areas()
    assert best_area["cosine_genuine"] < rand_area["cosine_genuine"] - 0.2
    assert best_area["fnmr"] > rand_area["fnmr"] + 0.2
    low_best = best.area_intervals(n_boot=200)["cosine_genuine"]
    low_rand = rand.area_intervals(n_boot=200)["cosine_genuine"]
    assert low_best[0] == pytest.approx(best_area["cosine_genuine"]) and low_best[1] <= low_best[0] <= low_best[2]
    assert low_best[2] < low_rand[1]  # the intervals separate
    inserted = deletion_curves(_embed, images1, images2, perfect, issame, threshold, mode="insertion", progress=False)
    inserted_rand = deletion_curves(_embed, images1, images2, shuffled, issame, threshold, mode="insertion",
                                    progress=False)
    assert inserted.areas()["cosine_genuine"] > inserted_rand.areas()["cosine_genuine"] + 0.2


def test_grid_maps_delete_whole_cells():
    images1, images2, issame = _pairs(2)
    grid = np.zeros((2, 2, 2))
    grid[:, 1, 1] = 1.0  # the bottom-right quarter first
    result = deletion_curves(lambda x: x.flatten(1), images1, images2, grid, issame, 0.5,
                             fractions=(0.0, 0.25, 0.5), progress=False)
    assert result.cosine.shape == (2, 3)
    assert (np.diff(result.cosine[0]) != 0).all()
    assert upsample(grid[0], (SIZE, SIZE))[SIZE // 2:, SIZE // 2:].all()
    assert not upsample(grid[0], (SIZE, SIZE))[: SIZE // 2].any()


def test_localisation_scores_a_map_on_the_box_above_an_even_map_with_intervals():
    rng = np.random.default_rng(0)
    boxes = np.array([[x, y, x + 6, y + 4] for x, y in rng.integers(0, 10, (30, 2))], dtype=float)
    on_box = np.zeros((30, SIZE, SIZE))
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        on_box[k, y0:y1, x0:x1] = 1.0 + rng.random((y1 - y0, x1 - x0))
    noisy = on_box + 0.3 * rng.random(on_box.shape)
    even = np.ones((30, 4, 4))
    good, fair, flat = (localisation(m, boxes, (SIZE, SIZE)).summary(n_boot=300) for m in (on_box, noisy, even))
    share = 24 / SIZE**2
    assert good["mass_ratio"][0] == pytest.approx(1.0) and good["pointing"][0] == 1.0
    assert flat["mass_ratio"][0] == pytest.approx(share) and flat["box_share"] == pytest.approx(share)
    assert flat["pointing"][0] == pytest.approx(share)  # every pixel is a maximum: chance level
    low, estimate, high = fair["mass_ratio"][1], fair["mass_ratio"][0], fair["mass_ratio"][2]
    assert share < low <= estimate <= high < 1.0
    assert fair["mass_lift"][0] > 2
    with pytest.raises(InputError, match="non-negative"):
        localisation(-on_box, boxes, (SIZE, SIZE))


def test_bootstrap_interval_narrows_with_more_pairs_and_is_seeded():
    values = np.random.default_rng(1).normal(size=400)
    mean = lambda idx: float(values[idx].mean())  # noqa: E731
    small = bootstrap_ci(mean, [np.arange(40)], seed=3, n_boot=300)
    large = bootstrap_ci(mean, [np.arange(400)], seed=3, n_boot=300)
    assert large[2] - large[1] < small[2] - small[1]
    assert bootstrap_ci(mean, [np.arange(40)], seed=3, n_boot=300) == small


def test_threshold_at_fmr_and_area():
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.4])
    issame = np.array([True, True, False, False, False, False])
    threshold = threshold_at_fmr(scores, issame, fmr=0.25)
    assert ((scores[~issame] >= threshold).mean()) == 0.25
    assert area([0, 0.5, 1.0], [1, 1, 1]) == pytest.approx(1.0)
