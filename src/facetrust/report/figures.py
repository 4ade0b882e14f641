"""Figures: ROC curves, reject-verification curves, verification accuracy (uncertainty histograms:
:mod:`facetrust.report.uncertainty_figures`).

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot
state, no display), under matplotlib's default rc settings (a user ``matplotlibrc`` changes
nothing), at a fixed DPI and with the date/software metadata removed, so the same inputs give
byte-identical files (PNG, PDF or SVG, chosen by the output suffix).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from facetrust.errors import ConfigError, InputError
from facetrust.formats import read_metrics
from facetrust.io import atomic_path

DPI = 120
# Metadata keys that carry a date or a version, per format: None drops them.
_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
    "svg": {"Creator": None, "Date": None},
}
_RC = {"svg.hashsalt": "facetrust", "svg.fonttype": "path", "pdf.compression": 6}


@contextlib.contextmanager
def new_figure(n_panels: int = 1, *, panel_size: tuple[float, float] = (5.0, 4.0)) -> Iterator[tuple[Figure, list]]:
    """A figure with ``n_panels`` axes, at most three per row, drawn under matplotlib's defaults."""
    columns = min(n_panels, 3)
    rows = -(-n_panels // columns)
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(_RC)
        figure = Figure(figsize=(panel_size[0] * columns, panel_size[1] * rows), dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        axes = [figure.add_subplot(rows, columns, k + 1) for k in range(n_panels)]
        yield figure, axes


def save_figure(figure: Figure, out_path: str | Path) -> Path:
    """Write ``figure`` atomically to ``out_path`` (.png, .pdf or .svg) without date metadata."""
    out_path = Path(out_path)
    fmt = out_path.suffix.lstrip(".").lower()
    if fmt not in _METADATA:
        raise ConfigError(f"figure {str(out_path)!r}: suffix must be one of .png, .pdf, .svg")
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
    return out_path


# --------------------------------------------------------------------------- ROC


def read_roc(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` from a ROC file of ``evaluate.roc.write_roc`` (.csv with fpr,tpr,threshold or .npz)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ROC file missing")
    if path.suffix == ".npz":
        from facetrust.npz import read_npz

        data = read_npz(path, ["fpr", "tpr"], what="ROC file")  # declared sizes checked, no pickles
        try:
            fpr, tpr = np.asarray(data["fpr"], float), np.asarray(data["tpr"], float)
        except (TypeError, ValueError) as error:
            raise InputError(f"{path}: keys 'fpr' and 'tpr' must be numbers ({error})") from None
    else:
        import pandas as pd

        try:
            table = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise InputError(f"{path}: not a readable CSV ({error})") from None
        if "fpr" not in table.columns or "tpr" not in table.columns:
            raise InputError(f"{path}: expected columns fpr,tpr(,threshold), got {list(table.columns)}")
        fpr, tpr = table["fpr"].to_numpy(float), table["tpr"].to_numpy(float)
    if fpr.shape != tpr.shape or fpr.size == 0 or not (np.isfinite(fpr).all() and np.isfinite(tpr).all()):
        raise InputError(f"{path}: fpr and tpr must be equal-length finite arrays")
    return fpr, tpr


def plot_roc(curves: Mapping[str, str | Path], out_png: str | Path, title: str = "ROC") -> Path:
    """ROC curves (TAR against FAR on a log axis), one line per label of ``curves`` (label → ROC file).

    Points with FPR = 0 cannot sit on a log axis and are left out; the axis starts at the
    smallest positive FPR of all curves.
    """
    if not curves:
        raise InputError("plot_roc: no ROC files given")
    many = len(curves) > 8  # a long legend goes beside the axes, controls dashed
    with new_figure(panel_size=(9.5, 5.0) if many else (5.0, 4.0)) as (figure, (axes,)):
        lowest = 1.0
        colours = matplotlib.colormaps["tab20"] if many else None
        for k, (label, path) in enumerate(curves.items()):
            fpr, tpr = read_roc(path)
            shown = fpr > 0
            if shown.any():
                lowest = min(lowest, float(fpr[shown].min()))
            style = {"linestyle": "--" if "control" in label.lower() else "-"}
            if colours is not None:
                style["color"] = colours(k % 20)
            axes.step(fpr[shown], tpr[shown], where="post", label=label, linewidth=1.2, **style)
        axes.set_xscale("log")
        axes.set_xlim(max(lowest, 1e-7), 1.0)
        axes.set_ylim(0.0, 1.01)
        axes.set_xlabel("false accept rate (FAR)")
        axes.set_ylabel("true accept rate (TAR)")
        axes.set_title(title)
        axes.grid(True, which="major", alpha=0.3)
        if many:
            figure.legend(loc="outside right upper", fontsize="x-small")
        else:
            axes.legend(loc="lower right", fontsize="small")
        return save_figure(figure, out_png)


# --------------------------------------------------------------------------- reject curves


def read_reject(path: str | Path) -> dict:
    """A reject-verification JSON of ``evaluate reject`` (``fractions``, ``tar_at_far`` lists)."""
    path = Path(path)
    curve = read_metrics(path, "reject curve file")
    fractions = curve.get("fractions")
    tars = curve.get("tar_at_far")
    if not isinstance(fractions, list) or not isinstance(tars, dict):
        raise InputError(f"{path}: expected keys 'fractions' (list) and 'tar_at_far' (map FAR -> list)")
    from facetrust.formats import check_far_keys, metrics_number

    for k, value in enumerate(fractions):
        metrics_number(value, path, f"fractions[{k}]", low=0.0, high=1.0)
    check_far_keys(tars, path, "tar_at_far")
    for key, values in tars.items():
        if not isinstance(values, list) or len(values) != len(fractions):
            raise InputError(f"{path}: tar_at_far[{key!r}] must list one TAR per fraction ({len(fractions)})")
        for k, value in enumerate(values):  # null (or NaN): no genuine or no impostor pair kept
            metrics_number(value, path, f"tar_at_far[{key!r}][{k}]", allow_none=True, low=0.0, high=1.0)
    return curve


def reject_series(curve: dict, far: str, source: str = "reject curve") -> tuple[np.ndarray, np.ndarray]:
    """``(fractions, TAR)`` of one FAR key (NaN where a fraction left no genuine/impostor pair)."""
    key = _match_far_key(curve["tar_at_far"], far, source)
    fractions = np.asarray(curve["fractions"], dtype=np.float64)
    tar = np.array([np.nan if v is None else float(v) for v in curve["tar_at_far"][key]])
    return fractions, tar


def _match_far_key(tars: Mapping[str, list], far, source: str) -> str:
    """The key of ``tars`` equal to ``far`` as a number (``"1e-04"`` matches 1e-4 and ``"0.0001"``)."""
    try:
        target = float(far)
    except (TypeError, ValueError):
        raise ConfigError(f"FAR {far!r}: not a number") from None
    for key in tars:
        if np.isclose(float(key), target, rtol=1e-9, atol=0.0):
            return key
    raise InputError(f"{source}: no TAR for FAR {far!r} (has {sorted(tars, key=float)})")


def plot_reject_curves(curves: Mapping[str, str | Path], fars: float | str | Sequence | None, out_png: str | Path,
                       title: str = "Reject verification") -> Path:
    """TAR@FAR against the rejected fraction, one line per method, one panel per FAR.

    ``curves`` maps a method label to its reject JSON; ``fars`` is one FAR, several, or None for
    every FAR of the first curve.
    """
    if not curves:
        raise InputError("plot_reject_curves: no reject curves given")
    loaded = {label: (read_reject(path), str(path)) for label, path in curves.items()}
    if fars is None:
        first = next(iter(loaded.values()))[0]
        fars = sorted(first["tar_at_far"], key=float)
    elif isinstance(fars, (str, float, int)):
        fars = [fars]
    with new_figure(len(fars), panel_size=(4.5, 4.0)) as (figure, panels):
        for axes, far in zip(panels, fars):
            for label, (curve, source) in loaded.items():
                fractions, tar = reject_series(curve, far, source)
                axes.plot(fractions, tar, label=label, linewidth=1.2)
            axes.set_xlabel("fraction of pairs rejected (most uncertain first)")
            axes.set_ylabel(f"TAR @ FAR={float(far):g}")
            axes.set_title(f"FAR = {float(far):g}")
            axes.grid(True, alpha=0.3)
        panels[0].legend(loc="best", fontsize="small")
        figure.suptitle(title)
        return save_figure(figure, out_png)


# --------------------------------------------------------------------------- uncertainty histograms

def plot_verification_accuracy(table_path: str | Path, out_path: str | Path, *, margin_methods: Sequence[str],
                               title: str | None = None) -> Path:
    """10-fold accuracy of every row of the verification table with its 95 % bootstrap interval (the
    table's ``accuracy_ci_lo``/``accuracy_ci_hi``), one row per model, grouped by backbone: the margin
    models (``margin_methods``) beside the controls trained on the same backbone, so each margin claim
    of the SphereFace report can be read off the picture."""
    from facetrust.report.verification import read_table

    table = read_table(table_path)
    wanted = {"method", "backbone", "accuracy"}
    if not wanted <= set(table.columns):
        raise InputError(f"{table_path}: needs columns {sorted(wanted)}")
    margins = {str(m).lower() for m in margin_methods}
    rows = sorted(table.to_dict("records"), key=lambda r: (str(r["backbone"]), str(r["method"]).lower() in margins,
                                                           str(r["method"])))
    with new_figure(panel_size=(9.0, 0.42 * len(rows) + 1.6)) as (figure, (axis,)):
        for y, row in enumerate(rows):
            margin = str(row["method"]).lower() in margins
            colour = "tab:red" if margin else "tab:grey"
            low, high = row.get("accuracy_ci_lo"), row.get("accuracy_ci_hi")
            if low is not None and high is not None and np.isfinite([low, high]).all():
                axis.plot([100 * low, 100 * high], [y, y], color=colour, lw=2)
            axis.plot([100 * row["accuracy"]], [y], "o", color=colour)
        axis.set_yticks(range(len(rows)), [f"{r['method']} ({r['backbone']})" for r in rows])
        axis.invert_yaxis()
        for y in range(1, len(rows)):  # a rule between backbones
            if rows[y]["backbone"] != rows[y - 1]["backbone"]:
                axis.axhline(y - 0.5, color="0.8", lw=0.8)
        axis.set_xlabel("10-fold accuracy (%), 95 % interval")
        axis.plot([], [], "o-", color="tab:red", label="angular margin")
        axis.plot([], [], "o-", color="tab:grey", label="control (softmax, normalised softmax) or other")
        figure.legend(loc="outside lower center", ncols=2, fontsize=8)
        axis.grid(axis="x", alpha=0.3)
        axis.set_title(title or f"Verification accuracy, {rows[0]['test_set'] if rows and 'test_set' in rows[0] else ''}")
        return save_figure(figure, out_path)
