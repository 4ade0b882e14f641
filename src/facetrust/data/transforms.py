"""Image -> network input, shared by training and extraction so both see the same pixels.

InsightFace convention: RGB, (x − 127.5) / 128, CHW. A stored image whose size differs from the
model's input is resized; a 112×96 (SphereFace) input taken from a square image is the centre crop
of the square image resized to 112×112 (the 112×96 template is the 112×112 one shifted 8 px).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_input_tensor(images: np.ndarray | torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """uint8 images (N, H, W, 3) -> float32 (N, 3, h, w) network input of ``input_size`` = (h, w)."""
    batch = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    batch = batch.permute(0, 3, 1, 2).float()
    target_height, target_width = input_size
    height, width = batch.shape[-2:]
    if target_width * height != target_height * width:
        if height != width or target_width * 112 != target_height * 96:
            raise ValueError(f"cannot map {height}x{width} images onto a {target_height}x{target_width} input")
        # square -> 112:96 — resize to (target_h, target_h) then cut (target_h − target_w)/2 per side
        if height != target_height:
            batch = F.interpolate(batch, size=(target_height, target_height), mode="bilinear",
                                  align_corners=False, antialias=True)
        margin = (target_height - target_width) // 2
        batch = batch[..., margin : margin + target_width]
    elif (height, width) != (target_height, target_width):
        batch = F.interpolate(batch, size=(target_height, target_width), mode="bilinear",
                              align_corners=False, antialias=True)
    return (batch - 127.5) / 128.0
