"""Result tables from metrics files (docs/FORMATS.md "Tables").

``results/ijbc_table.csv``: one row per method, columns
``method,backbone,train_set,test_set,TAR@FAR=1e-06,…,TAR@FAR=1e-01`` (the columns of every metric
shown in tables: :data:`facetrust.evaluate.metrics.METRICS`), then, when the metrics files
record them, what makes rows comparable and how sure each number is (:data:`DETAIL_COLUMNS`):
the variant and trained model, pooling, score, ``control`` (the constant uncertainty of a control
row, empty otherwise), ``n_genuine``/``n_impostor``, ``unresolved_fars`` (FARs below
10/n_impostor, ``;``-separated), the bootstrap interval ``ci_lo@FAR=…``/``ci_hi@FAR=…`` of each
TAR and the ``replicates`` file that pairs rows for differences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from facetrust.errors import InputError
from facetrust.evaluate.metrics import shown_in
from facetrust.formats import TAR_AT_FAR, test_set_of
from facetrust.formats import read_metrics as _read_metrics
from facetrust.io import atomic_path

ID_COLUMNS = ["method", "backbone", "train_set", "test_set"]
DETAIL_COLUMNS = ["variant", "model", "pooling", "score", "control", "n_genuine", "n_impostor", "unresolved_fars"]


def detail_record(metrics: dict, variant: str = "", model: str = "") -> dict:
    """The detail columns of one row, read from its metrics file's settings and counts."""
    settings = metrics.get("settings") or {}
    record = {"variant": variant, "model": model, "pooling": settings.get("pooling", ""),
              "score": settings.get("score_name", "cosine"),
              "control": str(settings.get("uncertainty", "")).removeprefix("constant (control): "),
              "n_genuine": metrics.get("n_genuine"), "n_impostor": metrics.get("n_impostor"),
              "unresolved_fars": ";".join(metrics.get("unresolved_fars") or [])}
    for _, metric in shown_in("table"):
        record.update(_interval_columns(metric, metrics.get(metric.interval) if metric.interval else None))
    record["replicates"] = (metrics.get("bootstrap") or {}).get("replicates") or ""
    return record


def read_metrics(path: str | Path) -> dict:
    """A metrics JSON file; InputError naming the file when it is missing or malformed."""
    path = Path(path)
    metrics = _read_metrics(path)
    if not isinstance(metrics.get(TAR_AT_FAR), dict):
        raise InputError(f"{path}: no 'tar_at_far' map")
    _check_table_fields(metrics, path)
    return metrics


def _check_table_fields(metrics: dict, path: Path) -> None:
    """InputError naming ``path`` and the key for a value the table reads that has the wrong type:
    each TAR a number in [0, 1] or null (NaN, as older files wrote it, is read as null), the
    intervals ``[lo, hi]`` of numbers, the counts, the unresolved FARs, the settings shown."""
    from facetrust.formats import check_far_keys, check_tar_map, metrics_number

    check_tar_map(metrics, path)
    for _, metric in shown_in("table"):
        interval = metrics.get(metric.interval) if metric.interval else None
        if not interval:
            continue
        items = interval.items() if metric.per_far and isinstance(interval, dict) else [("", interval)]
        if metric.per_far:
            if not isinstance(interval, dict):
                raise InputError(f"{path}: key {metric.interval} must map FAR keys to [lo, hi]")
            check_far_keys(interval, path, metric.interval)
        for far, bounds in items:
            where = f"{metric.interval}[{far!r}]" if far else metric.interval
            if not isinstance(bounds, list) or len(bounds) != 2:
                raise InputError(f"{path}: key {where} must be [lo, hi]")
            for bound, value in zip(("lo", "hi"), bounds):
                metrics_number(value, path, f"{where} {bound}", allow_none=True)
    for key in ("n_genuine", "n_impostor"):
        metrics_number(metrics.get(key), path, key, allow_none=True, low=0.0)
    unresolved = metrics.get("unresolved_fars")
    if unresolved is not None and not (isinstance(unresolved, list) and all(isinstance(k, str) for k in unresolved)):
        raise InputError(f"{path}: key unresolved_fars must be a list of FAR keys (strings like '1e-04')")
    bootstrap = metrics.get("bootstrap")
    if bootstrap is not None and not isinstance(bootstrap, dict):
        raise InputError(f"{path}: key bootstrap must be a JSON object")
    settings = metrics.get("settings") or {}
    for key in ("pooling", "score_name"):
        if settings.get(key) is not None and not isinstance(settings[key], str):
            raise InputError(f"{path}: key settings.{key} must be a string")


def _interval_columns(metric, interval) -> dict:
    """The ``ci_lo``/``ci_hi`` columns of one metric's bootstrap interval (``[lo, hi]`` or a map of them)."""
    if not interval:
        return {}
    items = [(key, interval[key]) for key in sorted(interval, key=float)] if metric.per_far else [("", interval)]
    return {metric.ci_column.format(bound=bound, far=key): value
            for key, bounds in items for bound, value in zip(("lo", "hi"), bounds)}


def _cell(value):
    return None if value is None else round(float(value), 6)


def tar_table(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows of {method, backbone, train_set, test_set, metrics} -> the table: the identifying columns,
    then the columns of every metric shown in tables (``evaluate.metrics``: TAR@FAR by ascending FAR)."""
    columns: dict[str, tuple[str, str | None]] = {}  # column -> (metric key, FAR key or None)
    for key, metric in shown_in("table"):
        values = [row["metrics"][key] for row in rows if row["metrics"].get(key) is not None]
        if metric.per_far:
            for far in sorted({far for value in values for far in value}, key=float):
                columns[metric.column.format(far=far)] = (key, far)
        elif values:
            columns[metric.column] = (key, None)
    records = []
    for row in rows:
        record = {column: row[column] for column in ID_COLUMNS}
        for column, (key, far) in columns.items():
            value = row["metrics"].get(key)
            record[column] = _cell(value if far is None or value is None else value.get(far))
        records.append(record)
    return pd.DataFrame.from_records(records, columns=ID_COLUMNS + list(columns))


def write_tar_table(metrics_paths: Sequence[str], out: Path, *, methods=None, backbones=None, train_sets=None,
                    test_set: str | None = None, variants=None, models=None) -> pd.DataFrame:
    """Build the TAR@FAR table from one metrics file per row and write it atomically as CSV.

    The detail columns (module docstring) follow when the metrics files record their settings."""
    count = len(metrics_paths)
    for label, values in (("--method", methods), ("--backbone", backbones), ("--train-set", train_sets),
                          ("--variant", variants), ("--model", models)):
        if values is not None and len(values) != count:
            raise InputError(f"report table: {label} has {len(values)} values for {count} metrics files")
    rows, details = [], []
    for i, path in enumerate(metrics_paths):
        metrics = read_metrics(path)
        if "settings" in metrics:
            details.append(detail_record(metrics, variants[i] if variants else Path(path).parent.name,
                                         models[i] if models else ""))
        rows.append({
            "method": methods[i] if methods else metrics.get("method", Path(path).parent.name),
            "backbone": backbones[i] if backbones else metrics.get("backbone", ""),
            "train_set": train_sets[i] if train_sets else metrics.get("train_set", ""),
            "test_set": test_set or test_set_of(metrics, Path(path).stem),
            "metrics": metrics,
        })
    table = tar_table(rows)
    if details and len(details) == len(rows):
        table = pd.concat([table, pd.DataFrame.from_records(details)], axis=1)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return table
