"""IJB protocol reader, InsightFace template pooling (N/D/F flags), pair scores, metrics file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facetrust.data.ijb import read_ijb_protocol
from facetrust.errors import InputError
from facetrust.evaluate.embeddings_file import load_embeddings
from facetrust.evaluate.ijb import evaluate_ijb, pair_scores, run_evaluate_ijb, template_features
from facetrust.evaluate.roc import roc_points, tar_at_far
from ijb_protocol_fixture import random_ijb, write_ijb_dir


def brute_force_templates(x, tids, mids, det, normalize, use_det):
    """InsightFace eval_ijbc pooling written as loops over templates and media."""
    x = x.astype(np.float64)
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if use_det:
        x = x * det[:, None]
    out = {}
    for t in np.unique(tids):
        total = np.zeros(x.shape[1])
        for m in np.unique(mids[tids == t]):
            total += x[(tids == t) & (mids == m)].mean(axis=0)
        out[t] = total / np.linalg.norm(total)
    return out


def save_embeddings(path, images, embedding, noflip=None, **extra):
    arrays = dict(image=np.asarray(images), embedding=embedding, **extra)
    if noflip is not None:
        arrays["embedding_noflip"] = noflip
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------- protocol reader


def test_protocol_reader_parses_the_release_layout(tmp_path):
    write_ijb_dir(tmp_path, "ijbc", ["1.jpg", "2.jpg", "3.jpg"], [7, 7, 9], [70, 71, 90], [0.9, 0.8, 0.5],
                  [(7, 9), (9, 7)], [0, 1], landmarks=np.arange(30, dtype=float).reshape(3, 10))
    p = read_ijb_protocol(tmp_path, "ijbc")
    assert p.images.tolist() == ["1.jpg", "2.jpg", "3.jpg"]
    assert p.template_ids.tolist() == [7, 7, 9] and p.media_ids.tolist() == [70, 71, 90]
    assert p.landmarks.shape == (3, 5, 2) and p.landmarks[1, 0].tolist() == [10.0, 11.0]
    np.testing.assert_allclose(p.detector_scores, [0.9, 0.8, 0.5], rtol=1e-6)
    assert p.pairs.tolist() == [[7, 9], [9, 7]] and p.labels.tolist() == [0, 1]
    assert p.n_templates == 2
    assert read_ijb_protocol(tmp_path).name == "ijbc"  # name inferred from meta/


def test_protocol_reader_joins_a_reordered_landmark_file_by_image_name(tmp_path):
    write_ijb_dir(tmp_path, "ijbb", ["a.jpg", "b.jpg"], [1, 2], [1, 2], [0.25, 0.75], [(1, 2)], [0])
    path = tmp_path / "meta" / "ijbb_name_5pts_score.txt"
    path.write_text("".join(reversed(path.read_text().splitlines(keepends=True))))
    p = read_ijb_protocol(tmp_path, "ijbb")
    np.testing.assert_allclose(p.detector_scores, [0.25, 0.75])


@pytest.mark.parametrize(
    "file_key, mutate, message",
    [
        ("face_tid_mid", lambda s: s.replace("2.jpg 5 51", "2.jpg 5 51 4"), r"face_tid_mid.txt: line 2"),
        ("face_tid_mid", lambda s: s.replace("2.jpg 5 51", "2.jpg 5"), r"face_tid_mid.txt: line 2: expected 3 fields"),
        ("face_tid_mid", lambda s: s.replace("2.jpg 5 51", "2.jpg five 51"), r"line 2, column 2: 'five'"),
        ("name_5pts_score", lambda s: s.replace("2.jpg", "9.jpg"), r"face_tid_mid.txt: line 2: image '2.jpg' is not in"),
        ("template_pair_label", lambda s: s + "5 99 1\n", r"template_pair_label.txt: line 3: template 99 has no image"),
        ("template_pair_label", lambda s: s.replace("6 5 1", "6 5 2"), r"line 2: label 2 is not 0 or 1"),
        ("template_pair_label", lambda s: s + "5 6 1\n", r"line 3: pair \(5, 6\) repeats line 1"),
    ],
)
def test_protocol_reader_names_file_and_line_of_bad_input(tmp_path, file_key, mutate, message):
    write_ijb_dir(tmp_path, "ijbc", ["1.jpg", "2.jpg", "3.jpg"], [5, 5, 6], [50, 51, 60], [1, 1, 1],
                  [(5, 6), (6, 5)], [0, 1])
    path = tmp_path / "meta" / f"ijbc_{file_key}.txt"
    path.write_text(mutate(path.read_text()))
    with pytest.raises(InputError, match=message):
        read_ijb_protocol(tmp_path, "ijbc")


def test_protocol_reader_reports_a_missing_file(tmp_path):
    write_ijb_dir(tmp_path, "ijbc", ["1.jpg"], [5], [50], [1], [(5, 5)], [1])
    (tmp_path / "meta" / "ijbc_template_pair_label.txt").unlink()
    with pytest.raises(InputError, match="template_pair_label.txt: protocol file not found"):
        read_ijb_protocol(tmp_path, "ijbc")


# ---------------------------------------------------------------- template pooling


def test_template_pooling_matches_hand_computation():
    # Template 1: media 10 = {(1,0), (3,0)}, media 11 = {(0,1)}; template 2: one image (0,-2).
    x = np.array([[1, 0], [3, 0], [0, 1], [0, -2]], dtype=np.float32)
    tids = np.array([1, 1, 1, 2])
    mids = np.array([10, 10, 11, 20])
    det = np.array([1.0, 0.5, 2.0, 1.0])
    ids, feats = template_features(x, tids, mids, det, normalize_images=False, use_detector_score=False)
    assert ids.tolist() == [1, 2]
    np.testing.assert_allclose(feats[0], np.array([2, 1]) / np.sqrt(5), rtol=1e-6)  # mean (2,0) + (0,1)
    np.testing.assert_allclose(feats[1], [0, -1], rtol=1e-6)
    # D1: media 10 = mean((1,0)·1, (3,0)·0.5) = (1.25, 0); media 11 = (0, 2) -> (1.25, 2).
    _, feats = template_features(x, tids, mids, det, normalize_images=False, use_detector_score=True)
    np.testing.assert_allclose(feats[0], np.array([1.25, 2]) / np.hypot(1.25, 2), rtol=1e-6)
    # N0: unit images first: media 10 = (1, 0), media 11 = (0, 1) -> (1, 1)/sqrt(2).
    _, feats = template_features(x, tids, mids, det, normalize_images=True, use_detector_score=False)
    np.testing.assert_allclose(feats[0], np.array([1, 1]) / np.sqrt(2), rtol=1e-6)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("use_det", [False, True])
def test_template_pooling_matches_brute_force_on_random_data(tmp_path, normalize, use_det):
    _, _, emb, _, a = random_ijb(tmp_path, seed=4)
    ids, feats = template_features(emb, a["template_ids"], a["media_ids"], a["detector"],
                                   normalize_images=normalize, use_detector_score=use_det)
    ref = brute_force_templates(emb, a["template_ids"], a["media_ids"], a["detector"], normalize, use_det)
    np.testing.assert_allclose(feats, np.stack([ref[t] for t in ids]), rtol=1e-5, atol=1e-6)


def test_pair_scores_are_chunked_dot_products():
    rng = np.random.default_rng(0)
    ids = np.array([30, 10, 20])
    feats = rng.standard_normal((3, 8)).astype(np.float32)
    pairs = rng.choice(ids, size=(25, 2))
    want = np.array([feats[list(ids).index(a)] @ feats[list(ids).index(b)] for a, b in pairs])
    for method in ("gram", "gather", "auto"):
        np.testing.assert_allclose(pair_scores(ids, feats, pairs, chunk=4, method=method), want, rtol=1e-5)
    with pytest.raises(InputError, match="template 99"):
        pair_scores(ids, feats, np.array([[10, 99]]))


def test_uncertainty_pooling_pfe_and_kappa_weights():
    x = np.array([[1, 0], [0, 2], [5, 5]], dtype=np.float32)
    tids = np.array([1, 1, 2])
    mids = np.array([1, 2, 3])
    # PFE scalar σ²: precision 1/σ² weights unit features: 1/0.5·(1,0) + 1/2·(0,1) = (2, 0.5).
    _, f = template_features(x, tids, mids, pooling="pfe", uncertainty=np.array([0.5, 2.0, 1.0]))
    np.testing.assert_allclose(f[0], np.array([2, 0.5]) / np.hypot(2, 0.5), rtol=1e-6)
    # PFE per dimension: μ_d = Σ μ_id/σ²_id / Σ 1/σ²_id.
    sig = np.array([[1.0, 4.0], [3.0, 1.0], [1.0, 1.0]])
    mu = np.array([1 / 1 / (1 / 1 + 1 / 3), 1 / 1 / (1 / 4 + 1 / 1)])
    _, f = template_features(x, tids, mids, pooling="pfe", uncertainty=sig)
    np.testing.assert_allclose(f[0], mu / np.linalg.norm(mu), rtol=1e-6)
    # kappa = 1/uncertainty: 4·(1,0) + 1·(0,1).
    _, f = template_features(x, tids, mids, pooling="kappa", uncertainty=np.array([0.25, 1.0, 1.0]))
    np.testing.assert_allclose(f[0], np.array([4, 1]) / np.sqrt(17), rtol=1e-6)
    with pytest.raises(InputError, match="uncertainty"):
        template_features(x, tids, mids, pooling="kappa")


# ---------------------------------------------------------------- file level


def test_run_evaluate_ijb_writes_insightface_metrics(tmp_path):
    root, images, emb, noflip, a = random_ijb(tmp_path / "ijb", seed=1)
    path = save_embeddings(tmp_path / "e.npz", images, emb, noflip)
    metrics = run_evaluate_ijb(path, root, "ijbx", tmp_path / "m.json", roc_out=tmp_path / "roc.csv")
    assert json.loads((tmp_path / "m.json").read_text()) == metrics
    assert metrics["settings"]["flags"] == "N1D1F1" and metrics["settings"]["tar_method"] == "nearest"
    assert list(metrics["tar_at_far"]) == ["1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"]
    assert metrics["n_pairs"] == len(a["labels"]) and metrics["n_templates"] == 40
    assert 0.5 < metrics["auc"] <= 1.0
    # Independent recomputation of the scores from the brute-force pooling.
    protocol = read_ijb_protocol(root, "ijbx")
    ref = brute_force_templates(emb, a["template_ids"], a["media_ids"], protocol.detector_scores, False, True)
    scores = np.array([ref[t1] @ ref[t2] for t1, t2 in a["pairs"]])
    fpr, tpr, _ = roc_points(a["labels"], scores)
    for key, value in tar_at_far(fpr, tpr).items():
        assert metrics["tar_at_far"][key] == pytest.approx(value, abs=1e-9)
    assert (tmp_path / "roc.csv").read_text().startswith("fpr,tpr,threshold")


def test_flags_change_the_scores_and_f0_reads_the_unflipped_features(tmp_path):
    root, images, emb, noflip, _ = random_ijb(tmp_path / "ijb", seed=2)
    protocol = read_ijb_protocol(root)
    path = save_embeddings(tmp_path / "e.npz", images, emb, noflip)
    runs = {}
    for flip in (True, False):
        for normalize in (False, True):
            for det in (False, True):
                r = evaluate_ijb(load_embeddings(path, flip=flip), protocol, normalize_images=normalize,
                                 use_detector_score=det)
                runs[r.metrics["settings"]["flags"]] = r.scores
    assert sorted(runs) == sorted(f"N{n}D{d}F{f}" for n in (0, 1) for d in (0, 1) for f in (0, 1))
    flat = list(runs.values())
    assert all(not np.allclose(flat[i], flat[j]) for i in range(8) for j in range(i + 1, 8))
    # F0 == F1 on a file whose unflipped features equal the flip-fused ones.
    same = save_embeddings(tmp_path / "same.npz", images, emb, emb)
    f1 = evaluate_ijb(load_embeddings(same, flip=True), protocol).scores
    f0 = evaluate_ijb(load_embeddings(same, flip=False), protocol).scores
    np.testing.assert_array_equal(f0, f1)


def test_evaluate_ijb_refuses_embeddings_that_do_not_cover_the_protocol(tmp_path):
    root, images, emb, _, _ = random_ijb(tmp_path / "ijb", seed=3)
    path = save_embeddings(tmp_path / "e.npz", images[1:], emb[1:])
    with pytest.raises(InputError, match=r"e.npz: key 'image' has no entry for protocol image '1.jpg'"):
        run_evaluate_ijb(path, root, None, tmp_path / "m.json")
    full = save_embeddings(tmp_path / "f.npz", images, emb)
    with pytest.raises(InputError, match="embedding_noflip"):
        run_evaluate_ijb(full, root, None, tmp_path / "m.json", flip=False)
    assert not (tmp_path / "m.json").exists()


def test_embeddings_may_be_stored_in_another_order_or_with_a_directory_prefix(tmp_path):
    root, images, emb, _, _ = random_ijb(tmp_path / "ijb", seed=5)
    protocol = read_ijb_protocol(root)
    base = evaluate_ijb(load_embeddings(save_embeddings(tmp_path / "a.npz", images, emb)), protocol).scores
    perm = np.random.default_rng(0).permutation(images.size)
    prefixed = np.array([f"loose_crop/{name}" for name in images[perm]])
    moved = evaluate_ijb(load_embeddings(save_embeddings(tmp_path / "b.npz", prefixed, emb[perm])), protocol).scores
    np.testing.assert_allclose(moved, base, rtol=1e-6)


def test_gram_pair_scores_span_several_template_blocks(monkeypatch):
    import facetrust.evaluate.template_dots as scoring

    monkeypatch.setattr(scoring, "GRAM_SLAB_BYTES", 4 * 50 * 7)  # 7 templates per block
    rng = np.random.default_rng(1)
    ids = rng.permutation(50) + 1000
    feats = rng.standard_normal((50, 6)).astype(np.float32)
    pairs = rng.choice(ids, size=(300, 2))
    rows = {t: k for k, t in enumerate(ids)}
    want = np.array([feats[rows[a]] @ feats[rows[b]] for a, b in pairs])
    np.testing.assert_allclose(pair_scores(ids, feats, pairs, method="gram"), want, rtol=1e-5, atol=1e-6)


def test_skip_policy_drops_bad_rows_and_the_pairs_of_emptied_templates(tmp_path):
    write_ijb_dir(tmp_path, "ijbc", ["1.jpg", "2.jpg", "3.jpg", "4.jpg"], [5, 5, 6, 7], [50, 51, 60, 70],
                  [0.9, 0.0, float("nan"), 0.8], [(5, 6), (5, 7), (6, 7)], [0, 1, 0])
    with pytest.raises(InputError, match=r"name_5pts_score.txt: line 2: image '2.jpg': detector score 0.0"):
        read_ijb_protocol(tmp_path, "ijbc")
    p = read_ijb_protocol(tmp_path, "ijbc", on_bad_image="skip")
    assert p.images.tolist() == ["1.jpg", "4.jpg"] and p.skipped == ("2.jpg", "3.jpg")
    assert p.pairs.tolist() == [[5, 7]] and p.labels.tolist() == [1]  # template 6 lost its only image
    assert p.landmark_lines.tolist() == [1, 4]


def test_image_names_that_leave_loose_crop_are_refused_in_any_policy(tmp_path):
    write_ijb_dir(tmp_path, "ijbc", ["a/1.jpg", "a/../../2.jpg"], [5, 6], [50, 60], [1, 1], [(5, 6)], [0])
    for policy in ("fail", "skip"):
        with pytest.raises(InputError, match=r"face_tid_mid.txt: line 2: image name 'a/../../2.jpg'"):
            read_ijb_protocol(tmp_path, "ijbc", on_bad_image=policy)


def test_duplicate_pairs_are_an_error_or_dropped_counted_and_recorded(tmp_path):
    """A repeated pair counts twice in every TAR and FAR: refused by default; with
    ``duplicate_pairs="drop"`` the metrics equal those of the file without the repeats and say how
    many were left out."""
    root, images, emb, noflip, a = random_ijb(tmp_path / "ijb", seed=3)
    path = save_embeddings(tmp_path / "e.npz", images, emb, noflip)
    clean = run_evaluate_ijb(path, root, "ijbx", tmp_path / "clean.json")
    pair_file = root / "meta" / "ijbx_template_pair_label.txt"
    lines = pair_file.read_text().splitlines(keepends=True)
    pair_file.write_text("".join(lines + lines[:50]))  # 50 repeats at the end
    with pytest.raises(InputError, match=rf"line {len(lines) + 1}: pair \(100, 101\) repeats line 1 \(50 repeated"):
        run_evaluate_ijb(path, root, "ijbx", tmp_path / "m.json")
    dropped = run_evaluate_ijb(path, root, "ijbx", tmp_path / "m.json", duplicate_pairs="drop")
    assert dropped["duplicate_pairs"] == {"policy": "drop", "dropped": 50}
    assert dropped["tar_at_far"] == clean["tar_at_far"] and dropped["n_pairs"] == clean["n_pairs"]
    assert "duplicate_pairs" not in clean  # valid inputs: the metrics file is unchanged


def test_evaluation_does_not_judge_landmarks_it_never_uses_but_align_does(tmp_path):
    root, images, emb, noflip, a = random_ijb(tmp_path / "ijb", seed=4)
    path = save_embeddings(tmp_path / "e.npz", images, emb, noflip)
    before = run_evaluate_ijb(path, root, "ijbx", tmp_path / "m.json")
    pts = root / "meta" / "ijbx_name_5pts_score.txt"
    rows = pts.read_text().splitlines()
    fields = rows[1].split()
    rows[1] = " ".join([fields[0]] + ["30.0"] * 10 + [fields[-1]])  # all five points equal
    pts.write_text("\n".join(rows) + "\n")
    assert run_evaluate_ijb(path, root, "ijbx", tmp_path / "m.json")["tar_at_far"] == before["tar_at_far"]
    with pytest.raises(InputError, match="line 2: image '2.jpg': landmarks are degenerate"):
        read_ijb_protocol(root, "ijbx", cache=False)  # what align reads
