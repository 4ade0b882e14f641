"""The ``embed`` stage: batched extraction with flip fusion, to the embeddings ``.npz`` (docs/FORMATS.md).

Arrays written:
  image               str (N): ``<set>/<index>`` for .bin sets, the protocol's image name for IJB
  embedding           float32 (N, D), not normalised; original + mirrored (InsightFace F1) when
                      flip is on, else the original alone
  embedding_noflip  float32 (N, D), the original image alone (F0 at evaluation time)
  detector_score      float32 (N) for aligned IJB sets
  issame              bool (N/2) for .bin pair sets (pairs are images 2k, 2k+1)
  uncertainty, uncertainty_kind  when a head (or the model's own estimate) provides one
  uncertainty_per_dim float32 (N, D): PFE's per-dimension σ² (the head's own output; ``uncertainty``
                      then holds its harmonic mean over dimensions, the scalar for ranking pairs)
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from facetrust.errors import InputError
from facetrust.io import write_npz

log = logging.getLogger(__name__)

# Pixels the images of one test set may declare in all (``embed --max-decoded-pixels``): 2^33, 57x an
# aligned IJB-C (469,375 images of 112x112), 560x LFW's .bin; each image is decoded on its own.
MAX_DECODED_PIXELS = 1 << 33


class _TestSet:
    """Names, optional per-image/pair arrays and a decoder for a .bin set or an aligned directory."""

    def __init__(self, path: Path):
        self.extra: dict[str, np.ndarray] = {}
        if path.suffix == ".bin":
            from facetrust.data.binset import load_bin

            self._payloads, issame = load_bin(path)
            self.names = [f"{path.stem}/{i}" for i in range(len(self._payloads))]
            self.extra["issame"] = np.asarray(issame, dtype=bool)
            self._read = self._payloads.__getitem__
            self.source = str(path)
            self.files = [path]
        elif (path / "aligned.idx").exists():
            from facetrust.align.stage import read_aligned
            from facetrust.data.recordio import unpack

            self.names, scores, reader = read_aligned(path)
            self.extra["detector_score"] = scores
            self._read = lambda i: unpack(reader.read_idx(i))[1]
            self.source = str(path)
            self.files = [path / "index.csv", path / "aligned.idx", path / "aligned.rec"]
        else:
            raise InputError(f"{path}: not a test set (expected a .bin file or an aligned directory)")
        if not self.names:
            raise InputError(f"{path}: an empty test set: it holds no images to embed")

    def __len__(self) -> int:
        return len(self.names)

    def decode(self, index: int) -> np.ndarray:
        """Image ``index`` as RGB uint8 (H, W, 3): the checked decoder (bounded pixels, strict JPEG
        data); InputError naming the set, the record and the image otherwise."""
        from facetrust.data.images import decode_image

        return decode_image(self._read(index), self.source, f"image {index} ({self.names[index]})")

    def check_pixel_budget(self, max_decoded_pixels: int) -> int:
        """Refuse a set whose images declare more than ``max_decoded_pixels`` in all (read from the
        headers, nothing decoded); returns the total.  A .bin's images may be memo references to one
        large image (facetrust.data.binset.MAX_FANOUT), each decoded again."""
        from facetrust.data.images import declared_pixels

        total = 0
        for index in range(len(self)):
            total += declared_pixels(self._read(index))
            if total > max_decoded_pixels:
                raise InputError(
                    f"{self.source}: its images declare more than {max_decoded_pixels} pixels in all by image "
                    f"{index} ({self.names[index]}); raise --max-decoded-pixels if the set is meant to be this large")
        return total

    def batches(self, batch_size: int, prepare: Callable[[np.ndarray], torch.Tensor]) -> Iterator[torch.Tensor]:
        """Batches of ``prepare(image)``, each image decoded and prepared before the next is decoded:
        a batch holds at most one decoded image (at most MAX_IMAGE_PIXELS) besides its inputs."""
        for start in range(0, len(self), batch_size):
            yield torch.stack([prepare(self.decode(i)) for i in range(start, min(start + batch_size, len(self)))])


def uncertainty_estimator(kind: str | None, head_dir: Path | None, config: dict, extras: dict):
    """A function (embedding, feature_map) -> (uncertainty (N,) float32 (larger = less certain),
    per-dimension σ² (N, D) float32 or None), and its kind.

    Only PFE's head predicts a σ² per dimension; PFE's fusion and MLS are per-dimension (Shi & Jain
    2019, Eq. 3 and the code's ``aggregate_PFE``), so it is kept beside the scalar.

    A head fitted by ``fit-head`` (``head_dir``; PFE, SCF, SCF-G) reads the feature map; otherwise
    ``kind`` names one of the model's own estimates
    (:data:`facetrust.models.uncertainty.methods.MODEL_UNCERTAINTIES`)."""
    from facetrust.models.artifacts import load_margin, load_uncertainty_head
    from facetrust.models.uncertainty.methods import MODEL_UNCERTAINTIES, predict_uncertainty

    if head_dir is not None:
        head = load_uncertainty_head(head_dir)

        def from_head(embedding, feature_map):
            uncertainty, extra = predict_uncertainty(head, head.method, embedding, feature_map)
            per_dim = extra.get("sigma_sq")
            return (np.asarray(uncertainty, dtype=np.float32),
                    None if per_dim is None else np.asarray(per_dim, dtype=np.float32))

        from_head.reads_feature_map = True  # every fitted head reads the feature map
        return from_head, head.method
    if kind in (None, "none"):
        return None, None
    factory = MODEL_UNCERTAINTIES.get(kind)  # an unknown kind fails before the model's heads are built
    # a pretrained backbone comes without its margin head: the estimates that need it say so
    margin_parts = load_margin(config, extras) if extras.get("head") is not None else (None, None)
    scalar = factory(config, extras, *margin_parts)

    def without_per_dim(embedding, feature_map):
        return scalar(embedding, feature_map), None

    without_per_dim.reads_feature_map = bool(getattr(scalar, "reads_feature_map", False))
    return without_per_dim, kind


def for_inference(backbone):
    """``backbone`` (a model just loaded) made into what ``embed`` and ``verify`` run, in place, and
    returned: in eval mode, its batch norms folded into the layers before them
    (:func:`facetrust.models.fold.fold_batch_norms`; no second copy of the weights); an ONNX model
    (weights outside torch) as it is."""
    from facetrust.models.fold import fold_batch_norms

    if not isinstance(backbone, torch.nn.Module):
        return backbone
    if not any(True for _ in backbone.parameters()):
        return backbone.eval()
    return fold_batch_norms(backbone, in_place=True)


@torch.no_grad()
def embed_batch(backbone, inputs: torch.Tensor, *, flip: bool = True, estimate=None, per_dim: list | None = None,
                feature_maps: list | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One batch of normalised inputs (N, 3, H, W): ``(original embeddings, original + mirrored
    (InsightFace F1) or None without flip, uncertainty of the original images or None)``, float32.
    ``per_dim`` (a list) receives PFE's per-dimension σ² of the batch when the estimate has one;
    ``feature_maps`` (a list) the backbone's feature map of the batch (then computed whatever the
    estimate reads)."""
    if feature_maps is not None or getattr(estimate, "reads_feature_map", False):
        embedding, feature_map = backbone(inputs, return_feature_map=True)
    else:  # an ONNX model may have no feature map output
        embedding, feature_map = backbone(inputs), None
    if feature_maps is not None:
        feature_maps.append(feature_map)
    original = embedding.float().numpy()
    fused = original + backbone(torch.flip(inputs, dims=[3])).float().numpy() if flip else None
    return original, fused, _estimate(estimate, embedding, feature_map, per_dim)


def _estimate(estimate, embedding: torch.Tensor, feature_map: torch.Tensor | None, per_dim: list | None):
    if estimate is None:
        return None
    uncertainty, sigma_sq = estimate(embedding, feature_map if getattr(estimate, "reads_feature_map", False) else None)
    if per_dim is not None and sigma_sq is not None:
        per_dim.append(sigma_sq)
    return uncertainty


def _cache_entry(backbone, config: dict, data: _TestSet, batch_size: int, flip: bool) -> str | None:
    """The backbone-output cache entry of this embedding (:mod:`facetrust.backbone_cache`), or None
    where it does not apply: no cache, an ONNX model (weights outside torch) or one without a feature
    map, a set too large."""
    from facetrust import backbone_cache

    if backbone_cache.cache_root() is None or not isinstance(backbone, torch.nn.Module):
        return None
    weights = list(backbone.parameters())
    if not weights:  # an ONNX session's wrapper: its weights are not torch tensors the key could hash
        return None
    shape = getattr(backbone, "feature_map_shape", None)
    if shape is None or "return_feature_map" not in inspect.signature(backbone.forward).parameters:
        return None
    if not isinstance(config.get("embedding_size"), int):
        return None
    per_image = int(config["embedding_size"]) * (2 if flip else 1) + int(np.prod(shape))
    if len(data) * per_image * 4 > backbone_cache.MAX_ENTRY_BYTES:
        return None
    settings = {"model": {key: config.get(key) for key in ("backbone", "backbone_options", "embedding_size",
                                                           "input_size")},
                "batch_size": int(batch_size), "flip": bool(flip), "images": len(data), "device": str(weights[0].device)}
    return backbone_cache.entry_key(backbone, data.files, settings)


@torch.no_grad()
def run_embed(model_dir: Path, testset: Path, out_path: Path, *, batch_size: int = 256, flip: bool = True,
              head_dir: Path | None = None, uncertainty: str | None = None,
              max_decoded_pixels: int = MAX_DECODED_PIXELS) -> dict:
    """Embed every image of ``testset`` with the model in ``model_dir``; returns a summary dict.

    ``model_dir``: anything :func:`facetrust.models.artifacts.load_model` takes (a trained or
    imported model's directory, an arcface_torch ``backbone.pth``, an ``.onnx`` file).

    Uncertainty (optional) comes from a fitted head (``head_dir``) or a baseline ``uncertainty``
    kind; it is computed on the original (unflipped) image.  ``max_decoded_pixels`` bounds the pixels
    the set's images declare in all (checked from their headers before anything is decoded)."""
    from facetrust.data.transforms import fit_to_size, to_tensor
    from facetrust.models.artifacts import load_model
    from facetrust.models.uncertainty.methods import uncertainty_space

    backbone, config, extras = load_model(model_dir)
    backbone = for_inference(backbone)
    input_size = tuple(config["input_size"])
    estimate, uncertainty_kind = uncertainty_estimator(uncertainty, head_dir, config, extras)
    data = _TestSet(Path(testset))
    data.check_pixel_budget(max_decoded_pixels)
    originals, fused, uncertainties, per_dims = [], [], [], []
    entry = _cache_entry(backbone, config, data, batch_size, flip)
    cached = None
    if entry is not None:
        from facetrust import backbone_cache

        cached = backbone_cache.load(entry)
    if cached is not None:  # another variant of this backbone computed it: only the estimate runs
        log.info("backbone outputs of %s from the cache (%s)", data.source, entry[:16])
        maps = torch.from_numpy(np.asarray(cached["feature_map"]))
        if bool(cached["feature_map_channels_last"]):
            maps = maps.contiguous(memory_format=torch.channels_last)
        originals = [np.asarray(cached["embedding_noflip"])]
        fused = [np.asarray(cached["embedding"])] if flip else []
        if estimate is not None:  # each batch a fresh tensor, as the backbone would have returned it
            for start in range(0, len(data), batch_size):
                rows = slice(start, start + batch_size)
                uncertainties.append(_estimate(estimate, torch.from_numpy(originals[0][rows]).clone(),
                                               maps[rows].clone(memory_format=torch.preserve_format), per_dims))
    else:
        feature_maps = [] if entry is not None else None
        batches = data.batches(batch_size, lambda image: to_tensor(fit_to_size(image, input_size)))
        for inputs in tqdm(batches, total=-(-len(data) // batch_size), desc=f"embed {Path(testset).name}",
                           unit="batch"):
            original, with_flip, uncertainty_batch = embed_batch(backbone, inputs, flip=flip, estimate=estimate,
                                                                 per_dim=per_dims, feature_maps=feature_maps)
            originals.append(original)
            if flip:
                fused.append(with_flip)
            if estimate is not None:
                uncertainties.append(uncertainty_batch)
        if entry is not None and feature_maps:
            from facetrust import backbone_cache

            backbone_cache.store(entry, {
                "embedding_noflip": np.concatenate(originals), "embedding": np.concatenate(fused) if flip else
                np.zeros((0, 0), np.float32), "feature_map": torch.cat(feature_maps).contiguous().numpy(),
                "feature_map_channels_last": np.asarray(feature_maps[0].is_contiguous(memory_format=torch.channels_last)
                                                        and not feature_maps[0].is_contiguous())})
    embedding_noflip = np.concatenate(originals).astype(np.float32)
    arrays = {
        "image": np.asarray(data.names, dtype=str),
        "embedding": np.concatenate(fused).astype(np.float32) if flip else embedding_noflip,
        "embedding_noflip": embedding_noflip,
        "flip": np.asarray(flip),
        **data.extra,
    }
    if uncertainties:
        arrays["uncertainty"] = np.concatenate(uncertainties)
        arrays["uncertainty_kind"] = np.asarray(uncertainty_kind)
        arrays["uncertainty_space"] = np.asarray(uncertainty_space(uncertainty_kind))
    if per_dims:
        arrays["uncertainty_per_dim"] = np.concatenate(per_dims)
    write_npz(out_path, arrays)
    return {"images": len(data), "dim": int(embedding_noflip.shape[1]), "flip": flip, "out": str(out_path),
            "uncertainty_kind": uncertainty_kind}
