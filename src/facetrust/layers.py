"""The package's floors, written once: every import points down this table.

A module may import modules of its own top-level package and of any lower floor; packages that share
a floor never import each other (the base floor's single modules excepted: they are one toolkit). ``tests/test_architecture.py`` walks every import of the package
against :data:`FLOORS`, and docs/ARCHITECTURE.md's layer table is :func:`markdown_table` (the test
compares them), so the picture, the rule and the code are one thing.

``evaluate`` sits beside ``models``, below the trainers: it is arithmetic on scores and embeddings
files (ROC, TAR conventions, 10-fold protocols, fusion, bootstraps), never a model, and a trainer
that reads its validation pairs' accuracy uses the same 10-fold protocol as the reports.
"""

from __future__ import annotations

# (floor, what it holds, top-level modules and packages of facetrust on it), lowest first
FLOORS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("base", "errors, bounded input reading, atomic outputs, formats, registries, settings groups, special functions",
     ("errors", "float_path", "formats", "input_files", "io", "npz", "options", "outputs", "provenance",
      "registry", "settings", "yaml_files", "maths", "layers")),
    ("data", "readers and writers of the external formats, the synthetic benchmark, pair sets", ("data",)),
    ("models", "backbones, margins, uncertainty methods, xCos, checkpoints; evaluation arithmetic; the "
     "backbone-output cache", ("models", "evaluate", "backbone_cache")),
    ("align", "MTCNN detection, 5-point alignment, photographs to model inputs", ("align",)),
    ("stages", "embedding, training (all trainers), packing a user's folders", ("embed", "train", "pack")),
    ("explain", "training-free maps, faithfulness, sanity checks, inversion, xCos scores", ("explain",)),
    ("report", "tables, figures and per-paper reports", ("report",)),
    ("verify", "`facetrust verify` of photographs", ("verify",)),
    ("config", "params.yaml: schema, validation, the rules' helpers", ("config", "schemas")),
    ("cli", "the `facetrust` command", ("cli",)),
)


def floor_of(module: str) -> int:
    """The floor index of a dotted module name under ``facetrust`` (``facetrust`` itself is base)."""
    parts = module.split(".")
    if parts[0] != "facetrust":
        raise ValueError(f"{module}: not a facetrust module")
    if len(parts) == 1:
        return 0
    for index, (_, _, members) in enumerate(FLOORS):
        if parts[1] in members:
            return index
    raise KeyError(f"{module}: facetrust.{parts[1]} is on no floor (add it to facetrust.layers.FLOORS)")


def top_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_allowed(importer: str, imported: str) -> bool:
    """Within one top-level package, between the base floor's single modules, or down to a lower floor."""
    if top_package(importer) == top_package(imported):
        return True
    low, high = floor_of(imported), floor_of(importer)
    return low < high or low == high == 0


def markdown_table() -> str:
    """The layer table of docs/ARCHITECTURE.md, highest floor first (imports point down the table)."""
    lines = ["| floor | holds | modules |", "|---|---|---|"]
    for index, (name, holds, members) in reversed(list(enumerate(FLOORS))):
        modules = ", ".join(f"`{m}`" for m in members)
        lines.append(f"| {index} {name} | {holds} | {modules} |")
    return "\n".join(lines)
