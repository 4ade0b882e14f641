"""Settings of the evaluation protocols: each group owns its defaults, the params section it
reads, the ``facetrust evaluate`` flags it adds, and the way back from values to flags (what the
Snakemake rules pass).  A default is written once, here; the params schema's defaults must equal
it (``tests/test_settings.py``).

=========================  ==============================  =======================================
group                      params section                  ``facetrust evaluate`` sub-commands
=========================  ==============================  =======================================
:class:`IJBConvention`     ``evaluate`` (N, D, F)          ijb, reject, edc (pairs: flip only)
:class:`VerificationSettings` ``evaluate`` (FARs, reading)  ijb
:class:`PairsSettings`     ``evaluate.pairs``              pairs
:class:`RejectSettings`    ``evaluate.reject``             reject (edc: space, template_how)
:class:`EDCSettings`       ``evaluate.edc``                edc
:class:`BootstrapSettings` ``evaluate.bootstrap`` + seed   all four
=========================  ==============================  =======================================

The machinery (fields that are options, params sections, flags back from values) is
:mod:`facetrust.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from facetrust import options
from facetrust.evaluate.bootstrap import BootstrapSettings
from facetrust.registry import LazyChoices
from facetrust.settings import SettingsGroup, option

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
REJECT_FARS = (1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2)
TAR_METHODS = LazyChoices("facetrust.formats:TAR_METHODS")
REJECT_TAR_METHODS = LazyChoices("facetrust.formats:TAR_METHODS", "kth_impostor")
PAIR_DISTANCES = LazyChoices("facetrust.evaluate.pairs:PAIR_DISTANCES")
SPACES = ("uncertainty", "confidence", "method")
#: Smallest step of the rejected fraction: at most 10,001 fractions in [0, 1], each of which reads
#: TAR at every FAR again (a step of 1e-9 asked for a billion of them and reached 7.9 GB).
MIN_FRACTION_STEP = 1e-4
TEMPLATE_HOWS = ("mean", "min", "harmonic")


@dataclass(frozen=True)
class IJBConvention(SettingsGroup):
    """InsightFace's IJB evaluation flags (``eval_ijbc.py``: N, D, F)."""

    SECTION: ClassVar[tuple[str, ...]] = ("evaluate",)
    normalize_images: bool = option(False, "--normalize-images", "N0: L2-normalise image features before pooling "
                                                                 "(InsightFace N1, the default, keeps their norm as a weight)")
    use_detector_score: bool = option(True, "--no-detector-score", "D0: ignore detector scores", invert=True)
    flip: bool = option(True, "--no-flip", "F0: original images only (no flip-sum)", invert=True)


@dataclass(frozen=True)
class VerificationSettings(SettingsGroup):
    """How an IJB 1:1 table is read: which FARs, how TAR is read at them, failed templates."""

    SECTION: ClassVar[tuple[str, ...]] = ("evaluate",)
    fars: tuple = option(IJB_FARS, "--fars", "FARs of the TAR table")
    tar_method: str = option("nearest", "--tar-method", "how TAR is read at a FAR", choices=TAR_METHODS)
    failed_templates: str = option("reject", "--failed-templates",
                                   "pairs of a template left without images: reject (score below every other pair; "
                                   "the generalised FNMR) or drop (left out)", choices=("reject", "drop"))


@dataclass(frozen=True)
class PairsSettings(SettingsGroup):
    """The 10-fold pair-set protocol's distance (InsightFace ``verification.py``)."""

    SECTION: ClassVar[tuple[str, ...]] = ("evaluate", "pairs")
    metric: str = option("squared_l2", "--metric", "pair distance of the 10-fold accuracy", choices=PAIR_DISTANCES)


@dataclass(frozen=True)
class RejectSettings(SettingsGroup):
    """Reject verification (ScaleFace): how pairs are ranked by uncertainty and how TAR is read."""

    SECTION: ClassVar[tuple[str, ...]] = ("evaluate", "reject")
    how: str = option("mean", "--how", "pair uncertainty from its two members'",
                      choices=("mean", "max", "min", "harmonic", "product"))
    space: str = option("method", "--space", "combine and aggregate uncertainties u, confidences 1/u (ScaleFace "
                                             "scales, SCF kappa), or each method's own space", choices=SPACES)
    template_how: str = option("mean", "--template-how", "IJB: template uncertainty from its images', in that space",
                               choices=TEMPLATE_HOWS)
    tar_method: str = option("kth_impostor", "--tar-method", "how TAR is read (kth_impostor: ScaleFace's threshold "
                                                             "at the round(n*FAR)-th impostor)",
                             choices=REJECT_TAR_METHODS)
    probe_templates: str = option("all_images", "--probe-templates",
                                  "IJB: pool every template (ScaleFace 'full'), or ScaleFace's single-image probes "
                                  "(the second template of each pair is its first image)",
                                  choices=("all_images", "first_image"))
    fars: tuple = option(REJECT_FARS, "--fars", "FARs of the curves")
    fraction_step: float = option(0.01, "--fraction-step", "step between rejected fractions (at least 1e-4: "
                                                           "at most 10,001 fractions)",
                                  type=options.number(MIN_FRACTION_STEP, 1.0))
    max_fraction: float = option(0.5, "--max-fraction", "largest rejected fraction", type=options.probability)

    def fractions(self):
        """The rejected fractions 0, step, 2 step, ... up to ``max_fraction``; ConfigError for a step
        below :data:`MIN_FRACTION_STEP` (each fraction re-evaluates every pair: 1e-9 took 7.9 GB)."""
        import math

        import numpy as np

        from facetrust.errors import ConfigError

        step = self.fraction_step
        if not (isinstance(step, (int, float)) and math.isfinite(step) and MIN_FRACTION_STEP <= step <= 1.0):
            raise ConfigError(f"evaluate.reject.fraction_step: {str(step)[:40]} is outside [{MIN_FRACTION_STEP:g}, 1] "
                              f"(at most {round(1 / MIN_FRACTION_STEP) + 1:,} rejected fractions)")
        return np.round(np.arange(0.0, self.max_fraction + 1e-9, step), 10)


@dataclass(frozen=True)
class EDCSettings(SettingsGroup):
    """Error-versus-Discard Characteristic (Schlett et al.) and CR-FIQA's ERC variant."""

    SECTION: ClassVar[tuple[str, ...]] = ("evaluate", "edc")
    starting_error: float = option(0.05, "--starting-error", "error that fixes the threshold", type=options.level)
    discard_limit: float = option(0.2, "--discard-limit", "pAUC up to this discarded fraction",
                                  type=options.number(0.0, 1.0, low_open=True))
    random_draws: int = option(10, "--random-draws", "random rankings averaged", type=options.integer(1, 100_000))
    crfiqa_fmrs: tuple = option((1e-3, 1e-4), "--crfiqa-fmrs", "FMRs of the CR-FIQA ERC variant")


#: Every group with a params section (tests/test_settings.py compares their defaults with the schema's).
GROUPS: tuple[type[SettingsGroup], ...] = (IJBConvention, VerificationSettings, PairsSettings, RejectSettings,
                                           EDCSettings, BootstrapSettings)
