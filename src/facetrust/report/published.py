"""The papers' published numbers, as data, each with the place it was read from.

Values are percentages as the sources print them.  Keys follow our tables: ``accuracy`` (LFW
10-fold), ``accuracy_std``, ``TAR@FAR=1e-05`` / ``TAR@FAR=1e-04`` (IJB 1:1).  Sources (read for this
project; see also docs REFERENCES):

* SphereFace README (github wy1iu/sphereface, "Results"): SphereFace-20 trained on CASIA-WebFace,
  LFW fold accuracies of the released model (model #3) and the accuracies of five runs.
* SCF README (the official release of Li et al., "Spherical Confidence Learning for Face
  Recognition", CVPR 2021, "Empirical Results"): ResNet100, IJB-B and IJB-C TAR at FAR 1e-5, 1e-4.
  The README trains with ``--dataset ms1m``; it does not say which MS1M version.
* InsightFace ``recognition/arcface_torch/README.md`` ("Performance on IJB-C"): IJB-C TAR at
  FAR 1e-4 and 1e-5 by training set and backbone, evaluated with ``eval_ijbc.py`` (N1 D1 F1).
* ScaleFace (Kail et al., arXiv:2209.01880, and its README): the reject-verification setting
  (curves are published as figures, not as a table we can cite number by number).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from facetrust.formats import tar_column


@dataclass(frozen=True)
class PublishedRow:
    """One published result: where it comes from, on what data, and its numbers (percent)."""

    paper: str
    source: str  # short name of the document the numbers were read from
    test_set: str
    train_set: str
    backbone: str
    method: str
    values: Mapping[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def label(self) -> str:
        """``published (<source>, <test set>, <train set> <backbone>)`` for a table's source column."""
        return f"published ({self.source}, {self.test_set}, {self.train_set} {self.backbone})"


SPHEREFACE_SOURCE = "SphereFace README"
SCF_SOURCE = "SCF README"
INSIGHTFACE_SOURCE = "InsightFace arcface_torch README"
SCALEFACE_SOURCE = "ScaleFace paper/README"

# SphereFace README: "accuracy on LFW like this: fold 1 … 10, AVE" for the released model.
SPHEREFACE20_RELEASED_FOLDS = (99.33, 99.17, 98.83, 99.50, 99.17, 99.83, 99.17, 98.83, 99.83, 99.33)
SPHEREFACE20_RELEASED_ACCURACY = 99.30
# SphereFace README: "we go through the entire pipeline for 5 times": #1 … #5, #3 released.
SPHEREFACE20_RUNS = (99.24, 99.20, 99.30, 99.27, 99.13)


def sphereface_rows() -> list[PublishedRow]:
    """SphereFace-20 (A-Softmax, m = 4) on CASIA-WebFace, LFW 10-fold: released model, mean of 5 runs."""
    fold_std = float(np.std(SPHEREFACE20_RELEASED_FOLDS))  # population std, as our accuracy_std
    runs = ", ".join(f"{v:.2f}" for v in SPHEREFACE20_RUNS)
    return [
        PublishedRow("SphereFace", SPHEREFACE_SOURCE, "LFW", "CASIA-WebFace", "SphereFace-20", "A-Softmax",
                     {"accuracy": SPHEREFACE20_RELEASED_ACCURACY, "accuracy_std": round(fold_std, 2)},
                     "released model (#3); std over its 10 published fold accuracies"),
        PublishedRow("SphereFace", SPHEREFACE_SOURCE, "LFW", "CASIA-WebFace", "SphereFace-20", "A-Softmax",
                     {"accuracy": round(float(np.mean(SPHEREFACE20_RUNS)), 2),
                      "accuracy_std": round(float(np.std(SPHEREFACE20_RUNS)), 2)},
                     f"mean ± std of five runs ({runs}; range {min(SPHEREFACE20_RUNS):.2f}–{max(SPHEREFACE20_RUNS):.2f})"),
    ]


# SCF README, "Empirical Results" (ResNet100): (IJB-B 1e-5, 1e-4, IJB-C 1e-5, 1e-4).
_SCF_README = {
    "CosFace": (89.81, 94.59, 93.86, 95.95),
    "CosFace + PFE-G": (89.96, 94.64, 94.09, 96.04),
    "CosFace + SCF-G": (89.97, 94.56, 94.15, 96.02),
    "CosFace + SCF": (91.02, 94.95, 94.78, 96.22),
    "ArcFace": (89.33, 94.20, 93.15, 95.60),
    "ArcFace + PFE-G": (89.55, 94.30, 92.95, 95.32),
    "ArcFace + SCF-G": (89.52, 94.24, 93.85, 95.33),
    "ArcFace + SCF": (90.68, 94.74, 94.04, 96.09),
}


def scf_rows(test_set: str | None = None) -> list[PublishedRow]:
    """SCF README rows (IJB-B and IJB-C, or only ``test_set``), TAR in percent at FAR 1e-5 and 1e-4."""
    rows = []
    for position, name in ((0, "IJB-B"), (2, "IJB-C")):
        if test_set is not None and name != test_set:
            continue
        for method, values in _SCF_README.items():
            rows.append(PublishedRow("SCF", SCF_SOURCE, name, "MS1M", "ResNet100", method,
                                     {tar_column(1e-5): values[position], tar_column(1e-4): values[position + 1]},
                                     "README trains with --dataset ms1m"))
    return rows


# InsightFace arcface_torch README, "Training on Single-Host GPU": IJB-C(1E-4), IJB-C(1E-5).
_ARCFACE_TORCH = (
    ("MS1MV2", "r50", 95.97, 94.07),
    ("MS1MV2", "r100", 96.37, 94.27),
    ("MS1MV3", "r50", 96.37, 94.47),
    ("MS1MV3", "r100", 96.85, 95.02),
    ("Glint360K", "r100", 97.55, 96.38),
)


def insightface_rows() -> list[PublishedRow]:
    """ArcFace (arcface_torch) IJB-C rows, TAR in percent at FAR 1e-5 and 1e-4 (N1 D1 F1)."""
    return [PublishedRow("ArcFace", INSIGHTFACE_SOURCE, "IJB-C", train_set, backbone, "ArcFace",
                         {tar_column(1e-5): tar_5, tar_column(1e-4): tar_4}, "eval_ijbc.py defaults N1 D1 F1")
            for train_set, backbone, tar_4, tar_5 in _ARCFACE_TORCH]


# ScaleFace: the reject-verification protocol the paper and README use (README: MS1M-V2 training data, iResNet-50).
SCALEFACE_SETTING = {
    "test set": "IJB-C (aligned), image pairs and template pairs",
    "backbone": "iResNet-50 (InsightFace, MS1MV2) frozen; scale head 25088 → 512 → 1, s = s_max·sigmoid(·)",
    "rejected fraction": "0 to 0.5, step 0.002, most uncertain pairs first",
    "FAR": "1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2",
    "pair confidence": "mean, harmonic mean or product of the two predicted scales",
    "published result": "TAR@FAR rises as uncertain pairs are rejected (figures in the paper and README)",
}
