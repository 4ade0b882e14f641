"""Error bars: a two-level bootstrap over identities, and what a TAR at FAR can resolve.

Pairs of a verification protocol are not independent: one subject's templates appear in many
genuine and impostor pairs.  Resampling pairs would treat them as independent and give intervals
that are too narrow, so each bootstrap replicate resamples **subjects** with replacement (a cluster
bootstrap; Davison & Hinkley 1997, §3.8) and, with ``within=True``, also the **templates** inside
every subject with replacement.  A replicate is a vector of integer pair weights:

- genuine pair (t1, t2) of subject s: ``m_s · n_t1 · n_t2``;
- impostor pair of subjects s1 ≠ s2: ``m_s1 · m_s2 · n_t1 · n_t2``;

with ``m_s`` the multiplicity of subject s in the replicate and ``n_t`` that of template t among
its subject's templates (1 when ``within=False``).  Which to use: resampling both stages with
replacement counts the within-subject variation twice (it is already in the spread of the subject
means; Davison & Hinkley's "strategy 2" overestimates the variance), and in a simulation with known
TAR (tests/test_bootstrap.py) its 95 % intervals covered ~99 % of the time, the subject-level ones
~92-95 %.  The default is therefore subjects with all their templates (``within=False``);
``within=True`` is the conservative two-stage option.  The statistic (TAR at FAR, 10-fold accuracy, an EDC area) is recomputed on
the weighted pairs.  Replicate b draws the same weights for every method evaluated on the same
protocol with the same seed, so two methods' replicates are **paired** and the percentile interval
of their difference is the paired bootstrap interval that decides "A beats B".

Who is a subject: a protocol that lists identities (the synthetic IJB set's
``<name>_template_identity.txt``, ``quality.csv`` for the synthetic pair set, an identities CSV
beside a real ``.bin``) says so.  Without a list, an IJB protocol's templates linked by genuine
pairs form one subject (connected components); a **pair set** without a list makes every pair its
own cluster (:func:`pair_cluster_design`; pairs sharing an image merged): splitting an impostor
pair's two images into two clusters would count it as m_s1·m_s2 and inflate the spread (measured:
bootstrap SD 0.043 against a true sampling SD of 0.028 at TAR@FAR 1e-2 with 3,000 + 3,000
independent pairs).  A pair whose two units share a cluster has weight m_s, genuine or not.

A TAR at a FAR below ``RESOLUTION_FACTOR / n_impostor`` rests on fewer than ten impostor pairs
above the threshold (one ROC point at FAR 1e-6 with 2·10⁵ impostors): such FARs are flagged
**unresolved** (kept, never dropped).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, ClassVar, Mapping, Sequence

import numpy as np

from facetrust import options
from facetrust.errors import ConfigError, InputError
from facetrust.formats import far_key, plain_float
from facetrust.settings import SettingsGroup, option

RESOLUTION_FACTOR = 10.0  # a FAR needs at least this many impostor pairs above its threshold
DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95


# ------------------------------------------------------------------------------ resolution


def unresolved_fars(fars: Sequence[float], n_impostor: int, factor: float = RESOLUTION_FACTOR) -> list[str]:
    """FAR keys below ``factor / n_impostor``: fewer than ``factor`` impostor pairs decide their TAR."""
    if n_impostor <= 0:
        return [far_key(far) for far in fars]
    return [far_key(far) for far in fars if float(far) < factor / n_impostor]


# ------------------------------------------------------------------------------ subjects


def subjects_from_genuine_pairs(units: np.ndarray, pairs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Subject index per unit (template or image): connected components of the genuine-pair graph."""
    import scipy.sparse as sp  # 0.1 s to import (numpy.f2py, .testing, .ma with it): only the replicates need it
    from scipy.sparse import csgraph

    index = {value: i for i, value in enumerate(units.tolist())}
    genuine = pairs[np.asarray(labels).astype(bool)]
    rows = np.array([index[v] for v in genuine[:, 0].tolist()], dtype=np.int64)
    cols = np.array([index[v] for v in genuine[:, 1].tolist()], dtype=np.int64)
    graph = sp.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(units.size, units.size))
    _, component = csgraph.connected_components(graph, directed=False)
    return component.astype(np.int64)


@dataclass(frozen=True)
class ClusterDesign:
    """Who belongs to whom: pairs of units (templates or images), each unit in one subject.

    ``pair_units`` (P, 2) unit indices 0..U-1; ``unit_subject`` (U,) subject indices 0..S-1;
    ``labels`` (P,) 1 = genuine; ``source`` says where the subjects came from.
    """

    pair_units: np.ndarray
    unit_subject: np.ndarray
    labels: np.ndarray
    source: str

    @property
    def n_subjects(self) -> int:
        return int(self.unit_subject.max()) + 1 if self.unit_subject.size else 0

    @cached_property
    def weight_index(self) -> tuple[np.ndarray, np.ndarray]:
        """``(first, second)`` (P,) indices into a replicate's subject counts with a 1 appended
        (index ``n_subjects``): a pair's weight is ``counts[first] * counts[second]``, and a pair
        inside one cluster (every genuine pair) has ``second = n_subjects``, so it counts ``m_s``."""
        s1 = self.unit_subject[self.pair_units[:, 0]]
        s2 = self.unit_subject[self.pair_units[:, 1]]
        inside = self.labels.astype(bool) | (s1 == s2)
        return s1.astype(np.intp), np.where(inside, self.n_subjects, s2).astype(np.intp)

    def digest(self) -> str:
        """A short hash of the design: two replicate files are paired only if their designs agree."""
        h = hashlib.sha256()
        for array in (self.pair_units, self.unit_subject, self.labels):
            h.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


def cluster_design(pairs: np.ndarray, labels: np.ndarray, unit_subjects: Mapping[int, int] | None = None,
                   *, source: str | None = None) -> ClusterDesign:
    """The design of a protocol whose pairs name units (template ids, image rows).

    ``unit_subjects`` maps a unit to its subject; None derives subjects from the genuine pairs.
    InputError when a genuine pair joins two different listed subjects, or a unit has no subject.
    """
    pairs = np.asarray(pairs, dtype=np.int64)
    labels = np.asarray(labels).astype(np.int8)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or labels.shape != (pairs.shape[0],):
        raise InputError(f"bootstrap: pairs {pairs.shape} and labels {labels.shape} do not match")
    units, inverse = np.unique(pairs, return_inverse=True)
    pair_units = inverse.reshape(pairs.shape)
    if unit_subjects is None:
        subject = subjects_from_genuine_pairs(units, pairs, labels)
        source = source or "connected components of the genuine pairs"
    else:
        missing = [int(u) for u in units.tolist() if int(u) not in unit_subjects]
        if missing:
            raise InputError(f"bootstrap: unit {missing[0]} has no subject in the identity list")
        raw = np.array([unit_subjects[int(u)] for u in units.tolist()])
        _, subject = np.unique(raw, return_inverse=True)
        genuine = labels.astype(bool)
        crossed = subject[pair_units[genuine, 0]] != subject[pair_units[genuine, 1]]
        if crossed.any():
            bad = pairs[genuine][int(np.flatnonzero(crossed)[0])]
            raise InputError(f"bootstrap: genuine pair {bad.tolist()} joins two different subjects")
        source = source or "identity list"
    return ClusterDesign(pair_units, subject.astype(np.int64), labels, source)


PAIR_CLUSTER_SOURCE = "one cluster per pair (no identity list; pairs sharing an image merged)"


def pair_cluster_design(pairs: np.ndarray, labels: np.ndarray) -> ClusterDesign:
    """The design of a pair set without identities: each pair its own cluster (units linked by any
    pair, genuine or impostor, form one cluster)."""
    import scipy.sparse as sp  # 0.1 s to import (numpy.f2py, .testing, .ma with it): only the replicates need it
    from scipy.sparse import csgraph

    pairs = np.asarray(pairs, dtype=np.int64)
    labels = np.asarray(labels).astype(np.int8)
    units, inverse = np.unique(pairs, return_inverse=True)
    pair_units = inverse.reshape(pairs.shape)
    graph = sp.coo_matrix((np.ones(pairs.shape[0]), (pair_units[:, 0], pair_units[:, 1])),
                          shape=(units.size, units.size))
    _, component = csgraph.connected_components(graph, directed=False)
    return ClusterDesign(pair_units, component.astype(np.int64), labels, PAIR_CLUSTER_SOURCE)


def pair_set_design(images: np.ndarray, labels: np.ndarray, identities_csv=None, path=None) -> ClusterDesign:
    """Bootstrap design of a pair set (images ordered (0, 1), (2, 3), …): units = distinct image
    names; subjects from ``identities_csv`` (columns ``image``, ``identity``: the synthetic
    ``quality.csv``, or a list made for a real ``.bin``) or, without one, one cluster per pair."""
    import pandas as pd

    names, unit = np.unique(np.asarray(images).astype(str), return_inverse=True)
    pairs = unit.reshape(-1, 2)
    if identities_csv is None:
        return pair_cluster_design(pairs, labels)
    from facetrust.input_files import refuse_huge_exponents

    refuse_huge_exponents(identities_csv)  # pandas' parser crashes on a 5-digit exponent
    table = pd.read_csv(identities_csv)
    for column in ("image", "identity"):
        if column not in table.columns:
            raise InputError(f"{identities_csv}: missing column {column!r} (an identities file has image, identity)")
    known = dict(zip(table["image"].astype(str), table["identity"]))
    missing = [n for n in names.tolist() if n not in known]
    if missing:
        raise InputError(f"{identities_csv}: no identity for image {str(missing[0])!r}" + (f" of {path}" if path else ""))
    raw = {i: str(known[n]) for i, n in enumerate(names.tolist())}
    codes = {value: k for k, value in enumerate(sorted(set(raw.values())))}
    return cluster_design(pairs, labels, {i: codes[v] for i, v in raw.items()},
                          source=f"identities from {Path(identities_csv).name}")


def replicate_weights(design: ClusterDesign, rng: np.random.Generator, within: bool = False) -> np.ndarray:
    """One bootstrap replicate: integer pair weights (float64, P) from resampled subjects (and, with
    ``within``, the units inside them)."""
    n_subjects = design.n_subjects
    # a pair inside one cluster (every genuine pair; an impostor pair of a per-pair cluster) counts
    # m_s, any other m_s1 * m_s2 (integers: exact in float64, in any order)
    first, second = design.weight_index
    counts = _subject_counts(n_subjects, rng)
    subject_weight = counts.take(first)
    subject_weight *= counts.take(second)
    if not within:
        return subject_weight
    u1, u2 = design.pair_units[:, 0], design.pair_units[:, 1]
    # Units of each subject resampled with replacement: slot j of subject s picks a random member of s.
    order = np.argsort(design.unit_subject, kind="stable")
    sizes = np.bincount(design.unit_subject, minlength=n_subjects)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    slot_subject = design.unit_subject[order]
    picked = order[starts[slot_subject] + (rng.random(order.size) * sizes[slot_subject]).astype(np.int64)]
    unit_count = np.bincount(picked, minlength=design.unit_subject.size).astype(np.float64)
    return subject_weight * unit_count[u1] * unit_count[u2]


def _subject_counts(n_subjects: int, rng: np.random.Generator) -> np.ndarray:
    """How often each subject is drawn in one replicate (float64), with a 1 appended (the factor of a
    pair inside one cluster, :attr:`ClusterDesign.weight_index`)."""
    subject_count = np.bincount(rng.integers(0, n_subjects, n_subjects), minlength=n_subjects)
    return np.r_[subject_count.astype(np.float64), 1.0]


def _replicate_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0xB007]))


def replicate_stream(design: ClusterDesign, n_resamples: int, seed: int, within: bool = False):
    """The ``n_resamples`` replicates' weights, in order, from one seeded generator (same seed and
    design → same weights, which is what pairs two methods' replicates)."""
    if n_resamples < 1:
        raise ConfigError(f"evaluate.bootstrap.n_resamples: {n_resamples} must be >= 1")
    rng = _replicate_rng(seed)
    for _ in range(n_resamples):
        yield replicate_weights(design, rng, within)


# ------------------------------------------------------------------------------ weighted ROC


class SortedScores:
    """Scores sorted once (descending, stable) so each replicate's ROC is a weighted cumulative sum."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray):
        scores = np.asarray(scores, dtype=np.float64)
        self.order = np.ascontiguousarray(np.argsort(scores, kind="mergesort")[::-1])
        self.scores = scores[self.order]
        self.labels = np.asarray(labels).astype(bool)
        self.genuine = self.labels[self.order]
        # Last position of every run of equal scores, and impostors seen up to each position.
        self.group_ends = np.r_[np.flatnonzero(np.diff(self.scores)), self.scores.size - 1]
        self.impostor_cumsum = np.cumsum(~self.genuine)

    def _prefix(self, impostor_fraction: float) -> int:
        """Length of the shortest prefix ending on a score group with that fraction of the impostors."""
        needed = int(np.ceil(impostor_fraction * self.impostor_cumsum[-1])) + 16
        position = int(np.searchsorted(self.impostor_cumsum, needed, side="left"))
        if position >= self.scores.size:
            return self.scores.size
        return int(self.group_ends[np.searchsorted(self.group_ends, position, side="left")]) + 1

    def _curve(self, w: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """The curve's points over the first ``length`` pairs in score order, ``w`` their weights."""
        complete = length >= self.scores.size
        kept = np.flatnonzero(w)  # pairs of weight 0 are left out; one index serves the three arrays
        scores, genuine, weight = self.scores.take(kept), self.genuine.take(kept), w.take(kept)
        ends = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
        tps = np.cumsum(weight * genuine)[ends]
        fps = np.cumsum(weight)[ends] - tps  # integer weights: exact, the impostors' own cumulative sum
        if not complete:  # the last point's drop_intermediate fate needs the next group: leave it out
            inner = np.logical_or(np.diff(fps, 2), np.diff(tps, 2)) if tps.size > 2 else np.zeros(0, bool)
            chosen = np.r_[True, inner][: max(tps.size - 1, 0)]
            return fps[:-1][chosen], tps[:-1][chosen], False
        if tps.size > 2:
            inner = np.logical_or(np.diff(fps, 2), np.diff(tps, 2))
            chosen = np.r_[True, inner, True]
            tps, fps = tps[chosen], fps[chosen]
        return fps, tps, True

    def roc(self, weights: np.ndarray, far_max: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(fpr, tpr)`` equal to ``sklearn.metrics.roc_curve(labels, scores, sample_weight=weights)``
        (drop_intermediate=True); pairs of weight 0 are left out, as sklearn does.

        With ``far_max`` only the start of the curve is built: points up to two distinct FPRs above
        ``far_max``, enough for any TAR read at a FAR ≤ ``far_max`` (nothing later can be nearer).
        """
        w = np.asarray(weights, dtype=np.float64)
        # bootstrap weights are integers, so these sums are exact in any order
        total_genuine = float(np.dot(w, self.labels))
        total_impostor = float(w.sum()) - total_genuine
        return self.roc_of_prefix(lambda length: w.take(self.order[:length]), total_genuine, total_impostor,
                                  far_max)

    def roc_of_prefix(self, prefix_weights: Callable[[int], np.ndarray], total_genuine: float,
                      total_impostor: float, far_max: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`roc` from ``prefix_weights(length)``, the weights of the first ``length`` pairs in
        score order, and the two classes' total weights: a caller that can make those without the
        weight of every pair (:func:`bootstrap_tar`) never builds it."""
        fraction = 1.5 * far_max if far_max is not None else 1.0
        while True:
            length = self._prefix(fraction) if fraction < 1.0 else self.scores.size
            fps, tps, complete = self._curve(prefix_weights(length), length)
            fpr = np.r_[0.0, fps] / total_impostor
            above = fpr[fpr > (far_max or 0.0)]
            if complete or (above.size >= 2 and above[-1] > above[0]):
                return fpr, np.r_[0.0, tps] / total_genuine
            fraction *= 2.0


class _SubjectWeights:
    """A replicate's pair weights made from its subject counts only where they are read: the pairs at
    the top of the score order, and each class's total from the distinct (first, second) factor
    pairs with their multiplicities (IJB: 120 k instead of 403 k pairs).  The values equal
    :func:`replicate_weights`' (products of the same two integers; integer sums are exact)."""

    def __init__(self, design: ClusterDesign, sorted_scores: SortedScores):
        first, second = design.weight_index
        self.first, self.second = first[sorted_scores.order], second[sorted_scores.order]
        genuine = design.labels.astype(bool)
        combined = (first.astype(np.int64) * (design.n_subjects + 1) + second) * 2 + genuine
        combos, multiplicity = np.unique(combined, return_counts=True)
        self.combo_genuine = (combos & 1).astype(bool)
        combos >>= 1
        self.combo_first, self.combo_second = combos // (design.n_subjects + 1), combos % (design.n_subjects + 1)
        self.multiplicity = multiplicity.astype(np.float64)

    def totals(self, counts: np.ndarray) -> tuple[float, float]:
        weight = counts.take(self.combo_first) * counts.take(self.combo_second) * self.multiplicity
        total_genuine = float(weight[self.combo_genuine].sum())
        return total_genuine, float(weight.sum()) - total_genuine

    def prefix(self, counts: np.ndarray, length: int) -> np.ndarray:
        weight = counts.take(self.first[:length])
        weight *= counts.take(self.second[:length])
        return weight


# ------------------------------------------------------------------------------ intervals


def percentile_interval(replicates: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The (lo, hi) percentile interval of finite replicates (NaN, NaN when there are none)."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_statistic(design: ClusterDesign, statistic: Callable[[np.ndarray], np.ndarray], *,
                        n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, progress: bool = False,
                        within: bool = False) -> np.ndarray:
    """(n_resamples, K) replicates of ``statistic(weights) -> K values`` over the design's replicates."""
    from tqdm import tqdm

    rows = [np.atleast_1d(np.asarray(statistic(w), dtype=np.float64))
            for w in tqdm(replicate_stream(design, n_resamples, seed, within), total=n_resamples,
                          desc="bootstrap", unit="replicate", disable=not progress)]
    return np.vstack(rows)


def bootstrap_tar(design: ClusterDesign, scores: np.ndarray, fars: Sequence[float], *, tar_method: str = "nearest",
                  n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, progress: bool = False,
                  within: bool = False) -> np.ndarray:
    """(n_resamples, len(fars)) TAR replicates, each read off the weighted ROC with ``tar_method``."""
    from facetrust.evaluate.roc import tar_at_far

    sorted_scores = SortedScores(scores, design.labels)
    if within:
        def statistic(weights: np.ndarray) -> np.ndarray:
            fpr, tpr = sorted_scores.roc(weights, far_max=max(fars))
            return np.array(list(tar_at_far(fpr, tpr, fars, method=tar_method).values()))

        return bootstrap_statistic(design, statistic, n_resamples=n_resamples, seed=seed, progress=progress,
                                   within=within)
    # Subjects only: the same replicates from the same generator, without the weight of every pair.
    from tqdm import tqdm

    if n_resamples < 1:
        raise ConfigError(f"evaluate.bootstrap.n_resamples: {n_resamples} must be >= 1")
    weights = _SubjectWeights(design, sorted_scores)
    rng = _replicate_rng(seed)
    rows = []
    for _ in tqdm(range(n_resamples), desc="bootstrap", unit="replicate", disable=not progress):
        counts = _subject_counts(design.n_subjects, rng)
        fpr, tpr = sorted_scores.roc_of_prefix(lambda length: weights.prefix(counts, length), *weights.totals(counts),
                                               far_max=max(fars))
        rows.append(np.array(list(tar_at_far(fpr, tpr, fars, method=tar_method).values()), dtype=np.float64))
    return np.vstack(rows)


def interval_table(fars: Sequence[float], replicates: np.ndarray, level: float = DEFAULT_LEVEL) -> dict:
    """``{far_key: [lo, hi]}`` percentile intervals of TAR replicates (columns = ``fars``)."""
    return {far_key(far): [plain_float(v) for v in percentile_interval(replicates[:, j], level)]
            for j, far in enumerate(fars)}


# ------------------------------------------------------------------------------ replicate files


def write_replicates(path, *, fars: Sequence[float], tar: np.ndarray, design: ClusterDesign, n_resamples: int,
                     seed: int, level: float, extra: Mapping[str, np.ndarray] | None = None) -> None:
    """Save TAR replicates (``.npz``: ``fars``, ``tar`` (B, F), ``seed``, ``n_resamples``, ``level``,
    ``design_digest``, ``unit_source``; plus ``extra`` arrays) atomically."""
    from facetrust.io import atomic_path

    arrays = {"fars": np.asarray(fars, dtype=np.float64), "tar": np.asarray(tar, dtype=np.float64),
              "seed": np.int64(seed), "n_resamples": np.int64(n_resamples), "level": np.float64(level),
              "design_digest": np.array(design.digest()), "unit_source": np.array(design.source)}
    arrays.update(extra or {})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


@dataclass(frozen=True)
class Replicates:
    """A replicate file as read back: FAR keys, the (B, F) TAR replicates, and what pairs them."""

    path: str
    far_keys: list[str]
    tar: np.ndarray
    seed: int
    level: float
    digest: str
    arrays: dict

    def column(self, key: str) -> np.ndarray:
        return self.tar[:, self.far_keys.index(key)]


def read_replicates(path) -> Replicates:
    """Read a replicate ``.npz`` without pickles; InputError naming the file and the missing key."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: bootstrap replicate file not found")
    from facetrust.npz import read_npz  # declared sizes checked, no pickles, errors naming the file

    arrays = read_npz(path, what="bootstrap replicate file")
    for key in ("fars", "tar", "seed", "level", "design_digest"):
        if key not in arrays:
            raise InputError(f"{path}: missing key {key!r} (not a bootstrap replicate file)")
    return Replicates(str(path), [far_key(f) for f in arrays["fars"]], arrays["tar"], int(arrays["seed"]),
                      float(arrays["level"]), str(arrays["design_digest"]), arrays)


def paired_difference(a: np.ndarray, b: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Percentile interval of the paired replicate differences ``a - b`` (same replicate index =
    same resampled subjects and templates)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"paired bootstrap: {a.shape[0]} and {b.shape[0]} replicates differ in number")
    return percentile_interval(a - b, level)


def check_paired(first: Replicates, second: Replicates) -> None:
    """InputError unless the two replicate files were drawn with the same seed on the same design."""
    if first.digest != second.digest or first.seed != second.seed or first.tar.shape[0] != second.tar.shape[0]:
        raise InputError(f"{first.path} and {second.path}: bootstrap replicates are not paired "
                         "(different protocol, seed or number of resamples)")


# ------------------------------------------------------------------------------ metrics files


@dataclass(frozen=True)
class BootstrapSettings(SettingsGroup):
    """How many replicates, which seed, which interval level, where the replicates go, and whether
    templates are resampled within subjects; params ``evaluate.bootstrap`` (the seed: the top-level
    ``seed``).  On the command line ``--bootstrap [N]`` turns the error bars on (N replicates,
    default ``n_resamples``); without it there are none (:meth:`requested`)."""

    SECTION: ClassVar[tuple[str, ...]] = ("evaluate", "bootstrap")
    n_resamples: int = option(DEFAULT_RESAMPLES, "--bootstrap", "bootstrap replicates over subjects; without the "
                                                                "flag none", type=options.integer(0, 1_000_000),
                              nargs="?", const=DEFAULT_RESAMPLES, metavar="N")
    seed: int = option(0, "--seed", "seed of the bootstrap (and EDC's random rankings)", type=options.seed)
    level: float = option(DEFAULT_LEVEL, "--ci-level", "bootstrap percentile interval level", type=options.level)
    replicates_out: object = option(None, "--replicates", "bootstrap replicates .npz to write (paired comparisons "
                                                          "in reports)", metavar="FILE")
    within: bool = option(False, "--bootstrap-within", "also resample templates within subjects (two-stage, "
                                                       "conservative)")

    @classmethod
    def add_arguments(cls, parser, only: Sequence[str] | None = None) -> None:
        super().add_arguments(parser, only)
        parser.set_defaults(n_resamples=0)  # no flag, no bootstrap

    @classmethod
    def from_params(cls, params: Mapping, **values):
        return super().from_params(params, **{"seed": int(params.get("seed", 0)), **values})

    @classmethod
    def requested(cls, args) -> "BootstrapSettings | None":
        """The settings of ``--bootstrap N`` (None without it, or with N = 0)."""
        if not getattr(args, "n_resamples", 0):
            return None
        settings = cls.from_args(args)
        replicates = settings.replicates_out
        return dataclasses.replace(settings, replicates_out=Path(replicates) if replicates else None)


def unit_description(design: ClusterDesign, within: bool) -> str:
    """What a replicate resamples, for the metrics file."""
    return f"{design.source}; " + ("templates within subjects resampled too" if within
                                   else "each drawn subject with all its templates")


def ijb_design(ijb_dir, protocol) -> ClusterDesign:
    """The subject/template design of an IJB protocol: the set's identity list when it has one,
    else the genuine-pair components."""
    from facetrust.data.ijb import read_template_identities

    identities = read_template_identities(ijb_dir, protocol.name)
    source = (f"subjects from {protocol.name}_template_identity.txt" if identities
              else "subjects = templates linked by genuine pairs")
    return cluster_design(protocol.pairs, protocol.labels, identities, source=source)


def resolution_fields(fars: Sequence[float], n_impostor: int) -> dict:
    """``unresolved_fars`` and the smallest resolved FAR, for a metrics file."""
    return {"unresolved_fars": unresolved_fars(fars, n_impostor),
            "min_resolved_far": plain_float(RESOLUTION_FACTOR / n_impostor) if n_impostor else None}


def tar_interval_fields(design: ClusterDesign, scores: np.ndarray, fars: Sequence[float], tar_method: str,
                        settings: BootstrapSettings, progress: bool = True) -> dict:
    """Bootstrap TAR at ``fars``: the metrics-file fields (``tar_at_far_ci``, ``bootstrap``) after
    writing the replicates to ``settings.replicates_out`` (when given)."""
    replicates = bootstrap_tar(design, scores, fars, tar_method=tar_method, n_resamples=settings.n_resamples,
                               seed=settings.seed, progress=progress, within=settings.within)
    if settings.replicates_out is not None:
        write_replicates(settings.replicates_out, fars=fars, tar=replicates, design=design,
                         n_resamples=settings.n_resamples, seed=settings.seed, level=settings.level)
    from facetrust.evaluate.metrics import METRICS

    return {METRICS.get("tar_at_far").interval: interval_table(fars, replicates, settings.level),
            "bootstrap": {"n_resamples": settings.n_resamples, "seed": settings.seed, "level": settings.level,
                          "unit": unit_description(design, settings.within), "n_subjects": design.n_subjects,
                          "design_digest": design.digest(),
                          "replicates": None if settings.replicates_out is None else str(settings.replicates_out)}}


# ---------------------------------------------------------------- small-sample intervals
# The explanation experiments' intervals, beside the verification bootstrap so that every resampling
# of the package lives in one module: a stratified percentile interval of a statistic of item indices
# (faithfulness, localisation, sanity), a cluster interval of a mean over classes (inversion) and a
# crossed seeds x folds interval (xCos). Each draws from numpy.random.default_rng(seed) only.


def bootstrap_ci(statistic: Callable[[np.ndarray], float], groups: Sequence[np.ndarray], *, seed: int = 0,
                 n_boot: int = 1000, level: float = 0.95) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``statistic(indices)`` on all items and its percentile interval
    over ``n_boot`` resamples; each array of ``groups`` (item indices) is resampled with
    replacement within itself (stratified), from ``numpy.random.default_rng(seed)``."""
    if not 0.0 < level < 1.0 or n_boot < 1:
        raise ConfigError(f"bootstrap: need 0 < level < 1 and n_boot >= 1, got {level}, {n_boot}")
    groups = [np.asarray(g, dtype=np.int64) for g in groups if len(g)]
    if not groups:
        raise InputError("bootstrap: no items to resample")
    rng = np.random.default_rng(seed)
    estimate = float(statistic(np.concatenate(groups)))
    values = np.array([statistic(np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups]))
                       for _ in range(n_boot)], dtype=np.float64)
    tail = (1.0 - level) / 2.0
    low, high = np.nanquantile(values, [tail, 1.0 - tail])
    return estimate, float(low), float(high)


def class_bootstrap(values: np.ndarray, labels: np.ndarray, *, seed: int, n_boot: int, level: float = 0.95) -> list[float]:
    """``[mean, low, high]``: the mean of per-image ``values`` and its percentile interval, resampling
    whole classes (cluster bootstrap; equal images per class, so the mean of class means)."""
    classes = np.unique(labels)
    means = np.array([values[labels == c].mean() for c in classes])
    rng = np.random.default_rng(seed)
    draws = means[rng.integers(0, means.size, (n_boot, means.size))].mean(1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return [float(means.mean()), float(low), float(high)]


def crossed_bootstrap(differences: np.ndarray, *, seed: int = 0, n_boot: int = 2000, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of a (seeds, folds) array, resampling seeds and folds independently."""
    rng = np.random.default_rng(seed)
    s, k = differences.shape
    draws = np.empty(n_boot)
    for b in range(n_boot):
        rows, cols = rng.integers(0, s, s), rng.integers(0, k, k)
        draws[b] = differences[np.ix_(rows, cols)].mean()
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return float(differences.mean()), float(low), float(high)
