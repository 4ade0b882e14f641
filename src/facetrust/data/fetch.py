"""``facetrust fetch``: download a data set with checksum and resume, or say how to get it.

* :func:`fetch` takes a catalog name (:mod:`facetrust.data.catalog`) or an http(s) URL. A catalog
  set already laid out under ``out_dir`` is found and returned without touching the network; a
  set with no stable public URL (all of them, today) raises :class:`ManualDownloadRequired`, whose
  message is the step-by-step manual instructions; ``url=`` fetches it from any mirror instead.
* :func:`download` is urllib only: bytes go to ``<name>.part``; an interrupted transfer resumes
  with an HTTP ``Range`` request (206 appends; a server that ignores Range answers 200 and the
  file restarts from zero); the SHA-256 is computed while streaming; transient failures are
  retried with exponential backoff; the ``.part`` is renamed onto ``<name>`` only once the digest
  matches, and removed when it does not.
* :func:`extract_archive` unpacks ``.zip`` / ``.tar`` / ``.tar.gz`` after checking every member:
  absolute names, ``..`` components, links that point outside the directory and device files
  are refused before anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.parse
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from facetrust.data.catalog import DatasetEntry, catalog_table, get_entry
from facetrust import options
from facetrust.errors import InputError, RunError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # read size; also the progress granularity
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
# HTTP statuses worth retrying: request timeout, rate limiting, server-side failures.
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class ManualDownloadRequired(InputError):
    """The data set has no public URL: the message holds the manual instructions (exit 2)."""


class DownloadError(RunError):
    """The transfer kept failing after every retry (exit 1); the ``.part`` file is kept for resume."""


class _TransientError(Exception):
    """One transfer attempt failed in a way a retry can fix."""


# --------------------------------------------------------------------------- fetch


def fetch(
    dataset_or_url: str,
    out_dir: str | os.PathLike,
    *,
    url: str | None = None,
    sha256: str | None = None,
    filename: str | None = None,
    resume: bool = True,
    timeout: float = 60.0,
    retries: int = 4,
    backoff_s: float = 1.0,
    extract: bool = True,
    progress: bool = True,
) -> Path:
    """Fetch a catalog data set or a URL into ``out_dir``; return the path to use.

    For a catalog name the result is the set's directory (``.bin`` sets: the directory holding
    the file), checked against the catalog layout; for a bare URL it is the downloaded file, or
    ``out_dir`` when the file was an archive and got extracted. ``url`` overrides the catalog's
    source (a mirror), ``sha256`` its digest, ``filename`` the saved name.
    Raises ManualDownloadRequired (an InputError) when a catalog set has no URL and is not present.
    """
    out_dir = Path(out_dir)
    entry: DatasetEntry | None = None
    if "://" in dataset_or_url:
        url = dataset_or_url
    else:
        entry = get_entry(dataset_or_url)
        found = entry.locate(out_dir)
        if found is not None:
            log.info("%s: already present at %s (layout checked)", entry.name, found)
            return found
        url = url or (entry.urls[0] if entry.urls else None)
        if url is None:
            raise ManualDownloadRequired(entry.instructions(out_dir))
        sha256 = sha256 or entry.sha256
        filename = filename or _catalog_filename(entry, url)

    dest = out_dir / _safe_filename(filename or _url_basename(url), url)
    download(url, dest, sha256=sha256, resume=resume, timeout=timeout, retries=retries,
             backoff_s=backoff_s, progress=progress)
    if extract and archive_kind(dest) is not None:
        extract_archive(dest, out_dir)
        result = out_dir
    else:
        result = dest
    if entry is None:
        return result
    found = entry.locate(out_dir)
    if found is None:
        raise InputError(
            f"{dest}: downloaded, but the expected {entry.title} layout is not there; missing: "
            + ", ".join(entry.missing(out_dir))
        )
    return found


def _catalog_filename(entry: DatasetEntry, url: str) -> str:
    """The URL's own file name when it says what the file is (an archive, or the set's file),
    else the catalog's archive name: mirrors often serve ``.../download?id=…``."""
    try:
        name = _url_basename(url)
    except InputError:
        name = ""
    if name and (archive_kind(name) is not None or name in entry.files):
        return name
    return entry.archive or entry.files[0]


def _url_basename(url: str) -> str:
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not name:
        raise InputError(f"{url}: the URL names no file; pass --filename NAME")
    return name


def _safe_filename(name: str, url: str) -> str:
    """A plain file name: the download must land inside the out directory."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise InputError(f"{url}: refusing to save as {name!r}; pass --filename with a plain file name")
    return name


# --------------------------------------------------------------------------- download


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    resume: bool = True,
    timeout: float = 60.0,
    retries: int = 4,
    backoff_s: float = 1.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``; return ``dest``.

    An existing ``dest`` is kept (and checked when ``sha256`` is given). With ``resume`` an
    existing ``.part`` is continued with a Range request. Raises InputError for a bad URL, an
    HTTP client error or a digest mismatch (naming the file, expected and actual digest; the
    ``.part`` is removed), DownloadError when every retry failed (the ``.part`` is kept).
    """
    dest = Path(dest)
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise InputError(f"{url}: only http(s) URLs can be fetched; copy local files by hand")
    expected = _normalise_sha256(sha256, url)
    if dest.exists():
        return _check_existing(dest, expected)

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not resume and part.exists():
        part.unlink()
    for attempt in range(retries + 1):
        try:
            actual = _transfer(url, part, timeout=timeout, progress=progress, label=dest.name)
            break
        except _TransientError as error:
            if attempt == retries:
                raise DownloadError(
                    f"{url}: gave up after {retries + 1} attempts ({error}); "
                    f"{part} is kept, rerun to resume"
                ) from None
            delay = backoff_s * 2**attempt
            log.warning("%s: %s; retry %d/%d in %.1f s", dest.name, error, attempt + 1, retries, delay)
            time.sleep(delay)
    if expected is not None and actual != expected:
        part.unlink()
        raise InputError(
            f"{dest}: sha256 mismatch: expected {expected}, got {actual} (downloaded from {url}); "
            f"the partial file {part.name} was removed"
        )
    os.replace(part, dest)
    log.info("%s: sha256 %s", dest, actual)
    return dest


def _normalise_sha256(sha256: str | None, url: str) -> str | None:
    if sha256 is None:
        return None
    if not _SHA256_RE.match(sha256.strip()):
        raise InputError(f"{url}: --sha256 {sha256!r} is not 64 hexadecimal digits")
    return sha256.strip().lower()


def _check_existing(dest: Path, expected: str | None) -> Path:
    if expected is None:
        log.info("%s: exists, not downloaded again (no checksum given to verify it)", dest)
        return dest
    actual = sha256_file(dest)
    if actual != expected:
        raise InputError(
            f"{dest}: sha256 mismatch: expected {expected}, got {actual}; remove the file to download it again"
        )
    return dest


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _transfer(url: str, part: Path, *, timeout: float, progress: bool, label: str) -> str:
    """One attempt: continue ``part`` from its current size; return the hex digest of the whole file."""
    # imported here: every `facetrust` command builds this parser, and these take 30 ms to import
    import http.client
    import urllib.error
    import urllib.request

    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "facetrust-fetch", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        return _handle_http_error(error, url, part, offset)
    except (OSError, http.client.HTTPException) as error:  # URLError, refused, timeout
        raise _TransientError(f"cannot connect: {getattr(error, 'reason', error)}") from None

    with response:
        if offset and response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _TransientError(f"server resumed at byte {start}, not {offset}; restarting")
            mode, digest = "ab", _digest_of(part)
        else:
            if offset:  # HTTP 200 to a Range request: the server sends the whole file again
                log.info("%s: server ignored the Range request; restarting from byte 0", label)
                offset = 0
            mode, digest = "wb", hashlib.sha256()
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        received = 0
        try:
            with open(part, mode) as handle, tqdm(
                total=None if length is None else offset + length, initial=offset, unit="B",
                unit_scale=True, unit_divisor=1024, desc=label, disable=not progress, leave=False,
            ) as bar:
                while True:
                    try:
                        chunk = response.read(CHUNK_BYTES)
                    except (OSError, http.client.HTTPException) as error:
                        raise _TransientError(f"connection lost after {offset + received} bytes: {error}") from None
                    if not chunk:
                        break
                    handle.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except OSError as error:  # the local disk (full, read-only): no retry can fix it; exit 1 naming it
            raise OSError(error.errno, error.strerror, str(part)) from None
    # http.client returns a short body without raising when the peer closes early: check it.
    if length is not None and received < length:
        raise _TransientError(f"connection closed after {offset + received} of {offset + length} bytes")
    return digest.hexdigest()


def _handle_http_error(error: urllib.error.HTTPError, url: str, part: Path, offset: int) -> str:
    if error.code == 416 and offset:
        # Range not satisfiable: the .part may already hold the whole file.
        total = _content_range_total(error.headers.get("Content-Range"))
        if total == offset:
            return _digest_of(part).hexdigest()
        part.unlink()
        raise _TransientError(f"server refused to resume at byte {offset}; restarting") from None
    if error.code in _RETRYABLE_STATUS:
        raise _TransientError(f"HTTP {error.code} {error.reason}") from None
    raise InputError(f"{url}: HTTP {error.code} {error.reason}") from None


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", header or "")
    return int(match.group(1)) if match else None


def _content_range_total(header: str | None) -> int | None:
    match = re.match(r"bytes\s+(?:\*|\d+-\d+)/(\d+)", header or "")
    return int(match.group(1)) if match else None


def _digest_of(path: Path) -> "hashlib._Hash":
    """A sha256 object already fed with ``path``'s bytes (to continue hashing a resumed file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest


# --------------------------------------------------------------------------- extraction


def archive_kind(path: str | os.PathLike) -> str | None:
    """``"zip"``, ``"tar"`` (plain or compressed) or None, from the file name."""
    name = Path(path).name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    return None


def extract_archive(archive: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Extract ``archive`` into ``out_dir``; return the top-level paths it created.

    Every member is checked first (InputError naming the archive and member: absolute path, a
    ``..`` component, a link leading outside ``out_dir``, a device file), then the archive is
    unpacked into a temporary directory inside ``out_dir`` and its top-level entries are renamed
    into place, so a failure leaves no half-extracted tree. An entry that already exists is an
    InputError (nothing is overwritten).
    """
    archive, out_dir = Path(archive), Path(out_dir)
    kind = archive_kind(archive)
    if kind is None:
        raise InputError(f"{archive}: not a .zip, .tar or .tar.gz archive")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extract", dir=out_dir))
    try:
        if kind == "zip":
            _extract_zip(archive, staging)
        else:
            _extract_tar(archive, staging)
        created = []
        for child in sorted(staging.iterdir()):
            target = out_dir / child.name
            if target.exists() or target.is_symlink():
                raise InputError(f"{archive}: {target} already exists; remove it or choose another --out")
        for child in sorted(staging.iterdir()):
            os.replace(child, out_dir / child.name)
            created.append(out_dir / child.name)
        return created
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_name(archive: Path, name: str) -> PurePosixPath:
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
        raise InputError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in path.parts:
        raise InputError(f"{archive}: member {name!r} contains '..'; refusing to extract")
    return path


def _check_link(archive: Path, name: str, target: str, relative_to_member: bool) -> None:
    """Refuse a link whose target resolves outside the extraction directory."""
    target = target.replace("\\", "/")
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise InputError(f"{archive}: link {name!r} -> {target!r} is absolute; refusing to extract")
    base = posixpath.dirname(name) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        raise InputError(f"{archive}: link {name!r} -> {target!r} leads outside the directory; refusing to extract")


def _extract_tar(archive: Path, staging: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_name(archive, member.name)
                if member.issym():
                    _check_link(archive, member.name, member.linkname, relative_to_member=True)
                elif member.islnk():
                    _check_link(archive, member.name, member.linkname, relative_to_member=False)
                elif not (member.isfile() or member.isdir()):
                    raise InputError(f"{archive}: member {member.name!r} is a device or FIFO; refusing to extract")
            # The stdlib "data" filter repeats these checks and drops setuid bits: defence in depth.
            tar.extractall(staging, members=members, filter="data")
    except tarfile.TarError as error:
        raise InputError(f"{archive}: not a readable tar archive: {error}") from None


def _extract_zip(archive: Path, staging: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_name(archive, info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    target = zf.read(info).decode("utf-8", "replace")
                    _check_link(archive, info.filename, target, relative_to_member=True)
            # zipfile writes a symlink member as a plain file holding the target: nothing escapes.
            zf.extractall(staging)
    except zipfile.BadZipFile as error:
        raise InputError(f"{archive}: not a readable zip archive: {error}") from None


# --------------------------------------------------------------------------- CLI


def add_fetch_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``facetrust fetch`` on the CLI's subparsers; the command is :func:`cmd_fetch`."""
    p = subparsers.add_parser(
        "fetch", help="download a data set (checksum, resume) or print how to get it",
        description="Download a known data set or any http(s) URL into --out (resumable, sha256-checked, "
        "archives extracted). Sets without a public URL print manual instructions and exit 2.",
    )
    p.add_argument("dataset", nargs="?", help="catalog name (see --list) or an http(s) URL")
    p.add_argument("--out", help="directory to download and extract into")
    p.add_argument("--url", help="mirror URL for a catalog data set")
    p.add_argument("--sha256", help="expected SHA-256 of the downloaded file (64 hex digits)")
    p.add_argument("--filename", help="name to save the download as (default: from the catalog or URL)")
    p.add_argument("--no-resume", action="store_true", help="discard a partial download and start over")
    p.add_argument("--no-extract", action="store_true", help="keep archives packed")
    p.add_argument("--timeout", type=options.number(0.0, 86400.0, low_open=True), default=60.0, help="seconds without data before a retry")
    p.add_argument("--retries", type=options.integer(0, 100), default=4, help="retries after a failed attempt (backoff doubles)")
    p.add_argument("--list", action="store_true", help="list the known data sets and exit")
    p.set_defaults(func=cmd_fetch)
    return p


def cmd_fetch(args) -> None:
    """Run ``facetrust fetch``; prints the path to use and, for catalog sets, the params key."""
    if args.list:
        print(catalog_table())
        return
    if not args.dataset or not args.out:
        raise InputError("give DATASET (a catalog name or URL) and --out DIR, or --list")
    path = fetch(
        args.dataset, args.out, url=args.url, sha256=args.sha256, filename=args.filename,
        resume=not args.no_resume, timeout=args.timeout, retries=args.retries, extract=not args.no_extract,
    )
    print(path)
    if "://" not in args.dataset:
        entry = get_entry(args.dataset)
        print(f"# in your preset: {entry.params_key}: {entry.params_path(path)}")
