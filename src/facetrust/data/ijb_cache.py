"""Decoded IJB protocols cached by the content of their meta files.

Parsing IJB-C's 275 MB of meta text takes seconds on every evaluation; the decoded arrays are
mapped from the cache in milliseconds (:func:`facetrust.npz.load_npz` ``mapped=True``: copy-on-write,
each member stored aligned by :func:`facetrust.npz.save_npz_aligned`; an entry is only ever replaced
whole, by a rename, so a running evaluation keeps the one it mapped).  The cache entry is an uncompressed
``.npz`` named by a SHA-256 over the three files' contents (and this module's format version), so
an edited file can never be served stale; a missing, unreadable or damaged entry is rebuilt from
the text.  Each file's hash is remembered under its inode and change times (``digests/``,
:func:`file_digest`), so a warm run reads none of the text.  Small protocols (below
:data:`MIN_BYTES`) parse in a few hundredths of a second and are never cached; the embedded
default's 5 MB synthetic IJB-C parses in 0.2-0.4 s and maps from the cache in 2 ms, in each of its
~40 evaluation jobs.

Where: ``$FACETRUST_CACHE_DIR/ijb/`` when that variable is set (``off`` disables the cache), else
``$XDG_CACHE_HOME/facetrust/ijb/`` (default ``~/.cache/facetrust/ijb/``).  Not beside the meta
files: IJB directories are often read-only or versioned (DVC), and a new file there would change
their hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

from facetrust.io import atomic_path, cache_dir
from facetrust.npz import load_npz, save_npz_aligned

MIN_BYTES = 1 << 20  # below this the three files parse in a few hundredths of a second
FORMAT_VERSION = 2  # 2: members aligned for mapping
_ARRAYS = {  # field -> (dtype kind, ndim, length group)
    "images": ("U", 1, "image"),
    "template_ids": ("i", 1, "image"),
    "media_ids": ("i", 1, "image"),
    "landmarks": ("f", 3, "image"),
    "detector_scores": ("f", 1, "image"),
    "pairs": ("i", 2, "pair"),
    "labels": ("i", 1, "pair"),
}
log = logging.getLogger(__name__)


def cache_root() -> Path | None:
    """The cache directory for decoded protocols, or None when disabled (``FACETRUST_CACHE_DIR=off``)."""
    return cache_dir("ijb")


def protocol_key(paths: Sequence[Path], name: str, memo: Path | None = None) -> str:
    """SHA-256 (hex) over the format version, the protocol name and each file's content hash.

    ``memo``: a directory where each file's content hash is remembered under its identity and
    change times (:func:`file_digest`), so an unchanged 275 MB of IJB-C text is not read again."""
    digest = hashlib.sha256(f"facetrust-ijb-cache-v{FORMAT_VERSION}\0{name}".encode())
    for path in paths:
        digest.update(file_digest(path, memo))
    return digest.hexdigest()


RACY_S = 2.0  # a file changed this recently may change again within its timestamps' resolution


def file_digest(path: Path, memo: Path | None = None) -> bytes:
    """SHA-256 of ``path``'s content; with ``memo``, remembered under the file's device, inode,
    size, modification and change times (nanoseconds), as DVC and git remember hashes.  Writing the
    file changes its change time (which no user can set back), so a remembered hash is never
    stale; a file changed within :data:`RACY_S` of hashing is not remembered (git's racy-clean
    rule: a second write in the same timestamp tick would keep the times).  A memo that cannot be
    read or written is ignored."""
    stat = os.stat(path)
    identity = "\0".join(map(str, (os.path.realpath(path), stat.st_dev, stat.st_ino, stat.st_size,
                                   stat.st_mtime_ns, stat.st_ctime_ns)))
    entry = None if memo is None else memo / hashlib.sha256(identity.encode()).hexdigest()[:40]
    if entry is not None:
        try:
            remembered = bytes.fromhex(entry.read_text())
            if len(remembered) == 32:
                return remembered
        except (OSError, ValueError):
            pass
    with open(path, "rb") as handle:
        value = hashlib.file_digest(handle, "sha256").digest()
    if entry is not None and time.time() - max(stat.st_mtime_ns, stat.st_ctime_ns) / 1e9 > RACY_S:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(entry) as tmp:
                Path(tmp).write_text(value.hex())
        except OSError as error:
            log.warning("%s: could not remember the hash of %s (%s)", entry, path, error)
    return value


def _load(entry: Path, name: str, make: Callable[..., Any]):
    arrays = load_npz(entry, list(_ARRAYS), mapped=True)
    lengths = {"image": arrays["images"].shape[0], "pair": arrays["pairs"].shape[0]}
    for field, (kind, ndim, group) in _ARRAYS.items():
        array = arrays[field]
        if array.dtype.kind != kind or array.ndim != ndim or array.shape[0] != lengths[group]:
            raise ValueError(f"field {field!r} has dtype {array.dtype} and shape {array.shape}")
    return make(name=name, cache_key=entry.stem, **arrays)


def _store(entry: Path, protocol) -> None:
    with atomic_path(entry, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        save_npz_aligned(handle, {field: getattr(protocol, field) for field in _ARRAYS})


def cached_protocol(paths: Sequence[Path], name: str, parse: Callable[[], Any], make: Callable[..., Any],
                    checks: str = ""):
    """``parse()``'s protocol, served from the cache when the files' hashes have an entry there
    (rebuilt by ``make(name=..., **arrays)``, the protocol class: this module does not import
    :mod:`facetrust.data.ijb`, which calls it).

    ``checks`` names what ``parse`` checked beyond the default (part of the key: a protocol parsed
    without landmark checks is never served to a stage that needs them).  The protocol comes back with
    ``cache_key`` set to its entry's name (``<name>-<40 hex>``) once the entry exists.
    A parse error propagates unchanged (nothing is cached); a cache that cannot be written is
    logged and skipped.
    """
    root = cache_root()
    if root is None or sum(path.stat().st_size for path in paths) < MIN_BYTES:
        return parse()
    entry = root / f"{name}-{protocol_key(paths, name + checks, memo=root / 'digests')[:40]}.npz"
    if entry.is_file():
        try:
            return _load(entry, name, make)
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as error:
            log.warning("%s: damaged protocol cache entry (%s); parsing the text again", entry, error)
    protocol = parse()
    try:
        _store(entry, protocol)
    except OSError as error:
        log.warning("%s: could not write the protocol cache (%s)", entry, error)
        return protocol
    return dataclasses.replace(protocol, cache_key=entry.stem)
