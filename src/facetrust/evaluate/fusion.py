"""How image-level features and uncertainties are combined before scoring: group sums and matrices
(InsightFace media averaging, see ``evaluate.poolings``), PFE precision weighting, SCF κ weighting,
L2 normalisation, and the confidence read back from an uncertainty (the embeddings file stores
``uncertainty`` with *larger = less certain*; methods whose natural quantity is a confidence read it
as ``1 / uncertainty``). The embeddings file itself is read by :mod:`facetrust.evaluate.embeddings_file`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from facetrust.errors import InputError
from facetrust.npz import StoredRows


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


def csr_times_dense():
    """scipy's compiled CSR × dense product, ``csr_matvecs(n_row, n_col, n_vecs, indptr, indices, data, x, y)``
    (``y += A @ x``, C order), the kernel ``scipy.sparse.csr_matrix.__matmul__`` runs for a dense
    matrix: each output row adds its entries' ``data[k] * x[indices[k]]`` one by one in stored order.

    Loaded from its extension module file without importing the ``scipy.sparse`` package, whose import
    (0.1 s) brings scipy's array-API layer and with it ``numpy.f2py``, ``numpy.testing`` and ``numpy.ma``:
    a tenth of an IJB-C-scale evaluation that needs only this function.  Where that is not possible
    (another layout of scipy) the package is imported; the kernel is the same either way."""
    module = sys.modules.get("scipy.sparse._sparsetools")
    if module is None:
        try:
            import importlib.util
            from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader

            import scipy

            folder = Path(scipy.__file__).parent / "sparse"
            found = [folder / f"_sparsetools{suffix}" for suffix in EXTENSION_SUFFIXES
                     if (folder / f"_sparsetools{suffix}").is_file()]  # the compiled module only, never a stub
            if not found:
                raise ImportError("scipy.sparse._sparsetools not found")
            name = "scipy.sparse._sparsetools"
            spec = importlib.util.spec_from_loader(name, ExtensionFileLoader(name, str(found[0])), origin=str(found[0]))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if type(module.csr_matvecs).__name__ != "builtin_function_or_method":
                raise ImportError("scipy.sparse._sparsetools is not the compiled kernel")
            sys.modules[name] = module  # the package's own import reuses it
        except Exception:  # noqa: BLE001 - any failure: the package's way
            from scipy.sparse import _sparsetools as module
    return module.csr_matvecs


def weighted_group_sum(group_index: np.ndarray, n_groups: int, weights: np.ndarray, x: np.ndarray,
                       block_rows: int = 2048) -> np.ndarray:
    """Σ_i weights[i]·x[i] over the rows of each group, float64 (n_groups, D).

    The same floats as ``group_matrix(group_index, n_groups, weights) @ x.astype(np.float64)`` (the same
    kernel, :func:`csr_times_dense`): the sparse product is taken a block of whole groups at a time, so
    only ``block_rows`` rows are converted to float64 at once and each block is one pass over contiguous full-width rows (the
    product adds a group's terms one by one in row order, whichever block it runs in).  Rows of a
    group must be contiguous (IJB lists a template's images together, in any template order); if
    they are not, rows are first put in group order (stable, keeping each group's row order).
    ``block_rows`` 2048: a block's float32 rows and their float64 copy (4 + 8 MB at 512 dims) stay in
    the cache between the read, the conversion and the product (IJB-C's 469,375 × 512 pooled in
    0.40 s, against 0.57 s at 8192 rows and 0.44 s at 512; the same bytes at every size).
    """
    matvecs = csr_times_dense()
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
    index_dtype = np.int32 if n < 2**31 else np.int64
    buffer = np.empty((most_rows, x.shape[1]), dtype=np.float64)  # reused: no new pages per block
    read_buffer = np.empty((most_rows, x.shape[1]), dtype=x.dtype) if isinstance(x, StoredRows) else None
    for g0, g1 in zip(block_first[:-1], block_first[1:]):
        r0, r1 = bounds[g0], bounds[g1]
        rows = slice(r0, r1) if order is None else order[r0:r1]
        block = buffer[: r1 - r0]
        source = x[rows] if read_buffer is None else x.read_into(r0, read_buffer[: r1 - r0])
        np.copyto(block, source)  # float32 -> float64, exactly as astype
        sums = np.zeros((g1 - g0, x.shape[1]), dtype=np.float64)  # the (group × row) CSR matrix times the block
        matvecs(g1 - g0, r1 - r0, x.shape[1], np.ascontiguousarray(bounds[g0 : g1 + 1] - r0, dtype=index_dtype),
                np.arange(r1 - r0, dtype=index_dtype), np.ascontiguousarray(weights[rows]), block.ravel(), sums.ravel())
        out[groups[g0:g1]] = sums
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
