"""The claims of ``results/reports/explanations.md`` and the table rows they rest on: sanity
checks (Adebayo et al. 2018), deletion/insertion faithfulness, known-truth localisation and
restoration, each verdict read off its interval (:mod:`facetrust.report.explanations_report`
writes the Markdown)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from facetrust.explain.method_maps import GRID_METHODS, METHODS, RANDOM_ORDERS, UNSIGNED
from facetrust.report.claims import HELD, NOT_HELD, Claim
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
