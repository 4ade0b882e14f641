"""Figures of explanations: xCos pairs, similarity maps, inversion grids (matplotlib, Agg).

* :func:`plot_xcos_pairs` — one row per pair as the xCos repository draws it (ntubiolin/xcos,
  ``visualize_xcos_one_example``): both aligned faces with the grid, the cosine map in a
  diverging palette (RdBu) centred on the decision threshold over [-1, 1], the attention map
  (YlGn), and the xCos value with the decision (and the truth when known).
* :func:`plot_pair_map` — a training-free map: both faces, the similarity and the dissimilarity
  evidence over face 1.
* inversion grids: :mod:`facetrust.report.inversion_figures`.

Drawn on a bare ``Figure`` under matplotlib's default rc settings at a fixed DPI with the date
metadata dropped, so the same inputs give byte-identical PNGs (as ``facetrust.report.figures``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from facetrust.errors import ConfigError, InputError
from facetrust.io import atomic_path

DPI = 120


def to_uint8(image) -> np.ndarray:
    """A normalised (3, H, W) tensor/array in [-1, 1] (or an H x W x 3 uint8 array) as uint8 HxWx3."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.ndim != 3 or image.shape[0] != 3:
        raise InputError(f"figure: expected a (3, H, W) image, got shape {image.shape}")
    return np.clip(np.rint(image.transpose(1, 2, 0) * 127.5 + 127.5), 0, 255).astype(np.uint8)


@contextlib.contextmanager
def figure_grid(rows: int, columns: int, panel: float = 2.4) -> Iterator[tuple[Figure, np.ndarray]]:
    """A rows x columns figure drawn (and saved, inside the block) under matplotlib's defaults."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        figure = Figure(figsize=(panel * columns, panel * rows + 0.4), dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        yield figure, np.asarray(figure.subplots(rows, columns, squeeze=False))


def save_figure(figure: Figure, out_path: str | Path, *, tight: bool = False) -> Path:
    """``figure`` as a PNG at ``out_path`` (written whole or not at all); ``tight``: the page grows to
    hold every artist (a title the layout engine left outside the figure)."""
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".png":
        raise ConfigError(f"figure {str(out_path)!r}: suffix must be .png")
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None},
                       **({"bbox_inches": "tight", "pad_inches": 0.08} if tight else {}))
    return out_path


def _face_with_grid(ax, image: np.ndarray, grid_shape: tuple[int, int], title: str) -> None:
    height, width = image.shape[:2]
    ax.imshow(image, extent=(0, width, height, 0), interpolation="nearest")
    rows, cols = grid_shape
    for k in range(1, rows):
        ax.axhline(k * height / rows, color="white", linewidth=0.6, alpha=0.8)
    for k in range(1, cols):
        ax.axvline(k * width / cols, color="white", linewidth=0.6, alpha=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _annotated_map(ax, values: np.ndarray, cmap: str, norm, title: str, fmt: str) -> None:
    image = ax.imshow(values, cmap=cmap, norm=norm, interpolation="nearest")
    if values.size <= 64:  # the numbers stay legible up to 8x8
        for (row, col), value in np.ndenumerate(values):
            ax.text(col, row, format(value, fmt), ha="center", va="center", fontsize=6)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)


def plot_xcos_pairs(pairs: Sequence[Mapping], threshold: float, out_path: str | Path) -> Path:
    """One row per pair: each mapping holds ``image1``, ``image2`` (see :func:`to_uint8`),
    ``cosine_map``, ``attention`` (h, w), ``xcos`` and optionally ``issame`` (bool) and
    ``title`` (str).  The decision is "same" when xCos >= ``threshold``."""
    if not pairs:
        raise InputError("xcos figure: no pairs to draw")
    norm = TwoSlopeNorm(vmin=-1.0, vcenter=float(np.clip(threshold, -0.99, 0.99)), vmax=1.0)
    with figure_grid(len(pairs), 4) as (figure, axes):
        for row, pair in zip(axes, pairs):
            _draw_xcos_row(row, pair, threshold, norm)
        return save_figure(figure, out_path)


def _draw_xcos_row(row, pair: Mapping, threshold: float, norm) -> None:
    """One pair's four panels: the faces with the grid, the cosine map, the attention."""
    cos_map = np.asarray(pair["cosine_map"], dtype=np.float64)
    attention = np.asarray(pair["attention"], dtype=np.float64)
    same = float(pair["xcos"]) >= threshold
    verdict = f"{'>=' if same else '<'} {threshold:.3f}: {'same' if same else 'different'}"
    if "issame" in pair:
        truth = "genuine" if pair["issame"] else "impostor"
        verdict += f"\ntruth {truth}: {'correct' if same == bool(pair['issame']) else 'WRONG'}"
    _face_with_grid(row[0], to_uint8(pair["image1"]), cos_map.shape, pair.get("title", "face 1"))
    _face_with_grid(row[1], to_uint8(pair["image2"]), cos_map.shape, "face 2")
    _annotated_map(row[2], cos_map, "RdBu", norm, f"cosine map (centre {threshold:.3f})", ".2f")
    _annotated_map(row[3], attention, "YlGn", None, "attention", ".3f")
    row[0].set_ylabel(f"xCos {float(pair['xcos']):.3f} {verdict}", fontsize=8)


def _overlay(ax, face: np.ndarray, evidence: np.ndarray, cmap: str, title: str) -> None:
    grey = face.mean(axis=2)
    height, width = grey.shape
    ax.imshow(grey, cmap="gray", extent=(0, width, height, 0), interpolation="nearest")
    peak = float(evidence.max())
    # the faintest 5 % stay transparent so the face shows through where the map says nothing
    shown = np.ma.masked_less_equal(evidence, 0.05 * peak)
    image = ax.imshow(shown, cmap=cmap, alpha=0.7, extent=(0, width, height, 0), interpolation="nearest",
                      vmin=0.0, vmax=peak if peak > 0 else 1.0)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_pair_map(image1, image2, similarity: np.ndarray, dissimilarity: np.ndarray, out_path: str | Path, *,
                  cosine: float, method: str, box: Sequence[float] | None = None) -> Path:
    """Face 1, face 2, face 1 with its similarity evidence (greens) and its dissimilarity evidence
    (reds); ``box`` (x0, y0, x1, y1, face-1 pixels) outlines a known occluder."""
    face1, face2 = to_uint8(image1), to_uint8(image2)
    with figure_grid(1, 4) as (figure, axes):
        _draw_map_row(axes[0], face1, face2, similarity, dissimilarity, method, box)
        figure.suptitle(f"cosine {cosine:.3f}", fontsize=10)
        return save_figure(figure, out_path)


def _draw_map_row(row, face1, face2, similarity, dissimilarity, method: str, box) -> None:
    for ax, face, title in ((row[0], face1, "face 1 (explained)"), (row[1], face2, "face 2")):
        height, width = face.shape[:2]
        ax.imshow(face, extent=(0, width, height, 0), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    _overlay(row[2], face1, np.asarray(similarity, dtype=np.float64), "Greens", f"{method}: similarity")
    _overlay(row[3], face1, np.asarray(dissimilarity, dtype=np.float64), "Reds", f"{method}: dissimilarity")
    if box is not None:
        x0, y0, x1, y1 = box
        for ax in (row[0], row[3]):
            # every panel uses extent (0, W, H, 0): pixel c spans [c, c + 1], as the box edges do
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="cyan", linewidth=1.2))


CURVE_COLUMNS = (("fnmr_at_fmr", "FNMR (genuine) at the FMR threshold"), ("fmr_at_fmr", "FMR (impostor) at it"),
                 ("fnmr_at_eer", "FNMR (genuine) at the EER threshold"), ("score_genuine", "mean score, genuine"))


def plot_faithfulness_curves(fractions: Sequence[float], curves: Mapping[str, Mapping[str, Mapping[str, Sequence]]],
                             out_path: str | Path, *, baselines: Sequence[str] = ()) -> Path:
    """Rows: deletion to grey, insertion from grey, insertion from a blurred face; columns
    (:data:`CURVE_COLUMNS`): FNMR / FMR at the validation split's FMR threshold, FNMR at its EER
    threshold, the mean score of genuine pairs (xCos for grid methods, the grid cosine for pixel
    methods); one line per method (``curves[method][mode][name]``), ``baselines`` dashed."""
    if not curves:
        raise InputError("faithfulness figure: no methods to draw")
    x = 100.0 * np.asarray(fractions, dtype=np.float64)
    modes = [m for m in ("deletion", "insertion", "insertion_blur") if m in next(iter(curves.values()))]
    with figure_grid(len(modes), len(CURVE_COLUMNS), panel=3.0) as (figure, axes):
        for row, mode in zip(np.atleast_2d(axes), modes):
            for ax, (rate, title) in zip(row, CURVE_COLUMNS):
                for method, entry in curves.items():
                    style = "--" if method in baselines else "-"
                    ax.plot(x, entry[mode][rate], style, label=method, linewidth=1.2)
                verb = "removed" if mode == "deletion" else "restored"
                ax.set_xlabel(f"share of face 1 {verb} (%)", fontsize=8)
                ax.set_title(f"{mode}: {title}", fontsize=8)
                if rate.startswith(("fnmr", "fmr")):
                    ax.set_ylim(-0.02, 1.02)
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.3)
        np.atleast_2d(axes)[0, 0].legend(fontsize=6, loc="best")
        return save_figure(figure, out_path)


def plot_method_maps(images1, images2, boxes, maps: Mapping[str, np.ndarray], out_path: str | Path, *,
                     titles: Sequence[str] | None = None, clean=None) -> Path:
    """One row per pair: face 1 with its occluder box, its clean twin (``clean``, when given), face
    2, then each map over face 1 (``maps[name]`` (P, h, w), upsampled) with the box outlined."""
    if not maps:
        raise InputError("maps figure: no methods to draw")
    count = len(images1)
    from facetrust.explain.faithfulness import upsample

    faces = 3 if clean is not None else 2
    with figure_grid(count, faces + len(maps), panel=1.7) as (figure, axes):
        for k, row in enumerate(np.atleast_2d(axes)):
            face1, face2 = to_uint8(images1[k]), to_uint8(images2[k])
            size = face1.shape[:2]
            panels = [(row[0], face1, (titles[k] if titles else "face 1") + " (occluded)")]
            if clean is not None:
                panels.append((row[1], to_uint8(clean[k]), "clean twin"))
            panels.append((row[faces - 1], face2, "face 2"))
            for ax, face, title in panels:
                ax.imshow(face, extent=(0, size[1], size[0], 0), interpolation="nearest")
                ax.set_title(title, fontsize=6)
                ax.set_xticks([])
                ax.set_yticks([])
            for ax, (method, values) in zip(row[faces:], maps.items()):
                _overlay(ax, face1, upsample(np.asarray(values[k]), size), "Reds", method)
                ax.title.set_fontsize(6)
            x0, y0, x1, y1 = boxes[k]
            for ax in (row[0], *row[faces:]):
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="cyan", linewidth=1.0))
        return save_figure(figure, out_path)


def plot_cascade(image1, levels: Sequence[str], maps: Mapping[str, Mapping[str, np.ndarray]],
                 similarity: Mapping[str, Mapping[str, Sequence[float]]], out_path: str | Path) -> Path:
    """Adebayo's cascade: one row per method, face 1 then |map| on the trained network and after
    each cumulative randomisation level (titled with the mean |map| rank correlation to the trained
    map over the stage's pairs)."""
    from facetrust.explain.faithfulness import upsample

    face = to_uint8(image1)
    size = face.shape[:2]
    with figure_grid(len(maps), 1 + len(levels), panel=1.6) as (figure, axes):
        for row, (method, by_level) in zip(np.atleast_2d(axes), maps.items()):
            row[0].imshow(face, interpolation="nearest")
            row[0].set_title(method, fontsize=7)
            row[0].axis("off")
            for ax, level in zip(row[1:], levels):
                values = np.abs(upsample(np.asarray(by_level[level]), size))
                ax.imshow(values, cmap="magma", interpolation="nearest")
                rho = similarity.get(method, {}).get(level)
                ax.set_title(level if rho is None else f"{level}\nρ|·| {rho[0]:.2f}", fontsize=6)
                ax.axis("off")
        return save_figure(figure, out_path)


def plot_restoration(result: Mapping, out_path: str | Path, *, dashed: Sequence[str] = (),
                     randomised_of: Sequence[str] = ()) -> Path:
    """Restoration of the clean twin in each order: mean recovery of the cosine and FNMR at the
    validation EER threshold against the share of the image restored; ``dashed`` orders (controls,
    random) and the randomised network's orders of the methods ``randomised_of`` dashed."""
    x = 100.0 * np.asarray(result["fractions"], dtype=np.float64)
    with figure_grid(1, 2, panel=4.0) as (figure, axes):
        axes = np.atleast_1d(axes).ravel()
        for name, entry in result["orders"].items():
            randomised = name.startswith("randomised_network:")
            if randomised and name.split(":", 1)[1] not in randomised_of:
                continue
            style = "--" if randomised or name in dashed else "-"
            axes[0].plot(x, entry["recovery"], style, label=name, linewidth=1.2)
            axes[1].plot(x, entry["fnmr"], style, label=name, linewidth=1.2)
        axes[0].set_ylabel("recovery (cos − cos_occluded) / (cos_twin − cos_occluded)", fontsize=7)
        axes[1].set_ylabel("FNMR at the validation EER threshold", fontsize=7)
        for ax in axes:
            ax.set_xlabel("share of face 1 restored from its clean twin (%)", fontsize=8)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        axes[0].legend(fontsize=6, loc="best")
        return save_figure(figure, out_path)


def plot_xcos_fit(target: np.ndarray, xcos: np.ndarray, issame: np.ndarray, out_path: str | Path, *,
                  pearson: float, mse: float) -> Path:
    """xCos against the cosine it regresses, one point per pair (genuine and impostor coloured), with
    the identity line and the fit figures in the title."""
    target, xcos, issame = np.asarray(target), np.asarray(xcos), np.asarray(issame, dtype=bool)
    figure = Figure(figsize=(4.2, 4.0))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    ax.scatter(target[~issame], xcos[~issame], s=4, alpha=0.4, label="impostor", color="tab:red", rasterized=True)
    ax.scatter(target[issame], xcos[issame], s=4, alpha=0.4, label="genuine", color="tab:blue", rasterized=True)
    low, high = float(min(target.min(), xcos.min())), float(max(target.max(), xcos.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=0.8, label="xCos = cos")
    ax.set_xlabel("cosine of the standard model (target)")
    ax.set_ylabel("xCos")
    ax.set_title(f"Pearson r {pearson:.3f}, MSE {mse:.4f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return save_figure(figure, out_path)
