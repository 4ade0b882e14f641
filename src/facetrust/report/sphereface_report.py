"""SphereFace's report (``results/reports/sphereface.md``): "angular margins beat plain softmax"
(10-fold accuracy of each angular-margin model against the softmax and normalised-softmax controls of
the same backbone, schedule and data order) and "deeper is better" (SphereFace-20 vs -4), our
numbers beside the paper's (``report.published``). Verdicts are computed from the input files:
``held``, ``partly held``, ``did not hold`` or ``not checked`` (a row the claim needs is missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from facetrust.formats import test_set_of
from facetrust.io import write_text_atomic
from facetrust.report import published
from facetrust.report.claims import Claim, HELD, NOT_CHECKED, NOT_HELD, percent
from facetrust.report.claims import finite as _finite
from facetrust.report.markdown import (
    figure_links,
    inputs_section,
    markdown_table,
    normalise_method,
    number,
    our_source,
    points,
    rows_of,
    verdict_of,
)
from facetrust.report.verification import VAL_FAR_KEY, read_table

DEFAULT_MARGIN_METHODS = ("A-Softmax", "SphereFace", "CosFace", "ArcFace")


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
    baselines = rows_of(table, baseline_method)
    wanted = {normalise_method(m) for m in margin_methods}
    margins = table[table["method"].map(normalise_method).isin(wanted)]
    if baselines.empty or margins.empty:
        missing = f"no {baseline_method} row" if baselines.empty else f"no row of {', '.join(margin_methods)}"
        return [Claim(f'"Angular margins beat plain softmax" could not be checked: the verification table has {missing}.',
                      NOT_CHECKED)]
    claims, outcomes_by_set = [], {}
    for control_method, control_kind in controls:
        candidates = rows_of(table, control_method)
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
    rows = rows_of(table, method)
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
