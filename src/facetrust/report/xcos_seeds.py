"""xCos over training seeds and folds: the paired accuracy difference to the target cosine with an
interval over both, the seed spread beside the fold spread, and the regression fit.

The scores file of ``facetrust explain score`` holds xCos of every replicate (``xcos`` = seed 0,
``xcos_replicate<r>``) and the standard cosine (the frozen target) of the same pairs.  Each score
is evaluated by the same 10-fold protocol (contiguous folds; threshold of nine folds applied to the
tenth), so d[s, k] = acc_xCos(seed s, fold k) − acc_cos(fold k) is paired by fold.  The interval of
the mean difference is a **two-way (crossed) bootstrap**: folds and seeds are resampled with
replacement independently and the mean of the resampled d[s, k] block is taken; it widens with
either the fold or the seed spread (a fold-only t interval would hide the seed spread).
"""

from __future__ import annotations

import numpy as np

from facetrust.evaluate.bootstrap import crossed_bootstrap
from facetrust.evaluate.precomputed_scores import ten_fold_scores


def replicate_names(scores: dict) -> list[str]:
    """``xcos`` then ``xcos_replicate1``, … in replicate order (those present)."""
    extra = sorted((k for k in scores if k.startswith("xcos_replicate")), key=lambda k: int(k.removeprefix("xcos_replicate")))
    return ["xcos", *extra]


def seed_fold_analysis(scores: dict, issame: np.ndarray, reference: str = "standard_cosine", *, seed: int = 0,
                       n_boot: int = 2000) -> dict:
    """Accuracy of every replicate and of the reference, the paired (seed x fold) difference with
    its crossed-bootstrap interval, the fold and seed spreads, and the fit of each replicate's xCos to
    the reference score (Pearson r, MSE)."""
    names = replicate_names(scores)
    target = np.asarray(scores[reference], dtype=np.float64)
    ref = ten_fold_scores(target, issame)
    ref_folds = np.asarray(ref.fold_accuracies)
    rows, differences = [], []
    for name in names:
        values = np.asarray(scores[name], dtype=np.float64)
        result = ten_fold_scores(values, issame)
        folds = np.asarray(result.fold_accuracies)
        differences.append(folds - ref_folds)
        rows.append({"score": name, "accuracy": float(result.accuracy), "fold_std": float(folds.std()),
                     "pearson_r": float(np.corrcoef(values, target)[0, 1]),
                     "mse": float(np.mean((values - target) ** 2))})
    differences = np.array(differences)
    accuracies = np.array([r["accuracy"] for r in rows])
    return {"reference": reference, "reference_accuracy": float(ref.accuracy), "reference_fold_std": float(ref_folds.std()),
            "replicates": rows, "seeds": len(names), "folds": int(ref_folds.size), "pairs": int(issame.size),
            "difference": list(crossed_bootstrap(differences, seed=seed, n_boot=n_boot)),
            "difference_per_seed": differences.mean(1).tolist(),
            "seed_std": float(accuracies.std(ddof=1)) if accuracies.size > 1 else float("nan"),
            "fold_std": float(np.mean([r["fold_std"] for r in rows])),
            "difference_fold_std": float(differences.std(axis=1, ddof=1).mean()),
            "difference_seed_std": float(differences.mean(1).std(ddof=1)) if len(names) > 1 else float("nan")}
