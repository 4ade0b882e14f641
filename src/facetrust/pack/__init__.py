"""``facetrust data pack``: a user's image folders into the formats the pipeline reads.

Sits above ``data`` (the format writers) and ``align`` (MTCNN, the InsightFace crop):
``faces`` lists folders and makes each stored crop; ``rec``, ``pairs`` and ``ijb`` write an
InsightFace RecordIO set, a ``.bin`` pair set and an IJB-style 1:1 set (docs/FORMATS.md "Packing")."""
