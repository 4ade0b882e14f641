"""Margin heads: hand-computed logits, numerical safety, schedules, and agreement with
pytorch-metric-learning (an independent implementation)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facetrust.errors import ConfigError, InputError
from facetrust.models.margins import (
    ScaleHead,
    angular_target,
    available_heads,
    build_head,
    chebyshev_cos_multiple,
)

S = 64.0
THETA = math.pi / 3  # angle between the embedding and class 0's weight in the 2-D example


def two_class_example(kind: str, radius: float = 2.0, theta: float = THETA, **options):
    """Class weights along the axes; one embedding of norm ``radius`` at ``theta`` from class 0."""
    head = build_head(kind, 2, 2, **options).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.5]]))  # norms must not matter
    x = radius * torch.tensor([[math.cos(theta), math.sin(theta)]], dtype=torch.float64)
    return head, x, torch.tensor([0])


# cos θ to class 1 is cos(π/2 − θ) = sin θ; every kind leaves it without margin.
def expected_target(kind: str) -> tuple[float, float]:
    """(target logit, non-target logit) for the default two-class example, computed by hand."""
    c0, c1 = math.cos(THETA), math.sin(THETA)
    if kind == "normface":
        return S * c0, S * c1
    if kind == "cosface":
        return S * (c0 - 0.35), S * c1
    if kind == "arcface":
        return S * math.cos(THETA + 0.5), S * c1
    if kind == "combined":  # defaults m1=1, m2=0.3, m3=0.2
        return S * (math.cos(THETA + 0.3) - 0.2), S * c1
    if kind == "magface":  # ‖x‖ = 60 -> m = 0.45 + 0.35·(60 − 10)/100
        return S * math.cos(THETA + 0.625), S * c1
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["normface", "cosface", "arcface", "combined"])
def test_hand_computed_logits_on_two_class_example(kind):
    head, x, y = two_class_example(kind)
    logits = head(x, y)
    assert logits[0].tolist() == pytest.approx(expected_target(kind), abs=1e-9)
    # Evaluation (no labels): the plain scaled cosines.
    assert head(x)[0].tolist() == pytest.approx([S * math.cos(THETA), S * math.sin(THETA)], abs=1e-9)


def test_magface_hand_computed_logits_and_regulariser():
    head, x, y = two_class_example("magface", radius=60.0)
    logits = head(x, y)
    assert logits[0].tolist() == pytest.approx(expected_target("magface"), abs=1e-9)
    assert head.extra_loss().item() == pytest.approx(35.0 * (60.0 / 110.0**2 + 1.0 / 60.0), rel=1e-12)
    head(x)  # an evaluation forward carries no regulariser
    assert head.extra_loss().item() == 0.0


def test_sphereface_target_is_feature_norm_times_annealed_psi():
    # m = 4, θ = π/3: 4θ = 4π/3 lies in branch k = 1, ψ = −cos(4π/3) − 2 = −1.5.
    psi = -math.cos(4 * THETA) - 2
    head, x, y = two_class_example("sphereface", radius=2.5, base=0.0, lambda_min=0.0)
    assert head(x, y)[0].tolist() == pytest.approx([2.5 * psi, 2.5 * math.sin(THETA)], abs=1e-9)
    head, x, y = two_class_example("sphereface", radius=2.5, base=0.0, lambda_min=5.0)
    assert head(x, y)[0, 0].item() == pytest.approx(2.5 * (5 * math.cos(THETA) + psi) / 6, abs=1e-9)
    assert head(x)[0].tolist() == pytest.approx([2.5 * math.cos(THETA), 2.5 * math.sin(THETA)], abs=1e-9)


def test_softmax_is_an_unnormalised_linear_layer_with_bias():
    head = build_head("softmax", 3, 4)
    assert head.weight.shape == (4, 3) and head.bias.shape == (4,)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0]))
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1)) * 7
    expected = x @ head.weight.T + head.bias
    assert torch.allclose(head(x, torch.tensor([0, 1, 2, 3, 0])), expected)
    assert torch.allclose(head(x), expected)


def test_arcface_past_pi_minus_m_uses_insightface_linear_fallback():
    theta = math.radians(170)  # θ + 0.5 > π
    head, x, y = two_class_example("arcface", theta=theta)
    assert head(x, y)[0, 0].item() == pytest.approx(S * (math.cos(theta) - 0.5 * math.sin(0.5)), abs=1e-9)
    head, x, y = two_class_example("arcface", theta=math.radians(100), easy_margin=True)
    assert head(x, y)[0, 0].item() == pytest.approx(S * math.cos(math.radians(100)), abs=1e-9)  # cos θ < 0: no margin
    head, x, y = two_class_example("arcface", theta=math.radians(80), easy_margin=True)
    assert head(x, y)[0, 0].item() == pytest.approx(S * math.cos(math.radians(80) + 0.5), abs=1e-9)


def test_arcface_target_logit_decreases_monotonically_in_theta():
    cos = torch.cos(torch.linspace(0, math.pi, 2001, dtype=torch.float64))
    target = angular_target(cos, m2=0.5, extension="linear")
    assert (target[1:] <= target[:-1]).all()


def test_chebyshev_cos_multiple_equals_cos_of_m_arccos():
    c = torch.linspace(-1, 1, 401, dtype=torch.float64)
    for m in range(0, 5):
        assert torch.allclose(chebyshev_cos_multiple(c, m), torch.cos(m * torch.acos(c)), atol=1e-12)


@pytest.mark.parametrize("m1,m2", [(1, 0.0), (2, 0.0), (3, 0.0), (4, 0.0), (2, 0.3)])
def test_psi_is_continuous_and_decreasing_on_zero_to_pi(m1, m2):
    theta = torch.linspace(0, math.pi, 4001, dtype=torch.float64)[1:-1]
    psi = angular_target(torch.cos(theta), m1=m1, m2=m2, extension="psi")
    steps = psi[1:] - psi[:-1]
    assert (steps < 0).all()
    assert steps.abs().max() < 0.02  # no jumps between branches
    if m2 == 0:  # ψ spans [1, −(2m − 1)] (SphereFace Eq. 6)
        assert psi[0].item() == pytest.approx(1.0, abs=1e-5) and psi[-1].item() == pytest.approx(1 - 2 * m1, abs=1e-5)


def test_sphereface_lambda_schedule_values_and_checkpointed_iteration():
    head = build_head("sphereface", 4, 3)
    fusion = head.fusion
    # λ = max(5, 1000·(1 + 0.12·iter)^−1); the first training forward uses iter = 1.
    assert fusion.current_lambda == 1000.0
    x, y = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1, 2])
    head.train()
    head(x, y)
    assert int(fusion.iteration) == 1 and fusion.current_lambda == pytest.approx(1000 / 1.12)
    for iteration, lam in [(100, 1000 / 13), (1000, 1000 / 121), (1658, 1000 / 199.96), (1659, 5.0), (100000, 5.0)]:
        assert float(fusion.lambda_at(iteration)) == pytest.approx(lam)
    head.eval()
    head(x, y)
    assert int(fusion.iteration) == 1  # evaluation does not advance the schedule
    head.train()
    head(x, y)
    restored = build_head("sphereface", 4, 3)
    restored.load_state_dict(head.state_dict())
    assert int(restored.fusion.iteration) == 2 and "fusion.iteration" in head.state_dict()


def test_scaleface_broadcasts_one_scale_per_sample():
    head = build_head("scaleface", 2, 2).double()
    with torch.no_grad():
        head.weight.copy_(torch.eye(2, dtype=torch.float64))
    x = torch.tensor([[math.cos(THETA), math.sin(THETA)], [0.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    scale = torch.tensor([10.0, 40.0], dtype=torch.float64, requires_grad=True)
    logits = head(x, y, scale=scale)
    assert logits[0].tolist() == pytest.approx([10 * math.cos(THETA + 0.5), 10 * math.sin(THETA)], abs=1e-9)
    assert logits[1].tolist() == pytest.approx([0.0, 40 * math.cos(0.5)], abs=1e-6)
    F.cross_entropy(logits, y).backward()
    assert scale.grad is not None and torch.isfinite(scale.grad).all() and (scale.grad != 0).all()
    with pytest.raises(InputError, match="scale"):
        head(x, y)
    with pytest.raises(InputError, match="shape"):
        head(x, y, scale=torch.ones(3, dtype=torch.float64))


def test_magface_margin_endpoints_and_regulariser_minimum():
    head = build_head("magface", 4, 3)
    norms = torch.tensor([1.0, 10.0, 60.0, 110.0, 500.0])
    assert head.margin.margin(norms).tolist() == pytest.approx([0.45, 0.45, 0.625, 0.8, 0.8])
    a = torch.linspace(10, 110, 1001, dtype=torch.float64)
    g = head.regulariser.g(a)
    assert a[g.argmin()].item() == pytest.approx(110.0)  # g'(a) = 1/u_a² − 1/a² = 0 at a = u_a
    assert (g[1:] < g[:-1]).all()


def test_combined_head_reproduces_arcface_and_cosface():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 8, generator=gen, dtype=torch.float64) * 5
    y = torch.randint(0, 6, (64,), generator=gen)
    x[0] = -build_head("arcface", 8, 6).double().weight[y[0]].detach() * 9  # one sample in the θ + m > π region
    for combined_options, reference_kind, reference_options in [
        ({"m1": 1, "m2": 0.5, "m3": 0.0}, "arcface", {"m": 0.5}),
        ({"m1": 1, "m2": 0.0, "m3": 0.35}, "cosface", {"m": 0.35}),
    ]:
        results = []
        for kind, options in [("combined", combined_options), (reference_kind, reference_options)]:
            head = build_head(kind, 8, 6, **options).double()
            emb = x.clone().requires_grad_(True)
            loss = F.cross_entropy(head(emb, y), y)
            loss.backward()
            results.append((loss.detach(), emb.grad))
        assert torch.equal(results[0][0], results[1][0]) and torch.allclose(results[0][1], results[1][1])


@pytest.mark.parametrize("kind", sorted(set(available_heads()) - {"softmax"}))
def test_no_nan_when_embedding_equals_or_opposes_its_class_weight(kind):
    head = build_head(kind, 5, 3)
    y = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        rows = head.weight[y].clone() * 1000.0  # norms ≈ 50: inside MagFace's [10, 110]
    emb = torch.cat([rows[:2], -rows[2:]]).requires_grad_(True)  # θ = 0 and θ = π exactly
    scale = torch.full((4,), 30.0, requires_grad=True)
    head.train()
    loss = F.cross_entropy(head(emb, y, scale=scale), y) + head.extra_loss()
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


def test_detach_margin_keeps_logits_and_gives_the_plain_cosine_gradient():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(16, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (16,), generator=gen)
    full, detached = (build_head("arcface", 8, 4, detach_margin=d).double() for d in (False, True))
    emb = x.clone().requires_grad_(True)
    logits = detached(emb, y)
    assert torch.allclose(logits, full(x, y), rtol=0, atol=1e-12)
    F.cross_entropy(logits, y).backward()
    # InsightFace's no_grad margin: dL/dcos = s·(softmax(margin logits) − onehot)/N.
    emb2 = x.clone().requires_grad_(True)
    weight_on_cos = (torch.softmax(logits.detach(), 1) - F.one_hot(y, 4)) / 16
    (S * detached.cosines(emb2) * weight_on_cos).sum().backward()
    assert torch.allclose(emb.grad, emb2.grad)


def test_scale_head_maps_feature_map_to_bounded_positive_scale():
    head = ScaleHead((4, 3, 3), s_max=32.0, hidden=16)
    fmap = torch.randn(10, 4, 3, 3, generator=torch.Generator().manual_seed(2)) * 50
    s = head(fmap)
    assert s.shape == (10,) and (s > 0).all() and (s < 32.0).all() and s.std() > 0
    s.sum().backward()
    assert all(p.grad is not None for p in head.parameters())
    with pytest.raises(InputError, match="feature map"):
        head(torch.randn(10, 4, 2, 2))


def test_bad_kind_option_and_labels_are_reported():
    with pytest.raises(ConfigError, match="allowed: softmax"):
        build_head("lmsoftmax", 4, 3)
    with pytest.raises(ConfigError, match="unknown option.*margin"):
        build_head("arcface", 4, 3, margin=0.5)
    with pytest.raises(ConfigError, match="1..4"):
        build_head("sphereface", 4, 3, m=5)
    head = build_head("cosface", 4, 3)
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        head(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(InputError, match="expected \\(N, 4\\)"):
        head(torch.randn(2, 5), torch.tensor([0, 1]))


def test_same_seed_gives_identical_weights():
    assert torch.equal(build_head("arcface", 8, 5, seed=7).weight, build_head("arcface", 8, 5, seed=7).weight)
    assert not torch.equal(build_head("arcface", 8, 5, seed=7).weight, build_head("arcface", 8, 5, seed=8).weight)


def gaussian_blobs(per_class: int = 100, num_classes: int = 4, seed: int = 0):
    """2-D blobs on a circle of radius 3 (std 0.6), one per class."""
    gen = torch.Generator().manual_seed(seed)
    angles = 2 * math.pi * torch.arange(num_classes) / num_classes
    centres = 3 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return centres[labels] + 0.6 * torch.randn(len(labels), 2, generator=gen), labels


def train_linear_backbone(kind: str, steps: int = 100, **options):
    """Full-batch Adam on a linear 2 → 8 backbone + head; returns (first loss, last loss, accuracy, head)."""
    x, y = gaussian_blobs()
    backbone = torch.nn.Linear(2, 8)
    with torch.no_grad():
        backbone.weight.copy_(torch.randn(8, 2, generator=torch.Generator().manual_seed(1)))
        backbone.bias.zero_()
    head = build_head(kind, 8, 4, **options)
    optimiser = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=0.05)
    head.train()
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(head(backbone(x), y), y) + head.extra_loss()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    head.eval()
    with torch.no_grad():
        accuracy = (head(backbone(x)).argmax(dim=1) == y).float().mean().item()
    return losses[0], losses[-1], accuracy, head


@pytest.mark.parametrize(
    "kind,options",
    [("arcface", {}), ("sphereface", {}), ("sphereface", {"gamma": 4.0}), ("magface", {})],
    ids=["arcface", "sphereface-default-schedule", "sphereface-reaches-lambda-min", "magface"],
)
def test_linear_backbone_on_gaussian_blobs_trains_above_90_percent(kind, options):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add contention on a shared machine
    try:
        first_loss, last_loss, accuracy, head = train_linear_backbone(kind, **options)
    finally:
        torch.set_num_threads(threads)
    assert math.isfinite(last_loss) and last_loss < first_loss
    assert accuracy > 0.9
    if kind == "sphereface" and options:
        # γ = 4: λ hits λ_min = 5 after ~50 of the 100 steps, so the fully annealed margin trained too.
        assert head.fusion.current_lambda == 5.0


def test_half_precision_embeddings_get_float32_logits_with_the_margin():
    head = build_head("arcface", 8, 4)
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(9))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    logits = head(x.bfloat16(), y)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, head(x.bfloat16().float(), y))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head(x, y).dtype == torch.float32


def test_magface_defaults_to_the_official_easy_margin():
    """IrvingMeng/MagFace MagLinear(easy_margin=True): no margin where cos θ <= 0."""
    theta = 2.0  # cos θ < 0 to the target class
    easy, x, y = two_class_example("magface", radius=60.0, theta=theta, s=1.0)
    strict, _, _ = two_class_example("magface", radius=60.0, theta=theta, s=1.0, easy_margin=False)
    assert easy(x, y)[0, 0].item() == pytest.approx(math.cos(theta), abs=1e-9)
    assert strict(x, y)[0, 0].item() != pytest.approx(math.cos(theta), abs=1e-3)
