"""The trainer's SGD: PyTorch's fused CPU kernel, the for-loop implementation's weights bit for bit."""

import copy

import pytest
import torch

from facetrust.models import build_backbone
from facetrust.train.config import TrainConfig
from facetrust.train.trainer import _state_in_parameter_layout, build_optimizer


def _config(**train):
    settings = {"backbone": "iresnet", "backbone_options": {"layers": [1, 1, 1, 1], "width": 8},
                "embedding_size": 16, "input_size": [32, 32], "head": {"kind": "arcface"},
                "train": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, **train}}
    return TrainConfig.from_params({"models": {"m": settings}}, "m")


def _steps(model, optimizer, steps=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for group in optimizer.param_groups:  # a schedule moves the rate
            group["lr"] = 0.1 / (step + 1)
        for p in model.parameters():
            p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=generator))  # p's layout
        optimizer.step()


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_sgd_gives_the_for_loop_weights_bit_for_bit(channels_last):
    config = _config()
    torch.manual_seed(0)
    model = build_backbone("iresnet", embedding_size=16, layers=[1, 1, 1, 1], width=8, input_size=(32, 32))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    other = copy.deepcopy(model)
    fused = build_optimizer(list(model.parameters()), config, torch.device("cpu"))
    plain = torch.optim.SGD(other.parameters(), lr=config.lr, momentum=config.momentum,
                            weight_decay=config.weight_decay)
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    _steps(model, fused)
    _steps(other, plain)
    for (name, a), b in zip(model.named_parameters(), other.parameters()):
        assert torch.equal(a, b), name
    start = [p.detach().clone() for p in build_backbone("iresnet", embedding_size=16, layers=[1, 1, 1, 1],
                                                        width=8, input_size=(32, 32)).parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), start))  # the steps moved them


def test_resumed_momentum_takes_the_parameters_layout():
    """Checkpoints hold momentum NCHW; a channels-last run puts it back in its parameters' layout
    before the fused step, which walks memory in order (else it would pair the wrong elements)."""
    config = _config()
    torch.manual_seed(0)
    model = build_backbone("iresnet", embedding_size=16, layers=[1, 1, 1, 1], width=8, input_size=(32, 32))
    model = model.to(memory_format=torch.channels_last)
    reference = copy.deepcopy(model)
    optimizer = build_optimizer(list(model.parameters()), config, torch.device("cpu"))
    ref_optimizer = build_optimizer(list(reference.parameters()), config, torch.device("cpu"))
    _steps(model, optimizer, steps=2)
    _steps(reference, ref_optimizer, steps=2)
    saved = optimizer.state_dict()
    for state in saved["state"].values():  # as a checkpoint stores it
        state["momentum_buffer"] = state["momentum_buffer"].contiguous()
    resumed = build_optimizer(list(model.parameters()), config, torch.device("cpu"))
    resumed.load_state_dict(saved)
    _state_in_parameter_layout(resumed)
    assert all(resumed.state[p]["momentum_buffer"].stride() == p.stride() for p in model.parameters())
    _steps(model, resumed, steps=2, seed=5)
    _steps(reference, ref_optimizer, steps=2, seed=5)
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b)
