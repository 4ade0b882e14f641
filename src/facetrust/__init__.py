"""facetrust: reproducible, explainable and uncertainty-aware face verification."""

__version__ = "0.1.0"
