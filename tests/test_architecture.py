"""The package's shape: one-way imports between layers, no cycles, registries that drive the CLI and
the params schema (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import json
import functools
import importlib
from pathlib import Path

import pytest

import facetrust
from facetrust.config import _registry_enums, schema, schema_file, schema_node
from facetrust.layers import FLOORS, floor_of, import_allowed, markdown_table

PACKAGE = Path(facetrust.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def import_graph() -> dict[str, frozenset[str]]:
    """module -> facetrust modules it imports anywhere (module level or inside functions); parsed once
    per session (the tests only read it)."""
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
        graph[name] = frozenset(targets)
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


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} -> {target} ({FLOORS[floor_of(module)][0]} -> {FLOORS[floor_of(target)][0]})"
                  for module, targets in graph.items() for target in targets if not import_allowed(module, target))


def test_every_import_points_down_the_floor_table():
    """facetrust.layers.FLOORS is the one layer order: an import stays in its own package or goes to a
    lower floor; packages sharing a floor never import each other."""
    graph = import_graph()
    for module in graph:  # every module is on a floor (a new top-level package must be placed)
        floor_of(module)
    assert _upward_imports(graph) == []


def test_the_floor_check_finds_planted_upward_and_sideways_imports():
    graph = {"facetrust.data.binset": {"facetrust.models.xcos", "facetrust.errors"},
             "facetrust.train.xcos": {"facetrust.embed", "facetrust.train.parts", "facetrust.evaluate.pairs"},
             "facetrust.report.tables": {"facetrust.explain.maps"}}
    assert _upward_imports(graph) == ["facetrust.data.binset -> facetrust.models.xcos (data -> models)",
                                      "facetrust.train.xcos -> facetrust.embed (stages -> stages)"]
    with pytest.raises(KeyError, match="on no floor"):
        floor_of("facetrust.newthing.module")


def test_architecture_doc_draws_the_floor_table():
    text = (PACKAGE.parents[1] / "docs" / "ARCHITECTURE.md").read_text()
    assert markdown_table() in text, "docs/ARCHITECTURE.md's layer table is not facetrust.layers.markdown_table()"


def test_schema_enums_come_from_the_registries_and_the_schema_file_agrees():
    """The schema the config is validated with takes its enums from the registries; the schema file
    (what users read) must list the same names, so adding a method without updating it fails here."""
    effective, written = schema(), schema_file()
    for path, names in _registry_enums():
        assert schema_node(effective, path)["enum"] == names
        assert sorted(schema_node(written, path)["enum"]) == sorted(names), f"schema file enum at {'.'.join(path)}"


def test_cli_choices_are_the_registries():
    from facetrust.cli import build_parser
    from facetrust.evaluate.poolings import POOLINGS
    from facetrust.evaluate.pairs import PAIR_DISTANCES
    from facetrust.models.uncertainty.methods import MODEL_UNCERTAINTIES

    def choices(path, option):
        parser = build_parser()
        for name in path:  # down the sub-commands
            parser = next(a for a in parser._actions if a.choices and name in a.choices).choices[name]
        action = next(a for a in parser._actions if option in a.option_strings)
        return list(action.choices)

    assert choices(["embed"], "--uncertainty") == ["none", *MODEL_UNCERTAINTIES.names()]
    for protocol in ("ijb", "reject", "edc"):
        assert choices(["evaluate", protocol], "--pooling") == POOLINGS.names()
    assert choices(["evaluate", "pairs"], "--metric") == PAIR_DISTANCES.names()
    from facetrust.evaluate.scores import SCORES

    for protocol in ("pairs", "ijb", "reject"):
        assert choices(["evaluate", protocol], "--score") == SCORES.names()


def test_facetrust_methods_lists_every_registry_of_the_package(capsys):
    """Every ``NAME = Registry(...)`` (and the map methods' tuple) in the package is a line of
    ``facetrust methods``; a registry added without its line fails here."""
    from facetrust.cli import METHOD_KINDS, main

    registries = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            value = getattr(node, "value", None)
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(value, ast.Call) \
                    and getattr(value.func, "id", None) == "Registry":
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                registries.add(f"{_module_name(path)}:{target.id}")
    assert len(registries) >= 7

    def resolve(source: str):  # the same registry may be named through a package that re-exports it
        module, attribute = source.split(":")
        return id(getattr(importlib.import_module(module), attribute))

    listed = {resolve(source) for choices in METHOD_KINDS.values() for source in choices._sources if ":" in source}
    missing = sorted(source for source in registries if resolve(source) not in listed)
    assert not missing, f"registries missing from `facetrust methods`: {missing}"
    assert main(["methods"]) in (0, None)
    out = capsys.readouterr().out
    for kind, choices in METHOD_KINDS.items():
        assert f"{kind}: {', '.join(choices)}" in out
    assert "scf_vmf" in out and "integrated_gradients" in out


def test_a_registered_method_reaches_the_cli_and_the_schema(monkeypatch):
    """Adding a method is one decorator: the new name is a CLI choice and a schema enum value."""
    from facetrust.cli import build_parser
    from facetrust.evaluate.poolings import POOLINGS

    monkeypatch.setitem(POOLINGS._entries, "median", "a planted pooling")
    assert "median" in schema_node(schema(), ("variants", "*", "pooling"))["enum"]
    args = build_parser().parse_args(["evaluate", "ijb", "--embeddings", "e.npz", "--protocol", "p", "--name", "n",
                                      "--out", "m.json", "--pooling", "median"])
    assert args.pooling == "median"


def test_margin_defaults_are_defined_once():
    from facetrust.report.sphereface_report import DEFAULT_MARGIN_METHODS

    default = schema_node(schema_file(), ("report", "sphereface", "margin_methods"))["default"]
    assert default == list(DEFAULT_MARGIN_METHODS)


def test_no_report_module_is_over_300_lines():
    """One module per paper and shared helpers beside them, none grown past 300 lines."""
    long = {path.name: n for path in (PACKAGE / "report").glob("*.py")
            if (n := len(path.read_text().splitlines())) > 300}
    assert not long, f"report modules over 300 lines: {long}"


def test_evaluation_and_tables_run_without_torch_or_scikit_learn(tmp_path):
    """Evaluation and tables are numpy: with torch and scikit-learn unimportable, `evaluate pairs`
    and `report table` still run and write their provenance (importing the two cost ~3 s and ~600 MB
    in each of the embedded default's ~100 small jobs)."""
    import subprocess
    import sys

    import numpy as np

    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(40, 8)).astype(np.float32)
    embedding[1::2] = embedding[::2] + np.where(np.arange(20) % 2 == 0, 0.1, 3.0)[:, None] * rng.normal(size=(20, 8))
    np.savez(tmp_path / "e.npz", image=np.array([str(i) for i in range(40)]), embedding=embedding,
             issame=np.arange(20) % 2 == 0)
    script = """
import sys
sys.modules["torch"] = sys.modules["sklearn"] = None  # `import torch` now raises ImportError
from facetrust.cli import main
assert main(["evaluate", "pairs", "--embeddings", "e.npz", "--out", "m.json", "--bootstrap", "20"]) == 0
assert main(["report", "table", "--metrics", "m.json", "--out", "t.csv"]) == 0
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "t.csv").exists()
    record = json.loads((tmp_path / "provenance" / "m.json.json").read_text())
    assert record["torch_threads"] is None and record["float_path"]["aten_cpu_capability"] is None


def test_provenance_names_the_installed_torch_without_importing_it():
    import torch

    from facetrust.provenance import _installed

    assert _installed("torch") == torch.__version__
    assert _installed("no_such_package_here") is None
