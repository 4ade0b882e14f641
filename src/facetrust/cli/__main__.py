"""``python -m facetrust.cli``: the ``facetrust`` command (torchrun and the benchmarks start it this way)."""

import sys

from facetrust.cli import main

sys.exit(main())
