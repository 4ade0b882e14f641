"""Where a command may write, and how its outputs are committed (docs/ARCHITECTURE.md "Outputs").

Every ``facetrust`` command goes through :func:`transaction` (``facetrust.cli.main``), so the rules
hold for all of them without code in each stage:

- **Never over an input.** An output equal to an input (same path, a symbolic or hard link to it),
  inside an input directory, or an output directory holding an input is refused (exit 2) before
  anything is written (:func:`check_outputs_against_inputs`).
- **Never into someone else's directory.** A directory output (:data:`DIRECTORY_COMMANDS`) that is
  not empty is refused (exit 2) unless it is a previous output of the same command, recognised by
  the :data:`MARKER` file the command writes there (or, for directories made before markers, by its
  provenance record), or ``--force`` is given.
- **One run per output directory.** An advisory ``flock`` on ``.<name>.lock`` beside the directory;
  a second run stops (exit 1) naming the PID that holds it.  The lock file is removed at the end.
- **Orphans removed.** Under the lock, the temporaries a killed run left (``atomic_path``'s
  ``.<file>.*.tmp``, ``staged_directory``'s ``.<dir>.*.tmp`` / ``.old``) are deleted first.
- **All or nothing, provenance included.** The provenance sidecar's space is reserved before the
  command runs and the record is renamed into place after it; when the command or that commit step
  fails, every output file the run created or replaced is removed (a resumable stage keeps its
  checkpoints when the command itself fails: that is what ``--resume`` continues from).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from facetrust.errors import InputError, RunError

log = logging.getLogger(__name__)

#: The file a directory command writes into its ``--out`` (fixed content: outputs stay byte-stable).
MARKER = ".facetrust-output"
#: Commands whose ``--out`` is a directory they own (marker, lock, non-empty refusal, ``--force``
#: where the command has it).  ``verify`` and the two directory packers replace their ``--out`` whole
#: (a staged directory): without the refusal they would delete whatever else was in it.
DIRECTORY_COMMANDS = ("synth", "align", "train", "train-xcos", "fit-head", "verify", "data pack rec",
                      "data pack ijb")
#: Commands that keep what a failed run wrote (the last good checkpoint, for ``--resume``).
RESUMABLE_COMMANDS = ("train",)
# Room reserved for the provenance record before the command runs (a record is about 700 bytes).
_SIDECAR_RESERVE = 8192


# --------------------------------------------------------------------------- inputs vs outputs


def _resolved(path: Path) -> Path:
    try:
        return Path(os.path.abspath(path)).resolve()
    except (RuntimeError, OSError) as error:  # Python raises RuntimeError for a loop of symbolic links
        raise InputError(f"{path}: cannot resolve the path ({error}): a loop of symbolic links?") from None


def _same_file(a: Path, b: Path) -> bool:
    if _resolved(a) == _resolved(b):
        return True
    try:
        return os.path.samefile(a, b)  # a hard link
    except OSError:
        return False


def _inside(inner: Path, outer: Path) -> bool:
    return _resolved(outer) in _resolved(inner).parents


def check_outputs_against_inputs(outputs: Mapping[str, Path], inputs: Iterable[tuple[str, Path]], *,
                                 directory: bool = False, nested_ok: Iterable[str] = (),
                                 flags: Mapping[str, str] | None = None) -> None:
    """Refuse (InputError) an output that is an input, lies inside an input directory, or — for a
    ``directory`` command's ``--out`` — holds an input.  ``inputs`` are (option, path) pairs of
    existing paths; outputs may be nested inside the inputs named in ``nested_ok`` (model
    directories: ``fit-head`` writes ``models/<model>/heads/<head>``).  ``flags`` maps an option's
    name to what the user typed (``testset`` -> ``--test-set``) for the message."""
    flags = dict(flags or {})

    def _flag(option: str) -> str:
        return flags.get(option) or "--" + option.replace("_", "-")

    nested_ok = set(nested_ok)
    inputs = list(inputs)
    named = list(outputs.items())
    for k, (option, path) in enumerate(named):  # two outputs of one run in one file: the first is lost
        for other_option, other in named[k + 1:]:
            if _resolved(path) == _resolved(other):
                raise InputError(f"{_flag(option)} {path} and {_flag(other_option)} {other} are the same file; "
                                 f"give each output its own path")
    for out_option, out in outputs.items():
        for in_option, source in inputs:
            if _same_file(out, source):
                how = "a link to" if _resolved(out) != Path(os.path.abspath(out)) or out.is_symlink() else "the same as"
                raise InputError(f"{_flag(out_option)} {out}: is {how} the input {_flag(in_option)} {source}; "
                                 f"refusing to overwrite an input")
            if source.is_dir() and in_option not in nested_ok and _inside(out, source):
                raise InputError(f"{_flag(out_option)} {out}: lies inside the input directory "
                                 f"{_flag(in_option)} {source}; refusing to write into an input")
            if directory and out_option == "out" and _inside(source, out):
                raise InputError(f"{_flag(out_option)} {out}: holds the input {_flag(in_option)} {source}; "
                                 f"refusing to write over an input")


# --------------------------------------------------------------------------- directory ownership


def marker_text(command: str) -> str:
    return json.dumps({"facetrust_output_of": command}) + "\n"


def _write_marker(out: Path, command: str) -> None:
    """Write the marker unless it is there already (an unchanged file is not rolled back)."""
    text = marker_text(command)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if (out / MARKER).read_text() == text:
            return
    (out / MARKER).write_text(text)


def previous_command(out: Path) -> str | None:
    """The facetrust command whose output ``out`` is: its marker, else its provenance record."""
    try:
        return json.loads((out / MARKER).read_text())["facetrust_output_of"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from facetrust.provenance import sidecar_path

    try:
        argv = json.loads(sidecar_path(out).read_text())["command"][1:]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    words = [word for word in argv if isinstance(word, str) and not word.startswith("-")]
    if words[:2] == ["data", "pack"] and len(words) > 2:
        return f"data pack {words[2]}"
    return words[0] if words else None


def _holds_files(out: Path) -> bool:
    """Whether anything but the marker and empty folders is under ``out`` (Snakemake makes the
    folders of a job's declared outputs before the job runs)."""
    for root, _dirs, files in os.walk(out):
        if any(name != MARKER or Path(root) != out for name in files):
            return True
    return False


def check_may_write(out: Path, command: str, force: bool, forceable: bool = True) -> None:
    """InputError unless ``out`` is absent, empty, a previous output of ``command``, or ``force``
    (``forceable``: the command has ``--force``; the message offers it only then)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out is a file, not a directory")
    if not out.is_dir() or not _holds_files(out):
        return
    owner = previous_command(out)
    if owner == command:
        return
    if force:
        log.warning("%s: not a previous 'facetrust %s' output; writing into it (--force)", out, command)
        return
    made_by = f" (it is a 'facetrust {owner}' output)" if owner else ""
    raise InputError(f"{out}: output directory is not empty and not a previous 'facetrust {command}' output"
                     f"{made_by}; give an empty or new --out" + (", or --force to write into it" if forceable else
                                                                  " (its contents would be replaced)"))


def lock_path(out: Path) -> Path:
    out = Path(os.path.abspath(out))  # `--out .` has a name too
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def directory_lock(out: Path, command: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``out`` for this process (RunError naming the PID of
    the holder when another run has it)."""
    path = lock_path(out)
    made = [folder for folder in [path.parent, *path.parent.parents] if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("ascii", "replace").strip() or "PID unknown"
            os.close(fd)
            raise RunError(f"{out}: in use by another run ({holder}; lock {path}); wait for it to finish "
                           f"or choose another --out") from None
        except BaseException:
            os.close(fd)
            raise
        # a holder that just finished unlinks the file: lock the file that is at the path now
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        with contextlib.suppress(OSError):  # the PID is for the message only; a full disk may refuse it
            os.ftruncate(fd, 0)
            os.write(fd, f"PID {os.getpid()}, facetrust {command}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
        for folder in made:  # the parents made for the lock, when the run left them empty
            with contextlib.suppress(OSError):
                folder.rmdir()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_orphans(out: Path, directory: bool) -> list[Path]:
    """Delete the temporaries a killed run writing ``out`` left behind; returns them.

    ``atomic_path`` writes ``.<name>.<random>.tmp`` beside each file, ``staged_directory``
    ``.<dir>.<random>.tmp`` / ``.old`` beside a directory: names no user file has."""
    out = Path(os.path.abspath(out))
    found = [Path(p) for p in glob.glob(os.path.join(glob.escape(str(out.parent)), f".{glob.escape(out.name)}.*"))
             if p.endswith((".tmp", ".old"))]
    if directory and out.is_dir():
        found += [entry for entry in out.iterdir() if entry.name.startswith(".") and entry.name.endswith(".tmp")]
    for path in found:
        log.info("removing %s (left by an interrupted run)", path)
        _remove(path)
    return found


# --------------------------------------------------------------------------- all or nothing


def _signature(path: Path):
    try:
        stat = path.lstat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def snapshot(paths: Iterable[Path]) -> dict[Path, object]:
    """Signatures of ``paths`` and, for directories, of every file and folder under them."""
    state: dict[Path, object] = {}
    for path in paths:
        state[path] = "dir" if path.is_dir() else _signature(path)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                for name in dirs:
                    state[Path(root) / name] = "dir"
                for name in files:
                    state[Path(root) / name] = _signature(Path(root) / name)
    return state


def roll_back(paths: Iterable[Path], before: Mapping[Path, object]) -> None:
    """Remove every file under ``paths`` that is new or changed since ``before`` (:func:`snapshot`),
    then the folders that are new and left empty."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path, topdown=False):
                for name in files:
                    file = Path(root) / name
                    if _signature(file) != before.get(file):
                        with contextlib.suppress(OSError):
                            file.unlink()
                for name in dirs:
                    folder = Path(root) / name
                    if folder not in before:
                        with contextlib.suppress(OSError):
                            folder.rmdir()
            if path not in before or before[path] is None:
                with contextlib.suppress(OSError):
                    path.rmdir()
        elif (path.is_file() or path.is_symlink()) and _signature(path) != before.get(path):
            with contextlib.suppress(OSError):
                path.unlink()


class _ReservedFile:
    """A temporary file beside ``path`` holding reserved space; :meth:`commit` writes ``text`` into
    it and renames it onto ``path`` (so a full or read-only disk shows before any work is done)."""

    def __init__(self, path: Path):
        self.path = path
        # the folders made here (provenance/…) go again with a discarded record
        self.made = [folder for folder in [path.parent, *path.parent.parents] if not folder.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self.tmp = Path(tmp)
        try:
            os.write(self.fd, b" " * _SIDECAR_RESERVE)
        except BaseException:
            self.discard()
            raise

    def commit(self, text: str) -> None:
        data = text.encode()
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, data)  # into the reserved blocks: needs no new space
        os.ftruncate(self.fd, len(data))
        os.close(self.fd)
        self.fd = None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
        for folder in self.made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()


@contextlib.contextmanager
def transaction(command: str, outputs: Mapping[str, Path], *, force: bool = False, main_process: bool = True,
                provenance: Callable[[], str] | None = None, record_of: Path | None = None,
                forceable: bool = True) -> Iterator[None]:
    """Run a command's body with the rules of the module docstring.

    ``outputs``: option -> path of what the command writes (``out`` first; for a
    :data:`DIRECTORY_COMMANDS` command ``out`` is its directory).  ``provenance()`` gives the text
    of the sidecar record (:mod:`facetrust.provenance`) of ``record_of`` (default ``out``),
    committed after the body succeeded and only if that path exists then; ``main_process`` false
    (a non-zero DDP rank) skips the lock, the marker and the record, which rank 0 owns."""
    from facetrust.provenance import sidecar_path

    directory = command in DIRECTORY_COMMANDS
    out = outputs.get("out")
    record_of = record_of if record_of is not None else out
    paths = list(dict.fromkeys(outputs.values()))
    with contextlib.ExitStack() as stack:
        if main_process and directory and out is not None:
            if out.exists() and not out.is_dir():
                raise InputError(f"{out}: --out is a file, not a directory")
            stack.enter_context(directory_lock(out, command))
        if main_process:
            for path in paths:
                remove_orphans(path, directory and path == out)
        if main_process and directory and out is not None:
            check_may_write(out, command, force, forceable)
        before = snapshot(paths)
        sidecar = None
        try:
            if main_process and directory and out is not None:
                out.mkdir(parents=True, exist_ok=True)
                # the marker now: a killed run's directory is recognised by the next (--resume)
                _write_marker(out, command)
            if main_process and provenance is not None and record_of is not None:
                sidecar = _ReservedFile(sidecar_path(record_of))
        except BaseException:
            roll_back(paths, before)
            raise
        try:
            yield
        except BaseException:
            if sidecar is not None:
                sidecar.discard()
            if command in RESUMABLE_COMMANDS:  # keep the checkpoints; drop only a directory left empty
                if out is not None and out.is_dir() and [e.name for e in out.iterdir()] == [MARKER]:
                    roll_back([out], before)
            else:
                roll_back(paths, before)
            raise
        try:
            if main_process and directory and out is not None:
                _write_marker(out, command)  # again: a staged directory (synth) replaced the first
            if sidecar is not None:
                if record_of.exists():
                    sidecar.commit(provenance())
                else:
                    sidecar.discard()
        except BaseException:
            if sidecar is not None:
                sidecar.discard()
            roll_back(paths, before)
            raise


def option_paths(values: Mapping[str, object], skip: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """(option, path) for every string or path value (or list of them) of ``values`` that names an
    existing file or directory, leaving out the options in ``skip``."""
    found = []
    for option, value in values.items():
        if option in skip:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, os.PathLike)) and str(item) and os.path.lexists(item):
                found.append((option, Path(item)))
    return found
