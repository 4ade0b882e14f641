"""A verified pair's score is the benchmark's score of two one-image templates, so the threshold read
off the benchmark's ROC applies to it (cosine, SCF Eq. 13, PFE MLS)."""

from __future__ import annotations

import numpy as np
import pytest

from facetrust.errors import InputError
from facetrust.evaluate.ijb import template_features_float64
from facetrust.evaluate.scores import pair_scores, score_templates
from facetrust.verify.model import pair_score


def _images(seed: int = 0, n: int = 6, d: int = 8):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=(n, 1)), rng.uniform(0.01, 0.5, size=n)


@pytest.mark.parametrize("score, pooling, kind", [("scf_vmf", "kappa", "scf"), ("pfe_mls", "pfe", "pfe")])
def test_image_pair_score_equals_the_ijb_score_of_one_image_templates(score, pooling, kind):
    features, uncertainty = _images()
    templates = np.arange(6)
    pairs = np.array([[0, 1], [2, 3], [4, 5]])
    scored = score_templates(score, pooling, features, templates, templates, uncertainty)
    expected = pair_scores(score, scored, pairs)
    ours, cosine = pair_score(score, features[0::2], features[1::2], uncertainty[0::2], uncertainty[1::2], kind)
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(cosine, np.einsum("ij,ij->i", unit[0::2], unit[1::2]), rtol=1e-12)


def test_image_cosine_equals_the_ijb_cosine_of_one_image_templates_with_detector_scores():
    features, _ = _images(1)
    templates = np.arange(6)
    ids, pooled = template_features_float64(features, templates, templates, np.linspace(0.5, 1.0, 6),
                                            normalize_images=False, use_detector_score=True, pooling="mean")
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    ours, _ = pair_score("cosine", features[0::2], features[1::2], None, None, None)
    np.testing.assert_allclose(ours, np.einsum("ij,ij->i", unit[0::2], unit[1::2]), rtol=1e-12)


def test_a_model_score_without_its_uncertainty_is_refused():
    features, uncertainty = _images()
    with pytest.raises(InputError, match="scf_vmf needs the uncertainty of a scf or scf_g head"):
        pair_score("scf_vmf", features[:3], features[3:], uncertainty[:3], uncertainty[3:], "emb_norm")


def test_a_face_beyond_every_benchmark_image_is_said_so_not_placed_at_0_percent():
    from facetrust.verify.benchmark import placement

    benchmark = np.linspace(1.0, 2.0, 500)
    assert placement(0.5, benchmark, "ijbc", "face 1")["text"] == "face 1 is more certain than all 500 ijbc images"
    assert placement(3.0, benchmark, "ijbc", "face 2")["short"] == "face 2: less certain than all 500 of ijbc"
    middle = placement(1.1, benchmark, "ijbc", "face 1")
    assert middle["text"] == "face 1 is in the most certain 10 % of ijbc images"
    assert middle["share_at_most_as_uncertain"] == pytest.approx(np.mean(benchmark <= 1.1))
