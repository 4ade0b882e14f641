"""Atomic output helpers: write to a temporary name in the same directory, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


#: The variable naming the directory of facetrust's caches (``off``, ``0``, ``none`` or empty: none).
CACHE_ENV = "FACETRUST_CACHE_DIR"


def cache_dir(kind: str) -> Path | None:
    """Where the cache ``kind`` (``"ijb"``, ``"schema"``) lives: ``$FACETRUST_CACHE_DIR/<kind>`` when that
    variable is set, else ``$XDG_CACHE_HOME/facetrust/<kind>`` (default ``~/.cache/facetrust/<kind>``); None
    when the caches are off or there is no home directory (a container's user without one)."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "0", "none") else Path(configured) / kind
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:
        return None
    return Path(base) / "facetrust" / kind


def source_digest(package: Path | None = None) -> str:
    """SHA-256 (hex) over the Python version and the relative path and bytes of every file of the
    facetrust package (``package``: its directory; default the installed one), bytecode caches left
    out: what names the cache entries that depend on the code (the params schema, backbone outputs),
    so an edited, added or removed file, or another checkout, never reads a stale one."""
    import hashlib
    import sys

    package = package or Path(__file__).resolve().parent
    digest = hashlib.sha256(f"facetrust-source\0{sys.version_info[:2]}".encode())
    for path in sorted(package.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        data = path.read_bytes()
        digest.update(f"\0{path.relative_to(package).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched.
    ``suffix`` keeps an extension that writers key on (``np.savez`` appends ``.npz``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():  # named before any work is lost to a temporary's error
        from facetrust.errors import InputError

        raise InputError(f"{path}: is a directory; the output is a file: give a file name")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the result the permissions a plain open() would (0666 & ~umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def read_json(path: str | os.PathLike, what: str = "JSON file"):
    """Parse a JSON file; InputError names the file when it is missing (``<path>: <what> missing``)
    or malformed (``<path>: not valid JSON: …``)."""
    from facetrust.errors import InputError

    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} missing") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a {what}") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read {what}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not a {what}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON: {error}") from None
    except _DuplicateKey as error:
        raise InputError(f"{path}: not a valid {what}: key {error.args[0]!r} appears twice in one object") from None
    except RecursionError:
        raise InputError(f"{path}: not a valid {what}: nested too deeply") from None
    except ValueError as error:  # an integer of more digits than Python converts (int_max_str_digits)
        raise InputError(f"{path}: not a valid {what}: {error}") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list) -> dict:
    """A JSON object, refusing a key given twice (the standard keeps the last silently)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _signature(path: Path):
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


@contextlib.contextmanager
def outputs_together(*paths: str | os.PathLike | None) -> Iterator[None]:
    """A stage's output files appear together or not at all.

    Each file is still written atomically (:func:`atomic_path`); when the block raises, every one
    of ``paths`` that the block created or replaced is removed, so no set of outputs is left half
    made (a metrics file without its ROC file, a head without its log); a directory among ``paths``
    that the block created is removed when it is left empty.  ``None`` entries are skipped
    (optional outputs)."""
    targets = [Path(p) for p in paths if p is not None]
    before = {path: _signature(path) for path in targets}
    try:
        yield
    except BaseException:
        for path in targets:
            if path.is_file() and _signature(path) != before[path]:
                with contextlib.suppress(OSError):
                    path.unlink()
            elif path.is_dir() and before[path] is None:  # a directory the block made, left empty
                with contextlib.suppress(OSError):
                    path.rmdir()
        raise


@contextlib.contextmanager
def staged_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging directory beside ``out_dir``; on success it replaces ``out_dir`` in
    one rename (the old tree, if any, is removed afterwards), on an error it is deleted and
    ``out_dir`` is left as it was.  For stages whose output is a whole directory tree."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# The fixed timestamp of every member of the .npz files we write: numpy's savez stamps members
# with the current time, so two identical runs would differ in bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_npz(path: str | os.PathLike, arrays: dict) -> None:
    """``np.savez`` (uncompressed, same members and layout) written atomically, byte-identical for
    equal arrays: members carry a fixed timestamp and are written in the order given."""
    import zipfile

    import numpy as np

    with atomic_path(path, suffix=".npz") as tmp:
        with zipfile.ZipFile(tmp, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, value in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
                info.external_attr = 0o600 << 16
                with archive.open(info, mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
