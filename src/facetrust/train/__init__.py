"""Training: backbones with their margin heads (:mod:`facetrust.train.trainer`, DDP-aware) and
modules fitted on a frozen backbone (:mod:`facetrust.train.frozen`, :mod:`facetrust.train.fit_head`).

Nothing is imported here, so that ``python -m facetrust.train.trainer`` (torchrun's entry) does not
import the trainer module twice.  Saved models are read through :mod:`facetrust.models.artifacts`.
"""
