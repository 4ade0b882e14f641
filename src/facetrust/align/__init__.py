"""facetrust.align."""
