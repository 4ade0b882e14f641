"""Identity and per-image nuisance parameters of the parametric faces.

An :class:`Identity` fixes who a face is (shape, colours, hair, accessories); a
:class:`Nuisance` fixes how one picture of that person looks (pose, expression, light,
background).  Lengths are in the canonical 112x112 ArcFace frame (docs/FORMATS.md "Alignment"),
where the five landmarks sit at :data:`ARCFACE_TEMPLATE_112` up to small identity offsets
(:data:`IDENTITY_LANDMARK_OFFSET_MAX`) and the pose nuisance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

# ArcFace 112x112 template: left eye, right eye, nose tip, left and right mouth corner (x, y);
# "left" = image left, as InsightFace.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)

# Largest offset (canonical px, per coordinate) an identity gives a landmark: the eye spacing,
# nose length and mouth width vary between people, as residuals of a similarity alignment do.
IDENTITY_LANDMARK_OFFSET_MAX = 2.5

# Skin tones from dark to light (RGB); an identity interpolates between neighbours.
_SKIN_TONES = np.array([[70, 45, 32], [110, 72, 50], [150, 105, 75], [190, 140, 105],
                        [220, 180, 150], [240, 205, 180]], dtype=np.float64)
# Hair colours: black, dark brown, brown, auburn, blond, grey.
_HAIR_COLOURS = np.array([[25, 20, 18], [60, 40, 28], [105, 70, 40], [140, 60, 30],
                          [200, 165, 100], [165, 165, 160]], dtype=np.float64)
_IRIS_COLOURS = np.array([[60, 40, 25], [95, 65, 35], [70, 110, 150], [80, 120, 80]], dtype=np.float64)
HAIR_STYLES = ("bald", "short", "fringe", "side_part", "long")

# Pose nuisance bounds (canonical frame).  Aligned crops keep only a residual pose, as real
# 5-point-aligned crops do; large in-plane pose belongs to the loose crops.
YAW_MAX = 0.3  # horizontal squash cos(yaw) and parallax sin(yaw) * depth
ROLL_MAX = 0.08  # radians
SHIFT_MAX = 2.0  # px per axis
LOG_SCALE_MAX = 0.04
PARALLAX_DEPTH_PX = 8.0  # displacement per unit depth at sin(yaw) = 1 (nose tip has depth 1)
FACE_ROTATION_CENTRE = (56.0, 62.0)


@dataclass(frozen=True)
class Identity:
    """Shape and appearance of one synthetic person (canonical 112 frame)."""

    face_half_width: float  # outline ellipse semi-axes
    face_half_height: float
    face_centre_y: float
    jaw_squareness: float  # superellipse exponent of the lower half (2 = ellipse)
    chin_width: float  # 0..1, how wide the lower jaw stays
    eye_spacing: float  # offset of each eye from the template (+ = wider apart)
    eye_height_offset: float
    eye_width: float  # half-width of the eye opening
    eye_open: float  # half-height of the eye opening
    eye_tilt: float  # radians, outer corner up when > 0
    iris_colour: tuple[float, float, float]
    brow_gap: float  # distance brow -> eye centre
    brow_thickness: float
    brow_angle: float  # radians, outer end up when > 0
    brow_arch: float
    brow_length: float
    nose_length: float  # offset of the tip below the template
    nose_width: float  # half-width of the nostrils
    nose_bridge: float  # 0..1 contrast of the bridge shading
    mouth_width: float  # offset of each corner outward
    mouth_curve: float  # smile (+) / frown (-), px of corner lift
    upper_lip: float  # lip thicknesses
    lower_lip: float
    lip_colour: tuple[float, float, float]
    skin: tuple[float, float, float]
    hair_colour: tuple[float, float, float]
    hair_style: int  # index in HAIR_STYLES
    hairline: float  # y of the hairline at the centre
    hair_volume: float
    hair_part: float  # x offset of the parting / fringe asymmetry
    ear_size: float
    glasses: float  # probability that an image shows glasses
    glasses_round: bool
    glasses_colour: tuple[float, float, float]
    beard: float  # 0 = none, 1 = full (blend strength)
    moustache: bool
    mole: tuple[float, float] | None  # position of a mole, or None
    cheek_blush: float


def _colour_between(rng: np.random.Generator, palette: np.ndarray, jitter: float,
                    spread: float = 1.0) -> tuple:
    position = rng.uniform(0, len(palette) - 1)
    low = int(np.floor(position))
    high = min(low + 1, len(palette) - 1)
    colour = palette[low] + (position - low) * (palette[high] - palette[low])
    colour = colour + rng.normal(0, jitter, 3)
    colour = palette.mean(axis=0) + spread * (colour - palette.mean(axis=0))
    return tuple(float(c) for c in np.clip(colour, 0, 255))


def sample_identity(rng: np.random.Generator, spread: float = 1.0) -> Identity:
    """Draw one person.  Parameters are continuous so that identities are numerous and close.

    ``spread`` in (0, 1] shrinks every continuous parameter and colour towards the population
    mean (1 = the full ranges below): smaller = people look more alike = a harder benchmark.
    The draws themselves do not depend on ``spread``.
    """
    def u(low: float, high: float) -> float:
        middle = (low + high) / 2
        return middle + spread * (rng.uniform(low, high) - middle)

    off = IDENTITY_LANDMARK_OFFSET_MAX
    skin = _colour_between(rng, _SKIN_TONES, 8.0, spread)
    hair = _colour_between(rng, _HAIR_COLOURS, 10.0, spread)
    has_mole = rng.random() < 0.25
    mole = (float(u(28, 84)), float(u(55, 100))) if has_mole else None
    skin_arr = np.array(skin)
    lip = np.clip(skin_arr * np.array([0.95, 0.62, 0.62]) + rng.normal(0, 8, 3) + [20, 0, 0], 0, 255)
    return Identity(
        face_half_width=float(u(34, 43)),
        face_half_height=float(u(46, 55)),
        face_centre_y=float(u(57, 64)),
        jaw_squareness=float(u(1.8, 3.2)),
        chin_width=float(u(0.0, 1.0)),
        eye_spacing=float(u(-off, off)),
        eye_height_offset=float(u(-off / 2, off / 2)),
        eye_width=float(u(6.0, 9.5)),
        eye_open=float(u(2.2, 4.2)),
        eye_tilt=float(u(-0.15, 0.2)),
        iris_colour=_colour_between(rng, _IRIS_COLOURS, 10.0, spread),
        brow_gap=float(u(7.0, 12.0)),
        brow_thickness=float(u(1.5, 4.5)),
        brow_angle=float(u(-0.25, 0.3)),
        brow_arch=float(u(0.0, 4.0)),
        brow_length=float(u(14.0, 22.0)),
        nose_length=float(u(-off, off)),
        nose_width=float(u(4.5, 8.5)),
        nose_bridge=float(u(0.2, 1.0)),
        mouth_width=float(u(-off, off)),
        mouth_curve=float(u(-2.0, 3.0)),
        upper_lip=float(u(1.5, 4.0)),
        lower_lip=float(u(2.0, 5.5)),
        lip_colour=tuple(float(c) for c in lip),
        skin=skin,
        hair_colour=hair,
        hair_style=int(rng.integers(len(HAIR_STYLES))),
        hairline=float(u(14, 30)),
        hair_volume=float(u(3, 12)),
        hair_part=float(u(-15, 15)),
        ear_size=float(u(6, 10)),
        glasses=float(0.9 if rng.random() < 0.2 else 0.03),
        glasses_round=bool(rng.random() < 0.5),
        glasses_colour=tuple(float(c) for c in rng.uniform(10, 120, 3)),
        beard=float(u(0.3, 0.75) if rng.random() < 0.2 else 0.0),
        moustache=bool(rng.random() < 0.2),
        mole=mole,
        cheek_blush=float(u(0.0, 0.25)),
    )


def _muted(rng: np.random.Generator) -> tuple[float, float, float]:
    """A scene colour: a grey level tinted towards a random hue (indoor/outdoor backgrounds)."""
    grey = rng.uniform(30, 220)
    tint = rng.uniform(-1, 1, 3) * rng.uniform(10, 60)
    return tuple(float(c) for c in np.clip(grey + tint, 0, 255))


@dataclass(frozen=True)
class Nuisance:
    """How one image of an identity differs from another: pose, expression, light, scene."""

    yaw: float  # radians-like: horizontal squash + parallax of the inner features
    roll: float  # radians, in-plane rotation about the face centre
    shift: tuple[float, float]  # canonical px
    scale: float  # 1 = template size
    smile: float  # added to the mouth curvature
    mouth_open: float  # gap between the lips, px
    brow_raise: float  # px
    eye_closure: float  # 0 open .. 1 closed
    glasses_on: bool
    light_direction: float  # radians, direction of the illumination gradient
    light_strength: float  # relative brightness change across the face
    brightness: float  # multiplicative
    colour_cast: tuple[float, float, float]  # per-channel gain
    background: tuple[float, float, float]
    background_seed: int  # texture of the scene behind the face
    clothes: tuple[float, float, float]


def sample_nuisance(rng: np.random.Generator, identity: Identity) -> Nuisance:
    """Draw the per-image variation of one picture of ``identity``."""
    u = rng.uniform
    return Nuisance(
        yaw=float(u(-YAW_MAX, YAW_MAX)),
        roll=float(np.clip(rng.normal(0, ROLL_MAX / 2), -ROLL_MAX, ROLL_MAX)),
        shift=tuple(float(v) for v in np.clip(rng.normal(0, SHIFT_MAX / 2, 2), -SHIFT_MAX, SHIFT_MAX)),
        scale=float(np.exp(np.clip(rng.normal(0, LOG_SCALE_MAX / 2), -LOG_SCALE_MAX, LOG_SCALE_MAX))),
        smile=float(rng.normal(0, 1.5)),
        mouth_open=float(max(0.0, rng.normal(-0.5, 1.5))),
        brow_raise=float(rng.normal(0, 1.2)),
        eye_closure=float(np.clip(rng.normal(0.1, 0.2), 0, 0.9)),
        glasses_on=bool(rng.random() < identity.glasses),
        light_direction=float(u(0, 2 * np.pi)),
        light_strength=float(u(0.0, 0.6)),
        brightness=float(np.exp(rng.normal(0, 0.18))),
        colour_cast=tuple(float(c) for c in np.exp(rng.normal(0, 0.08, 3))),
        background=_muted(rng),
        background_seed=int(rng.integers(2**31)),
        clothes=tuple(float(c) for c in u(10, 245, 3)),
    )


def perturb_nuisance(rng: np.random.Generator, base: Nuisance) -> Nuisance:
    """A neighbouring video frame: same scene and light, slightly moved pose and expression."""
    return replace(
        base,
        yaw=float(np.clip(base.yaw + rng.normal(0, 0.04), -YAW_MAX, YAW_MAX)),
        roll=float(np.clip(base.roll + rng.normal(0, 0.015), -ROLL_MAX, ROLL_MAX)),
        shift=tuple(float(v) for v in np.clip(np.add(base.shift, rng.normal(0, 0.3, 2)),
                                              -SHIFT_MAX, SHIFT_MAX)),
        smile=float(base.smile + rng.normal(0, 0.4)),
        mouth_open=float(max(0.0, base.mouth_open + rng.normal(0, 0.4))),
        brow_raise=float(base.brow_raise + rng.normal(0, 0.3)),
        eye_closure=float(np.clip(base.eye_closure + rng.normal(0, 0.05), 0, 0.9)),
        light_strength=float(np.clip(base.light_strength + rng.normal(0, 0.03), 0, 0.7)),
    )




def landmark_jitter_bound_112() -> float:
    """Largest distance (canonical px) of a rendered landmark from the template.

    Sum of the worst cases: identity offset on both axes, yaw parallax of the nose tip plus the
    squash of a 20 px lever, roll and scale about the rotation centre (mouth corners are ~35 px
    away), and the shift.  Tests check rendered landmarks against it.
    """
    lever = 36.0
    identity = IDENTITY_LANDMARK_OFFSET_MAX * np.sqrt(2)
    yaw = PARALLAX_DEPTH_PX * np.sin(YAW_MAX) + 20.0 * (1 - np.cos(YAW_MAX))
    roll = lever * ROLL_MAX
    scale = lever * (np.exp(LOG_SCALE_MAX) - 1)
    shift = SHIFT_MAX * np.sqrt(2)
    return float(identity + yaw + roll + scale + shift)
