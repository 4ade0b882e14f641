"""xCos training through the hook trainer (facetrust.train.xcos) and its checkpoint format."""

from __future__ import annotations

import pytest
import torch

from facetrust.errors import ConfigError, InputError
from facetrust.explain.xcos import load_xcos
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
    first = train_xcos(_config(init, standard), rec, root / "a", log=lambda _: None)
    second = train_xcos(_config(init, standard), rec, root / "b", log=lambda _: None)
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


def test_frozen_branch_option_keeps_the_initial_backbone(setup):
    root, rec, init, standard = setup
    train_xcos(_config(init, standard, freeze_backbone=True), rec, root / "frozen", log=lambda _: None)
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
