"""xCos training through the hook trainer (facetrust.train.xcos) and its checkpoint format."""

from __future__ import annotations

import pytest
import torch

from facetrust.errors import ConfigError, InputError
from facetrust.models.xcos import load_xcos
from facetrust.models.artifacts import load_xcos_checkpoint, save_checkpoint, xcos_checkpoint_path
from facetrust.models.artifacts import build_backbone_from_config, load_model
from facetrust.train.xcos import XCosConfig, XCosTrainer, train_xcos
from train_helpers import make_tiny_rec, tiny_config


def _fake_trained_model(out_dir, seed: int, size=(16, 16)):
    """A model directory with an untrained tiny iResNet saved as a training checkpoint."""
    config = tiny_config(input_size=list(size), seed=seed)
    torch.manual_seed(seed)
    backbone = build_backbone_from_config(config)
    save_checkpoint(out_dir / "checkpoint.pt", {"backbone": backbone.state_dict(), "head": {}, "config": config,
                                                "epoch": 1, "step": 1, "num_classes": 4,
                                                "feature_map_shape": list(backbone.feature_map_shape)})
    return out_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("xcos")
    rec = make_tiny_rec(root / "rec", num_classes=4, per_class=6, size=(24, 24))
    init = _fake_trained_model(root / "init", seed=1)
    standard = _fake_trained_model(root / "standard", seed=2, size=(16, 16))
    return root, rec, init, standard


def _config(init, standard, **overrides) -> XCosConfig:
    entry = {"init_from": str(init), "standard": str(standard), "input_size": [24, 24],
             "backbone_options": {"last_stage_stride": 1}, "head": {"kind": "cosface"},
             "train": {"epochs": 2, "batch_pairs": 4, "steps_per_epoch": 2, "lr": 0.05, "attention_lr": 1e-3,
                       **overrides}}
    return XCosConfig.from_entry(entry, seed=3, threads=1)


def test_training_writes_an_xcos_checkpoint_that_loads_and_repeats_byte_for_byte(setup):
    root, rec, init, standard = setup
    first = train_xcos(_config(init, standard, freeze_backbone=False), rec, root / "a", log=lambda _: None)
    second = train_xcos(_config(init, standard, freeze_backbone=False), rec, root / "b", log=lambda _: None)
    assert first == xcos_checkpoint_path(root / "a") and first.read_bytes() == second.read_bytes()
    model, config, extras = load_xcos(root / "a")
    assert model.grid_shape == (32, 3, 3)  # 24 px / 8 with the last stage at stride 1
    assert config["backbone_options"]["last_stage_stride"] == 1 and config["init_from"] == str(init)
    assert extras["step"] == 4 and extras["num_classes"] == 4
    log = (root / "a" / "fit_log.csv").read_text().splitlines()
    assert log[0].split(",")[:5] == ["epoch", "step", "loss", "identity", "xcos_mse"] and len(log) == 3
    # the backbone started from init_from wherever the shapes agree, and full training moved it
    start = load_model(init)[0].state_dict()["layer1.0.conv1.weight"]
    assert not torch.equal(model.backbone.state_dict()["layer1.0.conv1.weight"], start)


def test_the_frozen_branch_is_the_default_and_keeps_the_initial_backbone(setup):
    root, rec, init, standard = setup
    assert _config(init, standard).freeze_backbone
    train_xcos(_config(init, standard), rec, root / "frozen", log=lambda _: None)
    model, _, _ = load_xcos(root / "frozen")
    trained = model.backbone.state_dict()
    for key, value in load_model(init)[0].state_dict().items():
        if not key.startswith(("fc.", "features.")):  # the flatten/FC differ in shape (grid 3x3 vs 1x1)
            assert torch.equal(trained[key], value), key


def test_an_xcos_checkpoint_is_refused_as_a_training_checkpoint_and_vice_versa(setup):
    root, rec, init, standard = setup
    train_xcos(_config(init, standard), rec, root / "c", log=lambda _: None)
    with pytest.raises(InputError, match="not a facetrust training checkpoint"):
        load_model(root / "c" / "xcos.pt")
    with pytest.raises(InputError, match="not a facetrust xCos checkpoint"):
        load_xcos_checkpoint(init / "checkpoint.pt")


def test_bad_xcos_config_names_the_key():
    with pytest.raises(ConfigError, match="'batchpairs'"):
        XCosConfig.from_entry({"init_from": "a", "standard": "b", "train": {"batchpairs": 3}}, seed=0)
    with pytest.raises(ConfigError, match="lr_schedule"):
        XCosConfig.from_entry({"init_from": "a", "standard": "b", "train": {"lr_schedule": "step"}}, seed=0)
    with pytest.raises(ConfigError, match="standard"):
        XCosConfig.from_entry({"init_from": "a"}, seed=0)


def test_trainer_is_a_frozen_trainer_subclass():
    from facetrust.train.frozen import FrozenTrainer

    assert issubclass(XCosTrainer, FrozenTrainer)


def _weights(trainer):
    return {k: v.clone() for k, v in {**trainer.model.state_dict(), **trainer.head.state_dict()}.items()}


def test_the_feature_cache_trains_the_branch_exactly_as_the_uncached_path(setup):
    root, rec, init, standard = setup
    runs = {}
    for cached in (True, False):
        trainer = XCosTrainer(_config(init, standard, cache_features=cached), rec, root / f"cache{cached}",
                              log=lambda _: None, persist=False)
        trainer.fit()
        assert (trainer.cache is not None) == cached
        runs[cached] = trainer
    a, b = _weights(runs[True]), _weights(runs[False])
    untrained = XCosTrainer(_config(init, standard), rec, root / "x", persist=False, log=lambda _: None)
    untrained.build()
    # training moved the branch, so the equality below is not trivial
    assert not torch.allclose(untrained.model.grid_conv[0].weight, runs[True].model.grid_conv[0].weight)
    # A conv bias right before a BatchNorm gets a gradient that is zero up to rounding, which Adam
    # (the attention's optimiser) scales up to a full step, and the BN's running mean absorbs it:
    # neither changes any output, so they are compared through the outputs below.
    absorbed = [k for k in a if k.startswith("attention.") and (k.endswith("0.bias") or k.endswith("1.running_mean"))]
    for key in sorted(set(a) - set(absorbed)):
        assert torch.allclose(a[key].double(), b[key].double(), atol=1e-5), key
    # and the branch outputs on the same images agree
    images = torch.randn(3, 3, 24, 24)
    out_a, out_b = runs[True].model.eval()(images, images.flip(0)), runs[False].model.eval()(images, images.flip(0))
    assert torch.allclose(out_a.xcos, out_b.xcos, atol=1e-5)


def test_a_planted_cache_error_changes_the_branch(setup):
    """The cached path really reads the cache: corrupting it changes the trained branch."""
    root, rec, init, standard = setup
    from facetrust.train.xcos import prepare

    config = _config(init, standard)
    clean = XCosTrainer(config, rec, root / "p1", log=lambda _: None, persist=False)
    clean.fit()
    bad_setup = prepare(config, rec, log=lambda _: None)
    bad_setup.cache.feature_maps.mul_(-1.0)
    bad = XCosTrainer(config, rec, root / "p2", log=lambda _: None, persist=False, setup=bad_setup)
    bad.fit()
    assert not torch.allclose(clean.model.grid_conv[0].weight, bad.model.grid_conv[0].weight)


def test_select_chooses_on_the_validation_pairs_and_trains_the_replicates(setup, tmp_path):
    import json

    import io

    import numpy as np
    from PIL import Image

    from facetrust.data.binset import write_bin

    root, rec, init, standard = setup
    payloads = []
    for i in range(40):
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buffer, "JPEG")
        payloads.append(buffer.getvalue())
    validation = tmp_path / "val.bin"
    write_bin(validation, payloads, [True, False] * 10)
    config = _config(init, standard, select={"lr": [1e-6, 0.05]}, replicates=2)
    with pytest.raises(ConfigError, match="validation"):
        train_xcos(config, rec, tmp_path / "novalidation", log=lambda _: None)
    train_xcos(config, rec, tmp_path / "out", validation=validation, log=lambda _: None)
    record = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert record["validation_set"] == str(validation)
    mses = [c["mse"] for c in record["candidates"]]
    assert record["chosen"] == record["candidates"][mses.index(min(mses))]["values"]
    assert [r["seed"] for r in record["replicates"]] == [3, 4]
    assert (tmp_path / "out" / "xcos.pt").is_file() and (tmp_path / "out" / "replicate1" / "xcos.pt").is_file()
    assert load_xcos(tmp_path / "out" / "replicate1")[1]["seed"] == 4
