"""ArcFace model inversion: class representations from a trained backbone and its class weights.

Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", TPAMI extension
(arXiv 1801.07698v4), Algorithm 1 and Eq. 8: images start from N(0, 1) and minimise

    L = L_arcface(f(x), target) + λ_BN · Σ_l (‖μ̃_l − μ_l‖² + ‖σ̃_l − σ_l‖²)        (Eq. 8)

where μ̃_l, σ̃_l are the mean and standard deviation (per channel, over batch and space) of the
input of BatchNorm layer l on the synthesised batch and μ_l, σ_l = sqrt(running_var + eps) its
running statistics (read by forward hooks), λ_BN = 0.05.  The class term needs the margin head's
class weights, not only the embedding (the arcface_inversion notes).  Options from NVlabs
DeepInversion (Yin et al., CVPR 2020) with its defaults: total variation (L2 form, 1e-4), image
L2 (1e-5), random jitter (30 px at 224, i.e. 30/224 of the side) and horizontal flip, Adam
(lr 0.2, betas (0.5, 0.9)) with a cosine schedule after a linear warm-up (100 steps), pixels
clipped to the normalised range after each step.  As in DeepInversion's ``get_images`` the TV-L2
prior (``get_image_prior_losses``) and the image L2 prior (the per-image L2 norm, averaged over the
batch) are computed on the **jittered, flipped batch** the network sees.  ``bn_form="deepinversion"`` swaps Eq. 8 for
DeepInversion's ‖var diff‖₂ + ‖mean diff‖₂ with the first BN layer weighted ×10.  Setting
``bn_weight=0`` or ``class_weight=0`` gives the ablations.

:func:`verifier_checks` scores inverted images with a second, independently trained model (as
DeepInversion does): top-1 rate and mean probability of the target class under the verifier's
classifier, and the cosine of each image's verifier embedding to its class's real images
against the other classes'.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from facetrust.errors import ConfigError, InputError

BN_FORMS = ("arcface", "deepinversion")
PIXEL_RANGE = (-1.0, 1.0)  # (x - 127.5) / 127.5


@dataclass(frozen=True)
class InversionConfig:
    """Every knob of :func:`invert`; defaults as in the module docstring."""

    iterations: int = 2000
    images_per_class: int = 4
    lr: float = 0.2
    betas: tuple[float, float] = (0.5, 0.9)
    warmup_iterations: int = 100
    class_weight: float = 1.0
    class_margin: bool = True  # ArcFace loss with the margin (else plain scaled-cosine softmax)
    bn_weight: float = 0.05
    bn_form: str = "arcface"
    first_bn_multiplier: float = 10.0  # DeepInversion form only
    tv_l2_weight: float = 1e-4
    l2_weight: float = 1e-5
    jitter_fraction: float = 0.1339  # DeepInversion's 30 px at 224 (30/224 to 4 places, as the schema writes it)
    flip: bool = True
    clip: bool = True
    seed: int = 0
    gradient_checks: int = 8  # iterations (evenly spaced, first and last included) with per-term gradient norms

    def __post_init__(self):
        if self.iterations < 1 or self.images_per_class < 1:
            raise ConfigError(f"inversion: iterations and images_per_class must be >= 1, got "
                              f"{self.iterations}, {self.images_per_class}")
        if self.bn_form not in BN_FORMS:
            raise ConfigError(f"inversion: bn_form {self.bn_form!r} not allowed; allowed: {', '.join(BN_FORMS)}")
        if min(self.class_weight, self.bn_weight, self.tv_l2_weight, self.l2_weight, self.jitter_fraction) < 0:
            raise ConfigError("inversion: weights and jitter_fraction must be >= 0")

    def ablated(self, term: str) -> "InversionConfig":
        """This config without the ``"bn"`` or the ``"class"`` term."""
        if term not in ("bn", "class"):
            raise ConfigError(f"inversion ablation {term!r} not allowed; allowed: bn, class")
        return dataclasses.replace(self, **{f"{term}_weight": 0.0})


class BatchNormStatistics:
    """Forward hooks on every BatchNorm2d of a model: the BN term of the last forward.

    ``loss()`` is Σ_l (‖μ̃−μ‖² + ‖σ̃−σ‖²) (Eq. 8) or DeepInversion's Σ_l w_l (‖σ̃²−σ²‖₂ + ‖μ̃−μ‖₂)
    with w_1 = ``first_bn_multiplier``, else 1.  Use as a context manager (hooks removed on exit)."""

    def __init__(self, model: nn.Module, form: str = "arcface", first_bn_multiplier: float = 10.0):
        self.form, self.first_bn_multiplier = form, float(first_bn_multiplier)
        self.terms: list[torch.Tensor] = []
        layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        if not layers:
            raise InputError("inversion: the model has no BatchNorm2d layer for the BN statistics term")
        self.handles = [layer.register_forward_hook(self._hook) for layer in layers]

    def _hook(self, module: nn.BatchNorm2d, inputs, output) -> None:
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.permute(1, 0, 2, 3).flatten(1).var(dim=1, unbiased=False)
        if self.form == "arcface":
            std = torch.sqrt(var + module.eps)
            running_std = torch.sqrt(module.running_var + module.eps)
            term = ((mean - module.running_mean) ** 2).sum() + ((std - running_std) ** 2).sum()
        else:
            term = torch.norm(var - module.running_var, 2) + torch.norm(mean - module.running_mean, 2)
            if not self.terms:
                term = term * self.first_bn_multiplier
        self.terms.append(term)

    def reset(self) -> None:
        self.terms = []

    def loss(self) -> torch.Tensor:
        return torch.stack(self.terms).sum()

    def __enter__(self) -> "BatchNormStatistics":
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def tv_l2(images: torch.Tensor) -> torch.Tensor:
    """DeepInversion's L2 total variation: Σ of the L2 norms of the horizontal, vertical and both
    diagonal neighbour differences."""
    diffs = (images[:, :, :, :-1] - images[:, :, :, 1:], images[:, :, :-1, :] - images[:, :, 1:, :],
             images[:, :, 1:, :-1] - images[:, :, :-1, 1:], images[:, :, :-1, :-1] - images[:, :, 1:, 1:])
    return sum(torch.norm(d) for d in diffs)


def cosine_lr(iteration: int, base_lr: float, iterations: int, warmup: int) -> float:
    """DeepInversion's policy: linear warm-up over ``warmup`` steps, then half a cosine to 0."""
    warmup = min(warmup, max(iterations - 1, 0))
    if iteration < warmup:
        return base_lr * (iteration + 1) / warmup
    span = max(iterations - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * (iteration - warmup) / span)) * base_lr


def image_l2(images: torch.Tensor) -> torch.Tensor:
    """DeepInversion's image prior: the L2 norm of each image, averaged over the batch."""
    return torch.norm(images.reshape(images.shape[0], -1), dim=1).mean()


def check_iterations(iterations: int, count: int) -> set[int]:
    """``count`` evenly spaced iterations of ``0 … iterations-1``, the first and the last included."""
    if count <= 0:
        return set()
    return {int(round(v)) for v in np.linspace(0, iterations - 1, max(count, 2) if iterations > 1 else 1)}


def _augment(images: torch.Tensor, config: InversionConfig, rng: np.random.Generator) -> torch.Tensor:
    jitter = int(round(config.jitter_fraction * images.shape[-1]))
    if jitter:
        dy, dx = (int(v) for v in rng.integers(-jitter, jitter + 1, 2))
        images = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
    if config.flip and rng.random() < 0.5:
        images = torch.flip(images, dims=(3,))
    return images


def invert(backbone: nn.Module, head: nn.Module, classes: Sequence[int], input_size: tuple[int, int],
           config: InversionConfig = InversionConfig(), *, progress: bool = True) -> dict[str, object]:
    """Synthesise ``config.images_per_class`` images per class of ``classes`` (Algorithm 1).

    ``head`` is the model's margin head (its ``weight`` rows are the class centres).  Returns
    ``{"images": (B, 3, H, W) tensor in the normalised range, "start": the N(0, 1) images it began
    from, "labels": (B,) long, "log": list of per-iteration dicts (loss parts, lr)}``.  Both
    networks are put in eval mode (BN running statistics are the prior) with ``requires_grad``
    off; the draws (start images, jitter, flips) come from ``config.seed``."""
    if not len(classes):
        raise ConfigError("inversion: no classes given")
    num_classes = int(head.weight.shape[0])
    bad = [c for c in classes if not 0 <= int(c) < num_classes]
    if bad:
        raise ConfigError(f"inversion: class(es) {bad} outside 0..{num_classes - 1}")
    backbone.eval().requires_grad_(False)
    head.eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(int(config.seed))
    rng = np.random.default_rng(int(config.seed))
    labels = torch.tensor([int(c) for c in classes for _ in range(config.images_per_class)])
    start = torch.randn(labels.numel(), 3, *input_size, generator=generator)
    images = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([images], lr=config.lr, betas=config.betas, eps=1e-8)
    log = []
    weights = {"class": config.class_weight, "bn": config.bn_weight, "tv_l2": config.tv_l2_weight,
               "l2": config.l2_weight}
    checks = check_iterations(config.iterations, config.gradient_checks)
    with BatchNormStatistics(backbone, config.bn_form, config.first_bn_multiplier) as statistics:
        for iteration in tqdm(range(config.iterations), desc="inversion", unit="it", leave=False,
                              disable=not progress):
            lr = cosine_lr(iteration, config.lr, config.iterations, config.warmup_iterations)
            for group in optimizer.param_groups:
                group["lr"] = lr
            statistics.reset()
            jittered = _augment(images, config, rng)
            embeddings = backbone(jittered)
            logits = head(embeddings, labels if config.class_margin else None)
            # every prior on the batch the network sees (DeepInversion computes them on inputs_jit)
            parts = {"class": F.cross_entropy(logits, labels), "bn": statistics.loss(),
                     "tv_l2": tv_l2(jittered), "l2": image_l2(jittered)}
            total = sum(weights[name] * parts[name] for name in parts)
            entry = {"iteration": iteration, "lr": lr, "loss": float(total.detach()),
                     **{name: float(value.detach()) for name, value in parts.items()}}
            if iteration in checks:
                # the norm of each weighted term's gradient on the images: which term drives them
                for name, value in parts.items():
                    if weights[name] > 0:
                        grad, = torch.autograd.grad(weights[name] * value, images, retain_graph=True)
                        entry[f"grad_norm_{name}"] = float(grad.norm())
                    else:
                        entry[f"grad_norm_{name}"] = 0.0
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if config.clip:
                with torch.no_grad():
                    images.clamp_(*PIXEL_RANGE)
            log.append(entry)
        # the BN statistics of the finished images, without jitter: how far the batch is from the prior
        statistics.reset()
        with torch.no_grad():
            backbone(images.detach())
        end_bn = float(statistics.loss())
    return {"images": images.detach(), "start": start, "labels": labels, "log": log, "end_bn_loss": end_bn}


def class_probabilities(backbone: nn.Module, head: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, num_classes) softmax of the head's plain (no margin) logits for ``images``."""
    backbone.eval()
    head.eval()
    with torch.no_grad():
        return F.softmax(head(backbone(images)), dim=1)


def verifier_scores(verifier: nn.Module, verifier_head: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    real_images: Mapping[int, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per-image scores of inverted ``images`` (targets ``labels``) under a second model, (B,)
    float64 arrays: ``top1`` (1 when the verifier's classifier picks the target), ``target_probability``
    (its softmax probability of the target), ``cosine_own`` / ``cosine_other`` (cosine of the image's
    verifier embedding to the normalised mean embedding of its class's real images / the mean over
    the other classes of ``real_images`` = {class: (n, 3, H, W)}), ``own_nearest`` (1 when the own
    class centre is the nearest of those classes).  Needs >= 2 classes in ``real_images``."""
    if len(real_images) < 2 or any(int(c) not in real_images for c in labels.tolist()):
        raise InputError("verifier checks: real images needed for every target class and at least one other")
    probabilities = class_probabilities(verifier, verifier_head, images)
    target = probabilities.gather(1, labels.view(-1, 1))[:, 0]
    classes = sorted(int(c) for c in real_images)
    with torch.no_grad():
        centres = torch.stack([F.normalize(F.normalize(verifier(real_images[c]), dim=1).mean(0), dim=0)
                               for c in classes])
        cosines = F.normalize(verifier(images), dim=1) @ centres.T  # (B, classes)
    own_column = torch.tensor([classes.index(int(c)) for c in labels])
    own = cosines.gather(1, own_column.view(-1, 1))[:, 0]
    others = (cosines.sum(1) - own) / (len(classes) - 1)
    as_array = lambda t: t.double().cpu().numpy()  # noqa: E731
    return {
        "top1": as_array(probabilities.argmax(1) == labels),
        "target_probability": as_array(target),
        "cosine_own": as_array(own),
        "cosine_other": as_array(others),
        "own_nearest": as_array(cosines.argmax(1) == own_column),
    }


def verifier_checks(verifier: nn.Module, verifier_head: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    real_images: Mapping[int, torch.Tensor]) -> dict[str, float]:
    """The means over images of :func:`verifier_scores` (``top1`` is then the top-1 rate)."""
    return {name: float(values.mean()) for name, values in
            verifier_scores(verifier, verifier_head, images, labels, real_images).items()}


def ablation(backbone: nn.Module, head: nn.Module, verifier: nn.Module, verifier_head: nn.Module,
             classes: Sequence[int], input_size: tuple[int, int], real_images: Mapping[int, torch.Tensor],
             config: InversionConfig = InversionConfig(), *, progress: bool = True) -> dict[str, dict]:
    """``{"full" | "no_bn" | "no_class": {"images", "labels", "checks"}}``: the inversion with all
    terms and without the BN or the class term, each scored by :func:`verifier_checks`."""
    variants = {"full": config, "no_bn": config.ablated("bn"), "no_class": config.ablated("class")}
    results = {}
    for name, variant in variants.items():
        run = invert(backbone, head, classes, input_size, variant, progress=progress)
        run["checks"] = verifier_checks(verifier, verifier_head, run["images"], run["labels"], real_images)
        results[name] = run
    return results
