"""Pair scores of template features: the dot product of the two templates of every pair.

Three methods give the same float32 dot products:

- ``"gather"``: gathers both features of ``chunk`` pairs at a time and takes batched dot products;
  memory-bound (IJB-C: 15.7 M pairs × 2 × 2 KB = 64 GB moved for 16 GFLOP).
- ``"gram"``: for a block of templates at a time, their dot products with *all* templates by one
  matrix product (BLAS sgemm), then the pairs are picked out: T²·d flops (IJB-C: 548 GFLOP).
- ``"reuse"``: only the templates that pairs use.  Pairs are grouped by their first template (the
  side with fewer distinct templates: IJB-C's 3,531 enrolment templates); the second templates
  are gathered once, and for a chunk of first templates one sgemm scores them against all of
  those, after which the chunk's pairs are picked out of the slab.  IJB-C: 3,531 × 19,593 × 512
  × 2 = 71 GFLOP at BLAS speed, 4.4× the 16 GFLOP floor of the 15.7 M dot products but no
  gathers per pair; since pairs are random, no finer blocking skips work.

OpenBLAS's SkylakeX (AVX-512) kernels compute every entry of a large product as the same sequence
of fused multiply-adds over d, whatever the block's shape, so there ``"gram"`` and ``"reuse"``
agree bit for bit; its Haswell (AVX2) kernels, which the pipeline pins (:mod:`facetrust.float_path`),
do not, and the two agree to the rounding of one d-term sum (tested).  Which method runs depends
only on the sizes, so a run gives the same bytes on every machine with the same kernels.  Small
products (m·n·d up to about 10⁶, or one row or column) go to other kernels that sum in another
order, so ``"reuse"`` pads its blocks with spare templates to at least :data:`MIN_PRODUCT` flops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from facetrust.errors import ConfigError, InputError

PAIR_CHUNK = 16384  # pairs per gather batch: 2 × 16384 × 512 float32 = 64 MiB
FLOAT64_CHUNK = 256  # pairs per float64 rescoring batch: buffers stay in cache, no fresh pages
GRAM_SLAB_BYTES = 64 << 20  # one block × T slab of template dot products
METHODS = ("auto", "gram", "reuse", "gather")
MIN_PRODUCT = 1 << 22  # m·n·d of every reuse product: above OpenBLAS's small-matrix kernels
# "auto" gathers when the used-template grid has more cells than this per pair: a gathered pair
# (two 2 KB rows from memory) costs about as much as 100 grid cells of sgemm (measured at IJB-C
# scale: 1.05 µs per gathered pair, 10.5 ps per cell; benchmarks/README.md "Scaling").
GATHER_GRID_RATIO = 100
_LUT_MAX_ID = 1 << 22  # integer ids below this are looked up through a table (at most 32 MiB)


def template_rows(template_ids: np.ndarray, wanted: np.ndarray, what: str = "pairs") -> np.ndarray:
    """Row of ``template_ids`` holding each entry of ``wanted`` (int32 or intp, same shape).

    Integer ids use a lookup table (or a binary search when ids are huge); other ids a hash
    index.  Raises :class:`InputError` naming the first pair whose template has no feature.
    """
    template_ids = np.asarray(template_ids)
    wanted = np.asarray(wanted)
    if template_ids.dtype.kind in "iu" and wanted.dtype.kind in "iu" and template_ids.size:
        rows = _integer_rows(template_ids, wanted)
    else:
        import pandas as pd

        rows = pd.Index(template_ids).get_indexer(wanted.ravel()).reshape(wanted.shape)
    if (rows < 0).any():
        bad = int(np.flatnonzero((rows < 0).reshape(len(rows), -1).any(axis=1))[0])
        missing = wanted[bad][rows[bad] < 0].flat[0] if wanted.ndim > 1 else wanted[bad]
        raise InputError(f"{what}: pair {bad} names template {missing} that has no feature")
    return rows


def _integer_rows(template_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    low, high = int(template_ids.min()), int(template_ids.max())
    if 0 <= low and high < max(_LUT_MAX_ID, 4 * template_ids.size):
        # int32 rows halve the memory of IJB-C's 15.7 M × 2 lookups.
        table = np.full(high + 1, -1, dtype=np.int32 if template_ids.size < 2**31 else np.intp)
        table[template_ids] = np.arange(template_ids.size)
        if wanted.size == 0 or (int(wanted.min()) >= 0 and int(wanted.max()) <= high):  # no mask of 2P flags
            return table[wanted]
        inside = (wanted >= 0) & (wanted <= high)
        return np.where(inside, table[np.clip(wanted, 0, high)], -1)
    order = np.argsort(template_ids, kind="stable")
    sorted_ids = template_ids[order]
    position = np.clip(np.searchsorted(sorted_ids, wanted), 0, sorted_ids.size - 1)
    return np.where(sorted_ids[position] == wanted, order[position], -1)


def pair_scores(template_ids: np.ndarray, features: np.ndarray, pairs: np.ndarray, *, chunk: int = PAIR_CHUNK,
                method: str = "auto", progress: bool = False, plan: "ScorePlan | None" = None) -> np.ndarray:
    """Dot product of the two template features of every pair, (P,) float32.

    ``template_ids`` (T,) names the rows of ``features`` (T, D); ``pairs`` (P, 2) holds template
    ids.  ``method`` is one of :data:`METHODS` (module docstring); ``"auto"`` takes ``"gather"``
    when the grid of templates used on the two sides has more than :data:`GATHER_GRID_RATIO` cells
    per pair (few pairs per template), else ``"gram"`` when all templates fit one slab, else
    ``"reuse"``.  ``plan``: :func:`score_plan` of these ``template_ids`` and ``pairs`` (for example
    read back from a cache); the scores are the same bytes with or without it.
    """
    if plan is not None and method in ("auto", "reuse"):
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.shape[0] != plan.n_templates:
            raise InputError(f"pair scores: the plan is for {plan.n_templates} templates, the features have "
                             f"{features.shape[0]}")
        return _reuse_run(features, plan, progress)
    if method not in METHODS:
        raise ConfigError(f"pair_scores method: {method!r} is not one of {list(METHODS)}")
    features = np.ascontiguousarray(features, dtype=np.float32)
    n_templates = features.shape[0]
    pairs, rows1, rows2, used, turned = _oriented_pairs(template_ids, pairs, n_templates)
    if method == "auto":
        method = _auto_method(used, pairs.shape[0], n_templates)
    if method == "gather":
        return _gather_scores(features, *_turned(rows1, rows2, turned), chunk, progress)
    if method == "gram":
        return _gram_scores(features, *_turned(rows1, rows2, turned), progress)
    return _reuse_scores(features, rows1, rows2, progress, used, turned)


def _oriented_pairs(template_ids, pairs, n_templates: int):
    """``(pairs, rows1, rows2, used, turned)``: the (P, 2) ``pairs`` checked, their template rows read as
    :func:`_oriented` reads them."""
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise InputError(f"pairs must be (P, 2), got {pairs.shape}")
    rows = template_rows(template_ids, pairs)
    return (pairs, *_oriented(rows[:, 0], rows[:, 1], n_templates))


def _auto_method(used, n_pairs: int, n_templates: int) -> str:
    grid = np.count_nonzero(used[0]) * np.count_nonzero(used[1])
    if grid > GATHER_GRID_RATIO * n_pairs:
        return "gather"
    return "gram" if _gram_block(n_templates) >= n_templates else "reuse"


def score_plan(template_ids: np.ndarray, pairs: np.ndarray) -> "ScorePlan | None":
    """How :func:`pair_scores` (``method="auto"``) reads ``pairs`` against ``template_ids``, when it takes
    ``"reuse"``: the template rows of every pair, oriented and grouped by the template read first
    (what :func:`_oriented` and :func:`_score_groups` compute).  It depends on the protocol's pairs and
    template ids only, never on the features, so a protocol scored for many models is planned once
    (``evaluate.score_plan_cache``).  None when ``"auto"`` would take ``"gather"`` or ``"gram"``."""
    n_templates = np.asarray(template_ids).size
    pairs, rows1, rows2, used, turned = _oriented_pairs(template_ids, pairs, n_templates)
    if _auto_method(used, pairs.shape[0], n_templates) != "reuse":
        return None
    return _reuse_plan(rows1, rows2, n_templates, used, turned)


def _oriented(rows1: np.ndarray, rows2: np.ndarray, n_templates: int):
    """``(rows1, rows2, (uses as first, uses as second), turned)``: each pair is to be read turned
    round, its second template first, when its second template is one listed first at least as
    often as second and its first template is not (``turned``: which pairs, None when none).
    ``rows1`` and ``rows2`` come back as given (:func:`_turned` writes the turned arrays out); the
    counts are those of the turned pairs.

    A protocol that lists some pairs in the other order (a repeated pair swapped) puts templates of
    the large side into the small side's column: IJB-C's 3,531 enrolment templates become ~23,000
    in both columns, and the reuse grid grows 7×.  A dot product does not depend on the order of
    its two vectors; a pair computed the other way round goes through the product's other operand,
    which on some BLAS kernels (Haswell) rounds its float32 sum differently in the last bit.
    Protocols listed in one order (the synthetic benchmark's, InsightFace's files) are not changed.
    The turned arrays are not written out here: at IJB-C's 15.7 M pairs (1 % turned) the two
    ``np.where`` copies and their counts were 0.11 s, and the scoring needs only the turned few."""
    uses = _counts(rows1, n_templates), _counts(rows2, n_templates)
    if not ((uses[0] > 0) & (uses[1] > 0)).any():  # no template in both columns: none to turn
        return rows1, rows2, uses, None
    first_side = uses[0] >= uses[1]
    swap = first_side[rows2] & ~first_side[rows1]
    if not swap.any():
        return rows1, rows2, uses, None
    moved_firsts, moved_seconds = _counts(rows1[swap], n_templates), _counts(rows2[swap], n_templates)
    return rows1, rows2, (uses[0] - moved_firsts + moved_seconds, uses[1] - moved_seconds + moved_firsts), swap


def _turned(rows1: np.ndarray, rows2: np.ndarray, turned: np.ndarray | None):
    """The pairs with those marked ``turned`` read the other way round (new arrays; as given when None)."""
    if turned is None:
        return rows1, rows2
    return np.where(turned, rows2, rows1), np.where(turned, rows1, rows2)


COUNT_CHUNK = 1 << 20  # rows per bincount: its intp copy of the rows stays in cache and is reused


def _counts(rows: np.ndarray, n_templates: int) -> np.ndarray:
    """``np.bincount(rows, minlength=n_templates)``, a chunk at a time: bincount first copies its
    input to intp, which for IJB-C's 15.7 M int32 rows is 125 MB of fresh pages per call."""
    counts = np.zeros(n_templates, dtype=np.intp)
    for start in range(0, rows.size, COUNT_CHUNK):
        counts += np.bincount(rows[start : start + COUNT_CHUNK], minlength=n_templates)
    return counts


def _gram_block(n_templates: int) -> int:
    return max(1, min(n_templates, GRAM_SLAB_BYTES // (4 * max(n_templates, 1))))


def _gather_scores(features, rows1, rows2, chunk: int, progress: bool) -> np.ndarray:
    scores = np.empty(rows1.size, dtype=np.float32)
    for start in tqdm(range(0, rows1.size, chunk), desc="pair scores", unit="chunk", disable=not progress):
        stop = start + chunk
        first, second = features[rows1[start:stop]], features[rows2[start:stop]]
        scores[start:stop] = (first[:, None, :] @ second[:, :, None])[:, 0, 0]  # batched dot, BLAS
    return scores


def _gram_scores(features, rows1, rows2, progress: bool) -> np.ndarray:
    n_templates = features.shape[0]
    scores = np.empty(rows1.size, dtype=np.float32)
    order = np.argsort(rows1, kind="stable")
    sorted_rows1 = rows1[order]
    block = _gram_block(n_templates)
    for start in tqdm(range(0, n_templates, block), desc="pair scores (gram)", unit="block", disable=not progress):
        lo, hi = np.searchsorted(sorted_rows1, [start, start + block])
        if lo == hi:
            continue
        slab = features[start : start + block] @ features.T
        chosen = order[lo:hi]
        scores[chosen] = slab[rows1[chosen] - start, rows2[chosen]]
    return scores


def _non_decreasing(keys: np.ndarray) -> bool:
    return keys.size < 2 or bool((keys[1:] >= keys[:-1]).all())


def _grouping_order(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """A stable order that groups equal ``keys``."""
    if n_keys <= 1 << 16:  # numpy sorts 16-bit keys by radix: linear time
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


def _padded(chosen: np.ndarray, size: int, n_templates: int) -> np.ndarray:
    """``chosen`` followed by other template rows up to ``size`` rows (their products are ignored)."""
    if chosen.size >= size:
        return chosen
    spare = np.setdiff1d(np.arange(min(n_templates, size + chosen.size)), chosen)[: size - chosen.size]
    return np.concatenate([chosen, spare])


@dataclass(frozen=True)
class ScorePlan:
    """The pairs of a protocol as ``"reuse"`` reads them (:func:`score_plan`): ``used1``/``used2`` how
    often each of the ``n_templates`` rows is read first/second; ``groups`` ``(first, second)`` row
    arrays, each ordered by its first template; ``place`` how the groups' scores go back in pair order:
    ``("identity",)``, ``("two", kept, moved)`` (the kept pairs' positions as a mask, the turned pairs'
    in their group's order) or ``("sorted", order)``."""

    n_templates: int
    n_pairs: int
    used1: np.ndarray
    used2: np.ndarray
    groups: tuple[tuple[np.ndarray, np.ndarray], ...]
    place: tuple

    def arrays(self) -> dict[str, np.ndarray]:
        """The plan as named arrays (:meth:`from_arrays` reads them back), for an ``.npz``."""
        kind = PLACE_KINDS.index(self.place[0])
        out = {"shape": np.array([self.n_templates, self.n_pairs, len(self.groups), kind], dtype=np.int64),
               "used1": self.used1, "used2": self.used2}
        for index, (first, second) in enumerate(self.groups):
            out[f"first{index}"], out[f"second{index}"] = first, second
        for name, array in zip(PLACE_ARRAYS[self.place[0]], self.place[1:]):
            out[name] = array
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "ScorePlan":
        """:meth:`arrays` back; ValueError when they do not make a plan."""
        n_templates, n_pairs, n_groups, kind = (int(v) for v in np.asarray(arrays["shape"]))
        if not 1 <= n_groups <= 2 or not 0 <= kind < len(PLACE_KINDS):
            raise ValueError(f"plan shape {n_templates, n_pairs, n_groups, kind} is not a plan's")
        groups = tuple((arrays[f"first{i}"], arrays[f"second{i}"]) for i in range(n_groups))
        place = (PLACE_KINDS[kind], *(arrays[name] for name in PLACE_ARRAYS[PLACE_KINDS[kind]]))
        plan = cls(n_templates, n_pairs, arrays["used1"], arrays["used2"], groups, place)
        plan.check()
        return plan

    def check(self) -> None:
        """ValueError unless the arrays have the sizes, kinds and bounds the scoring indexes by (a damaged
        cache entry must not index out of bounds)."""
        sizes = [first.size for first, _ in self.groups]
        if sum(sizes) != self.n_pairs or any(first.shape != second.shape or first.ndim != 1
                                             for first, second in self.groups):
            raise ValueError("plan groups do not cover the pairs")
        for array in (self.used1, self.used2):
            if array.shape != (self.n_templates,) or array.dtype.kind not in "iu":
                raise ValueError("plan template counts have the wrong shape")
        for first, second in self.groups:
            for rows in (first, second):
                if rows.dtype.kind not in "iu" or (rows.size and (int(rows.min()) < 0 or int(rows.max()) >= self.n_templates)):
                    raise ValueError("plan rows outside the templates")
        kind, *arrays = self.place
        if len(self.groups) != (2 if kind == "two" else 1):
            raise ValueError(f"a {kind!r} plan with {len(self.groups)} groups")
        if kind == "two" and (arrays[0].shape != (self.n_pairs,) or arrays[0].dtype != bool
                              or arrays[1].ndim != 1 or arrays[1].dtype.kind not in "iu"
                              or arrays[1].size != sizes[-1] or int(np.count_nonzero(arrays[0])) != sizes[0]):
            raise ValueError("plan placement does not match its groups")
        if kind == "sorted" and (arrays[0].shape != (self.n_pairs,) or arrays[0].dtype.kind not in "iu"):
            raise ValueError("plan order has the wrong shape")
        if kind != "identity" and any(a.dtype.kind in "iu" and a.size and (int(a.min()) < 0 or int(a.max()) >= self.n_pairs)
                                      for a in arrays):
            raise ValueError("plan placement outside the pairs")

    def put_back(self, scores: list[np.ndarray]) -> np.ndarray:
        """The groups' scores in pair order."""
        kind, *arrays = self.place
        if kind == "identity":
            return scores[0]
        out = np.empty(self.n_pairs, dtype=np.float32)
        for where, group_scores in zip(arrays, scores):  # "two": kept mask, turned positions; "sorted": order
            out[where] = group_scores
        return out


PLACE_KINDS = ("identity", "two", "sorted")
PLACE_ARRAYS = {"identity": (), "two": ("kept", "moved"), "sorted": ("order",)}


def _reuse_scores(features, rows1, rows2, progress: bool, used, turned=None) -> np.ndarray:
    """``used``: how often each template is read first and second, ``turned``: the pairs
    :func:`_oriented` reads the other way round (None: none; ``rows1``, ``rows2`` as listed)."""
    return _reuse_run(features, _reuse_plan(rows1, rows2, features.shape[0], used, turned), progress)


def _reuse_plan(rows1, rows2, n_templates: int, used, turned) -> ScorePlan:
    used1, used2 = used
    if np.count_nonzero(used2) < np.count_nonzero(used1):  # chunk the side with fewer templates
        rows1, rows2 = _turned(rows1, rows2, turned)
        rows1, rows2, used1, used2, turned = rows2, rows1, used2, used1, None
    groups, place = _score_groups(rows1, rows2, n_templates, turned)
    return ScorePlan(n_templates, rows1.size, used1, used2, tuple((g["first"], g["second"]) for g in groups), place)


def _reuse_run(features, plan: ScorePlan, progress: bool) -> np.ndarray:
    """Score the pairs of ``plan`` (module docstring, ``"reuse"``)."""
    n_templates, dim = features.shape
    used1, used2 = plan.used1, plan.used2
    firsts = np.flatnonzero(used1)
    seconds = _padded(np.flatnonzero(used2), min(n_templates, 64), n_templates)
    column_of = np.zeros(n_templates, dtype=np.intp)
    column_of[seconds] = np.arange(seconds.size)
    others_t = np.ascontiguousarray(features[seconds]).T  # (D, S) view of a contiguous (S, D) copy
    min_rows = min(n_templates, max(2, -(-MIN_PRODUCT // (seconds.size * dim))))
    per_chunk = max(min_rows, GRAM_SLAB_BYTES // (4 * seconds.size))
    row_in_chunk = np.zeros(n_templates, dtype=np.intp)
    slab_buffer = np.empty(max(per_chunk, min_rows) * seconds.size, dtype=np.float32)  # reused: no page faults
    pick_buffers = np.empty(PICK_CHUNK, dtype=np.intp), np.empty(PICK_CHUNK, dtype=np.intp)
    if len(plan.groups) == 1:
        counts = [used1]
    else:  # the kept pairs' counts without a pass over them
        moved = _counts(plan.groups[1][0], n_templates)
        counts = [used1 - moved, moved]
    groups = [{"first": first, "second": second, "scores": np.empty(first.size, dtype=np.float32),
               "offsets": np.concatenate([[0], np.cumsum(count[firsts])])}
              for (first, second), count in zip(plan.groups, counts)]  # each in order of its first template
    starts = range(0, firsts.size, per_chunk)
    for start in tqdm(starts, desc="pair scores (reuse)", unit="chunk", disable=not progress):
        block = firsts[start : start + per_chunk]
        stop = start + block.size
        block = _padded(block, min_rows, n_templates)
        slab = np.matmul(features[block], others_t, out=slab_buffer[: block.size * seconds.size].reshape(block.size, -1))
        row_in_chunk[block] = np.arange(block.size)
        for group in groups:
            lo, hi = group["offsets"][start], group["offsets"][stop]
            _pick(slab.ravel(), row_in_chunk, column_of, seconds.size, group["first"][lo:hi], group["second"][lo:hi],
                  group["scores"][lo:hi], pick_buffers)
    return plan.put_back([group["scores"] for group in groups])


def _score_groups(rows1, rows2, n_templates: int, turned):
    """``(groups, place)``: the pairs in groups, each ordered by the template read first (dicts of
    ``first``, ``second``), and how the groups' scores go back in pair order (:attr:`ScorePlan.place`).
    ``rows1``, ``rows2`` are the pairs as listed, ``turned`` (or None) those read the other way round.

    Pairs already in order (a protocol listed by enrolment template) are one group as they are.
    When only turned pairs break the order (a protocol repeating some pairs the other way round),
    the others stay one group in their order and the turned ones (IJB-C: 1 %) are sorted apart;
    otherwise every pair is sorted (a stable order, so the scores are the same in every case)."""
    if turned is None and _non_decreasing(rows1):
        return [{"first": rows1, "second": rows2}], ("identity",)
    if turned is not None:
        kept = ~turned
        first = rows1[kept]
        if _non_decreasing(first):  # no order of every pair: only the turned ones are sorted
            moved = np.flatnonzero(turned)
            moved = moved[_grouping_order(rows2[moved], n_templates)]
            return [{"first": first, "second": rows2[kept]}, {"first": rows2[moved], "second": rows1[moved]}], \
                ("two", kept, moved)
        del first
        rows1, rows2 = _turned(rows1, rows2, turned)
    order = _grouping_order(rows1, n_templates)
    return [{"first": rows1[order], "second": rows2[order]}], ("sorted", order)


PICK_CHUNK = 1 << 16  # pairs picked out of a slab at a time: their indices stay in cache


def _pick(slab, row_in_chunk, column_of, n_columns, first, second, out, buffers) -> None:
    """``out[i] = slab[row_in_chunk[first[i]] * n_columns + column_of[second[i]]]``, through two
    reused index buffers of :data:`PICK_CHUNK` (whole-chunk temporaries were 25 MB of fresh pages each)."""
    flat, column = buffers
    for start in range(0, first.size, PICK_CHUNK):
        stop = min(start + PICK_CHUNK, first.size)
        n = stop - start
        np.take(row_in_chunk, first[start:stop], out=flat[:n])
        np.multiply(flat[:n], n_columns, out=flat[:n])
        np.take(column_of, second[start:stop], out=column[:n])
        np.add(flat[:n], column[:n], out=flat[:n])
        np.take(slab, flat[:n], out=out[start:stop])


def float64_pair_scores(template_ids: np.ndarray, features: np.ndarray, pairs: np.ndarray):
    """A function ``indices -> float64 scores`` of those pairs of ``pairs`` (P, 2) (template ids).

    Each score is InsightFace ``eval_ijbc.py``'s float64 expression ``np.sum(x1 * x2, -1)`` of the
    two rows of ``features`` (T, D, float64), bit for bit (numpy sums a row the same way in any
    batch); batches of :data:`FLOAT64_CHUNK` pairs go through two reused buffers.
    """
    features = np.ascontiguousarray(features, dtype=np.float64)
    pairs = np.asarray(pairs)

    def rescore(indices: np.ndarray) -> np.ndarray:
        rows = template_rows(template_ids, pairs[np.asarray(indices, dtype=np.intp)])
        out = np.empty(rows.shape[0], dtype=np.float64)
        first = np.empty((min(FLOAT64_CHUNK, rows.shape[0]), features.shape[1]), dtype=np.float64)
        second = np.empty_like(first)
        for start in range(0, rows.shape[0], FLOAT64_CHUNK):
            batch = rows[start : start + FLOAT64_CHUNK]
            a, b = first[: batch.shape[0]], second[: batch.shape[0]]
            np.take(features, batch[:, 0], axis=0, out=a)
            np.take(features, batch[:, 1], axis=0, out=b)
            np.multiply(a, b, out=a)
            out[start : start + batch.shape[0]] = np.sum(a, axis=-1)
        return out

    return rescore
