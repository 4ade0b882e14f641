"""IJB-B/C 1:1 verification: template features, pair scores, TAR at FAR.

Default = InsightFace ``eval_ijbc.py`` (docs/FORMATS.md "Conventions"), named by its flags:

- **F1**: the image feature is original + flipped embedding summed (``embedding``); F0 reads
  ``embedding_noflip``;
- **N1**: image features keep their norm; N0 (``normalize_images=True``) L2-normalises them;
- **D1**: image features are multiplied by the detector score; D0 does not;
- frames of one media are averaged, the media of a template summed, the template L2-normalised;
  score = dot product; ROC = ``sklearn.metrics.roc_curve`` defaults; TAR = nearest FPR point.

Uncertainty-aware pooling (``pooling``) replaces the media step: ``"pfe"`` fuses all images of a
template by precision (PFE), ``"kappa"`` sums κ-weighted unit features (SCF).  Both work on unit
image features and ignore N and D; the metrics file records the flags that were in effect.
``"kappa_media"`` is the SCF README's protocol: κ takes the detector score's place as the weight of
each unit image feature *inside* the InsightFace media/template pipeline.

``score`` (``evaluate.scores.SCORES``) compares templates by cosine (default) or by the papers' own
scores (SCF Eq. 13, PFE's MLS); ``constant_uncertainty`` evaluates a pooling with κ ≡ 1 / σ² ≡ 1,
the control row that isolates what the uncertainty itself adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from facetrust.data.ijb import IJBProtocol, read_ijb_protocol
from facetrust.errors import ConfigError, InputError
from facetrust.evaluate.embeddings_file import EmbeddingsFile, load_embeddings, pfe_sigma_sq
from facetrust.evaluate.poolings import POOLINGS, check_pooling
from facetrust.evaluate.exact_tar import exact_tar_at_far, float32_dot_error_bound
from facetrust.evaluate.enrolment import EnrolmentFailures, image_rows
from facetrust.evaluate.score_plan_cache import cached_score_plan
from facetrust.evaluate.template_dots import float64_pair_scores, pair_scores
from facetrust.evaluate.roc import (
    DEFAULT_IJB_FARS,
    SKLEARN_CONVENTION,
    roc_points,
    roc_points_and_classes,
    write_roc,
)
from facetrust.evaluate.metrics import Scored, compute_metrics
from facetrust.formats import metrics_record
from facetrust.io import outputs_together, write_json_atomic
from facetrust.npz import StoredRows


# What the cosine metrics are computed from (docs/FORMATS.md "Conventions"): TAR@FAR is that of the
# float64 pair scores; the AUC and the ROC file are of the float32 scores (they agree to ~1e-10).
TAR_PRECISION = {"tar_scores": "float64 (float32 scores, rescored in float64 near the deciding thresholds)",
                 "roc_scores": "float32"}


def mode_flags(normalize_images: bool, use_detector_score: bool, flip: bool) -> str:
    """InsightFace test-mode name, e.g. ``"N1D1F1"`` (N1 = features *not* normalised)."""
    return f"N{0 if normalize_images else 1}D{int(bool(use_detector_score))}F{int(bool(flip))}"


def template_features(embeddings, template_ids, media_ids, detector_scores=None, **options) -> tuple[np.ndarray, np.ndarray]:
    """:func:`template_features_float64` with the features rounded to float32, as they are scored."""
    unique_ids, features = template_features_float64(embeddings, template_ids, media_ids, detector_scores, **options)
    return unique_ids, features.astype(np.float32)


def template_features_float64(
    embeddings: np.ndarray,
    template_ids: np.ndarray,
    media_ids: np.ndarray,
    detector_scores: np.ndarray | None = None,
    *,
    normalize_images: bool = False,
    use_detector_score: bool = True,
    weights: np.ndarray | None = None,
    pooling: str = "mean",
    uncertainty: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pool image features (N, D) into L2-normalised template features.

    Returns ``(template_ids_unique, features)``: sorted unique template ids (T,) and float64
    features (T, D), row k for ``template_ids_unique[k]``.  ``embeddings`` may be a
    :class:`~facetrust.npz.StoredRows` (mean pooling then reads it a block at a time).

    ``pooling="mean"`` (InsightFace): x_i ← x_i/‖x_i‖ if ``normalize_images`` (N0); x_i ← s_i·x_i
    with the detector score if ``use_detector_score`` (D1); x_i ← w_i·x_i with ``weights``; then
    frames of a media averaged, media summed, template L2-normalised.
    ``pooling="pfe"``: ``uncertainty`` is σ² ((N,) or (N, D)); unit image features fused by
    precision (:func:`~facetrust.evaluate.fusion.pfe_fuse`).  ``pooling="kappa"``: ``uncertainty``
    is 1/κ; Σ κ_i x̂_i (:func:`~facetrust.evaluate.fusion.kappa_fuse`).  ``weights`` multiplies
    the precision / κ there; N and D are not used.
    """
    spec = POOLINGS.get(pooling)
    if not (spec.streams and isinstance(embeddings, StoredRows)):  # a streaming pooling reads rows in blocks
        embeddings = np.asarray(embeddings)
    template_ids = np.asarray(template_ids)
    media_ids = np.asarray(media_ids)
    n = embeddings.shape[0]
    if embeddings.ndim != 2 or template_ids.shape != (n,) or media_ids.shape != (n,):
        raise InputError(
            f"template_features: embeddings {embeddings.shape}, template_ids {template_ids.shape} and "
            f"media_ids {media_ids.shape} must describe the same N images"
        )
    unique_ids, template_index = np.unique(template_ids, return_inverse=True)
    image_weight = np.ones(n, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    if spec.uncertainty is not None:
        if uncertainty is None:
            raise InputError(f"pooling={pooling!r} needs per-image uncertainty")
        uncertainty = np.asarray(uncertainty, dtype=np.float64)
        if uncertainty.shape[0] != n:
            raise InputError(f"uncertainty has {uncertainty.shape[0]} rows for {n} images")
    return unique_ids, spec.fuse(embeddings, template_index, unique_ids.size, media_ids, image_weight, uncertainty,
                                 normalize_images=normalize_images, use_detector_score=use_detector_score,
                                 detector_scores=detector_scores)


def align_images(embedded: np.ndarray, wanted: np.ndarray, embeddings_path: str | Path) -> np.ndarray:
    """Row of ``embedded`` for every name in ``wanted``; names may also match by basename.

    Raises :class:`InputError` naming the embeddings file and the first image it lacks.
    """
    rows = image_rows(embedded, wanted, embeddings_path)
    if (rows < 0).any():
        missing = str(wanted[int(np.flatnonzero(rows < 0)[0])])
        raise InputError(f"{embeddings_path}: key 'image' has no entry for protocol image {missing!r}")
    return rows


@dataclass
class IJBResult:
    """What :func:`evaluate_ijb` computed: metrics (plain JSON), per-pair scores and labels, ROC."""

    metrics: dict
    scores: np.ndarray
    labels: np.ndarray
    template_ids: np.ndarray
    features: np.ndarray
    roc: tuple[np.ndarray, np.ndarray, np.ndarray] = field(repr=False)


def _score_uncertainty(score: str) -> str | None:
    from facetrust.evaluate.scores import SCORES

    return SCORES.get(score).uncertainty


def ijb_settings(*, normalize_images: bool, use_detector_score: bool, flip: bool, pooling: str, tar_method: str,
                 score: str = "cosine", constant_uncertainty=None, pfe_sigma_kind: str | None = None) -> dict:
    """The settings block of the metrics file, with the flags that were in effect."""
    if POOLINGS.get(pooling).uncertainty is not None:  # uncertainty pooling: unit features, no detector scores
        normalize_images, use_detector_score = True, False
    extra = {}
    if score != "cosine" or constant_uncertainty:
        from facetrust.evaluate.scores import score_description

        extra = {"score": f"{score}: {score_description(score)}", "score_name": score}
    if constant_uncertainty:
        extra["uncertainty"] = f"constant (control): {constant_uncertainty}"
    if pfe_sigma_kind is not None and "sigma_sq" in (POOLINGS.get(pooling).uncertainty, _score_uncertainty(score)):
        extra["pfe_sigma_sq"] = pfe_sigma_kind
    return {
        "flags": mode_flags(normalize_images, use_detector_score, flip),
        "normalize_images": bool(normalize_images),
        "use_detector_score": bool(use_detector_score),
        "flip": bool(flip),
        "pooling": pooling,
        "tar_method": tar_method,
        "roc": SKLEARN_CONVENTION,
        "score": "dot product of L2-normalised template features",
        "score_name": "cosine",
        **extra,
    }


def evaluate_ijb(
    embeddings: EmbeddingsFile,
    protocol: IJBProtocol,
    *,
    fars: Sequence[float] = DEFAULT_IJB_FARS,
    normalize_images: bool = False,
    use_detector_score: bool = True,
    pooling: str = "mean",
    tar_method: str = "nearest",
    progress: bool = False,
    score: str = "cosine",
    constant_uncertainty=None,
    failures: EnrolmentFailures | None = None,
    pfe_sigma: str = "per_dimension",
) -> IJBResult:
    """Score every template pair of ``protocol`` with ``embeddings`` and read TAR at each FAR.

    The detector scores come from the protocol (``name_5pts_score.txt``), as in InsightFace.
    ``failures`` (:func:`facetrust.evaluate.enrolment.split_failures`, whose enrolled protocol is
    ``protocol``): under its ``reject`` convention the failed templates' pairs join the ROC below
    every other pair, and the result's scores and labels cover the whole original protocol.
    ``pfe_sigma`` (pooling ``pfe``): ``"per_dimension"`` (PFE's own) or the ``"isotropic"`` ablation
    (:func:`~facetrust.evaluate.embeddings_file.pfe_sigma_sq`); the settings record which was used.
    """
    spec = POOLINGS.get(pooling)
    rows = align_images(embeddings.images, protocol.images, embeddings.path)
    identity = rows.size == embeddings.images.size and np.array_equal(rows, np.arange(rows.size))
    take = (lambda a: a) if identity else (lambda a: a[rows])
    uncertainty, sigma_kind = None, None
    if spec.uncertainty == "sigma_sq":
        uncertainty, sigma_kind = pfe_sigma_sq(embeddings, pfe_sigma)
    elif spec.uncertainty == "kappa":
        uncertainty = embeddings.uncertainty
    if constant_uncertainty and spec.uncertainty is not None:  # the control row: one κ / σ² for every image
        from facetrust.evaluate.scores import constant_like

        uncertainty = constant_like(uncertainty, embeddings.images.size, constant_uncertainty)
        sigma_kind = None if sigma_kind is None else f"constant (control), from {sigma_kind}"
    if spec.uncertainty is not None and uncertainty is None:
        raise InputError(f"{embeddings.path}: pooling={pooling!r} needs key 'uncertainty'")
    if score != "cosine":
        return _evaluate_ijb_score(embeddings, protocol, take, uncertainty, fars=fars, pooling=pooling,
                                   tar_method=tar_method, score=score, constant_uncertainty=constant_uncertainty,
                                   failures=failures, sigma_kind=sigma_kind)
    template_ids, features64 = template_features_float64(
        take(embeddings.features),
        protocol.template_ids,
        protocol.media_ids,
        protocol.detector_scores,
        normalize_images=normalize_images,
        use_detector_score=use_detector_score,
        pooling=pooling,
        uncertainty=None if uncertainty is None else take(uncertainty),
    )
    features = features64.astype(np.float32)
    # a protocol from the decoded-protocol cache: its pairs' scoring plan from the cache too (same scores)
    plan = cached_score_plan(protocol, template_ids)
    scores = pair_scores(template_ids, features, protocol.pairs, progress=progress, plan=plan)
    labels = protocol.labels
    rescore = float64_pair_scores(template_ids, features64, protocol.pairs)
    if failures is not None and failures.convention == "reject":
        scores, labels, rescore = failures.all_pairs(scores, rescore)
    (fpr, tpr, thresholds), classes = roc_points_and_classes(labels, scores)
    # TAR of the float64 scores (InsightFace scores in float64): float32 scores rescored in float64
    # only near the genuine scores that decide each FAR (evaluate/exact_tar.py).
    exact = exact_tar_at_far(scores, labels, rescore, float32_dot_error_bound(features.shape[1]), fars,
                             tar_method, classes)
    del features64
    settings = ijb_settings(normalize_images=normalize_images, use_detector_score=use_detector_score,
                            flip=embeddings.flip, pooling=pooling, tar_method=tar_method,
                            constant_uncertainty=constant_uncertainty, pfe_sigma_kind=sigma_kind)
    settings.update(TAR_PRECISION)
    metrics = metrics_record(
        protocol.name, "ijb_1to1", n_pairs=labels.size, n_genuine=int(np.count_nonzero(labels)),
        settings=settings,
        embeddings=embeddings.path,
        # TAR: the exact float64 reading; thresholds: the float32 scores' ROC (settings roc_scores)
        **compute_metrics(Scored(fpr, tpr, thresholds, fars, tar_method, tar=exact.tar_at_far)),
        n_templates=int(template_ids.size),
        n_images=int(protocol.images.size),
        **({} if failures is None else {"failure_to_enrol": failures.record()}),
    )
    return IJBResult(metrics, scores, labels, template_ids, features, (fpr, tpr, thresholds))


def _evaluate_ijb_score(embeddings, protocol, take, uncertainty, *, fars, pooling, tar_method, score,
                        constant_uncertainty, failures=None, sigma_kind=None) -> IJBResult:
    """:func:`evaluate_ijb` with one of the papers' own scores (``evaluate.scores``)."""
    from facetrust.evaluate import scores as scoring

    templates = scoring.score_templates(score, pooling, take(embeddings.features), protocol.template_ids,
                                        protocol.media_ids, take(uncertainty))
    pair_score = scoring.pair_scores(score, templates, protocol.pairs)
    labels = protocol.labels
    if failures is not None and failures.convention == "reject":
        pair_score, labels, _ = failures.all_pairs(pair_score)
    fpr, tpr, thresholds = roc_points(labels, pair_score)  # float64 scores: TAR, AUC and ROC all float64
    settings = ijb_settings(normalize_images=True, use_detector_score=False, flip=embeddings.flip, pooling=pooling,
                            tar_method=tar_method, score=score, constant_uncertainty=constant_uncertainty,
                            pfe_sigma_kind=sigma_kind)
    settings.update(tar_scores="float64", roc_scores="float64")
    metrics = metrics_record(
        protocol.name, "ijb_1to1", n_pairs=labels.size, n_genuine=int(np.count_nonzero(labels)),
        settings=settings,
        embeddings=embeddings.path,
        **compute_metrics(Scored(fpr, tpr, thresholds, fars, tar_method)),
        n_templates=int(templates.ids.size),
        n_images=int(protocol.images.size),
        **({} if failures is None else {"failure_to_enrol": failures.record()}),
    )
    return IJBResult(metrics, pair_score, labels, templates.ids, templates.directions.astype(np.float32),
                     (fpr, tpr, thresholds))


def run_evaluate_ijb(
    embeddings_path: str | Path,
    ijb_dir: str | Path,
    name: str | None,
    out_json: str | Path,
    *,
    roc_out: str | Path | None = None,
    fars: Sequence[float] = DEFAULT_IJB_FARS,
    normalize_images: bool = False,
    use_detector_score: bool = True,
    flip: bool = True,
    pooling: str = "mean",
    tar_method: str = "nearest",
    score: str = "cosine",
    constant_uncertainty=None,
    bootstrap=None,
    failed_images: str | Path | None = None,
    failed_templates: str = "reject",
    duplicate_pairs: str = "error",
    pfe_sigma: str = "per_dimension",
) -> dict:
    """File-level IJB 1:1 evaluation: read, evaluate, write ``out_json`` (and ``roc_out``); return the metrics.

    ``failed_images``: the aligned set's ``manifest.json`` (or a list) of images that failed
    alignment; the embeddings may lack exactly these, and ``failed_templates`` says what happens to
    the pairs of templates left without images (:mod:`facetrust.evaluate.enrolment`).
    ``duplicate_pairs``: a pair listed twice is an error (``"error"``), or its repeats are left out
    and counted in the metrics' ``duplicate_pairs`` (``"drop"``).  Landmarks are not judged here:
    evaluation never uses them (``align`` does).

    ``name`` None infers it from ``ijb_dir/meta``.  ``roc_out`` ending ``.npz`` or ``.csv`` gets about
    2000 ROC points log-spaced in FPR (TAR is computed on the full ROC).  The metrics always flag
    the FARs the impostor count cannot resolve; ``bootstrap`` (a
    :class:`~facetrust.evaluate.bootstrap.BootstrapSettings`) adds percentile intervals over
    subjects and templates and writes the replicates.
    """
    if tar_method not in ("nearest", "interpolate", "strict"):
        raise ConfigError(f"tar_method: {tar_method!r} is not one of ['nearest', 'interpolate', 'strict']")
    check_pooling(pooling)
    protocol = read_ijb_protocol(ijb_dir, name, check_landmarks=False, duplicate_pairs=duplicate_pairs)
    from facetrust.data.ijb import TEMPLATE_PAIR_LABEL
    from facetrust.evaluate.roc import require_genuine_and_impostor

    require_genuine_and_impostor(protocol.labels, Path(ijb_dir) / "meta" / TEMPLATE_PAIR_LABEL.format(name=protocol.name))
    # the feature matrix streams from disk for the InsightFace pooling; the other poolings and scores read it whole
    stream = POOLINGS.get(pooling).streams and score == "cosine" and constant_uncertainty is None
    embeddings = load_embeddings(embeddings_path, flip=flip, stream=stream)
    enrolled, failures = protocol, None
    if failed_images is not None:
        from facetrust.evaluate.enrolment import read_failed_images, split_failures

        enrolled, failures = split_failures(protocol, image_rows(embeddings.images, protocol.images, embeddings.path),
                                            read_failed_images(failed_images), failed_templates, embeddings.path)
    result = evaluate_ijb(embeddings, enrolled, fars=fars, normalize_images=normalize_images,
                          use_detector_score=use_detector_score, pooling=pooling, tar_method=tar_method,
                          progress=True, score=score, constant_uncertainty=constant_uncertainty, failures=failures,
                          pfe_sigma=pfe_sigma)
    from facetrust.evaluate import bootstrap as error_bars

    result.metrics.update(error_bars.resolution_fields(fars, result.metrics["n_impostor"]))
    if duplicate_pairs != "error":
        result.metrics["duplicate_pairs"] = {"policy": duplicate_pairs, "dropped": protocol.duplicate_pairs}
    if bootstrap is not None:
        # the design of the pairs the scores cover: all of them under "reject", the enrolled under "drop"
        scored = protocol if failures is not None and failures.convention == "reject" else enrolled
        result.metrics.update(error_bars.tar_interval_fields(error_bars.ijb_design(ijb_dir, scored),
                                                             result.scores, fars, tar_method, bootstrap))
    with outputs_together(out_json, roc_out):
        write_json_atomic(out_json, result.metrics)
        if roc_out is not None:
            write_roc(roc_out, *result.roc)
    return result.metrics
