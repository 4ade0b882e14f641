"""IJB TAR@FAR equals the float64 computation (InsightFace scores in float64) although pairs are scored in float32."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from facetrust.evaluate.exact_tar import exact_tar_at_far, float32_dot_error_bound
from facetrust.evaluate.embeddings_file import load_embeddings
from facetrust.evaluate.ijb import evaluate_ijb, run_evaluate_ijb, template_features_float64
from facetrust.evaluate.template_dots import FLOAT64_CHUNK, float64_pair_scores, pair_scores
from facetrust.evaluate.roc import DEFAULT_IJB_FARS, far_key, roc_points, tar_at_far
from facetrust.data.ijb import read_ijb_protocol
from ijb_protocol_fixture import write_ijb_dir

# Enrolment template 1 against: 2 (genuine, far above), 3 (genuine g*) and 4 (impostor i*) nearly
# tied, 5-7 (impostors, low), 8 (genuine, lowest).  With 4 impostors, FAR 1e-1 targets 0.4
# impostors: float64 (g* above i*) reads TAR 2/3 at FPR 0; float32 with i* at or above g* reads 1/3.
PAIRS = np.array([[1, t] for t in range(2, 9)])
LABELS = np.array([1, 1, 0, 0, 0, 0, 1])


def nearest_tar(fpr, tpr, far):
    """InsightFace: the ROC point with the FPR nearest the target, ties to the larger TPR."""
    distance = np.abs(fpr - far)
    return float(tpr[distance == distance.min()].max())


def protocol_embeddings(dim: int, seed: int, component: int, step: int) -> np.ndarray:
    """One float32 image embedding per template (ids 1-8); template 4 is template 3 moved by
    ``step`` float32 ulps in one ``component``, so their scores against template 1 nearly tie."""
    rng = np.random.default_rng(seed)
    enrol = rng.standard_normal(dim)
    enrol /= np.linalg.norm(enrol)
    other = rng.standard_normal((6, dim))
    other -= np.outer(other @ enrol, enrol)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    cosines = np.array([0.9, 0.5, 0.1, 0.0, -0.1, -0.3])  # templates 2, 3, 5, 6, 7, 8
    rows = cosines[:, None] * enrol + np.sqrt(1 - cosines[:, None] ** 2) * other
    x = np.vstack([enrol, rows[:2], rows[1], rows[2:]]).astype(np.float32) * np.float32(12.0)
    x[3, component] = x[3, component] + np.float32(step) * np.spacing(x[3, component])
    return x


def our_scores(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64, float32) pair scores as ``evaluate ijb`` computes them (one image per template, D1 = 1)."""
    ids, features = template_features_float64(x, np.arange(1, 9), np.arange(1, 9), np.ones(8, np.float32))
    exact = float64_pair_scores(ids, features, PAIRS)(np.arange(len(PAIRS)))
    return exact, pair_scores(ids, features.astype(np.float32), PAIRS)


def swapped_protocol(dim: int = 64) -> np.ndarray:
    """The first (component, step) for which float64 puts g* above i* and float32 does not (seeded)."""
    for component in range(dim):
        for step in (1, -1, 2, -2):
            x = protocol_embeddings(dim, 7, component, step)
            exact, single = our_scores(x)
            if exact[1] > exact[2] + 1e-12 and single[1] <= single[2]:
                return x
    raise AssertionError("no float32 swap found")  # pragma: no cover


def test_ijb_tar_is_the_float64_one_where_float32_swaps_a_genuine_and_an_impostor(tmp_path):
    x = swapped_protocol()
    images = [f"{k}.jpg" for k in range(1, 9)]
    root = write_ijb_dir(tmp_path / "ijb", "ijbx", images, range(1, 9), range(1, 9), np.ones(8), PAIRS, LABELS)
    np.savez(tmp_path / "e.npz", image=np.array(images), embedding=x)
    metrics = run_evaluate_ijb(tmp_path / "e.npz", root, "ijbx", tmp_path / "m.json")
    # Independent float64 computation: normalised template features, dot products, sklearn's ROC.
    unit = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    scores = np.array([unit[a - 1] @ unit[b - 1] for a, b in PAIRS])
    fpr, tpr, _ = roc_curve(LABELS, scores)
    expected = {far_key(far): nearest_tar(fpr, tpr, far) for far in DEFAULT_IJB_FARS}
    assert metrics["tar_at_far"] == expected
    assert metrics["settings"]["tar_scores"].startswith("float64")
    # The float32 scores alone read another TAR at FAR 1e-1 (so this test can fail).
    single = evaluate_ijb(load_embeddings(tmp_path / "e.npz"), read_ijb_protocol(root, "ijbx")).scores
    fpr32, tpr32, _ = roc_curve(LABELS, single)
    assert expected["1e-01"] == 2 / 3 and nearest_tar(fpr32, tpr32, 0.1) == 1 / 3


def noisy_scores(seed: int, n_pairs: int = 30_000, error: float = 2e-3):
    """Float64 scores (continuous impostors; some impostors and genuine pairs tied exactly with a
    genuine score) and float32 scores within ``error`` of them, moved so that many pairs swap."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_pairs) < 0.03).astype(np.int8)
    exact = np.where(labels == 1, rng.normal(0.6, 0.15, n_pairs), rng.normal(0.0, 0.12, n_pairs))
    genuine = np.flatnonzero(labels)
    impostor = np.flatnonzero(labels == 0)
    exact[impostor[:40]] = exact[genuine[:40]]  # genuine-impostor ties: (1, 1) steps
    exact[genuine[40:60]] = exact[genuine[60:80]]  # genuine-genuine ties
    single = (exact + rng.uniform(-0.9, 0.9, n_pairs) * error).astype(np.float32)
    return exact, single, labels, error * 0.9 + 1e-6


@pytest.mark.parametrize("method", ["nearest", "strict", "interpolate"])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_tar_equals_the_float64_roc_at_every_far(method, seed):
    exact, single, labels, bound = noisy_scores(seed)
    fars = np.r_[np.logspace(-4, -0.2, 40), DEFAULT_IJB_FARS]
    asked = []
    result = exact_tar_at_far(single, labels, lambda i: (asked.append(i.size), exact[i])[1], bound, fars, method)
    fpr, tpr, _ = roc_points(labels, exact)
    assert result.tar_at_far == tar_at_far(fpr, tpr, fars, method=method)
    assert result.rescored_pairs == sum(asked) < labels.size / 2
    fpr32, tpr32, _ = roc_points(labels, single)
    assert tar_at_far(fpr32, tpr32, fars, method=method) != result.tar_at_far  # float32 alone differs


def test_tied_impostors_near_a_deciding_genuine_score_are_resolved_without_rescoring_every_pair():
    exact, single, labels, bound = noisy_scores(3)
    genuine, impostor = np.flatnonzero(labels), np.flatnonzero(labels == 0)
    # Two impostors share a float64 score right below a genuine score near FAR 1e-2.
    order = genuine[np.argsort(exact[genuine])]
    target = order[np.searchsorted(np.sort(exact[genuine]), np.quantile(exact[impostor], 0.99))]
    exact[impostor[100:102]] = exact[target] - 1e-9
    single[impostor[100:102]] = exact[impostor[100:102]].astype(np.float32)
    result = exact_tar_at_far(single, labels, lambda i: exact[i], bound, [1e-2], "nearest")
    fpr, tpr, _ = roc_curve(labels, exact)
    assert result.tar_at_far == {"1e-02": nearest_tar(fpr, tpr, 1e-2)}
    assert result.rescored_pairs < labels.size / 20


def sklearn_tar(labels, exact, fars, method):
    """TAR of the float64 scores read off ``sklearn.metrics.roc_curve`` itself (independent of roc.py)."""
    fpr, tpr, _ = roc_curve(labels, exact)
    if method == "nearest":
        return {far_key(far): nearest_tar(fpr, tpr, far) for far in fars}
    if method == "strict":
        return {far_key(far): float(tpr[fpr <= far].max()) for far in fars}
    unique_fpr, first = np.unique(fpr[::-1], return_index=True)  # upper envelope, then linear
    return {far_key(far): float(np.interp(far, unique_fpr, tpr[::-1][first])) for far in fars}


def tied_scores(seed: int, kind: str, n_pairs: int = 20_000, error: float = 1e-3):
    """Float64 scores with heavy exact ties, as real protocols have them, and float32 scores within
    ``error``: ``duplicates`` (each impostor score repeated 1-6 times, as duplicate templates give
    against a third), ``quantised`` (scores on a grid of 1/512: features stored with few levels),
    ``repeated`` (a fifth of the pairs copies of others, genuine ones included)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_pairs) < 0.05).astype(np.int8)
    exact = np.where(labels == 1, rng.normal(0.55, 0.15, n_pairs), rng.normal(0.0, 0.12, n_pairs))
    impostor = np.flatnonzero(labels == 0)
    if kind == "duplicates":
        groups = rng.integers(0, impostor.size // 3, impostor.size)
        exact[impostor] = exact[impostor[groups]]
    elif kind == "quantised":
        exact = np.round(exact * 512) / 512
    else:
        copies = rng.integers(0, n_pairs, n_pairs // 5)
        exact[rng.integers(0, n_pairs, n_pairs // 5)] = exact[copies]
    # Equal float64 scores get equal or different float32 ones (BLAS need not round them alike).
    single = (exact + rng.uniform(-0.9, 0.9, n_pairs) * error * (rng.random(n_pairs) < 0.5)).astype(np.float32)
    return exact, single, labels, error * 0.9 + 1e-6


@pytest.mark.parametrize("method", ["nearest", "strict", "interpolate"])
@pytest.mark.parametrize("kind", ["duplicates", "quantised", "repeated"])
def test_exact_tar_equals_sklearn_on_heavily_tied_float64_scores(kind, method):
    exact, single, labels, bound = tied_scores(4, kind)
    n_impostor = int((labels == 0).sum())
    assert np.unique(exact[labels == 0]).size < 0.9 * n_impostor  # the protocol is heavily tied
    # Targets on, next to and between impostor counts, so every run's inside positions are read.
    fars = np.r_[np.logspace(-4, -0.3, 30), np.arange(1, 60) / n_impostor, (np.arange(1, 60) + 0.3) / n_impostor,
                 DEFAULT_IJB_FARS]
    asked = []
    result = exact_tar_at_far(single, labels, lambda i: (asked.append(i.size), exact[i])[1], bound, fars, method)
    assert result.tar_at_far == sklearn_tar(labels, exact, fars, method)
    assert result.rescored_pairs == sum(asked) < labels.size


@pytest.mark.parametrize("seed", range(8))
def test_exact_tar_equals_sklearn_on_small_tied_protocols(seed):
    """Few pairs, few distinct scores: every FAR target falls inside or next to a tied run."""
    rng = np.random.default_rng(seed)
    n_pairs = int(rng.integers(20, 200))
    labels = (rng.random(n_pairs) < rng.uniform(0.05, 0.5)).astype(np.int8)
    labels[:2] = (0, 1)
    exact = np.round(rng.normal(labels * 0.5, 0.3) * rng.integers(4, 64)) / 64.0
    error = 1e-4
    single = (exact + rng.uniform(-0.9, 0.9, n_pairs) * error).astype(np.float32)
    n_impostor = int((labels == 0).sum())
    fars = np.r_[np.arange(0, n_impostor + 1) / n_impostor, (np.arange(n_impostor) + rng.random(n_impostor)) / n_impostor]
    for method in ("nearest", "strict", "interpolate"):
        result = exact_tar_at_far(single, labels, lambda i: exact[i], error, fars, method)
        assert result.tar_at_far == sklearn_tar(labels, exact, fars, method), method


def test_float32_dot_error_bound_covers_float32_scores_of_rounded_unit_vectors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 512))
    x[:100] = np.abs(x[:100])  # positive components: the worst accumulation (partial sums only grow)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact = x[:150] @ x[150:].T
    single = x[:150].astype(np.float32) @ x[150:].astype(np.float32).T
    bound = float32_dot_error_bound(512)
    assert np.abs(single - exact).max() <= bound
    assert bound == pytest.approx(512 * 2.0**-24, rel=0.01)  # the d·u of Higham's bound, no more
    with pytest.raises(ValueError):
        float32_dot_error_bound(2**23)


def test_float64_rescoring_is_insightfaces_expression_bit_for_bit():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((30, 96))
    ids = np.arange(500, 530)
    pairs = ids[rng.integers(0, 30, (3 * FLOAT64_CHUNK + 5, 2))]
    picked = rng.permutation(len(pairs))[: 2 * FLOAT64_CHUNK + 3]
    rows = pairs[picked] - 500
    expected = np.sum(features[rows[:, 0]] * features[rows[:, 1]], -1)  # eval_ijbc.py's float64 scores
    np.testing.assert_array_equal(float64_pair_scores(ids, features, pairs)(picked), expected)
