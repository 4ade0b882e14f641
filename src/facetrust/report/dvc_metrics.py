"""The DVC view of the results: flat metrics files for ``dvc metrics show`` and long-format curve
files for ``dvc plots show``.

DVC prints one row per metrics file with every numeric leaf as a column, and draws one line per
file and field. The evaluation outputs are richer than that (settings, per-fold lists, one file
per variant and test set), so this module writes a small view of them, read from the workflow's
own layout (``results/metrics/<variant>/<testset>.json``, ``results/roc/<variant>/<testset>.csv``,
``results/reject/<variant>/<ijb>.json``; docs/FORMATS.md "Metrics files"):

* ``<out>/metrics/<variant>.json`` — ``{testset: {"TAR@FAR=1e-03": …, "auc": …, "accuracy": …}}``,
  so ``dvc metrics show`` prints one row per variant: the TAR@FAR table (IJB sets) and the
  10-fold accuracy table (pair sets) side by side.
* ``<out>/roc/<testset>.csv`` — ``variant,point,fpr,tpr``: every variant's ROC in one file, drawn
  by the ``roc_by_variant`` template (.dvc/plots/) as one line per variant on a log FAR axis.
* ``<out>/reject/<ijb>.csv`` — ``variant,far,fraction,tar``: reject-verification curves, drawn by
  ``reject_by_variant`` as one line per variant, one panel per FAR.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Mapping

from facetrust.errors import InputError
from facetrust.evaluate.metrics import shown_in
from facetrust.formats import read_metrics
from facetrust.io import atomic_path, write_json_atomic


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _far_order(key: str) -> float:
    try:
        return float(key)
    except ValueError:
        return math.inf


def flat_metrics(metrics: Mapping, source: str = "metrics") -> dict[str, float]:
    """The columns of every metric shown in the view (:data:`facetrust.evaluate.metrics.METRICS`, its
    order): ``TAR@FAR=<far>`` for each FAR of ``tar_at_far`` (ascending FAR), then ``auc``,
    ``accuracy``, ``accuracy_std`` where present; missing or NaN values are left out (DVC prints a dash)."""
    flat = {}
    for key, metric in shown_in("view"):
        if metric.per_far:
            value = metrics.get(key, {})
            if not isinstance(value, Mapping):
                raise InputError(f"{source}: {key!r} is not a map from FAR to a value")
        elif _finite(value := metrics.get(key)):
            value = float(value)
        else:
            continue
        flat.update({column: float(v) for column, v in metric.columns(value).items() if _finite(v)})
    return flat


def _variant_files(root: Path, suffix: str) -> Iterable[tuple[str, str, Path]]:
    """(variant, test set, path) of ``root/<variant>/<testset><suffix>``, sorted."""
    for path in sorted(root.glob(f"*/*{suffix}")):
        yield path.parent.name, path.name[: -len(suffix)], path


def _load_json(path: Path) -> dict:
    return read_metrics(path)


def collect_metrics(metrics_dir: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{variant: {testset: flat_metrics}}`` from ``metrics_dir/<variant>/<testset>.json``."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for variant, testset, path in _variant_files(Path(metrics_dir), ".json"):
        table.setdefault(variant, {})[testset] = flat_metrics(_load_json(path), str(path))
    return table


def collect_roc(roc_dir: str | Path) -> dict[str, list[tuple[str, int, float, float]]]:
    """``{testset: [(variant, point, fpr, tpr), …]}`` from ``roc_dir/<variant>/<testset>.csv``.

    Points at FPR 0 are left out: the plot's FAR axis is logarithmic, as in the papers' ROC
    figures; ``point`` keeps the curve's order (vertical steps share an FPR)."""
    curves: dict[str, list[tuple[str, int, float, float]]] = {}
    for variant, testset, path in _variant_files(Path(roc_dir), ".csv"):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"fpr", "tpr"} <= set(reader.fieldnames):
                raise InputError(f"{path}: an ROC file needs the columns fpr,tpr (has {reader.fieldnames})")
            rows = curves.setdefault(testset, [])
            for point, row in enumerate(reader):
                try:
                    fpr, tpr = float(row["fpr"]), float(row["tpr"])
                except ValueError as error:
                    raise InputError(f"{path}: row {point + 2}: fpr/tpr is not a number") from error
                if fpr > 0:
                    rows.append((variant, point, fpr, tpr))
    return curves


def collect_reject(reject_dir: str | Path) -> dict[str, list[tuple[str, str, float, float]]]:
    """``{ijb: [(variant, far, fraction, tar), …]}`` from ``reject_dir/<variant>/<ijb>.json``
    (``evaluate reject`` output: ``fractions`` and ``tar_at_far`` lists; null TARs left out)."""
    curves: dict[str, list[tuple[str, str, float, float]]] = {}
    for variant, ijb, path in _variant_files(Path(reject_dir), ".json"):
        curve = _load_json(path)
        fractions, tar_at_far = curve.get("fractions"), curve.get("tar_at_far")
        if not isinstance(fractions, list) or not isinstance(tar_at_far, Mapping):
            raise InputError(f"{path}: a reject curve needs 'fractions' (list) and 'tar_at_far' (map)")
        rows = curves.setdefault(ijb, [])
        for far in sorted(tar_at_far, key=_far_order):
            tars = tar_at_far[far]
            if not isinstance(tars, list) or len(tars) != len(fractions):
                count = f"{len(tars)} values" if isinstance(tars, list) else f"a {type(tars).__name__}, not a list,"
                raise InputError(f"{path}: tar_at_far[{far!r}] has {count} for {len(fractions)} fractions")
            if not all(_finite(fr) for fr in fractions):
                raise InputError(f"{path}: 'fractions' must be finite numbers")
            rows.extend((variant, far, float(fr), float(t)) for fr, t in zip(fractions, tars) if _finite(t))
    return curves


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[tuple]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_dvc_view(metrics_dir: str | Path, roc_dir: str | Path, reject_dir: str | Path | None,
                   out_dir: str | Path) -> list[Path]:
    """Write the DVC view (module docstring) under ``out_dir`` and return the files written.

    ``reject_dir`` may be None or missing (no reject curves configured). Raises InputError when
    ``metrics_dir`` holds no metrics file: an empty table would pass unnoticed in CI."""
    out_dir = Path(out_dir)
    table = collect_metrics(metrics_dir)
    if not table:
        raise InputError(f"{metrics_dir}: no <variant>/<testset>.json metrics file")
    written = []
    for variant, by_testset in table.items():
        path = out_dir / "metrics" / f"{variant}.json"
        write_json_atomic(path, by_testset)
        written.append(path)
    for testset, rows in collect_roc(roc_dir).items():
        path = out_dir / "roc" / f"{testset}.csv"
        _write_csv(path, ("variant", "point", "fpr", "tpr"), rows)
        written.append(path)
    if reject_dir is not None and Path(reject_dir).is_dir():
        for ijb, rows in collect_reject(reject_dir).items():
            path = out_dir / "reject" / f"{ijb}.csv"
            _write_csv(path, ("variant", "far", "fraction", "tar"), rows)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m facetrust.report.dvc_metrics`` (the same options as ``facetrust report dvc-metrics``)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="DVC view of the results: metrics table and curves")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        for path in write_dvc_view(args.metrics, args.roc, args.reject, args.out):
            print(path)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def add_arguments(parser) -> None:
    """Options of ``facetrust report dvc-metrics`` (for the CLI wiring)."""
    parser.add_argument("--metrics", default="results/metrics", help="results/metrics (<variant>/<testset>.json)")
    parser.add_argument("--roc", default="results/roc", help="results/roc (<variant>/<testset>.csv)")
    parser.add_argument("--reject", default="results/reject", help="results/reject (<variant>/<ijb>.json)")
    parser.add_argument("--out", default="results/dvc", help="directory to write the view under")


if __name__ == "__main__":
    raise SystemExit(main())
