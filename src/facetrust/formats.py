"""The project's result files as code: metrics files, table columns and embeddings files.

One place builds and reads them, so a key is spelled once (``docs/FORMATS.md`` describes them).

**Metrics file** (``results/metrics/<variant>/<test_set>.json``, also the reject-curve JSON):
``test_set``, ``protocol``, ``tar_at_far`` (FAR written as ``"1e-06"`` … → TAR), ``auc``,
``n_pairs``, ``n_genuine``, ``n_impostor`` and, per protocol, ``n_templates``/``n_images`` (IJB) or
10-fold ``accuracy``/``accuracy_std`` (pair sets), the ``settings`` used and the ``embeddings`` file.
Files written before the key was named ``test_set`` say ``testset``; :func:`read_metrics` reads both.

**Table columns**: ``TAR@FAR=<far key>`` (:func:`tar_column`).

**Embeddings file** (``embeddings/<variant>/<test_set>.npz``): the keys below; see
:func:`facetrust.evaluate.embeddings_file.load_embeddings` for the reader that checks them.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from facetrust.errors import InputError

# ------------------------------------------------------------------------------ metrics files
TEST_SET = "test_set"
LEGACY_TEST_SET = "testset"
PROTOCOL = "protocol"
TAR_AT_FAR = "tar_at_far"
AUC = "auc"
ACCURACY = "accuracy"
ACCURACY_STD = "accuracy_std"
N_PAIRS = "n_pairs"
N_GENUINE = "n_genuine"
N_IMPOSTOR = "n_impostor"
SETTINGS = "settings"
EMBEDDINGS = "embeddings"

# ------------------------------------------------------------------------------ table columns
TAR_PREFIX = "TAR@FAR="
# How TAR is read off a ROC (facetrust.evaluate.roc): nearest FPR (InsightFace), interpolated, strict.
TAR_METHODS = ("nearest", "interpolate", "strict")

# ---------------------------------------------------------------------------- embeddings files
IMAGE = "image"
EMBEDDING = "embedding"
EMBEDDING_NOFLIP = "embedding_noflip"
FLIP = "flip"
DETECTOR_SCORE = "detector_score"
ISSAME = "issame"
UNCERTAINTY = "uncertainty"
UNCERTAINTY_KIND = "uncertainty_kind"
UNCERTAINTY_PER_DIM = "uncertainty_per_dim"

# ---------------------------------------------------------------------------- pair scores files
# ``results/explain/scores/<model>/<pair set>.npz``: scores that are not a function of two
# embeddings (xCos), one float64 (P,) array per name in ``score_names``, with ``issame`` (P,) in
# the pair order of the set; ``evaluate pairs --scores`` reads them (docs/FORMATS.md).
SCORE_NAMES = "score_names"
# A pair-scores metrics file adds, per reference score of the same file, the paired 10-fold
# accuracy difference (this score minus the reference): fold differences, mean, std, interval.
PAIRED_DIFFERENCES = "paired_differences"


def far_key(far: float) -> str:
    """Format a FAR as a metrics key: ``1e-06``, ``5e-04``, ``2.5e-04`` (shortest exact mantissa)."""
    far = float(far)
    for digits in range(0, 8):
        key = f"{far:.{digits}e}"
        if float(key) == far:
            return key
    return repr(far)


def plain_float(value) -> float | None:
    """A JSON-safe float: numpy scalars become Python floats, NaN and inf become ``None``."""
    value = float(value)
    return value if math.isfinite(value) else None


def tar_column(far: float | str) -> str:
    """The table column of a FAR: ``TAR@FAR=1e-04`` (a metrics key is used as it is)."""
    return TAR_PREFIX + (far if isinstance(far, str) else far_key(far))


def is_tar_column(name: str) -> bool:
    return str(name).startswith(TAR_PREFIX)


def far_of_column(name: str) -> str:
    """The FAR key of a ``TAR@FAR=…`` column (``"1e-04"``)."""
    if not is_tar_column(name):
        raise InputError(f"column {name!r} is not a {TAR_PREFIX}… column")
    return str(name)[len(TAR_PREFIX):]


def tar_columns(columns: Iterable[str]) -> list[str]:
    """The ``TAR@FAR=…`` columns among ``columns``, FAR ascending."""
    return sorted((c for c in columns if is_tar_column(c)), key=lambda c: float(far_of_column(c)))


def metrics_record(test_set: str, protocol: str, *, n_pairs: int, n_genuine: int, settings: Mapping[str, Any],
                   embeddings: str | os.PathLike, **values: Any) -> dict[str, Any]:
    """A metrics-file dict: the identifying keys, the pair counts, then the protocol's ``values``
    (``tar_at_far``, ``auc``, ``accuracy``, …), the settings and the embeddings file it came from."""
    return {
        TEST_SET: str(test_set),
        PROTOCOL: protocol,
        **values,
        N_PAIRS: int(n_pairs),
        N_GENUINE: int(n_genuine),
        N_IMPOSTOR: int(n_pairs) - int(n_genuine),
        SETTINGS: dict(settings),
        EMBEDDINGS: str(embeddings),
    }


@contextlib.contextmanager
def naming_file(path: str | os.PathLike | None):
    """An :class:`InputError` raised inside the block (by a computation on values read from
    ``path``, whose message names no file: ``pair uncertainty: uncertainties must be finite``)
    comes out prefixed with ``path``; one whose message already names ``path`` is left as it is."""
    try:
        yield
    except InputError as error:
        text = str(error)
        if path is None or str(path) in text:
            raise
        raise type(error)(f"{path}: {text}") from None


def test_set_of(metrics: Mapping[str, Any], default: str = "") -> str:
    """The test set a metrics dict names (``test_set``, or the older ``testset``)."""
    return str(metrics.get(TEST_SET, metrics.get(LEGACY_TEST_SET, default)))


def read_metrics(path: str | os.PathLike, what: str = "metrics file") -> dict[str, Any]:
    """A metrics (or reject-curve) JSON file as a dict, ``test_set`` filled in from ``testset`` for
    older files; InputError naming the file when it is missing, malformed or not a JSON object."""
    from facetrust.io import read_json

    path = Path(path)
    metrics = read_json(path, what)
    if not isinstance(metrics, dict):
        raise InputError(f"{path}: {what} must be a JSON object, got {type(metrics).__name__}")
    if TEST_SET not in metrics and LEGACY_TEST_SET in metrics:
        metrics[TEST_SET] = metrics.pop(LEGACY_TEST_SET)
    tars = metrics.get(TAR_AT_FAR)
    if tars is not None and not isinstance(tars, dict):
        raise InputError(f"{path}: key {TAR_AT_FAR!r} must map FAR keys to TAR values")
    settings = metrics.get(SETTINGS)
    if settings is not None and not isinstance(settings, dict):
        raise InputError(f"{path}: key {SETTINGS!r} must be a JSON object, got {_json_type(settings)}")
    for key in (TEST_SET, EMBEDDINGS):
        if metrics.get(key) is not None and not isinstance(metrics[key], str):
            raise InputError(f"{path}: key {key!r} must be a string, got {_json_type(metrics[key])}")
    return metrics


def _json_type(value) -> str:
    """The JSON name of a parsed value's type (``string``, ``number``, ``object`` …)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _quoted(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def metrics_number(value, path: str | os.PathLike, key: str, *, allow_none: bool = False,
                   low: float | None = None, high: float | None = None) -> float | None:
    """``value`` of a metrics file's ``key`` as a finite float (None stays None when ``allow_none``:
    a value the writer could not compute, which older files wrote as NaN: read as None too);
    InputError naming the file and the key for a string, a boolean, NaN (unless ``allow_none``) or
    infinity, or a number outside ``[low, high]``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        expected = "a number or null" if allow_none else "a number"
        raise InputError(f"{path}: key {key} must be {expected}, got {_json_type(value)} {_quoted(value)}")
    number = float(value)
    if math.isnan(number) and allow_none:
        return None
    if not math.isfinite(number):
        raise InputError(f"{path}: key {key} is {value!r}: must be finite")
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = (f"lie in [{low:g}, {high:g}]" if low is not None and high is not None
                  else f"be at least {low:g}" if low is not None else f"be at most {high:g}")
        raise InputError(f"{path}: key {key} is {value!r}: must {bounds}")
    return number


def check_far_keys(mapping: Mapping, path: str | os.PathLike, key: str) -> None:
    """InputError naming the file and ``key`` unless every key of ``mapping`` is a FAR in (0, 1]."""
    for far in mapping:
        try:
            value = float(far)
        except (TypeError, ValueError):
            value = float("nan")
        if not 0.0 < value <= 1.0:
            raise InputError(f"{path}: key {key} has {_quoted(far)}, not a FAR in (0, 1] (keys like '1e-04')")


def check_tar_map(metrics: Mapping, path: str | os.PathLike) -> None:
    """A metrics file's ``tar_at_far``: FAR keys, each TAR a number in [0, 1] or null (unresolved)."""
    tars = metrics.get(TAR_AT_FAR)
    if not isinstance(tars, Mapping):
        raise InputError(f"{path}: no {TAR_AT_FAR!r} map")
    check_far_keys(tars, path, TAR_AT_FAR)
    for far, value in tars.items():
        metrics_number(value, path, f"{TAR_AT_FAR}[{far!r}]", allow_none=True, low=0.0, high=1.0)
