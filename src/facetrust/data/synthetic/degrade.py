"""Known quality degradations and the scalar quality they imply.

Each image gets a :class:`Degradation`: Gaussian blur, additive noise, a downsample-upsample to
a lower resolution, an occluding patch and JPEG compression.  Magnitudes are in the frame of
the aligned crop of ``image_size`` pixels; in a loose crop where the face square is
``face_side`` pixels wide they are rescaled by ``face_side / image_size`` so that, after
alignment, the same degradation leaves the same amount of identity information.

Quality (:func:`quality_score`) is the product of one factor per degradation, each a
decreasing function equal to 1 for no degradation:

* blur        ``1 / (1 + (sigma / (S/32))^2)``          (half at sigma = 1.5 px for S = 48)
* noise       ``1 / (1 + (noise_std / 20)^2)``          (half at std 20 of 255)
* resolution  ``1 / (1 + ((S / r - 1) / 1.5)^2)``       (half at r = 0.4 S)
* JPEG        ``1 / (1 + (max(0, 70 - q) / 30)^2)``     (1 above quality 70)
* occlusion   ``(1 - occlusion)^2``

with ``S = image_size`` and ``r`` the effective face resolution in pixels.  1 = pristine,
values near 0 = identity information destroyed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from facetrust.data.synthetic.config import SynthConfig

_KINDS = ("blur", "noise", "resolution", "occlusion", "jpeg")
# Which degradation dominates an image (its "main" kind).
_STRONG_KIND_WEIGHTS = np.array([0.3, 0.2, 0.25, 0.15, 0.1])
JPEG_KNEE = 70  # JPEG quality at and above which compression costs no quality


@dataclass(frozen=True)
class Degradation:
    """One image's degradation, in aligned-frame units (see the module docstring)."""

    blur_sigma: float  # px
    noise_std: float  # intensity levels of 255
    resolution: int  # effective face side, px (image_size = none)
    jpeg_quality: int  # libjpeg quality
    occlusion: float  # fraction of the face square hidden

    def quality(self, image_size: int) -> float:
        return float(quality_score(self.blur_sigma, self.noise_std, self.resolution,
                                   self.jpeg_quality, self.occlusion, image_size))


def quality_score(blur_sigma, noise_std, resolution, jpeg_quality, occlusion, image_size: int):
    """Scalar quality in [0, 1] (1 = pristine); numpy-broadcasting over the degradations."""
    size = float(image_size)
    blur = 1.0 / (1.0 + (np.asarray(blur_sigma, dtype=np.float64) / (size / 32.0)) ** 2)
    noise = 1.0 / (1.0 + (np.asarray(noise_std, dtype=np.float64) / 20.0) ** 2)
    ratio = size / np.maximum(np.asarray(resolution, dtype=np.float64), 1.0) - 1.0
    res = 1.0 / (1.0 + (np.maximum(ratio, 0.0) / 1.5) ** 2)
    jpeg = 1.0 / (1.0 + (np.maximum(JPEG_KNEE - np.asarray(jpeg_quality, dtype=np.float64), 0.0) / 30.0) ** 2)
    occ = (1.0 - np.clip(np.asarray(occlusion, dtype=np.float64), 0.0, 1.0)) ** 2
    return blur * noise * res * jpeg * occ


def sample_degradation(rng: np.random.Generator, config: SynthConfig) -> Degradation:
    """Draw a degradation with a continuous severity; strong for ``strong_degradation_fraction``.

    Severity ``s`` is uniform in [0.5, 1] for a strongly degraded image and ``0.5 * u**1.5``
    (mostly mild) otherwise.  One main kind (drawn by ``_STRONG_KIND_WEIGHTS``) gets level ``s``;
    blur, noise and resolution also get a secondary level ``s * U(0, 0.5)``, and on a strongly
    degraded image each other kind is strong too with probability 0.3.  Level 1 is the configured
    extreme (``blur_sigma_max``, ``noise_std_max``, ``resolution_min``, ``occlusion_max``, the low
    end of ``jpeg_quality_range``), so the low end of quality really destroys identity
    information while quality still spans [0, 1] continuously.
    """
    size = config.image_size
    jpeg_low, jpeg_high = config.jpeg_quality_range
    knee = max(jpeg_low, min(JPEG_KNEE, jpeg_high))
    strong = rng.random() < config.strong_degradation_fraction
    severity = 0.5 + 0.5 * rng.random() if strong else 0.5 * rng.random() ** 1.5
    main = int(rng.choice(len(_KINDS), p=_STRONG_KIND_WEIGHTS))
    # fixed number of draws whatever the branch, so later draws do not shift with the branch
    secondary = severity * 0.5 * rng.random(len(_KINDS))
    extra_strong = severity * (0.5 + 0.5 * rng.random(len(_KINDS)))
    extra_chosen = rng.random(len(_KINDS)) < 0.3
    level = secondary.copy()
    level[[_KINDS.index("occlusion"), _KINDS.index("jpeg")]] = 0.0  # only as a main/strong kind
    if strong:
        level = np.where(extra_chosen, extra_strong, level)
    level[main] = severity
    blur, noise, resolution, occlusion, jpeg = level.tolist()
    jpeg_quality = knee - jpeg * (knee - jpeg_low) if jpeg > 0 else knee + (jpeg_high - knee) * rng.random()
    return Degradation(
        blur_sigma=round(config.blur_sigma_max * blur, 3),
        noise_std=round(config.noise_std_max * noise, 2),
        resolution=int(round(size - resolution * (size - config.resolution_min))),
        jpeg_quality=int(round(jpeg_quality)),
        occlusion=round(config.occlusion_max * occlusion, 3),
    )


#: An occluder's pixel box ``(x0, y0, x1, y1)``: it covers columns x0..x1-1 and rows y0..y1-1.
OccluderBox = tuple[int, int, int, int]


def _draw_occluder(pixels: np.ndarray, occlusion: float, face_box: tuple[float, float, float],
                   rng: np.random.Generator, paint: bool = True) -> OccluderBox | None:
    """Paint a textured patch of ``occlusion`` x the face square's area in place; return its box.

    The box is clipped to the image; None when nothing is painted (the clipped patch is empty).
    Every parameter (place, colour, texture) is drawn whether or not ``paint`` is set, so the
    image drawn with ``paint=False`` -- the occluded image's **clean twin** -- consumes the same
    random numbers and gets the same later noise: it differs from the occluded image only where
    the patch (spread by blur, resampling and JPEG) would be.
    """
    height, width, _ = pixels.shape
    x0, y0, side = face_box
    area = occlusion * side * side
    aspect = float(np.exp(rng.uniform(-0.7, 0.7)))
    pw, ph = np.sqrt(area * aspect), np.sqrt(area / aspect)
    pw, ph = min(pw, side), min(ph, side)
    cx = x0 + pw / 2 + rng.uniform() * (side - pw)
    cy = y0 + ph / 2 + rng.uniform() * (side - ph)
    xa, xb = int(round(cx - pw / 2)), int(round(cx + pw / 2))
    ya, yb = int(round(cy - ph / 2)), int(round(cy + ph / 2))
    xa, xb, ya, yb = max(xa, 0), min(xb, width), max(ya, 0), min(yb, height)
    if not (xb > xa and yb > ya):
        return None
    colour = rng.uniform(0, 255, 3)
    texture = rng.normal(0, 18, (yb - ya, xb - xa, 1))
    if paint:
        pixels[ya:yb, xa:xb] = np.clip(colour + texture, 0, 255).astype(np.uint8)
    return xa, ya, xb, yb


def apply_degradation(
    pixels: np.ndarray,
    degradation: Degradation,
    face_box: tuple[float, float, float],
    image_size: int,
    rng: np.random.Generator,
) -> tuple[bytes, Degradation]:
    """Degrade an RGB uint8 image and JPEG-encode it; return ``(jpeg_bytes, effective)``.

    ``face_box`` is ``(x0, y0, side)`` of the face square (the aligned frame) in this image's
    pixels.  Order follows the imaging chain: occluder in the scene, optical blur, sensor
    resolution, sensor noise, compression.  ``effective`` equals ``degradation`` except that
    the resolution is capped at the face's own size in the image.  :func:`degrade_with_occluder`
    also returns where the occluder went.
    """
    jpeg, effective, _ = degrade_with_occluder(pixels, degradation, face_box, image_size, rng)
    return jpeg, effective


def degrade_with_occluder(
    pixels: np.ndarray,
    degradation: Degradation,
    face_box: tuple[float, float, float],
    image_size: int,
    rng: np.random.Generator,
    paint_occluder: bool = True,
) -> tuple[bytes, Degradation, OccluderBox | None]:
    """:func:`apply_degradation` plus the occluder's box in this image's pixels (None: no occluder).

    Same random draws in the same order, so the image bytes are those of :func:`apply_degradation`.
    ``paint_occluder=False`` draws the occluder but does not paint it: the clean twin.
    """
    out, effective, occluder = degrade_pixels(pixels, degradation, face_box, image_size, rng, paint_occluder)
    buffer = io.BytesIO()
    Image.fromarray(out).save(buffer, format="JPEG", quality=int(degradation.jpeg_quality))
    return buffer.getvalue(), effective, occluder


def degrade_pixels(
    pixels: np.ndarray,
    degradation: Degradation,
    face_box: tuple[float, float, float],
    image_size: int,
    rng: np.random.Generator,
    paint_occluder: bool = True,
) -> tuple[np.ndarray, Degradation, OccluderBox | None]:
    """:func:`degrade_with_occluder` before the JPEG encoding: ``(uint8 pixels, effective, box)``."""
    height, width, _ = pixels.shape
    side = face_box[2]
    gain = side / float(image_size)  # image px per aligned-frame px
    out = pixels
    occluder = None
    if degradation.occlusion > 0:
        out = out.copy()
        occluder = _draw_occluder(out, degradation.occlusion, face_box, rng, paint=paint_occluder)
    image = Image.fromarray(out)
    if degradation.blur_sigma > 0:
        image = image.filter(ImageFilter.GaussianBlur(radius=degradation.blur_sigma * gain))
    effective_resolution = int(min(degradation.resolution, round(side)))
    factor = degradation.resolution / side
    if factor < 1.0:
        small = (max(1, int(round(width * factor))), max(1, int(round(height * factor))))
        image = image.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    out = np.asarray(image, dtype=np.float32)
    if degradation.noise_std > 0:
        out = out + rng.normal(0, degradation.noise_std * gain, out.shape).astype(np.float32)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    effective = degradation
    if effective_resolution != degradation.resolution:
        effective = Degradation(degradation.blur_sigma, degradation.noise_std, effective_resolution,
                                degradation.jpeg_quality, degradation.occlusion)
    return out, effective, occluder
