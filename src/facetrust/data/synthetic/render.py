"""Draw one parametric face and report where its five landmarks landed.

Every shape is built in the canonical 112x112 ArcFace frame, moved by the pose nuisance (yaw =
horizontal squash plus a parallax proportional to each feature's depth, roll, scale, shift) and
by a caller-given affine map from the canonical frame to output pixels, then drawn with PIL at
``supersample`` times the output size and box-downsampled (anti-aliasing for free).  The same
maps move the landmarks, so the reported landmarks are exact.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from facetrust.data.synthetic.identity import (
    ARCFACE_TEMPLATE_112,
    FACE_ROTATION_CENTRE,
    HAIR_STYLES,
    PARALLAX_DEPTH_PX,
    Identity,
    Nuisance,
)

# Depth of each feature, in units of PARALLAX_DEPTH_PX: what moves how much under yaw.
_DEPTH = {"ear": -0.6, "outline": 0.0, "hair": 0.0, "cheek": 0.3, "brow": 0.4, "eye": 0.4,
          "bridge": 0.7, "nose": 1.0, "mouth": 0.5, "beard": 0.3, "moustache": 0.6, "glasses": 0.6}
_LANDMARK_DEPTH = np.array([_DEPTH["eye"], _DEPTH["eye"], _DEPTH["nose"], _DEPTH["mouth"],
                            _DEPTH["mouth"]])
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 32, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 32, endpoint=False))], axis=1)


def identity_landmarks_112(identity: Identity) -> np.ndarray:
    """The five landmarks of ``identity`` in the canonical frame before pose (5 x 2)."""
    points = ARCFACE_TEMPLATE_112.copy()
    points[0, 0] -= identity.eye_spacing
    points[1, 0] += identity.eye_spacing
    points[:2, 1] += identity.eye_height_offset
    points[2, 1] += identity.nose_length
    points[3, 0] -= identity.mouth_width
    points[4, 0] += identity.mouth_width
    return points


class _Pose:
    """Canonical points -> drawing pixels for one image (pose nuisance, then the caller's map)."""

    def __init__(self, nuisance: Nuisance, canonical_to_pixel: np.ndarray, gain: float):
        cx, cy = FACE_ROTATION_CENTRE
        self.centre = np.array([cx, cy])
        self.cos_yaw, self.sin_yaw = np.cos(nuisance.yaw), np.sin(nuisance.yaw)
        c, s = np.cos(nuisance.roll) * nuisance.scale, np.sin(nuisance.roll) * nuisance.scale
        rotation = np.array([[c, -s], [s, c]])
        affine = np.asarray(canonical_to_pixel, dtype=np.float64) * gain
        # full linear part and offset: pixel = L @ (R @ (p_yaw - centre) + centre + shift) + t
        self.linear = affine[:, :2] @ rotation
        # gain > 1 draws supersampled: output pixel k covers drawing pixels gain*k .. gain*k+gain-1,
        # so the output pixel centre k sits at gain*k + (gain-1)/2 (pixel centre = integer).
        self.offset = (affine[:, :2] @ (self.centre + np.asarray(nuisance.shift)) + affine[:, 2]
                       + (gain - 1) / 2)
        self.pixel_per_unit = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))) * nuisance.scale)

    def __call__(self, points: np.ndarray, depth: float | np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        x = (points[:, 0] - self.centre[0]) * self.cos_yaw + np.asarray(depth) * self.sin_yaw * PARALLAX_DEPTH_PX
        y = points[:, 1] - self.centre[1]
        out = np.empty_like(points)
        (a, b), (c, d) = self.linear
        out[:, 0] = a * x + b * y + self.offset[0]
        out[:, 1] = c * x + d * y + self.offset[1]
        return out


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    x, y = _CIRCLE[:, 0] * rx, _CIRCLE[:, 1] * ry
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _scaled(colour, gain: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * gain)))) for c in colour)


def _face_outline(identity: Identity, grow: float = 0.0) -> np.ndarray:
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


def _draw_background(draw: ImageDraw.ImageDraw, size: tuple[int, int], nuisance: Nuisance) -> None:
    """Flat colour plus a few soft shapes: a scene texture that carries no identity."""
    rng = np.random.default_rng(nuisance.background_seed)
    w, h = size
    draw.rectangle([0, 0, w, h], fill=_scaled(nuisance.background, 1.0))
    for _ in range(int(rng.integers(3, 8))):
        colour = np.clip(np.asarray(nuisance.background) + rng.normal(0, 35, 3), 0, 255)
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * (w, h)
        x1, y1 = np.array([x0, y0]) + rng.uniform(0.1, 0.6, 2) * (w, h)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1, y1], fill=_scaled(colour, 1.0))


def _hair_front(identity: Identity) -> np.ndarray | None:
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


def render_face(
    identity: Identity,
    nuisance: Nuisance,
    canonical_to_pixel: np.ndarray,
    size: tuple[int, int],
    supersample: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``identity`` under ``nuisance``; return ``(image, landmarks)``.

    ``canonical_to_pixel`` is a 2x3 affine map from the canonical 112 frame to output pixels;
    ``size`` is ``(width, height)``.  ``image`` is RGB uint8 (height x width x 3) including the
    illumination nuisance; ``landmarks`` is 5 x 2 float64 output-pixel coordinates (pixel centre
    = integer, as ``cv2.warpAffine`` and the ArcFace template) of left eye, right eye, nose tip,
    left and right mouth corner.
    """
    width, height = size
    ss = int(supersample)
    pose = _Pose(nuisance, canonical_to_pixel, ss)
    image = Image.new("RGB", (width * ss, height * ss))
    draw = ImageDraw.Draw(image)
    _draw_background(draw, (width * ss, height * ss), nuisance)
    unit = pose.pixel_per_unit  # drawing pixels per canonical px (line widths)

    def poly(points, depth, fill, outline=None) -> None:
        draw.polygon(pose(points, depth).ravel().tolist(), fill=fill, outline=outline)

    def line(points, depth, fill, width_canonical) -> None:
        draw.line(pose(points, depth).ravel().tolist(), fill=fill,
                  width=max(1, int(round(width_canonical * unit))), joint="curve")

    skin = identity.skin
    hair = identity.hair_colour
    style = HAIR_STYLES[identity.hair_style]
    landmarks = identity_landmarks_112(identity)
    (lex, ley), (rex, rey), (ntx, nty), (lmx, lmy), (rmx, rmy) = landmarks

    # body: shoulders and neck
    poly([[-30, 150], [-10, 118], [25, 108], [87, 108], [122, 118], [142, 150]], 0.0, _scaled(nuisance.clothes, 1))
    neck_w = identity.face_half_width * 0.55
    poly([[56 - neck_w, 80], [56 + neck_w, 80], [56 + neck_w, 118], [56 - neck_w, 118]], 0.0, _scaled(skin, 0.8))
    # hair behind the head
    if style != "bald":
        back = _face_outline(identity, grow=identity.hair_volume * 0.8)
        back = back[back[:, 1] < identity.face_centre_y + (25 if style == "long" else 0)]
        if style == "long":
            a = identity.face_half_width + identity.hair_volume
            back = np.concatenate([back, [[56 + a + 4, 125], [56 - a - 4, 125]]])
        poly(back, _DEPTH["hair"], _scaled(hair, 0.8))
    # ears
    for side in (-1, 1):
        ear_x = 56 + side * identity.face_half_width * 0.97
        poly(_ellipse(ear_x, 64, identity.ear_size * 0.5, identity.ear_size), _DEPTH["ear"], _scaled(skin, 0.88))
    # face with a soft two-tone shading and cheeks
    outline = _face_outline(identity)
    poly(outline, _DEPTH["outline"], _scaled(skin, 0.9))
    inner = (outline - [56, identity.face_centre_y]) * [0.86, 0.9] + [56, identity.face_centre_y - 2]
    poly(inner, _DEPTH["cheek"] * 0.5, _scaled(skin, 1.0))
    if identity.cheek_blush > 0.05:
        blush = _mix(skin, (220, 90, 90), identity.cheek_blush)
        for x in (lex - 2, rex + 2):
            poly(_ellipse(x, 74, 6, 4), _DEPTH["cheek"], blush)
    if identity.beard > 0:
        # jaw below the mouth line, sorted right -> chin -> left, closed over the upper lip
        jaw = outline[outline[:, 1] > lmy - 8]
        jaw = jaw[np.argsort(np.arctan2(jaw[:, 1] - identity.face_centre_y, jaw[:, 0] - 56))]
        top = [[lmx - 5, lmy - 4], [56, nty + 6], [rmx + 5, rmy - 4]]
        poly(np.concatenate([jaw, top]), _DEPTH["beard"], _mix(skin, hair, identity.beard))
    if identity.mole is not None:
        poly(_ellipse(*identity.mole, 1.3, 1.3), _DEPTH["cheek"], _scaled(skin, 0.4))
    # hair over the forehead
    front = _hair_front(identity)
    if front is not None:
        poly(front, _DEPTH["hair"], _scaled(hair, 1.0))
    # brows
    for side, (ex, ey) in ((-1, (lex, ley)), (1, (rex, rey))):
        t = np.linspace(0.0, 1.0, 8)
        xs = ex - side * identity.brow_length * 0.35 + side * identity.brow_length * t
        ys = (ey - identity.brow_gap - nuisance.brow_raise - identity.brow_arch * np.sin(np.pi * t)
              - identity.brow_angle * identity.brow_length * (t - 0.4))
        thick = identity.brow_thickness * (1.0 - 0.5 * t)
        poly(np.concatenate([np.stack([xs, ys - thick / 2], 1), np.stack([xs, ys + thick / 2], 1)[::-1]]),
             _DEPTH["brow"], _scaled(hair, 0.7))
    # eyes: sclera, iris, pupil, lash line
    opening = identity.eye_open * (1.0 - nuisance.eye_closure)
    for side, (ex, ey) in ((-1, (lex, ley)), (1, (rex, rey))):
        tilt = -side * identity.eye_tilt
        poly(_ellipse(ex, ey, identity.eye_width, max(opening, 0.4), tilt), _DEPTH["eye"], (235, 232, 225))
        if opening > 0.8:
            radius = min(opening * 0.95, identity.eye_width * 0.55)
            poly(_ellipse(ex, ey, radius, radius), _DEPTH["eye"], _scaled(identity.iris_colour, 1))
            poly(_ellipse(ex, ey, radius * 0.45, radius * 0.45), _DEPTH["eye"], (15, 12, 12))
        t = np.linspace(np.pi, 2 * np.pi, 9)
        lid = np.stack([ex + identity.eye_width * np.cos(t), ey + max(opening, 0.4) * np.sin(t)], 1)
        c, s = np.cos(tilt), np.sin(tilt)
        lid = (lid - [ex, ey]) @ np.array([[c, s], [-s, c]]) + [ex, ey]
        line(lid, _DEPTH["eye"], _scaled(hair, 0.4), 1.0)
    if nuisance.glasses_on:
        for ex, ey in ((lex, ley), (rex, rey)):
            if identity.glasses_round:
                frame = _ellipse(ex, ey + 1, 11, 9)
            else:
                frame = np.array([[ex - 12, ey - 7], [ex + 12, ey - 7], [ex + 11, ey + 8], [ex - 11, ey + 8]])
            line(np.concatenate([frame, frame[:1]]), _DEPTH["glasses"], _scaled(identity.glasses_colour, 1), 1.4)
        line([[lex + 11, ley - 1], [rex - 11, rey - 1]], _DEPTH["glasses"], _scaled(identity.glasses_colour, 1), 1.4)
    # nose: bridge shading, tip, nostrils
    shade = _scaled(skin, 1.0 - 0.18 * identity.nose_bridge)
    for side in (-1, 1):
        line([[56 + side * 3.0, (ley + rey) / 2], [ntx + side * identity.nose_width * 0.7, nty - 1]],
             _DEPTH["bridge"], shade, 1.2)
    poly(_ellipse(ntx, nty - 0.5, identity.nose_width * 0.55, 3.2), _DEPTH["nose"], _scaled(skin, 1.05))
    for side in (-1, 1):
        poly(_ellipse(ntx + side * identity.nose_width * 0.5, nty + 2.2, 1.8, 1.1), _DEPTH["nose"], _scaled(skin, 0.45))
    # mouth: lips around a curved mouth line, dark gap when open
    t = np.linspace(0.0, 1.0, 13)
    bend = 4.0 * t * (1 - t)
    mid = np.stack([lmx + (rmx - lmx) * t, lmy + (rmy - lmy) * t + (identity.mouth_curve + nuisance.smile) * bend], 1)
    gap = nuisance.mouth_open * bend
    bow = 1.0 - 0.35 * np.exp(-((t - 0.5) / 0.08) ** 2)  # cupid's bow dip
    upper = mid - np.stack([0 * t, gap / 2 + identity.upper_lip * np.sin(np.pi * t) ** 0.7 * bow], 1)
    lower = mid + np.stack([0 * t, gap / 2 + identity.lower_lip * np.sin(np.pi * t) ** 0.8], 1)
    if identity.moustache:
        poly(np.concatenate([upper + [0, -1.0], (upper + [0, -4.5])[::-1]]), _DEPTH["moustache"], _scaled(hair, 0.8))
    lip = _scaled(identity.lip_colour, 1.0)
    poly(np.concatenate([upper, (mid - [0, 0.01])[::-1] - np.stack([0 * t, gap / 2], 1)[::-1]]), _DEPTH["mouth"], _scaled(lip, 0.9))
    poly(np.concatenate([mid + np.stack([0 * t, gap / 2], 1), lower[::-1]]), _DEPTH["mouth"], lip)
    if nuisance.mouth_open > 0.6:
        poly(np.concatenate([mid - np.stack([0 * t, gap / 2], 1), (mid + np.stack([0 * t, gap / 2], 1))[::-1]]),
             _DEPTH["mouth"], (40, 15, 15))
    line(mid, _DEPTH["mouth"], _scaled(identity.lip_colour, 0.55), 0.8)

    pixels = np.asarray(image.reduce(ss), dtype=np.float32)
    pixels = _illuminate(pixels, nuisance)
    points = (pose(landmarks, _LANDMARK_DEPTH) - (ss - 1) / 2) / ss
    return pixels, points


def _illuminate(pixels: np.ndarray, nuisance: Nuisance) -> np.ndarray:
    """Directional light gradient, global brightness and colour cast (scene, not quality)."""
    h, w, _ = pixels.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = np.cos(nuisance.light_direction) * (xs / w - 0.5) + np.sin(nuisance.light_direction) * (ys / h - 0.5)
    gain = nuisance.brightness * (1.0 + nuisance.light_strength * direction)
    out = pixels * gain[..., None] * np.asarray(nuisance.colour_cast, dtype=np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)
