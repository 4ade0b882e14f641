"""The training decode path: libjpeg-turbo via torchvision gives PIL's pixels; seeded flip coins."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from facetrust.data.decode import decode_rgb, decode_rgb_tensor
from facetrust.data.synthetic import SynthConfig
from facetrust.data.synthetic.images import identity_of, keyed_rng, render_aligned
from facetrust.errors import InputError
from facetrust.train.dataset import normalize_chw, to_tensor
from facetrust.train.flip_coins import flip_coins


def pil_rgb(payload: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))


def encode(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, **options)
    return buffer.getvalue()


def test_synthetic_faces_decode_to_the_pixels_pil_gives():
    config = SynthConfig()
    for k in range(3):  # rendering is the slow part
        face = render_aligned(identity_of(3, k), keyed_rng(3, k, 1), config)
        assert np.array_equal(decode_rgb(face.jpeg), pil_rgb(face.jpeg))


@pytest.mark.parametrize("options", [dict(format="JPEG", quality=90), dict(format="JPEG", quality=95, subsampling=0),
                                     dict(format="JPEG", quality=70, subsampling=1), dict(format="JPEG", progressive=True),
                                     dict(format="PNG")])
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_every_jpeg_flavour_and_png_decode_like_pil(options, mode):
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(-9, 10, (45, 61, 3)), axis=1)  # photo-like gradients, odd size
    image = Image.fromarray(np.clip(smooth + 128, 0, 255).astype(np.uint8)).convert(mode)
    if mode == "CMYK" and options["format"] == "PNG":
        pytest.skip("PNG has no CMYK")
    payload = encode(np.asarray(image), **options) if mode != "CMYK" else _save(image, options)
    tensor = decode_rgb_tensor(payload)
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == (3, 45, 61)
    assert np.array_equal(tensor.permute(1, 2, 0).numpy(), pil_rgb(payload))


def _save(image, options):
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()


def test_broken_payloads_name_where_they_came_from():
    payload = encode(np.zeros((16, 16, 3), np.uint8), format="JPEG")
    for broken in (payload[:-40], b"\xff\xd8\xffnot a jpeg", b"plain text"):
        with pytest.raises(InputError, match="train.rec key 7: cannot decode image"):
            decode_rgb(broken, "train.rec key 7")


def test_normalisation_equals_the_numpy_formula_on_every_pixel_value():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = np.stack([values, values[::-1], values.T], axis=-1)
    want = np.ascontiguousarray(((image.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1))
    assert np.array_equal(to_tensor(image).numpy(), want)
    assert np.array_equal(normalize_chw(torch.from_numpy(image).permute(2, 0, 1)).numpy(), want)
    assert to_tensor(image).is_contiguous()


@pytest.mark.parametrize("seed, epoch", [(0, 0), (2026, 3), (2**40 + 7, 1), (5, 2**33)])
def test_flip_coins_equal_one_generator_per_sample(seed, epoch):
    indices = np.r_[np.arange(300), np.random.default_rng(seed % 7).integers(0, 2**32, 200)]
    want = [np.random.default_rng([seed, epoch, int(i)]).random() < 0.5 for i in indices]
    assert flip_coins(seed, epoch, indices).tolist() == want
