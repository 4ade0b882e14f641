"""The synthetic benchmark records where it put each occluder (ground truth for explanation maps)."""

from __future__ import annotations

import csv
import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from facetrust.align.warp import warp_affine
from facetrust.data.synthetic import SynthConfig, box_in_input, box_mask, read_occluders, synthesize
from facetrust.data.synthetic.degrade import Degradation, degrade_with_occluder
from facetrust.data.synthetic.images import (
    identity_of,
    keyed_rng,
    loose_box_in_aligned_frame,
    loose_transform,
    render_loose,
    sample_shot,
)
from facetrust.data.synthetic.render import render_face
from facetrust.data.synthetic.identity import sample_nuisance
from facetrust.errors import InputError

SEED = 3
SIZE = 48
ONLY_OCCLUSION = Degradation(blur_sigma=0.0, noise_std=0.0, resolution=SIZE, jpeg_quality=95, occlusion=0.3)
CLEAN = dataclasses.replace(ONLY_OCCLUSION, occlusion=0.0)


def _decode(jpeg: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(jpeg)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def _grown(box, pixels: int = 2):
    """The box grown by ``pixels`` each side: JPEG rings a few pixels past a sharp patch edge."""
    return (box[0] - pixels, box[1] - pixels, box[2] + pixels, box[3] + pixels)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).mean(axis=2) > 25


def test_aligned_occluder_box_covers_exactly_the_painted_pixels():
    for index in range(8):
        identity = identity_of(SEED, index)
        nuisance = sample_nuisance(keyed_rng(SEED, 9, index), identity)
        scale = SIZE / 112.0
        pixels, _ = render_face(identity, nuisance, np.array([[scale, 0, 0], [0, scale, 0]]), (SIZE, SIZE))
        occluded, _, box = degrade_with_occluder(pixels, ONLY_OCCLUSION, (0, 0, SIZE), SIZE, keyed_rng(SEED, 8, index))
        clean, _, none = degrade_with_occluder(pixels, CLEAN, (0, 0, SIZE), SIZE, keyed_rng(SEED, 8, index))
        assert none is None and box is not None
        changed = _changed(_decode(occluded), _decode(clean))
        inside = box_mask(box, (SIZE, SIZE))
        assert changed[inside].mean() > 0.6  # the patch is painted inside the box ...
        assert changed[~box_mask(_grown(box), (SIZE, SIZE))].mean() < 0.005  # ... and nowhere else


def test_loose_crop_box_and_its_aligned_frame_box_land_on_the_occluder():
    config = SynthConfig(image_size=SIZE, loose_crop_size=96)
    for index in range(6):
        identity = identity_of(SEED, index)
        shot = dataclasses.replace(sample_shot(identity, keyed_rng(SEED, 7, index), config), degradation=ONLY_OCCLUSION)
        occluded = render_loose(identity, shot, keyed_rng(SEED, 6, index), config)
        clean = render_loose(identity, dataclasses.replace(shot, degradation=CLEAN), keyed_rng(SEED, 6, index), config)
        loose_changed = _changed(_decode(occluded.jpeg), _decode(clean.jpeg))
        loose_inside = box_mask(occluded.occluder, (96, 96))
        assert loose_changed[loose_inside].mean() > 0.6
        assert loose_changed[~box_mask(_grown(occluded.occluder), (96, 96))].mean() < 0.005

        # warp both crops into the aligned frame with the true placement, as alignment would
        to_canonical = np.linalg.inv(np.vstack([loose_transform(shot), [0, 0, 1]]))[:2]
        matrix = to_canonical * (SIZE / 112.0)
        warped = [warp_affine(_decode(r.jpeg).astype(np.uint8), matrix, (SIZE, SIZE)) for r in (occluded, clean)]
        changed = _changed(*(w.astype(np.float64) for w in warped))
        aligned_box = loose_box_in_aligned_frame(occluded.occluder, shot, SIZE)
        inside = box_mask(aligned_box, (SIZE, SIZE))
        assert changed[~box_mask(_grown(aligned_box, 1), (SIZE, SIZE))].sum() <= 0.02 * changed.sum()
        assert changed[inside].mean() > 0.25  # a rotated patch fills only part of its bounding box


def test_occluders_csv_has_a_box_for_every_occluded_image_and_none_otherwise(tmp_path):
    tiny = SynthConfig(train_identities=3, train_images_per_identity=(2, 3), pair_identities=20,
                       pair_images_per_identity=2, pairs_per_fold=2, ijb_identities=3,
                       ijb_templates_per_identity=(2, 2), ijb_media_per_template=(1, 1),
                       ijb_frames_per_media=(1, 1), ijb_impostor_pairs=4, strong_degradation_fraction=1.0)
    synthesize(tmp_path, tiny, SEED)
    boxes = read_occluders(tmp_path / "occluders.csv")
    with open(tmp_path / "quality.csv", newline="") as handle:
        quality = list(csv.DictReader(handle))
    assert list(boxes) == [row["image"] for row in quality]
    occluded = [float(row["occlusion"]) > 0 for row in quality]
    assert any(occluded)
    assert [boxes[row["image"]] is not None for row in quality] == occluded
    for row in quality:
        box = boxes[row["image"]]
        if box is not None:
            assert 0 <= box[0] < box[2] <= SIZE and 0 <= box[1] < box[3] <= SIZE


def test_box_in_input_follows_the_resize_and_the_centre_crop():
    assert box_in_input((12, 6, 24, 30), (48, 48), (32, 32)) == pytest.approx((8, 4, 16, 20))
    # 112x112 -> 112x96: 8 columns dropped each side, no resampling
    assert box_in_input((8, 0, 20, 10), (112, 112), (112, 96)) == pytest.approx((0, 0, 12, 10))


def test_malformed_occluder_file_names_the_line(tmp_path):
    path = tmp_path / "occluders.csv"
    path.write_text("set,image,x0,y0,x1,y1\ntrain,train/1,1,2,x,4\n")
    with pytest.raises(InputError, match=r"occluders.csv: line 2 \(train/1\)"):
        read_occluders(path)
