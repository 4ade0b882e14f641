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


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to serve every allocation from the heap and keep freed memory for the
    next one, instead of mapping each large array afresh and unmapping it when freed: each fresh
    mapping costs a page fault per 4 KiB on its first touch (the kernel zeroes the page; on a VM the
    fault itself is dear).  Called by the commands that free and allocate the same large arrays
    over and over; measured, one thread:

    - ``facetrust train`` (each step's activations and gradients, 8 MB tensors for the default
      ArcFace): 2 epochs of the default ArcFace, alternated twice, took 3.9-5.1 M minor faults and
      7.9-10.3 s of system time in 41.9-45.6 s wall, against 0.17-0.19 M faults, 0.6-0.7 s and
      33.7-34.6 s with it (1.2-1.3x), the checkpoint the same bytes; peak RSS 1,079-1,160 against
      954-957 MiB;
    - ``facetrust embed`` (each batch's activations): the default ArcFace on the synthetic IJB-C
      (backbone cache off), alternated twice, 11.9-12.0 s wall and 2.1 s of system time against
      9.6-10.1 s and 0.4-0.5 s with it (1.2x), the embeddings the same bytes; peak RSS 832-856
      against 777-793 MiB;
    - ``facetrust explain sanity`` / ``explain faithfulness`` of the embedded default's xCos model
      (one run each way): 76.5 / 168.3 s wall and 15.4 / 14.1 s of system time against 59.5 /
      151.4 s and 0.6 / 0.9 s with it, the outputs the same bytes; peak RSS 1,061 / 1,608 against
      871 / 1,131 MiB;
    - ``facetrust evaluate ijb`` at IJB-C's size (15.7 M scores, rows and masks): best wall 2.44 s
      against 2.59 s, system time 0.54-0.64 s against 0.69-0.78 s; peak RSS the same untied,
      1,104 against 1,033 MiB on the tied protocol (its freed arrays are not all reused);
    - ``facetrust train-xcos`` (the embedded default's xCos model: three candidate rates and two
      more seeds on the cached feature maps; one run each): 169.1 s wall, 13.1 s of system time and
      a peak of 2,042 MiB before its feature cache was filled in place
      (:func:`facetrust.train.xcos_cache.build_feature_cache`: the batches' list, their
      concatenation and their stack were alive at once), 182.9 s, 14.3 s and 1,476 MiB after,
      and 163.1 s, 1.2 s and 1,543 MiB after with this setting; the checkpoints the same bytes in
      all three.  Before the cache change the setting would have taken it to 2,296 MiB, above the
      embedded default's 2 GiB per job;
    - ``facetrust explain invert`` / ``invert-select`` / ``score`` of the embedded default (one run
      each way): 144.0 / 31.7 / 39.3 s wall and 14.5 / 1.8 / 9.9 s of system time against 124.4 /
      29.4 / 27.8 s and 0.7 / 0.5 / 0.5 s with it, the outputs the same bytes; peak RSS 1,113 /
      916 / 1,041 against 1,037 / 901 / 831 MiB.

    The values computed are the same: torch aligns its buffers itself (64 bytes) wherever they come
    from.  Only where the C library has ``mallopt`` (glibc); returns whether both settings took."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


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
