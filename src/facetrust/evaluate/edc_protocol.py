"""``facetrust evaluate edc``: EDC curves and pAUC of one method's uncertainty, with the bounds.

For an embeddings file with ``uncertainty`` on an IJB protocol (template pairs, scored as
``evaluate ijb`` scores them) or a pair set (image pairs, cosine): the method's ranking, a
**random** ranking (the mean of ``random_draws`` seeded draws), given ``quality.csv`` the
**known quality** ranking (``known_quality``: the renderer's scalar quality of the synthetic images, a
reference that model-based measures can and do beat, not a bound), and the **oracle** bound
(``oracle``: error-aware, the pairs the model gets wrong at the fixed threshold discarded first, i.e.
mated pairs by ascending score, non-mated by descending score; its pAUC minus the theoretical best
is 0 up to ties), all on the same comparison scores and the same fixed thresholds
(:mod:`facetrust.evaluate.edc`).  A template's uncertainty is aggregated in the
method's space (as in reject verification), its known quality is the mean over its images; pair
quality = the worse of the two.

Writes a JSON (``protocol: "edc"``; curves thinned for plots, pAUC on the full curves, bootstrap
intervals over subjects and templates, an ERC after CR-FIQA) and, with ``replicates_out``, the pAUC
replicates (paired across methods by the seed and design digest, both stored).  A pair set's
bootstrap subjects come from ``identities_csv`` (else one cluster per pair).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from facetrust.errors import InputError
from facetrust.evaluate import edc
from facetrust.evaluate.roc import require_genuine_and_impostor
from facetrust.formats import metrics_record, naming_file, plain_float


def image_quality(images: np.ndarray, quality_csv: str | Path, set_name: str | None) -> np.ndarray:
    """Known quality of each image from ``quality.csv`` (``image`` or ``<set>/<image>``)."""
    from facetrust.input_files import refuse_huge_exponents

    refuse_huge_exponents(quality_csv)  # pandas' parser crashes on a 5-digit exponent
    table = pd.read_csv(quality_csv)
    for column in ("image", "quality"):
        if column not in table.columns:
            raise InputError(f"{quality_csv}: missing column {column!r}")
    known = pd.Series(table["quality"].to_numpy(dtype=np.float64), index=table["image"].astype(str))
    names = pd.Index(np.asarray(images).astype(str))
    for candidate in (names, pd.Index(f"{set_name}/" + names.to_series()) if set_name else None):
        if candidate is not None and candidate.isin(known.index).all():
            return known.loc[candidate].to_numpy()
    missing = names[~names.isin(known.index)][0]
    raise InputError(f"{quality_csv}: no quality for image {missing!r} (set {set_name!r})")


def _template_mean(values: np.ndarray, template_ids: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, index = np.unique(template_ids, return_inverse=True)
    mean = np.bincount(index, weights=values, minlength=ids.size) / np.bincount(index, minlength=ids.size)
    rows = pd.Index(ids)
    return mean[rows.get_indexer(pairs[:, 0])], mean[rows.get_indexer(pairs[:, 1])]


def _inputs(embeddings, ijb_dir, name, *, template_how, space, pooling, flags, quality_csv, failed_images=None,
            identities_csv=None):
    """(scores, labels, method pair quality, known-quality pair quality or None, design, test set, settings)."""
    from facetrust.evaluate.bootstrap import ijb_design, pair_set_design
    from facetrust.evaluate.reject import check_uncertainty_rows, needs_positive, template_uncertainty_in_space

    if ijb_dir is None:
        from facetrust.evaluate.pairs import pair_distance, pair_embeddings

        emb1, emb2, issame = pair_embeddings(embeddings.path, embeddings.features, embeddings.issame)
        require_genuine_and_impostor(issame, embeddings.path, "EDC")  # mated and non-mated comparisons both
        u = embeddings.uncertainty
        oracle = None
        if quality_csv is not None:
            known = image_quality(embeddings.images, quality_csv, None)
            oracle = np.minimum(known[0::2], known[1::2])
        design = pair_set_design(embeddings.images, issame.astype(np.int8), identities_csv, embeddings.path)
        return (-pair_distance(emb1, emb2, "cosine"), issame.astype(np.int8), -np.maximum(u[0::2], u[1::2]), oracle,
                design, embeddings.path.stem, {"score": "cosine of L2-normalised image features"})
    from facetrust.data.ijb import TEMPLATE_PAIR_LABEL, read_ijb_protocol
    from facetrust.evaluate.ijb import align_images, evaluate_ijb, ijb_settings

    from facetrust.evaluate.enrolment import enrolled_protocol

    protocol, failures = enrolled_protocol(read_ijb_protocol(ijb_dir, name, check_landmarks=False), embeddings, failed_images)
    require_genuine_and_impostor(protocol.labels, Path(ijb_dir) / "meta" / TEMPLATE_PAIR_LABEL.format(name=protocol.name),
                                 "EDC")
    result = evaluate_ijb(embeddings, protocol, pooling=pooling, progress=True, **flags)
    rows = align_images(embeddings.images, protocol.images, embeddings.path)
    check_uncertainty_rows(embeddings, rows, finite=False, positive=needs_positive("mean", space, template_how),
                           why="EDC cannot rank it")
    with naming_file(embeddings.path):  # the uncertainties are the file's
        tids, t_unc = template_uncertainty_in_space(embeddings.uncertainty[rows], protocol.template_ids, template_how,
                                                    space)
    lookup = pd.Index(tids)
    method = -np.maximum(t_unc[lookup.get_indexer(protocol.pairs[:, 0])], t_unc[lookup.get_indexer(protocol.pairs[:, 1])])
    oracle = None
    if quality_csv is not None:
        q1, q2 = _template_mean(image_quality(protocol.images, quality_csv, protocol.name), protocol.template_ids,
                                protocol.pairs)
        oracle = np.minimum(q1, q2)
    settings = ijb_settings(flip=embeddings.flip, pooling=pooling, tar_method="nearest",
                            pfe_sigma_kind=result.metrics["settings"].get("pfe_sigma_sq"), **flags)
    settings.update(template_uncertainty=template_how, template_uncertainty_space=space)
    if failures is not None:
        settings["failure_to_enrol"] = failures.record()
    return result.scores, result.labels, method, oracle, ijb_design(ijb_dir, protocol), protocol.name, settings


def _curves(scores, labels, quality, thresholds, starting_error, weights=None) -> dict[str, edc.EdcCurve]:
    genuine = np.asarray(labels).astype(bool)
    out = {}
    for error, mask in (("fnmr", genuine), ("fmr", ~genuine)):
        w = None if weights is None else weights[mask]
        out[error] = edc.edc_curve(scores[mask], quality[mask], error, starting_error=starting_error,
                                   threshold=thresholds[error], weights=w)
    return out


def _random_curves(scores, labels, thresholds, starting_error, limit, draws, seed) -> tuple[dict, dict]:
    """Mean pAUC of ``draws`` random rankings, and the first draw's curves (for the figure)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xED0]))
    paucs = {"fnmr": [], "fmr": []}
    first = None
    for _ in range(draws):
        curves = _curves(scores, labels, rng.random(scores.size), thresholds, starting_error)
        first = first or curves
        for error, curve in curves.items():
            paucs[error].append(edc.edc_pauc(curve, limit))
    return {error: float(np.mean(values)) for error, values in paucs.items()}, first


def run_evaluate_edc(embeddings_path, out_json, *, ijb_dir=None, name=None, quality_csv=None,
                     template_how: str = "mean", space: str = "method", pooling: str = "mean", flags: dict | None = None,
                     starting_error: float = 0.05, discard_limit: float = 0.2, random_draws: int = 10,
                     crfiqa_fmrs: Sequence[float] = (1e-3, 1e-4), seed: int = 0, bootstrap=None,
                     failed_images=None, identities_csv=None) -> dict:
    """EDC of one uncertainty file (module docstring); writes ``out_json`` and returns it."""
    from facetrust.evaluate.bootstrap import bootstrap_statistic, percentile_interval, unit_description
    from facetrust.evaluate.embeddings_file import load_embeddings
    from facetrust.evaluate.reject import check_uncertainty_rows, method_space
    from facetrust.io import atomic_path, outputs_together, write_json_atomic

    replicate_arrays = None
    flags = dict(flags or {"normalize_images": False, "use_detector_score": True})
    embeddings = load_embeddings(embeddings_path, flip=flags.pop("flip", True))
    if embeddings.uncertainty is None:
        raise InputError(f"{embeddings.path}: missing key 'uncertainty' (EDC ranks comparisons by it)")
    if ijb_dir is None:  # a pair set ranks every row (an IJB protocol only its own images: checked in _inputs)
        check_uncertainty_rows(embeddings, finite=False, why="EDC cannot rank it")
    resolved = method_space(space, embeddings.uncertainty_space)
    scores, labels, method_q, known_q, design, test_set, settings = _inputs(
        embeddings, ijb_dir, name, template_how=template_how, space=resolved, pooling=pooling, flags=flags,
        quality_csv=quality_csv, failed_images=failed_images, identities_csv=identities_csv)
    genuine = np.asarray(labels).astype(bool)
    # The error-aware oracle: a mated pair's quality is its score (low scores are the false
    # non-matches), a non-mated pair's the negated score (high scores are the false matches).
    scores64 = np.asarray(scores, dtype=np.float64)
    oracle_q = np.where(genuine, scores64, -scores64)
    thresholds = {"fnmr": edc.comparison_threshold(scores[genuine], "fnmr", starting_error),
                  "fmr": edc.comparison_threshold(scores[~genuine], "fmr", starting_error)}
    rankings = {"method": method_q, **({"known_quality": known_q} if known_q is not None else {}),
                "oracle": oracle_q}
    # the file each ranking's values come from, to name in an error (NaN qualities, say)
    sources = {"method": embeddings.path, "known_quality": quality_csv, "oracle": embeddings.path}
    curves = {}
    for who, q in rankings.items():
        with naming_file(sources[who]):
            curves[who] = _curves(scores, labels, q, thresholds, starting_error)
    random_pauc, curves["random"] = _random_curves(scores, labels, thresholds, starting_error, discard_limit,
                                                   random_draws, seed)
    pauc = {who: {e: edc.edc_pauc(c, discard_limit) for e, c in cs.items()} for who, cs in curves.items()}
    pauc["random"] = random_pauc
    values = {
        "curves": {who: {e: dict(zip(("discard", "error"), edc.thin_curve(c))) for e, c in cs.items()}
                   for who, cs in curves.items()},
        "pauc": {who: {e: plain_float(v) for e, v in p.items()} for who, p in pauc.items()},
        "starting_error_achieved": {e: plain_float(c.starting_error) for e, c in curves["method"].items()},
        "thresholds": {e: plain_float(t) for e, t in thresholds.items()},
        "crfiqa": {who: edc.crfiqa_erc(scores, labels, q, crfiqa_fmrs) for who, q in rankings.items()},
    }
    if bootstrap is not None and bootstrap.n_resamples > 0:
        # FNM-EDC only (the headline: quality measures are judged on mated comparisons; the FM-EDC
        # over 10^5 non-mated pairs barely moves).  The threshold is refixed in every replicate.
        mated_scores = scores[genuine]

        def statistic(weights):
            w = weights[genuine]
            return np.array([edc.edc_pauc(edc.edc_curve(mated_scores, q[genuine], "fnmr", starting_error=starting_error,
                                                        weights=w), discard_limit) for q in rankings.values()])

        replicates = bootstrap_statistic(design, statistic, n_resamples=bootstrap.n_resamples, seed=bootstrap.seed,
                                         progress=True, within=bootstrap.within)
        keys = [(who, "fnmr") for who in rankings]
        values["pauc_ci"] = {}
        for j, (who, e) in enumerate(keys):
            values["pauc_ci"].setdefault(who, {})[e] = [plain_float(v) for v in
                                                        percentile_interval(replicates[:, j], bootstrap.level)]
        values["bootstrap"] = {"n_resamples": bootstrap.n_resamples, "seed": bootstrap.seed, "level": bootstrap.level,
                               "unit": unit_description(design, bootstrap.within), "design_digest": design.digest(),
                               "replicates": None if bootstrap.replicates_out is None else str(bootstrap.replicates_out)}
        if bootstrap.replicates_out is not None:
            replicate_arrays = {**{f"pauc_{who}_{e}": replicates[:, j] for j, (who, e) in enumerate(keys)},
                                "seed": np.int64(bootstrap.seed), "level": np.float64(bootstrap.level),
                                "design_digest": np.array(design.digest()),
                                "n_resamples": np.int64(bootstrap.n_resamples)}
    settings.update(
        edc="fixed threshold (Schlett et al. arXiv 2303.13294, dasec edc.py); ties in quality discarded together",
        starting_error=starting_error, discard_limit=discard_limit, pauc="stepwise, minus the theoretical best",
        pair_quality="the worse of the two (max uncertainty, min confidence)", uncertainty_space=resolved,
        uncertainty_kind=embeddings.uncertainty_kind, random_draws=random_draws, seed=seed,
        known_quality=("known quality (the renderer's scalar; a reference, not a bound): mean over the template's "
                       "images (quality.csv)") if known_q is not None else None,
        oracle="error-aware oracle bound: the pairs wrong at the fixed threshold discarded first (mated by "
               "ascending score, non-mated by descending score)",
        crfiqa="ERC after CR-FIQA (not its exact threshold rule): threshold = numpy quantile of the kept non-mated "
               "scores at 1 - FMR, recomputed at each fraction; fractions 0-0.95; trapezoid AUC")
    n_genuine = int(genuine.sum())
    metrics = metrics_record(test_set, "edc", n_pairs=labels.size, n_genuine=n_genuine, settings=settings,
                             embeddings=embeddings_path, **values)
    replicates_out = bootstrap.replicates_out if replicate_arrays is not None else None
    with outputs_together(out_json, replicates_out):  # the replicates never without their metrics
        if replicate_arrays is not None:
            with atomic_path(replicates_out) as tmp, open(tmp, "wb") as f:
                np.savez(f, **replicate_arrays)
        write_json_atomic(out_json, metrics)
    return metrics
