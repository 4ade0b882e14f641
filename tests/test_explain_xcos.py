"""xCos (Lin et al., arXiv 2003.05383): module shapes, attention, loss and training pieces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facetrust.errors import InputError
from facetrust.models.xcos import XCosModel, score_pairs, standard_cosine, xcos_loss
from facetrust.train.xcos_parts import build_optimizers, build_xcos, pair_batches, train_step
from facetrust.models import build_backbone

DEFAULT_OPTIONS = {"layers": [2, 2, 2, 2], "width": 16}  # the embedded default's models


def _backbone(size: int, width: int = 4, **options):
    torch.manual_seed(0)
    return build_backbone("iresnet", embedding_size=16, input_size=(size, size),
                          **{"layers": [1, 1, 1, 1], "width": width, **options})


def test_grid_is_7x7_at_112_and_at_least_6x6_for_the_embedded_default_at_48():
    model, head = build_xcos(_backbone(112), num_classes=5)
    assert model.grid(torch.zeros(2, 3, 112, 112)).shape == (2, 32, 7, 7)
    assert head.weight.shape == (5, 32 * 7 * 7)
    default = build_backbone("iresnet", embedding_size=128, input_size=(48, 48), last_stage_stride=1,
                             **DEFAULT_OPTIONS)
    model, _ = build_xcos(default, num_classes=5)
    output = model(torch.zeros(3, 3, 48, 48), torch.ones(3, 3, 48, 48))
    assert output.cosine_map.shape == output.attention.shape == (3, 6, 6)
    assert output.xcos.shape == (3,)


def test_attention_sums_to_one_and_xcos_of_a_face_with_itself_is_one():
    model, _ = build_xcos(_backbone(48, last_stage_stride=1), num_classes=3)
    model.eval()
    images = torch.randn(4, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    others = torch.randn(4, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        output = model(images, others)
        itself = model(images, images)
    assert torch.allclose(output.attention.sum(dim=(1, 2)), torch.ones(4), atol=1e-6)
    assert (output.attention > 0).all()
    assert torch.allclose(itself.xcos, torch.ones(4), atol=1e-5)
    assert (output.xcos < 0.9999).all()  # different faces: not trivially 1
    assert torch.allclose(output.xcos, (output.cosine_map * output.attention).sum(dim=(1, 2)), atol=1e-6)


def test_loss_is_identity_plus_mse_to_the_standard_cosine():
    model, head = build_xcos(_backbone(32), num_classes=3)
    images1, images2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    labels1, labels2 = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 2, 1, 1])
    target = torch.tensor([0.5, -0.2, 0.1, 0.9])
    loss = xcos_loss(model, head, images1, images2, labels1, labels2, target)
    assert torch.isclose(loss.total, loss.identity + loss.xcos_mse)
    assert torch.isclose(loss.xcos_mse, ((loss.output.xcos - target) ** 2).mean())
    weighted = xcos_loss(model, head, images1, images2, labels1, labels2, target, identity_weight=0.0)
    assert torch.isclose(weighted.total, weighted.xcos_mse)


def test_frozen_backbone_gets_no_update_and_the_branch_does():
    standard = _backbone(32).eval()
    model, head = build_xcos(_backbone(32), num_classes=3, freeze_backbone=True)
    optimizers = build_optimizers(model, head)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images1, images2 = torch.randn(6, 3, 32, 32), torch.randn(6, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    parts = train_step(model, head, standard, optimizers, images1, images2, labels, labels.roll(1))
    assert set(parts) >= {"loss", "identity", "xcos_mse"} and np.isfinite(parts["loss"])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not torch.equal(before["grid_conv.0.weight"], after["grid_conv.0.weight"])
    assert not torch.equal(before["attention.embed.0.weight"], after["attention.embed.0.weight"])
    assert optimizers.optimizers["adam"].defaults["amsgrad"] and optimizers.optimizers["sgd"].defaults["lr"] == 1e-3


def test_training_steps_pull_xcos_towards_the_standard_cosine():
    torch.manual_seed(0)
    standard = _backbone(32).eval()
    model, head = build_xcos(_backbone(32), num_classes=4, freeze_backbone=True)
    optimizers = build_optimizers(model, head, attention_lr=1e-2, lr=1e-2)
    images1, images2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    labels = torch.arange(8) % 4
    losses = [train_step(model, head, standard, optimizers, images1, images2, labels, labels)["xcos_mse"]
              for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]


def test_pair_batches_are_seeded_balanced_and_correctly_labelled():
    labels = np.repeat(np.arange(6), [1, 3, 4, 2, 5, 1])
    batches = list(pair_batches(labels, 10, np.random.default_rng(3), num_batches=5))
    again = list(pair_batches(labels, 10, np.random.default_rng(3), num_batches=5))
    assert all(np.array_equal(a.first, b.first) and np.array_equal(a.second, b.second) for a, b in zip(batches, again))
    for batch in batches:
        assert batch.same.sum() == 5 and len(batch.first) == 10
        assert np.array_equal(labels[batch.first] == labels[batch.second], batch.same)
        assert (batch.first != batch.second).all()
    # every genuine partner and every impostor class is reachable (no systematic gap)
    many = list(pair_batches(labels, 200, np.random.default_rng(0), num_batches=5))
    impostor_second = np.concatenate([b.second[~b.same] for b in many])
    assert set(impostor_second.tolist()) == set(range(labels.size))
    with pytest.raises(InputError, match="no class has two images"):
        next(pair_batches(np.arange(5), 4, np.random.default_rng(0)))


def test_score_pairs_returns_xcos_and_grid_cosine_per_pair():
    model, _ = build_xcos(_backbone(32), num_classes=3)
    pairs = [(torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)) for _ in range(2)]
    scores = score_pairs(model, pairs, total=6)
    assert scores["xcos"].shape == scores["cosine"].shape == (6,)
    assert np.all(np.abs(scores["xcos"]) <= 1 + 1e-6)
    target = standard_cosine(_backbone(32), *pairs[0])
    assert target.shape == (3,)
