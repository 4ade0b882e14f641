"""10-fold verification of precomputed pair scores (``evaluate pairs --scores``): scores that are
not a function of two embeddings, such as xCos, evaluated with the same protocol as embeddings.

Protocol = :func:`facetrust.evaluate.pairs.ten_fold_from_distance` with the ``cosine`` grid (a
pair is "same" when its score is above c, c = 1 − t/2, t = 0, 0.01, …, 3.99; 10 contiguous folds;
the threshold of nine folds applied to the tenth), so an xCos accuracy and a cosine accuracy of the
same pairs are read identically.

**Paired difference** (``paired_differences``): the folds are the same pairs for every score of a
file, so score A is compared with a reference B fold by fold: d_k = acc_A,k − acc_B,k, mean d̄,
sample std s_d, and the Student-t interval d̄ ± t_{0.975, K−1} · s_d / √K over the K folds.
"""

from __future__ import annotations

import math
import zipfile
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats

from facetrust.errors import InputError
from facetrust.evaluate.metrics import Scored, compute_metrics
from facetrust.evaluate.pairs import ACCURACY_STEP, TenFoldResult, ten_fold_from_distance
from facetrust.evaluate.roc import DEFAULT_IJB_FARS, SKLEARN_CONVENTION, plain_float, roc_points, write_roc
from facetrust.formats import ISSAME, PAIRED_DIFFERENCES, SCORE_NAMES, metrics_record
from facetrust.io import outputs_together, write_json_atomic
from facetrust.npz import check_declared_sizes


def read_pair_scores(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({score name: (P,) float64}, issame (P,) bool)`` of a pair scores file (docs/FORMATS.md);
    InputError naming the file and the key when one is missing or of the wrong length."""
    path = Path(path)
    try:
        check_declared_sizes(path)  # np.load allocates the shapes the members declare
        data = np.load(path, allow_pickle=False)
    except InputError as error:
        if not path.exists():
            raise InputError(f"{path}: pair scores file missing (written by 'facetrust explain score')") from None
        raise error
    except FileNotFoundError:
        raise InputError(f"{path}: pair scores file missing (written by 'facetrust explain score')") from None
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a pair scores file ({error})") from None
    with data:
        for key in (ISSAME, SCORE_NAMES):
            if key not in data.files:
                raise InputError(f"{path}: missing key {key!r}")
        issame = np.asarray(data[ISSAME], dtype=bool)
        scores = {}
        for name in data[SCORE_NAMES].tolist():
            if name not in data.files:
                raise InputError(f"{path}: score {name!r} listed in {SCORE_NAMES!r} but absent")
            scores[name] = np.asarray(data[name], dtype=np.float64)
            if scores[name].shape != issame.shape:
                raise InputError(f"{path}: score {name!r} has shape {scores[name].shape}, {ISSAME!r} {issame.shape}")
    return scores, issame


def ten_fold_scores(scores, issame, *, n_folds: int = 10, far_target: float = 1e-3) -> TenFoldResult:
    """The 10-fold result of similarity ``scores`` in [-1, 1] (higher = more alike)."""
    return ten_fold_from_distance(-np.asarray(scores, dtype=np.float64), issame, metric="cosine",
                                  n_folds=n_folds, far_target=far_target)


def paired_fold_difference(result: TenFoldResult, reference: TenFoldResult, level: float = 0.95) -> dict:
    """``{"fold_differences", "mean", "std", "low", "high", "level"}`` of ``result`` minus
    ``reference`` over the same folds (module docstring); std is the sample std (ddof 1)."""
    differences = np.asarray(result.fold_accuracies) - np.asarray(reference.fold_accuracies)
    k = differences.size
    mean, std = float(differences.mean()), float(differences.std(ddof=1)) if k > 1 else math.nan
    half = float(stats.t.ppf(0.5 + level / 2.0, k - 1) * std / math.sqrt(k)) if k > 1 else math.nan
    return {"fold_differences": [plain_float(d) for d in differences], "mean": plain_float(mean),
            "std": plain_float(std), "low": plain_float(mean - half), "high": plain_float(mean + half),
            "level": level}


def scores_settings(score: str, n_folds: int) -> dict:
    return {"score": score, "source": "pair scores file", "flags": "F0", "flip": False, "metric": "score",
            "n_folds": int(n_folds),
            "accuracy_thresholds": f"score 1 - t/2, t = 0:4:{ACCURACY_STEP}",
            "val_method": "InsightFace: threshold interpolated on 9 folds, applied to the 10th",
            "tar_method": "nearest", "roc": SKLEARN_CONVENTION}


def run_evaluate_pair_scores(scores_path: str | os.PathLike, out_json: str | os.PathLike, *, score: str,
                             references: Sequence[str] = (), roc_out: str | os.PathLike | None = None,
                             n_folds: int = 10, fars: Sequence[float] = DEFAULT_IJB_FARS, val_far: float = 1e-3,
                             testset: str | None = None) -> dict:
    """The pair-set metrics file of score ``score`` of a pair scores file (the keys of
    :func:`facetrust.evaluate.pairs.run_evaluate_pairs`), plus ``paired_differences`` against each
    score of ``references`` in the same file.  Writes ``out_json`` (and ``roc_out``); returns it."""
    scores, issame = read_pair_scores(scores_path)
    for name in (score, *references):
        if name not in scores:
            raise InputError(f"{scores_path}: no score {name!r}; it holds {', '.join(scores)}")
    result = ten_fold_scores(scores[score], issame, n_folds=n_folds, far_target=val_far)
    differences = {ref: paired_fold_difference(result, ten_fold_scores(scores[ref], issame, n_folds=n_folds,
                                                                       far_target=val_far))
                   for ref in references}
    fpr, tpr, thresholds = roc_points(issame.astype(np.int8), scores[score])
    metrics = metrics_record(
        testset or Path(scores_path).stem, "pairs_10fold", n_pairs=issame.size, n_genuine=issame.sum(),
        settings=scores_settings(score, n_folds), embeddings=scores_path,
        **compute_metrics(Scored(fpr, tpr, thresholds, fars, folds=result, val=result, val_far=val_far),
                          needs=("folds", "roc")),
        **{PAIRED_DIFFERENCES: differences},
    )
    with outputs_together(out_json, roc_out):  # the metrics never without their ROC
        write_json_atomic(out_json, metrics)
        if roc_out is not None:
            write_roc(roc_out, fpr, tpr, thresholds)
    return metrics
