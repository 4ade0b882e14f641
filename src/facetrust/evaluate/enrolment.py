"""Failure to enrol in IJB 1:1 evaluation: images an earlier stage could not process.

``align --on-bad-image skip`` leaves out an image it cannot read or align (and lists it in the
aligned set's ``manifest.json``, key ``skipped_images``); ``embed`` then has no feature for it.
Evaluation accepts exactly those gaps, and only when told where the list is: an image the
embeddings lack that is *not* listed is still an error (a stale or truncated embeddings file must
not pass silently).

A template keeps its remaining images; a template left with none **failed to enrol**.  Its pairs
are handled by one of two conventions, recorded in the metrics file:

- ``reject`` (default): every pair with a failed template gets a score below all others, so it is
  rejected at every threshold — a genuine pair counts as a false non-match, an impostor pair as a
  correct rejection.  This is the "generalised" false non-match rate of ISO/IEC 19795-1 (failures
  to enrol counted as non-matches), and how NIST's ongoing FRVT 1:1 (Grother, Ngan, Hanaoka,
  "Face Recognition Vendor Test Part 1: Verification") scores a template that failed to be made;
  it keeps the protocol's pair count and the FARs' denominators unchanged.
- ``drop``: those pairs are left out of the protocol (the reader's ``on_bad_image: skip``
  behaviour for meta-file defects).  TAR then describes only the enrolled templates and is
  optimistic; use it to compare with results computed that way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from facetrust.data.ijb import IJBProtocol
from facetrust.errors import ConfigError, InputError

FAILED_TEMPLATE_CONVENTIONS = ("reject", "drop")
# how far below the lowest enrolled score a failed pair's score sits (any positive gap works: only
# the order matters to the ROC)
FAILED_SCORE_GAP = 1.0


@dataclass(frozen=True)
class EnrolmentFailures:
    """What failed to enrol: ``images`` (names), ``templates`` (ids with no image left), ``pairs``
    (P,) bool over the protocol's pairs, and the ``convention`` applied to them."""

    images: tuple[str, ...]
    templates: np.ndarray
    pairs: np.ndarray
    labels: np.ndarray
    convention: str

    def all_pairs(self, enrolled_scores: np.ndarray, rescore=None):
        """``(scores, labels, rescore)`` of every protocol pair under the ``reject`` convention:
        :func:`with_failed_pairs`, the protocol's labels, and ``rescore`` (enrolled pair indices →
        float64 scores; evaluate/exact_tar.py) extended to all pairs (a failed pair's float64 score
        is its float32 one, exactly representable)."""
        scores = with_failed_pairs(enrolled_scores, self)
        if rescore is None:
            return scores, self.labels, None
        enrolled_index = np.cumsum(~self.pairs) - 1  # protocol pair -> its index among enrolled pairs
        low = float(scores[self.pairs][0]) if self.pairs.any() else 0.0

        def rescore_all(indices: np.ndarray) -> np.ndarray:
            indices = np.asarray(indices, dtype=np.intp)
            out = np.full(indices.size, low, dtype=np.float64)
            enrolled = ~self.pairs[indices]
            if enrolled.any():
                out[enrolled] = rescore(enrolled_index[indices[enrolled]])
            return out

        return scores, self.labels, rescore_all

    def record(self) -> dict:
        """The metrics-file block ``failure_to_enrol``."""
        genuine = np.asarray(self.labels).astype(bool)
        return {
            "images": len(self.images),
            "templates": int(self.templates.size),
            "pairs": int(self.pairs.sum()),
            "genuine_pairs": int((self.pairs & genuine).sum()),
            "convention": self.convention,
            "meaning": ("pairs with a template that has no usable image score below every other pair "
                        "(rejected at every threshold)" if self.convention == "reject"
                        else "pairs with a template that has no usable image are left out"),
            "examples": list(self.images[:5]),
        }


def image_rows(embedded: np.ndarray, wanted: np.ndarray, embeddings_path: str | Path) -> np.ndarray:
    """Row of ``embedded`` for every name in ``wanted`` (−1 where it has none); names may also match
    by basename.  InputError when basenames are needed and repeat."""
    if embedded.shape == wanted.shape and np.array_equal(embedded, wanted):
        return np.arange(wanted.size)
    import pandas as pd

    rows = pd.Index(embedded).get_indexer(wanted) if pd.Index(embedded).is_unique else None
    if rows is None or (rows < 0).any():
        # Embeddings written with a directory prefix ("loose_crop/1.jpg") still match "1.jpg".
        base = pd.Index(pd.Series(embedded).str.rsplit("/", n=1).str[-1])
        if not base.is_unique:
            raise InputError(f"{embeddings_path}: image names are not unique")
        rows = base.get_indexer(wanted)
    return rows


def read_failed_images(path: str | Path) -> tuple[str, ...]:
    """Image names from an aligned set's ``manifest.json`` (key ``skipped_images``; none listed = no
    failure) or from a text file with one name per line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: missing (the list of images that failed to enrol)") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    if path.suffix == ".json":
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}: not valid JSON: {error}") from None
        names = manifest.get("skipped_images", []) if isinstance(manifest, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"{path}: key 'skipped_images' must be a list of image names")
        return tuple(names)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def check_convention(convention: str) -> str:
    if convention not in FAILED_TEMPLATE_CONVENTIONS:
        raise ConfigError(f"failed_templates: {convention!r} is not one of {list(FAILED_TEMPLATE_CONVENTIONS)}")
    return convention


def split_failures(protocol: IJBProtocol, rows: np.ndarray, failed_images, convention: str,
                   embeddings_path) -> tuple[IJBProtocol, EnrolmentFailures | None]:
    """``(enrolled protocol, failures)``: the protocol without the images the embeddings lack
    (``rows`` −1) and without the pairs of templates left empty; None when nothing is missing.

    InputError naming ``embeddings_path`` and the image when a missing image is not in
    ``failed_images``."""
    check_convention(convention)
    missing = np.asarray(rows) < 0
    if not missing.any():
        return protocol, None
    listed = set(failed_images)
    unlisted = [str(name) for name in protocol.images[missing] if str(name) not in listed]
    if unlisted:
        raise InputError(f"{embeddings_path}: key 'image' has no entry for protocol image {unlisted[0]!r}"
                         + ("" if listed else " (images that failed alignment are accepted with --failed-images)"))
    keep = ~missing
    enrolled_templates = np.unique(protocol.template_ids[keep])
    failed_templates = np.setdiff1d(np.unique(protocol.template_ids), enrolled_templates)
    failed_pairs = np.isin(protocol.pairs[:, 0], failed_templates) | np.isin(protocol.pairs[:, 1], failed_templates)
    enrolled = replace(
        protocol,
        images=protocol.images[keep], template_ids=protocol.template_ids[keep],
        media_ids=protocol.media_ids[keep], landmarks=protocol.landmarks[keep],
        detector_scores=protocol.detector_scores[keep],
        landmark_lines=None if protocol.landmark_lines is None else protocol.landmark_lines[keep],
        pairs=protocol.pairs[~failed_pairs], labels=protocol.labels[~failed_pairs],
        skipped=tuple(protocol.skipped) + tuple(str(n) for n in protocol.images[missing]),
        cache_key=None,  # other pairs and templates than the cached protocol's
    )
    failures = EnrolmentFailures(tuple(str(n) for n in protocol.images[missing]), failed_templates,
                                 failed_pairs, np.asarray(protocol.labels), convention)
    return enrolled, failures


def with_failed_pairs(enrolled_scores: np.ndarray, failures: EnrolmentFailures) -> np.ndarray:
    """Scores of every protocol pair: the enrolled pairs' scores in order, the failed pairs' a
    score :data:`FAILED_SCORE_GAP` below the lowest of them (``reject`` convention)."""
    enrolled_scores = np.asarray(enrolled_scores)
    dtype = np.result_type(enrolled_scores.dtype, np.float32)
    low = (float(enrolled_scores.min()) if enrolled_scores.size else 0.0) - FAILED_SCORE_GAP
    scores = np.full(failures.pairs.size, low, dtype=dtype)
    scores[~failures.pairs] = enrolled_scores
    return scores


def enrolled_protocol(protocol: IJBProtocol, embeddings, failed_images, convention: str = "drop"):
    """``(protocol, failures)`` for a stage that reads ``embeddings`` on ``protocol``: unchanged when
    ``failed_images`` (a path, see :func:`read_failed_images`) is None; else the enrolled protocol
    (:func:`split_failures`) — reject and EDC curves rank pairs by their templates' uncertainty,
    which a template without images does not have, so they use ``drop``."""
    if failed_images is None:
        return protocol, None
    rows = image_rows(embeddings.images, protocol.images, embeddings.path)
    return split_failures(protocol, rows, read_failed_images(failed_images), convention, embeddings.path)
