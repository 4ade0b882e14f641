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
# Which degradation an image with a strong degradation surely has (others: 30 % each).
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
    """Draw a degradation: mild for most images, strong for ``strong_degradation_fraction``.

    A strongly degraded image has one degradation (drawn by ``_STRONG_KIND_WEIGHTS``) at 45-100 %
    of its configured extreme and each other one strong with probability 0.3, so the low end of
    quality really destroys identity information.
    """
    size = config.image_size
    jpeg_low, jpeg_high = config.jpeg_quality_range
    strong = set()
    if rng.random() < config.strong_degradation_fraction:
        strong.add(_KINDS[int(rng.choice(len(_KINDS), p=_STRONG_KIND_WEIGHTS))])
        strong.update(k for k in _KINDS if rng.random() < 0.3)
    draws = rng.uniform(size=5)  # one draw per kind, consumed whatever the branch

    if "blur" in strong:
        blur = config.blur_sigma_max * (0.45 + 0.55 * draws[0])
    else:
        blur = config.blur_sigma_max * 0.2 * draws[0] if draws[0] < 0.5 else 0.0
    if "noise" in strong:
        noise = config.noise_std_max * (0.45 + 0.55 * draws[1])
    else:
        noise = config.noise_std_max * 0.15 * draws[1]
    span = size - config.resolution_min
    if "resolution" in strong:
        resolution = config.resolution_min + span * 0.3 * draws[2]
    else:
        resolution = size if draws[2] < 0.6 else size - span * 0.4 * (draws[2] - 0.6) / 0.4
    if "occlusion" in strong:
        occlusion = config.occlusion_max * (0.5 + 0.5 * draws[3])
    else:
        occlusion = config.occlusion_max * 0.3 * (draws[3] - 0.8) / 0.2 if draws[3] > 0.8 else 0.0
    if "jpeg" in strong:
        jpeg = jpeg_low + min(15, jpeg_high - jpeg_low) * draws[4]
    else:
        jpeg = max(jpeg_low, min(JPEG_KNEE, jpeg_high)) + (jpeg_high - max(jpeg_low, min(JPEG_KNEE, jpeg_high))) * draws[4]
    return Degradation(
        blur_sigma=round(float(blur), 3),
        noise_std=round(float(noise), 2),
        resolution=int(round(resolution)),
        jpeg_quality=int(round(jpeg)),
        occlusion=round(float(occlusion), 3),
    )


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
    the resolution is capped at the face's own size in the image.
    """
    height, width, _ = pixels.shape
    x0, y0, side = face_box
    gain = side / float(image_size)  # image px per aligned-frame px
    out = pixels
    if degradation.occlusion > 0:
        out = out.copy()
        area = degradation.occlusion * side * side
        aspect = float(np.exp(rng.uniform(-0.7, 0.7)))
        pw, ph = np.sqrt(area * aspect), np.sqrt(area / aspect)
        pw, ph = min(pw, side), min(ph, side)
        cx = x0 + pw / 2 + rng.uniform() * (side - pw)
        cy = y0 + ph / 2 + rng.uniform() * (side - ph)
        xa, xb = int(round(cx - pw / 2)), int(round(cx + pw / 2))
        ya, yb = int(round(cy - ph / 2)), int(round(cy + ph / 2))
        xa, xb, ya, yb = max(xa, 0), min(xb, width), max(ya, 0), min(yb, height)
        if xb > xa and yb > ya:
            colour = rng.uniform(0, 255, 3)
            texture = rng.normal(0, 18, (yb - ya, xb - xa, 1))
            out[ya:yb, xa:xb] = np.clip(colour + texture, 0, 255).astype(np.uint8)
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
    buffer = io.BytesIO()
    Image.fromarray(out).save(buffer, format="JPEG", quality=int(degradation.jpeg_quality))
    effective = degradation
    if effective_resolution != degradation.resolution:
        effective = Degradation(degradation.blur_sigma, degradation.noise_std, effective_resolution,
                                degradation.jpeg_quality, degradation.occlusion)
    return buffer.getvalue(), effective
