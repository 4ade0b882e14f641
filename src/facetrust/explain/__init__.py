"""facetrust.explain: explanations of face verification, scored against known truth.

* :mod:`.xcos` — the xCos branch (grid feature, cosine map, attention, xCos), its loss and loader;
  :mod:`.xcos_train` — the pieces its trainer (:mod:`facetrust.train.xcos`) plugs in;
  :mod:`.scores` — the pair scores stage (xCos, cosine of the same network, of the standard model).
* :mod:`.maps` — training-free gradient (xSSAB split + integrated gradients) and perturbation
  (RISE-style) maps for any embedding model; :mod:`.method_maps` — every method read the same way.
* :mod:`.faithfulness` — deletion / insertion curves and known-truth occluder localisation, with
  bootstrap confidence intervals; :mod:`.faithfulness_stage` — the stage on a pair set.
* :mod:`.inversion` — ArcFace model inversion (BN statistics prior, class loss) and verifier checks;
  :mod:`.inversion_stage` — the stage with its ablations.
* :mod:`.pairset` — the faces of a ``.bin`` pair set; :mod:`.figures` — the xCos pair figure, map
  overlays, faithfulness curves, inversion grids; :mod:`.cli` — ``facetrust explain``.
"""
