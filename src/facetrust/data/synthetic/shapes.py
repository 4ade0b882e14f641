"""Outlines of the face parts in the canonical 112 frame (point arrays, N x 2, x right, y down)."""

from __future__ import annotations

import numpy as np

from facetrust.data.synthetic.identity import ARCFACE_TEMPLATE_112, HAIR_STYLES, Identity

_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 32, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 32, endpoint=False))], axis=1)


def ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    """32-point ellipse centred at (cx, cy), semi-axes rx, ry, rotated by ``angle``."""
    c, s = np.cos(angle), np.sin(angle)
    x, y = _CIRCLE[:, 0] * rx, _CIRCLE[:, 1] * ry
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def face_outline(identity: Identity, grow: float = 0.0) -> np.ndarray:
    """Closed outline: elliptic upper half, superelliptic lower half (jaw), 48 points."""
    a, b = identity.face_half_width + grow, identity.face_half_height + grow
    cx, cy = 56.0, identity.face_centre_y
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    cos_t, sin_t = np.cos(t), np.sin(t)
    lower = sin_t > 0  # image y grows downwards: sin > 0 is the lower half
    exponent = np.where(lower, 2.0 / identity.jaw_squareness, 1.0)
    x = a * np.sign(cos_t) * np.abs(cos_t) ** exponent
    y = b * np.sign(sin_t) * np.abs(sin_t) ** exponent
    # narrow chin: pull the lowest part of the jaw inwards
    x = x * np.where(lower, 1.0 - (1.0 - identity.chin_width) * 0.35 * sin_t ** 4, 1.0)
    return np.stack([cx + x, cy + y], axis=1)


def hair_front(identity: Identity) -> np.ndarray | None:
    """Hair over the forehead: outer arc over the head, back along the hairline."""
    style = HAIR_STYLES[identity.hair_style]
    if style == "bald":
        return None
    a = identity.face_half_width + identity.hair_volume * 0.6
    b = identity.face_half_height + identity.hair_volume
    cx, cy = 56.0 + identity.hair_part * 0.1, identity.face_centre_y
    temple_y = ARCFACE_TEMPLATE_112[0, 1] - 6.0
    # outer arc from the left temple over the top to the right temple
    start = np.arcsin(np.clip((temple_y - cy) / b, -1, 1))  # negative angle (above centre)
    t = np.linspace(np.pi - start, 2 * np.pi + start, 24)
    outer = np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], axis=1)
    xs = np.linspace(56.0 + identity.face_half_width * 0.97, 56.0 - identity.face_half_width * 0.97, 16)
    rel = (xs - 56.0 - identity.hair_part) / identity.face_half_width
    line = identity.hairline + 10.0 * rel ** 2  # receding at the temples
    if style == "fringe":
        line = identity.hairline + 12.0 + 3.0 * np.cos(np.arange(16) * 2.1)  # jagged fringe
    elif style == "side_part":
        line = line - 5.0 * np.tanh(rel * 3.0)  # higher on the parting side
    line = np.minimum(line, temple_y)
    inner = np.stack([xs, line], axis=1)
    return np.concatenate([outer, inner], axis=0)


def brow(identity: Identity, eye: np.ndarray, side: int, raise_px: float) -> np.ndarray:
    """Brow polygon above ``eye`` (side -1 = image left), tapering towards the outer end."""
    ex, ey = eye
    t = np.linspace(0.0, 1.0, 8)
    xs = ex - side * identity.brow_length * 0.35 + side * identity.brow_length * t
    ys = (ey - identity.brow_gap - raise_px - identity.brow_arch * np.sin(np.pi * t)
          - identity.brow_angle * identity.brow_length * (t - 0.4))
    thick = identity.brow_thickness * (1.0 - 0.5 * t)
    return np.concatenate([np.stack([xs, ys - thick / 2], 1), np.stack([xs, ys + thick / 2], 1)[::-1]])


def eyelid(eye: np.ndarray, half_width: float, opening: float, tilt: float) -> np.ndarray:
    """Upper lash line of an eye: upper half of its (tilted) ellipse, 9 points."""
    ex, ey = eye
    t = np.linspace(np.pi, 2 * np.pi, 9)
    lid = np.stack([ex + half_width * np.cos(t), ey + opening * np.sin(t)], 1)
    c, s = np.cos(tilt), np.sin(tilt)
    return (lid - [ex, ey]) @ np.array([[c, s], [-s, c]]) + [ex, ey]


def glasses_frame(eye: np.ndarray, round_frame: bool) -> np.ndarray:
    """Closed frame line around one eye (round or rectangular)."""
    ex, ey = eye
    if round_frame:
        frame = ellipse(ex, ey + 1, 11, 9)
    else:
        frame = np.array([[ex - 12, ey - 7], [ex + 12, ey - 7], [ex + 11, ey + 8], [ex - 11, ey + 8]])
    return np.concatenate([frame, frame[:1]])


def mouth(identity: Identity, left: np.ndarray, right: np.ndarray, smile: float,
          open_px: float) -> dict[str, np.ndarray]:
    """Mouth parts between the two corners: ``line`` (13 points), ``upper_lip``, ``lower_lip``,
    ``gap`` (the open mouth) and ``moustache`` polygons.  ``smile`` > 0 lowers the middle."""
    t = np.linspace(0.0, 1.0, 13)
    bend = 4.0 * t * (1 - t)
    line = np.stack([left[0] + (right[0] - left[0]) * t,
                     left[1] + (right[1] - left[1]) * t + (identity.mouth_curve + smile) * bend], 1)
    half_gap = np.stack([0 * t, open_px * bend / 2], 1)
    bow = 1.0 - 0.35 * np.exp(-((t - 0.5) / 0.08) ** 2)  # cupid's bow dip
    upper = line - np.stack([0 * t, half_gap[:, 1] + identity.upper_lip * np.sin(np.pi * t) ** 0.7 * bow], 1)
    lower = line + np.stack([0 * t, half_gap[:, 1] + identity.lower_lip * np.sin(np.pi * t) ** 0.8], 1)
    return {
        "line": line,
        "upper_lip": np.concatenate([upper, ((line - [0, 0.01]) - half_gap)[::-1]]),
        "lower_lip": np.concatenate([line + half_gap, lower[::-1]]),
        "gap": np.concatenate([line - half_gap, (line + half_gap)[::-1]]),
        "moustache": np.concatenate([upper + [0, -1.0], (upper + [0, -4.5])[::-1]]),
    }


def beard(identity: Identity, outline: np.ndarray, nose: np.ndarray, left_mouth: np.ndarray,
          right_mouth: np.ndarray) -> np.ndarray:
    """Jaw below the mouth line, sorted right -> chin -> left, closed over the upper lip."""
    jaw = outline[outline[:, 1] > left_mouth[1] - 8]
    jaw = jaw[np.argsort(np.arctan2(jaw[:, 1] - identity.face_centre_y, jaw[:, 0] - 56))]
    top = [[left_mouth[0] - 5, left_mouth[1] - 4], [56, nose[1] + 6], [right_mouth[0] + 5, right_mouth[1] - 4]]
    return np.concatenate([jaw, top])
