"""facetrust.explain: explanations of face verification, scored against known truth.

* :mod:`.xcos` — the xCos branch (grid feature, cosine map, attention, xCos) and its loss;
  :mod:`.xcos_train` — the pieces a trainer plugs in (build, optimisers, pair batches, step).
* :mod:`.maps` — training-free gradient (xSSAB split + integrated gradients) and perturbation
  (RISE-style) maps for any embedding model.
* :mod:`.faithfulness` — deletion / insertion curves and known-truth occluder localisation, with
  bootstrap confidence intervals.
* :mod:`.inversion` — ArcFace model inversion (BN statistics prior, class loss) and verifier checks.
* :mod:`.figures` — the xCos pair figure, map overlays, inversion grids.
"""
