"""The one-page picture of a verification: both aligned faces with their landmarks, the score
against the threshold, each face's uncertainty against the benchmark's, and the explanation map.

Drawn with the explanation figures' machinery (:mod:`facetrust.report.explain_figures`: a bare Figure under
matplotlib's defaults, fixed DPI, no date metadata), so the same inputs give the same PNG bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import TwoSlopeNorm

from facetrust.align.warp import arcface_template
from facetrust.report.explain_figures import _annotated_map, _overlay, figure_grid, save_figure


def _face(ax, face, title: str) -> None:
    pixels = face.pixels
    height, width = pixels.shape[:2]
    ax.imshow(pixels, extent=(0, width, height, 0), interpolation="nearest")
    # pixel centres at integer + 0.5 in this extent (pixel c spans [c, c + 1])
    if face.landmarks is not None:
        template = arcface_template((height, width))
        ax.scatter(template[:, 0] + 0.5, template[:, 1] + 0.5, s=60, marker="+", color="cyan", linewidths=1.2,
                   label="template")
        ax.scatter(face.landmarks[:, 0] + 0.5, face.landmarks[:, 1] + 0.5, s=14, color="red", label="detected")
        ax.legend(loc="lower center", fontsize=6, ncol=2, framealpha=0.6, handletextpad=0.2, borderpad=0.2)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _how(face) -> str:
    name = Path(face.path).name
    if face.how == "detected":
        detection = face.detection
        return f"{name}\nMTCNN {detection['score']:.3f}, {detection['faces_found']} face(s), aligned"
    return f"{name}\n{'centre crop (no face)' if face.how == 'center_crop' else 'aligned crop as given'}"


def _score_panel(ax, record: dict) -> None:
    score = record["score"]
    decision = record.get("decision")
    lines = [f"{score['name']} score: {score['value']:.4f}"]
    if score["name"] != "cosine":
        lines.append(f"cosine: {record['cosine']:.4f}")
    if decision is not None:
        threshold = decision["threshold"]
        lines.append(f"threshold: {'+inf' if threshold is None else format(threshold, '.4f')}")
        if decision.get("far") is not None:
            lines.append(f"at FAR {decision['far']:.0e} on {decision['test_set']}")
            lines.append(f"(ROC point FAR {decision['roc_far']:.2g}, TAR {decision['roc_tar']:.3f})")
        lines.append(f"decision: {'SAME' if decision['same'] else 'DIFFERENT'} identity")
    else:
        lines.append("no threshold: no decision")
    uncertainty = record.get("uncertainty")
    if uncertainty is not None:
        for face in ("face1", "face2"):
            entry = uncertainty[face]
            shown = [f"{k} {v:.4g}" for k, v in entry.items() if k not in ("kind", "convention", "uncertainty")]
            lines.append(f"{face}: {uncertainty['kind']} {', '.join(shown)}")
    else:
        lines.append("uncertainty: none (no head or estimate)")
    ax.text(0.02, 0.98, "\n".join(lines), ha="left", va="top", fontsize=7.5, family="monospace",
            transform=ax.transAxes)
    ax.set_axis_off()
    ax.set_title("score and decision", fontsize=8)


def _threshold_axis(ax, record: dict) -> None:
    """The score on a line with the threshold, a small strip under the decision text."""
    score, decision = record["score"]["value"], record.get("decision")
    marks = [score] + ([decision["threshold"]] if decision and decision["threshold"] is not None else [])
    low, high = min(marks), max(marks)
    pad = max(high - low, abs(high), 1e-3) * 0.3
    if record["score"]["name"] in ("cosine", "xcos"):
        low, high, pad = -1.0, 1.0, 0.0
        ax.set_xticks([-1.0, -0.5, 0.0, 0.5, 1.0])
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(0, 1)
    if len(marks) == 2:
        ax.axvspan(marks[1], high + pad, color="tab:green", alpha=0.15)
        ax.axvline(marks[1], color="black", linewidth=1.2)
    ax.plot([score], [0.5], marker="v", markersize=9, color="tab:red")
    ax.set_yticks([])
    ax.tick_params(labelsize=6)
    ax.set_xlabel("score (green: accepted as same)", fontsize=7)


def _uncertainty_panel(ax, record: dict, benchmark: np.ndarray | None) -> None:
    uncertainty = record.get("uncertainty")
    if uncertainty is None or benchmark is None:
        why = "no uncertainty" if uncertainty is None else uncertainty.get("benchmark_missing", "no benchmark")
        ax.text(0.5, 0.5, f"uncertainty vs benchmark:\n{why}", ha="center", va="center", fontsize=7,
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    logs = np.log10(benchmark)
    ax.hist(logs, bins=40, color="0.7")
    for face, color in (("face1", "tab:blue"), ("face2", "tab:orange")):
        ax.axvline(np.log10(uncertainty[face]["uncertainty"]), color=color, linewidth=1.5, label=face)
    ax.legend(fontsize=6)
    ax.set_xlabel(f"log10 uncertainty ({uncertainty['kind']})\nright = less certain", fontsize=7)
    ax.tick_params(labelsize=6)
    placed = uncertainty.get("benchmark", {})
    ax.set_title("\n".join(placed[f]["short"] for f in ("face1", "face2") if f in placed), fontsize=7)


def _explanation(axes, explanation: dict | None, face1) -> None:
    if explanation is None:
        for ax in axes:
            ax.set_axis_off()
        axes[0].text(0.5, 0.5, "no explanation (--explain none)", ha="center", va="center", fontsize=8,
                     transform=axes[0].transAxes)
        return
    if explanation["method"] == "xcos":
        norm = TwoSlopeNorm(vmin=-1.0, vcenter=float(np.clip(explanation["centre"], -0.99, 0.99)), vmax=1.0)
        _annotated_map(axes[0], explanation["cosine_map"], "RdBu", norm, "xCos cosine map", ".2f")
        _annotated_map(axes[1], explanation["attention"], "YlGn", None, "xCos attention", ".3f")
        return
    method = explanation["method"].replace("_", " ")  # two lines: a long method name fits the panel
    _overlay(axes[0], face1.pixels, explanation["similarity"], "Greens", f"{method}:\nface 1 similarity")
    _overlay(axes[1], face1.pixels, explanation["dissimilarity"], "Reds", f"{method}:\nface 1 dissimilarity")


def plot_verification(face1, face2, record: dict, explanation: dict | None, benchmark: np.ndarray | None,
                      out_path: str | Path) -> Path:
    """Write the page (2 x 3 panels) to ``out_path`` (.png)."""
    with figure_grid(2, 3, panel=2.9) as (figure, axes):
        _face(axes[0, 0], face1, "face 1: " + _how(face1))
        _face(axes[0, 1], face2, "face 2: " + _how(face2))
        _score_panel(axes[0, 2], record)
        strip = axes[0, 2].inset_axes([0.05, 0.02, 0.9, 0.12])
        _threshold_axis(strip, record)
        _explanation(axes[1, :2], explanation, face1)
        _uncertainty_panel(axes[1, 2], record, benchmark)
        # tight: with no histogram and no map below, the constrained layout leaves the faces' two-line
        # titles a few pixels above the page
        return save_figure(figure, out_path, tight=True)
