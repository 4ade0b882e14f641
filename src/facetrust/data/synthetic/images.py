"""Recipes for one image: aligned crops (train, pairs) and loose crops (IJB).

Randomness is keyed, never sequential: every identity and every image draws from its own
``numpy`` Generator seeded by ``(seed, stream, ...)``, so an image does not depend on how many
images were drawn before it, on chunking or on progress bars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facetrust.data.synthetic.config import SynthConfig
from facetrust.data.synthetic.degrade import Degradation, OccluderBox, degrade_with_occluder, sample_degradation
from facetrust.data.synthetic.identity import Identity, Nuisance, sample_identity, sample_nuisance

#: The "no nuisance" scene of :func:`render_clean`: frontal, neutral, even light, grey background.
NEUTRAL_BACKGROUND = (128.0, 128.0, 128.0)
NEUTRAL_CLOTHES = (90.0, 90.0, 90.0)
from facetrust.data.synthetic.render import render_face

# Streams of the keyed generators (the first key after the seed).
STREAM_IDENTITY = 0
STREAM_TRAIN = 1
STREAM_PAIRS = 2
STREAM_IJB = 3
STREAM_SPLIT = 4  # set sizes and pair sampling
STREAM_VALIDATION = 5  # the validation pair set's images (its pair sampling: STREAM_SPLIT, 5)


def keyed_rng(seed: int, *keys: int) -> np.random.Generator:
    """The Generator for one keyed draw (``SeedSequence`` entropy = seed and keys)."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def identity_of(seed: int, identity: int, spread: float = 1.0) -> Identity:
    """The parameters of global identity number ``identity`` (same for every set)."""
    return sample_identity(keyed_rng(seed, STREAM_IDENTITY, identity), spread)


@dataclass(frozen=True)
class RenderedImage:
    """One encoded image with its ground truth."""

    jpeg: bytes
    degradation: Degradation  # effective degradation (resolution capped at the face size)
    quality: float
    landmarks: np.ndarray  # 5 x 2 rendered (true) landmarks, pixel centre = integer
    occluder: OccluderBox | None = None  # occluder box in this image's pixels, None when none


def render_aligned(identity: Identity, rng: np.random.Generator, config: SynthConfig,
                   paint_occluder: bool = True) -> RenderedImage:
    """An aligned ``image_size`` crop: landmarks on the scaled ArcFace template up to jitter.

    ``paint_occluder=False`` gives the image's clean twin: the same draws (identity, pose, light,
    degradation, the occluder's place), the occluder not painted."""
    size = config.image_size
    nuisance = sample_nuisance(rng, identity)
    degradation = sample_degradation(rng, config)
    # InsightFace ``estimate_norm``: the template for another crop size is template * size / 112
    to_pixel = np.array([[size / 112.0, 0.0, 0.0], [0.0, size / 112.0, 0.0]])
    pixels, landmarks = render_face(identity, nuisance, to_pixel, (size, size), config.supersample)
    jpeg, effective, occluder = degrade_with_occluder(pixels, degradation, (0.0, 0.0, float(size)), size, rng,
                                                      paint_occluder)
    return RenderedImage(jpeg, effective, effective.quality(size), landmarks, occluder)


def render_clean(seed: int, identity: int, config: SynthConfig) -> np.ndarray:
    """The ``image_size`` aligned crop of global identity ``identity`` with no nuisance and no
    degradation (frontal, neutral expression, even light, grey background; glasses when the
    identity usually wears them): what the class "looks like", e.g. beside a model inversion.
    Uses no random stream of the benchmark, so it changes no written image."""
    params = identity_of(seed, identity, config.identity_spread)
    nuisance = Nuisance(yaw=0.0, roll=0.0, shift=(0.0, 0.0), scale=1.0, smile=0.0, mouth_open=0.0,
                        brow_raise=0.0, eye_closure=0.0, glasses_on=params.glasses > 0.5,
                        light_direction=0.0, light_strength=0.0, brightness=1.0, colour_cast=(1.0, 1.0, 1.0),
                        background=NEUTRAL_BACKGROUND, background_seed=0, clothes=NEUTRAL_CLOTHES)
    size = config.image_size
    to_pixel = np.array([[size / 112.0, 0.0, 0.0], [0.0, size / 112.0, 0.0]])
    pixels, _ = render_face(params, nuisance, to_pixel, (size, size), config.supersample)
    return pixels


@dataclass(frozen=True)
class LooseShot:
    """Scene of one IJB media: nuisance, placement of the face and degradation."""

    nuisance: Nuisance
    centre: tuple[float, float]  # canvas position of the aligned frame's centre, px
    side: float  # canvas px spanned by the 112 canonical px
    angle: float  # radians, in-plane rotation of the whole face
    degradation: Degradation


def sample_shot(identity: Identity, rng: np.random.Generator, config: SynthConfig) -> LooseShot:
    """Draw where and how a face sits in a loose crop."""
    canvas = config.loose_crop_size
    low, high = config.loose_face_fraction
    side = canvas * rng.uniform(low, high)
    margin = side * 0.4  # keep most of the face inside the canvas
    centre = tuple(float(v) for v in rng.uniform(margin, canvas - margin, 2))
    angle = float(np.deg2rad(rng.uniform(-config.loose_rotation_deg, config.loose_rotation_deg)))
    return LooseShot(sample_nuisance(rng, identity), centre, float(side), angle,
                     sample_degradation(rng, config))


def loose_transform(shot: LooseShot) -> np.ndarray:
    """2x3 map from the canonical 112 frame to loose-crop pixels for ``shot``."""
    k = shot.side / 112.0
    c, s = np.cos(shot.angle) * k, np.sin(shot.angle) * k
    linear = np.array([[c, -s], [s, c]])
    # the centre (56, 56) of the 112 frame lands on the chosen canvas point
    offset = np.asarray(shot.centre) - linear @ np.array([56.0, 56.0])
    return np.concatenate([linear, offset[:, None]], axis=1)


def render_loose(identity: Identity, shot: LooseShot, rng: np.random.Generator,
                 config: SynthConfig) -> RenderedImage:
    """A loose crop of ``loose_crop_size`` with background around a placed, rotated face."""
    canvas = config.loose_crop_size
    pixels, landmarks = render_face(identity, shot.nuisance, loose_transform(shot), (canvas, canvas),
                                    config.supersample)
    box = (shot.centre[0] - shot.side / 2, shot.centre[1] - shot.side / 2, shot.side)
    jpeg, effective, occluder = degrade_with_occluder(pixels, shot.degradation, box, config.image_size, rng)
    return RenderedImage(jpeg, effective, effective.quality(config.image_size), landmarks, occluder)


def loose_box_in_aligned_frame(box: OccluderBox, shot: LooseShot, image_size: int) -> tuple[float, ...]:
    """A loose-crop pixel box mapped into the aligned ``image_size`` crop of the same face.

    The box's corners go through the inverse of :func:`loose_transform` (canvas -> canonical 112
    frame) and are scaled by ``image_size / 112`` (InsightFace's template scaling); the result is
    their axis-aligned bounding box ``(x0, y0, x1, y1)``, clipped to the crop.  It uses the true
    placement, so an aligned crop warped from *detected* landmarks sits within the landmark noise
    of it; with in-plane rotation the box is larger than the (rotated) occluder.
    """
    forward = loose_transform(shot)
    linear, offset = forward[:, :2], forward[:, 2]
    # Box edges sit half a pixel off the pixel-centre coordinates that the transforms use.
    x0, y0, x1, y1 = (float(v) - 0.5 for v in box)
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64)
    aligned = np.linalg.solve(linear, (corners - offset).T).T * (image_size / 112.0) + 0.5
    low = np.clip(aligned.min(axis=0), 0.0, image_size)
    high = np.clip(aligned.max(axis=0), 0.0, image_size)
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def detector_score(quality: float, rng: np.random.Generator) -> float:
    """A detector confidence in (0, 1) that rises with quality, with detector noise."""
    logit = 6.0 * quality - 1.0 + rng.normal(0.0, 0.7)
    return float(1.0 / (1.0 + np.exp(-logit)))
