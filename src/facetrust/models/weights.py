"""Reading ``.pt`` / ``.pth`` files of unknown origin: :func:`torch.load` with ``weights_only=True``
only, and errors that name the file (checkpoints and heads, :mod:`facetrust.models.artifacts`;
arcface_torch state dicts, :mod:`facetrust.models.pretrained`)."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from facetrust.errors import InputError


def weights_only_load(path: Path, what: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; InputError naming the file otherwise.  torch's own
    message for a refused payload advises loading with ``weights_only=False``, which is never the
    right advice for a file of unknown origin: only the refusing instruction is relayed; its
    warnings about the pickle protocol are not shown either (the refusal or the load says it all)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = [line for line in str(exc).splitlines() if "WeightsUnpickler error" in line or "Unsupported" in line]
        reason = detail[-1].strip() if detail else "it holds objects other than tensors and plain values"
        raise InputError(f"{path}: not a loadable {what}: refused by the weights-only loader ({reason}); "
                         f"it may hold code, and is never loaded otherwise") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what}") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, ... for truncated or foreign files
        reason = str(exc).splitlines()[0].split(". ")[0] if str(exc) else "no data"  # its first sentence
        raise InputError(f"{path}: not a loadable {what} ({type(exc).__name__}: {reason})") from None
