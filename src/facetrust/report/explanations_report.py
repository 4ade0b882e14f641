"""``results/reports/explanations.md``, ``results/explain_table.csv`` and their figures, from the
faithfulness stage (:mod:`facetrust.explain.faithfulness_stage`) and the sanity stage
(:mod:`facetrust.explain.sanity_stage`).

Claims, each judged on a 95 % bootstrap interval (``held`` when the interval lies on the claimed
side, ``did not hold`` when it lies on the other, ``not resolved`` when it contains the null):

* *sanity* (Adebayo et al. 2018): after the cascade randomises the whole network, the map's |map|
  rank correlation and SSIM with the trained map lie below ``max_similarity`` (upper ends);
* *deletion / insertion is faithful*: in the map's order FNMR (genuine) or FMR (impostor) at the
  validation split's FMR threshold rises sooner on deletion, FNMR falls sooner on insertion (grey or
  blurred canvas), than in random order; the unsigned attention only: deleting high-attention
  cells first lowers the genuine pairs' xCos sooner;
* *points at the occluder*: on pairs whose occluder changes the cosine (Δcos >= the validation
  threshold), the paired lift over the strongest control is above 0;
* *restores faster*: restoring the clean twin in the map's order recovers the cosine sooner than
  the random order and than the strongest control;
* *xCos attention moves off the occluder*: attention mass in the box is lower with the occluder
  than on the clean twin.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from facetrust.errors import InputError
from facetrust.explain.method_maps import CONTROLS, METHODS, RANDOM_ORDERS
from facetrust.io import atomic_path, read_json, write_text_atomic
from facetrust.report.claims import HELD, NOT_HELD, Claim
from facetrust.report.explanations_claims import (BASELINES, _interval, explain_rows, sanity_verdict, _ordered, sanity_claims, curve_claims, known_truth_claims)
from facetrust.report.markdown import figure_links, inputs_section, markdown_table, number
from facetrust.report.xcos_report import NOT_RESOLVED

def _sanity_table(sanity: dict) -> str:
    levels, limit = sanity["levels"][1:], sanity["settings"]["max_similarity"]
    rows = []
    for method in _ordered(sanity["cascade"]):
        by_level = sanity["cascade"][method]
        cells = [f"{by_level[level]['spearman_abs'][0]:.2f} / {by_level[level]['ssim'][0]:.2f}" for level in levels]
        final = by_level[levels[-1]]
        rows.append([method, *cells, _interval(final["spearman"], 2), _interval(final["spearman_abs"], 2),
                     _interval(final["ssim"], 2),
                     {HELD: "pass", NOT_HELD: "fail"}.get(sanity_verdict(final, limit), NOT_RESOLVED)])
    spread = sanity["embedding_spread"]
    rows.append(["(embedding cosine between images, mean ± sd)",
                 *[f"{spread[level]['mean']:.2f} ± {spread[level]['sd']:.2f}" for level in levels], "", "", "",
                 f"trained {spread['trained']['mean']:.2f} ± {spread['trained']['sd']:.2f}"])
    header = ["method", *[f"{level}: ρ|·| / SSIM" for level in levels], "all: ρ signed", "all: ρ|·|", "all: SSIM",
              "verdict"]
    return markdown_table(header, rows)


def _curve_table(table: pd.DataFrame) -> str:
    rows = [[r["method"], r["score"], number(r["deletion_fnmr_at_fmr_area"]), number(r["deletion_fnmr_at_fmr_minus_random"]),
             number(r["deletion_fmr_at_fmr_area"]), number(r["deletion_fmr_at_fmr_minus_random"]),
             number(r["deletion_fnmr_at_eer_area"]), number(r["insertion_fnmr_at_fmr_minus_random"]),
             number(r["insertion_blur_fnmr_at_fmr_minus_random"]),
             number(r.get("deletion_grid_cosine_genuine_area", np.nan))] for _, r in table.iterrows()]
    return markdown_table(["method", "score", "del. FNMR@FMR area", "− random", "del. FMR area", "− random",
                           "del. FNMR@EER area", "ins. (grey) FNMR − random", "ins. (blur) FNMR − random",
                           "del. genuine grid-cosine area"], rows)


def _localisation_table(known: dict) -> str:
    rows = []
    localisation = known.get("localisation", {})
    for method in _ordered({m: v for m, v in localisation.items() if m != "controls"}):
        loc = localisation[method]
        controls = loc["control_lifts"]
        rows.append([method, _interval(loc["lift"], 2), _interval(controls.get("randomised_network"), 2),
                     _interval(controls["abs_difference"], 2), _interval(controls["norm_product"], 2),
                     loc["strongest_control"], _interval(loc["lift_over_strongest"], 2)])
    return markdown_table(["method", "lift", "randomised network", "|x1 − x2|", "norm-product weights",
                           "strongest", "lift − strongest (paired)"], rows)


def _restoration_table(known: dict) -> str:
    orders = known["restoration"]["orders"]
    rows = [[name, _interval(orders[name]["recovery_area"]), _interval(orders[name].get("vs_random")),
             orders[name].get("strongest_control", ""), _interval(orders[name].get("vs_strongest_control"))]
            for name in _ordered(orders)]
    return markdown_table(["order", "recovery area", "− random", "strongest control", "− strongest"], rows)


def write_explanations_report(results_json: str | os.PathLike, examples_npz: str | os.PathLike,
                              out_md: str | os.PathLike, *, sanity_json: str | os.PathLike,
                              sanity_examples: str | os.PathLike, table_csv: str | os.PathLike,
                              curves_png: str | os.PathLike, maps_png: str | os.PathLike,
                              cascade_png: str | os.PathLike, restoration_png: str | os.PathLike) -> list[Claim]:
    """Write the report, the table and the figures; returns the claims."""
    from facetrust.report.explain_figures import plot_cascade, plot_faithfulness_curves, plot_method_maps, plot_restoration

    result = read_json(results_json, "faithfulness results")
    sanity = read_json(sanity_json, "sanity results")
    order = [m for m in METHODS if m in result["methods"]] + [m for m in result["methods"] if m not in METHODS]
    result["methods"] = {m: result["methods"][m] for m in order}
    table = explain_rows(result, sanity)
    with atomic_path(table_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    curves = {m: {mode: e[mode]["curves"] for mode in ("deletion", "insertion", "insertion_blur")}
              for m, e in result["methods"].items()}
    plot_faithfulness_curves(result["fractions"], curves, curves_png, baselines=BASELINES)
    from facetrust.npz import read_npz

    data = read_npz(sanity_examples, what="sanity examples .npz")  # declared sizes checked, no pickles
    try:
        levels = [str(v) for v in data["levels"].tolist()]
        cascade_maps = {str(m): {level: data[f"{m}|{level}"] for level in levels} for m in data["methods"].tolist()}
        image1 = data["image1"]
    except KeyError as error:
        raise InputError(f"{sanity_examples}: missing key {error.args[0]!r}") from None
    similarity = {m: {level: v["spearman_abs"] for level, v in by.items()} for m, by in sanity["cascade"].items()}
    plot_cascade(image1, levels, cascade_maps, similarity, cascade_png)
    known = result["known_truth"]
    figures = [curves_png, cascade_png]
    data = read_npz(examples_npz, what="examples .npz")
    if "images1" in data:
        shown = [m for m in METHODS if m not in RANDOM_ORDERS]
        try:
            maps = {m: data[f"dissimilarity_{m}"] for m in shown}
            maps.update({f"randomised: {m}": data[f"randomised_{m}"] for m in ("xssab", "perturbation")})
            maps.update({c: data[f"control_{c}"] for c in CONTROLS})
            images2, boxes, keys, clean = data["images2"], data["boxes"], data["keys"], data["clean"]
        except KeyError as error:
            raise InputError(f"{examples_npz}: missing key {error.args[0]!r}") from None
        plot_method_maps(data["images1"], images2, boxes, maps, maps_png,
                         titles=[str(k) for k in keys.tolist()], clean=clean)
        figures.append(maps_png)
    if "restoration" in known:
        plot_restoration(known["restoration"], restoration_png, dashed=[*RANDOM_ORDERS, *CONTROLS],
                         randomised_of=("perturbation",))
        figures.append(restoration_png)
    claims = sanity_claims(sanity) + curve_claims(result) + known_truth_claims(result)
    thresholds = result["thresholds"]
    cos, xcos, delta = thresholds["cosine"], thresholds["xcos"], thresholds["delta_cos"]
    agreement = sanity["seed_agreement"]
    agreement_text = "; ".join(
        f"{m} ({v['masks']} masks): Spearman {_interval(v['spearman'], 3)}, SSIM {_interval(v['ssim'], 3)}"
        for m, v in agreement.items())
    gaps = np.abs(np.asarray(result["completeness_gap"]["integrated_gradients"], dtype=np.float64))
    splits = {m: float(np.mean(v)) for m, v in result["split_fraction"].items()}
    text = "\n\n".join([
        "# Explanations: sanity-checked, scored against known truth",
        f"Every map explains face 1 of a pair for the xCos network of `{result['model']}` on the test set "
        f"**{result['test_set']}**. **Every threshold comes from the validation split {result['threshold_split']}** "
        f"(identities in no test or training set): grid cosine at FMR {thresholds['threshold_fmr']} = "
        f"{cos['fmr_threshold']:.4f}, its EER threshold {cos['eer_threshold']:.4f} (EER {cos['eer']:.3f}); xCos at "
        f"FMR {thresholds['threshold_fmr']} = {xcos['fmr_threshold']:.4f}, EER threshold {xcos['eer_threshold']:.4f}, "
        f"best-accuracy τ = {xcos['accuracy_threshold']:.4f} (centre of the xCos maps); Δcos threshold "
        f"{delta['threshold']:.4f} = {delta['fraction']} × the genuine−impostor mean cosine gap "
        f"{delta['genuine_impostor_gap']:.4f} ({delta['qualifying']} of the validation split's "
        f"{delta['occluded_pairs']} occluded genuine pairs reach it).",
        "Methods: on the 6×6 grid, xCos's attention a (unsigned), its contribution a·(c − τ) and the cosine map "
        "c − τ, scored on **xCos** (the grid cosine as a second column); on pixels, the **literal xSSAB map** "
        f"(plain gradient of the positive and negative arguments, mean |∇| over RGB, split at thr/d with thr the "
        f"validation EER threshold: {100 * splits['xssab']:.0f} % of the dimensions positive on average), the "
        f"**integrated-gradients split** (Sundararajan et al.'s integrated gradients of the dimensions split at 0: "
        f"{100 * splits['integrated_gradients']:.0f} % on the similar side; completeness gap |Σ IG − Δcos| median "
        f"{np.median(gaps):.2e}, max {gaps.max():.2e}), and the RISE perturbation slope, scored on the grid cosine; "
        "random orders at both resolutions.",
        "## Sanity checks (cascading model-parameter randomisation)",
        f"Adebayo et al. (NeurIPS 2018): the network is re-initialised from the top ({', '.join(sanity['levels'][1:])}), "
        f"BatchNorm statistics recalibrated on {sanity['calibration_split']} images after each step; the maps of "
        f"{sanity['pairs']['genuine']} genuine and {sanity['pairs']['impostor']} impostor test pairs are compared with "
        "the trained network's (Spearman of |map| / SSIM per level; signed Spearman too at full randomisation). "
        "A method passes only when the similarity is low.",
        _sanity_table(sanity),
        f"Seed-to-seed agreement of the stochastic map (two mask seeds, same pairs): {agreement_text}.",
        "## Deletion and insertion",
        f"{result['pairs']['genuine']} genuine and {result['pairs']['impostor']} impostor pairs; face 1 replaced by grey "
        "(deletion) or restored onto grey or onto a blurred copy of itself (RISE) 0–95 % in the map's order; FNMR/FMR "
        "at the validation split's thresholds; areas are mean levels over the fractions (intervals in the CSV).",
        _curve_table(table),
        "## Known-truth localisation (clean twins)",
        f"{known['occluded_pairs']} test genuine pairs have exactly one occluded face; Δcos = cos(clean twin, x2) − "
        f"cos(occluded, x2) has quartiles {', '.join(f'{v:.4f}' for v in known['delta_cos_quartiles'])}; "
        f"**{known['qualifying']} pairs reach the validation threshold {known['threshold']:.4f}**"
        + (f" and {known['localised']} of them are localised." if "localised" in known else "; none is localised.")
        + " Lift = the map's mass share in the box / the box's share of the image; each method meets its map on "
        "the fully randomised network, the |x1 − x2| map and the norm-product grid weights.",
        _localisation_table(known) if "localisation" in known else "_No localisation: too few qualifying pairs._",
        "Restoration: the clean twin's pixels put back into the occluded face in each order (share of the image "
        "restored 0–50 %); recovery = (cos − cos_occluded)/(cos_twin − cos_occluded); area = mean recovery. FNMR at "
        f"the validation EER threshold goes from {known['restoration']['fnmr_occluded']:.3f} (occluded) to "
        f"{known['restoration']['fnmr_clean']:.3f} (twin)." if "restoration" in known else "",
        _restoration_table(known) if "restoration" in known else "",
        "## Claims, checked on our data",
        "\n".join(claim.markdown() for claim in claims),
        "## Figures",
        figure_links(figures, out_md),
        inputs_section([results_json, examples_npz, sanity_json, sanity_examples, table_csv]),
    ]) + "\n"
    write_text_atomic(out_md, text)
    return claims
