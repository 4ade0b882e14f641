"""TAR@FAR over template pairs split by the synthetic benchmark's known quality.

Checks that the known quality matters: a template's quality is the mean quality of its images
(quality.csv), a pair's quality the lower of its two templates' (a pair is only as good as its
worse side). Pairs are split into the lowest, middle and highest third by that value and TAR at
each FAR is read, within each group, from the ROC of that group's own genuine and impostor pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from facetrust.data.ijb import read_ijb_protocol
from facetrust.evaluate.embeddings_file import load_embeddings
from facetrust.evaluate.ijb import evaluate_ijb
from facetrust.evaluate.roc import roc_points, tar_at_far
from facetrust.evaluate.settings import IJBConvention, VerificationSettings
from facetrust.formats import tar_column
from facetrust.io import atomic_path
from facetrust.report.quality import quality_rows, read_quality

GROUPS = ("low", "middle", "high")
# The `evaluate` defaults (facetrust.evaluate.settings: the IJB convention and the TAR reading).
DEFAULT_CONVENTION = {**IJBConvention().kwargs(), "tar_method": VerificationSettings().tar_method}


def pair_quality(protocol, image_quality: np.ndarray) -> np.ndarray:
    """Quality of every protocol pair: min over its two templates of the mean image quality."""
    template_ids, inverse = np.unique(protocol.template_ids, return_inverse=True)
    sums = np.bincount(inverse, weights=image_quality, minlength=len(template_ids))
    template_quality = sums / np.bincount(inverse, minlength=len(template_ids))
    rows = np.searchsorted(template_ids, protocol.pairs)
    return template_quality[rows].min(axis=1)


def quality_split_rows(method: str, embeddings_path, ijb_dir, name: str, quality: pd.DataFrame, *,
                       fars: Sequence[float], pooling: str = "mean", convention: Mapping | None = None) -> list[dict]:
    """One row per quality group: method, group, pair-quality range, pair counts, TAR@FAR.

    ``convention``: the IJB evaluation settings (``normalize_images``, ``use_detector_score``,
    ``flip``, ``tar_method``), the ``evaluate`` section of params; InsightFace's by default."""
    convention = {**DEFAULT_CONVENTION, **(convention or {})}
    protocol = read_ijb_protocol(ijb_dir, name, check_landmarks=False)
    embeddings = load_embeddings(embeddings_path, flip=convention["flip"])
    result = evaluate_ijb(embeddings, protocol, fars=fars, pooling=pooling,
                          normalize_images=convention["normalize_images"],
                          use_detector_score=convention["use_detector_score"], tar_method=convention["tar_method"])
    image_quality = quality_rows(protocol.images, quality, set_name=protocol.name,
                                 source=str(embeddings_path))["quality"].to_numpy(np.float64)
    # evaluate_ijb scores the protocol's pairs in protocol order.
    quality_of_pair = pair_quality(protocol, image_quality)
    edges = np.quantile(quality_of_pair, [1 / 3, 2 / 3])
    group_of_pair = np.digitize(quality_of_pair, edges)
    rows = []
    for index, group in enumerate(GROUPS):
        mask = group_of_pair == index
        labels, scores = result.labels[mask], result.scores[mask]
        row = {"method": method, "group": group, "min_pair_quality": float(quality_of_pair[mask].min()),
               "max_pair_quality": float(quality_of_pair[mask].max()), "genuine": int(labels.sum()),
               "impostor": int((1 - labels).sum())}
        if row["genuine"] and row["impostor"]:
            fpr, tpr, _ = roc_points(labels, scores)
            row.update({tar_column(key): value for key, value in tar_at_far(fpr, tpr, fars, convention["tar_method"]).items()})
        else:
            row.update({tar_column(far): None for far in fars})
        rows.append(row)
    return rows


def write_quality_split(embeddings: Mapping[str, str | Path], ijb_dir, name: str, quality_csv, out_csv, *,
                        fars: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1), pooling: str = "mean",
                        convention: Mapping | None = None) -> pd.DataFrame:
    """The table for every method, written atomically to ``out_csv``."""
    quality = read_quality(quality_csv)
    rows = [row for method, path in embeddings.items()
            for row in quality_split_rows(method, path, ijb_dir, name, quality, fars=fars, pooling=pooling,
                                          convention=convention)]
    table = pd.DataFrame(rows)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table
