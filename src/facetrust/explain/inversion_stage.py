"""The inversion stage (rule ``invert``): class representations of a trained model, checked by
independent verifiers and against the benchmark's known truth, with the ablations.

For each variant — ``full`` (class term + BN statistics term + priors), ``no_bn`` and ``no_class`` —
:func:`facetrust.explain.inversion.invert` synthesises ``images_per_class`` images of each chosen
class from the same N(0, 1) start (same seed).  Every image is then scored

* by each **verifier** (:func:`facetrust.explain.inversion.verifier_scores`): the first is the
  independent one (another architecture, seed and data order), the others (e.g. the inverted
  model's twin: same architecture and seed, another margin) are labelled secondary rows;
* against the **clean rendering** of each class (its identity drawn frontal, neutral, evenly lit,
  undegraded: :func:`facetrust.data.synthetic.images.render_clean`), the truth only a synthetic
  benchmark has: model-independently by the Pearson correlation of the blurred images (own class
  minus the mean over the other chosen classes) and in the independent verifier's embedding (cosine
  to the own rendering minus the other renderings).

Intervals are percentile bootstraps over **classes** (images of one class share a target, so the
class is the independent unit; the images of a resampled class come along), paired between
variants (same class, same start).  The JSON also keeps the end BN loss (the BN term of the
finished, un-jittered batch), the per-term gradient norms at a few iterations and the loss parts.
:func:`select_settings` chooses the TV weight and the step count on **validation classes** (never
the reported ones) by the clean-rendering correlation margin, never by a verifier's top-1.

Writes a JSON summary and an ``.npz`` of the images (per variant) and each class's clean rendering
(docs/FORMATS.md "Explanation results").
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from facetrust.evaluate.bootstrap import class_bootstrap
from facetrust.errors import InputError
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


def to_model_input(images: torch.Tensor, size) -> torch.Tensor:
    """Inverted images (B, 3, H, W) at another model's ``size`` the way
    :func:`~facetrust.data.transforms.fit_to_size` maps a stored crop: centre-crop to the target's
    aspect ratio (an ArcFace 112x112 crop gives the SphereFace 112x96 one by dropping columns), then an
    antialiased bilinear resize."""
    target_h, target_w = (int(v) for v in size)
    height, width = images.shape[2:]
    if height * target_w > width * target_h:
        crop = round(width * target_h / target_w)
        top = (height - crop) // 2
        images = images[:, :, top:top + crop]
    elif height * target_w < width * target_h:
        crop = round(height * target_w / target_h)
        left = (width - crop) // 2
        images = images[:, :, :, left:left + crop]
    if tuple(images.shape[2:]) == (target_h, target_w):
        return images
    return F.interpolate(images, size=(target_h, target_w), mode="bilinear", align_corners=False, antialias=True)


def clean_tensors(clean: Mapping[int, np.ndarray], classes: Sequence[int], size) -> torch.Tensor:
    """(C, 3, H, W) normalised clean renderings of ``classes`` at ``size`` (as training reads images)."""
    from facetrust.data.transforms import fit_to_size, to_tensor

    return torch.stack([to_tensor(fit_to_size(np.ascontiguousarray(clean[int(c)]), size)) for c in classes])


def blurred_correlation(images: torch.Tensor, references: torch.Tensor, sigma: float) -> np.ndarray:
    """(B, R) Pearson correlation of every image with every reference, both blurred by a Gaussian of
    ``sigma`` px per channel first (fine texture, which an inversion need not reproduce, is left out);
    model-independent.  Same (H, W) required."""
    from scipy.ndimage import gaussian_filter

    def flat(batch):
        array = batch.detach().double().numpy()
        blurred = gaussian_filter(array, sigma=(0, 0, sigma, sigma), mode="nearest")
        centred = blurred.reshape(blurred.shape[0], -1)
        centred = centred - centred.mean(1, keepdims=True)
        return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)

    return flat(images) @ flat(references).T


def own_minus_other(matrix: np.ndarray, own_column: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of a (B, C) similarity matrix: the own column, the mean of the others, and their difference."""
    rows = np.arange(matrix.shape[0])
    own = matrix[rows, own_column]
    other = (matrix.sum(1) - own) / max(matrix.shape[1] - 1, 1)
    return {"own": own, "other": other, "margin": own - other}


def clean_scores(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[int], clean: torch.Tensor,
                 verifier: tuple | None) -> dict[str, np.ndarray]:
    """Per-image comparisons with the clean renderings ``clean`` (C, 3, H, W) at the inverted size:
    ``correlation_own/other/margin`` (blurred, model-independent) and, with ``verifier`` = (backbone,
    head, size), ``cosine_own/other/margin`` in its embedding."""
    own_column = np.array([list(classes).index(int(c)) for c in labels.tolist()])
    sigma = images.shape[-1] / 32.0  # 1 px at the embedded 32 px
    out = {f"correlation_{k}": v for k, v in own_minus_other(blurred_correlation(images, clean, sigma), own_column).items()}
    if verifier is not None:
        backbone, _, size = verifier
        backbone.eval()
        with torch.no_grad():
            a = F.normalize(backbone(to_model_input(images, size)), dim=1)
            b = F.normalize(backbone(to_model_input(clean, size)), dim=1)
        out.update({f"cosine_{k}": v for k, v in own_minus_other((a @ b.T).double().numpy(), own_column).items()})
    return out


#: The continuous measures judged with paired intervals (name in the JSON: where it comes from).
CONTINUOUS = ("verifier_target_probability", "verifier_margin", "clean_correlation_margin", "clean_cosine_margin")


def _measures(verifier_scores_: Mapping[str, np.ndarray], clean: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {"verifier_target_probability": verifier_scores_["target_probability"],
           "verifier_margin": verifier_scores_["cosine_own"] - verifier_scores_["cosine_other"],
           "clean_correlation_margin": clean["correlation_margin"]}
    if "cosine_margin" in clean:
        out["clean_cosine_margin"] = clean["cosine_margin"]
    return out


def run_inversion(model: tuple, verifiers: Mapping[str, tuple], real_images: Mapping[str, Mapping[int, torch.Tensor]],
                  classes: Sequence[int], config: InversionConfig, *, clean: Mapping[int, np.ndarray] | None = None,
                  ablation: bool = True, n_boot: int = 1000) -> tuple[dict, dict]:
    """``(summary, images)``.  ``model`` and each of ``verifiers`` ({name: …}, the first the
    independent one) are ``(backbone, margin head, input_size)``; ``real_images`` {verifier name:
    {class: images at its size}}; ``clean`` {class: H x W x 3 uint8 rendering} (none: no known-truth
    rows)."""
    backbone, head, size = model
    for name, (_, verifier_head, _) in verifiers.items():
        if int(head.weight.shape[0]) != int(verifier_head.weight.shape[0]):
            raise InputError(f"inversion: verifier {name} has {verifier_head.weight.shape[0]} classes, the model "
                             f"{head.weight.shape[0]}; both must be trained on the same set")
    primary = next(iter(verifiers))
    clean_batch = clean_tensors(clean, classes, size) if clean else None
    summary = {"classes": [int(c) for c in classes], "chance": 1.0 / int(head.weight.shape[0]),
               "config": dataclasses.asdict(config), "verifiers": list(verifiers), "primary_verifier": primary,
               "interval": f"95% percentile bootstrap over the {len(classes)} classes ({n_boot} resamples)",
               "variants": {}}
    images, measures = {}, {}
    for name in VARIANTS if ablation else VARIANTS[:1]:
        variant = config if name == "full" else config.ablated(name.removeprefix("no_"))
        run = invert(backbone, head, classes, size, variant)
        labels = run["labels"].numpy()
        entry = {"verifiers": {}}
        for verifier_name, (v_backbone, v_head, v_size) in verifiers.items():
            scores = verifier_scores(v_backbone, v_head, to_model_input(run["images"], v_size), run["labels"],
                                     real_images[verifier_name])
            scores["margin"] = scores["cosine_own"] - scores["cosine_other"]
            entry["verifiers"][verifier_name] = {
                "checks": {k: class_bootstrap(v, labels, seed=config.seed, n_boot=n_boot) for k, v in scores.items()},
                "per_image": {k: v.tolist() for k, v in scores.items()}}
            if verifier_name == primary:
                primary_scores = scores
        clean_result = clean_scores(run["images"], run["labels"], classes, clean_batch, verifiers[primary]) \
            if clean_batch is not None else {}
        if clean_result:
            entry["clean"] = {"checks": {k: class_bootstrap(v, labels, seed=config.seed, n_boot=n_boot)
                                         for k, v in clean_result.items()},
                              "per_image": {k: v.tolist() for k, v in clean_result.items()}}
        measures[name] = _measures(primary_scores, clean_result) if clean_result else \
            _measures(primary_scores, {"correlation_margin": np.full(labels.size, np.nan)})
        own = class_probabilities(backbone, head, torch.cat([run["start"], run["images"]]))
        own_target = own.gather(1, torch.cat([run["labels"]] * 2).view(-1, 1))[:, 0].double().numpy()
        half = run["labels"].numel()
        entry.update({
            "model_target_probability": {"start": float(own_target[:half].mean()), "end": float(own_target[half:].mean())},
            "final_loss": {k: v for k, v in run["log"][-1].items() if k != "iteration" and not k.startswith("grad_norm")},
            "end_bn_loss": run["end_bn_loss"],
            "gradient_norms": [{k: v for k, v in row.items() if k == "iteration" or k.startswith("grad_norm")}
                               for row in run["log"] if "grad_norm_class" in row],
        })
        summary["variants"][name] = entry
        images[name] = run["images"].numpy().astype(np.float32)
        images["labels"] = labels
    labels = images["labels"]
    summary["differences"] = {
        f"full_minus_{name}": {k: class_bootstrap(measures["full"][k] - measures[name][k], labels, seed=config.seed,
                                                  n_boot=n_boot)
                               for k in measures["full"] if k in measures[name]}
        for name in measures if name != "full"}
    return summary, images


def select_settings(model: tuple, classes: Sequence[int], clean: Mapping[int, np.ndarray], config: InversionConfig,
                    grid: Mapping[str, Sequence]) -> dict:
    """Try every combination of ``grid`` ({"tv_l2_weight": [...], "iterations": [...]}) on the
    validation ``classes`` and choose the one with the largest mean clean-rendering correlation
    margin (blurred, model-independent); no verifier is consulted.  Returns the record written to
    the selection file: every candidate's figures and ``chosen``."""
    import itertools

    backbone, head, size = model
    clean_batch = clean_tensors(clean, classes, size)
    keys = list(grid)
    record = {"classes": [int(c) for c in classes], "images_per_class": config.images_per_class,
              "criterion": "mean over images of the blurred correlation with the own clean rendering minus the "
                           "other validation classes' (highest wins)", "candidates": []}
    for values in itertools.product(*(grid[k] for k in keys)):
        settings = dict(zip(keys, values))
        run = invert(backbone, head, classes, size, dataclasses.replace(config, **settings), progress=False)
        result = clean_scores(run["images"], run["labels"], classes, clean_batch, None)
        record["candidates"].append({"values": settings, "correlation_margin": float(result["correlation_margin"].mean()),
                                     "end_bn_loss": run["end_bn_loss"]})
    best = max(record["candidates"], key=lambda c: c["correlation_margin"])
    record["chosen"] = best["values"]
    return record


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
