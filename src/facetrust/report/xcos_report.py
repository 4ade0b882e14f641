"""``results/reports/xcos.md``, ``results/xcos_table.csv`` and the xCos pair figure.

Our rows: 10-fold accuracy (threshold of 9 folds applied to the 10th, the original images only)
of three scores of the same pairs (``facetrust explain score``): xCos, the plain cosine of the same
network's flattened grid feature, and the cosine of the frozen standard model xCos regresses.
Published rows: the xCos repository's released models (ntubiolin/xcos, IR-SE50 backbones): the
LFW 10-fold accuracy of the xCos score that their checkpoint files record
(``src/utils/insight2xcos.py``: ``…accuracy:0.99316…`` → ``20200217_accu_9931_Arcface.pth``, and
``…accuracy:0.99683…_CosFace.pth``), beside the same repository's cosine baselines of the same
backbones, i.e. the regression targets (``src/utils/insight_to_normal_face_model.py``:
``20200228_accu_9952_Arcface_backbone.pth`` from ``model_ir_se50.pth`` and
``20200228_accu_9930_Cosface_backbone.pth`` from ``model_irse50_CosFace_ms1m_9039.pth``).

The claim "xCos keeps the accuracy of cosine" (Lin et al., arXiv 2003.05383) is a
non-inferiority claim, judged on the paired fold-by-fold interval of xCos minus the reference
(:mod:`facetrust.evaluate.precomputed_scores`) against a margin δ (``explain.accuracy_margin``):
``held`` when the interval lies above −δ, ``did not hold`` when it lies below −δ, ``not resolved``
when it straddles −δ.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from facetrust.errors import InputError
from facetrust.formats import PAIRED_DIFFERENCES, read_metrics, test_set_of
from facetrust.io import atomic_path, write_text_atomic
from facetrust.report.claims import HELD, NOT_HELD, Claim, percent
from facetrust.report.markdown import figure_links, inputs_section, markdown_table

NOT_RESOLVED = "not resolved"
SCORE_LABELS = {"xcos": "xCos", "cosine": "cos (same network)", "standard_cosine": "cos (standard model)"}
XCOS_SOURCE = "xCos repository (ntubiolin/xcos), released checkpoints"  # accuracies in their file names
# (head, LFW 10-fold accuracy in % of the released xCos model, of the cosine baseline of the same
# backbone = the model whose cosine it regresses), from the checkpoint file names of ntubiolin/xcos
# (src/utils/insight2xcos.py, src/utils/insight_to_normal_face_model.py).
PUBLISHED = (("ArcFace", 99.32, 99.52), ("CosFace", 99.68, 99.30))
#: How the released models were made, as far as the repository shows (module docstring sources).
PROVENANCE = (
    "The released xCos checkpoints were not produced by the repository's own training entry point "
    "(`main.py` with `configs/xcos_train_config.json`: CASIA-WebFace, 10,572 classes, batch 48, 100 epochs, "
    "backbone/head SGD 1e-3, attention Adam 1e-4, validation monitored on LFW): `src/utils/insight2xcos.py` "
    "converts work files of a separate InsightFace_Pytorch checkout (`work_space/save/model_2019-08-25-14-35_"
    "accuracy:0.99316…_step:218349_None.pth` for ArcFace, `model_2019-09-02-08-21_accuracy:0.99683…_step:436692_"
    "CosFace.pth` for CosFace, plus their attention files) into xCos files whose names carry that accuracy. "
    "The regression targets are `model_ir_se50.pth` (ArcFace) and `model_irse50_CosFace_ms1m_9039.pth` (CosFace, "
    "MS1M by its name), whose own converted files are named 9952 and 9930. The training data and schedule of "
    "those work files are not in the repository; the accuracy in a file name is the one of the saved step, and the "
    "configs monitor LFW, so the published numbers are on the set that picked the checkpoint.")


def score_of(path: str | os.PathLike) -> str:
    """The score name of ``<set>.<score>.json``."""
    return Path(path).name.removesuffix(".json").rsplit(".", 1)[-1]


def non_inferiority(difference: Mapping, margin: float) -> str:
    """Verdict of a paired interval of (xCos − reference) against the margin (module docstring)."""
    low, high = difference.get("low"), difference.get("high")
    if low is None or high is None:
        return NOT_RESOLVED
    if low > -margin:
        return HELD
    return NOT_HELD if high < -margin else NOT_RESOLVED


def xcos_rows(metrics: Sequence[str | os.PathLike], labels: Mapping[str, str]) -> pd.DataFrame:
    """One row per metrics file: model (its folder), method, score, test set, accuracy, std and,
    for the xCos score, the paired difference to each reference."""
    rows = []
    for path in metrics:
        data = read_metrics(path, "xCos metrics file")
        model, score = Path(path).parent.name, score_of(path)
        row = {"model": model, "method": labels.get(model, model), "score": SCORE_LABELS.get(score, score),
               "test_set": test_set_of(data), "accuracy": data.get("accuracy"), "accuracy_std": data.get("accuracy_std"),
               "protocol": "10-fold, F0"}
        for reference, difference in (data.get(PAIRED_DIFFERENCES) or {}).items():
            for key in ("mean", "std", "low", "high"):
                row[f"minus_{reference}_{key}"] = difference.get(key)
        rows.append(row)
    if not rows:
        raise InputError("report xcos: no metrics file given")
    return pd.DataFrame(rows)


def xcos_claims(metrics: Sequence[str | os.PathLike], labels: Mapping[str, str], margin: float) -> list[Claim]:
    claims = []
    for path in metrics:
        if score_of(path) != "xcos":
            continue
        data, model = read_metrics(path, "xCos metrics file"), Path(path).parent.name
        for reference, difference in (data.get(PAIRED_DIFFERENCES) or {}).items():
            verdict = non_inferiority(difference, margin)
            std = difference.get("std")
            claims.append(Claim(
                f"{labels.get(model, model)} on {test_set_of(data)}: \"xCos keeps the accuracy of "
                f"{SCORE_LABELS.get(reference, reference)}\": xCos minus it = {100 * difference['mean']:+.2f} points, "
                f"paired 95% interval [{100 * difference['low']:+.2f}, {100 * difference['high']:+.2f}] over "
                f"{len(difference['fold_differences'])} folds (fold std of the difference "
                f"{100 * std:.2f} points); margin {100 * margin:.1f} point(s).", verdict))
    return claims or [Claim("No xCos metrics file with paired differences was given.", "not checked")]


def _published_table(ours: pd.DataFrame) -> str:
    rows = []
    for head, xcos_value, cosine_value in PUBLISHED:
        rows.append([f"published ({XCOS_SOURCE})", "LFW", "10-fold", f"xCos ({head}), IR-SE50", "xCos",
                     f"{xcos_value:.2f}", "—", f"{xcos_value - cosine_value:+.2f}"])
        rows.append([f"published ({XCOS_SOURCE})", "LFW", "10-fold", f"{head} IR-SE50 (the regression target)",
                     "cos (standard model)", f"{cosine_value:.2f}", "—", ""])
    rows += [[f"ours (synthetic {r['test_set']})" if str(r["test_set"]).startswith("synth") else f"ours ({r['test_set']})",
              r["test_set"], "10-fold, original images (F0)", r["method"], r["score"], percent(r["accuracy"]),
              percent(r["accuracy_std"]), ""] for _, r in ours.iterrows()]
    return markdown_table(["source", "data set", "protocol", "model", "score", "accuracy (%)", "± fold std (%)",
                           "xCos − its cosine (points)"], rows)


def seeds_claim(analysis: dict, margin: float) -> Claim:
    mean, low, high = analysis["difference"]
    verdict = non_inferiority({"low": low, "high": high}, margin)
    return Claim(
        f"\"xCos keeps the accuracy of the cosine it regresses\" (the frozen standard model's): xCos minus it = "
        f"{100 * mean:+.2f} points, 95% interval [{100 * low:+.2f}, {100 * high:+.2f}] over {analysis['seeds']} training "
        f"seeds x {analysis['folds']} folds (crossed bootstrap over seeds and folds; {analysis['pairs']} pairs); "
        f"margin {100 * margin:.1f} point(s){': not resolved' if verdict == NOT_RESOLVED else ''}.", verdict)


def _seeds_md(analysis: dict) -> str:
    rows = [[r["score"], percent(r["accuracy"]), percent(r["fold_std"]), f"{r['pearson_r']:.4f}", f"{r['mse']:.5f}"]
            for r in analysis["replicates"]]
    rows.append([f"{analysis['reference']} (target)", percent(analysis["reference_accuracy"]),
                 percent(analysis["reference_fold_std"]), "1", "0"])
    table = markdown_table(["score (training seed)", "accuracy (%)", "± fold std (%)", "Pearson r to the target",
                            "MSE to the target"], rows)
    return (table + "\n\n"
            f"Spread of xCos's accuracy: across training seeds {100 * analysis['seed_std']:.2f} points (sample std of "
            f"{analysis['seeds']} seeds), across folds {100 * analysis['fold_std']:.2f} points (population std of "
            f"{analysis['folds']} folds, mean over seeds). Of the difference to the target: across seeds "
            f"{100 * analysis['difference_seed_std']:.2f}, across folds {100 * analysis['difference_fold_std']:.2f} points.")


def _validation_md(records: Mapping[str, dict]) -> str:
    parts = []
    for model, record in records.items():
        rows = [[", ".join(f"{k} {v}" for k, v in c["values"].items()) or "(params values)", f"{c['mse']:.5f}",
                 f"{c['pearson_r']:.4f}", percent(c["accuracy_xcos"]), percent(c["accuracy_standard_cosine"]),
                 "chosen" if c["values"] == record["chosen"] else ""] for c in record["candidates"]]
        reps = "; ".join(f"seed {r['seed']}: MSE {r['mse']:.5f}, accuracy {percent(r['accuracy_xcos'])} %"
                         for r in record["replicates"])
        parts.append(f"**{model}** on `{record['validation_set']}` ({record['candidates'][0]['pairs']} pairs; "
                     f"criterion: {record['criterion']}):\n\n"
                     + markdown_table(["candidate", "validation MSE", "Pearson r", "xCos acc. (%)",
                                       "target cos acc. (%)", ""], rows) + f"\n\nReplicates with the choice: {reps}.")
    return "\n\n".join(parts) or "No validation record."


def write_xcos_report(metrics: Sequence[str | os.PathLike], out_md: str | os.PathLike, *, table_csv: str | os.PathLike,
                      labels: Mapping[str, str] | None = None, figures: Sequence[str | os.PathLike] = (),
                      margin: float = 0.01, scores: str | os.PathLike | None = None,
                      validation: Sequence[str | os.PathLike] = (), fit_png: str | os.PathLike | None = None,
                      seed: int = 0) -> list[Claim]:
    """Write ``xcos.md`` and ``xcos_table.csv`` from xCos metrics files, the scores file of the
    explained model (every training seed: :mod:`facetrust.report.xcos_seeds`) and the validation
    records of the training stage; returns the claims."""
    from facetrust.io import read_json

    labels = dict(labels or {})
    table = xcos_rows(metrics, labels)
    with atomic_path(table_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    claims = []
    analysis = None
    if scores is not None:
        from facetrust.evaluate.precomputed_scores import read_pair_scores
        from facetrust.report.xcos_seeds import seed_fold_analysis

        values, issame = read_pair_scores(scores)
        analysis = seed_fold_analysis(values, issame, seed=seed)
        claims.append(seeds_claim(analysis, margin))
        if fit_png is not None:
            from facetrust.report.explain_figures import plot_xcos_fit

            figures = [*figures, plot_xcos_fit(values["standard_cosine"], values["xcos"], issame, fit_png,
                                               pearson=analysis["replicates"][0]["pearson_r"],
                                               mse=analysis["replicates"][0]["mse"])]
    claims += xcos_claims(metrics, labels, margin)
    records = {Path(p).parent.name: read_json(p, "xCos validation record") for p in validation}
    text = "\n\n".join([
        "# xCos: an explainable cosine, 10-fold verification",
        "xCos (Lin et al., arXiv 2003.05383) adds to a backbone a 32-channel grid feature, a per-cell cosine "
        "map and an attention map; xCos = Σ cosine map ⊙ attention, trained to regress the cosine of a frozen "
        "standard model. Here the backbone is frozen and is itself the standard model: a CosFace network trained at "
        "xCos's input and stride (48 px, last stage at stride 1, a 6x6 grid), so xCos is compared with the very "
        "cosine it explains and regresses, not with a network damaged by a change of input size. Its feature maps "
        "are cached, so the branch trains to convergence (the fit log's steps), for several training seeds; the "
        "learning rates were chosen on the validation split (below), never on the test pairs. Rows: 10-fold "
        "accuracy (threshold chosen on 9 folds, applied to the 10th; mean ± population std over folds), original "
        "images only (F0): xCos, the plain cosine of the same network's flattened grid feature, and the standard "
        "model's cosine. Published rows: the released xCos checkpoints on LFW beside the cosine baselines of the "
        "same backbones; data sets differ, so only the deltas are comparable with ours.",
        "## Claims, checked on our data",
        "\n".join(claim.markdown() for claim in claims),
        "## Training seeds and folds",
        _seeds_md(analysis) if analysis else "No scores file given.",
        "## Choices made on the validation split",
        _validation_md(records),
        "## Accuracy: published beside ours",
        _published_table(table),
        "### How the released xCos models were made (as far as ntubiolin/xcos shows)",
        PROVENANCE,
        "## Figures",
        "The pair figure: each row both aligned faces with the grid, the cosine map (diverging palette centred on the "
        "decision threshold), the attention map, xCos and the decision; correct and wrong genuine and "
        "impostor pairs. The fit figure: xCos (seed 0) against the target cosine on every test pair, with the "
        "identity line.",
        figure_links(figures, out_md),
        inputs_section([*metrics, *([scores] if scores else []), *validation, *figures]),
    ]) + "\n"
    write_text_atomic(out_md, text)
    return claims


def pick_examples(scores: Mapping[str, np.ndarray], issame: np.ndarray, threshold: float, per_kind: int) -> list[tuple]:
    """``(pair index, kind)`` for up to ``per_kind`` pairs of each kind, the most confident first:
    correct genuine, wrong genuine (false reject), correct impostor, wrong impostor (false accept)."""
    xcos = np.asarray(scores["xcos"], dtype=np.float64)
    accepted = xcos >= threshold
    kinds = (("correct genuine", issame & accepted, -xcos), ("wrong genuine", issame & ~accepted, xcos),
             ("correct impostor", ~issame & ~accepted, xcos), ("wrong impostor", ~issame & accepted, -xcos))
    chosen = []
    for kind, mask, key in kinds:
        candidates = np.flatnonzero(mask)
        order = candidates[np.argsort(key[candidates], kind="stable")]
        chosen += [(int(k), kind) for k in order[:per_kind]]
    return chosen


def draw_xcos_examples(scores_npz: str | os.PathLike, pair_set: str | os.PathLike, xcos_metrics: str | os.PathLike,
                       out_png: str | os.PathLike, *, per_kind: int = 2) -> Path:
    """The xCos figure: correct and wrong genuine and impostor pairs at the mean 10-fold threshold."""
    from facetrust.evaluate.precomputed_scores import read_pair_scores
    from facetrust.report.explain_figures import plot_xcos_pairs
    from facetrust.data.pairset import PairSet

    scores, issame = read_pair_scores(scores_npz)
    from facetrust.npz import read_npz

    data = read_npz(scores_npz, ["cosine_map", "attention"], what="pair scores .npz")
    cosine_map, attention = data["cosine_map"], data["attention"]
    if len(cosine_map) != len(issame) or len(attention) != len(issame):
        raise InputError(f"{scores_npz}: keys 'cosine_map' ({len(cosine_map)}) and 'attention' ({len(attention)}) "
                         f"need one entry per pair ({len(issame)})")
    thresholds = read_metrics(xcos_metrics).get("fold_thresholds") or []
    if not thresholds:
        raise InputError(f"{xcos_metrics}: no 'fold_thresholds'")
    threshold = float(np.mean(thresholds))
    pairs = PairSet(pair_set)
    rows = [{"image1": pairs.pixels(2 * k), "image2": pairs.pixels(2 * k + 1), "cosine_map": cosine_map[k],
             "attention": attention[k], "xcos": float(scores["xcos"][k]), "issame": bool(issame[k]),
             "title": f"{kind}: pair {k}"} for k, kind in pick_examples(scores, issame, threshold, per_kind)]
    return plot_xcos_pairs(rows, threshold, out_png)
