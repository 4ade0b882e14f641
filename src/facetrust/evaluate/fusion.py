"""How image-level features and uncertainties are combined before scoring.

Three kinds of fusion live here, because every evaluation protocol needs them:

- **flip fusion** (F0/F1): which array of the embeddings file is the image feature;
- **template pooling weights**: InsightFace media averaging (see ``evaluate.ijb``), PFE precision
  weighting, SCF κ weighting;
- **confidence from uncertainty**: the embeddings file stores ``uncertainty`` with *larger = less
  certain*; methods whose natural quantity is a confidence read it back as ``1 / uncertainty``.

Embeddings file (docs/FORMATS.md, contract): ``image`` (str, N), ``embedding`` (float32 N×D, not
normalised, original + flipped summed = F1), optional ``embedding_noflip`` (float32 N×D, the
original image only; needed for F0), optional ``uncertainty`` (float32 N, > 0, larger = less
certain) with ``uncertainty_kind`` (str), optional ``uncertainty_per_dim`` (float32 N×D, PFE σ²),
optional ``detector_score`` (float32 N), and for pair sets ``issame`` (bool, n_pairs; images
ordered (0, 1), (2, 3), …).  What ``uncertainty`` holds per method, so that ``1 / uncertainty`` is
the method's confidence:

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
    issame = np.asarray(data["issame"]).astype(bool) if "issame" in data else None
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


def confidence_from_uncertainty(uncertainty: np.ndarray, what: str = "uncertainty") -> np.ndarray:
    """``1 / uncertainty`` as float64 (κ for SCF, s for ScaleFace); refuses values ≤ 0 or NaN."""
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    bad = ~(uncertainty > 0) | ~np.isfinite(uncertainty)
    if bad.any():
        raise InputError(f"{what}: entry {int(np.flatnonzero(bad)[0])} is {float(uncertainty.flat[np.flatnonzero(bad)[0]])!r}; "
                         "confidences need positive finite uncertainties")
    return 1.0 / uncertainty


def group_matrix(group_index: np.ndarray, n_groups: int, weights: np.ndarray | None = None):
    """Sparse (n_groups × N) matrix with ``weights[i]`` at (group_index[i], i): ``M @ X`` sums rows by group."""
    import scipy.sparse as sp

    n = group_index.size
    data = np.ones(n, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    return sp.csr_matrix((data, (group_index, np.arange(n))), shape=(n_groups, n))


def weighted_group_sum(group_index: np.ndarray, n_groups: int, weights: np.ndarray, x: np.ndarray,
                       block_rows: int = 8192) -> np.ndarray:
    """Σ_i weights[i]·x[i] over the rows of each group, float64 (n_groups, D).

    The same floats as ``group_matrix(group_index, n_groups, weights) @ x.astype(np.float64)``:
    the sparse product is taken a block of whole groups at a time, so only ``block_rows`` rows are
    converted to float64 at once and each block is one pass over contiguous full-width rows (the
    product adds a group's terms one by one in row order, whichever block it runs in).  Rows of a
    group must be contiguous (IJB lists a template's images together, in any template order); if
    they are not, rows are first put in group order (stable, keeping each group's row order).
    """
    import scipy.sparse as sp

    group_index = np.asarray(group_index)
    weights = np.asarray(weights, dtype=np.float64)
    out = np.zeros((n_groups, x.shape[1]), dtype=np.float64)
    n = group_index.size
    if n == 0:
        return out
    order = None
    starts = np.flatnonzero(np.r_[True, group_index[1:] != group_index[:-1]])
    if starts.size != np.unique(group_index[starts]).size:  # some group's rows are not contiguous
        order = np.argsort(group_index, kind="stable")
        group_index = group_index[order]
        x = np.asarray(x)  # rows are gathered out of order: read a streamed matrix whole
        starts = np.flatnonzero(np.r_[True, group_index[1:] != group_index[:-1]])
    bounds = np.append(starts, n)
    groups = group_index[starts]
    block_first = np.unique(np.searchsorted(starts, np.arange(0, n, block_rows), side="right") - 1)
    block_first = np.append(block_first, starts.size)
    most_rows = int(np.diff(bounds[block_first]).max())
    buffer = np.empty((most_rows, x.shape[1]), dtype=np.float64)  # reused: no new pages per block
    read_buffer = np.empty((most_rows, x.shape[1]), dtype=x.dtype) if isinstance(x, StoredRows) else None
    for g0, g1 in zip(block_first[:-1], block_first[1:]):
        r0, r1 = bounds[g0], bounds[g1]
        rows = slice(r0, r1) if order is None else order[r0:r1]
        members = sp.csr_matrix((weights[rows], np.arange(r1 - r0), bounds[g0 : g1 + 1] - r0),
                                shape=(g1 - g0, r1 - r0))
        block = buffer[: r1 - r0]
        source = x[rows] if read_buffer is None else x.read_into(r0, read_buffer[: r1 - r0])
        np.copyto(block, source)  # float32 -> float64, exactly as astype
        out[groups[g0:g1]] = members @ block
    return out


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` divided by their L2 norm (a zero row stays zero)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.maximum(norms, eps)[:, None]


def row_norms(x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """L2 norm of every row, in float64, without a full-size temporary."""
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].astype(np.float64)
        out[start : start + chunk] = np.sqrt(np.einsum("ij,ij->i", block, block))
    return out


def pfe_fuse(mu: np.ndarray, sigma_sq: np.ndarray, group_index: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """PFE template fusion (Shi & Jain 2019, Eq. 12): σ²_T = 1 / Σ 1/σ²_i, μ_T = σ²_T · Σ μ_i/σ²_i.

    ``mu`` (N, D) image means (PFE normalises them; so do the callers here); ``sigma_sq`` (N,) for a
    scalar variance per image or (N, D) per dimension.  Returns ``(mu_T, sigma_sq_T)`` with
    shapes (n_groups, D) and (n_groups,) or (n_groups, D).
    """
    precision = confidence_from_uncertainty(sigma_sq, "sigma_sq")
    members = group_matrix(group_index, n_groups)
    if precision.ndim == 1:
        precision_sum = members @ precision
        weighted = group_matrix(group_index, n_groups, precision) @ mu.astype(np.float64)
        sigma_sq_t = 1.0 / precision_sum
        return weighted * sigma_sq_t[:, None], sigma_sq_t
    precision_sum = members @ precision
    weighted = members @ (mu.astype(np.float64) * precision)
    sigma_sq_t = 1.0 / precision_sum
    return weighted * sigma_sq_t, sigma_sq_t


def kappa_fuse(mu: np.ndarray, kappa: np.ndarray, group_index: np.ndarray, n_groups: int) -> np.ndarray:
    """SCF κ-weighted template feature: Σ κ_i μ̂_i over the group, μ̂_i = μ_i/‖μ_i‖, then L2-normalised.

    Σ κ_i μ̂_i is the natural parameter of the product of the images' vMF densities, so its
    direction is the template's mean direction and its norm the fused concentration.
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    if not (np.isfinite(kappa).all() and (kappa > 0).all()):
        raise InputError("kappa must be positive and finite")
    unit = l2_normalize(mu.astype(np.float64))
    return l2_normalize(group_matrix(group_index, n_groups, kappa) @ unit)


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
