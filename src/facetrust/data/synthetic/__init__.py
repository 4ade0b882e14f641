"""The embedded synthetic face benchmark: parametric faces with known quality, real formats.

``synthesize(out_dir, config, seed)`` writes the training RecordIO set, the LFW-style ``.bin``
pair set, the IJB-C-style set, ``quality.csv``, ``occluders.csv`` and ``manifest.json`` (layout in
:mod:`facetrust.data.synthetic.writer`); ``contact_sheet`` draws a preview of a written set.
"""

from facetrust.data.synthetic.config import SynthConfig
from facetrust.data.synthetic.contact import contact_sheet
from facetrust.data.synthetic.degrade import quality_score
from facetrust.data.synthetic.occluders import OCCLUDERS_NAME, box_in_input, box_mask, read_occluders
from facetrust.data.synthetic.writer import IJB_NAME, PAIR_SET_NAME, QUALITY_COLUMNS, synthesize

__all__ = ["SynthConfig", "synthesize", "contact_sheet", "quality_score", "IJB_NAME",
           "PAIR_SET_NAME", "QUALITY_COLUMNS", "OCCLUDERS_NAME", "read_occluders", "box_in_input",
           "box_mask"]
