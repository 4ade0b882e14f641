"""The embeddings file (docs/FORMATS.md, contract), read and checked: :func:`load_embeddings` gives an
:class:`EmbeddingsFile` with the flip fusion chosen (F1 ``embedding``: original + flipped summed, or
F0 ``embedding_noflip``), every optional array checked against the images, and the features either
in memory or streamed from disk; :func:`pfe_sigma_sq` says which PFE σ² a file provides.

Keys: ``image`` (str, N), ``embedding`` (float32 N×D, not normalised), optional ``embedding_noflip``
(float32 N×D; needed for F0), optional ``uncertainty`` (float32 N, > 0, larger = less certain) with
``uncertainty_kind`` (str) and ``uncertainty_space`` (str: the space its method declares), optional
``uncertainty_per_dim`` (float32 N×D, PFE σ²), optional ``detector_score`` (float32 N), and for pair
sets ``issame`` (bool, n_pairs; images ordered (0, 1), (2, 3), …).  What ``uncertainty`` holds per
method, so that ``1 / uncertainty`` is the method's confidence:

=============  ===================================  ============================
method         ``uncertainty``                      confidence ``1/uncertainty``
=============  ===================================  ============================
PFE            σ² averaged over dimensions          precision (harmonic-mean σ⁻²)
SCF            1 / κ                                κ (vMF concentration)
ScaleFace      1 / s                                s (predicted scale)
MagFace        1 / ‖f‖                              feature norm
=============  ===================================  ============================
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facetrust.errors import InputError
from facetrust.npz import StoredRows, load_npz, npz_keys, stored_rows


@dataclass
class EmbeddingsFile:
    """The arrays of one embeddings ``.npz`` that evaluation reads, F0/F1 already chosen.

    ``features`` is ``embedding`` (F1) or ``embedding_noflip`` (F0), an array or, when loaded
    with ``stream=True``, a :class:`~facetrust.npz.StoredRows` (``np.asarray`` reads it whole).
    Optional arrays are None.
    """

    path: Path
    images: np.ndarray
    features: np.ndarray | StoredRows
    flip: bool
    uncertainty: np.ndarray | None
    uncertainty_kind: str | None
    uncertainty_per_dim: np.ndarray | None
    detector_score: np.ndarray | None
    issame: np.ndarray | None
    uncertainty_space: str | None = None  # the space the method declares ("uncertainty" / "confidence")


def _optional(data: dict, key: str, path: Path, rows: int, ndim: int) -> np.ndarray | None:
    if key not in data:
        return None
    value = np.asarray(data[key])
    if value.ndim != ndim or value.shape[0] != rows:
        raise InputError(f"{path}: key {key!r} has shape {value.shape}, expected {ndim}-D with {rows} rows")
    return value


def first_non_finite_row(features: np.ndarray) -> int | None:
    """Index of the first row of ``features`` (N, D) holding NaN or inf, or None.

    One BLAS pass of row sums finds the suspects (NaN and inf propagate into a sum; huge finite
    values may overflow it, so suspects are confirmed element-wise) without an N×D temporary.
    """
    if features.dtype not in (np.float32, np.float64) or features.size == 0:
        finite = np.isfinite(features).reshape(features.shape[0], -1).all(axis=1)
        return None if finite.all() else int(np.flatnonzero(~finite)[0])
    sums = features @ np.ones(features.shape[1], dtype=features.dtype)
    for row in np.flatnonzero(~np.isfinite(sums)):
        if not np.isfinite(features[row]).all():
            return int(row)
    return None


def _check_feature_matrix(path: Path, key: str, features, n_images: int) -> None:
    """A floating (N, D) matrix with D >= 1 and one row per image; InputError naming the key otherwise."""
    dtype = getattr(features, "dtype", None)
    if dtype is None or np.dtype(dtype).kind != "f":
        raise InputError(f"{path}: key {key!r} has dtype {dtype}, expected floating-point features")
    if len(features.shape) != 2 or features.shape[0] != n_images or features.shape[1] < 1:
        raise InputError(f"{path}: key {key!r} has shape {tuple(features.shape)}, expected ({n_images}, D) with D >= 1")


def load_embeddings(path: str | Path, *, flip: bool = True, stream: bool = False) -> EmbeddingsFile:
    """Read an embeddings ``.npz`` without pickles; ``flip=False`` selects ``embedding_noflip`` (F0).

    ``stream=True`` leaves an uncompressed feature matrix on disk (:class:`~facetrust.npz.StoredRows`,
    read a block at a time by :func:`weighted_group_sum`); its rows are checked as they are read.
    Raises :class:`InputError` naming the file and key for a missing or mis-shaped array, or the
    row of a non-finite feature.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: embeddings file not found")
    key = "embedding" if flip else "embedding_noflip"
    optional = ("uncertainty", "uncertainty_kind", "uncertainty_space", "uncertainty_per_dim", "detector_score", "issame")
    try:
        files = npz_keys(path)
        for required in ("image", key):
            if required not in files:
                hint = " (F0 evaluation needs the unflipped features)" if required == "embedding_noflip" else ""
                raise InputError(f"{path}: missing key {required!r}{hint}")
        data = load_npz(path, ["image"] + [name for name in optional if name in files])
        images = np.asarray(data["image"]).astype(str)

        def refuse_non_finite(start: int, block: np.ndarray) -> None:
            bad = first_non_finite_row(block)
            if bad is not None:
                raise InputError(f"{path}: key {key!r} row {start + bad} ({str(images[start + bad])!r}) is not finite")

        features = stored_rows(path, key, refuse_non_finite) if stream else None
        if features is None:
            features = np.asarray(load_npz(path, [key])[key])
            _check_feature_matrix(path, key, features, images.shape[0])
            refuse_non_finite(0, features)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable .npz without pickles ({error})") from None
    _check_feature_matrix(path, key, features, images.shape[0])
    n = images.shape[0]
    kind = str(data["uncertainty_kind"]) if "uncertainty_kind" in data else None
    space = str(data["uncertainty_space"]) if "uncertainty_space" in data else None
    if space not in (None, "uncertainty", "confidence"):
        raise InputError(f"{path}: key 'uncertainty_space' is {space[:40]!r}, not 'uncertainty' or 'confidence'")
    issame = _pair_labels(data["issame"], path) if "issame" in data else None
    return EmbeddingsFile(
        path=path,
        images=images,
        features=features,
        flip=flip,
        uncertainty=_optional(data, "uncertainty", path, n, 1),
        uncertainty_kind=kind,
        uncertainty_per_dim=_optional(data, "uncertainty_per_dim", path, n, 2),
        detector_score=_optional(data, "detector_score", path, n, 1),
        issame=issame,
        uncertainty_space=space,
    )


def _pair_labels(values, path: Path) -> np.ndarray:
    """``issame`` as booleans: stored as bool, or as integers / floats that are 0 or 1 (a 3 or a NaN
    is not a label, and ``astype(bool)`` would read it as "same")."""
    labels = np.asarray(values)
    if labels.ndim != 1:
        raise InputError(f"{path}: key 'issame' has shape {labels.shape}, not one label per pair")
    if labels.dtype != bool:
        if labels.dtype.kind not in "iuf":
            raise InputError(f"{path}: key 'issame' is {labels.dtype}, not booleans or 0/1")
        bad = np.flatnonzero((labels != 0) & (labels != 1))
        if bad.size:
            raise InputError(f"{path}: key 'issame' entry {int(bad[0])} is {labels[bad[0]]!s}, not 0 or 1 "
                             f"(true/false: same person or not)")
    return labels.astype(bool)


PFE_SIGMA_KINDS = ("per_dimension", "isotropic")


def pfe_sigma_sq(embeddings: EmbeddingsFile, kind: str = "per_dimension") -> tuple[np.ndarray | None, str]:
    """PFE's σ² for fusion and MLS, and what it is (recorded in every metrics file).

    ``"per_dimension"`` (PFE's method: its head predicts one σ² per dimension and ``aggregate_PFE``
    / MLS use them all): ``uncertainty_per_dim`` (N, D), falling back to the scalar ``uncertainty``
    (said so) when the file holds none.  ``"isotropic"`` (an ablation): the scalar ``uncertainty``
    (the harmonic mean of σ² over dimensions) for every dimension.
    """
    if kind not in PFE_SIGMA_KINDS:
        from facetrust.errors import ConfigError

        raise ConfigError(f"pfe_sigma_sq: {kind!r} is not one of {list(PFE_SIGMA_KINDS)}")
    if kind == "per_dimension" and embeddings.uncertainty_per_dim is not None:
        return embeddings.uncertainty_per_dim, "per_dimension (uncertainty_per_dim, N x D)"
    if kind == "per_dimension":
        return embeddings.uncertainty, "isotropic (the file holds no uncertainty_per_dim)"
    return embeddings.uncertainty, "isotropic ablation (harmonic mean of sigma^2 over dimensions)"
