"""``results/reports/explanations.md``, ``results/explain_table.csv`` and their two figures, from
the faithfulness stage's JSON and example maps (:mod:`facetrust.explain.faithfulness_stage`).

Claims, each judged on a 95% bootstrap interval over pairs (``held`` when the interval lies on the
claimed side, ``did not hold`` when it lies on the other, ``not resolved`` when it contains the
null value):

* *deletion is faithful*: removing face 1 in the order of a method's map raises FNMR of genuine
  pairs (and FMR of impostor pairs) sooner than its random order: area(method) − area(random) > 0;
* *insertion is faithful*: restoring in that order lowers FNMR sooner: the difference of FNMR
  areas < 0;
* *dissimilarity localises the occluder*: the mass share inside the known box exceeds the box's
  share of the image (mass lift > 1);
* *xCos attention avoids the occluder* (xCos's qualitative claim): the attention mass inside the box
  is below the box's share (lift < 1).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from facetrust.explain.method_maps import METHODS
from facetrust.io import atomic_path, read_json, write_text_atomic
from facetrust.report.papers import HELD, NOT_HELD, Claim, figure_links, inputs_section, markdown_table, number
from facetrust.report.xcos_report import NOT_RESOLVED

BASELINES = ("random_cells", "random_pixels")


def side_verdict(interval: Sequence[float], null: float, above: bool) -> str:
    """``held`` when (est, low, high) lies above ``null`` (``above``) or below it, ``did not hold``
    when it lies on the other side, else ``not resolved``."""
    _, low, high = (float(v) for v in interval)
    if (low > null) if above else (high < null):
        return HELD
    if (high < null) if above else (low > null):
        return NOT_HELD
    return NOT_RESOLVED


def _interval(values: Sequence[float], digits: int = 3) -> str:
    estimate, low, high = (float(v) for v in values)
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def explain_rows(result: dict) -> pd.DataFrame:
    """One row per method: areas and differences to the baseline (estimate, low, high), localisation."""
    rows = []
    for method, entry in result["methods"].items():
        row = {"method": method, "model": Path(result["model"]).name, "test_set": result["test_set"],
               "pairs_genuine": result["pairs"]["genuine"], "pairs_impostor": result["pairs"]["impostor"]}
        for mode in ("deletion", "insertion"):
            for rate in ("fnmr", "fmr"):
                for part, values in (("auc", entry[mode]["areas"][rate]),
                                     ("minus_random", entry[mode].get("vs_baseline", {}).get(rate))):
                    for suffix, value in zip(("", "_low", "_high"), values or (np.nan,) * 3):
                        row[f"{mode}_{rate}_{part}{suffix}"] = value
        loc = entry["localisation"]
        row.update(localisation_pairs=loc["pairs"], box_share=loc["box_share"])
        for key in ("mass_ratio", "mass_lift", "pointing"):
            for suffix, value in zip(("", "_low", "_high"), loc[key]):
                row[f"{key}{suffix}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def explanation_claims(result: dict) -> list[Claim]:
    claims = []
    for method, entry in result["methods"].items():
        if method in BASELINES:
            continue
        checks = [("deletion", "fnmr", True, "genuine pairs are rejected sooner"),
                  ("deletion", "fmr", True, "impostor pairs are accepted sooner"),
                  ("insertion", "fnmr", False, "genuine pairs are accepted sooner")]
        for mode, rate, above, meaning in checks:
            difference = entry[mode]["vs_baseline"][rate]
            claims.append(Claim(
                f"{method}, {mode}: {rate.upper()} area minus the {entry[mode]['vs_baseline']['baseline']} order = "
                f"{_interval(difference)} (95% paired bootstrap over pairs): in its order {meaning} than in "
                f"random order.", side_verdict(difference, 0.0, above)))
        loc = entry["localisation"]
        avoid = method == "xcos_attention"
        claims.append(Claim(
            f"{method}, known-truth localisation on {loc['pairs']} occluded genuine pairs: "
            f"{'attention' if avoid else 'dissimilarity'} mass in the occluder box {_interval(loc['mass_ratio'])} "
            f"against the box's share {loc['box_share']:.3f} (lift {_interval(loc['mass_lift'], 2)}; pointing "
            f"game {_interval(loc['pointing'], 2)}): " + ("xCos's attention moves away from the occluded part."
                                                          if avoid else "the map points at the occluder."),
            side_verdict(loc["mass_lift"], 1.0, above=not avoid)))
    return claims


def _summary_table(table: pd.DataFrame) -> str:
    rows = [[r["method"], number(r["deletion_fnmr_auc"]), number(r["deletion_fnmr_minus_random"]),
             number(r["deletion_fmr_auc"]), number(r["deletion_fmr_minus_random"]), number(r["insertion_fnmr_auc"]),
             number(r["insertion_fnmr_minus_random"]), number(r["mass_ratio"]), number(r["box_share"]),
             number(r["mass_lift"], 2), number(r["pointing"], 2)] for _, r in table.iterrows()]
    return markdown_table(["method", "deletion FNMR area", "− random", "deletion FMR area", "− random",
                           "insertion FNMR area", "− random", "mass in box", "box share", "lift", "pointing"], rows)


def write_explanations_report(results_json: str | os.PathLike, examples_npz: str | os.PathLike,
                              out_md: str | os.PathLike, *, table_csv: str | os.PathLike,
                              curves_png: str | os.PathLike, maps_png: str | os.PathLike) -> list[Claim]:
    """Write the report, the table and both figures; returns the claims."""
    from facetrust.explain.figures import plot_faithfulness_curves, plot_method_maps

    result = read_json(results_json, "faithfulness results")
    order = [m for m in METHODS if m in result["methods"]] + [m for m in result["methods"] if m not in METHODS]
    result["methods"] = {m: result["methods"][m] for m in order}  # the methods' own order, not the file's
    table = explain_rows(result)
    with atomic_path(table_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    curves = {m: {mode: e[mode]["curves"] for mode in ("deletion", "insertion")} for m, e in result["methods"].items()}
    plot_faithfulness_curves(result["fractions"], curves, curves_png, baselines=BASELINES)
    with np.load(examples_npz, allow_pickle=False) as data:
        maps = {str(m): data[f"dissimilarity_{m}"] for m in data["methods"].tolist()}
        plot_method_maps(data["images1"], data["images2"], data["boxes"], maps, maps_png,
                         titles=[str(k) for k in data["keys"].tolist()])
    claims = explanation_claims(result)
    text = "\n\n".join([
        "# Explanations scored against known truth",
        f"Every map explains face 1 of a pair for the network of `{result['model']}` (its grid-feature cosine): "
        f"xCos's attention, its attention-weighted contribution a·(c − τ) and its cosine map c − τ "
        f"(τ = {result['xcos_threshold']:.3f}, the xCos threshold of best accuracy on {result['test_set']}), "
        "on its grid; an integrated-gradient map split into similar and dissimilar embedding dimensions "
        "(xSSAB) and a RISE perturbation map, on pixels; random orders at both resolutions. "
        f"Deletion/insertion: {result['pairs']['genuine']} genuine and {result['pairs']['impostor']} impostor "
        f"pairs, face 1 replaced by grey (or restored) 0–95 % in the map's order; FNMR/FMR at the threshold "
        f"{result['threshold']:.3f} (FMR {result['threshold_fmr']} on the whole set); areas are mean levels "
        "over the fractions. Localisation: genuine pairs with exactly one occluded face, the occluder box "
        "known from the synthetic benchmark. Each map is compared with the random order of its own "
        "resolution. A pixel order taken from a gradient can move the score by more than the content it "
        "removes (a few pixels chosen against the model act like an adversarial edit), which deletion and "
        "insertion cannot tell from faithfulness; the known-truth localisation can.",
        "## Claims, checked on our data",
        "\n".join(claim.markdown() for claim in claims),
        "## Faithfulness and localisation per method (estimates; intervals in the CSV)",
        _summary_table(table),
        "## Figures",
        figure_links([curves_png, maps_png], out_md),
        inputs_section([results_json, examples_npz, table_csv]),
    ]) + "\n"
    write_text_atomic(out_md, text)
    return claims
