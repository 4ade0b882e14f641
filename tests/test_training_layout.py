"""The layout a backbone trains in (``memory_format``, :func:`facetrust.train.trainer.training_layout`).

One CPU process trains channels-last (NHWC) where the backbone allows it; the result must stay
what the trainer promises in NCHW: the same bytes run to run, a resume equal to an uninterrupted
run, an NCHW checkpoint, and the same function up to float32 rounding (two steps from the same
initialisation agree with the NCHW run to 1e-3 while differing in their last bits, which shows
the layout did change)."""

from __future__ import annotations

import pytest
import torch

from facetrust.errors import ConfigError
from facetrust.models.artifacts import build_backbone_from_config
from facetrust.train.config import TrainConfig
from facetrust.train.distributed import DistInfo
from facetrust.train.trainer import nchw, train, training_layout
from train_helpers import assert_same_tree, make_tiny_rec, tiny_config

WIDE = {"layers": [1, 1, 1, 1], "width": 8}  # nhwc_safe: its strided 1x1 convolutions read >= 8 channels


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory):
    return make_tiny_rec(tmp_path_factory.mktemp("rec"))


def _load(path):
    return torch.load(path, weights_only=True)


def _trained(rec_dir, out, **overrides):
    lines = []
    path = train(tiny_config(backbone_options=WIDE, **overrides), rec_dir, out, log=lines.append)
    return _load(path), lines


def test_one_cpu_process_trains_channels_last_and_writes_an_nchw_checkpoint(rec_dir, tmp_path):
    state, lines = _trained(rec_dir, tmp_path / "a", epochs=1)
    assert "memory layout: channels_last" in lines
    tensors = [v for part in ("backbone", "head") for v in state[part].values()]
    tensors += [s["momentum_buffer"] for s in state["optimizer"]["state"].values()]
    assert any(t.dim() == 4 for t in tensors) and all(t.is_contiguous() for t in tensors)
    again, _ = _trained(rec_dir, tmp_path / "b", epochs=1)
    assert_same_tree(state, again)


def test_channels_last_is_the_nchw_function_up_to_rounding(rec_dir, tmp_path):
    nhwc, _ = _trained(rec_dir, tmp_path / "nhwc", epochs=1, max_steps=2)
    plain, lines = _trained(rec_dir, tmp_path / "nchw", epochs=1, max_steps=2, memory_format="contiguous")
    assert not any(line.startswith("memory layout") for line in lines)
    weights = [key for key, value in plain["backbone"].items() if value.dtype.is_floating_point]
    for key in weights:
        assert torch.allclose(nhwc["backbone"][key], plain["backbone"][key], atol=1e-3, rtol=1e-3), key
    assert any(not torch.equal(nhwc["backbone"][key], plain["backbone"][key]) for key in weights)


@pytest.mark.parametrize("stop_after_steps", [4, 6])  # an epoch end, and inside epoch 2
def test_a_channels_last_run_resumes_to_the_same_bytes(rec_dir, tmp_path, stop_after_steps):
    full, _ = _trained(rec_dir, tmp_path / "full")
    _trained(rec_dir, tmp_path / "resumed", max_steps=stop_after_steps)
    lines = []
    path = train(tiny_config(backbone_options=WIDE), rec_dir, tmp_path / "resumed", resume=True, log=lines.append)
    assert any(line.startswith("resuming") for line in lines)
    assert_same_tree(full, _load(path))


def _model(width):
    config = tiny_config(backbone_options={"layers": [1, 1, 1, 1], "width": width})
    return build_backbone_from_config(config), TrainConfig.from_dict(config)


def test_auto_keeps_nchw_where_channels_last_is_unsafe_or_unmeasured():
    narrow, config = _model(4)  # a strided 1x1 convolution reading 4 channels
    assert training_layout(narrow, config, DistInfo()) == "contiguous"
    assert narrow.conv1.weight.is_contiguous()
    wide, config = _model(8)
    assert training_layout(wide, config, DistInfo(world_size=2)) == "contiguous"  # data-parallel
    assert training_layout(wide, config, DistInfo(device=torch.device("cuda"))) == "contiguous"
    assert wide.conv1.weight.is_contiguous()
    assert training_layout(wide, config, DistInfo()) == "channels_last"
    assert wide.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not wide.conv1.weight.is_contiguous()


def test_channels_last_asked_for_an_unsafe_cpu_model_is_refused_before_any_output(rec_dir, tmp_path):
    with pytest.raises(ConfigError, match="memory_format.*channels_last"):
        train(tiny_config(memory_format="channels_last"), rec_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="'memory_format' is 'nhwc'; allowed: auto, channels_last, contiguous"):
        TrainConfig.from_dict(tiny_config(memory_format="nhwc"))


def test_nchw_copies_a_payload_without_touching_the_live_state():
    live = torch.zeros(2, 3, 4, 5).to(memory_format=torch.channels_last)
    state = torch.nn.BatchNorm2d(3).state_dict()
    payload = {"backbone": state, "optimizer": {"state": {0: {"momentum_buffer": live}}, "param_groups": [{"lr": 1}]}}
    out = nchw(payload)
    assert out["optimizer"]["state"][0]["momentum_buffer"].is_contiguous() and torch.equal(
        out["optimizer"]["state"][0]["momentum_buffer"], live)
    assert not payload["optimizer"]["state"][0]["momentum_buffer"].is_contiguous()  # the optimiser's own buffer
    assert type(out["backbone"]) is type(state) and out["backbone"]._metadata == state._metadata
    assert out["optimizer"]["param_groups"] == [{"lr": 1}]
