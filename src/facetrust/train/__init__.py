"""Training: ``train(config, rec_dir, out_dir)`` (DDP-aware), ``run_train`` for the CLI,
``TrainConfig``, and ``load_model`` for the stages that use a trained backbone.

Names are imported on first use, so that ``python -m facetrust.train.trainer`` (torchrun's
entry) does not import the trainer module twice.
"""

from importlib import import_module

_EXPORTS = {
    "TrainConfig": "facetrust.train.config",
    "build_heads": "facetrust.train.checkpoint",
    "load_checkpoint": "facetrust.train.checkpoint",
    "load_model": "facetrust.train.checkpoint",
    "run_train": "facetrust.train.trainer",
    "train": "facetrust.train.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'facetrust.train' has no attribute {name!r}")
