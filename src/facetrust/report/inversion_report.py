"""``results/reports/inversion.md``, ``results/inversion_table.csv`` and the inversion grid, from
the inversion stage's JSON and images (:mod:`facetrust.explain.inversion_stage`).

Claims (95% bootstrap intervals over images; ``held`` / ``did not hold`` / ``not resolved``):

* *the verifier recognises the class representations*: its top-1 rate on the ``full`` images
  exceeds chance (1 / number of classes);
* *they look like their class to a second network*: cosine to the own class's real images minus
  the mean cosine to the other chosen classes > 0;
* *the BN statistics term matters* / *the class term matters* (DeepInversion's ablation): the
  verifier's target probability of ``full`` minus that of ``no_bn`` / ``no_class`` > 0 (images
  paired by class and start).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from facetrust.io import atomic_path, read_json, write_text_atomic
from facetrust.report.explanations_report import _interval, side_verdict
from facetrust.report.papers import Claim, figure_links, inputs_section, markdown_table, number

CHECKS = ("top1", "target_probability", "cosine_own", "cosine_other", "own_nearest")


def inversion_rows(result: dict) -> pd.DataFrame:
    rows = []
    for variant, entry in result["variants"].items():
        row = {"model": Path(result["model"]).name, "verifier": Path(result["verifier"]).name, "variant": variant,
               "images": len(entry["per_image"]["top1"]), "chance": result["chance"]}
        for check in CHECKS:
            for suffix, value in zip(("", "_low", "_high"), entry["checks"][check]):
                row[f"{check}{suffix}"] = value
        row["model_target_probability_start"] = entry["model_target_probability"]["start"]
        row["model_target_probability_end"] = entry["model_target_probability"]["end"]
        rows.append(row)
    return pd.DataFrame(rows)


def inversion_claims(result: dict) -> list[Claim]:
    full = result["variants"]["full"]
    own = np.asarray(full["per_image"]["cosine_own"]) - np.asarray(full["per_image"]["cosine_other"])
    from facetrust.explain.faithfulness import bootstrap_ci

    margin = bootstrap_ci(lambda i: float(own[i].mean()), [np.arange(own.size)],
                          seed=int(result["config"]["seed"]), n_boot=1000)
    verifier = Path(result["verifier"]).name
    claims = [
        Claim(f"The verifier ({verifier}) classifies the full inversions as their target class at a top-1 rate of "
              f"{_interval(full['checks']['top1'], 2)} (95% bootstrap over {own.size} images) against chance "
              f"{result['chance']:.4f}.", side_verdict(full["checks"]["top1"], result["chance"], above=True)),
        Claim(f"To the verifier, a full inversion is closer to its class's real images than to the other chosen "
              f"classes': cosine own minus other = {_interval(margin)}.", side_verdict(margin, 0.0, above=True)),
    ]
    for name, difference in result.get("differences", {}).items():
        term = "BN statistics" if name.endswith("no_bn") else "class"
        claims.append(Claim(
            f"Ablation without the {term} term: the verifier's target probability of the full inversion minus the "
            f"ablated one = {_interval(difference['target_probability'])}; top-1 difference "
            f"{_interval(difference['top1'], 2)} (paired by class and start): the {term} term "
            f"{'matters' if difference['target_probability'][1] > 0 else 'is not shown to matter'}.",
            side_verdict(difference["target_probability"], 0.0, above=True)))
    return claims


def _table_md(table: pd.DataFrame) -> str:
    rows = [[r["variant"], int(r["images"]), number(r["top1"], 2), number(r["target_probability"]),
             number(r["cosine_own"]), number(r["cosine_other"]), number(r["own_nearest"], 2),
             f"{number(r['model_target_probability_start'])} → {number(r['model_target_probability_end'])}"]
            for _, r in table.iterrows()]
    return markdown_table(["variant", "images", "verifier top-1", "verifier p(target)", "cos own", "cos other",
                           "own nearest", "inverted model p(target), start → end"], rows)


def write_inversion_report(results_json: str | os.PathLike, images_npz: str | os.PathLike, out_md: str | os.PathLike,
                           *, table_csv: str | os.PathLike, figure_png: str | os.PathLike) -> list[Claim]:
    """Write the report, the table and the grid (clean rendering | full | no BN | no class)."""
    from facetrust.explain.figures import plot_inversion_variants

    result = read_json(results_json, "inversion results")
    table = inversion_rows(result)
    with atomic_path(table_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    with np.load(images_npz, allow_pickle=False) as data:
        labels = data["labels"]
        clean = dict(zip(data["classes"].tolist(), data["clean"])) if "clean" in data.files else {}
        variants = {name: {int(c): data[f"images_{name}"][labels == c][:2] for c in data["classes"].tolist()}
                    for name in result["variants"]}
    plot_inversion_variants(clean, variants, figure_png)
    claims = inversion_claims(result)
    config = result["config"]
    text = "\n\n".join([
        "# ArcFace model inversion: class representations, checked by a second model",
        f"Images of the classes {result['classes']} of `{result['model']}` are optimised from N(0, 1) for its "
        f"ArcFace loss (the margin head's class weights) plus λ·Σ_BN(‖μ̃−μ‖² + ‖σ̃−σ‖²) with λ = "
        f"{config['bn_weight']} (ArcFace TPAMI, Algorithm 1 and Eq. 8), total variation {config['tv_l2_weight']}, "
        f"image L2 {config['l2_weight']}, jitter and flips, Adam (lr {config['lr']}) with a cosine schedule, "
        f"{config['iterations']} iterations, {config['images_per_class']} images per class (DeepInversion's "
        f"options). A second, independently trained model (`{result['verifier']}`) scores them, as DeepInversion "
        "does; the ablations drop the BN term or the class term from the same start. Each class is drawn beside "
        "its clean synthetic rendering (no nuisance, no degradation).",
        "## Claims, checked on our data",
        "\n".join(claim.markdown() for claim in claims),
        "## Verifier checks (means; intervals in the CSV)",
        _table_md(table),
        "## Figures",
        figure_links([figure_png], out_md),
        inputs_section([results_json, images_npz, table_csv]),
    ]) + "\n"
    write_text_atomic(out_md, text)
    return claims
