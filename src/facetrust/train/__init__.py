"""facetrust.train."""
