"""The sanity stage (``facetrust explain sanity``): Adebayo et al.'s cascading model-parameter
randomisation for every map method (:mod:`facetrust.explain.sanity`) on ``pairs`` test pairs (half
genuine, seeded), and the seed-to-seed agreement of every stochastic map on the same pairs.

Maps compared: each method's ``support`` map (the attention itself for the unsigned attention).
Thresholds (τ of the xCos maps, xSSAB's EER threshold) come from the validation split's thresholds
file; the randomised networks' BatchNorm statistics are recalibrated on validation images.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facetrust.errors import InputError
from facetrust.explain.faithfulness_stage import map_settings, read_thresholds, sample_pairs
from facetrust.explain.method_maps import (
    METHODS,
    RANDOM_ORDERS,
    STOCHASTIC,
    MapSettings,
    all_methods,
    pixel_methods,
)
from facetrust.data.pairset import PairSet
from facetrust.explain.sanity import CASCADE, passes, randomised_copy, similarity_summary
from facetrust.models.xcos import load_xcos
from facetrust.io import atomic_path, write_json_atomic

CHECKED = tuple(m for m in METHODS if m not in RANDOM_ORDERS)
SEED_OFFSET = 100_003  # the second seed of the agreement check: masks no pair of the first seed uses


@dataclass
class SanitySettings:
    """Defaults = the schema's ``explain.sanity`` section."""

    pairs: int = 8
    max_similarity: float = 0.5
    bootstrap: int = 1000
    calibration_images: int = 256
    maps: MapSettings = field(default_factory=MapSettings)

    @classmethod
    def from_section(cls, section: dict, seed: int) -> "SanitySettings":
        sanity = section.get("sanity") or {}
        keys = ("pairs", "max_similarity", "calibration_images")
        return cls(**{k: sanity[k] for k in keys if k in sanity}, bootstrap=int(section.get("bootstrap", 1000)),
                   maps=map_settings(section, seed))


def _embedding_spread(model, images: torch.Tensor) -> dict[str, float]:
    """Mean and SD of the cosine between different images: a degenerate network has all near 1."""
    with torch.no_grad():
        unit = F.normalize(model.embedding(images), dim=1)
    cosine = (unit @ unit.T).double().numpy()[np.triu_indices(images.shape[0], 1)]
    return {"mean": float(cosine.mean()), "sd": float(cosine.std())}


def run_sanity(model_dir: str | os.PathLike, pair_set: str | os.PathLike, validation_set: str | os.PathLike,
               thresholds_json: str | os.PathLike, out_json: str | os.PathLike, examples_npz: str | os.PathLike,
               settings: SanitySettings = SanitySettings()) -> dict:
    """The stage (module docstring); returns the JSON it writes."""
    model, config, _ = load_xcos(model_dir)
    size = tuple(config["input_size"])
    pairs, validation = PairSet(pair_set), PairSet(validation_set)
    if validation.name == pairs.name:
        raise InputError(f"{validation_set}: the validation set is the test set")
    thresholds, map_thresholds = read_thresholds(thresholds_json, pairs)
    calibration = validation.faces(range(min(settings.calibration_images, 2 * len(validation))), size)
    rng = np.random.default_rng([settings.maps.seed, 17])
    chosen = sample_pairs(pairs.issame, settings.pairs, rng)
    images1, images2 = pairs.faces(2 * chosen, size), pairs.faces(2 * chosen + 1, size)
    levels = [("trained", model)] + [(label, randomised_copy(model, k + 1, calibration, settings.maps.seed))
                                     for k, (label, _) in enumerate(CASCADE)]
    maps, spread = {}, {}
    for label, network in levels:
        found = all_methods(network, images1, images2, map_thresholds, settings.maps, rng, progress=False)
        maps[label] = {m: found[m].support for m in CHECKED}
        spread[label] = _embedding_spread(network, calibration[:64])
    cascade = {m: {} for m in CHECKED}
    for label, _ in levels[1:]:
        for method in CHECKED:
            cascade[method][label] = similarity_summary(maps["trained"][method], maps[label][method], size,
                                                        seed=settings.maps.seed, n_boot=settings.bootstrap)
    final = levels[-1][0]
    verdicts = {m: bool(passes(cascade[m][final], settings.max_similarity)) for m in CHECKED}
    agreement = {}
    for method in STOCHASTIC:
        again = pixel_methods(model, images1, images2, settings.maps, rng, cosine_threshold=map_thresholds.cosine_eer,
                              progress=False, seed_offset=SEED_OFFSET, only=(method,))[method].support
        agreement[method] = similarity_summary(maps["trained"][method], again, size, seed=settings.maps.seed,
                                               n_boot=settings.bootstrap)
        agreement[method]["masks"] = settings.maps.masks
    result = {"model": str(model_dir), "test_set": pairs.name, "threshold_split": thresholds["split"],
              "calibration_split": validation.name, "settings": asdict(settings),
              "pairs": {"genuine": int(pairs.issame[chosen].sum()), "impostor": int((~pairs.issame[chosen]).sum())},
              "levels": [label for label, _ in levels],
              "cascade_modules": {label: list(names) for label, names in CASCADE},
              "embedding_spread": spread, "cascade": cascade, "passes": verdicts, "seed_agreement": agreement}
    write_json_atomic(out_json, result)
    arrays = {"levels": np.array(result["levels"]), "methods": np.array(CHECKED),
              "image1": images1[0].numpy(), "image2": images2[0].numpy()}
    arrays.update({f"{m}|{label}": maps[label][m][0] for label, _ in levels for m in CHECKED})
    with atomic_path(Path(examples_npz), suffix=".npz") as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)
    return result
