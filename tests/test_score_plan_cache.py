"""Scoring plans (template_dots.score_plan) and their cache beside the decoded-protocol cache: the same
scores bytes with and without them, and never a plan of other pairs or a damaged file."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

import facetrust.data.ijb_cache as ijb_cache
import facetrust.evaluate.template_dots as scoring
from facetrust.data.ijb import read_ijb_protocol
from facetrust.evaluate import score_plan_cache
from facetrust.evaluate.ijb import run_evaluate_ijb
from facetrust.io import CACHE_ENV
from ijb_protocol_fixture import random_ijb


def _bits(scores: np.ndarray) -> bytes:
    return np.asarray(scores, dtype=np.float32).tobytes()


def _protocols(rng):
    """(ids, features, pairs) listed by enrolment template, with 3 % turned, and shuffled: each of the
    plan's three placements."""
    ids = np.arange(2000) * 7 + 3
    features = rng.standard_normal((ids.size, 32)).astype(np.float32)
    first = np.sort(rng.integers(0, 60, 40000))
    second = rng.integers(60, ids.size, 40000)
    ordered = np.stack([ids[first], ids[second]], axis=1)
    turned = ordered.copy()
    flip = rng.random(40000) < 0.03
    turned[flip] = turned[flip, ::-1]
    shuffled = turned[rng.permutation(40000)]
    return ids, features, {"identity": ordered, "two": turned, "sorted": shuffled}


def test_a_plan_scores_the_same_bytes_and_round_trips_through_its_arrays(monkeypatch):
    monkeypatch.setattr(scoring, "GRAM_SLAB_BYTES", 4 * 2000 * 100)  # 100-template slabs: "auto" takes "reuse"
    ids, features, protocols = _protocols(np.random.default_rng(3))
    for kind, pairs in protocols.items():
        plan = scoring.score_plan(ids, pairs)
        assert plan is not None and plan.place[0] == kind, kind
        again = scoring.ScorePlan.from_arrays(plan.arrays())
        want = scoring.pair_scores(ids, features, pairs)
        for used in (plan, again):
            assert _bits(scoring.pair_scores(ids, features, pairs, plan=used)) == _bits(want), kind
        exact = np.einsum("ij,ij->i", *(features[np.searchsorted(ids, pairs[:, k])].astype(np.float64) for k in (0, 1)))
        np.testing.assert_allclose(want, exact, rtol=0, atol=32 * 2.0**-20)


def test_a_plan_is_none_where_auto_does_not_take_reuse_and_refuses_other_features(monkeypatch):
    ids, features, protocols = _protocols(np.random.default_rng(4))
    assert scoring.score_plan(ids, protocols["identity"]) is None  # 2000 templates fit one gram slab
    monkeypatch.setattr(scoring, "GRAM_SLAB_BYTES", 4 * 2000 * 100)
    plan = scoring.score_plan(ids, protocols["identity"])
    with pytest.raises(Exception, match="2000 templates"):
        scoring.pair_scores(ids[:-1], features[:-1], protocols["identity"], plan=plan)


@pytest.mark.parametrize("damage", ["row", "place", "groups", "counts", "kind", "moved_dtype"])
def test_plan_arrays_out_of_bounds_are_refused(monkeypatch, damage):
    monkeypatch.setattr(scoring, "GRAM_SLAB_BYTES", 4 * 2000 * 100)
    ids, _, protocols = _protocols(np.random.default_rng(5))
    arrays = {k: np.array(v) for k, v in scoring.score_plan(ids, protocols["two"]).arrays().items()}
    if damage == "row":
        arrays["second0"][5] = ids.size
    elif damage == "place":
        arrays["moved"][0] = arrays["kept"].size
    elif damage == "groups":
        arrays["first1"] = arrays["first1"][:-1]
    elif damage == "counts":
        arrays["used1"] = arrays["used1"][:-1]
    elif damage == "kind":
        arrays["shape"][3] = scoring.PLACE_KINDS.index("sorted")  # two groups under a one-group placement
        arrays["order"] = np.arange(arrays["kept"].size)
    else:
        arrays["moved"] = arrays["moved"].astype(np.float64)
    with pytest.raises(ValueError):
        scoring.ScorePlan.from_arrays(arrays)


def _evaluate(tmp_path, root, embeddings, tag: str) -> tuple[bytes, bytes]:
    out = tmp_path / tag
    out.mkdir()
    run_evaluate_ijb(embeddings, root, "ijbx", out / "m.json", roc_out=out / "roc.csv")
    return (out / "m.json").read_bytes(), (out / "roc.csv").read_bytes()


def test_evaluation_plans_a_cached_protocol_once_and_writes_the_same_bytes(tmp_path, monkeypatch, caplog):
    root, images, embedding, _, _ = random_ijb(tmp_path / "ijb", n_templates=60, seed=11)
    embeddings = tmp_path / "e.npz"
    np.savez(embeddings, image=images, embedding=embedding)
    monkeypatch.setattr(scoring, "GRAM_SLAB_BYTES", 4 * 60 * 8)  # "reuse" on this small protocol
    monkeypatch.setenv(CACHE_ENV, "off")
    uncached = _evaluate(tmp_path, root, embeddings, "off")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(ijb_cache, "MIN_BYTES", 0)
    computed, calls = [], []
    real_plan = score_plan_cache.score_plan
    monkeypatch.setattr(score_plan_cache, "score_plan", lambda *a: calls.append(1) or real_plan(*a))
    computed.append(_evaluate(tmp_path, root, embeddings, "cold"))  # parses, stores the protocol and the plan
    plans = list((tmp_path / "cache" / "ijb" / "plans").glob("*.npz"))
    assert len(plans) == 1 and len(calls) == 1
    protocol = read_ijb_protocol(root, check_landmarks=False)
    assert plans[0].name.startswith(protocol.cache_key)
    computed.append(_evaluate(tmp_path, root, embeddings, "warm"))  # both from the cache
    assert len(calls) == 1
    assert computed[0] == computed[1] == uncached
    plans[0].write_bytes(plans[0].read_bytes()[:1000])  # truncated: planned again, replaced
    with caplog.at_level(logging.WARNING):
        assert _evaluate(tmp_path, root, embeddings, "damaged") == uncached
    assert len(calls) == 2 and "damaged score plan" in caplog.text
    assert _evaluate(tmp_path, root, embeddings, "repaired") == uncached and len(calls) == 2


def test_a_plan_of_other_pairs_is_never_used_and_orphans_are_removed(tmp_path, monkeypatch):
    root, images, embedding, _, _ = random_ijb(tmp_path / "ijb", n_templates=60, seed=12)
    monkeypatch.setattr(scoring, "GRAM_SLAB_BYTES", 4 * 60 * 8)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(ijb_cache, "MIN_BYTES", 0)
    protocol = read_ijb_protocol(root, check_landmarks=False)
    template_ids = np.unique(protocol.template_ids)
    plan = score_plan_cache.cached_score_plan(protocol, template_ids)
    assert plan is not None and plan.n_pairs == protocol.pairs.shape[0]
    # the same entry name with other pairs (a protocol filtered after loading) or templates: planned anew
    fewer = protocol.__class__(**{**protocol.__dict__, "pairs": protocol.pairs[:-7], "labels": protocol.labels[:-7]})
    assert fewer.cache_key == protocol.cache_key
    assert score_plan_cache.cached_score_plan(fewer, template_ids).n_pairs == protocol.pairs.shape[0] - 7
    other_order = protocol.__class__(**{**protocol.__dict__, "pairs": protocol.pairs[:, ::-1].copy()})
    replanned = score_plan_cache.cached_score_plan(other_order, template_ids)
    assert replanned is None or replanned.n_pairs == protocol.pairs.shape[0]
    uncached = protocol.__class__(**{**protocol.__dict__, "cache_key": None})
    assert score_plan_cache.cached_score_plan(uncached, template_ids) is None
    plans = tmp_path / "cache" / "ijb" / "plans"
    (plans / "gone-0123-plan1.npz").write_bytes(b"x")  # its protocol entry does not exist
    for entry in (tmp_path / "cache" / "ijb").glob("*.npz"):
        entry.unlink()
    read_ijb_protocol(root, check_landmarks=False)  # the protocol entry again
    score_plan_cache.cached_score_plan(read_ijb_protocol(root, check_landmarks=False), template_ids)
    assert [p.name for p in plans.iterdir()] == [f"{protocol.cache_key}-plan{score_plan_cache.PLAN_VERSION}.npz"]


def test_a_protocol_without_its_failed_images_is_no_longer_the_cached_one(tmp_path, monkeypatch):
    from facetrust.evaluate.enrolment import split_failures

    root, *_ = random_ijb(tmp_path / "ijb", n_templates=30, seed=14)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(ijb_cache, "MIN_BYTES", 0)
    protocol = read_ijb_protocol(root, check_landmarks=False)
    assert protocol.cache_key is not None
    rows = np.arange(protocol.images.size)
    rows[protocol.template_ids == protocol.template_ids[0]] = -1  # the first template's images failed
    enrolled, failures = split_failures(protocol, rows, list(protocol.images[rows < 0]), "reject", "e.npz")
    assert failures is not None and enrolled.pairs.shape[0] < protocol.pairs.shape[0]
    assert enrolled.cache_key is None and score_plan_cache.cached_score_plan(enrolled, np.unique(enrolled.template_ids)) is None


def test_the_pooling_kernel_loads_without_the_scipy_sparse_package():
    code = ("import sys; from facetrust.evaluate.fusion import csr_times_dense; f = csr_times_dense(); "
            "print(f.__name__, 'scipy.sparse' in sys.modules, 'numpy.f2py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["csr_matvecs", "False", "False"]


def test_pooling_equals_scipy_s_sparse_product_bit_for_bit():
    from facetrust.evaluate.fusion import group_matrix, weighted_group_sum

    rng = np.random.default_rng(13)
    groups = np.sort(rng.integers(0, 700, 20000))
    weights = rng.random(20000)
    x = rng.standard_normal((20000, 48)).astype(np.float32)
    x[::9, 4] = -0.0
    for order in (np.arange(20000), rng.permutation(20000)):  # rows in group order, and not
        got = weighted_group_sum(groups[order], 700, weights[order], x[order], block_rows=512)
        want = group_matrix(groups[order], 700, weights[order]) @ x[order].astype(np.float64)
        assert got.tobytes() == want.tobytes()


def test_the_pooling_kernel_falls_back_to_the_package_import():
    code = ("import sys, importlib.machinery as m; m.EXTENSION_SUFFIXES[:] = ['.nothing']; "
            "from facetrust.evaluate.fusion import csr_times_dense; f = csr_times_dense(); "
            "print(f.__name__, 'scipy.sparse' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["csr_matvecs", "True"]
