"""The backbone-output cache (facetrust.backbone_cache): the embed jobs of one backbone share one
backbone pass, and every file they write is the one computing everything gives, byte for byte."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from explain_helpers import model_config, tiny_benchmark
from facetrust import backbone_cache
from facetrust.embed import run_embed
from facetrust.models.artifacts import build_backbone_from_config, build_margin, save_checkpoint


def _save_model(out_dir: Path, seed: int = 0, width: int = 8) -> Path:
    """An untrained width-8 iResNet (channels-last at inference) with its ArcFace head."""
    config = model_config(24, seed, width=width)
    torch.manual_seed(seed)
    backbone = build_backbone_from_config(config)
    margin, _ = build_margin(config, 6, backbone.feature_map_shape)
    save_checkpoint(Path(out_dir) / "checkpoint.pt", {
        "backbone": backbone.state_dict(), "head": margin.state_dict(), "config": config, "epoch": 1, "step": 1,
        "num_classes": 6, "feature_map_shape": list(backbone.feature_map_shape)})
    return Path(out_dir)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny benchmark, a model, an SCF head fitted on it (reads the feature map) and the
    reference embeddings computed with every cache off."""
    from facetrust.train.fit_head import fit_head

    root = tmp_path_factory.mktemp("backbone_cache")
    bench = tiny_benchmark(root / "bench")
    model = _save_model(root / "model")
    mp = pytest.MonkeyPatch()
    mp.setenv("FACETRUST_CACHE_DIR", "off")
    try:
        fit_head("scf", model, bench / "train", root / "scf",
                 {"epochs": 1, "batch_size": 8, "hidden": [8], "extract_batch_size": 16, "device": "cpu"})
        testset = bench / "pairs" / "synth_lfw.bin"
        refs = {name: root / f"ref_{name}.npz" for name in ("plain", "scf", "entropy")}
        for name, kwargs in (("plain", {"uncertainty": "emb_norm"}), ("scf", {"head_dir": root / "scf"}),
                             ("entropy", {"uncertainty": "entropy"})):
            run_embed(model, testset, refs[name], batch_size=16, **kwargs)
    finally:
        mp.undo()
    return {"root": root, "model": model, "scf": root / "scf", "testset": testset, "refs": refs}


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "backbone").glob("*.npz"))


def test_variants_read_one_backbone_pass_and_write_the_same_bytes(setup, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FACETRUST_CACHE_DIR", str(tmp_path / "cache"))
    out = {name: tmp_path / f"{name}.npz" for name in ("plain", "scf", "entropy")}
    run_embed(setup["model"], setup["testset"], out["plain"], batch_size=16, uncertainty="emb_norm")
    assert len(_entries(tmp_path / "cache")) == 1
    # the other variants must not run the backbone at all
    from facetrust.models.backbones.iresnet import IResNet

    def no_forward(self, x, return_feature_map=False):
        raise AssertionError("the backbone ran although its outputs are cached")

    monkeypatch.setattr(IResNet, "forward", no_forward)
    with caplog.at_level(logging.INFO, logger="facetrust.embed"):
        run_embed(setup["model"], setup["testset"], out["scf"], batch_size=16, head_dir=setup["scf"])
        run_embed(setup["model"], setup["testset"], out["entropy"], batch_size=16, uncertainty="entropy")
    assert caplog.text.count("from the cache") == 2
    for name in out:
        assert out[name].read_bytes() == setup["refs"][name].read_bytes(), name
    assert len(_entries(tmp_path / "cache")) == 1


def test_a_head_variant_first_fills_the_cache_for_the_plain_model(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("FACETRUST_CACHE_DIR", str(tmp_path / "cache"))
    run_embed(setup["model"], setup["testset"], tmp_path / "scf.npz", batch_size=16, head_dir=setup["scf"])
    run_embed(setup["model"], setup["testset"], tmp_path / "plain.npz", batch_size=16, uncertainty="emb_norm")
    assert (tmp_path / "plain.npz").read_bytes() == setup["refs"]["plain"].read_bytes()
    assert (tmp_path / "scf.npz").read_bytes() == setup["refs"]["scf"].read_bytes()
    assert len(_entries(tmp_path / "cache")) == 1


def test_another_model_set_batch_or_flip_is_another_entry(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("FACETRUST_CACHE_DIR", str(tmp_path / "cache"))
    cache = tmp_path / "cache"
    run_embed(setup["model"], setup["testset"], tmp_path / "a.npz", batch_size=16)
    run_embed(setup["model"], setup["testset"], tmp_path / "b.npz", batch_size=8)
    run_embed(setup["model"], setup["testset"], tmp_path / "c.npz", batch_size=16, flip=False)
    other = _save_model(tmp_path / "other", seed=1)
    run_embed(other, setup["testset"], tmp_path / "d.npz", batch_size=16)
    copy = tmp_path / "set.bin"
    data = bytearray(setup["testset"].read_bytes())
    copy.write_bytes(bytes(data))
    run_embed(setup["model"], copy, tmp_path / "e.npz", batch_size=16)  # the same content: the same entry
    assert len(_entries(cache)) == 4
    # the same weights under other settings (e.g. another stride in the config) are another entry
    module = torch.nn.Linear(2, 2)
    assert backbone_cache.entry_key(module, [copy], {"a": 1}) == backbone_cache.entry_key(module, [copy], {"a": 1})
    assert backbone_cache.entry_key(module, [copy], {"a": 1}) != backbone_cache.entry_key(module, [copy], {"a": 2})


def test_a_damaged_entry_is_computed_again(setup, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FACETRUST_CACHE_DIR", str(tmp_path / "cache"))
    run_embed(setup["model"], setup["testset"], tmp_path / "a.npz", batch_size=16, uncertainty="emb_norm")
    entry, = _entries(tmp_path / "cache")
    entry.write_bytes(entry.read_bytes()[:200])
    with caplog.at_level(logging.WARNING):
        run_embed(setup["model"], setup["testset"], tmp_path / "b.npz", batch_size=16, uncertainty="emb_norm")
    assert "damaged backbone-output cache entry" in caplog.text
    assert (tmp_path / "b.npz").read_bytes() == setup["refs"]["plain"].read_bytes()
    assert entry.stat().st_size > 200  # written again, whole


def test_sets_above_the_entry_bound_and_a_disabled_cache_store_nothing(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("FACETRUST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(backbone_cache, "MAX_ENTRY_BYTES", 1024)
    run_embed(setup["model"], setup["testset"], tmp_path / "a.npz", batch_size=16)
    assert not _entries(tmp_path / "cache")
    monkeypatch.undo()
    monkeypatch.setenv("FACETRUST_CACHE_DIR", "off")
    run_embed(setup["model"], setup["testset"], tmp_path / "b.npz", batch_size=16)
    assert backbone_cache.cache_root() is None


def test_the_directory_is_pruned_oldest_first(tmp_path, monkeypatch):
    monkeypatch.setenv("FACETRUST_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(backbone_cache, "MAX_TOTAL_BYTES", 3000)
    for i, key in enumerate(("a", "b", "c")):
        backbone_cache.store(key, {"x": np.zeros(200, np.float32) + i})
    names = [p.stem for p in sorted((tmp_path / "backbone").glob("*.npz"))]
    assert "c" in names and "a" not in names
    assert np.array_equal(backbone_cache.load("c")["x"], np.full(200, 2, np.float32))


@pytest.mark.parametrize("name", ["iresnet", "mobilefacenet", "mobilenet_sphereface", "resnet18_se", "sphere4"])
def test_every_backbone_gives_the_same_embedding_with_or_without_its_feature_map(name):
    """The cache is filled by a pass that keeps the feature map; a variant that does not read it
    would have called ``forward(x)``: the embedding must be the same bytes."""
    from facetrust.models.registry import build_backbone, inference_layout

    torch.manual_seed(0)
    size = (24, 24) if name in ("iresnet", "mobilefacenet", "resnet18_se") else (28, 24)
    options = {"width": 8} if name in ("iresnet", "mobilefacenet", "resnet18_se", "mobilenet_sphereface") else {}
    if name == "iresnet":
        options["layers"] = [1, 1, 1, 1]
    try:
        backbone = build_backbone(name, embedding_size=16, input_size=size, **options)
    except Exception as error:  # noqa: BLE001 - a geometry this backbone refuses: try its smallest
        pytest.skip(f"{name}: {error}")
    backbone = inference_layout(backbone.eval())
    x = torch.randn(5, 3, *size)
    with torch.no_grad():
        plain = backbone(x)
        with_map, feature_map = backbone(x, return_feature_map=True)
    assert torch.equal(plain, with_map)
    assert tuple(feature_map.shape[1:]) == tuple(backbone.feature_map_shape)


def test_the_heads_of_one_model_share_the_training_set_features(setup, tmp_path, monkeypatch, caplog):
    """fit-head: the first head extracts the frozen backbone's features of the training set, the
    next ones read them; every head is the bytes of a fit with the cache off."""
    from facetrust.train.fit_head import fit_head

    monkeypatch.setenv("FACETRUST_CACHE_DIR", str(tmp_path / "cache"))
    options = {"epochs": 1, "batch_size": 8, "hidden": [8], "extract_batch_size": 16, "device": "cpu"}
    train = setup["root"] / "bench" / "train"
    fit_head("pfe", setup["model"], train, tmp_path / "pfe", options)
    assert len(_entries(tmp_path / "cache")) == 1
    with caplog.at_level(logging.INFO, logger="facetrust.train.fit_head"):
        fit_head("scf", setup["model"], train, tmp_path / "scf", options)
    assert "backbone features from the cache" in caplog.text
    assert (tmp_path / "scf" / "head.pt").read_bytes() == (setup["scf"] / "head.pt").read_bytes()
    assert len(_entries(tmp_path / "cache")) == 1


def test_a_model_whose_weights_torch_does_not_hold_is_never_cached(setup, tmp_path, monkeypatch):
    """An ONNX session's wrapper has no torch parameters: the key could not tell two models apart."""
    from facetrust.embed import _cache_entry, _TestSet

    class Wrapper(torch.nn.Module):
        feature_map_shape = (4, 2, 2)

        def forward(self, x, return_feature_map=False):
            return x

    monkeypatch.setenv("FACETRUST_CACHE_DIR", str(tmp_path / "cache"))
    config = {"embedding_size": 16, "input_size": [24, 24]}
    data = _TestSet(setup["testset"])
    assert _cache_entry(Wrapper(), config, data, 16, True) is None
    with_weights = Wrapper()
    with_weights.scale = torch.nn.Parameter(torch.ones(1))
    assert _cache_entry(with_weights, config, data, 16, True) is not None
