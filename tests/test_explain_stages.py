"""The explain stages on a tiny synthetic benchmark with untrained models: xCos pair scores, the
faithfulness stage, the inversion stage, and the reports written from their files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explain_helpers import save_model, save_xcos_model, tiny_benchmark
from facetrust.config import check_explain
from facetrust.errors import ConfigError
from facetrust.evaluate.precomputed_scores import run_evaluate_pair_scores
from facetrust.explain.faithfulness_stage import FaithfulnessSettings, run_faithfulness
from facetrust.explain.method_maps import METHODS, MapSettings, grid_methods
from facetrust.models.xcos import load_xcos

FAST = FaithfulnessSettings(pairs=6, localisation_pairs=3, bootstrap=30, examples=2,
                            maps=MapSettings(steps=2, masks=12, cells=3, batch_size=12))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    tiny_benchmark(root / "synth")
    return {"root": root, "pairs": root / "synth" / "pairs" / "synth_lfw.bin",
            "validation": root / "synth" / "pairs" / "synth_val.bin",
            "occluders": root / "synth" / "occluders.csv", "train": root / "synth" / "train",
            "xcos": save_xcos_model(root / "xcos"), "standard": save_model(root / "standard", seed=1),
            "verifier": save_model(root / "verifier", seed=2), "model": save_model(root / "model", seed=3)}


def test_xcos_scores_file_holds_three_scores_and_the_maps_and_repeats(bench, tmp_path):
    from facetrust.explain.scores import run_xcos_scores

    summary = run_xcos_scores(bench["xcos"], bench["standard"], bench["pairs"], tmp_path / "a.npz")
    run_xcos_scores(bench["xcos"], bench["standard"], bench["pairs"], tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as data:
        assert data["score_names"].tolist() == ["xcos", "cosine", "standard_cosine"]
        assert data["xcos"].shape == data["issame"].shape == (summary["pairs"],)
        assert data["attention"].shape == data["cosine_map"].shape == (summary["pairs"], 3, 3)
        np.testing.assert_allclose(data["attention"].sum(axis=(1, 2)), 1.0, atol=1e-5)
        np.testing.assert_allclose((data["attention"] * data["cosine_map"]).sum(axis=(1, 2)), data["xcos"], atol=1e-5)
    metrics = run_evaluate_pair_scores(tmp_path / "a.npz", tmp_path / "m.json", score="xcos",
                                       references=["cosine", "standard_cosine"])
    assert set(metrics["paired_differences"]) == {"cosine", "standard_cosine"}
    # other training seeds of the model are scored beside it (here the same model: the same xCos)
    run_xcos_scores(bench["xcos"], bench["standard"], bench["pairs"], tmp_path / "r.npz", replicates=[bench["xcos"]])
    with np.load(tmp_path / "r.npz") as data:
        assert data["score_names"].tolist() == ["xcos", "cosine", "standard_cosine", "xcos_replicate1"]
        np.testing.assert_array_equal(data["xcos_replicate1"], data["xcos"])


def test_xcos_contribution_map_sums_to_xcos_minus_the_threshold(bench):
    model, _, _ = load_xcos(bench["xcos"])
    images = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    others = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    maps = grid_methods(model, images, others, 0.25, np.random.default_rng(0))
    with torch.no_grad():
        xcos = model(images, others).xcos.double().numpy()
    np.testing.assert_allclose(maps["xcos_contribution"].support.sum(axis=(1, 2)), xcos - 0.25, atol=1e-6)
    np.testing.assert_allclose(maps["cosine_map"].against, -maps["cosine_map"].support)
    assert (maps["cosine_map"].dissimilarity >= 0).all()


def test_thresholds_faithfulness_and_sanity_stages_and_the_report_read_them(bench, tmp_path):
    from facetrust.explain.sanity_stage import SanitySettings, run_sanity
    from facetrust.explain.thresholds import fit_thresholds

    synth = bench["root"] / "synth"
    thresholds = fit_thresholds(bench["xcos"], bench["validation"], bench["occluders"],
                                synth / "pairs" / "synth_val.twins.npz", tmp_path / "t.json")
    assert thresholds["split"] == "synth_val" and thresholds["delta_cos"]["occluded_pairs"] > 0

    def faithfulness(name):
        return run_faithfulness(bench["xcos"], bench["pairs"], bench["occluders"], tmp_path / f"{name}.json",
                                tmp_path / f"{name}.npz", FAST, twins_npz=synth / "pairs" / "synth_lfw.twins.npz",
                                thresholds_json=tmp_path / "t.json", validation_set=bench["validation"])

    result = faithfulness("f")
    assert list(result["methods"]) == list(METHODS) and result["threshold_split"] == "synth_val"
    assert result["pairs"] == {"genuine": 3, "impostor": 3}
    for method, entry in result["methods"].items():
        assert ("vs_baseline" in entry["deletion"]) == (not method.startswith("random"))
        assert len(entry["insertion_blur"]["curves"]["fnmr_at_eer"]) == len(result["fractions"])
        estimate, low, high = entry["deletion"]["areas"]["fnmr_at_fmr"]
        assert low <= estimate <= high
    known = result["known_truth"]
    assert known["threshold_split"] == "synth_val" and 0 <= known["qualifying"] <= known["occluded_pairs"]
    again = faithfulness("g")
    assert json.dumps(again, sort_keys=True) == json.dumps(result, sort_keys=True)
    assert (tmp_path / "f.npz").read_bytes() == (tmp_path / "g.npz").read_bytes()
    sanity = run_sanity(bench["xcos"], bench["pairs"], bench["validation"], tmp_path / "t.json", tmp_path / "s.json",
                        tmp_path / "s.npz", SanitySettings(pairs=4, bootstrap=20, maps=FAST.maps))
    assert set(sanity["passes"]) == {m for m in METHODS if not m.startswith("random")}
    assert "perturbation" in sanity["seed_agreement"]
    # the report stage reads these files: table, figures, claims with a verdict each
    from facetrust.report.explanations_report import write_explanations_report

    claims = write_explanations_report(tmp_path / "f.json", tmp_path / "f.npz", tmp_path / "e.md",
                                       sanity_json=tmp_path / "s.json", sanity_examples=tmp_path / "s.npz",
                                       table_csv=tmp_path / "e.csv", curves_png=tmp_path / "c.png",
                                       maps_png=tmp_path / "m.png", cascade_png=tmp_path / "k.png",
                                       restoration_png=tmp_path / "r.png")
    assert claims and {c.verdict for c in claims} <= {"held", "did not hold", "not resolved", "not shown"}
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "k.png").stat().st_size > 0
    assert len((tmp_path / "e.csv").read_text().splitlines()) == 1 + len(METHODS)
    assert "validation split synth_val" in (tmp_path / "e.md").read_text()


def test_inversion_stage_runs_the_ablations_and_the_report_reads_it(bench, tmp_path):
    from explain_helpers import TINY_SYNTH
    from facetrust.cli.explain import _clean_renderings
    from facetrust.explain.inversion import InversionConfig
    from facetrust.explain.inversion_stage import real_class_images, run_inversion, write_inversion
    from facetrust.models.artifacts import load_margin, load_model
    from facetrust.report.inversion_report import write_inversion_report

    def parts(path):
        backbone, config, extras = load_model(path)
        return backbone, load_margin(config, extras)[0], tuple(config["input_size"])

    classes = [0, 2]
    real = real_class_images(bench["train"], classes, 2, (24, 24))
    config = InversionConfig(iterations=3, images_per_class=2, warmup_iterations=1, seed=5, gradient_checks=2)
    # the clean renderings follow the params' synth section (24 px here), not SynthConfig's defaults
    clean = _clean_renderings(classes, {"seed": 3, "synth": TINY_SYNTH}, None)
    assert clean[0].shape == (24, 24, 3)
    summary, images = run_inversion(parts(bench["model"]), {"v": parts(bench["verifier"]), "twin": parts(bench["model"])},
                                    {"v": real, "twin": real}, classes, config, clean=clean, n_boot=20)
    assert set(summary["variants"]) == {"full", "no_bn", "no_class"}
    assert set(summary["differences"]) == {"full_minus_no_bn", "full_minus_no_class"}
    assert set(summary["differences"]["full_minus_no_bn"]) >= {"verifier_target_probability", "verifier_margin",
                                                                "clean_correlation_margin", "clean_cosine_margin"}
    assert summary["chance"] == pytest.approx(1 / 6) and summary["primary_verifier"] == "v"
    full = summary["variants"]["full"]
    assert set(full["verifiers"]) == {"v", "twin"} and full["end_bn_loss"] > 0
    assert [g["iteration"] for g in full["gradient_norms"]] == [0, 2]
    assert full["gradient_norms"][0]["grad_norm_class"] > 0
    assert summary["variants"]["no_bn"]["gradient_norms"][0]["grad_norm_bn"] == 0.0
    write_inversion(summary | {"model": "m", "verifier": "v"}, images, clean, tmp_path / "i.json", tmp_path / "i.npz")
    with np.load(tmp_path / "i.npz") as data:
        assert data["images_full"].shape == (4, 3, 24, 24) and data["clean"].shape == (2, 24, 24, 3)
        assert not np.array_equal(data["images_full"], data["images_no_bn"])
    claims = write_inversion_report(tmp_path / "i.json", tmp_path / "i.npz", tmp_path / "i.md",
                                    table_csv=tmp_path / "i.csv", figure_png=tmp_path / "i.png")
    assert len(claims) >= 6 and (tmp_path / "i.png").read_bytes()[:4] == b"\x89PNG"


def test_explain_config_names_what_does_not_exist():
    base = {"models": {"arcface": {}, "cosface": {}},
            "datasets": {"pairs": {"synth_lfw": "x.bin"}, "validation": {"synth_val": "v.bin"}},
            "xcos": {"xcos": {"init_from": "models/arcface", "standard": "models/cosface"}},
            "explain": {"test_set": "synth_lfw"}, "inversion": {"model": "arcface", "verifier": "cosface"}}
    check_explain(base)
    for change, message in [
        ({"xcos": {"arcface": {"init_from": "models/arcface", "standard": "models/cosface"}}}, "also a key of models"),
        ({"xcos": {"xcos": {"init_from": "models/magface", "standard": "models/cosface"}}}, "xcos.xcos.init_from"),
        ({"inversion": {"model": "arcface", "verifier": "arcface"}}, "second, independently trained"),
        ({"inversion": {"model": "arcface", "verifier": None}}, "go together"),
        ({"models": {"arcface": {"backbone": "iresnet"}, "cosface": {"backbone": "iresnet", "train": {"seed": 7}}}},
         "architecture"),
        ({"models": {"arcface": {"backbone": "iresnet"}, "cosface": {"backbone": "sphere20"}}, "seed": 1}, "seed"),
        ({"explain": {"test_set": "lfw"}}, "explain.test_set"),
        ({"explain": {"test_set": "synth_lfw", "validation_set": "synth_lfw"}}, "explain.validation_set"),
        ({"datasets": {"pairs": {"synth_lfw": "x.bin"}, "validation": {"v": "x.bin"}}}, "cannot be a validation set"),
    ]:
        with pytest.raises(ConfigError, match=message):
            check_explain({**base, **change})
