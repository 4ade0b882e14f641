"""A frozen backbone's outputs on one image set, cached by content: the embed jobs of one model share
one backbone pass.

An uncertainty variant (a fitted PFE / SCF head, a model's own estimate) embeds a test set with the
same backbone as the plain model: the same embeddings, with a head's estimate beside them.  The
embedded default embeds the synthetic IJB-C with the ArcFace backbone six times (ArcFace, its
entropy, PFE, SCF and SCF-G variants, and ScaleFace's frozen copy) and with the CosFace one four
times.  The first of them stores what the backbone gave (the original images' embeddings, the
flip-fused ones and the feature maps, batch by batch as computed); the others read it and only run
their head, on the same tensors, batch for batch, so their files are byte-identical to a run that
computes everything (``tests/test_backbone_cache.py``).

The entry's name is a SHA-256 over everything the arrays depend on: the backbone's state (every
tensor's name, dtype, shape and bytes), the image set's files (their content hashes, remembered
as :func:`facetrust.data.ijb_cache.file_digest` does), the input size, batch size and flip, the
package's source (:func:`facetrust.io.source_digest`: the decoding and preprocessing code), torch's
version and the floating-point path in force (:func:`facetrust.float_path.effective`: the pins and
thread counts).  Any change is another entry; nothing is served stale.  Sets whose arrays would
exceed :data:`MAX_ENTRY_BYTES` are never cached (a real IJB-C's feature maps are tens of GB); the
directory is pruned to :data:`MAX_TOTAL_BYTES`, oldest first.  Entries are written whole by a
rename, so concurrent jobs at worst compute the same entry twice.

Where: ``$FACETRUST_CACHE_DIR/backbone/`` (``off`` disables every facetrust cache), else
``~/.cache/facetrust/backbone/`` (``$XDG_CACHE_HOME``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from facetrust.io import atomic_path, cache_dir, source_digest
from facetrust.npz import load_npz, save_npz_aligned

FORMAT_VERSION = 1
MAX_ENTRY_BYTES = 512 << 20  # arrays of one entry; larger sets are computed every time
MAX_TOTAL_BYTES = 2 << 30  # the directory, pruned oldest first after each write (one `all`: ~360 MB)
log = logging.getLogger(__name__)


def cache_root() -> Path | None:
    """The cache directory, or None when disabled (``FACETRUST_CACHE_DIR=off``)."""
    return cache_dir("backbone")


def entry_key(backbone, files: Iterable[Path], settings: dict) -> str:
    """SHA-256 (hex) naming the outputs of ``backbone`` (a torch module: its state, class, feature-map
    shape and channels-last weights) on the image set held in ``files`` under ``settings`` (input
    size, batch size, flip: JSON-serialisable); module docstring."""
    import torch

    from facetrust import float_path
    from facetrust.data import ijb_cache

    digest = hashlib.sha256(f"facetrust-backbone-outputs-v{FORMAT_VERSION}\0{sys.version_info[:2]}".encode())
    digest.update(source_digest().encode())
    # what the weights alone do not say: the class, the map's geometry (strides) and the memory layout
    layout = [name for name, p in backbone.named_parameters()
              if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()]
    network = {"class": f"{type(backbone).__module__}.{type(backbone).__qualname__}",
               "feature_map_shape": getattr(backbone, "feature_map_shape", None), "channels_last": layout}
    digest.update(json.dumps({"torch": torch.__version__, "float_path": float_path.effective(), "network": network,
                              **settings}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        array = tensor.detach().cpu().contiguous()
        digest.update(f"\0{name}\0{array.dtype}\0{tuple(array.shape)}\0".encode())
        digest.update(array.view(-1).view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    ijb_root = ijb_cache.cache_root()  # the content hashes the IJB cache remembers by file identity
    memo = None if ijb_root is None else ijb_root / "digests"
    for role, path in enumerate(files):  # by content and role, not by name: a copy is the same set
        digest.update(f"\0file {role}\0".encode())
        digest.update(ijb_cache.file_digest(Path(path), memo))
    return digest.hexdigest()


def load(key: str) -> dict[str, np.ndarray] | None:
    """The arrays of entry ``key`` (memory-mapped), or None (no cache, no entry, or a damaged one)."""
    root = cache_root()
    if root is None:
        return None
    path = root / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        arrays = load_npz(path, mapped=True)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as error:
        log.warning("%s: damaged backbone-output cache entry (%s); computing again", path, error)
        return None
    try:
        path.touch()  # pruning keeps the recently used
    except OSError:  # a read-only cache still serves its entries
        pass
    return arrays


def store(key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write entry ``key`` whole (a rename) and prune the directory; a cache that cannot be written is
    logged and skipped."""
    root = cache_root()
    if root is None:
        return
    path = root / f"{key}.npz"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            save_npz_aligned(handle, arrays)
        _prune(root)
    except OSError as error:
        log.warning("%s: could not write the backbone-output cache (%s)", path, error)


def _prune(root: Path) -> None:
    entries = []
    for path in root.glob("*.npz"):
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):  # oldest first
        if total <= MAX_TOTAL_BYTES:
            break
        path.unlink(missing_ok=True)
        total -= size
