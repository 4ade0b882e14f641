"""Our margin heads against an independent implementation: pytorch-metric-learning 2.9.0.

Both compute cross entropy (mean over the batch) on the same class weights and embeddings; we copy
our ``weight`` (num_classes × D) into their ``W`` (D × num_classes).  Where the definitions agree
the losses must match to 1e-5 (and the gradients too).  Deliberate differences, each handled below:

* ArcFace: their margin is in degrees (``margin=28.6`` ≙ 0.5 rad); their extension past θ > π − m is
  the same cos θ − m·sin m as InsightFace's ``th``/``mm`` and ours.
* SphereFace: theirs is ψ(θ) times the feature norm ‖x‖ (times ``scale``, 1) like ours, but with no
  λ annealing: it equals ours with λ ≡ 0 (``base=0, lambda_min=0``).  With our default schedule
  the losses must differ.
* NormFace: their ``NormalizedSoftmaxLoss`` divides by a temperature: s = 1/temperature.
* CosFace: same definition (s = 64, m = 0.35).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facetrust.models.margins import build_head

pml_losses = pytest.importorskip("pytorch_metric_learning.losses", reason="pytorch-metric-learning not installed")

# Their SphereFace builds binomial coefficients through a NumPy call that NumPy 2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pytorch_metric_learning")

NUM_CLASSES, DIM = 10, 16


def batch(head, seed: int = 0):
    """Half the samples near their class weight (small θ), half random; norms 1–30 (float64)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (64,), generator=gen)
    directions = torch.randn(64, DIM, generator=gen, dtype=torch.float64)
    centres = F.normalize(head.weight.detach()[labels], dim=1)
    directions[:32] = centres[:32] + 0.3 * F.normalize(directions[:32], dim=1)
    directions[32:34] = -centres[32:34]  # θ ≈ π: ArcFace's fallback region
    norms = 1 + 29 * torch.rand(64, 1, generator=gen, dtype=torch.float64)
    return F.normalize(directions, dim=1) * norms, labels


def loss_and_grad(loss_fn, embeddings, labels):
    emb = embeddings.clone().requires_grad_(True)
    loss = loss_fn(emb, labels)
    loss.backward()
    return loss.detach(), emb.grad


def ours(head):
    return lambda emb, labels: F.cross_entropy(head(emb, labels), labels)


def theirs(reference, head):
    with torch.no_grad():
        reference.W.data = head.weight.detach().T.clone()  # D × C orientation
    return reference


@pytest.mark.parametrize(
    "kind,our_options,reference_factory",
    [
        (
            "arcface",
            {"s": 64.0, "m": 0.5},
            lambda: pml_losses.ArcFaceLoss(NUM_CLASSES, DIM, margin=math.degrees(0.5), scale=64),
        ),
        ("cosface", {"s": 64.0, "m": 0.35}, lambda: pml_losses.CosFaceLoss(NUM_CLASSES, DIM, margin=0.35, scale=64)),
        (
            "sphereface",
            {"m": 4, "base": 0.0, "lambda_min": 0.0},
            lambda: pml_losses.SphereFaceLoss(NUM_CLASSES, DIM, margin=4, scale=1),
        ),
        (
            "sphereface",
            {"m": 2, "base": 0.0, "lambda_min": 0.0},
            lambda: pml_losses.SphereFaceLoss(NUM_CLASSES, DIM, margin=2, scale=1),
        ),
        ("normface", {"s": 64.0}, lambda: pml_losses.NormalizedSoftmaxLoss(NUM_CLASSES, DIM, temperature=1 / 64)),
    ],
    ids=["arcface", "cosface", "sphereface-m4", "sphereface-m2", "normface"],
)
def test_loss_and_gradient_match_pytorch_metric_learning(kind, our_options, reference_factory):
    head = build_head(kind, DIM, NUM_CLASSES, seed=11, **our_options).double()
    embeddings, labels = batch(head)
    our_loss, our_grad = loss_and_grad(ours(head), embeddings, labels)
    their_loss, their_grad = loss_and_grad(theirs(reference_factory(), head), embeddings, labels)
    assert our_loss.item() == pytest.approx(their_loss.item(), abs=1e-5)
    assert torch.allclose(our_grad, their_grad, atol=1e-5)
    assert our_loss.item() > 0.1  # the margin is active: not a trivially zero loss


def test_sphereface_default_annealing_differs_from_the_unannealed_reference():
    head = build_head("sphereface", DIM, NUM_CLASSES, seed=11).double()
    embeddings, labels = batch(head)
    head.train()
    our_loss, _ = loss_and_grad(ours(head), embeddings, labels)
    reference = theirs(pml_losses.SphereFaceLoss(NUM_CLASSES, DIM, margin=4, scale=1), head)
    their_loss, _ = loss_and_grad(reference, embeddings, labels)
    # λ ≈ 893 at the first step: ours is close to plain ‖x‖cos θ softmax, far below pure ψ.
    assert our_loss.item() < their_loss.item() - 1.0
