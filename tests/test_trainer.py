"""Trainer: config, schedules, dataset, determinism, resume, checkpoints, heads."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from facetrust.data.transforms import normalize_batch
from facetrust.errors import ConfigError, InputError
from facetrust.models.artifacts import load_checkpoint, load_margin, load_model
from facetrust.train.config import TrainConfig
from facetrust.train.dataset import RecordDataset, fit_to_size, to_tensor
from facetrust.train.schedule import LRSchedule
from facetrust.train.trainer import run_train, train
from train_helpers import assert_same_tree, make_tiny_rec, tiny_config


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory):
    return make_tiny_rec(tmp_path_factory.mktemp("rec"))


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _log_rows(out_dir):
    with (out_dir / "train_log.csv").open() as handle:
        return list(csv.DictReader(handle))


# --- config -----------------------------------------------------------------------------------


def test_config_rejects_unknown_keys_naming_them():
    with pytest.raises(ConfigError, match="'epoch'"):
        TrainConfig.from_dict({"backbone": "iresnet18", "epoch": 3})


def test_config_rejects_bad_schedule_naming_allowed_values():
    with pytest.raises(ConfigError, match="step, cosine, poly"):
        TrainConfig.from_dict({"backbone": "iresnet18", "lr_schedule": "linear"})


def test_config_from_params_merges_model_train_block_and_top_level_seed():
    params = {"seed": 7, "threads": 2, "models": {"arc": {
        "method": "ArcFace", "backbone": "iresnet", "backbone_options": {"layers": [2, 2, 2, 2], "width": 8},
        "embedding_size": 64, "input_size": [32, 32], "head": {"kind": "arcface", "s": 32.0},
        "train": {"epochs": 4, "lr_schedule": "step", "milestones": [2, 3]}, "train_set": "synth"}}}
    config = TrainConfig.from_params(params, "arc")
    assert (config.seed, config.threads, config.epochs, config.input_size) == (7, 2, 4, (32, 32))
    assert config.milestones == [2, 3] and config.head == {"kind": "arcface", "s": 32.0}
    with pytest.raises(ConfigError, match="no model 'nope'"):
        TrainConfig.from_params(params, "nope")


# --- schedules --------------------------------------------------------------------------------


def _lrs(kind, **kwargs):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = LRSchedule(optimizer, kind, 0.1, steps_per_epoch=10, epochs=5, **kwargs)
    lrs = []
    for _ in range(50):
        lrs.append(optimizer.param_groups[0]["lr"])
        schedule.step()
    return lrs


def test_warmup_is_linear_then_cosine_decays_to_zero():
    lrs = _lrs("cosine", warmup_epochs=1)
    assert lrs[:10] == pytest.approx([0.1 * (i + 1) / 10 for i in range(10)])
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[30] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-3


def test_step_schedule_multiplies_by_gamma_at_milestone_epochs():
    lrs = _lrs("step", milestones=[2, 4], gamma=0.1)
    assert lrs[19] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.01) and lrs[40] == pytest.approx(0.001)


def test_poly_schedule_is_insightface_power_two():
    lrs = _lrs("poly", warmup_epochs=0)
    assert lrs[25] == pytest.approx(0.1 * (1 - 25 / 50) ** 2)


# --- dataset ----------------------------------------------------------------------------------


def test_112x96_input_is_the_centre_crop_of_112x112():
    image = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    assert np.array_equal(fit_to_size(image, (112, 96)), image[:, 8:104])
    assert fit_to_size(image, (32, 32)).shape == (32, 32, 3)
    assert fit_to_size(image, (112, 112)) is image


def test_pixels_are_normalised_like_insightface():
    image = np.array([[[0, 255, 127]]], dtype=np.uint8)
    tensor = to_tensor(image)
    assert tensor.shape == (3, 1, 1)
    assert tensor.flatten().tolist() == pytest.approx([-1.0, 1.0, (127 - 127.5) / 127.5])


def test_dataset_reads_records_and_flips_from_seed_epoch_index(rec_dir):
    dataset = RecordDataset(rec_dir, (16, 16), flip=True, seed=5)
    plain = RecordDataset(rec_dir, (16, 16), flip=False)
    assert len(dataset) == 32 and dataset.num_classes == 4
    assert dataset.labels.tolist() == [c for c in range(4) for _ in range(8)]
    flips = [dataset.flips(i) for i in range(32)]
    assert 0 < sum(flips) < 32
    for i in range(32):
        image, label = dataset[i]
        reference, _ = plain[i]
        assert int(label) == i // 8
        assert torch.equal(image, reference.flip(-1) if flips[i] else reference)
    dataset.set_epoch(1)
    assert [dataset.flips(i) for i in range(32)] != flips
    assert [RecordDataset(rec_dir, (16, 16), seed=5).flips(i) for i in range(32)] == flips


# --- training ---------------------------------------------------------------------------------


def test_training_writes_checkpoint_config_and_log_and_learns(rec_dir, tmp_path):
    path = train(tiny_config(epochs=4), rec_dir, tmp_path)
    assert path == tmp_path / "checkpoint.pt"
    state = _load(path)
    assert (state["epoch"], state["step"], state["num_classes"]) == (4, 16, 4)
    assert (tmp_path / "config.json").is_file()
    rows = _log_rows(tmp_path)
    assert [r["step"] for r in rows] == [str(s) for s in range(2, 17, 2)]
    assert set(rows[0]) == {"epoch", "step", "loss", "accuracy", "lr", "images_per_s"}
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


def test_same_config_twice_gives_identical_checkpoint(rec_dir, tmp_path):
    a = train(tiny_config(epochs=1), rec_dir, tmp_path / "a")
    b = train(tiny_config(epochs=1), rec_dir, tmp_path / "b")
    assert_same_tree(_load(a), _load(b))
    c = train(tiny_config(epochs=1, seed=1), rec_dir, tmp_path / "c")
    assert not torch.equal(_load(a)["backbone"]["fc.weight"], _load(c)["backbone"]["fc.weight"])


@pytest.mark.parametrize("stop_after_steps", [4, 6])  # an epoch end, and inside epoch 2
def test_resume_after_kill_gives_identical_checkpoint(rec_dir, tmp_path, stop_after_steps):
    full = train(tiny_config(), rec_dir, tmp_path / "full")
    interrupted = train(tiny_config(max_steps=stop_after_steps), rec_dir, tmp_path / "resumed")
    assert _load(interrupted)["step"] == stop_after_steps
    # a killed run may have logged past its checkpoint: those rows are dropped on resume
    with (tmp_path / "resumed" / "train_log.csv").open("a") as handle:
        handle.write("2,99,0.0,0.0,0.0,0.0\n")
    resumed = train(tiny_config(), rec_dir, tmp_path / "resumed", resume=True)
    assert_same_tree(_load(full), _load(resumed))
    steps = [r["step"] for r in _log_rows(tmp_path / "resumed")]
    assert steps == [r["step"] for r in _log_rows(tmp_path / "full")]


def test_resume_refuses_a_changed_config(rec_dir, tmp_path):
    train(tiny_config(max_steps=2), rec_dir, tmp_path)
    with pytest.raises(ConfigError, match="lr"):
        train(tiny_config(lr=0.2), rec_dir, tmp_path, resume=True)


def test_data_loader_workers_do_not_change_the_result(rec_dir, tmp_path):
    a = train(tiny_config(epochs=1, num_workers=0), rec_dir, tmp_path / "a")
    b = train(tiny_config(epochs=1, num_workers=2), rec_dir, tmp_path / "b")
    sa, sb = _load(a), _load(b)
    sa["config"].pop("num_workers"), sb["config"].pop("num_workers")
    assert_same_tree(sa, sb)


def test_load_model_returns_the_trained_backbone_in_eval_mode(rec_dir, tmp_path):
    train(tiny_config(epochs=1), rec_dir, tmp_path)
    backbone, config, extras = load_model(tmp_path)
    assert not backbone.training
    assert config["backbone"] == "iresnet" and extras["num_classes"] == 4
    state = _load(tmp_path / "checkpoint.pt")
    assert all(torch.equal(v, state["backbone"][k]) for k, v in backbone.state_dict().items())
    head, scale_head = load_margin(config, extras)
    assert scale_head is None and head.weight.shape == (4, 16)


def test_bad_checkpoint_raises_input_error_naming_the_file(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="checkpoint.pt"):
        load_model(tmp_path)
    # an arbitrary pickled object is refused by weights_only=True, never executed
    torch.save({"format": "facetrust-train-checkpoint", "evil": InputError("x")}, tmp_path / "checkpoint.pt")
    with pytest.raises(InputError, match="checkpoint.pt"):
        load_checkpoint(tmp_path)
    with pytest.raises(InputError, match="no checkpoint"):
        load_model(tmp_path / "missing")


def test_scaleface_trains_a_scale_head_on_the_feature_map(rec_dir, tmp_path):
    config = tiny_config(epochs=1, head={"kind": "scaleface", "m": 0.3, "s_max": 32.0, "hidden": 8})
    path = train(config, rec_dir, tmp_path)
    state = _load(path)
    assert state["scale_head"] is not None
    backbone, config_dict, extras = load_model(tmp_path)
    head, scale_head = load_margin(config_dict, extras)
    dataset = RecordDataset(rec_dir, (16, 16), flip=False)
    images = normalize_batch(torch.stack([dataset[i][0] for i in range(0, 32, 4)]))
    with torch.no_grad():
        _, feature_map = backbone(images, return_feature_map=True)
        scales = scale_head(feature_map)
    # s = s_max * sigmoid(.): within [0, s_max] (float32 sigmoid may saturate at the ends)
    assert scales.shape == (8,) and bool(((scales >= 0) & (scales <= 32)).all())
    assert len(set(scales.tolist())) > 1  # a per-sample scale, not a constant


def test_magface_regulariser_enters_the_loss(rec_dir, tmp_path):
    config = tiny_config(epochs=1, head={"kind": "magface", "s": 16.0, "lambda_g": 35.0})
    train(config, rec_dir, tmp_path)
    plain = tiny_config(epochs=1, head={"kind": "magface", "s": 16.0, "lambda_g": 0.0})
    train(plain, rec_dir, tmp_path / "plain")
    assert float(_log_rows(tmp_path)[0]["loss"]) > float(_log_rows(tmp_path / "plain")[0]["loss"])


def test_too_small_dataset_is_an_input_error(rec_dir, tmp_path):
    with pytest.raises(InputError, match="fewer than one batch"):
        train(tiny_config(batch_size=64), rec_dir, tmp_path)


def test_run_train_reads_the_model_from_params(rec_dir, tmp_path):
    params = {"seed": 3, "threads": 1, "datasets": {"train": str(rec_dir)},
              "models": {"tiny": {"backbone": "iresnet", "backbone_options": {"layers": [1, 1, 1, 1], "width": 4},
                                  "embedding_size": 16, "input_size": [16, 16],
                                  "head": {"kind": "cosface", "s": 16.0, "m": 0.2},
                                  "train": {"epochs": 1, "batch_size": 8}}}}
    path = run_train(params, "tiny", tmp_path)
    assert _load(path)["config"]["head"]["kind"] == "cosface"


def test_scale_head_on_a_frozen_trained_model_leaves_the_model_untouched(rec_dir, tmp_path):
    base = train(tiny_config(epochs=1), rec_dir, tmp_path / "base")
    config = tiny_config(epochs=1, head={"kind": "scaleface", "m": 0.3, "s_max": 32.0, "hidden": 8},
                         init_from=str(tmp_path / "base"), freeze_backbone=True, freeze_head=True)
    scaled = _load(train(config, rec_dir, tmp_path / "scale"))
    trained = _load(base)
    assert_same_tree(scaled["backbone"], trained["backbone"])  # weights and BN statistics
    assert torch.equal(scaled["head"]["weight"], trained["head"]["weight"])
    # only the scale head is in the optimizer, and it moved
    assert len(scaled["optimizer"]["param_groups"][0]["params"]) == len(scaled["scale_head"]) - 3
    fresh = _load(train(dict(config, epochs=1, max_steps=1, lr=1e-12), rec_dir, tmp_path / "fresh"))
    assert not torch.equal(fresh["scale_head"]["mlp.1.weight"], scaled["scale_head"]["mlp.1.weight"])


def test_freezing_needs_a_model_to_start_from():
    with pytest.raises(ConfigError, match="init_from"):
        TrainConfig.from_dict(tiny_config(freeze_backbone=True))


@pytest.mark.parametrize("stop_after_steps", [4, 6])  # an epoch end, and inside epoch 2
def test_frozen_scale_head_resumes_to_an_identical_checkpoint(rec_dir, tmp_path, stop_after_steps):
    """The scale predictor trains on the frozen-backbone trainer (train.scale_head); a killed run
    resumed ends bit-identical to an uninterrupted one, like the backbone trainer."""
    train(tiny_config(epochs=1), rec_dir, tmp_path / "base")
    config = tiny_config(epochs=2, head={"kind": "scaleface", "m": 0.3, "s_max": 32.0, "hidden": 8},
                         init_from=str(tmp_path / "base"), freeze_backbone=True, freeze_head=True)
    full = train(config, rec_dir, tmp_path / "full")
    interrupted = train(dict(config, max_steps=stop_after_steps), rec_dir, tmp_path / "resumed")
    assert _load(interrupted)["step"] == stop_after_steps
    resumed = train(config, rec_dir, tmp_path / "resumed", resume=True)
    assert_same_tree(_load(full), _load(resumed))
    assert [r["step"] for r in _log_rows(tmp_path / "resumed")] == [r["step"] for r in _log_rows(tmp_path / "full")]


def test_frozen_scale_head_checkpoint_is_the_same_bytes_twice(rec_dir, tmp_path):
    train(tiny_config(epochs=1), rec_dir, tmp_path / "base")
    config = tiny_config(epochs=1, head={"kind": "scaleface", "m": 0.3, "s_max": 32.0, "hidden": 8},
                         init_from=str(tmp_path / "base"), freeze_backbone=True, freeze_head=True)
    a, b = (train(config, rec_dir, tmp_path / name) for name in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("torn", ["5,", "5,4", "2,3,0.5,0.1,0.0", "x,y,z,0,0,0"])
def test_resume_after_a_torn_log_line_keeps_only_complete_rows(rec_dir, tmp_path, torn):
    full = train(tiny_config(), rec_dir, tmp_path / "full")
    train(tiny_config(max_steps=4), rec_dir, tmp_path / "resumed")
    with (tmp_path / "resumed" / "train_log.csv").open("a") as handle:
        handle.write(torn)  # a kill in the middle of writing a row: no newline, columns missing
    resumed = train(tiny_config(), rec_dir, tmp_path / "resumed", resume=True)
    assert_same_tree(_load(full), _load(resumed))
    full_rows, resumed_rows = _log_rows(tmp_path / "full"), _log_rows(tmp_path / "resumed")
    assert [r["step"] for r in resumed_rows] == [r["step"] for r in full_rows]
    assert all(len(r) == len(full_rows[0]) and None not in r.values() for r in resumed_rows)
