"""Error bars (issue 10, §2): identity bootstrap, weighted ROC, unresolved FARs, paired intervals."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_curve

from facetrust.errors import InputError
from facetrust.evaluate.bootstrap import (
    SortedScores,
    bootstrap_tar,
    check_paired,
    cluster_design,
    paired_difference,
    percentile_interval,
    replicate_stream,
    unresolved_fars,
)
from facetrust.evaluate.roc import tar_at_far


def test_weighted_roc_is_sklearn_with_sample_weights_and_its_prefix_reads_the_same_tar():
    rng = np.random.default_rng(0)
    labels = (rng.random(5000) < 0.1).astype(np.int8)
    scores = np.round(rng.normal(size=5000) + 2 * labels, 2).astype(np.float32)  # many ties
    sorted_scores = SortedScores(scores, labels)
    fars = [1e-3, 1e-2, 1e-1]
    for _ in range(5):
        weights = rng.integers(0, 3, 5000).astype(float)
        fpr, tpr = sorted_scores.roc(weights)
        ref_fpr, ref_tpr, _ = roc_curve(labels, scores, sample_weight=weights)
        assert np.array_equal(fpr, ref_fpr) and np.array_equal(tpr, ref_tpr)
        short = sorted_scores.roc(weights, far_max=max(fars))
        assert tar_at_far(*short, fars) == tar_at_far(ref_fpr, ref_tpr, fars)


def test_unresolved_fars_are_those_below_ten_impostors():
    assert unresolved_fars([1e-6, 1e-5, 1e-4, 1e-3], 200_000) == ["1e-06", "1e-05"]
    assert unresolved_fars([1e-4], 100_000) == []


def _design(n_subjects=30, per=3, seed=0):
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(n_subjects), per)
    units = np.arange(subject.size)
    i, j = np.triu_indices(units.size, 1)
    labels = (subject[i] == subject[j]).astype(np.int8)
    return cluster_design(np.stack([i, j], 1), labels, dict(zip(units.tolist(), subject.tolist()))), rng


def test_replicates_are_seeded_paired_and_resample_whole_subjects():
    design, _ = _design()
    first = list(replicate_stream(design, 3, seed=5))
    again = list(replicate_stream(design, 3, seed=5))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], list(replicate_stream(design, 1, seed=6))[0])
    genuine = design.labels.astype(bool)
    s1 = design.unit_subject[design.pair_units[:, 0]]
    # every genuine pair of a subject carries that subject's multiplicity
    for s in range(design.n_subjects):
        assert np.unique(first[0][genuine & (s1 == s)]).size == 1
    within = list(replicate_stream(design, 1, seed=5, within=True))[0]
    assert not np.array_equal(within, first[0])


@pytest.mark.parametrize("tar_method", ["nearest", "strict", "interpolate"])
def test_tar_replicates_from_subject_counts_equal_those_of_every_pair_s_weight(tar_method):
    """bootstrap_tar builds only the weights it reads (the top of the score order, class totals from
    distinct factor pairs); its replicates equal the weighted ROC of each replicate's full weights."""
    design, rng = _design(n_subjects=40, per=3, seed=3)
    genuine = design.labels.astype(bool)
    scores = np.round(rng.normal(size=genuine.size) + 1.5 * genuine, 2)  # ties, and prefixes that must grow
    fars = [1e-3, 1e-2, 0.3]
    fast = bootstrap_tar(design, scores, fars, tar_method=tar_method, n_resamples=40, seed=11)
    sorted_scores = SortedScores(scores, design.labels)
    slow = np.array([list(tar_at_far(*sorted_scores.roc(w, far_max=max(fars)), fars, method=tar_method).values())
                     for w in replicate_stream(design, 40, seed=11)])
    assert fast.shape == slow.shape and np.array_equal(fast, slow, equal_nan=True)
    assert np.unique(fast[:, -1]).size > 5  # the replicates differ from one another


def test_subjects_default_to_the_components_of_the_genuine_pairs():
    pairs = np.array([[1, 2], [2, 3], [4, 5], [1, 4], [6, 1]])
    design = cluster_design(pairs, np.array([1, 1, 1, 0, 0]))
    subject = dict(zip([1, 2, 3, 4, 5, 6], design.unit_subject.tolist()))
    assert subject[1] == subject[2] == subject[3] and subject[4] == subject[5]
    assert len({subject[1], subject[4], subject[6]}) == 3
    with pytest.raises(InputError, match="joins two different subjects"):
        cluster_design(pairs, np.array([1, 1, 1, 0, 0]), {1: 0, 2: 1, 3: 1, 4: 2, 5: 2, 6: 3})


def _simulate(rng, n_subjects=60, per=3, sb=0.8, st=0.5, se=0.5, mu=2.5):
    subject = np.repeat(np.arange(n_subjects), per)
    template_effect = rng.normal(0, sb, n_subjects)[subject] + rng.normal(0, st, subject.size)
    i, j = np.triu_indices(subject.size, 1)
    genuine = subject[i] == subject[j]
    gi, gj = i[genuine], j[genuine]
    imp = rng.choice(np.flatnonzero(~genuine), 2000, replace=False)
    scores = np.r_[mu + (template_effect[gi] + template_effect[gj]) / 2 + rng.normal(0, se, gi.size),
                   rng.normal(0, 1, imp.size)]
    pairs = np.r_[np.stack([gi, gj], 1), np.stack([i[imp], j[imp]], 1)]
    labels = np.r_[np.ones(gi.size), np.zeros(imp.size)].astype(np.int8)
    return pairs, labels, scores, dict(enumerate(subject.tolist()))


@pytest.mark.parametrize("within, low, high", [(False, 0.84, 0.99), (True, 0.94, 1.0)])
def test_intervals_cover_a_known_tar_at_about_their_nominal_rate(within, low, high):
    """Genuine scores share subject and template effects; the population TAR at FAR 0.1 is known.
    Subject-level 95 % intervals cover it at about 95 %; resampling templates too over-covers."""
    sb, st, se, mu = 0.8, 0.5, 0.5, 2.5
    truth = 1 - norm.cdf((norm.ppf(0.9) - mu) / np.sqrt(sb**2 + st**2 / 2 + se**2))
    rng = np.random.default_rng(11)
    covered = 0
    for k in range(50):
        pairs, labels, scores, subjects = _simulate(rng)
        replicates = bootstrap_tar(cluster_design(pairs, labels, subjects), scores, [0.1], n_resamples=100, seed=k,
                                   within=within)
        lo, hi = percentile_interval(replicates[:, 0])
        covered += lo <= truth <= hi
    assert low <= covered / 50 <= high


def test_paired_difference_of_identical_rows_is_zero_and_unpaired_files_are_refused(tmp_path):
    from facetrust.evaluate.bootstrap import read_replicates, write_replicates

    design, rng = _design()
    a = rng.random((50, 2))
    assert paired_difference(a[:, 0], a[:, 0]) == (0.0, 0.0)
    write_replicates(tmp_path / "a.npz", fars=[1e-3, 1e-2], tar=a, design=design, n_resamples=50, seed=1, level=0.95)
    write_replicates(tmp_path / "b.npz", fars=[1e-3, 1e-2], tar=a, design=design, n_resamples=50, seed=2, level=0.95)
    first, second = read_replicates(tmp_path / "a.npz"), read_replicates(tmp_path / "b.npz")
    assert first.column("1e-02") == pytest.approx(a[:, 1])
    with pytest.raises(InputError, match="not paired"):
        check_paired(first, second)


def _tar_at_far(scores, labels, far):
    fpr, tpr, _ = roc_curve(labels, scores)
    return tar_at_far(fpr, tpr, [far])[next(iter(tar_at_far(fpr, tpr, [far])))]


def test_pair_set_without_identities_bootstraps_one_cluster_per_pair_at_the_true_spread():
    """Acceptance (issue 18): 3,000 + 3,000 independent pairs (every image its own), TAR@FAR 1e-2.
    The per-pair design's bootstrap SD is within 20 % of the true sampling SD (simulated); splitting
    each impostor pair's images into two clusters (the old default) overstates it."""
    from facetrust.evaluate.bootstrap import PAIR_CLUSTER_SOURCE, pair_set_design

    rng = np.random.default_rng(2026)
    n = 3000
    labels = np.r_[np.ones(n), np.zeros(n)].astype(np.int8)

    def draw():
        return np.r_[rng.normal(2.5, 1.0, n), rng.normal(0.0, 1.0, n)]

    truth_sd = np.std([_tar_at_far(draw(), labels, 1e-2) for _ in range(400)], ddof=1)
    images = np.array([f"set/{i}" for i in range(2 * 2 * n)])  # (0, 1), (2, 3), …: pair k = images 2k, 2k+1
    design = pair_set_design(images, labels)
    assert design.source == PAIR_CLUSTER_SOURCE and design.n_subjects == 2 * n
    old = cluster_design(np.arange(4 * n).reshape(2 * n, 2), labels)  # genuine-pair components
    ours, before = [], []
    for k in range(4):
        scores = draw()
        ours.append(bootstrap_tar(design, scores, [1e-2], n_resamples=300, seed=k)[:, 0].std(ddof=1))
        before.append(bootstrap_tar(old, scores, [1e-2], n_resamples=300, seed=k)[:, 0].std(ddof=1))
    assert abs(np.mean(ours) / truth_sd - 1) < 0.2
    assert np.mean(before) / truth_sd > 1.2


def test_pair_set_design_reads_an_identities_file_and_names_a_missing_image(tmp_path):
    from facetrust.evaluate.bootstrap import pair_set_design

    images = np.array(["a", "b", "c", "d", "a", "e"])
    labels = np.array([1, 0, 0], dtype=np.int8)
    (tmp_path / "ids.csv").write_text("image,identity\na,1\nb,1\nc,2\nd,3\ne,4\n")
    design = pair_set_design(images, labels, tmp_path / "ids.csv")
    assert design.n_subjects == 4 and "ids.csv" in design.source
    (tmp_path / "short.csv").write_text("image,identity\na,1\nb,1\n")
    with pytest.raises(InputError, match="no identity for image 'c'"):
        pair_set_design(images, labels, tmp_path / "short.csv")
