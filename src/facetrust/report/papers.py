"""Per-paper reports: ``results/reports/{sphereface,scf,scaleface}.md``.

Each report puts our numbers beside the paper's published ones (``report.published``), every row
marked with its data set and source, and states, one sentence per claim, whether the claim held
on our data.  Every verdict is computed from the input files, never written in advance:

* SphereFace: "angular margins beat plain softmax" (10-fold accuracy of each angular-margin model
  against the softmax model on the same test set) and "deeper is better" (SphereFace-20 vs -4).
* SCF: "+SCF raises TAR over its base" for every base and every FAR of our table (and likewise
  for the other variants in the table: +PFE, +SCF-G).
* ScaleFace: "reject curves rise" (TAR at 50 % rejected vs 0 % per method and FAR) and
  "uncertainty tracks quality" (Spearman ρ > 0 and significant, ``report.quality``).

Verdicts: ``held`` (every comparison went the claimed way), ``partly held``, ``did not hold``,
``not checked`` (a row the claim needs is missing; the sentence says which).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from facetrust.errors import InputError
from facetrust.formats import far_of_column, tar_column, test_set_of
from facetrust.formats import tar_columns as _tar_columns_of
from facetrust.io import write_text_atomic
from facetrust.report import published
from facetrust.report.claims import HELD, NOT_CHECKED, NOT_HELD, PARTLY, Claim, percent  # noqa: F401 (re-exported)
from facetrust.report.claims import finite as _finite
from facetrust.report.verification import VAL_FAR_KEY, read_table

DEFAULT_MARGIN_METHODS = ("A-Softmax", "SphereFace", "CosFace", "ArcFace")


def verdict_of(outcomes: Sequence[bool]) -> str:
    """``held`` when every outcome is True, ``did not hold`` when none is, else ``partly held``."""
    if not outcomes:
        return NOT_CHECKED
    if all(outcomes):
        return HELD
    return NOT_HELD if not any(outcomes) else PARTLY


# --------------------------------------------------------------------------- formatting


def normalise_method(name: str) -> str:
    """Method names compared without case, spaces, hyphens or underscores (A-Softmax = a_softmax)."""
    return re.sub(r"[\s\-_]+", "", str(name)).lower()


def number(value, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if _finite(value) else "—"


def points(delta: float) -> str:
    """A difference of fractions in percentage points with its sign."""
    return f"{100.0 * delta:+.2f} points"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def our_source(test_set: str) -> str:
    """``ours (synthetic synth_lfw)`` for the embedded benchmark, ``ours (<set>)`` for configured data."""
    return f"ours (synthetic {test_set})" if str(test_set).startswith("synth") else f"ours ({test_set})"


def figure_links(figures: Sequence[str | Path], out_md: str | Path) -> str:
    """Markdown image links to ``figures``, relative to the report's folder."""
    if not figures:
        return "_No figures were given._"
    base = Path(out_md).resolve().parent
    links = []
    for figure in figures:
        relative = Path(os.path.relpath(Path(figure).resolve(), base)).as_posix()
        links.append(f"![{Path(figure).stem}]({relative})")
    return "\n\n".join(links)


def inputs_section(paths: Iterable[str | Path]) -> str:
    return "## Inputs\n\n" + "\n".join(f"- `{Path(p).as_posix()}`" for p in paths)


# --------------------------------------------------------------------------- SphereFace


def _rows_of(table: pd.DataFrame, method: str) -> pd.DataFrame:
    return table[table["method"].map(normalise_method) == normalise_method(method)]


def _baseline_for(row: pd.Series, baselines: pd.DataFrame) -> pd.Series | None:
    """The control row to compare ``row`` with: same test set **and** same backbone, or None.

    A control on another backbone would make the backbone half of the difference, so it is never
    taken in its place (SphereFace's own claim is on one network)."""
    same = baselines[(baselines["test_set"] == row["test_set"]) & (baselines["backbone"] == row["backbone"])]
    return None if same.empty else same.iloc[0]


def _accuracy_text(row: pd.Series) -> str:
    std = f" ± {percent(row['accuracy_std'])}" if _finite(row.get("accuracy_std")) else ""
    return f"{percent(row['accuracy'])}%{std}"


def _accuracy_comparison(row: pd.Series, base: pd.Series):
    """Paired bootstrap comparison of two rows' 10-fold accuracies, or None without replicates."""
    from facetrust.evaluate.bootstrap import check_paired, paired_difference
    from facetrust.report.claims import decide, replicates_of

    mine, theirs = replicates_of(row.get("replicates")), replicates_of(base.get("replicates"))
    if mine is None or theirs is None or "accuracy" not in mine.arrays or "accuracy" not in theirs.arrays:
        return None
    check_paired(mine, theirs)
    lo, hi = paired_difference(mine.arrays["accuracy"], theirs.arrays["accuracy"], mine.level)
    return decide(float(row["accuracy"]) - float(base["accuracy"]), lo, hi)


def margin_claims(table: pd.DataFrame, *, baseline_method: str = "Softmax",
                  margin_methods: Sequence[str] = DEFAULT_MARGIN_METHODS,
                  normalised_method: str | None = "NormFace") -> list[Claim]:
    """"Angular margins beat plain softmax": each margin row against the controls **on its own
    backbone** (plain softmax, and normalised softmax when the table has it: the same normalisation
    and scale without the margin), trained with the same schedule and data order.  A margin row
    without a control on its backbone is not checked.  One summary per test set and control."""
    controls = [(baseline_method, "plain softmax")]
    if normalised_method:
        controls.append((normalised_method, "normalised softmax"))
    baselines = _rows_of(table, baseline_method)
    wanted = {normalise_method(m) for m in margin_methods}
    margins = table[table["method"].map(normalise_method).isin(wanted)]
    if baselines.empty or margins.empty:
        missing = f"no {baseline_method} row" if baselines.empty else f"no row of {', '.join(margin_methods)}"
        return [Claim(f'"Angular margins beat plain softmax" could not be checked: the verification table has {missing}.',
                      NOT_CHECKED)]
    claims, outcomes_by_set = [], {}
    for control_method, control_kind in controls:
        candidates = _rows_of(table, control_method)
        if candidates.empty:
            continue
        for _, row in margins.iterrows():
            base = _baseline_for(row, candidates)
            if base is None:
                claims.append(Claim(f"{row['method']} ({row['backbone']}) on {row['test_set']}: no {control_method} "
                                    f"row on the {row['backbone']} backbone, so its margin is not compared with "
                                    f"{control_kind} (a control on another backbone would not isolate the margin).",
                                    NOT_CHECKED))
                continue
            delta = float(row["accuracy"]) - float(base["accuracy"])
            comparison = _accuracy_comparison(row, base)
            beat = delta > 0 if comparison is None else comparison.verdict
            outcomes_by_set.setdefault((row["test_set"], control_method, control_kind), []).append(beat)
            stds = [float(v) for v in (row.get("accuracy_std"), base.get("accuracy_std")) if _finite(v)]
            within = " (within one fold standard deviation)" if stds and abs(delta) <= max(stds) else ""
            if comparison is not None:
                within = f" (paired bootstrap over identities: {comparison.interval_text()})"
            fisher = ""
            if _finite(row.get("angular_fisher_score")) and _finite(base.get("angular_fisher_score")):
                fisher = (f"; angular Fisher score {number(row['angular_fisher_score'])} vs "
                          f"{number(base['angular_fisher_score'])} (lower is better)")
            if comparison is None:
                outcome, verdict = ("beat" if beat else "did not beat"), (HELD if beat else NOT_HELD)
            else:
                verdict = comparison.verdict
                outcome = {HELD: "beat", NOT_HELD: "did not beat"}.get(verdict, "was not resolved against")
            claims.append(Claim(
                f"On {row['test_set']}, {row['method']} ({row['backbone']}) reaches {_accuracy_text(row)} 10-fold "
                f"accuracy against {_accuracy_text(base)} for {base['method']} on the same backbone "
                f"({base['backbone']}, same schedule and data order): {points(delta)}{within}, so the angular "
                f"margin {outcome} {control_kind}{fisher}.", verdict))
    summaries = []
    for (test_set, control_method, control_kind), outcomes in outcomes_by_set.items():
        if all(isinstance(o, bool) for o in outcomes):
            verdict = verdict_of(outcomes)
            text = f"{sum(outcomes)} of {len(outcomes)} angular-margin models beat {control_method} on their backbone."
        else:
            from facetrust.report.claims import count_text, summary_verdict

            verdict = summary_verdict(outcomes)
            text = (f"{count_text(outcomes)} of {len(outcomes)} angular-margin models against {control_method} on "
                    "their own backbone (held only where the paired 95 % bootstrap interval excludes 0).")
        summaries.append(Claim(f'"Angular margins beat {control_kind}" on {test_set}: {text}', verdict))
    return summaries + claims


def depth_claim(table: pd.DataFrame, *, method: str = "A-Softmax",
                backbones: tuple[str, str] = ("sphere4", "sphere20")) -> list[Claim]:
    """"Deeper is better": the ``backbones`` pair (shallow, deep) trained with ``method``, per test set."""
    rows = _rows_of(table, method)
    shallow_name, deep_name = backbones
    claims = []
    test_sets = list(dict.fromkeys(rows["test_set"])) or [None]
    for test_set in test_sets:
        on_set = rows[rows["test_set"] == test_set]
        shallow = on_set[on_set["backbone"].map(normalise_method) == normalise_method(shallow_name)]
        deep = on_set[on_set["backbone"].map(normalise_method) == normalise_method(deep_name)]
        if shallow.empty or deep.empty:
            absent = " and ".join(name for name, part in ((shallow_name, shallow), (deep_name, deep)) if part.empty)
            claims.append(Claim(f'"Deeper is better" ({deep_name} vs {shallow_name}, {method}) could not be checked: '
                                f"no {method} row with backbone {absent}.", NOT_CHECKED))
            continue
        shallow, deep = shallow.iloc[0], deep.iloc[0]
        delta = float(deep["accuracy"]) - float(shallow["accuracy"])
        comparison = _accuracy_comparison(deep, shallow)
        if comparison is None:
            better = delta > 0
            verdict, outcome, interval = (HELD if better else NOT_HELD), ("more" if better else "not more"), ""
        else:
            verdict = comparison.verdict
            outcome = {HELD: "more", NOT_HELD: "less"}.get(verdict, "not resolvably more")
            interval = f" (paired bootstrap over identities: {comparison.interval_text()})"
        claims.append(Claim(
            f"On {test_set}, {method} with {deep_name} reaches {_accuracy_text(deep)} against {_accuracy_text(shallow)} "
            f"with {shallow_name}: {points(delta)}{interval}, so the deeper network is {outcome} accurate.", verdict))
    return claims


def _published_accuracy_rows() -> list[list]:
    rows = []
    for row in published.sphereface_rows():
        std = row.values.get("accuracy_std")
        rows.append([row.label, row.test_set, row.method, row.backbone, row.train_set, f"{row.values['accuracy']:.2f}",
                     "—" if std is None else f"{std:.2f}", "—", "—", row.note])
    return rows


def _paper_protocol_rows(paper_protocol: Mapping[str, str | Path]) -> list[list]:
    """Our rows computed SphereFace's way (evaluation.m), beside the paper's number."""
    from facetrust.formats import read_metrics

    rows = []
    for label, path in paper_protocol.items():
        metrics = read_metrics(path)
        accuracy = percent(metrics["accuracy"])
        interval = metrics.get("accuracy_ci")
        if interval and all(_finite(v) for v in interval):
            accuracy = f"{accuracy} [{percent(interval[0])}, {percent(interval[1])}]"
        rows.append([our_source(test_set_of(metrics)), test_set_of(metrics), label, "", "", accuracy,
                     percent(metrics.get("accuracy_std")), "—", "—",
                     "SphereFace's protocol (evaluation.m): [original; flipped] concatenated, training folds' mean "
                     "subtracted, tied thresholds averaged"])
    return rows


def sphereface_markdown(table: pd.DataFrame, claims: Sequence[Claim], *, figures_md: str, inputs: Sequence,
                        paper_protocol: Mapping[str, str | Path] | None = None) -> str:
    """The SphereFace report text (see :func:`write_sphereface_report`)."""
    val_column = f"VAL@FAR={VAL_FAR_KEY}"

    def accuracy_cell(r) -> str:
        if _finite(r.get("accuracy_ci_lo")) and _finite(r.get("accuracy_ci_hi")):
            return f"{percent(r['accuracy'])} [{percent(r['accuracy_ci_lo'])}, {percent(r['accuracy_ci_hi'])}]"
        return percent(r["accuracy"])

    ours = [[our_source(r["test_set"]), r["test_set"], r["method"], r["backbone"], r["train_set"], accuracy_cell(r),
             percent(r.get("accuracy_std")), number(r.get("angular_fisher_score")), percent(r.get(val_column)),
             "InsightFace protocol (verification.py)"]
            for _, r in table.iterrows()]
    paper_rows = _paper_protocol_rows(paper_protocol or {})
    header = ["source", "data set", "method", "backbone", "train set", "accuracy (%)", "± std (%)",
              "angular Fisher score", "VAL@FAR=1e-3 (%)", "note"]
    return "\n\n".join([
        "# SphereFace line: angular margins, LFW-style 10-fold verification",
        "Our rows: 10-fold accuracy (threshold chosen on 9 folds, applied to the 10th; mean ± population std), "
        "VAL@FAR=1e-3 and the angular Fisher score of the SphereFace appendix (lower is better), from the "
        "verification table. Published rows: the SphereFace README, SphereFace-20 trained on CASIA-WebFace and "
        "tested on LFW. Rows on different data sets do not compare number for number; the claims are checked "
        "on our data only, and every margin claim compares models that differ only in the margin: each margin "
        "row against plain softmax and normalised softmax (NormFace) trained on the **same backbone** with the "
        "same schedule and data order (a margin row with no control on its backbone is not checked). Our accuracies carry a 95 % bootstrap interval over identities (quality.csv), and a "
        "claim \"A beats B\" holds only when the paired interval of the difference excludes 0.",
        "The SphereFace paper's 99.30 % was computed with its own LFW protocol (evaluation.m), which is **not** "
        "InsightFace's: the feature is the concatenation of the original and flipped images' features (InsightFace "
        "sums them), the mean feature of the nine training folds is subtracted before normalisation, and the "
        "threshold is the mean of all thresholds tied at the best training accuracy on a 1e-4 grid over [-1, 1] "
        "(InsightFace: the first best on a 0.01 grid of squared L2). The rows marked \"SphereFace's protocol\" "
        "are computed that way, beside the paper's number.",
        "## Claims, checked on our data",
        "\n".join(claim.markdown() for claim in claims),
        "## Verification accuracy: published beside ours",
        markdown_table(header, _published_accuracy_rows() + paper_rows + ours),
        "## Figures",
        figures_md,
        inputs_section(inputs),
    ]) + "\n"


def write_sphereface_report(verification_table: str | Path, out_md: str | Path, *, figures: Sequence[str | Path] = (),
                            baseline_method: str = "Softmax", margin_methods: Sequence[str] | None = None,
                            depth_method: str = "A-Softmax",
                            depth_backbones: tuple[str, str] = ("sphere4", "sphere20"),
                            paper_protocol: Mapping[str, str | Path] | None = None,
                            normalised_method: str | None = "NormFace") -> list[Claim]:
    """Write ``sphereface.md`` from ``verification_table.csv`` (and ``paper_protocol``: label → metrics
    file of ``evaluate pairs --pairs-protocol sphereface``); returns the checked claims."""
    table = read_table(verification_table, required=["method", "backbone", "train_set", "test_set", "accuracy"])
    claims = margin_claims(table, baseline_method=baseline_method,
                           margin_methods=margin_methods or DEFAULT_MARGIN_METHODS, normalised_method=normalised_method)
    claims += depth_claim(table, method=depth_method, backbones=tuple(depth_backbones))
    text = sphereface_markdown(table, claims, figures_md=figure_links(figures, out_md),
                               inputs=[verification_table, *(paper_protocol or {}).values(), *figures],
                               paper_protocol=paper_protocol)
    write_text_atomic(out_md, text)
    return claims


# --------------------------------------------------------------------------- SCF


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
        candidates = _rows_of(table[table["test_set"] == row["test_set"]], base_name)
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


# --------------------------------------------------------------------------- ScaleFace


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
