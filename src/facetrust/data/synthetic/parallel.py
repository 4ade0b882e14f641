"""The renderer's work split across processes, with the files unchanged.

Every image draws from its own keyed Generator (:func:`~facetrust.data.synthetic.images.keyed_rng`),
so an image is a pure function of ``(seed, config, keys)``: rendering one identity (or one IJB
media) in another process gives the same bytes.  :func:`ordered_map` hands out the work units and
gives their results back **in submission order**, so the writer appends records, rows and files
exactly as the one-process loop did.  The units are module-level functions of plain values, as a
process pool needs.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from facetrust.data.synthetic.config import SynthConfig
from facetrust.data.synthetic.identity import perturb_nuisance
from facetrust.data.synthetic.images import (
    STREAM_IJB,
    STREAM_TRAIN,
    RenderedImage,
    detector_score,
    identity_of,
    keyed_rng,
    loose_box_in_aligned_frame,
    render_aligned,
    render_loose,
    sample_shot,
)

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(function: Callable[[T], R], tasks: Iterable[T], workers: int) -> Iterator[R]:
    """``function(task)`` for every task, in the tasks' order; in ``workers`` processes when > 1.

    The pool starts from a fresh interpreter (``forkserver``), not a fork of this process (whose
    progress-bar thread a fork would copy mid-lock).  Tasks go out in chunks of a few so that a
    worker is rarely idle and the main process merges results as they arrive."""
    if workers <= 1:
        yield from map(function, tasks)
        return
    tasks = list(tasks)
    chunk = max(1, min(8, len(tasks) // (8 * workers)))
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        yield from pool.imap(function, tasks, chunksize=chunk)


def train_identity(seed: int, config: SynthConfig, task: tuple[int, int]) -> list[RenderedImage]:
    """The ``count`` training images of class ``label``: ``task = (label, count)``."""
    label, count = task
    identity = identity_of(seed, label, config.identity_spread)
    return [render_aligned(identity, keyed_rng(seed, STREAM_TRAIN, label, index), config) for index in range(count)]


def pair_identity(seed: int, config: SynthConfig, stream: int, images: int,
                  ident: int) -> list[tuple[RenderedImage, RenderedImage | None]]:
    """Images ``0 .. images-1`` of global identity ``ident`` in a pair set's ``stream``, each with
    its clean twin (same draws, occluder not painted) when it has an occluder, else None."""
    params = identity_of(seed, ident, config.identity_spread)
    out = []
    for index in range(images):
        image = render_aligned(params, keyed_rng(seed, stream, ident, index), config)
        twin = (None if image.occluder is None
                else render_aligned(params, keyed_rng(seed, stream, ident, index), config, paint_occluder=False))
        out.append((image, twin))
    return out


@dataclasses.dataclass(frozen=True)
class IJBFrame:
    """One rendered IJB frame with the detector's outputs drawn for it."""

    image: RenderedImage
    score: float
    detected: np.ndarray  # 5 x 2 landmarks as the (simulated) detector reports them
    aligned_box: tuple[float, ...] | None  # the occluder in the aligned crop's frame


def ijb_media(seed: int, config: SynthConfig, task: tuple[int, int, int]) -> list[IJBFrame]:
    """The frames of one IJB media: ``task = (global identity, media id, frames)``; frame 0 is the
    shot's own scene, later frames the same scene slightly moved (a video)."""
    ident, media, frames = task
    params = identity_of(seed, ident, config.identity_spread)
    shot = sample_shot(params, keyed_rng(seed, STREAM_IJB, media, 0), config)
    base_nuisance = shot.nuisance
    out = []
    for frame in range(frames):
        rng = keyed_rng(seed, STREAM_IJB, media, frame + 1)
        if frame:
            shot = dataclasses.replace(shot, nuisance=perturb_nuisance(rng, base_nuisance))
        image = render_loose(params, shot, rng, config)
        score = detector_score(image.quality, rng)
        noise = config.ijb_landmark_noise_px * (1.0 + 2.0 * (1.0 - image.quality))
        detected = image.landmarks + rng.normal(0.0, noise * shot.side / 112.0, (5, 2))
        aligned_box = (None if image.occluder is None
                       else loose_box_in_aligned_frame(image.occluder, shot, config.image_size))
        out.append(IJBFrame(image, score, detected, aligned_box))
    return out

