"""SCF/PFE claims judged on the controlled pair only, with paired bootstrap intervals.

The uncertainty row (``+SCF``, ``+PFE`` …: a pooling other than ``mean``, no ``control``) is compared
with its **control**: the row of the same trained model, test set, pooling and score whose
uncertainty is one constant for every image.  Only the uncertainty itself differs, so "+SCF raises
TAR" is judged there.  The difference to the InsightFace base row (N1 D1 F1, media averaging,
detector score) mixes three changes and is shown as context, never judged.

Published numbers and their conventions (docs/FORMATS.md; the SCF README "IJB benchmark": κ as
each image's confidence to aggregate representations as in Eq. 14 inside the standard IJB code):
our ``kappa_media`` rows follow that convention, our ``kappa`` rows pool all images by Eq. 14
without the media step.  The README's "PFE-G" rows are the SCF authors' PFE (Gaussian) and are
mapped to our ``+PFE`` rows.
"""

from __future__ import annotations

import math

import pandas as pd

from facetrust.formats import far_of_column, tar_columns
from facetrust.report import published
from facetrust.report.claims import HELD, NOT_CHECKED, compare_replicates, count_text, replicates_of, summary_verdict

# Our variant name -> the SCF README's name for it (its PFE rows are "PFE-G").
PUBLISHED_NAME = {"PFE": "PFE-G"}
PUBLISHED_CONVENTIONS = [
    ["SCF README (R100, MS1M): CosFace/ArcFace", "the standard IJB pipeline (InsightFace eval_ijbc.py style; flags not stated)",
     "our base rows (N1 D1 F1, media averaging)"],
    ["SCF README: + SCF", "κ as each image's confidence aggregating representations (Eq. 14) inside the standard IJB "
     "pipeline; cosine of the templates", "our + SCF (README protocol) rows: pooling kappa_media"],
    ["SCF README: + SCF-G", "as + SCF with the Gaussian ablation's κ", "our + SCF-G rows (pooling kappa)"],
    ["SCF README: + PFE-G", "the SCF authors' Gaussian PFE; its fusion and score are not stated in the README",
     "our + PFE rows (PFE fusion; cosine and MLS)"],
    ["InsightFace arcface_torch README", "eval_ijbc.py N1 D1 F1, cosine, nearest-FPR TAR", "our base rows"],
]


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def has_details(table: pd.DataFrame) -> bool:
    """True when the table carries the columns that pair a row with its control."""
    return {"model", "pooling", "score", "control", "replicates"} <= set(table.columns)


def controlled_pairs(table: pd.DataFrame) -> list[tuple[pd.Series, pd.Series | None, pd.Series | None]]:
    """(uncertainty row, its control row or None, the model's base row or None) for every
    uncertainty row of the table."""
    out = []
    for _, row in table.iterrows():
        if row["pooling"] in ("mean", "") or _text(row["control"]):
            continue
        same = table[(table["model"] == row["model"]) & (table["test_set"] == row["test_set"])]
        controls = same[(same["pooling"] == row["pooling"]) & (same["score"] == row["score"])
                        & (same["control"].map(_text) != "")]
        bases = same[(same["pooling"] == "mean") & (same["control"].map(_text) == "")]
        out.append((row, controls.iloc[0] if len(controls) else None, bases.iloc[0] if len(bases) else None))
    return out


def variant_name(method: str) -> str:
    """``"ArcFace+SCF (vMF score)"`` → ``"SCF (vMF score)"``; the method itself when it has no ``+``."""
    base, plus, variant = str(method).rpartition("+")
    return variant.strip() if plus else str(method)


def published_delta(base: str, variant: str, column: str) -> str:
    """The SCF README's delta for the same base, variant and FAR ("PFE" read as "PFE-G")."""
    key = PUBLISHED_NAME.get(variant.split(" (")[0], variant.split(" (")[0])
    values = {}
    for row in published.scf_rows():
        values[(row.test_set, row.method.replace(" ", ""))] = row.values.get(column)
    found = []
    for test_set in ("IJB-C", "IJB-B"):
        b, v = values.get((test_set, base)), values.get((test_set, f"{base}+{key}"))
        if b is not None and v is not None:
            found.append(f"{v - b:+.2f} on {test_set}")
    return f"; paper ({published.SCF_SOURCE}, R100, + {key} vs base): " + ", ".join(found) if found else ""


def controlled_claims(table: pd.DataFrame) -> dict[str, list]:
    """``{variant name: [summary Claim, per-FAR Claims…]}`` judged on the controlled pairs."""
    from facetrust.report.claims import Claim, percent

    groups: dict[str, list] = {}
    verdicts: dict[str, list[str]] = {}
    for row, control, base in controlled_pairs(table):
        name = variant_name(row["method"])
        claims = groups.setdefault(name, [])
        if control is None:
            claims.append(Claim(f"{row['method']}: no control row (same model, pooling {row['pooling']} and score "
                                f"{row['score']} with constant uncertainty), so it was not judged.", NOT_CHECKED))
            continue
        mine, theirs = replicates_of(row["replicates"]), replicates_of(control["replicates"])
        unresolved = set(_text(row.get("unresolved_fars")).split(";")) - {""}
        for column in tar_columns(table.columns):
            far = far_of_column(column)
            if mine is None or theirs is None or far not in mine.far_keys:
                continue
            result = compare_replicates(mine, theirs, far, row[column], control[column], unresolved=far in unresolved)
            verdicts.setdefault(name, []).append(result.verdict)
            context = ""
            if base is not None and base is not row:
                context = (f" Uncontrolled, against {base['method']} N1 D1 F1 ({percent(base[column])}%): "
                           f"{100 * (float(row[column]) - float(base[column])):+.2f} points.")
            claims.append(Claim(
                f"On {row['test_set']}, {row['method']} vs its control {control['method']} at TAR@FAR={far}: "
                f"{percent(row[column])}% vs {percent(control[column])}% ({result.interval_text()})"
                f"{published_delta(str(base['method']) if base is not None else '', name, column)}.{context}",
                result.verdict))
    out = {}
    for name, claims in groups.items():
        summary = summary_verdict(verdicts.get(name, []))
        out[name] = [Claim(f'"+{name} raises TAR over its controlled base" (paired 95 % bootstrap over subjects; '
                           f"FARs below 10/n_impostor never resolved): {count_text(verdicts.get(name, []))} of "
                           f"{len(verdicts.get(name, []))} model × FAR comparisons.", summary)] + claims
    return out


def conventions_table() -> list[list[str]]:
    """Rows (published source, its convention, our rows that follow it)."""
    return PUBLISHED_CONVENTIONS


def held_count(claims) -> int:
    return sum(c.verdict == HELD for c in claims)
