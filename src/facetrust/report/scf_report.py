"""SCF's report (``results/reports/scf.md``): "+SCF raises TAR over its base" for every base and every
FAR of our table (and likewise for the other variants in the table: +PFE, +SCF-G), our numbers with
their paired intervals beside the paper's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from facetrust.errors import InputError
from facetrust.formats import far_of_column, tar_column
from facetrust.formats import tar_columns as _tar_columns_of
from facetrust.io import write_text_atomic
from facetrust.report import published
from facetrust.report.claims import Claim, HELD, NOT_CHECKED, NOT_HELD, percent
from facetrust.report.claims import finite as _finite
from facetrust.report.markdown import (
    figure_links,
    inputs_section,
    markdown_table,
    normalise_method,
    our_source,
    rows_of,
    points,
    verdict_of,
)
from facetrust.report.verification import read_table

def tar_columns(table: pd.DataFrame) -> list[str]:
    """``TAR@FAR=…`` columns of a table, FAR ascending."""
    return _tar_columns_of(table.columns)


def split_variant(method: str) -> tuple[str | None, str] | None:
    """``"ArcFace + SCF"`` → ``("ArcFace", "SCF")``; ``"+SCF"`` → ``(None, "SCF")``; a base method → None."""
    base, plus, variant = str(method).rpartition("+")
    if not plus or not variant.strip():
        return None
    return (base.strip() or None), variant.strip()


def variant_pairs(table: pd.DataFrame) -> list[tuple[pd.Series, pd.Series, str]]:
    """``(base_row, variant_row, variant)`` for every ``<base> + <variant>`` row of the table.

    ``"+SCF"`` refers to the nearest row above it that is not a variant (the SCF paper's layout);
    the base row is looked up on the same test set, preferring the same backbone.
    """
    pairs = []
    last_base: dict[str, str] = {}
    for _, row in table.iterrows():
        parsed = split_variant(row["method"])
        if parsed is None:
            last_base[row["test_set"]] = row["method"]
            continue
        base_name, variant = parsed
        base_name = base_name or last_base.get(row["test_set"])
        if base_name is None:
            continue
        candidates = rows_of(table[table["test_set"] == row["test_set"]], base_name)
        if candidates.empty:
            continue
        same_backbone = candidates[candidates["backbone"] == row["backbone"]]
        pairs.append(((same_backbone if not same_backbone.empty else candidates).iloc[0], row, variant))
    return pairs


def _published_delta(base: str, variant: str, column: str) -> str:
    """``paper: +0.92 on IJB-C, +1.21 on IJB-B`` for the same base/variant/FAR in the SCF README."""
    rows = published.scf_rows()
    found = []
    for test_set in ("IJB-C", "IJB-B"):
        def value(method: str):
            for row in rows:
                if row.test_set == test_set and normalise_method(row.method) == normalise_method(method):
                    return row.values.get(column)
            return None

        base_value, variant_value = value(base), value(f"{base}+{variant}")
        if base_value is not None and variant_value is not None:
            found.append(f"{variant_value - base_value:+.2f} on {test_set}")
    return f"; paper ({published.SCF_SOURCE}, R100): " + ", ".join(found) if found else ""


def variant_claims(table: pd.DataFrame, variant: str = "SCF") -> list[Claim]:
    """"+<variant> raises TAR over its base": one sentence per base and FAR, and a summary first."""
    pairs = [(b, v, name) for b, v, name in variant_pairs(table) if normalise_method(name) == normalise_method(variant)]
    if not pairs:
        return [Claim(f'"+{variant} raises TAR over its base" could not be checked: the table has no '
                      f'"<base> + {variant}" row with its base.', NOT_CHECKED)]
    claims, outcomes = [], []
    for base, row, _ in pairs:
        for column in tar_columns(table):
            if not (_finite(base[column]) and _finite(row[column])):
                continue
            delta = float(row[column]) - float(base[column])
            raised = delta > 0
            outcomes.append(raised)
            far = far_of_column(column)
            name = f"{base['method']} {row['method']}" if str(row["method"]).lstrip().startswith("+") else row["method"]
            claims.append(Claim(
                f"On {row['test_set']}, {name} {'raises' if raised else 'does not raise'} TAR@FAR={far} over "
                f"{base['method']} ({row['backbone']}): {percent(row[column])}% vs {percent(base[column])}% "
                f"({points(delta)}{_published_delta(base['method'], variant, column)}).",
                HELD if raised else NOT_HELD))
    verdict = verdict_of(outcomes)
    summary = Claim(f'"+{variant} raises TAR over its base": it did in {sum(outcomes)} of {len(outcomes)} '
                    f"base × FAR comparisons.", verdict)
    return [summary] + claims


def _scf_published_table(ours: pd.DataFrame) -> str:
    columns = [tar_column(1e-5), tar_column(1e-4)]
    rows = []
    for row in published.scf_rows() + published.insightface_rows():
        rows.append([row.label, row.test_set, row.method, row.backbone, row.train_set,
                     *(f"{row.values[c]:.2f}" for c in columns)])
    for _, row in ours.iterrows():
        rows.append([our_source(row["test_set"]), row["test_set"], row["method"], row["backbone"], row["train_set"],
                     *(percent(row.get(c)) for c in columns)])
    return markdown_table(["source", "data set", "method", "backbone", "train set", "TAR@FAR=1e-5 (%)",
                           "TAR@FAR=1e-4 (%)"], rows)


def _our_full_table(ours: pd.DataFrame) -> str:
    columns = tar_columns(ours)
    rows = [[our_source(r["test_set"]), r["method"], r["backbone"], r["train_set"], *(percent(r[c]) for c in columns)]
            for _, r in ours.iterrows()]
    return markdown_table(["source", "method", "backbone", "train set",
                           *(f"FAR={far_of_column(c)}" for c in columns)], rows)


def _our_table_with_intervals(ours: pd.DataFrame) -> str:
    """Our rows at every FAR: TAR [95 % CI], unresolved FARs marked, with pooling/score/control."""
    columns = tar_columns(ours)
    rows = []
    for _, r in ours.iterrows():
        unresolved = set(str(r.get("unresolved_fars") or "").split(";")) - {"", "nan"}
        cells = []
        for c in columns:
            far = far_of_column(c)
            lo, hi = r.get(f"ci_lo@FAR={far}"), r.get(f"ci_hi@FAR={far}")
            cell = percent(r[c])
            if _finite(lo) and _finite(hi):
                cell += f" [{percent(lo, 1)}, {percent(hi, 1)}]"
            cells.append(cell + (" (unresolved)" if far in unresolved else ""))
        control = str(r.get("control") or "")
        rows.append([r["method"], r.get("pooling", ""), r.get("score", ""),
                     "" if control in ("", "nan") else control, *cells])
    return markdown_table(["method", "pooling", "score", "control (constant uncertainty)",
                           *(f"FAR={far_of_column(c)}" for c in columns)], rows)


def write_scf_report(tables: Sequence[str | Path], out_md: str | Path, *, figures: Sequence[str | Path] = (),
                     variants: Sequence[str] = ("SCF", "SCF-G", "PFE")) -> list[Claim]:
    """Write ``scf.md`` from TAR tables (``ijbc_table.csv``, ``ijbb_table.csv``…); returns the claims.

    Tables with the detail columns (``report.tables``) are judged on controlled pairs with paired
    bootstrap intervals (``report.scf_claims``); older tables fall back to the base-row comparison
    of every ``variants`` entry (the headline is the first, ``+SCF``).
    """
    from facetrust.report import scf_claims

    if not tables:
        raise InputError("report scf: no table given")
    ours = pd.concat([read_table(path) for path in tables], ignore_index=True)
    if not tar_columns(ours):
        raise InputError(f"{tables[0]}: no TAR@FAR=… column")
    controlled = scf_claims.has_details(ours)
    if controlled:
        claims_by_variant = scf_claims.controlled_claims(ours)
    else:
        claims_by_variant = {variant: variant_claims(ours, variant) for variant in variants}
    sections = []
    for variant, claims in claims_by_variant.items():
        if not controlled and variant != variants[0] and all(c.verdict == NOT_CHECKED for c in claims):
            continue  # only the headline variant reports its absence
        sections += [f"### +{variant} over its {'control' if controlled else 'base'}",
                     "\n".join(c.markdown() for c in claims)]
    intro = ("Our rows: TAR at each FAR on the IJB-style 1:1 protocol with the settings recorded in each metrics "
             "file. Each uncertainty row is judged against its **control**: the same trained model, pooling and "
             "score with one constant uncertainty for every image (for the cosine and MLS scores any constant "
             "gives the same row; for SCF's Eq. 13, which is not scale-free, the constant is the geometric mean of "
             "the row's own κ). A claim holds only when the paired 95 % bootstrap interval (subjects resampled, the "
             "same draws for both rows) excludes 0; FARs below 10/n_impostor are unresolved. The base rows use the "
             "InsightFace convention (N1 D1 F1, media averaging), so the difference to them mixes pooling, "
             "normalisation and detector weighting with the uncertainty; it is shown as context only."
             if controlled else
             "Our rows: TAR at each FAR on the IJB-style 1:1 protocol with the settings recorded in each metrics "
             "file (InsightFace eval_ijbc.py conventions by default).")
    parts = [
        "# SCF: spherical confidence learning, IJB 1:1 verification",
        intro + " Published rows: the SCF README (ResNet100) and the InsightFace arcface_torch README (ArcFace "
        "baselines). Published numbers are on IJB-B/IJB-C with large models; ours are on the configured test set, "
        "so only the direction of each difference is compared. Our κ is the exact maximiser of the SCF objective "
        "(a stable log-Bessel function); the official SCF code floors scipy's ive at 1e-6, which at d = 512 is "
        "far above ive for typical κ, so its κ scale (and any κ value it reports) is not comparable with ours.",
        "## Claims, checked on our data",
        *sections,
    ]
    if controlled:
        parts += ["## Published numbers: which convention each used",
                  markdown_table(["source", "convention", "our rows under the same convention"],
                                 scf_claims.conventions_table())]
    parts += [
        "## TAR at FAR 1e-5 and 1e-4: published beside ours",
        _scf_published_table(ours),
        "## Our table at every FAR (TAR, %" + (", [95 % bootstrap interval])" if controlled else ")"),
        _our_table_with_intervals(ours) if controlled else _our_full_table(ours),
        "## Figures",
        figure_links(figures, out_md),
        inputs_section([*tables, *figures]),
    ]
    write_text_atomic(out_md, "\n\n".join(parts) + "\n")
    return [claim for claims in claims_by_variant.values() for claim in claims]
