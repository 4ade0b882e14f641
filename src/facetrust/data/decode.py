"""Image payloads (JPEG, PNG, …) to RGB pixels, the one decoder of the training and test paths.

JPEGs with one or three components (grey, YCbCr, Adobe RGB) are decoded by torchvision's
``decode_jpeg`` (libjpeg-turbo): straight into a 3×H×W uint8 tensor, with none of PIL's
per-image Python work (plugin probing, marker parsing, ``convert``, array export), about 1.5×
faster on 112×112 faces.  Its pixels are PIL's: both run libjpeg-turbo's default (accurate
integer IDCT, fancy upsampling), which ``tests/test_decode.py`` checks on the synthetic faces and
on natural images.  Everything else (PNG, CMYK JPEGs, what libjpeg refuses) goes through PIL's
``convert("RGB")``, as before.  torchvision 0.29 deprecates its image decoders in favour of
TorchCodec; where ``torchvision.io.decode_jpeg`` is gone, every image goes through PIL (same
pixels, slower).
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from facetrust.errors import InputError

_JPEG_MAGIC = b"\xff\xd8\xff"
_decode_jpeg = None  # torchvision.io.decode_jpeg once looked up; False when unavailable


def _jpeg_decoder():
    global _decode_jpeg
    if _decode_jpeg is None:
        try:
            from torchvision.io import decode_jpeg

            # Deprecated since torchvision 0.29 (TorchCodec supersedes it); the pinned release has it.
            warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                                    category=DeprecationWarning)
            _decode_jpeg = decode_jpeg
        except ImportError:
            _decode_jpeg = False
    return _decode_jpeg


def _pil_rgb(payload: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(payload)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises several types for a broken image
        raise InputError(f"{where}: cannot decode image: {exc}") from None


def decode_rgb_tensor(payload: bytes, where: str = "image"):
    """RGB pixels of an encoded image as a 3×H×W uint8 ``torch.Tensor``.

    Raises :class:`InputError` naming ``where`` when the payload is not a decodable image.
    """
    import torch

    decode_jpeg = _jpeg_decoder() if payload[:3] == _JPEG_MAGIC else False
    if decode_jpeg:
        try:
            image = decode_jpeg(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
        except RuntimeError:
            image = None  # e.g. CMYK or a damaged stream: PIL decides (and names the error)
        if image is not None and image.shape[0] == 3:
            return image
        if image is not None and image.shape[0] == 1:
            return image.expand(3, -1, -1).contiguous()
    return torch.from_numpy(np.ascontiguousarray(_pil_rgb(payload, where).transpose(2, 0, 1)))


def decode_rgb(payload: bytes, where: str = "image") -> np.ndarray:
    """RGB pixels of an encoded image as an H×W×3 uint8 array (C-contiguous)."""
    return np.ascontiguousarray(decode_rgb_tensor(payload, where).permute(1, 2, 0).numpy())
