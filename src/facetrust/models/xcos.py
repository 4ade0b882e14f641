"""xCos: an explainable cosine (Lin et al., "xCos: An Explainable Cosine Metric for Face
Verification Task", arXiv 2003.05383; reference code ntubiolin/xcos).

A branch on a backbone's last convolutional map (N, C, h, w):

* **grid feature** ``g = PReLU(BN(conv1x1(C -> 32)(map)))`` (N, 32, h, w); 7x7 at 112x112 for an
  iResNet/IR-SE, 6x6 at 48x48 with ``last_stage_stride=1``.  Its flattened, L2-normalised form
  (N, 32·h·w) is the face's identity feature: a margin head (CosFace s=30 m=0.35 by default, or
  ArcFace) trains it, and its plain cosine is "cos of the same network".
* **cosine map** ``c_ij = cos(g1[:, i, j], g2[:, i, j])`` (N, h, w): how alike the two faces are
  at each cell.
* **attention** ``a = softmax_T(PReLU(BN(conv3x3(16->1)(PReLU(BN(conv3x3(32->16)(
  [e(g1), e(g2)]))))))`` with the shared per-face embedding ``e = PReLU(BN(conv3x3(32->16)))`` and
  a spatial softmax over the h·w cells at temperature T = 1 (N, h, w; every map sums to 1).
* **xCos** ``= Σ_ij c_ij · a_ij`` (N,) in [-1, 1]; a face against itself scores 1.

Loss (paper Sec. 3.3): identity loss (cross entropy of the margin head on the flattened grid
feature, both faces of every pair) + MSE(xCos, cosine of a frozen, separately trained standard
model), weights 1 and 1 (:func:`xcos_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from facetrust.errors import InputError
from facetrust.models.prelu import PReLU
from facetrust.models.registry import inference_layout

GRID_CHANNELS = 32  # xCos: Conv1x1(512 -> 32)
ATTENTION_CHANNELS = 16  # xCos: Conv3x3(32 -> 16) per face, then (32 -> 16 -> 1)


def _conv_bn_prelu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2),
        nn.BatchNorm2d(out_channels),
        PReLU(out_channels),
    )


def cosine_map(grid1: torch.Tensor, grid2: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-cell cosine (N, h, w) of two grid features (N, C, h, w)."""
    return F.cosine_similarity(grid1, grid2, dim=1, eps=eps)


def spatial_softmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over the h·w cells of (N, h, w) logits; each map sums to 1."""
    n, h, w = logits.shape
    return F.softmax(logits.reshape(n, h * w) / temperature, dim=1).reshape(n, h, w)


class XCosAttention(nn.Module):
    """``forward(grid1, grid2) -> (N, h, w)`` attention weights, softmax-normalised over the cells."""

    def __init__(self, grid_channels: int = GRID_CHANNELS, hidden: int = ATTENTION_CHANNELS,
                 temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise InputError(f"xcos: attention temperature must be > 0, got {temperature}")
        self.embed = _conv_bn_prelu(grid_channels, hidden, 3)  # shared by both faces
        self.fuse = nn.Sequential(_conv_bn_prelu(2 * hidden, hidden, 3), _conv_bn_prelu(hidden, 1, 3))
        self.temperature = float(temperature)

    def forward(self, grid1: torch.Tensor, grid2: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([self.embed(grid1), self.embed(grid2)], dim=1)
        return spatial_softmax(self.fuse(fused)[:, 0], self.temperature)


@dataclass
class XCosOutput:
    """What the branch computes for a batch of pairs (all tensors, batch first)."""

    grid1: torch.Tensor  # (N, 32, h, w)
    grid2: torch.Tensor
    cosine_map: torch.Tensor  # (N, h, w) in [-1, 1]
    attention: torch.Tensor  # (N, h, w), each map sums to 1
    xcos: torch.Tensor  # (N,) = sum(cosine_map * attention)

    @property
    def grid_cosine(self) -> torch.Tensor:
        """(N,) plain cosine of the flattened grid features: "cos" of the same network."""
        return F.cosine_similarity(self.grid1.flatten(1), self.grid2.flatten(1), dim=1)


class XCosModel(nn.Module):
    """A backbone with the xCos branch.

    ``grid(images)`` (N, 32, h, w); ``embedding(images)`` the flattened L2-normalised grid feature
    (N, 32·h·w) for the margin head; ``forward(images1, images2)`` an :class:`XCosOutput` for the
    pairs (images1[k], images2[k]).  The backbone must accept ``return_feature_map=True`` (every
    registered backbone does).  ``freeze_backbone``: the backbone gets no gradient and keeps its
    BatchNorm statistics (eval mode) whatever ``train()`` says; only the branch learns.
    """

    def __init__(self, backbone: nn.Module, feature_map_shape, *, grid_channels: int = GRID_CHANNELS,
                 temperature: float = 1.0, freeze_backbone: bool = False):
        super().__init__()
        channels, height, width = (int(v) for v in feature_map_shape)
        self.backbone = backbone
        self.grid_conv = _conv_bn_prelu(channels, grid_channels, 1)
        self.attention = XCosAttention(grid_channels, temperature=temperature)
        self.grid_shape = (grid_channels, height, width)
        self.freeze_backbone = bool(freeze_backbone)
        if self.freeze_backbone:
            self.backbone.requires_grad_(False)

    @property
    def embedding_size(self) -> int:
        channels, height, width = self.grid_shape
        return channels * height * width

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def grid(self, images: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            _, feature_map = self.backbone(images, return_feature_map=True)
        return self.grid_from_map(feature_map)

    def grid_from_map(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The grid feature of backbone feature maps (N, C, h, w): what :meth:`grid` computes after
        the backbone, so that a frozen backbone's cached maps train the branch
        (:mod:`facetrust.train.xcos_cache`)."""
        return self.grid_conv(feature_map)

    def embedding(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.grid(images).flatten(1), dim=1)

    def compare(self, grid1: torch.Tensor, grid2: torch.Tensor) -> XCosOutput:
        """The cosine map, attention and xCos of two batches of grid features."""
        cos = cosine_map(grid1, grid2)
        attention = self.attention(grid1, grid2)
        xcos = (cos * attention).flatten(1).sum(dim=1)
        return XCosOutput(grid1, grid2, cos, attention, xcos)

    def forward(self, images1: torch.Tensor, images2: torch.Tensor) -> XCosOutput:
        if images1.shape != images2.shape:
            raise InputError(f"xcos: pair batches differ in shape: {tuple(images1.shape)} vs {tuple(images2.shape)}")
        # one backbone pass over both faces, so BatchNorm sees the whole batch (as in training)
        grids = self.grid(torch.cat([images1, images2]))
        grid1, grid2 = grids.split(images1.shape[0])
        return self.compare(grid1, grid2)


def standard_cosine(standard: nn.Module, images1: torch.Tensor, images2: torch.Tensor) -> torch.Tensor:
    """(N,) cosine of a frozen standard model's embeddings of the pairs: the xCos regression target.

    Computed without gradient and with the model in eval mode (its state is restored)."""
    was_training = standard.training
    standard.eval()
    try:
        with torch.no_grad():
            embeddings = standard(torch.cat([images1, images2]))
    finally:
        standard.train(was_training)
    first, second = embeddings.split(images1.shape[0])
    return F.cosine_similarity(first, second, dim=1)


@dataclass
class XCosLoss:
    """``total = identity_weight·identity + xcos_weight·xcos_mse`` and its parts (tensors)."""

    total: torch.Tensor
    identity: torch.Tensor
    xcos_mse: torch.Tensor
    output: XCosOutput


def xcos_loss(model: XCosModel, head: nn.Module, images1: torch.Tensor, images2: torch.Tensor,
              labels1: torch.Tensor, labels2: torch.Tensor, target_cosine: torch.Tensor, *,
              identity_weight: float = 1.0, xcos_weight: float = 1.0) -> XCosLoss:
    """The xCos training loss on a batch of pairs (paper Sec. 3.3; weights 1 and 1 there).

    ``identity``: cross entropy of ``head`` (a :class:`~facetrust.models.margins.MarginHead` of
    input size ``model.embedding_size``) on the flattened, L2-normalised grid features of both
    faces with their class labels.  ``xcos_mse``: mean squared error between xCos and
    ``target_cosine`` (N,), the cosine of a frozen standard model (:func:`standard_cosine`)."""
    grids = model.grid(torch.cat([images1, images2]))
    return xcos_loss_from_grids(model, head, grids, labels1, labels2, target_cosine,
                                identity_weight=identity_weight, xcos_weight=xcos_weight)


def xcos_loss_from_grids(model: XCosModel, head: nn.Module, grids: torch.Tensor, labels1: torch.Tensor,
                         labels2: torch.Tensor, target_cosine: torch.Tensor, *, identity_weight: float = 1.0,
                         xcos_weight: float = 1.0) -> XCosLoss:
    """:func:`xcos_loss` from the grid features (2N, 32, h, w) of both faces (first faces, then
    second), e.g. :meth:`XCosModel.grid_from_map` of cached feature maps."""
    grid1, grid2 = grids.split(labels1.shape[0])
    output = model.compare(grid1, grid2)
    embeddings = F.normalize(grids.flatten(1), dim=1)
    labels = torch.cat([labels1, labels2]).long()
    identity = F.cross_entropy(head(embeddings, labels), labels)
    xcos_mse = F.mse_loss(output.xcos, target_cosine.to(output.xcos.dtype))
    total = identity_weight * identity + xcos_weight * xcos_mse
    return XCosLoss(total, identity, xcos_mse, output)


def score_pairs(model: XCosModel, pair_batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                total: int | None = None, device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """xCos and the plain grid cosine for every pair: ``{"xcos": (P,), "cosine": (P,)}`` float64.

    ``pair_batches`` yields ``(images1, images2)`` tensors (already normalised like training);
    ``total`` (pairs) sizes the progress bar.  The model runs in eval mode without gradient."""
    model.eval().to(device)
    xcos, cosine = [], []
    with torch.no_grad(), tqdm(total=total, desc="xcos pairs", unit="pair", leave=False) as bar:
        for images1, images2 in pair_batches:
            output = model(images1.to(device), images2.to(device))
            xcos.append(output.xcos.double().cpu().numpy())
            cosine.append(output.grid_cosine.double().cpu().numpy())
            bar.update(images1.shape[0])
    if not xcos:
        raise InputError("xcos: no pairs to score")
    return {"xcos": np.concatenate(xcos), "cosine": np.concatenate(cosine)}


def explain_pair(model: XCosModel, image1: torch.Tensor, image2: torch.Tensor) -> dict[str, np.ndarray | float]:
    """One pair's explanation for the figure: ``cosine_map`` and ``attention`` (h, w) arrays,
    ``xcos`` and ``cosine`` (the flattened grid's plain cosine) floats.  Images are (3, H, W)."""
    model.eval()
    with torch.no_grad():
        output = model(image1.unsqueeze(0), image2.unsqueeze(0))
    return {
        "cosine_map": output.cosine_map[0].double().cpu().numpy(),
        "attention": output.attention[0].double().cpu().numpy(),
        "xcos": float(output.xcos[0]),
        "cosine": float(output.grid_cosine[0]),
    }


def branch_state(model: XCosModel) -> dict[str, torch.Tensor]:
    """The branch's own weights (``grid_conv.*``, ``attention.*``), without the backbone."""
    return {key: value.detach().cpu() for key, value in model.state_dict().items()
            if not key.startswith("backbone.")}


def load_xcos(model_dir, map_location="cpu") -> tuple[XCosModel, dict, dict]:
    """``(XCosModel in eval mode, config, extras)`` from a ``facetrust train-xcos`` output directory
    (the checkpoint is read by :func:`facetrust.models.artifacts.load_xcos_checkpoint`)."""
    from facetrust.models.artifacts import load_xcos_checkpoint

    backbone, config, extras = load_xcos_checkpoint(model_dir, map_location)
    model = XCosModel(backbone, extras["feature_map_shape"], grid_channels=int(config.get("grid_channels", GRID_CHANNELS)),
                      temperature=float(config.get("temperature", 1.0)))
    try:
        missing, unexpected = model.load_state_dict(extras["branch"], strict=False)
    except RuntimeError as exc:
        raise InputError(f"{extras['path']}: xCos branch weights do not fit: {exc}") from None
    missing = [key for key in missing if not key.startswith("backbone.")]
    if missing or unexpected:
        raise InputError(f"{extras['path']}: xCos branch weights do not fit: missing {missing}, unexpected {unexpected}")
    if tuple(model.grid_shape) != tuple(extras["grid_shape"]):
        raise InputError(f"{extras['path']}: grid {model.grid_shape} but the checkpoint says {extras['grid_shape']}")
    return inference_layout(model.eval()), config, extras
