"""facetrust.verify: verification of photographs with a decision, uncertainties and an explanation."""
