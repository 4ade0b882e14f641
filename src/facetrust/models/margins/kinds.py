"""``build_head(kind, embedding_size, num_classes, **options)``: the published margin softmaxes.

=============  ===============================================================  ======================
kind           target logit (cosine units) → logit                              defaults
=============  ===============================================================  ======================
softmax        W·x + b (unnormalised, no margin)                                —
normface       s·cos θ                                                           s=64
sphereface     ‖x‖·(λ·cos θ + ψ_m(θ))/(1 + λ), ψ SphereFace's monotone cos(mθ)  m=4, base=1000,
                                                                                 gamma=0.12, power=1,
                                                                                 lambda_min=5
cosface        s·(cos θ − m)                                                     s=64, m=0.35
arcface        s·cos(θ + m), past θ = π − m: s·(cos θ − m·sin m)                 s=64, m=0.5
combined       s·(cos(m1·θ + m2) − m3)                                           s=64, m1=1, m2=0.3,
                                                                                 m3=0.2
scaleface      s_i·cos(θ + m), s_i per sample from ``forward(..., scale=)``      m=0.5
magface        s·cos(θ + m(‖x‖)) where cos θ > 0, else s·cos θ (easy margin),   s=64, l_a=10, u_a=110,
               plus λ_g·g(‖x‖) via ``head.extra_loss()``                        l_m=0.45, u_m=0.8,
                                                                                 lambda_g=35,
                                                                                 easy_margin=True
=============  ===============================================================  ======================

SphereFace keeps A-Softmax's own scale, the feature norm ‖x‖, not a fixed s (its logits are
‖w‖‖x‖ψ(θ) with ‖w‖ = 1); every other normalised head uses s.  ArcFace-type kinds (arcface,
combined with m1 = 1, scaleface) default to InsightFace's ``th``/``mm`` extension past
θ + m > π; ``easy_margin=True`` selects InsightFace's easy margin instead.  MagFace defaults to the
easy margin, as the official ``MagLinear(easy_margin=True)`` (IrvingMeng/MagFace ``models/magface.py``)
trains; ``easy_margin=False`` gives the ``th``/``mm`` extension.  Combined margins with
m1 ≠ 1 default to SphereFace's ψ extension.  Every normalised kind accepts ``detach_margin``
(InsightFace arcface_torch's margin-under-no_grad; default False: the margin is differentiated).
Every kind accepts ``seed`` (default 0) for the weight initialisation.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from facetrust.errors import ConfigError
from facetrust.models.margins.head import AngularMargin, MarginHead
from facetrust.models.margins.magface import MagFaceMargin, MagFaceRegulariser
from facetrust.models.margins.scale import FeatureNormScale, FixedScale, PerSampleScale
from facetrust.models.margins.schedules import LambdaAnnealing
from facetrust.registry import Registry


# kind -> a factory of MarginHead parts; the factory's keyword arguments are the kind's options.
MARGINS: Registry[Callable[..., dict[str, Any]]] = Registry("margin head")


def _check(kind: str, name: str, value: float, low: float, high: float, closed_high: bool = False) -> None:
    """ConfigError naming the option when ``value`` is outside [low, high) (or [low, high])."""
    inside = low <= value <= high if closed_high else low <= value < high
    if not (isinstance(value, (int, float)) and math.isfinite(value) and inside):
        bracket = "]" if closed_high else ")"
        raise ConfigError(f"margin head {kind!r}: option {name} = {value!r} is outside [{low:g}, {high:g}{bracket}")


def _check_scale(kind: str, s: float) -> None:
    if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
        raise ConfigError(f"margin head {kind!r}: option s = {s!r} must be a positive finite scale")


def _arcface_extension(easy_margin: bool) -> str:
    return "easy" if easy_margin else "linear"


@MARGINS.register("softmax")
def _softmax() -> dict[str, Any]:
    return {"logits": "linear"}


@MARGINS.register("normface")
def _normface(s: float = 64.0) -> dict[str, Any]:
    _check_scale("normface", s)
    return {"scale": FixedScale(s)}


@MARGINS.register("sphereface")
def _sphereface(
    m: int = 4, base: float = 1000.0, gamma: float = 0.12, power: float = 1.0, lambda_min: float = 5.0
) -> dict[str, Any]:
    if m not in (1, 2, 3, 4):
        raise ConfigError(f"sphereface option m must be an integer in 1..4, got {m!r}")
    return {
        "margin": AngularMargin(m1=m, extension="psi"),
        "fusion": LambdaAnnealing(base=base, gamma=gamma, power=power, lambda_min=lambda_min),
        "scale": FeatureNormScale(),
    }


@MARGINS.register("cosface")
def _cosface(s: float = 64.0, m: float = 0.35) -> dict[str, Any]:
    _check_scale("cosface", s)
    _check("cosface", "m", m, 0.0, 2.0)  # an additive cosine margin: cos θ - m stays above -3
    return {"margin": AngularMargin(m3=m), "scale": FixedScale(s)}


@MARGINS.register("arcface")
def _arcface(s: float = 64.0, m: float = 0.5, easy_margin: bool = False) -> dict[str, Any]:
    _check_scale("arcface", s)
    _check("arcface", "m", m, 0.0, math.pi / 2)  # an angle in radians; published values 0.3-0.5
    return {"margin": AngularMargin(m2=m, extension=_arcface_extension(easy_margin)), "scale": FixedScale(s)}


@MARGINS.register("combined")
def _combined(
    s: float = 64.0,
    m1: float = 1.0,
    m2: float = 0.3,
    m3: float = 0.2,
    easy_margin: bool = False,
    extension: str | None = None,
) -> dict[str, Any]:
    _check_scale("combined", s)
    _check("combined", "m1", m1, 1.0, 4.0, closed_high=True)
    _check("combined", "m2", m2, 0.0, math.pi / 2)
    _check("combined", "m3", m3, 0.0, 2.0)
    if extension is None:
        extension = _arcface_extension(easy_margin) if m1 == 1 else "psi"
    return {"margin": AngularMargin(m1=m1, m2=m2, m3=m3, extension=extension), "scale": FixedScale(s)}


@MARGINS.register("scaleface")
def _scaleface(m: float = 0.5, easy_margin: bool = False) -> dict[str, Any]:
    _check("scaleface", "m", m, 0.0, math.pi / 2)
    return {"margin": AngularMargin(m2=m, extension=_arcface_extension(easy_margin)), "scale": PerSampleScale()}


@MARGINS.register("magface")
def _magface(
    s: float = 64.0,
    l_a: float = 10.0,
    u_a: float = 110.0,
    l_m: float = 0.45,
    u_m: float = 0.8,
    lambda_g: float = 35.0,
    easy_margin: bool = True,  # the official MagLinear's default
) -> dict[str, Any]:
    return {
        "margin": MagFaceMargin(l_a=l_a, u_a=u_a, l_m=l_m, u_m=u_m, extension=_arcface_extension(easy_margin)),
        "regulariser": MagFaceRegulariser(l_a=l_a, u_a=u_a, lambda_g=lambda_g),
        "scale": FixedScale(s),
    }


def available_heads() -> list[str]:
    """The kinds ``build_head`` accepts."""
    return MARGINS.names()


def build_head(kind: str, embedding_size: int, num_classes: int, **options: Any) -> MarginHead:
    """A :class:`MarginHead` for ``kind`` (see the module table); ``options`` override its defaults.

    Unknown kinds or options raise ConfigError naming the allowed ones."""
    factory = MARGINS.get(kind)
    seed = options.pop("seed", 0)
    detach_margin = options.pop("detach_margin", False)
    allowed = factory.__code__.co_varnames[: factory.__code__.co_argcount]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"margin head {kind!r}: unknown option(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(list(allowed) + ['seed', 'detach_margin'])}"
        )
    parts = factory(**options)
    if detach_margin and kind == "softmax":
        raise ConfigError("margin head 'softmax': detach_margin needs a margin head")
    generator = torch.Generator().manual_seed(int(seed))
    return MarginHead(embedding_size, num_classes, detach_margin=detach_margin, generator=generator, **parts)
