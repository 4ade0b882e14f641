"""Opening untrusted input files: regular files only, inside their data root, read within a bound.

``/dev/zero`` in place of a crop is read without end, a FIFO blocks the reader until someone writes
to it, a socket cannot be opened at all: none is a data file.  :func:`check_regular` looks at the
path with ``os.stat`` before anything opens it, and :func:`read_regular` opens with ``O_NONBLOCK``
(so a FIFO swapped in after the check still cannot block) and checks the opened descriptor again.
:func:`check_inside` refuses a path whose symlinks lead outside the data set it belongs to (a crop
linked to ``~/.ssh/id_rsa`` would otherwise be read, aligned and written into the outputs).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from facetrust.errors import InputError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_regular(path: str | os.PathLike, what: str = "file") -> os.stat_result:
    """``os.stat`` of ``path`` (symlinks followed); InputError naming it unless it is a regular
    file (a device, FIFO, socket or directory is refused without being opened)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: cannot read {what}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: {_kind(info.st_mode)}, not a regular file: refused ({what})")
    return info


def read_regular(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them (InputError beyond,
    before reading).  Never blocks on a FIFO and never reads a device."""
    info = check_regular(path, what)
    if max_bytes is not None and info.st_size > max_bytes:
        raise InputError(f"{path}: {info.st_size} bytes, more than the {max_bytes} allowed ({what})")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode):  # replaced between the stat and the open
            raise InputError(f"{path}: {_kind(opened.st_mode)}, not a regular file: refused ({what})")
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # grew while read
        raise InputError(f"{path}: more than the {max_bytes} bytes allowed ({what})")
    return data


def check_inside(path: str | os.PathLike, root: str | os.PathLike, what: str = "file",
                 allow_outside: bool = False) -> Path:
    """``path`` unless its symlinks resolve outside ``root`` (InputError naming both), or
    ``allow_outside``.  Lexical escapes (``..``, absolute names) are refused by the callers' name
    checks before this."""
    if allow_outside:
        return Path(path)
    target, base = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([target, base]) != base:
        raise InputError(f"{path}: a symlink to {target[:200]}, outside {root}: refused ({what}; "
                         "align --allow-external-links follows it)")
    return Path(path)


# A number token with an exponent of 5 or more digits: pandas' C float parser (2.3) overflows the
# exponent and crashes the process (a segmentation fault, found by benchmarks/fuzz_parsers.py on
# the 14-byte line b" 6e49999999999"); float64 exponents have at most 3 digits.
# Matched anywhere (a digit or point, then the exponent), not only as a whole token: the parser
# reads a number's prefix before it looks at what follows (found: "…91e4009999…" inside a field).
_HUGE_EXPONENT = re.compile(rb"[0-9.][eE][-+]?[0-9]{5,}")


def refuse_huge_exponents(path: str | os.PathLike) -> None:
    """InputError naming the line of a number with a 5-digit exponent, before pandas reads ``path``
    (its C parser would crash the process on it)."""
    data = read_regular(path, "table")
    found = _HUGE_EXPONENT.search(data)
    if found:
        before = data[: found.start()]
        line = len(before.splitlines()) + (not before or before.endswith((b"\n", b"\r")))
        token = data[data.rfind(b" ", 0, found.start()) + 1 : found.end()].split(b",")[-1].strip()
        raise InputError(f"{path}: line {line}: number {token[:40].decode('ascii', 'replace')!r} has an exponent of "
                         f"{len(found.group()) - 2 if found.group()[2:3].isdigit() else len(found.group()) - 3} "
                         "digits: not a float64 (and pandas' parser would crash on it)")
