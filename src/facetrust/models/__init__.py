"""Backbones (built by name), margin heads, uncertainty heads."""

from facetrust.models.registry import available_backbones, build_backbone, register_backbone

__all__ = ["available_backbones", "build_backbone", "register_backbone"]
