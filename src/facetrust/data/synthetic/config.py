"""Sizes and degradation ranges of the embedded synthetic benchmark.

Every field maps 1:1 onto a key of the ``synth:`` block of ``params.yaml``.  Lengths are in
pixels, ranges are ``[low, high]`` inclusive.  Degradation magnitudes are expressed in the
frame of the *aligned* crop of ``image_size`` pixels, so one degradation means the same loss of
identity information in an aligned image and in a loose crop (where it is rescaled to the
face's size in the canvas).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

from facetrust.errors import ConfigError

IntRange = tuple[int, int]


def _coerce(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (int or float); refuses strings, booleans and fractional ints."""
    if isinstance(value, (str, bytes, bool)) or not isinstance(value, numbers.Real):
        raise TypeError(value)
    if kind is int and float(value) != int(value):
        raise ValueError(value)
    return kind(value)


@dataclass(frozen=True)
class SynthConfig:
    """All sizes of the synthetic benchmark; defaults = the embedded default benchmark."""

    # --- image geometry -------------------------------------------------------------------
    image_size: int = 48  # side of the aligned crops (train, pairs), px; template scaled by /112
    loose_crop_size: int = 96  # side of the IJB loose-crop canvas, px
    loose_face_fraction: tuple[float, float] = (0.5, 0.85)  # aligned-frame side / canvas side
    loose_rotation_deg: float = 20.0  # max |in-plane rotation| of the face in a loose crop
    supersample: int = 2  # drawing resolution factor before the box downsampling

    # --- identities --------------------------------------------------------------------------
    identity_spread: float = 0.85  # 1 = full parameter ranges; smaller = people more alike, harder

    # --- training set (InsightFace RecordIO) ----------------------------------------------
    train_identities: int = 400
    train_images_per_identity: IntRange = (20, 30)

    # --- LFW-style pair set (.bin) ------------------------------------------------------
    pair_identities: int = 600  # split evenly over the 10 folds (folds are identity-disjoint)
    pair_images_per_identity: int = 5  # pool of renders per identity that pairs draw from
    pair_folds: int = 10
    pairs_per_fold: int = 300  # half genuine, half impostor

    # --- validation pair set (.bin): same layout as the pair set, identities of no other set ---
    # None: half the pair identities (at least 2 per fold), and the pair set's pairs per identity
    val_identities: int | None = None  # split evenly over pair_folds; chooses thresholds and hyperparameters
    val_pairs_per_fold: int | None = None  # half genuine, half impostor

    # --- IJB-C-style set ------------------------------------------------------------------
    ijb_identities: int = 250
    ijb_templates_per_identity: IntRange = (3, 5)
    ijb_media_per_template: IntRange = (1, 3)
    ijb_frames_per_media: IntRange = (1, 3)
    ijb_impostor_pairs: int = 200_000
    ijb_landmark_noise_px: float = 0.6  # detector landmark noise std at quality 1 (x3 at quality 0)

    # --- quality degradations (aligned-frame units) ---------------------------------------
    strong_degradation_fraction: float = 0.3  # share of images with at least one strong degradation
    blur_sigma_max: float = 3.5  # Gaussian blur sigma, px
    noise_std_max: float = 40.0  # additive Gaussian noise std, intensity levels of 255
    resolution_min: int = 8  # smallest effective face side after downsample-upsample, px
    jpeg_quality_range: IntRange = (8, 95)  # libjpeg quality
    occlusion_max: float = 0.45  # largest fraction of the face area hidden by a patch

    def __post_init__(self) -> None:
        positive = ["image_size", "loose_crop_size", "supersample", "train_identities",
                    "pair_images_per_identity", "pair_folds", "pairs_per_fold", "ijb_identities",
                    "resolution_min"]
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"synth.{name}: must be a positive integer, got {getattr(self, name)}")
        ranges = ["train_images_per_identity", "ijb_templates_per_identity",
                  "ijb_media_per_template", "ijb_frames_per_media", "jpeg_quality_range",
                  "loose_face_fraction"]
        for name in ranges:
            value = getattr(self, name)
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ConfigError(f"synth.{name}: expected [low, high] with 0 < low <= high, got {value}")
        if self.train_images_per_identity[0] < 2:
            raise ConfigError("synth.train_images_per_identity: low must be >= 2 (genuine pairs need two)")
        if self.ijb_templates_per_identity[0] < 2:
            raise ConfigError("synth.ijb_templates_per_identity: low must be >= 2 (genuine template pairs)")
        if self.pair_images_per_identity < 2:
            raise ConfigError("synth.pair_images_per_identity: must be >= 2 (genuine pairs need two)")
        if self.pair_identities < 2 * self.pair_folds:
            raise ConfigError(f"synth.pair_identities: need >= 2 per fold ({2 * self.pair_folds}), "
                              f"got {self.pair_identities}")
        for name in ("val_identities", "val_pairs_per_fold"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ConfigError(f"synth.{name}: must be a positive integer or null, got {value}")
        if self.validation_identities < 2 * self.pair_folds:
            raise ConfigError(f"synth.val_identities: need >= 2 per fold ({2 * self.pair_folds}), "
                              f"got {self.validation_identities}")
        if self.validation_pairs_per_fold % 2:
            raise ConfigError(f"synth.val_pairs_per_fold: must be even (half genuine), got {self.val_pairs_per_fold}")
        if self.pairs_per_fold % 2:
            raise ConfigError(f"synth.pairs_per_fold: must be even (half genuine), got {self.pairs_per_fold}")
        if self.ijb_identities < 2:
            raise ConfigError(f"synth.ijb_identities: need >= 2 for impostor pairs, got {self.ijb_identities}")
        if not 0.0 <= self.strong_degradation_fraction <= 1.0:
            raise ConfigError("synth.strong_degradation_fraction: must lie in [0, 1]")
        if not 0.0 <= self.occlusion_max < 1.0:
            raise ConfigError("synth.occlusion_max: must lie in [0, 1)")
        if self.resolution_min > self.image_size:
            raise ConfigError("synth.resolution_min: must be <= image_size")
        if self.jpeg_quality_range[1] > 100:
            raise ConfigError("synth.jpeg_quality_range: libjpeg quality is at most 100")
        if self.loose_face_fraction[1] > 1.0:
            raise ConfigError("synth.loose_face_fraction: the face must fit the canvas (<= 1)")
        for name in ("blur_sigma_max", "noise_std_max", "ijb_landmark_noise_px", "loose_rotation_deg"):
            if getattr(self, name) < 0:
                raise ConfigError(f"synth.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.identity_spread <= 1.0:
            raise ConfigError(f"synth.identity_spread: must lie in (0, 1], got {self.identity_spread}")
        if self.ijb_impostor_pairs < 0:
            raise ConfigError("synth.ijb_impostor_pairs: must be >= 0")

    @property
    def validation_identities(self) -> int:
        """``val_identities``, or half the pair identities (at least 2 per fold) when None."""
        if self.val_identities is not None:
            return int(self.val_identities)
        return max(2 * self.pair_folds, self.pair_identities // 2)

    @property
    def validation_pairs_per_fold(self) -> int:
        """``val_pairs_per_fold``, or the pair set's pairs per identity (even, >= 2) when None."""
        if self.val_pairs_per_fold is not None:
            return int(self.val_pairs_per_fold)
        share = self.pairs_per_fold * self.validation_identities / self.pair_identities
        return max(2, 2 * int(round(share / 2)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "SynthConfig":
        """Build from a ``synth:`` mapping; unknown keys and bad values raise ConfigError."""
        values = dict(values or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"synth.{unknown[0]}: unknown key; allowed keys: {', '.join(fields)}")
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            default = getattr(cls, name)
            if default is None:  # optional integer sizes (None = derived)
                if value is not None and (isinstance(value, (str, bytes, bool)) or not isinstance(value, int)):
                    raise ConfigError(f"synth.{name}: expected an integer or null, got {value!r}")
                kwargs[name] = value
                continue
            try:
                if isinstance(default, tuple):
                    if isinstance(value, (str, bytes)) or len(value) != 2:
                        raise ValueError(name)
                    kwargs[name] = tuple(_coerce(v, type(default[0])) for v in value)
                else:
                    kwargs[name] = _coerce(value, type(default))
            except (TypeError, ValueError):
                raise ConfigError(
                    f"synth.{name}: expected {type(default).__name__} like {default!r}, got {value!r}"
                ) from None
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (lists for ranges), as written to the manifest."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
