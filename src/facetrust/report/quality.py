"""Uncertainty scored against the synthetic benchmark's known quality (issue 4, "Evaluation").

``data/synth/quality.csv`` holds one row per rendered image:
``set,image,identity,blur_sigma,noise_std,resolution,jpeg_quality,occlusion,quality`` with
``quality`` in [0, 1] (1 = pristine).  ``image`` is ``<set>/<name>``: ``synth_lfw/<index>`` for a
pair set (the embeddings file's ``image`` is the same string) and ``synth_ijbc/<n>.jpg`` for the
IJB set (the embeddings file holds ``<n>.jpg``, the protocol's own name).

A good uncertainty (larger = less certain, docs/FORMATS.md) rises with the degradation, so each
method is scored by the Spearman rank correlation between its uncertainty and

* ``degradation`` = 1 − quality (all degradations at once),
* ``blur`` = blur σ, ``noise`` = noise std, ``occlusion`` = hidden fraction (larger = worse),
* ``resolution`` = −effective resolution and ``jpeg`` = −JPEG quality (inverted: smaller = worse).

ρ > 0 means "uncertainty tracks the degradation".  A degradation that is constant over the
images has no ranking: its ρ is left empty (NaN), not 0.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from facetrust.errors import InputError
from facetrust.io import atomic_path

QUALITY_COLUMNS = ("set", "image", "identity", "blur_sigma", "noise_std", "resolution", "jpeg_quality",
                   "occlusion", "quality")
# Column of quality.csv and sign that turn it into "larger = more degraded".
DEGRADATIONS = {
    "blur": ("blur_sigma", 1.0),
    "noise": ("noise_std", 1.0),
    "resolution": ("resolution", -1.0),
    "jpeg": ("jpeg_quality", -1.0),
    "occlusion": ("occlusion", 1.0),
}
TABLE_COLUMNS = (["method", "uncertainty_kind", "test_set", "n_images", "spearman_degradation", "p_value"]
                 + [f"spearman_{name}" for name in DEGRADATIONS])


def read_quality(path: str | Path) -> pd.DataFrame:
    """quality.csv as a DataFrame indexed by ``image``; InputError names the file and the problem."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"set": str, "image": str})
    except FileNotFoundError:
        raise InputError(f"{path}: quality file missing") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable CSV ({error})") from None
    missing = [column for column in QUALITY_COLUMNS if column not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; expected {list(QUALITY_COLUMNS)}")
    if table["image"].duplicated().any():
        raise InputError(f"{path}: image {str(table['image'][table['image'].duplicated()].iloc[0])!r} listed twice")
    numeric = list(QUALITY_COLUMNS[2:])
    converted = table[numeric].apply(pd.to_numeric, errors="coerce")
    if converted.isna().any().any():
        row, column = np.argwhere(converted.isna().to_numpy())[0]
        raise InputError(f"{path}: row {int(row) + 2} column {numeric[column]!r} is not a number")
    table[numeric] = converted
    return table.set_index("image", drop=False)


def quality_rows(images: Sequence[str], quality: pd.DataFrame, *, set_name: str | None = None,
                 source: str = "embeddings") -> pd.DataFrame:
    """The quality rows of ``images``, in their order.

    An image matches a row named exactly like it (pair sets: ``synth_lfw/0``) or, failing that,
    ``<set>/<image>`` (IJB: ``1.jpg`` → ``synth_ijbc/1.jpg``) for ``set_name`` or, when None, for
    the one set of quality.csv that holds every image.  InputError names the first unmatched image.
    """
    images = pd.Index(np.asarray(images).astype(str))
    candidates = [images]
    sets = [set_name] if set_name else sorted(quality["set"].unique())
    candidates += [pd.Index(f"{name}/" + images.to_series()) for name in sets]
    best, best_found = None, -1
    for names in candidates:
        found = int(names.isin(quality.index).sum())
        if found == len(names):
            return quality.loc[names].reset_index(drop=True)
        if found > best_found:
            best, best_found = names, found
    first_missing = best[~best.isin(quality.index)][0]
    raise InputError(f"{source}: image {str(first_missing)!r} has no row in quality.csv "
                     f"({best_found} of {len(images)} images matched; sets tried: {sets})")


def load_uncertainty(path: str | Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    """``(images, uncertainty float64, uncertainty_kind)`` from an embeddings .npz (no pickles)."""
    from facetrust.npz import npz_keys, read_npz

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: embeddings file not found")
    try:
        present = npz_keys(path)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable .npz without pickles ({error})") from None
    for key in ("image", "uncertainty"):
        if key not in present:
            raise InputError(f"{path}: missing key {key!r} (uncertainty needs a head or the model's own estimate)")
    # only the members read (not the embeddings), their declared sizes checked before anything is allocated
    data = read_npz(path, ["image", "uncertainty"], optional=["uncertainty_kind"], what="embeddings .npz")
    try:
        images = np.asarray(data["image"]).astype(str)
        uncertainty = np.asarray(data["uncertainty"], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{path}: keys 'image' (names) and 'uncertainty' (numbers) expected ({error})") from None
    kind = data.get("uncertainty_kind")
    if kind is not None and kind.size != 1:
        raise InputError(f"{path}: key 'uncertainty_kind' must be one name, got shape {kind.shape}")
    kind = None if kind is None else str(kind.reshape(()))
    if uncertainty.shape != images.shape or images.ndim != 1:
        raise InputError(f"{path}: key 'uncertainty' has shape {uncertainty.shape}, expected {images.shape} "
                         f"(one per image)")
    if not np.isfinite(uncertainty).all():
        bad = int(np.flatnonzero(~np.isfinite(uncertainty))[0])
        raise InputError(f"{path}: key 'uncertainty' row {bad} ({str(images[bad])!r}) is not finite")
    return images, uncertainty, kind


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(ρ, p) of scipy.stats.spearmanr; NaN when either side is constant (no ranking)."""
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def uncertainty_quality_row(method: str, embeddings_path: str | Path, quality: pd.DataFrame, *,
                            set_name: str | None = None) -> dict:
    """One table row: Spearman ρ of the method's uncertainty against each known degradation."""
    images, uncertainty, kind = load_uncertainty(embeddings_path)
    rows = quality_rows(images, quality, set_name=set_name, source=str(embeddings_path))
    rho, p_value = _spearman(uncertainty, 1.0 - rows["quality"].to_numpy(np.float64))
    record = {
        "method": method,
        "uncertainty_kind": kind or "",
        "test_set": str(rows["set"].iloc[0]) if len(rows) else "",
        "n_images": int(images.size),
        "spearman_degradation": rho,
        "p_value": p_value,
    }
    for name, (column, sign) in DEGRADATIONS.items():
        record[f"spearman_{name}"] = _spearman(uncertainty, sign * rows[column].to_numpy(np.float64))[0]
    return record


def uncertainty_quality_table(embeddings: Mapping[str, str | Path], quality_csv: str | Path,
                              out_csv: str | Path | None = None, *, set_name: str | None = None) -> pd.DataFrame:
    """Spearman table, one row per method (``embeddings`` maps method → .npz), written to ``out_csv``.

    Columns: ``method, uncertainty_kind, test_set, n_images, spearman_degradation, p_value,
    spearman_blur, spearman_noise, spearman_resolution, spearman_jpeg, spearman_occlusion``
    (ρ rounded to 6 decimals; empty where undefined).
    """
    if not embeddings:
        raise InputError("quality table: no embeddings files given")
    quality = read_quality(quality_csv)
    records = [uncertainty_quality_row(method, path, quality, set_name=set_name) for method, path in embeddings.items()]
    table = pd.DataFrame.from_records(records, columns=TABLE_COLUMNS)
    rho_columns = [c for c in TABLE_COLUMNS if c.startswith("spearman_")]
    table[rho_columns] = table[rho_columns].round(6)
    if out_csv is not None:
        with atomic_path(out_csv) as tmp:
            table.to_csv(tmp, index=False)
    return table


def read_quality_table(path: str | Path) -> pd.DataFrame:
    """A table written by :func:`uncertainty_quality_table`; InputError when a column is missing."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={c: str for c in ("method", "uncertainty_kind", "test_set")},
                            keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise InputError(f"{path}: quality table missing") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(f"{path}: not a readable CSV ({error})") from None
    missing = [c for c in ("method", "n_images", "spearman_degradation", "p_value") if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing} (expected a `facetrust report quality` table)")
    for column in ("method", "uncertainty_kind", "test_set"):
        if column in table.columns:
            table[column] = table[column].fillna("")
    return table
