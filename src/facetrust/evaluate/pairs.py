"""Verification on pair sets (LFW, CFP-FP, AgeDB-30 ``.bin``): 10-fold accuracy, VAL@FAR, TAR@FAR.

Convention = InsightFace ``eval/verification.py``: features L2-normalised (after flip fusion,
original + flipped summed); squared L2 distance; a pair is called "same" when the
distance is *below* the threshold; thresholds 0, 0.01, …, 3.99; 10 contiguous folds in pair order
(``KFold(10, shuffle=False)``); on each fold the threshold with the best accuracy on the other 9
folds (first one on ties) is applied to it; accuracy = mean ± population std over folds.

``metric="cosine"`` calls a pair "same" when the cosine is *above* c, over the grid c = 1 − t/2
for the same t: on unit vectors ‖a − b‖² = 2 − 2 cos, so both metrics make the same decisions
(up to rounding) and only the reported thresholds differ.

SphereFace's own LFW protocol is **not** the same (concatenated original+flipped features, the
training folds' mean subtracted, tied thresholds averaged on a 1e-4 grid):
``protocol="sphereface"`` runs it (:mod:`facetrust.evaluate.pair_protocols`).  ``score`` other
than cosine (SCF Eq. 13, PFE MLS on the images' own uncertainty) chooses the threshold among the
training folds' score midpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from facetrust.errors import ConfigError, InputError
from facetrust.evaluate.embeddings_file import load_embeddings
from facetrust.evaluate.fusion import l2_normalize
from facetrust.evaluate.pair_protocols import fold_indices  # noqa: F401 (re-exported: evaluate.pairs.fold_indices)
from facetrust.evaluate.metrics import METRICS, Scored, compute_metrics
from facetrust.evaluate.scores import SCORES
from facetrust.evaluate.roc import (
    DEFAULT_IJB_FARS,
    SKLEARN_CONVENTION,
    plain_float,
    roc_points,
    tar_at_far,
    write_roc,
)
from facetrust.formats import metrics_record
from facetrust.io import outputs_together, write_json_atomic
from facetrust.registry import Registry

ACCURACY_STEP = 0.01  # InsightFace: np.arange(0, 4, 0.01)
VAL_STEP = 0.001  # InsightFace: np.arange(0, 4, 0.001) for VAL@FAR


def _counts_below(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many values are strictly below each threshold (values sorted)."""
    return np.searchsorted(sorted_values, thresholds, side="left")


def _rates(distance: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every threshold: (accuracy, TPR, FPR) of "same iff distance < threshold"."""
    genuine = np.sort(distance[same])
    impostor = np.sort(distance[~same])
    true_accept = _counts_below(genuine, thresholds)
    false_accept = _counts_below(impostor, thresholds)
    true_reject = impostor.size - false_accept
    accuracy = (true_accept + true_reject) / distance.size
    tpr = true_accept / genuine.size if genuine.size else np.zeros(thresholds.size)
    fpr = false_accept / impostor.size if impostor.size else np.zeros(thresholds.size)
    return accuracy, tpr, fpr


def _threshold_at_far(fpr_train: np.ndarray, thresholds: np.ndarray, far_target: float) -> float:
    """InsightFace VAL threshold: interpolate threshold against FAR on the training folds.

    InsightFace calls ``interp1d(far_train, thresholds, kind="slinear")``, which current SciPy
    refuses when FAR values repeat; we keep, for each FAR value, the largest threshold reaching it
    (the best VAL for that FAR) and interpolate linearly.  When no threshold reaches the target
    FAR the first threshold is used (InsightFace: 0.0).
    """
    if fpr_train.max() < far_target:
        return float(thresholds[0])
    reversed_fpr = fpr_train[::-1]
    unique_fpr, first = np.unique(reversed_fpr, return_index=True)
    return float(np.interp(far_target, unique_fpr, thresholds[::-1][first]))


@dataclass
class TenFoldResult:
    """10-fold verification result; thresholds are in the metric's own units."""

    accuracy: float
    accuracy_std: float
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray
    val: float
    val_std: float
    far: float
    far_target: float
    roc_fpr: np.ndarray  # fold-averaged, one point per accuracy threshold (InsightFace plot)
    roc_tpr: np.ndarray
    thresholds: np.ndarray


# Pair distances in the "same iff below" sense, on L2-normalised features (float64).
PAIR_DISTANCES: Registry = Registry("pair distance")


@PAIR_DISTANCES.register("squared_l2")
def _squared_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = a - b
    return np.einsum("ij,ij->i", diff, diff)


@PAIR_DISTANCES.register("cosine")
def _minus_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return -np.einsum("ij,ij->i", a, b)


def pair_distance(emb1: np.ndarray, emb2: np.ndarray, metric: str) -> np.ndarray:
    """Distance in the "same iff below" sense: squared L2 of unit features, or minus the cosine."""
    distance = PAIR_DISTANCES.get(metric)
    a = l2_normalize(np.asarray(emb1, dtype=np.float64))
    b = l2_normalize(np.asarray(emb2, dtype=np.float64))
    return distance(a, b)


def _grid(metric: str, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds in distance units for "< t", the same thresholds as the user reads them)."""
    squared = np.arange(0.0, 4.0, step)
    if metric == "squared_l2":
        return squared, squared
    cosine = 1.0 - squared / 2.0  # same iff cos > c  <=>  -cos < -c
    return -cosine, cosine


def ten_fold_accuracy(emb1, emb2, issame, *, metric: str = "squared_l2", n_folds: int = 10,
                      far_target: float = 1e-3) -> TenFoldResult:
    """InsightFace 10-fold verification of pairs (emb1[k], emb2[k]) with truth ``issame[k]``.

    Returns mean accuracy, its population std, per-fold accuracies and chosen thresholds,
    VAL@``far_target`` (mean, std, achieved FAR) and the fold-averaged ROC over the threshold grid.
    """
    return ten_fold_from_distance(pair_distance(emb1, emb2, metric), issame, metric=metric, n_folds=n_folds,
                                  far_target=far_target)


def ten_fold_from_distance(distance, issame, *, metric: str = "squared_l2", n_folds: int = 10,
                           far_target: float = 1e-3) -> TenFoldResult:
    """:func:`ten_fold_accuracy` of precomputed pair distances ("same iff below"; ``metric`` picks
    the threshold grid: squared L2, or ``cosine`` for minus a score in [-1, 1] such as xCos)."""
    issame = np.asarray(issame, dtype=bool)
    distance = np.asarray(distance, dtype=np.float64)
    if distance.shape != issame.shape:
        raise InputError(f"{distance.size} pairs of features but {issame.size} labels")
    thresholds, shown = _grid(metric, ACCURACY_STEP)
    val_thresholds, _ = _grid(metric, VAL_STEP)
    folds = fold_indices(distance.size, n_folds)
    accuracies, chosen, vals, fars = [], [], [], []
    tprs, fprs = [], []
    for test in folds:
        train = np.setdiff1d(np.arange(distance.size), test, assume_unique=True)
        train_accuracy, _, _ = _rates(distance[train], issame[train], thresholds)
        best = int(np.argmax(train_accuracy))  # first best, as np.argmax in InsightFace
        test_accuracy, test_tpr, test_fpr = _rates(distance[test], issame[test], thresholds)
        accuracies.append(test_accuracy[best])
        chosen.append(shown[best])
        tprs.append(test_tpr)
        fprs.append(test_fpr)
        # VAL@FAR: threshold interpolated on the training folds, applied to the test fold.
        _, _, far_train = _rates(distance[train], issame[train], val_thresholds)
        threshold = _threshold_at_far(far_train, val_thresholds, far_target)
        _, val, far = _rates(distance[test], issame[test], np.array([threshold]))
        vals.append(val[0])
        fars.append(far[0])
    accuracies = np.asarray(accuracies)
    return TenFoldResult(
        accuracy=float(accuracies.mean()),
        accuracy_std=float(accuracies.std()),
        fold_accuracies=accuracies,
        fold_thresholds=np.asarray(chosen),
        val=float(np.mean(vals)),
        val_std=float(np.std(vals)),
        far=float(np.mean(fars)),
        far_target=float(far_target),
        roc_fpr=np.mean(fprs, axis=0),
        roc_tpr=np.mean(tprs, axis=0),
        thresholds=shown,
    )


def angular_fisher_score(embeddings, labels) -> float:
    """Angular Fisher score (SphereFace, Liu et al. 2017, appendix): AFS = S_w / S_b, lower is better.

    S_w = Σ_i Σ_{x_j ∈ X_i} (1 − cos⟨x_j, m_i⟩)   (within-class angular scatter)
    S_b = Σ_i n_i (1 − cos⟨m_i, m⟩)               (between-class angular scatter)

    with X_i the features of class i, n_i = |X_i|, m_i the mean feature of class i and m the mean
    of all features, means taken on the features as given (not normalised first).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise InputError(f"embeddings {x.shape} and labels {labels.shape} must describe the same N samples")
    classes, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if classes.size < 2:
        raise InputError("angular Fisher score needs at least two classes")
    sums = np.zeros((classes.size, x.shape[1]))
    np.add.at(sums, index, x)
    class_means = sums / counts[:, None]
    overall_mean = x.mean(axis=0)
    unit_x = l2_normalize(x)
    unit_means = l2_normalize(class_means)
    within = np.sum(1.0 - np.einsum("ij,ij->i", unit_x, unit_means[index]))
    between = np.sum(counts * (1.0 - unit_means @ l2_normalize(overall_mean[None, :])[0]))
    return float(within / between)


def pairs_settings(*, flip: bool, metric: str, n_folds: int, tar_method: str = "nearest") -> dict:
    """The settings block of a pair-set metrics file."""
    return {
        "flags": f"F{int(bool(flip))}",
        "flip": bool(flip),
        "metric": metric,
        "n_folds": int(n_folds),
        "accuracy_thresholds": f"{'squared L2' if metric == 'squared_l2' else 'cosine 1 - t/2'}, t = 0:4:{ACCURACY_STEP}",
        "val_method": "InsightFace: threshold interpolated on 9 folds, applied to the 10th",
        "tar_method": tar_method,
        "roc": SKLEARN_CONVENTION,
        "score": "cosine of L2-normalised image features",
    }


def pair_embeddings(path, features: np.ndarray, issame: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split features ordered (0, 1), (2, 3), … into (emb1, emb2, issame); checks the counts."""
    if issame is None:
        raise InputError(f"{path}: missing key 'issame' (pair sets store it beside the embeddings)")
    if features.shape[0] != 2 * issame.size:
        raise InputError(f"{path}: {features.shape[0]} embeddings for {issame.size} pairs (need 2 per pair)")
    return features[0::2], features[1::2], issame


PAIR_PROTOCOLS = ("insightface", "sphereface")


def _protocol_accuracy(protocol: str, embeddings, emb1, emb2, issame, score_values, metric, n_folds):
    """The protocol's 10-fold accuracy as a function of pair weights (``None``: unweighted); what does
    not depend on the weights (SphereFace's concatenated original + flipped features, read from the
    embeddings file) is prepared once, so that bootstrap replicates only redo the weighted part."""
    from facetrust.evaluate import pair_protocols

    if protocol == "sphereface":
        if embeddings.features is None or not embeddings.flip:
            raise ConfigError("protocol sphereface needs flip fusion on (its features are original + flipped)")
        noflip = load_embeddings(embeddings.path, flip=False).features
        both = pair_protocols.concatenated_features(embeddings.features, noflip)
        left, right = both[0::2], both[1::2]
        dots = pair_protocols.pair_dots(left, right)
        return lambda weights=None: pair_protocols.sphereface_ten_fold(left, right, issame, n_folds=n_folds,
                                                                       weights=weights, dots=dots)
    if score_values is not None:
        return lambda weights=None: pair_protocols.score_ten_fold(score_values, issame, n_folds=n_folds,
                                                                  weights=weights)
    # The cosine metric's grid c = 1 - t/2 makes the same decisions as the squared-L2 grid (module
    # docstring), so the weighted replicates read the squared-L2 one for both.
    distance = pair_distance(emb1, emb2, "squared_l2")
    return lambda weights=None: pair_protocols.insightface_ten_fold_weighted(
        distance, issame, np.ones(issame.size) if weights is None else weights, n_folds=n_folds)


def run_evaluate_pairs(
    embeddings_path: str | Path,
    out_json: str | Path,
    *,
    roc_out: str | Path | None = None,
    flip: bool = True,
    metric: str = "squared_l2",
    n_folds: int = 10,
    fars: Sequence[float] = DEFAULT_IJB_FARS,
    val_far: float = 1e-3,
    testset: str | None = None,
    protocol: str = "insightface",
    score: str = "cosine",
    identities_csv: str | Path | None = None,
    bootstrap=None,
    pfe_sigma: str = "per_dimension",
) -> dict:
    """File-level pair-set evaluation; writes and returns the metrics (plain JSON).

    ``tar_at_far`` is read off the ROC of all pairs (the ``score``, InsightFace nearest point);
    ``roc_out`` gets that ROC (``.npz`` / ``.csv``).  ``protocol="sphereface"`` replaces the 10-fold
    accuracy by SphereFace's (``evaluate.pair_protocols``); a non-cosine ``score`` by the score's own
    10-fold accuracy.  ``bootstrap`` adds intervals of the accuracy and TAR over identities
    (``identities_csv`` = quality.csv) and the images within them.
    """
    from facetrust.evaluate import bootstrap as error_bars

    if protocol not in PAIR_PROTOCOLS:
        raise ConfigError(f"pairs protocol: {protocol!r} is not one of {list(PAIR_PROTOCOLS)}")
    if protocol == "sphereface":  # evaluation.m scores pairs by cosine, whatever --metric says
        metric = "cosine"
    embeddings = load_embeddings(embeddings_path, flip=flip)
    emb1, emb2, issame = pair_embeddings(embeddings.path, embeddings.features, embeddings.issame)
    from facetrust.evaluate.roc import require_genuine_and_impostor

    require_genuine_and_impostor(issame, embeddings.path, "10-fold verification")
    score_values = None
    if score != "cosine":
        from facetrust.evaluate.scores import image_pair_scores

        score_values = image_pair_scores(score, embeddings, pfe_sigma)
    result = ten_fold_accuracy(emb1, emb2, issame, metric=metric, n_folds=n_folds, far_target=val_far)
    accuracy = result
    if protocol == "sphereface" or score_values is not None:
        accuracy = _protocol_accuracy(protocol, embeddings, emb1, emb2, issame, score_values, metric, n_folds)()
    similarity = -pair_distance(emb1, emb2, "cosine") if score_values is None else score_values
    fpr, tpr, thresholds = roc_points(issame.astype(np.int8), similarity)
    settings = pairs_settings(flip=flip, metric=metric, n_folds=n_folds)
    settings.update(protocol=protocol, score_name=score)
    if score != "cosine" and SCORES.get(score).uncertainty == "sigma_sq":
        from facetrust.evaluate.embeddings_file import pfe_sigma_sq

        settings["pfe_sigma_sq"] = pfe_sigma_sq(embeddings, pfe_sigma)[1]
    if protocol == "sphereface":
        settings.update(accuracy_thresholds="cosine of mean-subtracted concatenated features, -1:1:1e-4, tied "
                                            "thresholds averaged (SphereFace evaluation.m)",
                        features="[original; flipped] concatenated")
    if score_values is not None:
        settings["score"] = f"{score} of the two images"
    scored = Scored(fpr, tpr, thresholds, fars, folds=accuracy, val=result, val_far=val_far)
    values = compute_metrics(scored, needs=("folds", "roc"))
    values.update(error_bars.resolution_fields(fars, int(issame.size - issame.sum())))
    if bootstrap is not None and bootstrap.n_resamples > 0:
        values.update(_pairs_bootstrap(embeddings, emb1, emb2, issame, similarity, protocol, score_values, metric,
                                       n_folds, fars, identities_csv, bootstrap))
    metrics = metrics_record(testset or Path(embeddings_path).stem, "pairs_10fold", n_pairs=issame.size,
                             n_genuine=issame.sum(), settings=settings, embeddings=embeddings_path, **values)
    with outputs_together(out_json, roc_out):
        write_json_atomic(out_json, metrics)
        if roc_out is not None:
            write_roc(roc_out, fpr, tpr, thresholds)
    return metrics


def _pairs_bootstrap(embeddings, emb1, emb2, issame, similarity, protocol, score_values, metric, n_folds, fars,
                     identities_csv, settings) -> dict:
    """Accuracy and TAR replicates over identities and their images; the metrics fields."""
    from facetrust.evaluate import bootstrap as error_bars

    design = error_bars.pair_set_design(embeddings.images, issame.astype(np.int8), identities_csv, embeddings.path)
    sorted_scores = error_bars.SortedScores(similarity, issame.astype(np.int8))
    accuracy_of = _protocol_accuracy(protocol, embeddings, emb1, emb2, issame, score_values, metric, n_folds)

    def statistic(weights):
        fold = accuracy_of(weights)
        fpr, tpr = sorted_scores.roc(weights, far_max=max(fars))
        return np.r_[fold.accuracy, list(tar_at_far(fpr, tpr, fars, method="nearest").values())]

    replicates = error_bars.bootstrap_statistic(design, statistic, n_resamples=settings.n_resamples,
                                                seed=settings.seed, progress=True, within=settings.within)
    if settings.replicates_out is not None:
        error_bars.write_replicates(settings.replicates_out, fars=fars, tar=replicates[:, 1:], design=design,
                                    n_resamples=settings.n_resamples, seed=settings.seed, level=settings.level,
                                    extra={"accuracy": replicates[:, 0]})
    return {METRICS.get("accuracy").interval: [plain_float(v) for v in
                                               error_bars.percentile_interval(replicates[:, 0], settings.level)],
            METRICS.get("tar_at_far").interval: error_bars.interval_table(fars, replicates[:, 1:], settings.level),
            "bootstrap": {"n_resamples": settings.n_resamples, "seed": settings.seed, "level": settings.level,
                          "unit": error_bars.unit_description(design, settings.within),
                          "n_subjects": design.n_subjects, "design_digest": design.digest(),
                          "replicates": None if settings.replicates_out is None else str(settings.replicates_out)}}
