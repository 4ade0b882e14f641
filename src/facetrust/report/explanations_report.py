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
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from facetrust.explain.method_maps import CONTROLS, GRID_METHODS, METHODS, RANDOM_ORDERS, UNSIGNED
from facetrust.io import atomic_path, read_json, write_text_atomic
from facetrust.report.claims import HELD, NOT_HELD, Claim
from facetrust.report.markdown import figure_links, inputs_section, markdown_table, number
from facetrust.report.xcos_report import NOT_RESOLVED

BASELINES = RANDOM_ORDERS
NOT_SHOWN = "not shown"


def side_verdict(interval: Sequence[float], null: float, above: bool) -> str:
    """``held`` when (est, low, high) lies above ``null`` (``above``) or below it, ``did not hold``
    when it lies on the other side, else ``not resolved``."""
    _, low, high = (float(v) for v in interval)
    if not (np.isfinite(low) and np.isfinite(high)):
        return NOT_RESOLVED
    if (low > null) if above else (high < null):
        return HELD
    if (high < null) if above else (low > null):
        return NOT_HELD
    return NOT_RESOLVED


def _interval(values: Sequence[float] | None, digits: int = 3) -> str:
    if values is None:
        return "—"
    estimate, low, high = (float(v) for v in values)
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def explain_rows(result: dict, sanity: dict) -> pd.DataFrame:
    """One row per method: curve areas and differences to the random order, localisation,
    restoration and the sanity check (estimate, low, high)."""
    known = result["known_truth"]
    localisation, restoration = known.get("localisation", {}), known.get("restoration", {}).get("orders", {})
    final = sanity["levels"][-1]
    rows = []
    for method, entry in result["methods"].items():
        row = {"method": method, "model": Path(result["model"]).name, "test_set": result["test_set"],
               "threshold_split": result["threshold_split"], "score": entry["deletion"]["score"],
               "pairs_genuine": result["pairs"]["genuine"], "pairs_impostor": result["pairs"]["impostor"]}

        def put(name: str, values) -> None:
            for suffix, value in zip(("", "_low", "_high"), values if values is not None else (np.nan,) * 3):
                row[f"{name}{suffix}"] = value

        for mode in ("deletion", "insertion", "insertion_blur"):
            for rate in ("fnmr_at_fmr", "fmr_at_fmr", "fnmr_at_eer", "score_genuine"):
                put(f"{mode}_{rate}_area", entry[mode]["areas"][rate])
                put(f"{mode}_{rate}_minus_random", entry[mode].get("vs_baseline", {}).get(rate))
            if "grid_cosine" in entry[mode]:
                put(f"{mode}_grid_cosine_genuine_area", entry[mode]["grid_cosine"]["areas"]["score_genuine"])
        loc = localisation.get(method)
        row["localisation_pairs"] = loc["pairs"] if loc else 0
        put("lift", loc["lift"] if loc else None)
        row["strongest_control"] = loc["strongest_control"] if loc else ""
        put("lift_over_strongest", loc["lift_over_strongest"] if loc else None)
        rest = restoration.get(method)
        put("recovery_area", rest["recovery_area"] if rest else None)
        put("recovery_minus_random", rest.get("vs_random") if rest else None)
        put("recovery_minus_strongest", rest.get("vs_strongest_control") if rest else None)
        check = sanity["cascade"].get(method, {}).get(final)
        put("randomised_spearman_abs", check["spearman_abs"] if check else None)
        put("randomised_ssim", check["ssim"] if check else None)
        row["sanity_passes"] = sanity["passes"].get(method, "")
        rows.append(row)
    return pd.DataFrame(rows)


def sanity_verdict(check: dict, limit: float) -> str:
    """held (passes): both upper ends below ``limit``; did not hold: either lower end above it."""
    upper = max(check["spearman_abs"][2], check["ssim"][2])
    lower = max(check["spearman_abs"][1], check["ssim"][1])
    return HELD if upper < limit else NOT_HELD if lower > limit else NOT_RESOLVED


def _ordered(mapping: dict) -> list[str]:
    return [m for m in METHODS if m in mapping] + [m for m in mapping if m not in METHODS]


def sanity_claims(sanity: dict) -> list[Claim]:
    final, limit = sanity["levels"][-1], sanity["settings"]["max_similarity"]
    claims = []
    for method in _ordered(sanity["cascade"]):
        check = sanity["cascade"][method][final]
        verdict = sanity_verdict(check, limit)
        claims.append(Claim(
            f"{method} passes the cascading randomisation check: with every layer re-initialised (BN "
            f"recalibrated) its map's |map| rank correlation with the trained map is {_interval(check['spearman_abs'], 2)} "
            f"and SSIM {_interval(check['ssim'], 2)} (mean over {sum(sanity['pairs'].values())} pairs, 95 % bootstrap; "
            f"pass = both upper ends below {limit}).", verdict))
    return claims


def curve_claims(result: dict) -> list[Claim]:
    claims = []
    for method, entry in result["methods"].items():
        if method in BASELINES:
            continue
        score = "xCos" if method in GRID_METHODS else "the grid cosine"
        baseline = entry["deletion"]["vs_baseline"]["baseline"]
        if method in UNSIGNED:
            difference = entry["deletion"]["vs_baseline"]["score_genuine"]
            claims.append(Claim(
                f"{method} (unsigned: ranks cells, no for/against claim), deletion: mean genuine {score} area minus "
                f"the {baseline} order = {_interval(difference)}: deleting high-attention cells first lowers xCos "
                "sooner than random.", side_verdict(difference, 0.0, above=False)))
            continue
        checks = [("deletion", "fnmr_at_fmr", True, "genuine pairs are rejected sooner"),
                  ("deletion", "fmr_at_fmr", True, "impostor pairs are accepted sooner"),
                  ("insertion", "fnmr_at_fmr", False, "genuine pairs are accepted sooner (grey canvas)"),
                  ("insertion_blur", "fnmr_at_fmr", False, "genuine pairs are accepted sooner (blurred canvas)")]
        for mode, rate, above, meaning in checks:
            difference = entry[mode]["vs_baseline"][rate]
            claims.append(Claim(
                f"{method} (scored on {score}), {mode}: {rate.split('_')[0].upper()} area at the validation FMR "
                f"threshold minus the {baseline} order = {_interval(difference)} (paired bootstrap over pairs): in "
                f"its order {meaning} than in random order.", side_verdict(difference, 0.0, above)))
    return claims


def known_truth_claims(result: dict) -> list[Claim]:
    known = result["known_truth"]
    if "localisation" not in known:
        return [Claim(f"Localisation: only {known['qualifying']} of {known['occluded_pairs']} occluded genuine pairs "
                      f"reach Δcos >= {known['threshold']:.4f}; no localisation claim can be checked.", NOT_SHOWN)]
    claims = []
    n = known["localised"]
    for method in _ordered(known["localisation"]):
        loc = known["localisation"][method]
        if method in ("controls", *BASELINES):
            continue
        verdict = side_verdict(loc["lift_over_strongest"], 0.0, above=True)
        claims.append(Claim(
            f"{method} points at the occluder ({n} pairs with Δcos >= {known['threshold']:.4f}): lift "
            f"{_interval(loc['lift'], 2)}; strongest control {loc['strongest_control']} "
            f"{_interval(loc['control_lifts'][loc['strongest_control']], 2)}; paired lift over it "
            f"{_interval(loc['lift_over_strongest'], 2)}.", verdict))
    for method in _ordered(known["restoration"]["orders"]):
        entry = known["restoration"]["orders"][method]
        if "vs_random" not in entry:
            continue
        both = [side_verdict(entry["vs_random"], 0.0, True), side_verdict(entry["vs_strongest_control"], 0.0, True)]
        verdict = HELD if all(v == HELD for v in both) else NOT_HELD if NOT_HELD in both else NOT_RESOLVED
        claims.append(Claim(
            f"{method} restores the clean twin faster: recovery area {_interval(entry['recovery_area'])}, minus the "
            f"random order {_interval(entry['vs_random'])}, minus the strongest control "
            f"({entry['strongest_control']}) {_interval(entry['vs_strongest_control'])}.", verdict))
    attention = known["attention"]
    claims.append(Claim(
        f"xCos attention moves off the occluder: attention mass in the box with the occluder "
        f"{_interval(attention['mass_occluded'])} vs on the clean twin {_interval(attention['mass_clean'])}, paired "
        f"difference {_interval(attention['difference'])} ({attention['pairs']} pairs).",
        side_verdict(attention["difference"], 0.0, above=False)))
    return claims


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
    with np.load(sanity_examples, allow_pickle=False) as data:
        levels = [str(v) for v in data["levels"].tolist()]
        cascade_maps = {str(m): {level: data[f"{m}|{level}"] for level in levels} for m in data["methods"].tolist()}
        similarity = {m: {level: v["spearman_abs"] for level, v in by.items()} for m, by in sanity["cascade"].items()}
        plot_cascade(data["image1"], levels, cascade_maps, similarity, cascade_png)
    known = result["known_truth"]
    figures = [curves_png, cascade_png]
    with np.load(examples_npz, allow_pickle=False) as data:
        if "images1" in data:
            shown = [m for m in METHODS if m not in RANDOM_ORDERS]
            maps = {m: data[f"dissimilarity_{m}"] for m in shown}
            maps.update({f"randomised: {m}": data[f"randomised_{m}"] for m in ("xssab", "perturbation")})
            maps.update({c: data[f"control_{c}"] for c in CONTROLS})
            plot_method_maps(data["images1"], data["images2"], data["boxes"], maps, maps_png,
                             titles=[str(k) for k in data["keys"].tolist()], clean=data["clean"])
            figures.append(maps_png)
    if "restoration" in known:
        signed = [m for m in METHODS if m not in UNSIGNED]
        plot_restoration(known["restoration"], restoration_png, dashed=[*RANDOM_ORDERS, *CONTROLS],
                         randomised_of=("perturbation",))
        figures.append(restoration_png)
        del signed
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
