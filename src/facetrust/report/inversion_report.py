"""``results/reports/inversion.md``, ``results/inversion_table.csv`` and the inversion grid, from
the inversion stage's JSON and images (:mod:`facetrust.explain.inversion_stage`).

Claims (95% percentile bootstrap intervals over **classes**; ``held`` / ``did not hold`` /
``not resolved``), all on the independent verifier (another architecture, seed and data order) or
on no model at all; the twin verifier's rows are shown, labelled secondary, and decide nothing:

* the verifier's top-1 rate and its mean target probability on the ``full`` images exceed chance;
* the verifier embeds a ``full`` image closer to its class's real images than to the other chosen
  classes' (cosine own minus other > 0);
* known truth: a ``full`` image correlates (blurred, model-independent) more with its own class's
  clean rendering than with the other classes' renderings, and the same in the verifier's embedding;
* the ablations (DeepInversion's): each continuous measure of ``full`` minus ``no_bn`` /
  ``no_class``, paired by class and start, > 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from facetrust.io import atomic_path, read_json, write_text_atomic
from facetrust.report.explanations_claims import _interval, side_verdict
from facetrust.report.claims import Claim
from facetrust.report.markdown import figure_links, inputs_section, markdown_table, number

CHECKS = ("top1", "target_probability", "cosine_own", "cosine_other", "margin", "own_nearest")
MEASURES = {"verifier_target_probability": "independent verifier's target probability",
            "verifier_margin": "independent verifier's cosine to own real images minus other classes'",
            "clean_correlation_margin": "blurred correlation with own clean rendering minus other classes' (no model)",
            "clean_cosine_margin": "independent verifier's cosine to own clean rendering minus other classes'"}
FIGURE_CLASSES = 6  # rows of the image grid (every class is in the numbers)


def verifier_label(result: dict, name: str) -> str:
    if name == result.get("primary_verifier"):
        return f"{name} (independent: other architecture, seed and data order)"
    return f"{name} (secondary: the inverted model's twin, same architecture and seed)"


def inversion_rows(result: dict) -> pd.DataFrame:
    rows = []
    order = result.get("verifiers") or []
    for variant, entry in result["variants"].items():
        # the independent verifier first, then the secondary ones, as the stage listed them
        for verifier, scores in sorted(entry["verifiers"].items(),
                                       key=lambda item: order.index(item[0]) if item[0] in order else len(order)):
            row = {"model": Path(result["model"]).name, "verifier": verifier,
                   "role": "independent" if verifier == result.get("primary_verifier") else "secondary",
                   "variant": variant, "images": len(scores["per_image"]["top1"]), "classes": len(result["classes"]),
                   "chance": result["chance"]}
            for check in CHECKS:
                for suffix, value in zip(("", "_low", "_high"), scores["checks"][check]):
                    row[f"{check}{suffix}"] = value
            for name, values in (entry.get("clean") or {}).get("checks", {}).items():
                for suffix, value in zip(("", "_low", "_high"), values):
                    row[f"clean_{name}{suffix}"] = value
            row["end_bn_loss"] = entry["end_bn_loss"]
            row["final_class_loss"] = entry["final_loss"].get("class")
            row["model_target_probability_start"] = entry["model_target_probability"]["start"]
            row["model_target_probability_end"] = entry["model_target_probability"]["end"]
            rows.append(row)
    return pd.DataFrame(rows)


def inversion_claims(result: dict) -> list[Claim]:
    primary = result["primary_verifier"]
    full = result["variants"]["full"]
    checks = full["verifiers"][primary]["checks"]
    n_images = len(full["verifiers"][primary]["per_image"]["top1"])
    n = f"n = {len(result['classes'])} classes, {n_images} images"
    claims = [
        Claim(f"The independent verifier ({primary}) classifies the full inversions as their target class at a "
              f"top-1 rate of {_interval(checks['top1'], 2)} against chance {result['chance']:.4f} ({n}).",
              side_verdict(checks["top1"], result["chance"], above=True)),
        Claim(f"Its mean probability of the target class is {_interval(checks['target_probability'])} against "
              f"chance {result['chance']:.4f} ({n}).", side_verdict(checks["target_probability"], result["chance"], above=True)),
        Claim(f"To it, a full inversion is closer to its class's real images than to the other chosen classes': "
              f"cosine own minus other = {_interval(checks['margin'])} ({n}).", side_verdict(checks["margin"], 0.0, above=True)),
    ]
    clean = (full.get("clean") or {}).get("checks", {})
    if "correlation_margin" in clean:
        claims.append(Claim(
            f"Known truth, no model: a full inversion correlates more with its own class's clean rendering than with "
            f"the other classes' (blurred Pearson correlation, own minus other) = {_interval(clean['correlation_margin'])} "
            f"({n}).", side_verdict(clean["correlation_margin"], 0.0, above=True)))
    if "cosine_margin" in clean:
        claims.append(Claim(
            f"Known truth in the independent verifier's embedding: cosine to the own clean rendering minus the other "
            f"classes' = {_interval(clean['cosine_margin'])} ({n}).", side_verdict(clean["cosine_margin"], 0.0, above=True)))
    for name, differences in result.get("differences", {}).items():
        term = "BN statistics" if name.endswith("no_bn") else "class"
        for measure, interval in differences.items():
            if measure not in MEASURES or np.isnan(interval[0]):
                continue
            verdict = side_verdict(interval, 0.0, above=True)
            claims.append(Claim(
                f"The {term} term raises the {MEASURES[measure]}: full minus without it = {_interval(interval)} "
                f"(paired by class and start; {n}){'' if verdict != 'not resolved' else ': not resolved'}.", verdict))
    return claims


def _table_md(table: pd.DataFrame) -> str:
    rows = []
    for _, r in table.iterrows():
        rows.append([r["variant"], f"{r['verifier']} ({r['role']})", int(r["images"]), number(r["top1"], 2),
                     number(r["target_probability"]), number(r["margin"]),
                     number(r.get("clean_correlation_margin", np.nan)), number(r.get("clean_cosine_margin", np.nan)),
                     number(r["end_bn_loss"], 1),
                     f"{number(r['model_target_probability_start'])} → {number(r['model_target_probability_end'])}"])
    return markdown_table(["variant", "verifier", "images", "top-1", "p(target)", "cos own − other (real)",
                           "clean: corr own − other", "clean: cos own − other (independent)", "end BN loss",
                           "inverted model p(target), start → end"], rows)


def _gradient_md(result: dict) -> str:
    rows = []
    for variant, entry in result["variants"].items():
        for row in entry.get("gradient_norms", []):
            rows.append([variant, row["iteration"], *(f"{row.get(f'grad_norm_{t}', 0.0):.3g}"
                                                      for t in ("class", "bn", "tv_l2", "l2"))])
    return markdown_table(["variant", "iteration", "‖∇ class‖", "‖∇ λ·BN‖", "‖∇ TV‖", "‖∇ L2‖"], rows)


def _selection_md(selection: dict | None) -> str:
    if not selection:
        return "No selection file: the TV weight and step count are the params values."
    rows = [[", ".join(f"{k} {v}" for k, v in c["values"].items()), f"{c['correlation_margin']:.4f}",
             f"{c['end_bn_loss']:.1f}", "chosen" if c["values"] == selection["chosen"] else ""]
            for c in selection["candidates"]]
    return (f"Chosen on the validation classes {selection['classes']} ({selection['images_per_class']} images each; "
            f"none of them is reported), criterion: {selection['criterion']}. No verifier is consulted.\n\n"
            + markdown_table(["candidate", "validation corr own − other", "end BN loss", ""], rows))


def write_inversion_report(results_json: str | os.PathLike, images_npz: str | os.PathLike, out_md: str | os.PathLike,
                           *, table_csv: str | os.PathLike, figure_png: str | os.PathLike,
                           selection_json: str | os.PathLike | None = None) -> list[Claim]:
    """Write the report, the table and the grid (clean rendering | full | no BN | no class)."""
    from facetrust.report.inversion_figures import plot_inversion_variants

    result = read_json(results_json, "inversion results")
    selection = read_json(selection_json, "inversion selection") if selection_json else None
    table = inversion_rows(result)
    with atomic_path(table_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    from facetrust.npz import read_npz

    data = read_npz(images_npz, ["labels", "classes", *(f"images_{name}" for name in result["variants"])],
                    optional=["clean"], what="inversion images .npz")
    labels = data["labels"]
    drawn = data["classes"].tolist()[:FIGURE_CLASSES]
    clean = dict(zip(data["classes"].tolist(), data["clean"])) if "clean" in data else {}
    variants = {name: {int(c): data[f"images_{name}"][labels == c][:2] for c in drawn}
                for name in result["variants"]}
    plot_inversion_variants(clean, variants, figure_png)
    claims = inversion_claims(result)
    config = result["config"]
    text = "\n\n".join([
        "# ArcFace model inversion: class representations, checked by an independent verifier and known truth",
        f"Images of the classes {result['classes']} of `{result['model']}` ({config['images_per_class']} per class) are "
        f"optimised from N(0, 1) for its ArcFace loss (the margin head's class weights) plus λ·Σ_BN(‖μ̃−μ‖² + ‖σ̃−σ‖²) "
        f"with λ = {config['bn_weight']} (ArcFace TPAMI, Algorithm 1 and Eq. 8), the TV-L2 prior "
        f"({config['tv_l2_weight']}) and the image L2 prior ({config['l2_weight']}) computed on the jittered, flipped "
        f"batch as DeepInversion computes them, Adam (lr {config['lr']}) with a cosine schedule, "
        f"{config['iterations']} iterations. The ablations drop the BN term or the class term from the same start. "
        f"Verifiers: {'; '.join(verifier_label(result, v) for v in result['verifiers'])}. Known truth: each class's "
        "clean rendering (its identity frontal, neutral, evenly lit, undegraded), compared with the inversions without "
        "any model (Pearson correlation after a 1-px Gaussian blur at 32 px) and in the independent verifier's "
        f"embedding. Intervals: {result.get('interval', '95% bootstrap')}; only the independent verifier and the "
        "model-free measure decide a claim.",
        "## Claims, checked on our data",
        "\n".join(claim.markdown() for claim in claims),
        "## Verifier checks and known truth (means; intervals in the CSV)",
        _table_md(table),
        "## What drives the images: gradient norm of each weighted term",
        "The norm of each weighted term's gradient with respect to the images at evenly spaced iterations; the end BN "
        "loss (table above) is the BN term of the finished, un-jittered batch, so the no-BN ablation shows how far the "
        "statistics drift without it.",
        _gradient_md(result),
        "## TV weight and step count: chosen on validation classes",
        _selection_md(selection),
        "## Figures",
        f"The first {FIGURE_CLASSES} classes, two images per variant, beside each class's clean rendering.",
        figure_links([figure_png], out_md),
        inputs_section([results_json, images_npz, table_csv, *([selection_json] if selection_json else [])]),
    ]) + "\n"
    write_text_atomic(out_md, text)
    return claims
