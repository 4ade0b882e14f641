"""What a benchmark says about one verification: the decision threshold at a FAR (from a metrics
file's ``threshold_at_far``, the ROC point TAR was read at) and where a face's uncertainty lies
among the benchmark's images (from the embeddings file the metrics came from)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facetrust.errors import InputError
from facetrust.formats import check_far_keys, far_key, metrics_number, read_metrics, test_set_of


@dataclass
class OperatingPoint:
    """``score >= threshold`` is "same"; ``threshold`` None accepts nothing (+inf)."""

    threshold: float | None
    far: float | None  # the target FAR asked for (None: a threshold given by hand)
    roc_far: float | None  # the FPR of the ROC point on the benchmark
    roc_tar: float | None
    score: str
    flip: bool
    test_set: str | None
    source: str | None
    #: what limits the threshold's reading (:func:`caveats`), one sentence each
    caveats: tuple[str, ...] = ()

    def record(self) -> dict:
        return {"threshold": self.threshold, "far": self.far, "roc_far": self.roc_far, "roc_tar": self.roc_tar,
                "score": self.score, "test_set": self.test_set, "metrics": self.source,
                "rule": "same identity when score >= threshold", "caveats": list(self.caveats)}

    def describe(self) -> str:
        threshold = "+inf (accept nothing)" if self.threshold is None else f"{self.threshold:.6g}"
        if self.far is None:
            return f"{self.score} threshold {threshold} (given)"
        return (f"{self.score} threshold {threshold} at FAR {self.far:.0e} on {self.test_set} (the ROC point at "
                f"FAR {self.roc_far:.3g}, TAR {self.roc_tar:.4g}; {self.source})")


def metrics_score(metrics: dict) -> str:
    """The comparison score a metrics file was evaluated with."""
    settings = metrics.get("settings") or {}
    if "score_name" in settings:
        return str(settings["score_name"])
    if settings.get("source") == "pair scores file":  # evaluate pairs --scores: the score's own name
        return str(settings.get("score"))
    return "cosine"


def operating_point(metrics_path: str | Path, far: float, score: str | None) -> OperatingPoint:
    """The threshold of ``metrics_path`` at ``far`` (one of the FARs it was evaluated at)."""
    metrics = read_metrics(metrics_path)  # settings an object, test_set and embeddings strings
    _check_operating_fields(metrics, metrics_path)
    settings = metrics.get("settings") or {}
    evaluated = metrics_score(metrics)
    if score is not None and score != evaluated:
        raise InputError(f"{metrics_path}: evaluated with score {evaluated!r}, not {score!r}: its thresholds "
                         f"are in that score's units")
    if "uncertainty" in settings and evaluated != "cosine":
        raise InputError(f"{metrics_path}: a control row ({settings['uncertainty']}): its {evaluated} thresholds "
                         f"assume one constant uncertainty for every image, not this face's")
    points = metrics.get("threshold_at_far")
    if points is not None and not isinstance(points, dict):
        raise InputError(f"{metrics_path}: key 'threshold_at_far' must map FAR keys to their ROC points, got "
                         f"{type(points).__name__}")
    if points is None:
        raise InputError(f"{metrics_path}: no 'threshold_at_far' (written by facetrust evaluate since thresholds "
                         f"are stored; evaluate again)")
    check_far_keys(points, metrics_path, "threshold_at_far")
    key = far_key(far)
    point = points.get(key)
    if point is not None and not isinstance(point, dict):
        raise InputError(f"{metrics_path}: key threshold_at_far[{key!r}] must be a JSON object with 'threshold', "
                         f"'far' and 'tar', got {type(point).__name__}")
    if point is None or "threshold" not in point:
        raise InputError(f"{metrics_path}: threshold_at_far has no FAR {key}; it has "
                         f"{', '.join(repr(k)[1:-1][:40] for k in list(points)[:20]) or 'none'}")
    where = f"threshold_at_far[{key!r}]"
    # null: the ROC point accepts nothing (+inf); NaN, infinity or a string are refused: a NaN
    # threshold would call every pair "different"
    threshold = None if point["threshold"] is None else metrics_number(point["threshold"], metrics_path,
                                                                      f"{where}.threshold")
    roc_far = metrics_number(point.get("far"), metrics_path, f"{where}.far", allow_none=True, low=0.0, high=1.0)
    roc_tar = metrics_number(point.get("tar"), metrics_path, f"{where}.tar", allow_none=True, low=0.0, high=1.0)
    test_set = test_set_of(metrics) or None
    return OperatingPoint(threshold, float(far), roc_far, roc_tar, evaluated,
                          bool(settings.get("flip", True)), test_set, str(metrics_path),
                          caveats(metrics, key, float(far), roc_far, test_set or "the benchmark"))


def _check_operating_fields(metrics: dict, path) -> None:
    """InputError naming ``path`` and the key for a field :func:`operating_point` and :func:`caveats`
    read that has the wrong type: the score's name, ``flip``, ``unresolved_fars``, the counts."""
    settings = metrics.get("settings") or {}
    for key in ("score_name", "source", "score", "uncertainty"):
        value = settings.get(key)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{path}: key settings.{key} must be a string, got {type(value).__name__}")
    if "flip" in settings and not isinstance(settings["flip"], bool):
        raise InputError(f"{path}: key settings.flip must be true or false, got {settings['flip']!r:.40}")
    unresolved = metrics.get("unresolved_fars")
    if unresolved is not None and not (isinstance(unresolved, list) and all(isinstance(k, str) for k in unresolved)):
        raise InputError(f"{path}: key unresolved_fars must be a list of FAR keys (strings like '1e-04')")
    for key in ("n_impostor", "min_resolved_far"):
        metrics_number(metrics.get(key), path, key, allow_none=True, low=0.0)
    if metrics.get("protocol") is not None and not isinstance(metrics["protocol"], str):
        raise InputError(f"{path}: key protocol must be a string, got {type(metrics['protocol']).__name__}")


def _far_text(value) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "?"


def caveats(metrics: dict, key: str, far: float, roc_far, test_set: str) -> tuple[str, ...]:
    """What limits a threshold read from ``metrics`` at FAR ``key``: too few impostor pairs to
    resolve it (the metrics file's ``unresolved_fars``), a ROC whose point lies above the asked FAR,
    and a protocol whose scores are not those of two single photographs (IJB templates)."""
    from facetrust.evaluate.bootstrap import RESOLUTION_FACTOR

    out = []
    if key in (metrics.get("unresolved_fars") or []):
        out.append(f"FAR {key} is not resolved on {test_set}: its {metrics.get('n_impostor', '?')} impostor pairs put "
                   f"fewer than {RESOLUTION_FACTOR:g} of them above the threshold, so the threshold rests on a "
                   f"handful of scores (smallest resolved FAR: {_far_text(metrics.get('min_resolved_far'))})")
    if isinstance(roc_far, (int, float)) and roc_far > far * (1 + 1e-9):
        out.append(f"the threshold is that of the ROC point of {test_set} the metrics read at FAR {key}, which lies at "
                   f"FAR {roc_far:.3g}: more false accepts than asked")
    if metrics.get("protocol") == "ijb_1to1":
        out.append(f"the threshold was set on {test_set}'s template-to-template scores (each template pools several "
                   f"images); two single photographs score differently, so the FAR is indicative for them")
    return tuple(out)


def model_uncertainty_of(embeddings_path: str | Path) -> str | None:
    """The embeddings file's ``uncertainty_kind`` when it is one of the model's own estimates
    (``embed --uncertainty``: emb_norm, magface, entropy, scale), else None (a fitted head, whose
    directory the file does not name, or no file)."""
    from facetrust.models.uncertainty.methods import MODEL_UNCERTAINTIES
    from facetrust.npz import load_npz, npz_keys

    path = Path(embeddings_path)
    try:
        if not path.is_file() or "uncertainty_kind" not in npz_keys(path):
            return None
        kind = str(load_npz(path, ["uncertainty_kind"])["uncertainty_kind"])
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable embeddings .npz ({error})") from None
    return kind if kind in MODEL_UNCERTAINTIES else None


def benchmark_uncertainty(embeddings_path: str | Path, kind: str | None) -> tuple[np.ndarray | None, str]:
    """The benchmark images' uncertainties of ``kind`` from an embeddings file, or (None, why not)."""
    from facetrust.npz import load_npz, npz_keys

    path = Path(embeddings_path)
    if kind is None:
        return None, "the model gives no uncertainty"
    if not path.is_file():
        return None, f"{path}: no such embeddings file"
    try:
        keys = npz_keys(path)
        if "uncertainty" not in keys:
            return None, f"{path} holds no uncertainty"
        data = load_npz(path, [k for k in ("uncertainty", "uncertainty_kind") if k in keys])
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable embeddings .npz ({error})") from None
    theirs = str(data["uncertainty_kind"]) if "uncertainty_kind" in data else None
    if theirs != kind:
        return None, f"{path} holds uncertainty {theirs!r}, this model gives {kind!r}"
    values = np.asarray(data["uncertainty"], dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, f"{path}: no finite uncertainty"
    return values, ""


def placement(value: float, benchmark: np.ndarray, test_set: str, face: str) -> dict:
    """Where ``value`` lies among the benchmark's uncertainties (larger = less certain)."""
    less_certain_share = float(np.mean(benchmark >= value))  # images at least this uncertain
    more_certain_share = float(np.mean(benchmark <= value))
    if less_certain_share == 0 or more_certain_share == 0:  # beyond every benchmark image: no "0.0 %"
        side = "less" if less_certain_share == 0 else "more"
        text = f"{face} is {side} certain than all {benchmark.size} {test_set} images"
        short = f"{face}: {side} certain than all {benchmark.size} of {test_set}"
    else:
        share = (f"least certain {_percent(less_certain_share)}" if less_certain_share <= 0.5
                 else f"most certain {_percent(more_certain_share)}")
        text, short = f"{face} is in the {share} of {test_set} images", f"{face}: {share} of {test_set}"
    return {"share_at_least_as_uncertain": less_certain_share, "share_at_most_as_uncertain": more_certain_share,
            "text": text, "short": short}


def _percent(share: float) -> str:
    percent = 100.0 * share
    return f"{percent:.1f} %" if percent < 10 else f"{percent:.0f} %"
