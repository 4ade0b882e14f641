"""Figures of model inversion: inverted images of each class beside its clean rendering, one
row per class (and per variant), drawn as :mod:`facetrust.report.explain_figures` draws."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from facetrust.errors import InputError
from facetrust.report.explain_figures import figure_grid, save_figure, to_uint8


def plot_inversion_grid(images: Mapping[int, Sequence], clean: Mapping[int, np.ndarray], out_path: str | Path, *,
                        captions: Mapping[int, str] | None = None) -> Path:
    """One row per class: its clean rendering, then its inverted images (``images[class]``)."""
    if not images:
        raise InputError("inversion figure: no classes to draw")
    columns = 1 + max(len(v) for v in images.values())
    with figure_grid(len(images), columns, panel=1.6) as (figure, axes):
        for row, (label, inverted) in zip(axes, images.items()):
            panels = [(to_uint8(clean[label]), f"class {label}: clean")] if label in clean else [(None, "")]
            panels += [(to_uint8(image), (captions or {}).get(label, "inverted") if k == 0 else "")
                       for k, image in enumerate(inverted)]
            for ax, (picture, title) in zip(row, panels + [(None, "")] * (columns - len(panels))):
                if picture is not None:
                    ax.imshow(picture, interpolation="nearest")
                ax.set_title(title, fontsize=8)
                ax.axis("off")
        return save_figure(figure, out_path)

def plot_inversion_variants(clean: Mapping[int, np.ndarray], variants: Mapping[str, Mapping[int, Sequence]],
                            out_path: str | Path) -> Path:
    """One row per class: its clean rendering, then the images of each variant (``variants[name]
    [class]``: full, no BN term, no class term), titled once per block."""
    if not variants:
        raise InputError("inversion figure: no variants to draw")
    classes = list(next(iter(variants.values())))
    per_variant = max(len(images) for v in variants.values() for images in v.values())
    columns = 1 + per_variant * len(variants)
    with figure_grid(len(classes), columns, panel=1.3) as (figure, axes):
        for row, label in zip(axes, classes):
            panels = [(to_uint8(clean[label]), f"class {label}: clean")] if label in clean else \
                [(None, f"class {label}")]
            for name, images in variants.items():
                chosen = list(images[label])
                panels += [(to_uint8(img), name if k == 0 else "") for k, img in enumerate(chosen)]
                panels += [(None, "")] * (per_variant - len(chosen))
            for ax, (picture, title) in zip(row, panels):
                if picture is not None:
                    ax.imshow(picture, interpolation="nearest")
                ax.set_title(title, fontsize=7)
                ax.axis("off")
        return save_figure(figure, out_path)
