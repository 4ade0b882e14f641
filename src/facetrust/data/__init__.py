"""facetrust.data."""
