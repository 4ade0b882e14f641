"""facetrust.evaluate."""
