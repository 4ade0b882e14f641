"""facetrust.explain: explanations of face verification, scored against known truth.

* :mod:`.scores` — the pair scores stage (xCos, cosine of the same network, of the standard model);
  the xCos model itself is :mod:`facetrust.models.xcos` (beside the other models) and its trainer
  :mod:`facetrust.train.xcos` (with :mod:`facetrust.train.xcos_parts`, :mod:`facetrust.train.xcos_cache`).
* :mod:`.maps` — training-free gradient (xSSAB split + integrated gradients) and perturbation
  (RISE-style) maps for any embedding model; :mod:`.method_maps` — every method read the same way.
* :mod:`.faithfulness` — deletion / insertion curves and known-truth occluder localisation, with
  bootstrap confidence intervals; :mod:`.faithfulness_stage` — the stage on a pair set.
* :mod:`.inversion` — ArcFace model inversion (BN statistics prior, class loss) and verifier checks;
  :mod:`.inversion_stage` — the stage with its ablations.
* The faces of a ``.bin`` pair set are read by :mod:`facetrust.data.pairset`; the figures are drawn by
  :mod:`facetrust.report.explain_figures`; ``facetrust explain`` is :mod:`facetrust.cli.explain`.
"""
