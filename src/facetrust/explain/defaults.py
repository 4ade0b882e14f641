"""The one place that owns the explain defaults shared by the CLI, the stages and the schema (a test
checks that `explain map --masks`, the faithfulness and sanity stages and the schema agree)."""

#: ``facetrust verify --explain``: "gradient" is the short name for integrated gradients (the same
#: map as "integrated_gradients"); xcos needs an xCos model.
VERIFY_EXPLAIN_METHODS = ("gradient", "integrated_gradients", "perturbation", "xcos", "none")
#: RISE masks per pair.  RISE uses 4,000-8,000 at 224 px; at 1,000 the sanity stage reports the
#: maps' seed-to-seed agreement with its interval.
DEFAULT_MASKS = 1000
DEFAULT_CELLS = 6  # RISE grid cells per side (the xCos grid at 48 px is 6 x 6)
DEFAULT_IG_STEPS = 16  # integrated-gradient steps (midpoint rule)
