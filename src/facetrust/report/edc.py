"""``results/edc_table.csv`` and the EDC figure, from the EDC files of ``evaluate edc``.

Table: one row per method and per reference ranking (``random``, ``known quality`` — the renderer's
scalar, a reference and not a bound — and the error-aware ``oracle bound``, computed on the first
method's comparison scores), columns ``method, test_set, uncertainty_kind, space, error,
starting_error, discard_limit, pauc`` (pAUC − theoretical best; smaller is better, 0 is perfect),
``pauc_ci_lo, pauc_ci_hi`` (bootstrap over subjects, FNM-EDC), ``pauc_random, pauc_known_quality,
pauc_oracle`` (the references on the same scores), the areas of an ERC after CR-FIQA
``crfiqa_auc@FMR=…`` (a different protocol: threshold recomputed on the kept pairs) and ``replicates``.

Figure: FNM-EDC (left) and FM-EDC (right), one step line per method, the random, known-quality and
oracle rankings, the theoretical best and the pAUC discard limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from facetrust.errors import InputError
from facetrust.formats import read_metrics, test_set_of
from facetrust.io import atomic_path

EDC_COLUMNS = ["method", "test_set", "uncertainty_kind", "space", "error", "starting_error", "discard_limit", "pauc",
               "pauc_ci_lo", "pauc_ci_hi", "pauc_random", "pauc_known_quality", "pauc_oracle"]
BOUND_LABELS = {"random": "random ranking", "known_quality": "known quality (renderer's scalar)",
                "oracle": "oracle bound (error-aware)"}


def read_edc(path) -> dict:
    """An EDC file of ``evaluate edc``; InputError naming the file when it is not one."""
    metrics = read_metrics(path, "EDC file")
    if metrics.get("protocol") != "edc" or "curves" not in metrics:
        raise InputError(f"{path}: not an EDC file of `facetrust evaluate edc` (no 'curves')")
    return metrics


def _rows_of(label: str, edc: dict, who: str, path) -> list[dict]:
    settings = edc.get("settings") or {}
    rows = []
    for error in ("fnmr", "fmr"):
        ci = ((edc.get("pauc_ci") or {}).get(who) or {}).get(error) or [None, None]
        row = {"method": label, "test_set": test_set_of(edc), "uncertainty_kind": settings.get("uncertainty_kind", ""),
               "space": settings.get("uncertainty_space", ""), "error": error,
               "starting_error": (edc.get("starting_error_achieved") or {}).get(error),
               "discard_limit": settings.get("discard_limit"), "pauc": edc["pauc"][who][error],
               "pauc_ci_lo": ci[0], "pauc_ci_hi": ci[1], "pauc_random": edc["pauc"]["random"][error],
               "pauc_known_quality": (edc["pauc"].get("known_quality") or {}).get(error),
               "pauc_oracle": (edc["pauc"].get("oracle") or {}).get(error)}
        for fmr, area in ((edc.get("crfiqa") or {}).get(who, {}).get("auc") or {}).items():
            row[f"crfiqa_auc@FMR={fmr}"] = area
        row["replicates"] = ((edc.get("bootstrap") or {}).get("replicates") or "") if who == "method" else ""
        rows.append(row)
    return rows


def edc_table(edcs: Mapping[str, dict], paths: Mapping[str, str]) -> pd.DataFrame:
    """The table (module docstring) from ``{label: EDC dict}``; bounds from the first file."""
    rows = []
    for label, edc in edcs.items():
        rows += _rows_of(label, edc, "method", paths[label])
    first_label, first = next(iter(edcs.items()))
    for who in ("oracle", "known_quality", "random"):
        if who in first["pauc"]:
            for row in _rows_of(f"{BOUND_LABELS[who]} (on {first_label} scores)", first, who, paths[first_label]):
                row["uncertainty_kind"] = row["space"] = row["replicates"] = ""
                rows.append(row)
    table = pd.DataFrame.from_records(rows)
    extra = [c for c in table.columns if c not in EDC_COLUMNS]
    return table[EDC_COLUMNS + extra]


def plot_edc(edcs: Mapping[str, dict], out_path, *, title: str = "EDC") -> Path:
    """FNM-EDC and FM-EDC, one step line per method, bounds from the first file."""
    from facetrust.report.figures import new_figure, save_figure

    first_label, first = next(iter(edcs.items()))
    limit = float((first.get("settings") or {}).get("discard_limit", 0.2))
    with new_figure(2, panel_size=(6.0, 4.5)) as (figure, axes):
        for ax, error, name in zip(axes, ("fnmr", "fmr"), ("FNM-EDC (mated pairs)", "FM-EDC (non-mated pairs)")):
            start = float(first["starting_error_achieved"][error])
            for label, edc in edcs.items():
                curve = edc["curves"]["method"][error]
                kind = (edc.get("settings") or {}).get("uncertainty_kind") or "?"
                ax.step(curve["discard"], curve["error"], where="post", lw=1.4,
                        label=f"{label} [{kind}] (pAUC {edc['pauc']['method'][error]:.4f})")
            for who, style in (("random", dict(color="0.5", ls="--", lw=1.2)),
                               ("known_quality", dict(color="k", ls=":", lw=1.2)),
                               ("oracle", dict(color="k", ls="-.", lw=0.8))):
                if who in first["curves"]:
                    curve = first["curves"][who][error]
                    ax.step(curve["discard"], curve["error"], where="post",
                            label=f"{BOUND_LABELS[who]} (pAUC {first['pauc'][who][error]:.4f})", **style)
            ax.plot([0, start], [start, 0], color="0.7", lw=1, label="theoretical best")
            ax.axvline(limit, color="0.8", lw=1)
            ax.set_xlim(0, 0.5)
            ax.set_ylim(0, start * 2.0)  # room for the legend above the curves
            ax.set_xlabel("fraction of comparisons discarded (lowest pair quality first)")
            ax.set_ylabel(error.upper() + " at the fixed threshold")
            ax.set_title(f"{name}; pAUC to {limit:g} minus best")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper right")
        figure.suptitle(f"{title} (bounds on {first_label} scores)")
        return save_figure(figure, out_path)


def write_edc_outputs(edc_paths: Mapping[str, str], out_csv, figure_out=None, *, title: str = "EDC") -> pd.DataFrame:
    """Read the EDC files (``{label: path}``), write the table CSV (and the figure); return the table."""
    if not edc_paths:
        raise InputError("report edc: no EDC file given")
    edcs = {label: read_edc(path) for label, path in edc_paths.items()}
    table = edc_table(edcs, edc_paths)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    if figure_out is not None:
        plot_edc(edcs, figure_out, title=title)
    return table


def edc_pauc_replicates(path) -> np.ndarray | None:
    """The FNM-EDC pAUC replicates of a method (``pauc_method_fnmr``) from its ``.npz``, or None."""
    loaded = edc_replicates(path)
    return None if loaded is None else loaded[0]


def edc_replicates(path) -> tuple[np.ndarray, int | None, str | None] | None:
    """``(pauc_method_fnmr replicates, seed, design digest)`` of an EDC replicate ``.npz``, or None.

    Two methods' replicates are paired only when seed and design digest agree
    (:func:`check_edc_paired`); the shape alone does not say so."""
    path = Path(path) if path else None
    if path is None or not path.is_file():
        return None
    from facetrust.npz import read_npz_holding

    data = read_npz_holding(path, "pauc_method_fnmr", ["pauc_method_fnmr"], optional=["seed", "design_digest"],
                            what="EDC replicates .npz")
    if data is None:
        return None
    try:
        seed = int(data["seed"].reshape(())) if "seed" in data else None
        digest = str(data["design_digest"].reshape(())) if "design_digest" in data else None
        return np.asarray(data["pauc_method_fnmr"], dtype=np.float64), seed, digest
    except (TypeError, ValueError) as error:
        raise InputError(f"{path}: keys 'pauc_method_fnmr', 'seed', 'design_digest' of the wrong kind "
                         f"({error})") from None


def edc_paired(a, b) -> bool:
    """True when two :func:`edc_replicates` results share seed, design digest and count."""
    return (a is not None and b is not None and a[1] is not None and a[2] is not None
            and a[1] == b[1] and a[2] == b[2] and a[0].shape == b[0].shape)
