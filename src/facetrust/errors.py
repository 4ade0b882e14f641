"""Exceptions shared by every stage.

The CLI maps :class:`InputError` to exit code 2 (bad input or usage) and any other
exception to exit code 1 (a failed run).  Messages name the file and the record or key.
"""


class InputError(Exception):
    """Bad input: a malformed file, a missing key, a refused pickle.  Exit code 2."""


class ConfigError(InputError):
    """A configuration value that is missing, of the wrong type or not allowed."""


class RunError(RuntimeError):
    """A failed run that one line explains (exit code 1, no traceback): an output directory
    locked by another run, a diverged training."""
