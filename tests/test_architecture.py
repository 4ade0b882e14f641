"""The package's shape: one-way imports between layers, no cycles, registries that drive the CLI and
the params schema (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import facetrust
from facetrust.config import _registry_enums, schema, schema_file, schema_node

PACKAGE = Path(facetrust.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> facetrust modules it imports anywhere (module level or inside functions)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            targets.update(c for c in candidates if c in modules and c != name)
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            # a package's __init__ importing its own submodules is how packages work, not a cycle
            if target.startswith(node + "."):
                continue
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if state.get(target) is None:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("layer", ["facetrust.embed", "facetrust.evaluate", "facetrust.explain", "facetrust.models",
                                   "facetrust.data", "facetrust.report"])
def test_stages_that_use_a_model_never_import_train(layer):
    graph = import_graph()
    offenders = {module: sorted(t for t in targets if t == "facetrust.train" or t.startswith("facetrust.train."))
                 for module, targets in graph.items() if module == layer or module.startswith(layer + ".")}
    offenders = {m: t for m, t in offenders.items() if t}
    assert not offenders, f"{layer} imports train: {offenders}"


def test_lower_layers_never_import_upper_ones():
    graph = import_graph()
    upper = {"facetrust.data": ("facetrust.models", "facetrust.train", "facetrust.embed", "facetrust.evaluate",
                                "facetrust.report", "facetrust.explain", "facetrust.cli", "facetrust.config"),
             "facetrust.models": ("facetrust.train", "facetrust.embed", "facetrust.evaluate", "facetrust.report",
                                  "facetrust.explain", "facetrust.cli", "facetrust.config"),
             "facetrust.evaluate": ("facetrust.report", "facetrust.cli", "facetrust.config")}
    for layer, forbidden in upper.items():
        for module, targets in graph.items():
            if module == layer or module.startswith(layer + "."):
                bad = sorted(t for t in targets if t.startswith(forbidden))
                assert not bad, f"{module} (layer {layer}) imports {bad}"


def test_schema_enums_come_from_the_registries_and_the_schema_file_agrees():
    """The schema the config is validated with takes its enums from the registries; the schema file
    (what users read) must list the same names, so adding a method without updating it fails here."""
    effective, written = schema(), schema_file()
    for path, names in _registry_enums():
        assert schema_node(effective, path)["enum"] == names
        assert sorted(schema_node(written, path)["enum"]) == sorted(names), f"schema file enum at {'.'.join(path)}"


def test_cli_choices_are_the_registries():
    from facetrust.cli import build_parser
    from facetrust.evaluate.fusion import POOLINGS
    from facetrust.evaluate.pairs import PAIR_DISTANCES
    from facetrust.models.uncertainty.methods import MODEL_UNCERTAINTIES

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices

    def choices(command, option):
        action = next(a for a in subparsers[command]._actions if option in a.option_strings)
        return list(action.choices)

    assert choices("embed", "--uncertainty") == ["none", *MODEL_UNCERTAINTIES.names()]
    assert choices("evaluate", "--pooling") == POOLINGS.names()
    assert choices("evaluate", "--metric") == PAIR_DISTANCES.names()
    from facetrust.evaluate.scores import SCORES

    assert choices("evaluate", "--score") == SCORES.names()


def test_a_registered_method_reaches_the_cli_and_the_schema(monkeypatch):
    """Adding a method is one decorator: the new name is a CLI choice and a schema enum value."""
    from facetrust.cli import build_parser
    from facetrust.evaluate.fusion import POOLINGS

    monkeypatch.setitem(POOLINGS._entries, "median", "a planted pooling")
    assert "median" in schema_node(schema(), ("variants", "*", "pooling"))["enum"]
    args = build_parser().parse_args(["evaluate", "ijb", "--embeddings", "e.npz", "--out", "m.json",
                                      "--pooling", "median"])
    assert args.pooling == "median"


def test_margin_defaults_are_defined_once():
    from facetrust.report.papers import DEFAULT_MARGIN_METHODS

    default = schema_node(schema_file(), ("report", "sphereface", "margin_methods"))["default"]
    assert default == list(DEFAULT_MARGIN_METHODS)
