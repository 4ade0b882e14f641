"""`embed` holds one decoded image at a time, bounds the pixels a set declares, and an out-of-memory
while decoding fails the run instead of passing for a bad image."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import simplejpeg
import torch

import bad_input_fixtures as fx
from facetrust.cli import main
from facetrust.data.images import declared_pixels, decode_image
from facetrust.embed import _TestSet
from facetrust.errors import InputError


def _big_jpeg(side: int) -> bytes:
    rng = np.random.default_rng(0)
    pixels = np.repeat(np.repeat(rng.integers(0, 255, (side // 50, side // 50, 3), dtype=np.uint8), 50, 0), 50, 1)
    return simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=50)


def test_a_batch_of_references_to_one_large_image_holds_one_decoded_image_at_a_time(tmp_path):
    """16 names of one 2000x2000 JPEG (the memo trick): decoding the batch before preparing it
    peaked at 16 decoded images (192 MB here; 5 GB for 7000x7000); now at about one."""
    side = 2000
    fx.bin_with_images(tmp_path / "big.bin", [_big_jpeg(side)] * 16)
    data = _TestSet(tmp_path / "big.bin")
    assert data.check_pixel_budget(10**9) == 16 * side * side
    one_image = side * side * 3
    tracemalloc.start()
    try:
        batches = list(data.batches(16, lambda image: torch.from_numpy(image[:8, :8].copy())))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(batches) == 1 and batches[0].shape == (16, 8, 8, 3)
    assert one_image <= peak < 2.5 * one_image, peak / one_image
    with pytest.raises(InputError, match=r"big.bin: its images declare more than 10000000 pixels in all by image 2"):
        data.check_pixel_budget(10_000_000)


def test_declared_pixels_read_only_headers():
    assert declared_pixels(fx.jpeg(0, 48)) == 48 * 48
    assert declared_pixels(fx.jpeg_bomb()) == 60000 * 60000
    assert declared_pixels(b"not an image") == 0


def test_out_of_memory_while_decoding_is_a_failed_run_not_a_skipped_image(tmp_path, monkeypatch, capsys):
    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(simplejpeg, "decode_jpeg", exhausted)
    with pytest.raises(MemoryError, match="out of memory while decoding"):
        decode_image(fx.jpeg(0), "x.rec", 3)
    root = fx.good_training_set(tmp_path / "set")
    code = main(["data", "verify", str(root), "--on-bad-image", "skip"])
    out, err = capsys.readouterr()
    assert code == 1 and '"skipped"' not in out  # under skip the images would otherwise vanish
