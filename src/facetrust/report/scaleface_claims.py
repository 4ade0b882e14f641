"""ScaleFace claims with error bars: reject curves that rise, and uncertainty scored by EDC.

- "Reject curves rise": TAR with the largest fraction rejected minus TAR with none, per method and
  FAR, judged by the paired bootstrap interval of that difference (the same replicate drops pairs
  from the same resampled subjects).
- "The uncertainty ranks comparisons better than chance" (EDC, Schlett et al.): the FNM-EDC pAUC
  (minus the theoretical best) with its bootstrap interval against the random ranking's.
- "ScaleFace ranks better than method X": paired interval of the pAUC difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from facetrust.errors import InputError
from facetrust.evaluate.bootstrap import paired_difference, percentile_interval
from facetrust.report.claims import HELD, NOT_CHECKED, NOT_HELD, NOT_RESOLVED, count_text, decide, summary_verdict


def _reject_replicates(curve: dict):
    path = (curve.get("bootstrap") or {}).get("replicates")
    if not path or not Path(path).is_file():
        return None
    from facetrust.npz import read_npz_holding

    data = read_npz_holding(path, "tar_rejected", ["fars", "tar", "tar_rejected"], what="replicates .npz")
    if data is None:
        return None
    try:
        return ([float(f) for f in np.asarray(data["fars"], dtype=np.float64).ravel()],
                np.asarray(data["tar"], dtype=np.float64), np.asarray(data["tar_rejected"], dtype=np.float64))
    except (TypeError, ValueError) as error:
        raise InputError(f"{path}: keys 'fars', 'tar', 'tar_rejected' must be numbers ({error})") from None


def reject_rise_claims(curves: Mapping[str, dict]) -> list:
    """Per method: TAR at the largest rejected fraction vs none, every FAR, paired intervals."""
    from facetrust.formats import far_key
    from facetrust.report.claims import Claim, percent

    claims = []
    for method, curve in curves.items():
        loaded = _reject_replicates(curve)
        if loaded is None:
            claims.append(Claim(f"{method}: no bootstrap replicates of the reject curve, so the rise was not judged.",
                                NOT_CHECKED))
            continue
        fars, start, end = loaded
        fraction = curve["fractions"][-1]
        # unresolved with none rejected or at the last fraction (judged on the impostors kept there)
        by_fraction = curve.get("unresolved_fars_by_fraction") or {}
        unresolved = set(curve.get("unresolved_fars") or []) | set(by_fraction.get(f"{float(fraction):g}") or [])
        verdicts, details = [], []
        for j, far in enumerate(fars):
            key = far_key(far)
            tars = curve["tar_at_far"][key]
            lo, hi = paired_difference(end[:, j], start[:, j])
            result = decide(float(tars[-1]) - float(tars[0]), lo, hi, unresolved=key in unresolved)
            verdicts.append(result.verdict)
            details.append(f"FAR={key}: {percent(tars[0])}% → {percent(tars[-1])}% ({result.interval_text()}; "
                           f"{result.verdict})")
        settings = curve.get("settings") or {}
        claims.append(Claim(
            f"{method} on {curve.get('test_set', '')} (pair uncertainty {settings.get('pair_uncertainty', '')} in "
            f"{settings.get('uncertainty_space', '')} space, templates by {settings.get('template_uncertainty', '')}, "
            f"TAR read by {settings.get('tar_method', 'nearest')}): "
            f"TAR rises from 0% to {fraction:.0%} rejected — {count_text(verdicts)} of {len(verdicts)} FARs "
            f"({'; '.join(details)}).", summary_verdict(verdicts)))
    return claims


def edc_claims(table: pd.DataFrame) -> list:
    """FNM-EDC: each method against the random ranking, and ScaleFace against each other method."""
    from facetrust.report.edc import edc_paired, edc_replicates
    from facetrust.report.claims import Claim

    fnmr = table[(table["error"] == "fnmr") & (table["replicates"].fillna("") != "")]
    claims = []
    for _, row in fnmr.iterrows():
        lo, hi = row["pauc_ci_lo"], row["pauc_ci_hi"]
        below = np.isfinite(hi) and hi < row["pauc_random"]
        verdict = HELD if below else (NOT_HELD if np.isfinite(lo) and lo > row["pauc_random"] else NOT_RESOLVED)
        claims.append(Claim(
            f"{row['method']} ranks comparisons better than chance (FNM-EDC, starting FNMR {row['starting_error']:.3f}, "
            f"pAUC to {row['discard_limit']:g} minus the theoretical best): {row['pauc']:.4f} [95 % CI {lo:.4f}, "
            f"{hi:.4f}] vs random {row['pauc_random']:.4f}; the renderer's known quality (a reference, not a bound) "
            f"{_number(row.get('pauc_known_quality'))}, the error-aware oracle bound {_number(row.get('pauc_oracle'))}.",
            verdict))
    scaleface = fnmr[fnmr["method"].str.contains("ScaleFace", case=False)]
    if len(scaleface):
        mine = scaleface.iloc[0]
        mine_reps = edc_replicates(mine["replicates"])
        for _, other in fnmr.iterrows():
            if other["method"] == mine["method"]:
                continue
            theirs = edc_replicates(other["replicates"])
            if not edc_paired(mine_reps, theirs):  # different seed, design or count: no paired difference
                claims.append(Claim(
                    f"{mine['method']} ranks better than {other['method']} by FNM-EDC pAUC: not compared, their "
                    "bootstrap replicates are not paired (seed, design digest or number differ, or are missing).",
                    NOT_CHECKED))
                continue
            # smaller pAUC is better: ScaleFace beats X when pAUC(X) - pAUC(ScaleFace) > 0
            lo, hi = paired_difference(theirs[0], mine_reps[0])
            result = decide(float(other["pauc"]) - float(mine["pauc"]), lo, hi)
            claims.append(Claim(
                f"{mine['method']} ranks better than {other['method']} by FNM-EDC pAUC: difference "
                f"{other['pauc'] - mine['pauc']:+.4f} [95 % CI {lo:+.4f}, {hi:+.4f}].", result.verdict))
    return claims


def _number(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    return f"{value:.4f}" if np.isfinite(value) else "—"


def pauc_interval_text(values: np.ndarray) -> str:
    lo, hi = percentile_interval(values)
    return f"[{lo:.4f}, {hi:.4f}]"
