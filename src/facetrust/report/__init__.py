"""facetrust.report."""
