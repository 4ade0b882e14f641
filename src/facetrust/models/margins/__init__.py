"""Margin softmax heads (SphereFace, CosFace, ArcFace, combined, ScaleFace, MagFace) composed from
one :class:`MarginHead`, and ScaleFace's per-sample scale predictor :class:`ScaleHead`.

Training: ``loss = F.cross_entropy(head(emb, labels, scale=s), labels) + head.extra_loss()``.
"""

from facetrust.models.margins.angular import angular_target, chebyshev_cos_multiple, safe_arccos
from facetrust.models.margins.head import AngularMargin, MarginHead
from facetrust.models.margins.kinds import MARGINS, available_heads, build_head
from facetrust.models.margins.magface import MagFaceMargin, MagFaceRegulariser
from facetrust.models.margins.scale import FeatureNormScale, FixedScale, PerSampleScale, ScaleHead
from facetrust.models.margins.schedules import LambdaAnnealing

__all__ = [
    "AngularMargin",
    "FeatureNormScale",
    "FixedScale",
    "MARGINS",
    "LambdaAnnealing",
    "MagFaceMargin",
    "MagFaceRegulariser",
    "MarginHead",
    "PerSampleScale",
    "ScaleHead",
    "angular_target",
    "available_heads",
    "build_head",
    "chebyshev_cos_multiple",
    "safe_arccos",
]
