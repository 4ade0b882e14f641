"""facetrust.explain."""
