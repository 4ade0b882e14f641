"""The inversion stage (rule ``invert``): class representations of a trained model, checked by a
second, independently trained model, with the ablations (DeepInversion's protocol).

For each variant — ``full`` (class term + BN statistics term + regularisers), ``no_bn`` and
``no_class`` — :func:`facetrust.explain.inversion.invert` synthesises ``images_per_class`` images of
each chosen class from the same N(0, 1) start (same seed), and the verifier scores every image
(:func:`facetrust.explain.inversion.verifier_scores`) against real training images of the chosen
classes.  Summaries: the mean of each score with a percentile bootstrap interval over images, the
paired difference ``full`` minus each ablation (images matched by class and start), the chance level
1/num_classes, and the inverted model's own target probability at the start and at the end.

Writes a JSON summary and an ``.npz`` of the images (per variant) and each class's clean synthetic
rendering (docs/FORMATS.md "Explanation results").
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from facetrust.errors import InputError
from facetrust.explain.faithfulness import bootstrap_ci
from facetrust.explain.inversion import InversionConfig, class_probabilities, invert, verifier_scores
from facetrust.io import atomic_path, write_json_atomic

VARIANTS = ("full", "no_bn", "no_class")


def real_class_images(rec_dir: str | os.PathLike, classes: Sequence[int], per_class: int, size) -> dict[int, torch.Tensor]:
    """The first ``per_class`` training images of each class, at ``size`` (as training reads them)."""
    from facetrust.data.insightface import InsightFaceRecord
    from facetrust.data.transforms import fit_to_size, to_tensor

    record = InsightFaceRecord(rec_dir)
    labels = np.asarray(record.labels)
    out = {}
    for label in classes:
        members = np.flatnonzero(labels == int(label))[:per_class]
        if members.size == 0:
            raise InputError(f"{rec_dir}: class {label} has no image")
        out[int(label)] = torch.stack([to_tensor(fit_to_size(record.decode(int(i))[0], size)) for i in members])
    return out


def _resized(images: torch.Tensor, size) -> torch.Tensor:
    if tuple(images.shape[2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def _summary(scores: Mapping[str, np.ndarray], seed: int, n_boot: int) -> dict:
    every = [np.arange(next(iter(scores.values())).size)]
    return {name: list(bootstrap_ci(lambda i, v=values: float(v[i].mean()), every, seed=seed, n_boot=n_boot))
            for name, values in scores.items()}


def _paired(full: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray], seed: int, n_boot: int) -> dict:
    every = [np.arange(next(iter(full.values())).size)]
    return {name: list(bootstrap_ci(lambda i, a=full[name], b=other[name]: float((a[i] - b[i]).mean()), every,
                                    seed=seed, n_boot=n_boot)) for name in full}


def run_inversion(model: tuple, verifier: tuple, real_images: Mapping[int, torch.Tensor], classes: Sequence[int],
                  config: InversionConfig, *, ablation: bool = True, n_boot: int = 1000) -> tuple[dict, dict]:
    """``(summary, images)``: ``model`` and ``verifier`` are ``(backbone, margin head, input_size)``."""
    backbone, head, size = model
    verifier_backbone, verifier_head, verifier_size = verifier
    if int(head.weight.shape[0]) != int(verifier_head.weight.shape[0]):
        raise InputError(f"inversion: the verifier has {verifier_head.weight.shape[0]} classes, the model "
                         f"{head.weight.shape[0]}; both must be trained on the same set")
    real = {c: _resized(images, verifier_size) for c, images in real_images.items()}
    summary = {"classes": [int(c) for c in classes], "chance": 1.0 / int(head.weight.shape[0]),
               "config": dataclasses.asdict(config), "variants": {}}
    images, scores = {}, {}
    for name in VARIANTS if ablation else VARIANTS[:1]:
        variant = config if name == "full" else config.ablated(name.removeprefix("no_"))
        run = invert(backbone, head, classes, size, variant)
        scores[name] = verifier_scores(verifier_backbone, verifier_head, _resized(run["images"], verifier_size),
                                       run["labels"], real)
        own = class_probabilities(backbone, head, torch.cat([run["start"], run["images"]]))
        own_target = own.gather(1, torch.cat([run["labels"]] * 2).view(-1, 1))[:, 0].double().numpy()
        half = run["labels"].numel()
        summary["variants"][name] = {
            "checks": _summary(scores[name], config.seed, n_boot),
            "per_image": {k: v.tolist() for k, v in scores[name].items()},
            "model_target_probability": {"start": float(own_target[:half].mean()), "end": float(own_target[half:].mean())},
            "final_loss": {k: v for k, v in run["log"][-1].items() if k != "iteration"},
        }
        images[name] = run["images"].numpy().astype(np.float32)
        images["labels"] = run["labels"].numpy()
    summary["differences"] = {f"full_minus_{name}": _paired(scores["full"], scores[name], config.seed, n_boot)
                              for name in scores if name != "full"}
    return summary, images


def write_inversion(summary: dict, images: dict, clean: Mapping[int, np.ndarray], out_json, out_npz) -> None:
    """The stage's two files (module docstring); ``clean`` = {class: H x W x 3 uint8 rendering}."""
    write_json_atomic(out_json, summary)
    arrays = {f"images_{k}": v for k, v in images.items() if k != "labels"}
    arrays["labels"] = images["labels"]
    arrays["classes"] = np.array(summary["classes"])
    if clean:
        arrays["clean"] = np.stack([clean[c] for c in summary["classes"]])
    with atomic_path(Path(out_npz), suffix=".npz") as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)
