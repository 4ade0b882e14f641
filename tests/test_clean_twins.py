"""Clean twins (issue 17 item 3): every occluded image has a twin from the same random draws with
no occluder, identical to it outside the occluder's box."""

from __future__ import annotations

import csv

import numpy as np

from facetrust.data.binset import load_bin
from facetrust.data.synthetic import SynthConfig, synthesize
from facetrust.data.synthetic.degrade import Degradation, degrade_pixels
from facetrust.data.synthetic.images import identity_of, keyed_rng, render_aligned
from facetrust.data.synthetic.occluders import box_mask, clean_twin, read_clean_twins, read_occluders
from facetrust.data.pairset import PairSet


def test_unpainted_occluder_keeps_every_draw_so_only_the_box_differs_before_encoding():
    face = np.random.default_rng(0).integers(0, 256, (48, 48, 3)).astype(np.uint8)
    degradation = Degradation(blur_sigma=0.0, noise_std=20.0, resolution=48, jpeg_quality=90, occlusion=0.2)
    occluded, _, box = degrade_pixels(face, degradation, (0.0, 0.0, 48.0), 48, np.random.default_rng(5))
    clean, _, same_box = degrade_pixels(face, degradation, (0.0, 0.0, 48.0), 48, np.random.default_rng(5),
                                        paint_occluder=False)
    assert box == same_box and box is not None
    inside = box_mask(box, (48, 48))
    np.testing.assert_array_equal(occluded[~inside], clean[~inside])  # same noise draws outside the box
    assert (occluded[inside] != clean[inside]).any()


def test_rendered_twin_has_the_same_box_and_draws_and_the_written_image_is_unchanged():
    config = SynthConfig(image_size=32)
    identity = identity_of(1, 3)
    for index in range(200):
        painted = render_aligned(identity, keyed_rng(1, 2, 3, index), config)
        if painted.occluder is not None:
            break
    twin = render_aligned(identity, keyed_rng(1, 2, 3, index), config, paint_occluder=False)
    again = render_aligned(identity, keyed_rng(1, 2, 3, index), config)
    assert twin.occluder == painted.occluder and twin.degradation == painted.degradation
    assert again.jpeg == painted.jpeg != twin.jpeg


def test_twins_file_covers_exactly_the_occluded_pair_images_and_differs_only_in_the_box(tmp_path):
    config = SynthConfig(image_size=32, loose_crop_size=48, train_identities=3, train_images_per_identity=(2, 2),
                         pair_identities=20, pair_images_per_identity=4, pairs_per_fold=8, ijb_identities=2,
                         ijb_templates_per_identity=(2, 2), ijb_media_per_template=(1, 1),
                         ijb_frames_per_media=(1, 1), ijb_impostor_pairs=2, strong_degradation_fraction=0.9)
    synthesize(tmp_path, config, 4)
    boxes = read_occluders(tmp_path / "occluders.csv")
    for name in ("synth_lfw", "synth_val"):
        pairs = PairSet(tmp_path / "pairs" / f"{name}.bin")
        twins = read_clean_twins(tmp_path / "pairs" / f"{name}.twins.npz")
        occluded = [i for i in range(2 * len(pairs)) if boxes[pairs.key(i)] is not None]
        assert sorted(twins) == occluded and occluded
        differs_inside = 0
        for image in occluded:
            pixels = pairs.pixels(image)
            twin = clean_twin(pixels, twins[image], boxes[pairs.key(image)])
            inside = box_mask(boxes[pairs.key(image)], pixels.shape[:2])
            np.testing.assert_array_equal(twin[~inside], pixels[~inside])
            differs_inside += bool((twin[inside] != pixels[inside]).any())
        assert differs_inside == len(occluded)
