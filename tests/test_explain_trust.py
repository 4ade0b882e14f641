"""Issue 17 items 2-4: the sanity check separates a model-dependent map from a model-free one on a
planted model, the Δcos filter keeps exactly the occluders that matter, xSSAB splits at the EER
threshold, one mask default reaches the CLI and the stages, grid deletion is scored on xCos."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml
from PIL import Image

from facetrust.data.binset import write_bin
from facetrust.data.synthetic.occluders import box_mask
from facetrust.explain.defaults import DEFAULT_CELLS, DEFAULT_IG_STEPS, DEFAULT_MASKS
from facetrust.explain.faithfulness import eer_threshold
from facetrust.explain.maps import xssab_map
from facetrust.explain.method_maps import MapSettings, MapThresholds, all_methods, pixel_methods
from facetrust.explain.occluder_truth import occluded_genuine_pairs, occluder_deltas, qualifying_pairs
from facetrust.data.pairset import PairSet
from facetrust.explain.sanity import CASCADE, randomised_copy, similarity_summary
from facetrust.models.xcos import XCosModel

REPO = Path(__file__).resolve().parents[1]
SIZE = 24


class Gate(nn.Module):
    """A positional gate (C, h, w): planted = only the left half of the grid passes."""

    def __init__(self, channels: int, cells: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, cells, cells))
        with torch.no_grad():
            self.weight[:, :, : cells // 2] = 1.0

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class PlantedBackbone(nn.Module):
    """iResNet module names (so the cascade applies); only the left half of the face matters."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1, self.prelu = nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.PReLU(8)
        self.layer1 = nn.Conv2d(8, 8, 3, 2, 1)
        self.layer2, self.layer3 = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.layer4, self.bn2 = Gate(8, 6), nn.Identity()

    def forward(self, x, return_feature_map: bool = False):
        feature = self.bn2(self.layer4(self.layer3(self.layer2(self.layer1(self.prelu(self.bn1(self.conv1(x))))))))
        return (feature.flatten(1), feature) if return_feature_map else feature.flatten(1)


def planted_model() -> XCosModel:
    torch.manual_seed(1)
    return XCosModel(PlantedBackbone(), (8, 6, 6), grid_channels=8).eval()


def faces(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def left_share(maps: np.ndarray) -> float:
    mass = np.abs(maps)
    return float(mass[:, :, : SIZE // 2 + 4].sum() / mass.sum())  # the left cells' receptive field


def test_randomised_network_maps_differ_from_the_planted_models_and_a_model_free_map_does_not():
    model = planted_model()
    images1, images2 = faces(4, 1), faces(4, 2)
    settings = MapSettings(steps=4, masks=16, cells=3, batch_size=16)
    trained = pixel_methods(model, images1, images2, settings, np.random.default_rng(0), cosine_threshold=0.0,
                            progress=False, only=("xssab", "integrated_gradients"))
    randomised_model = randomised_copy(model, len(CASCADE), faces(32, 3), seed=5)
    randomised = pixel_methods(randomised_model, images1, images2, settings, np.random.default_rng(0),
                               cosine_threshold=0.0, progress=False, only=("xssab", "integrated_gradients"))
    for method in ("xssab", "integrated_gradients"):
        assert left_share(trained[method].support) > 0.99  # the planted truth: only the left half counts
        assert left_share(randomised[method].support) < 0.9
        similarity = similarity_summary(trained[method].support, randomised[method].support, (SIZE, SIZE),
                                        seed=0, n_boot=50)
        same = similarity_summary(trained[method].support, trained[method].support, (SIZE, SIZE), seed=0, n_boot=50)
        assert same["spearman_abs"][0] == pytest.approx(1.0) and similarity["spearman_abs"][0] < 0.8
    # a map that ignores the model (|x1 - x2|) is identical on both networks: it cannot pass
    difference = (images1 - images2).abs().mean(dim=1).numpy()
    model_free = similarity_summary(difference, difference, (SIZE, SIZE), seed=0, n_boot=50)
    assert model_free["spearman_abs"][1] > 0.99 and model_free["ssim"][1] > 0.99
    # BatchNorm recalibrated: the randomised network is not degenerate
    with torch.no_grad():
        unit = torch.nn.functional.normalize(randomised_model.embedding(faces(16, 4)), dim=1)
    assert (unit @ unit.T).triu(1).std() > 0.01


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_delta_cos_filter_keeps_exactly_the_occluders_that_change_the_score(tmp_path):
    """On the planted model only the left half of a face counts: of 8 occluded genuine pairs, the 4
    occluders on the left change the cosine, the 4 on the right leave it exactly unchanged."""
    model = planted_model()
    rng = np.random.default_rng(0)
    payloads, issame, boxes, twins = [], [], {}, {}
    for k in range(8):
        face = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
        other = np.clip(face.astype(int) + rng.integers(-20, 21, face.shape), 0, 255).astype(np.uint8)
        box = (1, 4, 8, 16) if k % 2 == 0 else (17, 4, 24, 16)  # left for even pairs, right for odd
        occluded = face.copy()
        occluded[box_mask(box, (SIZE, SIZE))] = 255
        twins[2 * k] = face
        boxes[f"toy/{2 * k}"], boxes[f"toy/{2 * k + 1}"] = box, None
        payloads += [_png(occluded), _png(other)]
        issame.append(True)
    write_bin(tmp_path / "toy.bin", payloads, issame)
    pairs = PairSet(tmp_path / "toy.bin")
    items = occluded_genuine_pairs(pairs, boxes)
    deltas = occluder_deltas(model, pairs, items, twins, (SIZE, SIZE))
    assert np.abs(deltas["delta_cos"][1::2]).max() < 1e-6  # right-half occluders: no effect at all
    assert np.abs(deltas["delta_cos"][0::2]).min() > 1e-4
    threshold = 0.5 * np.abs(deltas["delta_cos"][0::2]).min()
    chosen = qualifying_pairs({"delta_cos": np.abs(deltas["delta_cos"])}, threshold)
    assert chosen.tolist() == [0, 2, 4, 6]
    assert qualifying_pairs(deltas, 0.0).tolist() == np.flatnonzero(deltas["delta_cos"] >= 0).tolist()


def test_xssab_splits_the_dimensions_at_the_eer_threshold_over_d():
    genuine, impostor = np.array([0.6, 0.7, 0.8, 0.9]), np.array([0.1, 0.2, 0.3, 0.65])
    threshold, eer = eer_threshold(np.concatenate([genuine, impostor]), np.array([True] * 4 + [False] * 4))
    assert threshold == 0.65 and eer == 0.25
    torch.manual_seed(0)
    weight = torch.randn(16, 3 * 8 * 8)

    def embed(x):
        return x.flatten(1) @ weight.T

    image1, image2 = torch.randn(3, 8, 8), torch.randn(3, 8, 8)
    products = (torch.nn.functional.normalize(embed(image1[None]), dim=1)
                * torch.nn.functional.normalize(embed(image2[None]), dim=1))[0]
    result = xssab_map(embed, image1, image2, threshold=threshold)
    at_eer = (products >= threshold / 16).double().mean().item()
    assert result.split_fraction == pytest.approx(at_eer)
    assert at_eer != (products >= 0).double().mean().item()  # the EER split moves dimensions
    x = image1.clone().requires_grad_(True)
    negative = (torch.nn.functional.normalize(embed(x[None]), dim=1)[0]
                * torch.nn.functional.normalize(embed(image2[None]), dim=1)[0])[products < threshold / 16].sum()
    (gradient,) = torch.autograd.grad(negative, x)
    np.testing.assert_allclose(result.contributions["negative"], gradient.abs().mean(dim=0).numpy(), rtol=1e-5,
                               atol=1e-8)
    np.testing.assert_allclose(result.contributions["combined"],
                               result.contributions["positive"] - result.contributions["negative"])


def test_one_mask_default_reaches_the_cli_the_stages_and_the_schema():
    from facetrust.cli import build_parser
    from facetrust.explain.faithfulness_stage import FaithfulnessSettings
    from facetrust.explain.sanity_stage import SanitySettings

    assert DEFAULT_MASKS >= 1000
    args = build_parser().parse_args(["explain", "map", "a.png", "b.png", "--model", "m", "--out", "o.png"])
    assert (args.masks, args.steps) == (DEFAULT_MASKS, DEFAULT_IG_STEPS)
    for settings in (FaithfulnessSettings.from_section({}, 0), SanitySettings.from_section({}, 0), MapSettings()):
        assert (settings.maps if hasattr(settings, "maps") else settings).masks == DEFAULT_MASKS
        assert (settings.maps if hasattr(settings, "maps") else settings).cells == DEFAULT_CELLS
    schema = yaml.safe_load((REPO / "src/facetrust/schemas/params.schema.yaml").read_text())
    explain = schema["properties"]["explain"]["properties"]
    assert explain["perturbation"]["properties"]["masks"]["default"] == DEFAULT_MASKS
    assert explain["perturbation"]["properties"]["cells"]["default"] == DEFAULT_CELLS
    assert explain["gradient"]["properties"]["steps"]["default"] == DEFAULT_IG_STEPS
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    section = params["explain"]
    assert FaithfulnessSettings.from_section(section, 0).maps.masks == DEFAULT_MASKS  # params leave it to the default


def test_grid_deletion_is_scored_on_xcos_with_the_grid_cosine_beside_it():
    from facetrust.explain.faithfulness_stage import FaithfulnessSettings, _curves

    model = planted_model()
    with torch.no_grad():  # a peaked attention, so xCos and the grid cosine differ clearly
        model.attention.fuse[-1][1].bias.copy_(torch.tensor([0.0]))
        model.attention.fuse[-1][1].weight.mul_(40.0)
    images1, images2 = faces(4, 7), faces(4, 8)
    issame = np.array([True, True, False, False])
    settings = FaithfulnessSettings(bootstrap=20, maps=MapSettings(steps=2, masks=8, cells=3, batch_size=8))
    maps = all_methods(model, images1, images2, MapThresholds(xcos=0.0, cosine_eer=0.0), settings.maps,
                       np.random.default_rng(0), progress=False)
    operating = {"fmr_threshold": 0.0, "eer_threshold": 0.0}
    curves = _curves(model, images1, images2, maps, issame, {"cosine": operating, "xcos": operating}, settings)
    with torch.no_grad():
        output = model(images1, images2)
    xcos, cosine = output.xcos.double().numpy(), output.grid_cosine.double().numpy()
    assert abs(xcos - cosine).max() > 1e-3  # the two scores differ on this model
    for method in ("xcos_attention", "xcos_contribution", "cosine_map", "random_cells"):
        entry = curves[method]["deletion"]
        assert entry["score"] == "xcos"
        assert entry["curves"]["score_genuine"][0] == pytest.approx(xcos[issame].mean(), abs=1e-6)
        assert entry["grid_cosine"]["curves"]["score_genuine"][0] == pytest.approx(cosine[issame].mean(), abs=1e-6)
    for method in ("xssab", "integrated_gradients", "perturbation"):
        assert curves[method]["deletion"]["score"] == "cosine"
        assert curves[method]["deletion"]["curves"]["score_genuine"][0] == pytest.approx(cosine[issame].mean(),
                                                                                         abs=1e-6)
    assert set(curves["xssab"]) == {"deletion", "insertion", "insertion_blur"}
