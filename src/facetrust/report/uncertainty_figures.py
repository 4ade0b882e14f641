"""Uncertainty histograms: pairs by label, images by known quality (drawn as
:mod:`facetrust.report.figures` draws, byte-identical for the same inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facetrust.errors import InputError
from facetrust.report.figures import new_figure, save_figure

QUALITY_BIN_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0)


def pair_uncertainty_and_labels(embeddings_npz: str | Path, protocol: str | Path | None = None,
                                name: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(images, image_uncertainty, pair_uncertainty, genuine)`` of a pair set or an IJB protocol.

    Pair uncertainty is the mean of its two members' (images for a pair set, templates for IJB; a
    template's uncertainty is the mean of its images', ``evaluate.reject.template_uncertainty``).
    """
    from facetrust.evaluate.reject import pair_uncertainty, template_uncertainty
    from facetrust.report.quality import load_uncertainty

    images, uncertainty, _ = load_uncertainty(embeddings_npz)
    if protocol is None:
        from facetrust.npz import npz_keys, read_npz

        if "issame" not in npz_keys(embeddings_npz):
            raise InputError(f"{embeddings_npz}: missing key 'issame' (a pair set, or pass the IJB protocol)")
        issame = read_npz(embeddings_npz, ["issame"], what="embeddings .npz")["issame"]
        if issame.ndim != 1 or issame.dtype.kind not in "biu":
            raise InputError(f"{embeddings_npz}: key 'issame' must be one 0/1 label per pair, got {issame.dtype} "
                             f"{issame.shape}")
        genuine = issame.astype(bool)
        if images.size != 2 * genuine.size:
            raise InputError(f"{embeddings_npz}: {images.size} images for {genuine.size} pairs (need 2 per pair)")
        return images, uncertainty, pair_uncertainty(uncertainty[0::2], uncertainty[1::2], "mean"), genuine

    import pandas as pd

    from facetrust.data.ijb import read_ijb_protocol
    from facetrust.evaluate.ijb import align_images

    ijb = read_ijb_protocol(protocol, name, check_landmarks=False)
    rows = align_images(images, ijb.images, embeddings_npz)
    template_ids, template_u = template_uncertainty(uncertainty[rows], ijb.template_ids, "mean")
    index = pd.Index(template_ids)
    u1 = template_u[index.get_indexer(ijb.pairs[:, 0])]
    u2 = template_u[index.get_indexer(ijb.pairs[:, 1])]
    return images, uncertainty, pair_uncertainty(u1, u2, "mean"), ijb.labels.astype(bool)


def _display_scale(values: np.ndarray) -> tuple[np.ndarray, str]:
    """Uncertainties spanning more than two decades are shown as log10 (1/κ, 1/s are heavy-tailed)."""
    if (values > 0).all() and values.max() / values.min() > 100.0:
        return np.log10(values), "log10 uncertainty"
    return values, "uncertainty"


def plot_uncertainty_histograms(embeddings_npz: str | Path, quality_csv: str | Path | None, protocol: str | Path | None,
                                out_png: str | Path, *, name: str | None = None, title: str | None = None,
                                bins: int = 30) -> Path:
    """Uncertainty histograms: pairs split genuine/impostor (left); images split by quality bin (right).

    ``protocol`` None reads a pair set (``issame`` in the embeddings file); an IJB directory (with
    protocol ``name``) pairs templates.  Quality bins are the known quality of quality.csv in
    [0, .25), [.25, .5), [.5, .75), [.75, 1]; the right panel is left out without ``quality_csv``.
    Histograms are densities over shared bin edges, so the groups compare despite their sizes.
    """
    images, uncertainty, pair_u, genuine = pair_uncertainty_and_labels(embeddings_npz, protocol, name)
    n_panels = 2 if quality_csv is not None else 1
    with new_figure(n_panels, panel_size=(5.0, 3.8)) as (figure, panels):
        shown, xlabel = _display_scale(np.concatenate([pair_u, uncertainty]))
        shown_pairs, shown_images = shown[: pair_u.size], shown[pair_u.size:]
        edges = np.histogram_bin_edges(shown, bins=bins)
        axes = panels[0]
        for mask, label in ((genuine, "genuine"), (~genuine, "impostor")):
            if mask.any():
                axes.hist(shown_pairs[mask], bins=edges, density=True, histtype="step", linewidth=1.3,
                          label=f"{label} pairs (n={int(mask.sum())})")
        axes.set_xlabel(f"pair {xlabel} (mean of the two)")
        axes.set_ylabel("density")
        axes.set_title("by pair label")
        axes.legend(loc="best", fontsize="small")
        if quality_csv is not None:
            from facetrust.report.quality import quality_rows, read_quality

            quality = quality_rows(images, read_quality(quality_csv), source=str(embeddings_npz))["quality"].to_numpy()
            axes = panels[1]
            level = np.clip(np.digitize(quality, QUALITY_BIN_EDGES[1:-1]), 0, len(QUALITY_BIN_EDGES) - 2)
            for k in range(len(QUALITY_BIN_EDGES) - 1):
                mask = level == k
                if mask.any():
                    axes.hist(shown_images[mask], bins=edges, density=True, histtype="step", linewidth=1.3,
                              label=f"quality {QUALITY_BIN_EDGES[k]:.2f}–{QUALITY_BIN_EDGES[k + 1]:.2f} "
                                    f"(n={int(mask.sum())})")
            axes.set_xlabel(f"image {xlabel}")
            axes.set_ylabel("density")
            axes.set_title("by known quality")
            axes.legend(loc="best", fontsize="small")
        source = Path(embeddings_npz)
        figure.suptitle(title or f"Uncertainty: {source.parent.name + '/' if source.parent.name else ''}{source.stem}")
        return save_figure(figure, out_png)


# --------------------------------------------------------------------------- verification accuracy
