"""The fast evaluation paths give exactly the floats of the straightforward ones they replace (or, where\nonly one BLAS kernel would guarantee that, floats within the rounding of one sum)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import auc, roc_curve

import facetrust.data.ijb_cache as ijb_cache
import facetrust.evaluate.template_dots as scoring
from facetrust.data.ijb import read_ijb_protocol
from facetrust.errors import InputError
from facetrust.io import CACHE_ENV
from facetrust.evaluate.embeddings_file import load_embeddings
from facetrust.evaluate.fusion import group_matrix, weighted_group_sum
from facetrust.evaluate.ijb import template_features
from facetrust.evaluate.reject import rejection_order, threshold_ranks
from facetrust.evaluate.roc import area_under_curve, roc_points
from facetrust.npz import load_npz
from ijb_protocol_fixture import random_ijb


@pytest.mark.parametrize("seed", range(40))
def test_roc_points_equal_sklearn_bit_for_bit_with_ties_and_signed_zeros(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    labels = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(rng.choice([np.int8, np.int64, bool]))
    if labels.all() or not labels.any():
        labels[0] = not labels[0]
    scores = rng.integers(-3, 4, n).astype(rng.choice([np.float32, np.float64])) + 2 * (seed % 3 - 1) * labels
    scores[scores == 0] = np.where(rng.random(int((scores == 0).sum())) < 0.5, -0.0, 0.0)
    got, want = roc_points(labels, scores), roc_curve(labels, scores)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and np.array_equal(a, b) and np.array_equal(np.signbit(a), np.signbit(b))
    assert area_under_curve(got[0], got[1]) == auc(want[0], want[1])


@pytest.mark.parametrize("seed", range(6))
def test_roc_points_equal_sklearn_where_float32_ties_make_most_points_corners(seed):
    """IJB-C's regime: continuous scores rounded to float32, so ties of two or three are common, the
    impostor count changes from run to run and most runs are kept; genuine scores both on impostor
    runs and between them, below the lowest and above the highest."""
    rng = np.random.default_rng(100 + seed)
    n = 20000
    labels = rng.random(n) < 0.05
    scores = (rng.normal(0, 0.01, n) + 0.02 * labels).astype(np.float32)
    scores = np.round(scores * 2**19) / 2**19  # some impostors tie, most runs are single
    scores[np.flatnonzero(labels)[:3]] = [scores.min() - 1, scores.max() + 1, 0.0]
    got, want = roc_points(labels, scores), roc_curve(labels, scores)
    assert want[0].size > n // 10  # many corners
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and np.array_equal(a, b) and np.array_equal(np.signbit(a), np.signbit(b))


def test_weighted_group_sum_equals_the_sparse_product_bit_for_bit():
    rng = np.random.default_rng(0)
    for grouped in (True, False):
        groups = rng.integers(0, 50, 700)
        groups = np.sort(groups) if grouped else groups
        weights, x = rng.uniform(0, 2, 700), rng.standard_normal((700, 33)).astype(np.float32)
        x[rng.random(700) < 0.1] = -0.0
        want = group_matrix(groups, 55, weights) @ x.astype(np.float64)
        got = weighted_group_sum(groups, 55, weights, x, block_rows=37)
        assert np.array_equal(got, want) and np.array_equal(np.signbit(got), np.signbit(want))


def test_reuse_pair_scores_equal_the_gram_slabs_to_the_rounding_of_one_sum(monkeypatch):
    """Bit for bit only where one sgemm kernel sums every entry in one order whatever the block's
    shape (OpenBLAS's SkylakeX kernels do; its Haswell kernels, taken off AVX-512 or under the
    pins of facetrust.float_path, differ in the last bits: 12.152641 vs 12.152629).  So the two
    methods must agree to the rounding bound of a D-term float32 sum, D·eps·Σ|a_i·b_i| (Higham,
    Accuracy and Stability of Numerical Algorithms, eq. 3.5); within one method, reordering the
    pairs must not change a bit."""
    rng = np.random.default_rng(1)
    ids = rng.permutation(4000)[:300] + 5
    features = rng.standard_normal((300, 512)).astype(np.float32)
    pairs = np.stack([rng.choice(ids[:40], 20000), rng.choice(ids, 20000)], axis=1)
    monkeypatch.setattr(scoring, "GRAM_SLAB_BYTES", 4 * 300 * 100)  # gram blocks of 100 templates
    gram = scoring.pair_scores(ids, features, pairs, method="gram")
    reuse = scoring.pair_scores(ids, features, pairs, method="reuse")
    shuffled = rng.permutation(len(pairs))
    assert np.array_equal(scoring.pair_scores(ids, features, pairs[shuffled], method="reuse"), reuse[shuffled])
    row = {t: k for k, t in enumerate(ids)}
    first, second = features[[row[t] for t in pairs[:, 0]]], features[[row[t] for t in pairs[:, 1]]]
    bound = 512 * np.finfo(np.float32).eps * np.einsum("ij,ij->i", np.abs(first), np.abs(second), dtype=np.float64)
    assert (np.abs(reuse.astype(np.float64) - gram) <= bound).all()
    exact = np.einsum("ij,ij->i", first.astype(np.float64), second.astype(np.float64))
    assert (np.abs(reuse - exact) <= bound).all() and (np.abs(gram - exact) <= bound).all()
    with pytest.raises(InputError, match="pair 0 names template 3"):
        scoring.pair_scores(ids, features, np.array([[3, ids[0]]]), method="reuse")


def test_auto_pair_scores_gather_only_when_pairs_are_sparse_in_the_used_template_grid(monkeypatch):
    # IJB-C at half its pairs: T² > 64·P, yet pairs fill a tenth of the used enrolment x verification
    # grid, where one sgemm slab per chunk costs ~10x less than gathering each pair's two rows.
    rng = np.random.default_rng(2)
    ids = np.arange(1000)
    features = rng.standard_normal((1000, 64)).astype(np.float32)
    dense = np.stack([rng.choice(ids[:20], 2500), rng.choice(ids[20:], 2500)], axis=1)  # 2500 of 19,600 cells
    sparse = np.stack([rng.choice(ids, 2000), rng.choice(ids, 2000)], axis=1)  # ~1e6 cells, 2000 pairs
    calls = []
    monkeypatch.setattr(scoring, "_gather_scores", lambda *args: calls.append("gather") or np.zeros(len(args[1])))
    assert np.array_equal(scoring.pair_scores(ids, features, dense), scoring.pair_scores(ids, features, dense,
                                                                                       method="gram"))
    assert calls == [] and 1000**2 > 64 * len(dense)
    scoring.pair_scores(ids, features, sparse)
    assert calls == ["gather"]


def test_pairs_listed_in_both_orders_score_on_the_small_side_s_grid(monkeypatch):
    """A protocol that repeats some pairs in the other order (enrolment template second) is scored
    as if every pair were listed enrolment first: the reuse grid stays enrolment x verification,
    and each score is the same dot product (to the rounding of one float32 sum)."""
    rng = np.random.default_rng(4)
    ids = np.arange(3000)
    features = rng.standard_normal((3000, 64)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    enrolment, verification = ids[:100], ids[100:]
    pairs = np.stack([rng.choice(enrolment, 20000), rng.choice(verification, 20000)], axis=1)
    swapped = pairs.copy()
    swapped[::50] = swapped[::50, ::-1]  # 2 % of the pairs in the other order: every template in both columns
    grids = []
    reuse = scoring._reuse_scores
    monkeypatch.setattr(scoring, "_reuse_scores", lambda features, rows1, rows2, progress, used, *rest:
                        grids.append(np.count_nonzero(used[0]) * np.count_nonzero(used[1]))
                        or reuse(features, rows1, rows2, progress, used, *rest))
    straight = scoring.pair_scores(ids, features, pairs, method="reuse")
    turned = scoring.pair_scores(ids, features, swapped, method="reuse")
    # a verification template listed only in swapped pairs stays first: the grid grows by those few
    assert grids[0] <= 100 * 2900 and grids[1] <= 1.1 * grids[0]  # unturned: ~2,900 x 3,000
    np.testing.assert_allclose(turned, straight, rtol=0, atol=64 * 2.0**-24)
    exact = np.einsum("ij,ij->i", features[pairs[:, 0]].astype(np.float64), features[pairs[:, 1]].astype(np.float64))
    np.testing.assert_allclose(turned, exact, rtol=0, atol=64 * 2.0**-23)


def test_turned_pairs_are_sorted_apart_and_score_the_same_bytes_as_sorting_every_pair():
    """Pairs listed by enrolment template except the turned ones: those are sorted apart (no argsort
    of every pair), and each score is picked from the same slab as when every pair is sorted."""
    rng = np.random.default_rng(9)
    n_templates = 900
    features = rng.standard_normal((n_templates, 32)).astype(np.float32)
    rows1 = np.sort(rng.integers(0, 60, 30000)).astype(np.int32)  # listed by enrolment template
    rows2 = rng.integers(60, n_templates, 30000).astype(np.int32)
    turned = rng.random(30000) < 0.02
    rows1[turned] = rng.integers(0, 60, np.count_nonzero(turned))  # the turned pairs break the order
    used = scoring._counts(rows1, n_templates), scoring._counts(rows2, n_templates)
    listed1, listed2 = np.where(turned, rows2, rows1), np.where(turned, rows1, rows2)  # as the protocol lists them
    assert all(np.array_equal(a, b) for a, b in zip(scoring._turned(listed1, listed2, turned), (rows1, rows2)))
    groups, _ = scoring._score_groups(listed1, listed2, n_templates, turned)
    assert len(groups) == 2 and groups[1]["first"].size == np.count_nonzero(turned)
    assert np.array_equal(np.sort(groups[1]["first"]), np.sort(rows1[turned])) and (np.diff(groups[1]["first"]) >= 0).all()
    every = scoring._reuse_scores(features, rows1, rows2, False, used, None)
    apart = scoring._reuse_scores(features, listed1, listed2, False, used, turned)
    assert apart.dtype == np.float32 and np.array_equal(apart.view(np.uint32), every.view(np.uint32))
    exact = np.einsum("ij,ij->i", features[rows1].astype(np.float64), features[rows2].astype(np.float64))
    np.testing.assert_allclose(apart, exact, rtol=0, atol=32 * 2.0**-20)
    shuffled = rng.permutation(30000)  # the others out of order too: every pair is sorted, same scores
    assert len(scoring._score_groups(listed1[shuffled], listed2[shuffled], n_templates, turned[shuffled])[0]) == 1
    again = scoring._reuse_scores(features, listed1[shuffled], listed2[shuffled], False, used, turned[shuffled])
    assert np.array_equal(again.view(np.uint32), every[shuffled].view(np.uint32))


def test_oriented_counts_are_those_of_the_turned_pairs_without_writing_them_out():
    rng = np.random.default_rng(5)
    n_templates = 500
    rows1 = rng.integers(0, 40, 20000).astype(np.int32)
    rows2 = rng.integers(40, n_templates, 20000).astype(np.int32)
    swap = rng.random(20000) < 0.05
    listed1, listed2 = np.where(swap, rows2, rows1), np.where(swap, rows1, rows2)
    got1, got2, used, turned = scoring._oriented(listed1, listed2, n_templates)
    assert got1 is listed1 and got2 is listed2 and np.array_equal(turned, swap)
    assert np.array_equal(used[0], np.bincount(rows1, minlength=n_templates))
    assert np.array_equal(used[1], np.bincount(rows2, minlength=n_templates))
    assert scoring._oriented(rows1, rows2, n_templates)[3] is None  # listed in one order: nothing turned
    features = rng.standard_normal((n_templates, 16)).astype(np.float32)
    ids = np.arange(n_templates) * 3 + 1
    listed = np.stack([ids[listed1], ids[listed2]], axis=1)
    for method in ("reuse", "gram", "gather"):  # every method reads the turned pairs the same way round
        scores = scoring.pair_scores(ids, features, listed, method=method)
        reference = scoring.pair_scores(ids, features, np.stack([ids[rows1], ids[rows2]], axis=1), method=method)
        assert np.array_equal(scores.view(np.uint32), reference.view(np.uint32)), method


def test_threshold_ranks_compare_with_every_threshold_as_the_removal_rank():
    rng = np.random.default_rng(2)
    for ties in (False, True):
        u = rng.integers(0, 4, 500).astype(float) if ties else rng.random(500)
        thresholds = rng.integers(0, 501, 9)
        rank = np.empty(500, np.int64)
        rank[rejection_order(u)] = np.arange(500)
        got = threshold_ranks(u, thresholds)
        for t in thresholds:
            assert np.array_equal(got >= t, rank >= t)


def test_streamed_embeddings_pool_like_loaded_ones_and_name_a_non_finite_row(tmp_path):
    root, images, emb, _, a = random_ijb(tmp_path / "ijb", seed=6)
    path = tmp_path / "e.npz"
    np.savez(path, image=images, embedding=emb)
    streamed, loaded = load_embeddings(path, stream=True), load_embeddings(path)
    args = (a["template_ids"], a["media_ids"], a["detector"])
    assert np.array_equal(template_features(streamed.features, *args)[1], template_features(loaded.features, *args)[1])
    emb[7, 3] = np.nan
    np.savez(path, image=images, embedding=emb)
    with pytest.raises(InputError, match=r"e.npz: key 'embedding' row 7 \('8.jpg'\) is not finite"):
        template_features(load_embeddings(path, stream=True).features, *args)
    with pytest.raises(InputError, match="row 7"):
        load_embeddings(path)


def test_npz_reader_equals_numpy_for_stored_and_compressed_members(tmp_path):
    arrays = dict(a=np.arange(12.0).reshape(3, 4), s=np.array(["x", "yy"]), f=np.asfortranarray(np.ones((2, 3))),
                  e=np.zeros((0, 4), np.float32))
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "x.npz", **arrays)
        got = load_npz(tmp_path / "x.npz")
        assert all(got[k].dtype == v.dtype and np.array_equal(got[k], v) for k, v in arrays.items())


def _mapped(array) -> bool:
    import mmap

    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def test_an_aligned_npz_is_what_np_load_reads_and_its_members_map_copy_on_write(tmp_path):
    import zipfile

    from facetrust.npz import ALIGN, _stored_layout, save_npz_aligned

    arrays = dict(a=np.arange(12.0).reshape(3, 4), s=np.array(["x", "yy"]), f=np.asfortranarray(np.ones((2, 3))),
                  e=np.zeros((0, 4), np.float32), b=np.arange(7, dtype=np.int8), p=np.arange(20000).reshape(-1, 2),
                  v=np.arange(10)[::2])
    path = tmp_path / "x.npz"
    with open(path, "wb") as handle:
        save_npz_aligned(handle, arrays)
    with np.load(path) as stored:
        assert all(stored[k].dtype == v.dtype and np.array_equal(stored[k], v) for k, v in arrays.items())
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        assert [_stored_layout(handle, info)[0] % ALIGN for info in archive.infolist()] == [0] * len(arrays)
    before = path.read_bytes()
    got = load_npz(path, mapped=True)
    assert all(got[k].dtype == v.dtype and np.array_equal(got[k], v) for k, v in arrays.items())
    assert [k for k in arrays if _mapped(got[k])] == ["a", "s", "f", "b", "p", "v"]  # all but the empty one
    assert got["f"].flags.f_contiguous and not got["f"].flags.c_contiguous
    got["p"][0, 0] = -1  # a private copy of the page: the file is unchanged
    assert path.read_bytes() == before and load_npz(path)["p"][0, 0] == 0
    np.savez(path, **arrays)  # unaligned members (np.savez): read, not mapped, the same arrays
    got = load_npz(path, mapped=True)
    assert all(np.array_equal(got[k], v) for k, v in arrays.items())
    with pytest.raises(ValueError, match="object"):
        with open(tmp_path / "o.npz", "wb") as handle:
            save_npz_aligned(handle, {"o": np.array([{}], dtype=object)})


def test_protocol_cache_serves_the_parsed_arrays_and_follows_file_changes(tmp_path, monkeypatch):
    root, *_ = random_ijb(tmp_path / "ijb", seed=7)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(ijb_cache, "MIN_BYTES", 0)
    parsed = read_ijb_protocol(root, cache=False)
    first = read_ijb_protocol(root)  # parses and stores
    entries = list((tmp_path / "cache" / "ijb").glob("*.npz"))
    assert len(entries) == 1
    cached = read_ijb_protocol(root)  # served from the entry, mapped
    assert _mapped(cached.pairs) and _mapped(cached.images) and not _mapped(first.pairs)
    for field in ("images", "template_ids", "media_ids", "landmarks", "detector_scores", "pairs", "labels"):
        want = getattr(parsed, field)
        for got in (getattr(first, field), getattr(cached, field)):
            assert got.dtype == want.dtype and np.array_equal(got, want)
    pairs_file = root / "meta" / "ijbx_template_pair_label.txt"
    pairs_file.write_text(pairs_file.read_text().replace(" 0\n", " 1\n", 1))
    assert read_ijb_protocol(root).labels.sum() == parsed.labels.sum() + 1  # new content, new entry
    for entry in (tmp_path / "cache" / "ijb").glob("*.npz"):
        entry.write_bytes(b"damaged")
    assert np.array_equal(read_ijb_protocol(root).labels, read_ijb_protocol(root, cache=False).labels)  # re-parsed


def test_file_hashes_are_remembered_by_identity_and_times_and_never_served_stale(tmp_path, monkeypatch):
    import hashlib
    import os

    memo = tmp_path / "digests"
    meta = tmp_path / "pairs.txt"
    meta.write_text("1 2 0\n" * 1000)
    assert ijb_cache.file_digest(meta, memo) == hashlib.sha256(meta.read_bytes()).digest()
    assert not memo.exists()  # written just now: racy, not remembered
    old = meta.stat().st_mtime_ns - 10**10
    os.utime(meta, ns=(old, old))  # ctime is now too, but the memo needs both times settled
    monkeypatch.setattr(ijb_cache, "RACY_S", -1.0)
    ijb_cache.file_digest(meta, memo)
    assert len(list(memo.iterdir())) == 1
    reads = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda *a, **k: reads.append(1) or real(*a, **k))
    assert ijb_cache.file_digest(meta, memo) == hashlib.sha256(meta.read_bytes()).digest()
    assert reads == []  # served from the memo
    meta.write_text("1 2 1\n" * 1000)  # same size, new content
    os.utime(meta, ns=(old, old))  # even with the modification time put back, the change time moved
    assert ijb_cache.file_digest(meta, memo) == hashlib.sha256(meta.read_bytes()).digest()
    assert reads == [1]
    for entry in memo.iterdir():
        entry.write_text("not hex")  # a damaged memo is ignored (and rewritten)
    assert ijb_cache.file_digest(meta, memo) == hashlib.sha256(meta.read_bytes()).digest()
    assert reads == [1, 1]
