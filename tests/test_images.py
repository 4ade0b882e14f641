"""facetrust.data.images: bounded, strict decoding that gives Pillow's pixels for valid files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import bad_input_fixtures as fx
from facetrust.data.images import BadImagePolicy, decode_image
from facetrust.errors import ConfigError, InputError


def _encode(pixels, fmt, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, options", [
    ("JPEG", {"quality": 75}), ("JPEG", {"quality": 95, "subsampling": 0}), ("JPEG", {"progressive": True}),
    ("PNG", {}),
])
@pytest.mark.parametrize("grey", [False, True])
def test_decoded_pixels_equal_pillows(fmt, options, grey):
    rng = np.random.default_rng(3)
    pixels = np.clip(np.cumsum(rng.normal(0, 8, (40, 36, 3)), axis=0) + 128, 0, 255).astype(np.uint8)
    payload = _encode(pixels[..., 0] if grey else pixels, fmt, **options)
    expected = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))
    decoded = decode_image(payload, "x")
    assert decoded.dtype == np.uint8 and decoded.shape == (40, 36, 3)
    np.testing.assert_array_equal(decoded, expected)


def test_pixel_limit_is_checked_before_decoding():
    payload = fx.jpeg(0, size=32)
    assert decode_image(payload, "x", max_pixels=32 * 32).shape == (32, 32, 3)
    with pytest.raises(InputError, match=r"x key 5: image declares 32x32 = 1024 pixels, more than the 1023"):
        decode_image(payload, "x", "key 5", max_pixels=32 * 32 - 1)
    with pytest.raises(InputError, match="more than the 1023 allowed"):
        decode_image(_encode(np.zeros((32, 32, 3), np.uint8), "PNG"), "x", max_pixels=1023)


def test_corrupt_scan_data_that_pillow_accepts_is_refused():
    payload = fx.corrupt_jpeg()
    Image.open(io.BytesIO(payload)).load()  # Pillow decodes it without a word
    with pytest.raises(InputError, match="record 7: Corrupt JPEG data"):
        decode_image(payload, "set.rec", 7)


def test_policy_fail_raises_skip_counts():
    error = InputError("a.rec key 1: bad")
    with pytest.raises(InputError, match="key 1"):
        BadImagePolicy("fail").handle(error)
    policy = BadImagePolicy("skip", stage="test")
    policy.handle(error)
    policy.handle(error)
    assert policy.summary() == {"on_bad_image": "skip", "skipped": 2, "skipped_examples": [str(error)] * 2}
    with pytest.raises(ConfigError, match="on_bad_image: 'ignore' is not one of fail, skip"):
        BadImagePolicy("ignore")


def test_a_jpeg_of_the_buffers_size_is_decoded_into_it_and_others_are_not():
    pixels = np.clip(np.cumsum(np.random.default_rng(4).normal(0, 8, (40, 36, 3)), axis=0) + 128, 0, 255)
    payload = _encode(pixels.astype(np.uint8), "JPEG", quality=90)
    expected = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))
    out = np.zeros((40, 36, 3), np.uint8)
    assert decode_image(payload, "x", out=out) is out
    np.testing.assert_array_equal(out, expected)
    other = np.zeros((36, 40, 3), np.uint8)
    decoded = decode_image(payload, "x", out=other)  # another size: a new array, the buffer untouched
    assert decoded is not other and not other.any()
    np.testing.assert_array_equal(decoded, expected)
    cmyk = io.BytesIO()
    Image.fromarray(expected).convert("CMYK").save(cmyk, format="JPEG")
    decoded = decode_image(cmyk.getvalue(), "x", out=out)  # libjpeg-turbo would misread CMYK as RGB
    assert decoded is not out
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(io.BytesIO(cmyk.getvalue())).convert("RGB")))


def test_decoding_into_a_buffer_keeps_the_limits_and_the_strictness():
    out = np.zeros((fx.SIZE, fx.SIZE, 3), np.uint8)
    with pytest.raises(InputError, match="image declares 60000x60000"):
        decode_image(fx.jpeg_bomb(), "x", out=out)
    with pytest.raises(InputError, match="record 7: Corrupt JPEG data"):
        decode_image(fx.corrupt_jpeg(), "set.rec", 7, out=out)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillows_exif_transpose(fmt, orientation):
    # a phone writes the Orientation tag instead of turning the pixels: decoded as a viewer shows it
    from PIL import ImageOps

    rng = np.random.default_rng(orientation)
    pixels = (rng.random((40, 64, 3)) * 255).astype(np.uint8)
    pixels[:10, :20] = 255  # no symmetry a wrong turn could hide behind
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = _encode(pixels, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(payload))).convert("RGB"))
    decoded = decode_image(payload, "x")
    assert decoded.shape == ((40, 64, 3) if orientation < 5 else (64, 40, 3))
    assert decoded.flags.c_contiguous and decoded.flags.writeable
    np.testing.assert_array_equal(decoded, expected)


def test_a_rotated_jpeg_is_not_decoded_into_the_callers_buffer():
    pixels = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    payload = _encode(pixels, "JPEG", quality=95, exif=exif)
    out = np.zeros((32, 32, 3), np.uint8)
    decoded = decode_image(payload, "x", out=out)
    assert decoded is not out and not out.any()
    np.testing.assert_array_equal(decoded, np.rot90(decode_image(_encode(pixels, "JPEG", quality=95), "x"), 3))


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    # Pillow's convert("RGB") clips 16-bit samples to 255: a white image
    ramp = np.linspace(0, 65535, 30 * 20).reshape(30, 20).astype(np.uint16)
    decoded = decode_image(_encode(ramp, "PNG"), "x")
    assert decoded.shape == (30, 20, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[..., 0], np.round(ramp / 257).astype(np.uint8))
    assert (decoded == decoded[..., :1]).all() and decoded.min() == 0 and decoded.max() == 255


def test_float_samples_are_refused_naming_the_file():
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(buffer, format="TIFF")
    with pytest.raises(InputError, match=r"scan\.tif: F samples .*unsupported bit depth"):
        decode_image(buffer.getvalue(), "scan.tif")
