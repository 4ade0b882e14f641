"""The one place that owns the explain defaults shared by the CLI, the stages and the schema (a test
checks that `explain map --masks`, the faithfulness and sanity stages and the schema agree), and the
maps' settings group (no torch here: the CLI reads it to build its parser)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from facetrust import options
from facetrust.settings import SettingsGroup, option

#: ``facetrust verify --explain``: "gradient" is the short name for integrated gradients (the same
#: map as "integrated_gradients"); xcos needs an xCos model.
VERIFY_EXPLAIN_METHODS = ("gradient", "integrated_gradients", "perturbation", "xcos", "none")
#: RISE masks per pair.  RISE uses 4,000-8,000 at 224 px; at 1,000 the sanity stage reports the
#: maps' seed-to-seed agreement with its interval.
DEFAULT_MASKS = 1000
DEFAULT_CELLS = 6  # RISE grid cells per side (the xCos grid at 48 px is 6 x 6)
DEFAULT_IG_STEPS = 16  # integrated-gradient steps (midpoint rule)


@dataclass
class MapSettings(SettingsGroup):
    """Settings of the training-free maps: the params ``explain`` section's ``gradient`` and
    ``perturbation`` blocks, and the flags of ``facetrust explain map`` (a settings group: one
    place for the defaults, the schema's equal them, tested)."""

    SECTION: ClassVar[tuple[str, ...]] = ("explain",)

    steps: int = option(DEFAULT_IG_STEPS, "--steps", "integrated-gradient steps", key="gradient.steps",
                        type=options.integer(1, 100_000))
    masks: int = option(DEFAULT_MASKS, "--masks", "random masks of the perturbation map", key="perturbation.masks",
                        type=options.integer(2, 10_000_000))
    cells: int = option(DEFAULT_CELLS, "--cells", "perturbation map: grid cells per side", key="perturbation.cells",
                        type=options.integer(1, 1024))
    keep_probability: float = option(0.5, "--keep-probability", "perturbation map: probability that a cell keeps "
                                     "the face", key="perturbation.keep_probability",
                                     type=options.number(0.0, 1.0, low_open=True, high_open=True))
    batch_size: int = option(128, "--batch-size", "perturbation map: masked images scored per forward pass",
                             key="perturbation.batch_size", type=options.integer(1, 65_536))
    seed: int = 0
