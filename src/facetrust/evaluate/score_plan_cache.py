"""The scoring plan of a cached IJB protocol, cached beside it.

:func:`facetrust.evaluate.template_dots.score_plan` turns a protocol's pairs into what the ``"reuse"``
scoring reads: each pair's template rows, oriented and grouped by the template read first.  It
depends on the protocol's pairs and templates only, never on a model, yet at IJB-C's 15.7 M pairs it
costs about 0.4 s of every evaluation (the rows of 31 M template ids, the counts, the turned pairs,
the grouping order), as much as a sixth of an evaluation whose protocol comes from the
decoded-protocol cache.  A protocol served from that cache carries its entry's name
(:attr:`facetrust.data.ijb.IJBProtocol.cache_key`, a hash of the meta files' content), and its plan is
kept under the same name in ``plans/`` of the same directory: computed by the first evaluation of the
protocol, mapped (copy-on-write) by the next ones, so scoring every model of a pipeline on one protocol
plans it once.  The scores are the same bytes with and without the cache (tested).

An entry is used only if it holds the plan of these pairs against these templates: the template ids
equal, the pair count and a sample of the pairs equal, every array of the sizes and bounds the scoring
indexes by; anything else (a damaged file, a plan of another format) is computed again and replaced.
Entries are written whole by a rename; plans whose protocol entry is gone are removed when a plan is
written.  ``FACETRUST_CACHE_DIR=off`` turns this cache off with the protocol cache.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from facetrust.data.ijb_cache import cache_root
from facetrust.evaluate.template_dots import ScorePlan, score_plan
from facetrust.io import atomic_path
from facetrust.npz import load_npz, save_npz_aligned

PLAN_VERSION = 1
SAMPLE_PAIRS = 4096  # pairs compared between the protocol and a stored plan (evenly spaced)
log = logging.getLogger(__name__)


def plan_path(cache_key: str) -> Path | None:
    """Where the plan of the protocol cache entry ``cache_key`` is kept (None: the cache is off)."""
    root = cache_root()
    return None if root is None else root / "plans" / f"{cache_key}-plan{PLAN_VERSION}.npz"


def cached_score_plan(protocol, template_ids: np.ndarray) -> ScorePlan | None:
    """The :func:`~facetrust.evaluate.template_dots.score_plan` of ``protocol.pairs`` against
    ``template_ids``, from the cache when ``protocol`` came from the decoded-protocol cache (module
    docstring); None when the protocol is not cached (the scoring then plans as it goes) or its pairs
    are not scored by ``"reuse"``."""
    key = getattr(protocol, "cache_key", None)
    path = None if key is None else plan_path(key)
    if path is None:
        return None
    template_ids = np.asarray(template_ids)
    pairs = np.asarray(protocol.pairs)
    sample = np.unique(np.linspace(0, max(pairs.shape[0] - 1, 0), SAMPLE_PAIRS).astype(np.intp)) if pairs.size else \
        np.zeros(0, dtype=np.intp)
    if path.is_file():
        try:
            stored = load_npz(path, mapped=True)
            if (stored["template_ids"].shape == template_ids.shape and np.array_equal(stored["template_ids"], template_ids)
                    and np.array_equal(stored["pair_sample"], pairs[sample])):
                plan = ScorePlan.from_arrays(stored)
                if plan.n_pairs == pairs.shape[0] and plan.n_templates == template_ids.size:
                    return plan
            log.info("%s: a plan of other pairs or templates; planning again", path)
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as error:
            log.warning("%s: damaged score plan (%s); planning again", path, error)
    plan = score_plan(template_ids, pairs)
    if plan is None:
        return None
    try:
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            save_npz_aligned(handle, {**plan.arrays(), "template_ids": template_ids, "pair_sample": pairs[sample]})
        _forget_orphans(path.parent)
    except OSError as error:
        log.warning("%s: could not write the score plan (%s)", path, error)
    return plan


def _forget_orphans(plans: Path) -> None:
    """Remove the plans whose protocol cache entry (``<root>/<key>.npz``) is gone."""
    root = plans.parent
    for path in plans.glob("*-plan*.npz"):
        key = path.name.rsplit("-plan", 1)[0]
        if not (root / f"{key}.npz").exists():
            path.unlink(missing_ok=True)
