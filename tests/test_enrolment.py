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
    record = failures.record()
    assert (record["images"], record["templates"], record["pairs"], record["genuine_pairs"]) == (1, 1, 2, 1)

    assert split_failures(protocol, np.arange(4), ("c.jpg",), "reject", "e") == (protocol, None)


def test_failed_pairs_score_below_every_enrolled_pair_in_protocol_order():
    _, failures = split_failures(_protocol(), np.array([0, 1, -1, 2]), ("c.jpg",), "reject", "e")
    scores = with_failed_pairs(np.array([0.25], np.float32), failures)
    assert scores.tolist() == [-0.75, 0.25, -0.75]
    assert scores.dtype == np.float32


# ---------------------------------------------------------------- end to end


def _failing_set(tmp_path):
    """A random protocol whose embeddings lack every image of one template with genuine pairs and
    one image of a template that keeps others; the aligned manifest lists them."""
    from ijb_protocol_fixture import random_ijb

    root, images, embedding, noflip, arrays = random_ijb(tmp_path / "ijb", "ijbx", n_templates=60, seed=3)
    # noisier than the fixture's, so that genuine and impostor scores overlap and TAR is between 0 and 1
    embedding = embedding + np.random.default_rng(4).normal(scale=2.0, size=embedding.shape).astype(np.float32)
    tids, pairs, labels = arrays["template_ids"], arrays["pairs"], np.asarray(arrays["labels"])
    genuine_templates = np.unique(pairs[labels == 1])
    gone = int(genuine_templates[0])
    counts = {t: int((tids == t).sum()) for t in np.unique(tids)}
    partly = next(t for t in np.unique(tids) if counts[t] >= 2 and t != gone)
    failed = list(images[tids == gone]) + [images[tids == partly][0]]
    keep = ~np.isin(images, failed)
    embeddings = tmp_path / "emb.npz"
    np.savez(embeddings, image=images[keep], embedding=embedding[keep], embedding_noflip=noflip[keep])
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"images": int(keep.sum()), "skipped": len(failed), "skipped_images": failed}))
    return root, embeddings, manifest, images, embedding, arrays, keep, gone


def _independent_tar(images, embedding, arrays, keep, gone, fars):
    """InsightFace's pooling written as loops on the kept images, float64 dot products, failed pairs
    below all others, sklearn's ROC and eval_ijbc.py's nearest-FPR point."""
    from sklearn.metrics import roc_curve

    tids, mids, det = arrays["template_ids"][keep], arrays["media_ids"][keep], arrays["detector"][keep]
    x = embedding[keep].astype(np.float64) * det[:, None]
    pooled = {}
    for t in np.unique(tids):
        total = sum(x[(tids == t) & (mids == m)].mean(axis=0) for m in np.unique(mids[tids == t]))
        pooled[t] = total / np.linalg.norm(total)
    scores = np.array([-np.inf if gone in (a, b) else float(np.sum(pooled[a] * pooled[b]))
                       for a, b in arrays["pairs"]])
    fpr, tpr, _ = roc_curve(arrays["labels"], np.where(np.isinf(scores), scores[np.isfinite(scores)].min() - 1, scores))
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)  # eval_ijbc.py: the first of the nearest = the largest TPR
    return {far: float(tpr[np.argmin(np.abs(fpr - far))]) for far in fars}


def test_failed_templates_count_as_rejected_pairs_like_an_independent_computation(tmp_path):
    from facetrust.evaluate.ijb import run_evaluate_ijb

    root, embeddings, manifest, images, embedding, arrays, keep, gone = _failing_set(tmp_path)
    fars = (1e-2, 1e-1)
    metrics = run_evaluate_ijb(embeddings, root, "ijbx", tmp_path / "m.json", fars=fars,
                               failed_images=manifest)
    expected = _independent_tar(images, embedding, arrays, keep, gone, fars)
    assert 0.1 < expected[1e-2] < expected[1e-1] < 0.99  # a curve, not a separable toy
    assert [metrics["tar_at_far"][k] for k in ("1e-02", "1e-01")] == pytest.approx([expected[f] for f in fars], abs=0)
    failed_pairs = int(((arrays["pairs"] == gone).any(axis=1)).sum())
    assert metrics["n_pairs"] == len(arrays["labels"])  # every pair counted, the failed ones rejected
    block = metrics["failure_to_enrol"]
    assert (block["images"], block["templates"], block["pairs"], block["convention"]) == (
        int((~keep).sum()), 1, failed_pairs, "reject")
    assert block["genuine_pairs"] == int(((arrays["pairs"] == gone).any(axis=1) & (arrays["labels"] == 1)).sum()) > 0

    dropped = run_evaluate_ijb(embeddings, root, "ijbx", tmp_path / "d.json", fars=fars,
                               failed_images=manifest, failed_templates="drop")
    assert dropped["n_pairs"] == len(arrays["labels"]) - failed_pairs
    # leaving the failed genuine pairs out reads a higher TAR than rejecting them
    assert dropped["tar_at_far"]["1e-01"] > metrics["tar_at_far"]["1e-01"]


def test_cli_refuses_missing_images_unless_listed(tmp_path, capsys):
    from facetrust.cli import main

    root, embeddings, manifest, *_ = _failing_set(tmp_path)
    base = ["evaluate", "ijb", "--embeddings", str(embeddings), "--protocol", str(root), "--name", "ijbx",
            "--fars", "0.01,0.1"]
    assert main([*base, "--out", str(tmp_path / "a.json")]) == 2
    assert "emb.npz: key 'image' has no entry for protocol image" in capsys.readouterr().err
    assert not (tmp_path / "a.json").exists()
    assert main([*base, "--out", str(tmp_path / "b.json"), "--failed-images", str(manifest)]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["failure_to_enrol"]["convention"] == "reject"
