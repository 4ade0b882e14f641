"""What the ``facetrust`` sub-command modules share: the registries' choices, option types, the
``--force`` help, threads, and which process of a distributed run speaks."""

from __future__ import annotations

import argparse
import logging
import os

from facetrust import options
from facetrust.registry import LazyChoices

# CLI choices come from the registries (facetrust.registry), like the params schema's enums.
MARGIN_CHOICES = LazyChoices("facetrust.models.margins:MARGINS")
UNCERTAINTY_HEAD_CHOICES = LazyChoices("facetrust.models.uncertainty.methods:UNCERTAINTY_HEADS")
PAPER_CHOICES = LazyChoices("facetrust.report.papers:PAPER_MODULES")
MODEL_UNCERTAINTY_CHOICES = LazyChoices("none", "facetrust.models.uncertainty.methods:MODEL_UNCERTAINTIES")
POOLING_CHOICES = LazyChoices("facetrust.evaluate.poolings:POOLINGS")
PAIR_DISTANCE_CHOICES = LazyChoices("facetrust.evaluate.pairs:PAIR_DISTANCES")
BACKBONE_CHOICES = LazyChoices("facetrust.models.registry:BACKBONES")
TAR_METHOD_CHOICES = LazyChoices("facetrust.formats:TAR_METHODS", "kth_impostor")
SCORE_CHOICES = LazyChoices("facetrust.evaluate.scores:SCORES")
MAP_METHOD_CHOICES = LazyChoices("facetrust.explain.maps:MAP_METHODS")
METRIC_CHOICES = LazyChoices("facetrust.evaluate.metrics:METRICS")

log = logging.getLogger("facetrust")

FORCE_HELP = ("write into a non-empty --out that is not a previous output of this command (files of the "
              "names it writes are replaced; synth replaces the whole directory)")

size = options.size


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected a positive integer")
    return value


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def main_process(environ=os.environ) -> bool:
    """Whether this is rank 0: of torchrun (``RANK``), or of a multi-task ``srun`` step
    (``SLURM_PROCID``, which facetrust.train.distributed turns into ``RANK`` only later), or the
    only process.  Rank 0 alone locks, marks and records the outputs."""
    if "RANK" in environ:
        return environ["RANK"] == "0"
    tasks = environ.get("SLURM_STEP_NUM_TASKS", "1")
    if tasks.isdigit() and int(tasks) > 1 and "SLURM_PROCID" in environ:
        return environ["SLURM_PROCID"] == "0"
    return True
