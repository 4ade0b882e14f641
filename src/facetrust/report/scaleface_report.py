"""ScaleFace's report (``results/reports/scaleface.md``): "reject curves rise" (TAR at 50 % rejected
vs 0 % per method and FAR), "uncertainty tracks quality" (Spearman rho > 0 and significant,
``report.quality``) and the EDC table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from facetrust.errors import InputError
from facetrust.formats import test_set_of
from facetrust.io import write_text_atomic
from facetrust.report import published
from facetrust.report.claims import Claim, HELD, NOT_CHECKED, NOT_HELD, percent
from facetrust.report.claims import finite as _finite
from facetrust.report.markdown import (
    figure_links,
    inputs_section,
    markdown_table,
    number,
    our_source,
    points,
    verdict_of,
)

def _fraction_index(fractions: np.ndarray, fraction: float) -> int:
    return int(np.argmin(np.abs(fractions - fraction)))


def reject_rows(curves: Mapping[str, dict], fraction: float = 0.5) -> list[dict]:
    """Per method and FAR: TAR with nothing rejected and at the fraction nearest ``fraction``."""
    from facetrust.report.figures import reject_series

    rows = []
    for label, curve in curves.items():
        for far in sorted(curve["tar_at_far"], key=float):
            fractions, tar = reject_series(curve, far, label)
            start, end = _fraction_index(fractions, 0.0), _fraction_index(fractions, fraction)
            rows.append({"method": label, "test_set": test_set_of(curve), "far": far,
                         "n_pairs": curve.get("n_pairs"), "how": (curve.get("settings") or {}).get("pair_uncertainty", ""),
                         "fraction_start": float(fractions[start]), "fraction_end": float(fractions[end]),
                         "tar_start": tar[start], "tar_end": tar[end]})
    return rows


def reject_claims(curves: Mapping[str, dict], fraction: float = 0.5) -> list[Claim]:
    """"Reject curves rise": per method, TAR at ``fraction`` rejected vs none, at every FAR of its curve."""
    by_method: dict[str, list[dict]] = {}
    for row in reject_rows(curves, fraction):
        by_method.setdefault(row["method"], []).append(row)
    claims = []
    for method, rows in by_method.items():
        usable = [r for r in rows if _finite(r["tar_start"]) and _finite(r["tar_end"]) and r["fraction_end"] > r["fraction_start"]]
        if not usable:
            claims.append(Claim(f"{method}: the reject curve has no finite TAR at 0 and at {fraction:.0%} rejected.",
                                NOT_CHECKED))
            continue
        outcomes = [r["tar_end"] > r["tar_start"] for r in usable]
        details = ", ".join(f"FAR={r['far']}: {percent(r['tar_start'])}% → {percent(r['tar_end'])}%"
                            for r in usable)
        first = usable[0]
        claims.append(Claim(
            f"{method} on {first['test_set']} (pair uncertainty: {first['how'] or 'n/a'}): TAR rises from "
            f"{first['fraction_start']:.0%} to {first['fraction_end']:.0%} rejected at {sum(outcomes)} of "
            f"{len(outcomes)} FARs ({details}).", verdict_of(outcomes)))
    return claims


def quality_claims(quality_table: pd.DataFrame, alpha: float = 0.05) -> list[Claim]:
    """"Uncertainty tracks quality": held when Spearman ρ(uncertainty, 1 − quality) > 0 with p < ``alpha``."""
    from facetrust.report.quality import DEGRADATIONS

    claims = []
    for _, row in quality_table.iterrows():
        rho, p_value = row.get("spearman_degradation"), row.get("p_value")
        kind_name = row.get("uncertainty_kind")
        kind = f" (kind {kind_name})" if isinstance(kind_name, str) and kind_name else ""
        if not _finite(rho):
            claims.append(Claim(f"{row['method']}{kind}: no Spearman ρ (constant uncertainty or quality).", NOT_CHECKED))
            continue
        tracks = float(rho) > 0 and _finite(p_value) and float(p_value) < alpha
        per_kind = {name: row.get(f"spearman_{name}") for name in DEGRADATIONS if _finite(row.get(f"spearman_{name}"))}
        strongest = ""
        if per_kind:
            name = max(per_kind, key=lambda k: float(per_kind[k]))
            strongest = f"; strongest for {name} (ρ = {float(per_kind[name]):.3f})"
        claims.append(Claim(
            f"{row['method']} uncertainty{kind} {'tracks' if tracks else 'does not track'} the known degradation "
            f"on {row.get('test_set', '')}: Spearman ρ = {float(rho):.3f} (p = {float(p_value):.2g}, "
            f"{int(row['n_images'])} images; held means ρ > 0 with p < {alpha:g}){strongest}.",
            HELD if tracks else NOT_HELD))
    return claims


def _setting_rows(curves: Mapping[str, dict]) -> list[list[str]]:
    """Rows (setting, published, ours) comparing the ScaleFace protocol with our reject curves."""
    first = next(iter(curves.values()))
    fractions = np.asarray(first["fractions"], dtype=float)
    step = float(np.round(np.median(np.diff(fractions)), 6)) if fractions.size > 1 else 0.0

    def joined(values: Iterable) -> str:
        return ", ".join(dict.fromkeys(str(v) for v in values if v not in (None, "")))

    ours = {
        "test set": joined(test_set_of(c) for c in curves.values()),
        "backbone": "methods " + ", ".join(f"{label} (uncertainty: {(c.get('settings') or {}).get('uncertainty_kind') or 'n/a'})"
                                           for label, c in curves.items()),
        "rejected fraction": f"{fractions.min():g} to {fractions.max():g}, step {step:g}, most uncertain pairs first",
        "FAR": ", ".join(sorted(first["tar_at_far"], key=float)),
        "pair confidence": joined((c.get("settings") or {}).get("pair_uncertainty") for c in curves.values()),
        "published result": "see the claims above",
    }
    return [[key, published.SCALEFACE_SETTING[key], ours[key]] for key in published.SCALEFACE_SETTING]


def _reject_table(curves: Mapping[str, dict], fraction: float) -> str:
    rows = []
    for r in reject_rows(curves, fraction):
        change = points(r["tar_end"] - r["tar_start"]) if _finite(r["tar_start"]) and _finite(r["tar_end"]) else "—"
        rows.append([our_source(r["test_set"]), r["method"], r["n_pairs"], r["how"], r["far"], percent(r["tar_start"]),
                     f"{r['fraction_end']:.0%}", percent(r["tar_end"]), change])
    return markdown_table(["source", "method", "pairs", "pair uncertainty", "FAR", "TAR, none rejected (%)",
                           "rejected", "TAR after rejecting (%)", "change"], rows)


def _quality_table_markdown(quality: pd.DataFrame) -> str:
    rho_columns = [c for c in quality.columns if c.startswith("spearman_")]
    rows = []
    for _, r in quality.iterrows():
        p_value = f"{float(r['p_value']):.2g}" if _finite(r["p_value"]) else "—"
        rows.append([our_source(r.get("test_set", "")), r["method"], r.get("uncertainty_kind", ""), int(r["n_images"]),
                     *(number(r[c]) for c in rho_columns), p_value])
    return markdown_table(["source", "method", "uncertainty kind", "images",
                           *(c[len("spearman_"):] for c in rho_columns), "p"], rows)


def _edc_markdown(table: pd.DataFrame) -> str:
    rows = []
    for _, r in table.iterrows():
        ci = (f"[{r['pauc_ci_lo']:.4f}, {r['pauc_ci_hi']:.4f}]"
              if _finite(r.get("pauc_ci_lo")) and _finite(r.get("pauc_ci_hi")) else "—")
        crfiqa = ", ".join(f"{c.split('=')[1]}: {number(r[c])}" for c in table.columns
                           if c.startswith("crfiqa_auc@") and _finite(r.get(c)))
        rows.append([our_source(r["test_set"]), r["method"], r["error"].upper(), number(r["starting_error"]),
                     f"{r['pauc']:.4f}", ci, f"{r['pauc_random']:.4f}",
                     "—" if not _finite(r.get("pauc_known_quality")) else f"{r['pauc_known_quality']:.4f}",
                     "—" if not _finite(r.get("pauc_oracle")) else f"{r['pauc_oracle']:.4f}", crfiqa or "—"])
    return markdown_table(["source", "method", "EDC", "starting error", "pAUC − best (↓)", "95 % CI", "random",
                           "known quality (renderer's scalar; reference)", "oracle bound (error-aware)",
                           "ERC area after CR-FIQA at FMR (other protocol)"], rows)


def write_scaleface_report(reject_curves: Mapping[str, str | Path], out_md: str | Path, *,
                           quality_table: str | Path | None = None, figures: Sequence[str | Path] = (),
                           fraction: float = 0.5, alpha: float = 0.05,
                           edc_table: str | Path | None = None) -> list[Claim]:
    """Write ``scaleface.md`` from reject-curve JSONs (label → file), the Spearman table and the EDC
    table; returns the claims.  Curves with bootstrap replicates are judged by paired intervals."""
    from facetrust.report import scaleface_claims
    from facetrust.report.figures import read_reject
    from facetrust.report.quality import read_quality_table

    if not reject_curves:
        raise InputError("report scaleface: no reject curve given")
    curves = {label: read_reject(path) for label, path in reject_curves.items()}
    with_intervals = all((c.get("bootstrap") or {}).get("replicates") for c in curves.values())
    rise = scaleface_claims.reject_rise_claims(curves) if with_intervals else reject_claims(curves, fraction)
    edc = pd.read_csv(edc_table) if edc_table is not None else None
    edc_claims = scaleface_claims.edc_claims(edc) if edc is not None else []
    quality = read_quality_table(quality_table) if quality_table is not None else None
    track = (quality_claims(quality, alpha) if quality is not None
             else [Claim("No quality table was given, so this was not checked.", NOT_CHECKED)])
    sections = [
        "# ScaleFace: learned scale as uncertainty, reject verification",
        "Reject verification: the most uncertain fraction of pairs is removed and TAR@FAR is recomputed on "
        "the rest; a useful uncertainty makes the curve rise. The ScaleFace paper publishes these curves as "
        "figures on IJB-C, so the published side below is its setting, beside ours. Template uncertainty is "
        "aggregated in each method's own space (ScaleFace averages the scales, PFE's reference sums σ²; the "
        "space is recorded per curve). MagFace is trained with the official code's easy margin "
        "(MagLinear(easy_margin=True)). A rise holds only where the paired 95 % bootstrap interval (subjects "
        "resampled) of TAR(rejected) − TAR(none) excludes 0.",
        "## Claims, checked on our data",
        "### Do reject curves rise?",
        "\n".join(c.markdown() for c in rise),
        "### Does uncertainty track quality?",
        "\n".join(c.markdown() for c in track),
    ]
    if edc is not None:
        sections += [
            "### Does uncertainty rank comparisons the way the quality field scores it (EDC)?",
            "Error-versus-Discard Characteristic (Schlett et al., arXiv 2303.13294; ISO/IEC 29794-5): the threshold "
            "is fixed once at the starting error, comparisons are discarded from the lowest pair quality (the worse "
            "of the two templates; ties together), and pAUC up to the discard limit minus the area under the "
            "theoretical best is reported (0 = perfect, smaller is better); 95 % intervals by bootstrap over "
            "subjects. References on the same scores: a random ranking; the renderer's known quality (the "
            "synthetic images' scalar quality: a reference that model-based measures can beat, not a bound); and "
            "the error-aware oracle bound (the pairs wrong at the fixed threshold discarded first, at the "
            "theoretical best up to ties). Paired differences are taken only between replicate files with the "
            "same seed and design digest. The ERC after CR-FIQA (threshold recomputed on the kept pairs, by our "
            "quantile rule rather than CR-FIQA's exact one) is a different protocol and is labelled as such.",
            "\n".join(c.markdown() for c in edc_claims),
            "## EDC: pAUC per method (results/edc_table.csv)",
            _edc_markdown(edc),
        ]
    sections += [
        "## Reject verification: TAR with none and with the largest fraction rejected",
        _reject_table(curves, fraction),
    ]
    if quality is not None:
        sections += ["## Uncertainty against the known quality (Spearman ρ; degradation = 1 − quality)",
                     _quality_table_markdown(quality)]
    sections += [
        f"## Setting: published ({published.SCALEFACE_SOURCE}) beside ours",
        markdown_table(["", f"published ({published.SCALEFACE_SOURCE}, IJB-C)", "ours"], _setting_rows(curves)),
        "## Figures",
        figure_links(figures, out_md),
        inputs_section([*reject_curves.values(), *([quality_table] if quality_table is not None else []),
                        *([edc_table] if edc_table is not None else []), *figures]),
    ]
    write_text_atomic(out_md, "\n\n".join(sections) + "\n")
    return rise + track + edc_claims
