"""Draw one parametric face and report where its five landmarks landed.

Every shape is built in the canonical 112x112 ArcFace frame (:mod:`.shapes`), moved by the pose
nuisance (yaw = horizontal squash plus a parallax proportional to each feature's depth, roll,
scale, shift) and by a caller-given affine map from the canonical frame to output pixels, then
drawn with PIL at ``supersample`` times the output size and box-downsampled (anti-aliasing for
free).  The same maps move the landmarks, so the reported landmarks are exact.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from facetrust.data.synthetic import shapes
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
_SCLERA, _PUPIL, _MOUTH_GAP = (235, 232, 225), (15, 12, 12), (40, 15, 15)


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
        parallax = np.asarray(depth) * self.sin_yaw * PARALLAX_DEPTH_PX
        x = (points[:, 0] - self.centre[0]) * self.cos_yaw + parallax
        y = points[:, 1] - self.centre[1]
        out = np.empty_like(points)
        (a, b), (c, d) = self.linear
        out[:, 0] = a * x + b * y + self.offset[0]
        out[:, 1] = c * x + d * y + self.offset[1]
        return out


class _Painter:
    """Fills polygons and strokes lines given in the canonical frame at a feature depth."""

    def __init__(self, draw: ImageDraw.ImageDraw, pose: _Pose):
        self.draw, self.pose = draw, pose

    def poly(self, points, feature: str, fill, depth_factor: float = 1.0) -> None:
        self.draw.polygon(self.pose(points, _DEPTH[feature] * depth_factor).ravel().tolist(), fill=fill)

    def line(self, points, feature: str, fill, width_canonical: float) -> None:
        width = max(1, int(round(width_canonical * self.pose.pixel_per_unit)))
        self.draw.line(self.pose(points, _DEPTH[feature]).ravel().tolist(), fill=fill, width=width,
                       joint="curve")


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _scaled(colour, gain: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * gain)))) for c in colour)


def _paint_background(draw: ImageDraw.ImageDraw, size: tuple[int, int], nuisance: Nuisance) -> None:
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


def _paint_head(paint: _Painter, identity: Identity, nuisance: Nuisance, landmarks: np.ndarray) -> None:
    """Shoulders, neck, hair behind the head, ears, face with shading, cheeks, beard, mole, hair."""
    skin, hair = identity.skin, identity.hair_colour
    style = HAIR_STYLES[identity.hair_style]
    paint.poly([[-30, 150], [-10, 118], [25, 108], [87, 108], [122, 118], [142, 150]], "outline",
               _scaled(nuisance.clothes, 1))
    neck_w = identity.face_half_width * 0.55
    paint.poly([[56 - neck_w, 80], [56 + neck_w, 80], [56 + neck_w, 118], [56 - neck_w, 118]], "outline",
               _scaled(skin, 0.8))
    if style != "bald":
        back = shapes.face_outline(identity, grow=identity.hair_volume * 0.8)
        back = back[back[:, 1] < identity.face_centre_y + (25 if style == "long" else 0)]
        if style == "long":
            a = identity.face_half_width + identity.hair_volume
            back = np.concatenate([back, [[56 + a + 4, 125], [56 - a - 4, 125]]])
        paint.poly(back, "hair", _scaled(hair, 0.8))
    for side in (-1, 1):
        ear_x = 56 + side * identity.face_half_width * 0.97
        ear = shapes.ellipse(ear_x, 64, identity.ear_size * 0.5, identity.ear_size)
        paint.poly(ear, "ear", _scaled(skin, 0.88))
    # face with a soft two-tone shading
    outline = shapes.face_outline(identity)
    paint.poly(outline, "outline", _scaled(skin, 0.9))
    inner = (outline - [56, identity.face_centre_y]) * [0.86, 0.9] + [56, identity.face_centre_y - 2]
    paint.poly(inner, "cheek", _scaled(skin, 1.0), depth_factor=0.5)
    left_eye, right_eye, nose, left_mouth, right_mouth = landmarks
    if identity.cheek_blush > 0.05:
        blush = _mix(skin, (220, 90, 90), identity.cheek_blush)
        for x in (left_eye[0] - 2, right_eye[0] + 2):
            paint.poly(shapes.ellipse(x, 74, 6, 4), "cheek", blush)
    if identity.beard > 0:
        paint.poly(shapes.beard(identity, outline, nose, left_mouth, right_mouth), "beard",
                   _mix(skin, hair, identity.beard))
    if identity.mole is not None:
        paint.poly(shapes.ellipse(*identity.mole, 1.3, 1.3), "cheek", _scaled(skin, 0.4))
    front = shapes.hair_front(identity)
    if front is not None:
        paint.poly(front, "hair", _scaled(hair, 1.0))


def _paint_eyes(paint: _Painter, identity: Identity, nuisance: Nuisance, landmarks: np.ndarray) -> None:
    """Brows, then sclera, iris, pupil and lash line of each eye, then glasses."""
    opening = identity.eye_open * (1.0 - nuisance.eye_closure)
    for side, eye in ((-1, landmarks[0]), (1, landmarks[1])):
        brow = shapes.brow(identity, eye, side, nuisance.brow_raise)
        paint.poly(brow, "brow", _scaled(identity.hair_colour, 0.7))
    for side, eye in ((-1, landmarks[0]), (1, landmarks[1])):
        tilt = -side * identity.eye_tilt
        paint.poly(shapes.ellipse(eye[0], eye[1], identity.eye_width, max(opening, 0.4), tilt), "eye", _SCLERA)
        if opening > 0.8:
            radius = min(opening * 0.95, identity.eye_width * 0.55)
            paint.poly(shapes.ellipse(eye[0], eye[1], radius, radius), "eye", _scaled(identity.iris_colour, 1))
            paint.poly(shapes.ellipse(eye[0], eye[1], radius * 0.45, radius * 0.45), "eye", _PUPIL)
        lid = shapes.eyelid(eye, identity.eye_width, max(opening, 0.4), tilt)
        paint.line(lid, "eye", _scaled(identity.hair_colour, 0.4), 1.0)
    if nuisance.glasses_on:
        colour = _scaled(identity.glasses_colour, 1)
        for eye in landmarks[:2]:
            paint.line(shapes.glasses_frame(eye, identity.glasses_round), "glasses", colour, 1.4)
        (lex, ley), (rex, rey) = landmarks[:2]
        paint.line([[lex + 11, ley - 1], [rex - 11, rey - 1]], "glasses", colour, 1.4)


def _paint_nose_and_mouth(paint: _Painter, identity: Identity, nuisance: Nuisance,
                          landmarks: np.ndarray) -> None:
    """Nose bridge shading, tip and nostrils; lips around a curved mouth line, moustache."""
    skin = identity.skin
    (_, ley), (_, rey), (ntx, nty) = landmarks[:3]
    shade = _scaled(skin, 1.0 - 0.18 * identity.nose_bridge)
    for side in (-1, 1):
        paint.line([[56 + side * 3.0, (ley + rey) / 2], [ntx + side * identity.nose_width * 0.7, nty - 1]],
                   "bridge", shade, 1.2)
    paint.poly(shapes.ellipse(ntx, nty - 0.5, identity.nose_width * 0.55, 3.2), "nose", _scaled(skin, 1.05))
    for side in (-1, 1):
        nostril = shapes.ellipse(ntx + side * identity.nose_width * 0.5, nty + 2.2, 1.8, 1.1)
        paint.poly(nostril, "nose", _scaled(skin, 0.45))
    parts = shapes.mouth(identity, landmarks[3], landmarks[4], nuisance.smile, nuisance.mouth_open)
    if identity.moustache:
        paint.poly(parts["moustache"], "moustache", _scaled(identity.hair_colour, 0.8))
    lip = _scaled(identity.lip_colour, 1.0)
    paint.poly(parts["upper_lip"], "mouth", _scaled(lip, 0.9))
    paint.poly(parts["lower_lip"], "mouth", lip)
    if nuisance.mouth_open > 0.6:
        paint.poly(parts["gap"], "mouth", _MOUTH_GAP)
    paint.line(parts["line"], "mouth", _scaled(identity.lip_colour, 0.55), 0.8)


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
    _paint_background(draw, (width * ss, height * ss), nuisance)
    paint = _Painter(draw, pose)
    landmarks = identity_landmarks_112(identity)
    _paint_head(paint, identity, nuisance, landmarks)
    _paint_eyes(paint, identity, nuisance, landmarks)
    _paint_nose_and_mouth(paint, identity, nuisance, landmarks)
    pixels = _illuminate(np.asarray(image.reduce(ss), dtype=np.float32), nuisance)
    points = (pose(landmarks, _LANDMARK_DEPTH) - (ss - 1) / 2) / ss
    return pixels, points


def _illuminate(pixels: np.ndarray, nuisance: Nuisance) -> np.ndarray:
    """Directional light gradient, global brightness and colour cast (scene, not quality)."""
    h, w, _ = pixels.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = (np.cos(nuisance.light_direction) * (xs / w - 0.5)
                 + np.sin(nuisance.light_direction) * (ys / h - 0.5))
    gain = nuisance.brightness * (1.0 + nuisance.light_strength * direction)
    out = pixels * gain[..., None] * np.asarray(nuisance.colour_cast, dtype=np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)
