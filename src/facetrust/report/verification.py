"""``results/verification_table.csv``: pair-set (LFW-style) verification, one row per model (issue 3).

Columns ``method,backbone,train_set,test_set,accuracy,accuracy_std,angular_fisher_score,VAL@FAR=1e-03``
(accuracy and VAL as fractions, from the pair-set metrics files of ``evaluate pairs``).

The angular Fisher score (SphereFace appendix, lower is better) is read from the metrics file
when it holds ``angular_fisher_score``; otherwise, when the model's embeddings file and
``quality.csv`` (which knows every synthetic image's identity) are given, it is computed here with
``evaluate.pairs.angular_fisher_score`` on the (flip-fused) embeddings; else the cell is empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from facetrust.errors import InputError
from facetrust.formats import test_set_of
from facetrust.io import atomic_path
from facetrust.report.tables import ID_COLUMNS, read_metrics

VAL_FAR_KEY = "1e-03"
VERIFICATION_COLUMNS = ID_COLUMNS + ["accuracy", "accuracy_std", "angular_fisher_score", f"VAL@FAR={VAL_FAR_KEY}"]
# Appended when the metrics files hold them: the accuracy's bootstrap interval, pair counts, the
# 10-fold protocol and the replicate file that pairs two rows for a difference.
DETAIL_COLUMNS = ["accuracy_ci_lo", "accuracy_ci_hi", "n_genuine", "n_impostor", "protocol", "replicates"]


def angular_fisher_from_embeddings(embeddings_npz: str | Path, quality_csv: str | Path) -> float:
    """Angular Fisher score of a pair set's embeddings, identities looked up in quality.csv."""
    from facetrust.evaluate.embeddings_file import load_embeddings
    from facetrust.evaluate.pairs import angular_fisher_score
    from facetrust.report.quality import quality_rows, read_quality

    embeddings = load_embeddings(embeddings_npz)
    rows = quality_rows(embeddings.images, read_quality(quality_csv), source=str(embeddings_npz))
    # A pair set repeats images (the same rendered face in several pairs); each copy counts once
    # per appearance, as in the pairs themselves.
    return angular_fisher_score(embeddings.features, rows["identity"].to_numpy())


def _val(metrics: dict) -> float | None:
    """VAL at FAR 1e-3 from ``val_at_far`` (keys compared as numbers), None when absent."""
    values = metrics.get("val_at_far") or {}
    for key, value in values.items():
        if np.isclose(float(key), float(VAL_FAR_KEY)):
            return value
    return None


def verification_row(metrics_path: str | Path, *, method: str | None = None, backbone: str | None = None,
                     train_set: str | None = None, test_set: str | None = None,
                     embeddings_npz: str | Path | None = None, quality_csv: str | Path | None = None) -> dict:
    """One row of the verification table from a pair-set metrics file (and optionally embeddings)."""
    metrics = read_metrics(metrics_path)
    if metrics.get("accuracy") is None:
        raise InputError(f"{metrics_path}: no 'accuracy' (not a pair-set metrics file of `evaluate pairs`)")
    fisher = metrics.get("angular_fisher_score")
    if fisher is None and embeddings_npz is not None and quality_csv is not None:
        fisher = angular_fisher_from_embeddings(embeddings_npz, quality_csv)
    val = _val(metrics)
    return {
        "method": method or metrics.get("method", Path(metrics_path).parent.name),
        "backbone": backbone or metrics.get("backbone", ""),
        "train_set": train_set or metrics.get("train_set", ""),
        "test_set": test_set or test_set_of(metrics, Path(metrics_path).stem),
        "accuracy": round(float(metrics["accuracy"]), 6),
        "accuracy_std": None if metrics.get("accuracy_std") is None else round(float(metrics["accuracy_std"]), 6),
        "angular_fisher_score": None if fisher is None else round(float(fisher), 6),
        f"VAL@FAR={VAL_FAR_KEY}": None if val is None else round(float(val), 6),
        **_details(metrics),
    }


def _details(metrics: dict) -> dict:
    if "accuracy_ci" not in metrics:
        return {}
    lo, hi = metrics["accuracy_ci"]
    return {"accuracy_ci_lo": lo, "accuracy_ci_hi": hi, "n_genuine": metrics.get("n_genuine"),
            "n_impostor": metrics.get("n_impostor"), "protocol": (metrics.get("settings") or {}).get("protocol", ""),
            "replicates": (metrics.get("bootstrap") or {}).get("replicates") or ""}


def _per_row(values: Sequence | None, count: int, flag: str) -> list:
    if values is None:
        return [None] * count
    if len(values) != count:
        raise InputError(f"report verification-table: {flag} has {len(values)} values for {count} metrics files")
    return list(values)


def write_verification_table(metrics_paths: Sequence[str | Path], out_csv: str | Path, *,
                             methods: Sequence[str] | None = None, backbones: Sequence[str] | None = None,
                             train_sets: Sequence[str] | None = None, test_set: str | None = None,
                             embeddings: Sequence[str | Path] | None = None,
                             quality_csv: str | Path | None = None) -> pd.DataFrame:
    """The verification table (one metrics file per row, lists parallel to it), written atomically."""
    count = len(metrics_paths)
    if count == 0:
        raise InputError("report verification-table: no metrics files given")
    columns = zip(metrics_paths, _per_row(methods, count, "--method"), _per_row(backbones, count, "--backbone"),
                  _per_row(train_sets, count, "--train-set"), _per_row(embeddings, count, "--embeddings"))
    records = [verification_row(path, method=method, backbone=backbone, train_set=train_set, test_set=test_set,
                                embeddings_npz=npz, quality_csv=quality_csv)
               for path, method, backbone, train_set, npz in columns]
    extra = DETAIL_COLUMNS if all("accuracy_ci_lo" in r for r in records) else []
    table = pd.DataFrame.from_records(records, columns=VERIFICATION_COLUMNS + extra)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table


def read_table(path: str | Path, required: Sequence[str] = ID_COLUMNS) -> pd.DataFrame:
    """A results table CSV (verification or TAR table); InputError names a missing column."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={c: str for c in ID_COLUMNS}, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise InputError(f"{path}: table missing") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(f"{path}: not a readable CSV ({error})") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}")
    for column in ID_COLUMNS:
        if column in table.columns:
            table[column] = table[column].fillna("")
    return table
