"""The inversion judged fairly: an independent verifier, the clean rendering as known truth, choices
on validation classes, DeepInversion's priors and class-level intervals."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facetrust.config import load_params
from facetrust.data.synthetic import SynthConfig
from facetrust.data.synthetic.images import render_clean
from facetrust.errors import InputError
from facetrust.explain.inversion import image_l2, tv_l2
from facetrust.evaluate.bootstrap import class_bootstrap
from facetrust.explain.inversion_stage import blurred_correlation, own_minus_other, to_model_input

REPO = Path(__file__).resolve().parents[1]


def test_clean_rendering_is_deterministic_identity_specific_and_free_of_any_degradation():
    config = SynthConfig(image_size=32)
    first, again = render_clean(5, 3, config), render_clean(5, 3, config)
    assert first.dtype == np.uint8 and first.shape == (32, 32, 3) and np.array_equal(first, again)
    assert not np.array_equal(first, render_clean(5, 4, config))  # another identity, another face
    # every degradation setting pushed to its worst leaves the clean rendering unchanged
    worst = SynthConfig(image_size=32, strong_degradation_fraction=1.0)
    assert np.array_equal(first, render_clean(5, 3, worst))


def test_the_shipped_verifier_is_independent_of_the_inverted_model():
    params = load_params(REPO / "params.yaml")
    inversion, models = params["inversion"], params["models"]
    inverted, verifier = models[inversion["model"]], models[inversion["verifier"]]
    assert verifier["backbone"] != inverted["backbone"]
    assert verifier["train"].get("seed", params["seed"]) != inverted["train"].get("seed", params["seed"])
    # the twin is kept, as a secondary row only
    twin = models[inversion["secondary_verifiers"][0]]
    assert twin["backbone"] == inverted["backbone"]
    assert not set(inversion["select"]["classes"]) & set(inversion["classes"])
    assert len(inversion["classes"]) * inversion["images_per_class"] >= 96


def test_a_selection_made_on_reported_classes_is_refused(tmp_path):
    from facetrust.cli.explain import _selected

    selection = tmp_path / "s.json"
    selection.write_text(json.dumps({"classes": [1, 30], "chosen": {"tv_l2_weight": 0.1, "iterations": 7}}))
    args = argparse.Namespace(selection=selection)
    with pytest.raises(InputError, match="also reported"):
        _selected(args, {"classes": [0, 1, 2]})
    assert _selected(args, {"classes": [0, 2], "iterations": 99})["iterations"] == 7


def test_deepinversion_image_prior_is_the_mean_per_image_norm():
    x = torch.ones(1, 3, 4, 4)
    batch = torch.cat([x, 2 * x])
    assert float(image_l2(batch)) == pytest.approx(1.5 * float(x.norm()))
    assert float(image_l2(batch)) != pytest.approx(float(batch.norm()))
    assert float(tv_l2(torch.ones(2, 3, 5, 5))) == 0.0


def test_blurred_correlation_finds_the_own_reference_and_is_model_free():
    rng = np.random.default_rng(0)
    references = torch.from_numpy(rng.normal(size=(3, 3, 16, 16))).float()
    images = references[[2, 0]] + 0.3 * torch.from_numpy(rng.normal(size=(2, 3, 16, 16))).float()
    matrix = blurred_correlation(images, references, sigma=1.0)
    result = own_minus_other(matrix, np.array([2, 0]))
    assert (result["margin"] > 0.3).all()
    wrong = own_minus_other(matrix, np.array([1, 1]))
    assert (wrong["margin"] < 0).all()


def test_class_bootstrap_resamples_classes_not_images():
    labels = np.repeat(np.arange(4), 25)
    values = np.repeat([0.0, 0.0, 1.0, 1.0], 25)  # all the spread is between classes
    mean, low, high = class_bootstrap(values, labels, seed=0, n_boot=500)
    assert mean == pytest.approx(0.5) and low <= 0.25 and high >= 0.75  # 4 classes: a wide interval
    per_image = np.quantile([values[np.random.default_rng(s).integers(0, 100, 100)].mean() for s in range(500)],
                            [0.025, 0.975])
    assert high - low > 2 * (per_image[1] - per_image[0])  # an image-level bootstrap would be far too narrow


def test_model_input_crops_to_the_aspect_ratio_before_resizing():
    images = torch.zeros(1, 3, 32, 32)
    images[..., :, :2] = 1.0  # a stripe in the columns the 112x96 crop drops
    out = to_model_input(images, (42, 36))
    assert out.shape == (1, 3, 42, 36) and float(out[..., :, :1].max()) < 0.5
