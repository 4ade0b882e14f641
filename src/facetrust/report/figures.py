"""Figures: ROC curves, reject-verification curves, uncertainty histograms.

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
        try:
            with np.load(path, allow_pickle=False) as data:
                if "fpr" not in data.files or "tpr" not in data.files:
                    raise InputError(f"{path}: missing key 'fpr' or 'tpr'")
                fpr, tpr = np.asarray(data["fpr"], float), np.asarray(data["tpr"], float)
        except (ValueError, OSError) as error:
            raise InputError(f"{path}: not a readable .npz without pickles ({error})") from None
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
    for key, values in tars.items():
        if not isinstance(values, list) or len(values) != len(fractions):
            raise InputError(f"{path}: tar_at_far[{key!r}] must list one TAR per fraction ({len(fractions)})")
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

QUALITY_BIN_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0)


def pair_uncertainty_and_labels(embeddings_npz: str | Path, protocol: str | Path | None = None,
                                name: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(images, image_uncertainty, pair_uncertainty, genuine)`` of a pair set or an IJB protocol.

    Pair uncertainty is the mean of its two members' (images for a pair set, templates for IJB; a
    template's uncertainty is the mean of its images', ``evaluate.reject.template_uncertainty``).
    """
    from facetrust.evaluate.reject import pair_uncertainty, template_uncertainty
    from facetrust.report.quality import load_uncertainty

    images, uncertainty, _ = load_uncertainty(embeddings_npz)
    if protocol is None:
        with np.load(embeddings_npz, allow_pickle=False) as data:
            if "issame" not in data.files:
                raise InputError(f"{embeddings_npz}: missing key 'issame' (a pair set, or pass the IJB protocol)")
            genuine = np.asarray(data["issame"]).astype(bool)
        if images.size != 2 * genuine.size:
            raise InputError(f"{embeddings_npz}: {images.size} images for {genuine.size} pairs (need 2 per pair)")
        return images, uncertainty, pair_uncertainty(uncertainty[0::2], uncertainty[1::2], "mean"), genuine

    import pandas as pd

    from facetrust.data.ijb import read_ijb_protocol
    from facetrust.evaluate.ijb import align_images

    ijb = read_ijb_protocol(protocol, name, check_landmarks=False)
    rows = align_images(images, ijb.images, embeddings_npz)
    template_ids, template_u = template_uncertainty(uncertainty[rows], ijb.template_ids, "mean")
    index = pd.Index(template_ids)
    u1 = template_u[index.get_indexer(ijb.pairs[:, 0])]
    u2 = template_u[index.get_indexer(ijb.pairs[:, 1])]
    return images, uncertainty, pair_uncertainty(u1, u2, "mean"), ijb.labels.astype(bool)


def _display_scale(values: np.ndarray) -> tuple[np.ndarray, str]:
    """Uncertainties spanning more than two decades are shown as log10 (1/κ, 1/s are heavy-tailed)."""
    if (values > 0).all() and values.max() / values.min() > 100.0:
        return np.log10(values), "log10 uncertainty"
    return values, "uncertainty"


def plot_uncertainty_histograms(embeddings_npz: str | Path, quality_csv: str | Path | None, protocol: str | Path | None,
                                out_png: str | Path, *, name: str | None = None, title: str | None = None,
                                bins: int = 30) -> Path:
    """Uncertainty histograms: pairs split genuine/impostor (left); images split by quality bin (right).

    ``protocol`` None reads a pair set (``issame`` in the embeddings file); an IJB directory (with
    protocol ``name``) pairs templates.  Quality bins are the known quality of quality.csv in
    [0, .25), [.25, .5), [.5, .75), [.75, 1]; the right panel is left out without ``quality_csv``.
    Histograms are densities over shared bin edges, so the groups compare despite their sizes.
    """
    images, uncertainty, pair_u, genuine = pair_uncertainty_and_labels(embeddings_npz, protocol, name)
    n_panels = 2 if quality_csv is not None else 1
    with new_figure(n_panels, panel_size=(5.0, 3.8)) as (figure, panels):
        shown, xlabel = _display_scale(np.concatenate([pair_u, uncertainty]))
        shown_pairs, shown_images = shown[: pair_u.size], shown[pair_u.size:]
        edges = np.histogram_bin_edges(shown, bins=bins)
        axes = panels[0]
        for mask, label in ((genuine, "genuine"), (~genuine, "impostor")):
            if mask.any():
                axes.hist(shown_pairs[mask], bins=edges, density=True, histtype="step", linewidth=1.3,
                          label=f"{label} pairs (n={int(mask.sum())})")
        axes.set_xlabel(f"pair {xlabel} (mean of the two)")
        axes.set_ylabel("density")
        axes.set_title("by pair label")
        axes.legend(loc="best", fontsize="small")
        if quality_csv is not None:
            from facetrust.report.quality import quality_rows, read_quality

            quality = quality_rows(images, read_quality(quality_csv), source=str(embeddings_npz))["quality"].to_numpy()
            axes = panels[1]
            level = np.clip(np.digitize(quality, QUALITY_BIN_EDGES[1:-1]), 0, len(QUALITY_BIN_EDGES) - 2)
            for k in range(len(QUALITY_BIN_EDGES) - 1):
                mask = level == k
                if mask.any():
                    axes.hist(shown_images[mask], bins=edges, density=True, histtype="step", linewidth=1.3,
                              label=f"quality {QUALITY_BIN_EDGES[k]:.2f}–{QUALITY_BIN_EDGES[k + 1]:.2f} "
                                    f"(n={int(mask.sum())})")
            axes.set_xlabel(f"image {xlabel}")
            axes.set_ylabel("density")
            axes.set_title("by known quality")
            axes.legend(loc="best", fontsize="small")
        source = Path(embeddings_npz)
        figure.suptitle(title or f"Uncertainty: {source.parent.name + '/' if source.parent.name else ''}{source.stem}")
        return save_figure(figure, out_png)


# --------------------------------------------------------------------------- verification accuracy


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
