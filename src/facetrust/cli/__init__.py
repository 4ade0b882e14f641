"""The ``facetrust`` command: one subcommand per pipeline stage (docs/ARCHITECTURE.md "CLI").

Every Snakemake rule calls exactly one of these, so each stage can be run, tested and debugged
without Snakemake. Exit codes: 0 success, 1 a failed run, 2 bad input or usage; the message names
the file and the record or key. Heavy modules are imported inside each command so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from facetrust.errors import InputError, RunError
from facetrust.float_path import pin_environment

# Before numpy or torch loads (nothing above imports them): their CPU kernels read these when they
# load, and they fix the floating-point path of the run (facetrust.float_path).
pin_environment()

from facetrust.cli.common import log, main_process  # noqa: E402
from facetrust.cli.data import METHOD_KINDS  # noqa: E402  (what `facetrust methods` lists)

__all__ = ["METHOD_KINDS", "build_parser", "main", "main_process"]


#: The modules that add the sub-commands, in the order ``facetrust --help`` lists them.
PARSER_MODULES = ("facetrust.cli.data", "facetrust.cli.stages", "facetrust.cli.evaluate", "facetrust.verify.cli",
                  "facetrust.cli.explain", "facetrust.cli.report")


def build_parser() -> argparse.ArgumentParser:
    """The ``facetrust`` parser: each module of :data:`PARSER_MODULES` adds its sub-commands."""
    import importlib

    parser = argparse.ArgumentParser(prog="facetrust", description="facetrust: explainable, uncertainty-aware face verification pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in PARSER_MODULES:
        importlib.import_module(module).add_parsers(sub)
    return parser


# Output options beyond --out, per command (facetrust.outputs guards them all); every other path
# option is an input.  Options that are names, not paths, are never taken for inputs.
EXTRA_OUTPUTS = {
    "evaluate": ("roc", "csv", "replicates_out"),
    "explain faithfulness": ("examples",),
    "explain invert": ("results", "images"),
    "report edc": ("figure",),
    "report xcos": ("table", "figure"),
    "report explanations": ("table", "curves", "maps", "cascade", "restoration"),
    "report inversion": ("table", "figure"),
}
NOT_PATHS = {
    "train": ("model",), "fit-head": ("model", "head"), "import-model": ("model",), "train-xcos": ("name",),
    "align": ("name",), "evaluate": ("name", "score_key", "reference_key"),
    "report": ("method", "label", "title", "backbone", "train_set", "test_set", "variant", "model", "variants",
               "baseline", "margin_methods", "depth_method", "depth_backbones", "paper_protocol_label", "name"),
}
# Inputs that are model directories: an output may live inside them (models/<model>/heads/<head>).
MODEL_DIRECTORY_INPUTS = ("model", "backbone", "standard", "verifier")
_BOOKKEEPING = ("command", "func", "kind", "format", "explain_command", "action", "protocol_kind", "verbose")


def command_name(args) -> str:
    """``evaluate``, ``report xcos`` (also for ``report paper xcos``), ``explain invert``, ``export onnx`` …"""
    sub = next((getattr(args, key) for key in ("paper", "kind", "explain_command", "format") if getattr(args, key, None)),
               None)  # `report paper NAME` is `report NAME`
    return f"{args.command} {sub}" if sub and args.command in ("report", "explain", "export") else args.command


def output_owner(args) -> str:
    """The command an output directory belongs to (its marker): ``data pack rec`` and ``data pack
    ijb`` own a directory each; any other command is its top-level name."""
    if args.command == "data" and getattr(args, "action", None) == "pack":
        return f"data pack {args.kind}"
    return args.command


def output_paths(args) -> dict[str, Path]:
    """Option -> path of every output the command was given (``out`` first)."""
    name = command_name(args)
    if args.command == "fetch":  # downloads into a directory of other files; keeps its .part files to resume
        return {}  # (its --out still gets its provenance record)
    options_out = ("out", *EXTRA_OUTPUTS.get(name, EXTRA_OUTPUTS.get(args.command, ())))
    return {option: Path(getattr(args, option)) for option in options_out if getattr(args, option, None)}


def input_paths(args, outputs: dict[str, Path]) -> list[tuple[str, Path]]:
    from facetrust.outputs import option_paths

    skip = {*_BOOKKEEPING, *outputs, *NOT_PATHS.get(args.command, ())}
    return option_paths(vars(args), skip=tuple(skip))


def _provenance_text(args, argv: list[str]) -> str:
    """The sidecar record of what made ``--out`` (facetrust.provenance)."""
    from facetrust.provenance import record_text

    seed = getattr(args, "seed", None)
    if seed is None and getattr(args, "params", None):
        from facetrust.config import load_yaml

        try:
            seed = (load_yaml(args.params) or {}).get("seed")
        except (InputError, AttributeError):
            seed = None
    return record_text(argv, seed)


def option_flags(parser: argparse.ArgumentParser, args) -> dict[str, str]:
    """dest -> the option as typed (``testset`` -> ``--test-set``; a positional: its name) of the
    subcommand ``args`` ran."""
    flags: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                flags.update(option_flags(chosen, args))
        elif action.option_strings:
            flags.setdefault(action.dest, next((o for o in action.option_strings if o.startswith("--")),
                                               action.option_strings[0]))
        else:
            flags.setdefault(action.dest, action.dest)
    return flags


def _run(args, argv: list[str], flags: dict[str, str]) -> None:
    """The command inside its output transaction (facetrust.outputs)."""
    from facetrust import outputs

    out_paths = output_paths(args)
    owner = output_owner(args)
    outputs.check_outputs_against_inputs(out_paths, input_paths(args, out_paths),
                                         directory=owner in outputs.DIRECTORY_COMMANDS,
                                         nested_ok=MODEL_DIRECTORY_INPUTS, flags=flags)
    out = getattr(args, "out", None)
    with outputs.transaction(owner, out_paths, force=getattr(args, "force", False),
                             main_process=main_process(), forceable=hasattr(args, "force"),
                             provenance=lambda: _provenance_text(args, argv), record_of=Path(out) if out else None):
        args.func(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    code = _dispatch(parser, args, argv)
    record_peak_memory(args, code)
    return code


#: Where a measuring harness asks every command to append its exact peak memory (one JSON line;
#: benchmarks/bench_pipeline.py sets it for the jobs of a run).  Unset: nothing is written.
PEAK_MEMORY_LOG = "FACETRUST_PEAK_MEMORY_LOG"


def record_peak_memory(args, code: int, environ=None) -> dict | None:
    """Append this command's exact peak resident memory to the file named by :data:`PEAK_MEMORY_LOG`
    (when set) and return the record: ``max_rss_mib``, this process's high-water mark, and
    ``children_max_rss_mib``, the largest of its waited-for children's (DataLoader workers), both
    from ``getrusage`` (the kernel's own counts, not samples: Snakemake's benchmark samples the
    process tree now and then and missed up to 15 % of a short peak, benchmarks/README.md note 14),
    beside the command, its outputs and the working directory, so a harness can match the line to
    the job that ran it.  One ``write`` of one line to a file opened for appending: jobs running
    side by side do not interleave.  A file that cannot be written is skipped with a warning; the
    command's own result stands.  Linux keeps a process's high-water mark across ``exec``: a command
    started straight from a large process begins at that one's peak (Snakemake's jobs start from a
    small shell: the embedded default's ``decode`` job records 44 MiB).  It never raises: it runs
    after the command, outside its error handling, and the command's exit code stands whatever
    happens here (a process that exhausted its address space cannot even import ``resource``)."""
    try:
        return _record_peak_memory(args, code, environ)
    except Exception as error:  # noqa: BLE001 (the command's result stands; this record is extra)
        try:
            log.warning("cannot record peak memory: %s: %s", type(error).__name__, " ".join(str(error).split())[:200])
        except Exception:  # noqa: BLE001 (not even a log line can be written)
            pass
        return None


def _record_peak_memory(args, code: int, environ=None) -> dict | None:
    import json
    import os

    environ = os.environ if environ is None else environ
    target = environ.get(PEAK_MEMORY_LOG)
    if not target:
        return None
    import resource  # only when asked: nothing to import (or fail to) otherwise
    kib = 1024 if sys.platform != "darwin" else 1024 * 1024  # ru_maxrss: KiB on Linux, bytes on macOS
    record = {"command": command_name(args), "exit": code, "cwd": os.getcwd(),
              "outputs": sorted(str(path) for path in output_paths(args).values()),
              "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib, 1),
              "children_max_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib, 1)}
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, (json.dumps(record) + "\n").encode())
        finally:
            os.close(descriptor)
    except OSError as error:
        log.warning("cannot record peak memory in %s: %s", target, error.strerror or error)
    return record


def _dispatch(parser: argparse.ArgumentParser, args, argv: list[str] | None) -> int:
    """Run the command; its exit code (the module docstring's convention)."""
    name = args.command
    try:
        _run(args, argv if argv is not None else sys.argv[1:], option_flags(parser, args))
    except InputError as error:
        print(f"facetrust {name}: error: {error}", file=sys.stderr)
        log.debug("facetrust %s failed", name, exc_info=True)
        return 2
    except KeyboardInterrupt:
        print(f"facetrust {name}: interrupted", file=sys.stderr)
        return 1
    except RunError as error:  # a failed run that one line explains (a lock held, a diverged training)
        print(f"facetrust {name}: error: {error}", file=sys.stderr)
        log.debug("facetrust %s failed", name, exc_info=True)
        return 1
    except BrokenPipeError:  # the reader of our output went away (`facetrust methods | head`): stop quietly
        _drop_stdout()
        return 1
    except OSError as error:  # the machine, not the input: a read-only or full disk, a missing device
        # a failed write() names no file: the stage's output is the place to look
        where = error.filename or getattr(args, "out", None)
        where = f" {where}" if where else ""
        print(f"facetrust {name}: error: cannot write or read{where}: {error.strerror or error}",
              file=sys.stderr)
        log.debug("facetrust %s failed", name, exc_info=True)
        return 1
    except MemoryError:
        print(f"facetrust {name}: error: out of memory", file=sys.stderr)
        log.debug("facetrust %s failed", name, exc_info=True)
        return 1
    except Exception as error:  # a bug: one line, the traceback with -v
        text = " ".join(str(error).split())[:300]
        print(f"facetrust {name}: error: unexpected {type(error).__name__}: {text} (run with -v for the traceback)",
              file=sys.stderr)
        log.debug("facetrust %s failed", name, exc_info=True)
        return 1
    return 0


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail on the closed pipe
    again (Python's own advice for SIGPIPE, docs of the ``signal`` module)."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured in a test)
        pass


if __name__ == "__main__":
    sys.exit(main())
