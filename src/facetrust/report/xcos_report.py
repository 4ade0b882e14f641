"""``results/reports/xcos.md``, ``results/xcos_table.csv`` and the xCos pair figure.

Our rows: 10-fold accuracy (threshold of 9 folds applied to the 10th, the original images only)
of three scores of the same pairs (``facetrust explain score``): xCos, the plain cosine of the same
network's flattened grid feature, and the cosine of the frozen standard model xCos regresses.
Published rows: the xCos repository's released models (ntubiolin/xcos, IR-SE50 backbones): the
LFW 10-fold accuracy of the xCos score that their checkpoint files record
(``src/utils/insight2xcos.py``: ``…accuracy:0.99316…`` → ``20200217_accu_9931_Arcface.pth``, and
``…accuracy:0.99683…_CosFace.pth``), trained on CASIA-WebFace by the repository's configs.

The claim "xCos keeps the accuracy of cosine" (Lin et al., arXiv 2003.05383) is a
non-inferiority claim, judged on the paired fold-by-fold interval of xCos minus the reference
(:mod:`facetrust.evaluate.pair_scores`) against a margin δ (``explain.accuracy_margin``):
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
from facetrust.report.papers import HELD, NOT_HELD, Claim, figure_links, inputs_section, markdown_table, percent

NOT_RESOLVED = "not resolved"
SCORE_LABELS = {"xcos": "xCos", "cosine": "cos (same network)", "standard_cosine": "cos (standard model)"}
XCOS_SOURCE = "xCos repository (ntubiolin/xcos), released checkpoints"  # accuracies in their file names
# (head, LFW 10-fold accuracy in %) of the released xCos models, IR-SE50 on CASIA-WebFace.
PUBLISHED = (("ArcFace", 99.32), ("CosFace", 99.68))


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
    rows = [[f"published ({XCOS_SOURCE})", "LFW", "10-fold, xCos score", f"xCos ({head} head), IR-SE50, CASIA-WebFace",
             "xCos", f"{value:.2f}", "—"] for head, value in PUBLISHED]
    rows += [[f"ours (synthetic {r['test_set']})" if str(r["test_set"]).startswith("synth") else f"ours ({r['test_set']})",
              r["test_set"], "10-fold, original images (F0)", r["method"], r["score"], percent(r["accuracy"]),
              percent(r["accuracy_std"])] for _, r in ours.iterrows()]
    return markdown_table(["source", "data set", "protocol", "model", "score", "accuracy (%)", "± fold std (%)"], rows)


def write_xcos_report(metrics: Sequence[str | os.PathLike], out_md: str | os.PathLike, *, table_csv: str | os.PathLike,
                      labels: Mapping[str, str] | None = None, figures: Sequence[str | os.PathLike] = (),
                      margin: float = 0.01) -> list[Claim]:
    """Write ``xcos.md`` and ``xcos_table.csv`` from xCos metrics files; returns the claims."""
    labels = dict(labels or {})
    table = xcos_rows(metrics, labels)
    with atomic_path(table_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    claims = xcos_claims(metrics, labels, margin)
    text = "\n\n".join([
        "# xCos: an explainable cosine, 10-fold verification",
        "xCos (Lin et al., arXiv 2003.05383) adds to a backbone a 32-channel grid feature, a per-cell cosine "
        "map and an attention map; xCos = Σ cosine map ⊙ attention, trained to regress the cosine of a frozen "
        "standard model. Our rows: 10-fold accuracy (threshold chosen on 9 folds, applied to the 10th; "
        "mean ± population std over folds) of three scores of the same pairs, original images only: xCos, "
        "the plain cosine of the same network's flattened grid feature, and the standard model's cosine. "
        "Published rows: the released xCos checkpoints on LFW. Data sets differ, so only our own rows are "
        "compared number for number; the claims are judged on the paired fold-by-fold difference. Our xCos "
        "models train for minutes (`params.yaml` `xcos.<name>.train`), the paper's for 100 epochs on "
        "CASIA-WebFace, so a gap to the standard model measures our budget as much as the method; the "
        "comparison with the same network's cosine does not depend on it.",
        "## Claims, checked on our data",
        "\n".join(claim.markdown() for claim in claims),
        "## Accuracy: published beside ours",
        _published_table(table),
        "## Figures",
        "Each row: both aligned faces with the grid, the cosine map (diverging palette centred on the "
        "decision threshold), the attention map, xCos and the decision; correct and wrong genuine and "
        "impostor pairs.",
        figure_links(figures, out_md),
        inputs_section([*metrics, *figures]),
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
    from facetrust.evaluate.pair_scores import read_pair_scores
    from facetrust.explain.figures import plot_xcos_pairs
    from facetrust.explain.pairset import PairSet

    scores, issame = read_pair_scores(scores_npz)
    with np.load(scores_npz, allow_pickle=False) as data:
        cosine_map, attention = data["cosine_map"], data["attention"]
    thresholds = read_metrics(xcos_metrics).get("fold_thresholds") or []
    if not thresholds:
        raise InputError(f"{xcos_metrics}: no 'fold_thresholds'")
    threshold = float(np.mean(thresholds))
    pairs = PairSet(pair_set)
    rows = [{"image1": pairs.pixels(2 * k), "image2": pairs.pixels(2 * k + 1), "cosine_map": cosine_map[k],
             "attention": attention[k], "xcos": float(scores["xcos"][k]), "issame": bool(issame[k]),
             "title": f"{kind}: pair {k}"} for k, kind in pick_examples(scores, issame, threshold, per_kind)]
    return plot_xcos_pairs(rows, threshold, out_png)
