"""Failure to enrol in IJB evaluation: images that align skipped, templates left empty, their pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facetrust.data.ijb import IJBProtocol
from facetrust.errors import ConfigError, InputError
from facetrust.evaluate.enrolment import read_failed_images, split_failures, with_failed_pairs


def _protocol() -> IJBProtocol:
    # templates 1 (a.jpg, b.jpg), 2 (c.jpg), 3 (d.jpg); pairs 1-2 genuine, 1-3 impostor, 2-3 impostor
    images = np.array(["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    return IJBProtocol(name="t", images=images, template_ids=np.array([1, 1, 2, 3]), media_ids=np.array([10, 11, 20, 30]),
                       landmarks=np.zeros((4, 5, 2), np.float32), detector_scores=np.ones(4, np.float32),
                       pairs=np.array([[1, 2], [1, 3], [2, 3]]), labels=np.array([1, 0, 0], np.int8),
                       landmark_lines=np.arange(1, 5))


def test_failed_images_come_from_the_aligned_manifest_or_a_list(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"images": 3, "skipped": 1, "skipped_images": ["c.jpg"]}))
    assert read_failed_images(manifest) == ("c.jpg",)
    manifest.write_text(json.dumps({"images": 4}))  # align with on_bad_image: fail lists none
    assert read_failed_images(manifest) == ()
    listing = tmp_path / "failed.txt"
    listing.write_text("c.jpg\n\n d.jpg \n")
    assert read_failed_images(listing) == ("c.jpg", "d.jpg")
    manifest.write_text(json.dumps({"skipped_images": "c.jpg"}))
    with pytest.raises(InputError, match="manifest.json: key 'skipped_images'"):
        read_failed_images(manifest)
    with pytest.raises(InputError, match="missing"):
        read_failed_images(tmp_path / "none.json")


def test_an_image_missing_without_being_listed_is_still_an_error():
    rows = np.array([0, 1, -1, 2])  # c.jpg has no embedding
    with pytest.raises(InputError, match=r"emb.npz: key 'image' has no entry for protocol image 'c.jpg'.*--failed-images"):
        split_failures(_protocol(), rows, (), "reject", "emb.npz")
    with pytest.raises(InputError, match="'c.jpg'"):
        split_failures(_protocol(), rows, ("b.jpg",), "reject", "emb.npz")
    with pytest.raises(ConfigError, match="failed_templates"):
        split_failures(_protocol(), rows, ("c.jpg",), "ignore", "emb.npz")


def test_a_template_keeps_its_other_images_and_an_empty_one_fails_with_its_pairs():
    protocol = _protocol()
    enrolled, failures = split_failures(protocol, np.array([0, -1, 1, 2]), ("b.jpg",), "reject", "e")
    assert enrolled.images.tolist() == ["a.jpg", "c.jpg", "d.jpg"] and failures.templates.size == 0
    assert enrolled.pairs.tolist() == protocol.pairs.tolist() and not failures.pairs.any()

    enrolled, failures = split_failures(protocol, np.array([0, 1, -1, 2]), ("c.jpg",), "reject", "e")
    assert failures.templates.tolist() == [2] and failures.pairs.tolist() == [True, False, True]
    assert enrolled.pairs.tolist() == [[1, 3]] and enrolled.labels.tolist() == [0]
    assert enrolled.skipped == ("c.jpg",)
    record = failures.record(protocol.labels)
    assert (record["images"], record["templates"], record["pairs"], record["genuine_pairs"]) == (1, 1, 2, 1)

    assert split_failures(protocol, np.arange(4), ("c.jpg",), "reject", "e") == (protocol, None)


def test_failed_pairs_score_below_every_enrolled_pair_in_protocol_order():
    _, failures = split_failures(_protocol(), np.array([0, 1, -1, 2]), ("c.jpg",), "reject", "e")
    scores = with_failed_pairs(np.array([0.25], np.float32), failures)
    assert scores.tolist() == [-0.75, 0.25, -0.75]
    assert scores.dtype == np.float32
