"""Decoding untrusted encoded images: bounded in pixels, strict about corrupt data.

Every stage that turns image bytes into pixels (``data verify``, training, ``align``, ``embed``)
calls :func:`decode_image`, so one place decides what a bad image is:

* a **decompression bomb** (a few kilobytes that declare gigapixels) is refused from its header,
  before any pixel is allocated: at most :data:`MAX_IMAGE_PIXELS` pixels.  PIL's own
  ``Image.MAX_IMAGE_PIXELS`` only warns (and errors at twice the limit), so it is not relied on;
* a **JPEG with corrupt scan data** is refused.  libjpeg treats a broken entropy-coded segment as
  a recoverable warning ("Corrupt JPEG data: premature end of data segment") and returns a
  partly grey image; Pillow discards those warnings.  JPEGs are therefore decoded by libjpeg-turbo
  through ``simplejpeg`` with ``strict=True``, which raises on them; its default settings (accurate
  integer IDCT, fancy upsampling) give the same pixels as Pillow's decoder;
* anything else the decoder cannot read (truncated, not an image) is refused.

Pixels come out as a viewer shows them: an EXIF ``Orientation`` tag (what a phone writes instead of
rotating the pixels) is applied, as Pillow's ``ImageOps.exif_transpose`` and OpenCV's ``imdecode``
(MXNet's decoder) do; a 16-bit grayscale image is scaled to 8 bits (Pillow's ``convert("RGB")``
clips it to white), and an image of 32-bit integer or float samples is refused, its range unknown.

Each refusal is an :class:`~facetrust.errors.InputError` naming the file and the record.  Running
out of memory while decoding is not: it is a :class:`MemoryError` (a failed run, exit 1).  What a
stage does with it is the ``on_bad_image`` policy (:class:`BadImagePolicy`): ``fail`` (default)
stops at the first one, ``skip`` leaves the image out, counts it and logs it.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

from facetrust.errors import ConfigError, InputError

# 50 megapixels (150 MB as 8-bit RGB): above any face photograph or video frame in the IJB, LFW or
# MS1M releases (IJB-C stills are at most a few tens of megapixels), far below what exhausts memory.
MAX_IMAGE_PIXELS = 50_000_000
# An encoded image file larger than this is refused before it is read (4 bytes per allowed pixel:
# more than any real codec needs, even uncompressed).
MAX_IMAGE_FILE_BYTES = 4 * MAX_IMAGE_PIXELS

_JPEG_SOI = b"\xff\xd8\xff"
_EXIF_HEADER = b"Exif\x00\x00"
# A JPEG's EXIF block is an APP1 segment among the application segments (APP0-APP15, comments)
# that follow the SOI marker and precede the tables and the image data; walking those few segment
# headers finds it in under a microsecond (a byte search of a 15 KB crop took 6 µs, 5 % of decoding).
_MAX_LEADING_SEGMENTS = 16
_ORIENTATION_TAG = 0x0112
# JPEG colour spaces libjpeg-turbo cannot turn into RGB itself; Pillow converts those.
_PIL_JPEG_COLORSPACES = ("CMYK", "YCCK")

ON_BAD_IMAGE = ("fail", "skip")

log = logging.getLogger("facetrust.data")


def _where(source: str | os.PathLike, record: str | int | None) -> str:
    if record is None:
        return str(source)
    return f"{source} {'record ' + str(record) if isinstance(record, int) else record}"


def _check_pixels(height: int, width: int, where: str, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise InputError(f"{where}: image declares size {width}x{height}")
    if height * width > max_pixels:
        raise InputError(
            f"{where}: image declares {width}x{height} = {height * width} pixels, more than the "
            f"{max_pixels} allowed (a decompression bomb?)"
        )


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` (H, W, 3) as EXIF ``orientation`` (1-8) says a viewer shows them (the
    transposition Pillow's ``ImageOps.exif_transpose`` makes; tests/test_images.py)."""
    if orientation in (2, 4, 5, 7):  # the mirrored ones: 5 and 7 mirror a rotation
        pixels = pixels[:, ::-1]
    turns = {3: 2, 4: 2, 5: 1, 6: 3, 7: 3, 8: 1}.get(orientation, 0)  # quarter turns counter-clockwise
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns or orientation == 2 else pixels


def _exif_orientation(image: Image.Image) -> int:
    try:
        value = int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block does not make the pixels unreadable: shown as stored
        return 1
    return value if 1 <= value <= 8 else 1


def _has_exif_segment(payload: bytes) -> bool:
    """Whether one of the JPEG's leading application segments is an EXIF block (APP1 ``Exif``)."""
    position = 2  # after SOI
    for _ in range(_MAX_LEADING_SEGMENTS):
        if payload[position:position + 1] != b"\xff":
            return False
        marker = payload[position + 1] if position + 1 < len(payload) else 0
        if marker == 0xFF:  # a fill byte before the marker
            position += 1
            continue
        if marker == 0xE1 and payload[position + 4:position + 10] == _EXIF_HEADER:
            return True
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE):  # the tables or the image data: no EXIF after
            return False
        position += 2 + int.from_bytes(payload[position + 2:position + 4], "big")
    return False


def _jpeg_orientation(payload: bytes) -> int:
    """The EXIF orientation of a JPEG (1 when it has none): Pillow reads the header only, and only
    for a file that carries an EXIF segment (:func:`_has_exif_segment`: a data set's JPEGs rarely
    do)."""
    if not _has_exif_segment(payload):
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(payload)) as image:
                return _exif_orientation(image)
    except MemoryError:
        raise
    except Exception:  # the decoder names what is wrong with the file
        return 1


def _decode_jpeg(payload: bytes, where: str, max_pixels: int, out: np.ndarray | None) -> np.ndarray:
    try:
        height, width, colorspace, _subsampling = simplejpeg.decode_jpeg_header(payload)
    except ValueError:
        # libjpeg-turbo's header reader refuses some valid files (e.g. CMYK JPEGs without a
        # subsampling it knows); Pillow reads those, checking the size from the header first.
        return _decode_pil(payload, where, max_pixels)
    _check_pixels(height, width, where, max_pixels)
    try:
        if colorspace in _PIL_JPEG_COLORSPACES:
            simplejpeg.decode_jpeg(payload, colorspace="CMYK", strict=True)  # only to check the data
            return _decode_pil(payload, where, max_pixels)
        orientation = _jpeg_orientation(payload)
        if orientation == 1 and out is not None and out.shape == (height, width, 3):
            # Straight into the caller's memory (a slot of a batch): no allocation, no copy.
            simplejpeg.decode_jpeg(payload, colorspace="RGB", strict=True, buffer=out)
            return out
        return _orient(simplejpeg.decode_jpeg(payload, colorspace="RGB", strict=True), orientation)
    except ValueError as exc:  # libjpeg's own words start "Corrupt JPEG data: ..." for most
        text = str(exc)
        raise InputError(f"{where}: {text if text.startswith('Corrupt JPEG') else 'corrupt JPEG data: ' + text}") from None


def _out_of_memory(where: str) -> MemoryError:
    """Out of memory while decoding is a failure of the run (exit 1), never a bad image: under
    ``on_bad_image: skip`` it would otherwise drop good images silently."""
    return MemoryError(f"{where}: out of memory while decoding the image (the machine, not the image: "
                       "free memory or lower the batch size)")


def declared_pixels(payload: bytes) -> int:
    """Pixels an encoded image declares in its header (0 when the header cannot be read: decoding
    will then name the problem).  Reads no pixel data: a budget over a whole set costs microseconds
    an image."""
    payload = bytes(payload)
    try:
        if payload[:3] == _JPEG_SOI:
            height, width, _, _ = simplejpeg.decode_jpeg_header(payload)
            return max(int(height), 0) * max(int(width), 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(payload)) as image:
                return int(image.width) * int(image.height)
    except MemoryError:
        raise
    except Exception:  # an unreadable header: decode_image reports it with the record's name
        return 0


def _rgb(image: Image.Image, where: str) -> np.ndarray:
    """A Pillow image's pixels as uint8 RGB (H, W, 3), a writable array of its own."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (PNG opens as "I;16" or "I"): scaled to 8 bits, rounded (x * 255 / 65535)
        samples = np.asarray(image).astype(np.int64)
        if image.mode == "I" and samples.size and (samples.min() < 0 or samples.max() > 65535):
            raise InputError(f"{where}: 32-bit integer samples ({int(samples.min())}..{int(samples.max())}): "
                             "an unsupported bit depth (8- or 16-bit images only)")
        gray = ((samples * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F" or image.mode.startswith("I;32") or image.mode.startswith("F;"):
        raise InputError(f"{where}: {image.mode} samples (floating point or 32-bit): an unsupported bit depth "
                         "(8- or 16-bit images only)")
    # np.array, not asarray: Pillow's buffer is read-only, and torch.from_numpy of a read-only array
    # warns (and would let a tensor write into it)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _decode_pil(payload: bytes, where: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # PIL warns (not raises) between MAX_IMAGE_PIXELS and twice that: make it an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(payload)) as image:
                _check_pixels(image.height, image.width, where, max_pixels)
                return _orient(_rgb(image, where), _exif_orientation(image))
    except InputError:
        raise
    except MemoryError:
        raise _out_of_memory(where) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{where}: {exc} (at most {max_pixels} pixels allowed)") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{where}: cannot decode image: not an image in a format Pillow reads") from None
    except Exception as exc:  # PIL raises many types for a broken file (OSError, SyntaxError, ...)
        raise InputError(f"{where}: cannot decode image: {exc}") from None


def decode_image(payload: bytes, source: str | os.PathLike, record: str | int | None = None, *,
                 max_pixels: int = MAX_IMAGE_PIXELS, out: np.ndarray | None = None) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, any format Pillow reads) to RGB ``uint8`` H x W x 3.

    ``source`` and ``record`` name the image in errors (``"train.rec", "key 12"``; an int record
    reads ``record 12``).  Raises :class:`InputError` for more than ``max_pixels`` pixels (checked
    from the header, before decoding), for JPEG scan data that libjpeg reports as corrupt, and for
    anything the decoders cannot read.

    ``out`` (a C-contiguous, writable uint8 H x W x 3 array): an RGB-decodable JPEG of exactly that
    size, without an EXIF rotation, is decoded into it and ``out`` itself is returned; any other image comes back in a new
    array (for the caller to crop or resize) and ``out`` is left as it was.  After an error ``out``
    may hold part of an image.
    """
    where = _where(source, record)
    payload = bytes(payload)
    try:
        if payload[:3] == _JPEG_SOI:
            return _decode_jpeg(payload, where, max_pixels, out)
        return _decode_pil(payload, where, max_pixels)
    except MemoryError as exc:
        raise exc if str(exc).startswith(where) else _out_of_memory(where) from None


def read_image_file(path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read and :func:`decode_image` an image file; InputError names the file when it is missing,
    unreadable, not a regular file (a device, FIFO, socket), larger than :data:`MAX_IMAGE_FILE_BYTES`
    or a bad image."""
    from facetrust.input_files import read_regular

    path = Path(path)
    # a regular file only: /dev/zero would be read without end, a FIFO would block
    payload = read_regular(path, "image", max_bytes=MAX_IMAGE_FILE_BYTES)
    return decode_image(payload, path, max_pixels=max_pixels)


class BadImagePolicy:
    """The ``on_bad_image`` policy of one stage: ``fail`` re-raises, ``skip`` counts and logs.

    ``policy.handle(error)`` raises ``error`` under ``fail``; under ``skip`` it logs a warning
    naming the input and returns, and :attr:`skipped` counts it.  :meth:`summary` is what a
    manifest records: ``{"on_bad_image", "skipped", "skipped_examples"}`` (the first few messages).
    """

    EXAMPLES = 20

    def __init__(self, policy: str = "fail", stage: str = "facetrust", key: str = "on_bad_image"):
        if policy not in ON_BAD_IMAGE:
            raise ConfigError(f"{key}: {policy!r} is not one of {', '.join(ON_BAD_IMAGE)}")
        self.policy = policy
        self.stage = stage
        self.skipped = 0
        self.examples: list[str] = []

    @property
    def skips(self) -> bool:
        return self.policy == "skip"

    def handle(self, error: InputError) -> None:
        """Raise ``error`` (``fail``) or count and log it as a skipped input (``skip``)."""
        if self.policy == "fail":
            raise error
        self.skipped += 1
        if len(self.examples) < self.EXAMPLES:
            self.examples.append(str(error))
        log.warning("%s: skipping bad input (on_bad_image: skip): %s", self.stage, error)

    def summary(self) -> dict:
        return {"on_bad_image": self.policy, "skipped": self.skipped, "skipped_examples": list(self.examples)}

    def log_total(self) -> None:
        """Log the number of skipped inputs once at the end of a stage (nothing when none)."""
        if self.skipped:
            log.warning("%s: %d bad inputs skipped (on_bad_image: skip)", self.stage, self.skipped)
