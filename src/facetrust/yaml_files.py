"""Bounded YAML reading: every YAML file the package reads (params files, pack manifests) goes through
:func:`load_yaml`, a regular file of bounded size parsed by a ``SafeLoader`` that refuses deep nesting
and alias bombs before any object is built. A base module, so that the trainer and the stages read
YAML without importing the params schema (:mod:`facetrust.config`, the floor above them)."""

from __future__ import annotations

from pathlib import Path

import yaml

from facetrust.errors import ConfigError, InputError


# Bounds of a params file: a real one is a few kilobytes, a few levels deep, a few hundred values.
MAX_PARAMS_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 1_000_000  # values once every alias is expanded (a "billion laughs" has 10^9)
MAX_MESSAGE_CHARS = 300  # of a value quoted in an error message


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + f"… ({len(text)} characters)"


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses nesting deeper than :data:`MAX_YAML_DEPTH` (deep nesting
    would exhaust Python's recursion) and documents whose aliases expand to more than
    :data:`MAX_YAML_VALUES` values (an alias bomb: 1 kB naming 10^9 values), both before any
    Python object is built."""

    def compose_node(self, parent, index):
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels (line {self.peek_event().start_mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        _expanded_size(node, lambda n: n.value if isinstance(n, (yaml.SequenceNode, yaml.MappingNode)) else (),
                       lambda n: isinstance(n, yaml.MappingNode))
        self._refuse_duplicate_keys(node)
        return self.construct_document(node)

    def _refuse_duplicate_keys(self, root) -> None:
        """:class:`DuplicateKeyError` for a mapping that names a key twice (``seed: 7`` then
        ``seed: 8``): PyYAML keeps the last silently.  Keys merged in with ``<<`` may be overridden
        (YAML's merge rule); a key is compared by the value it constructs to (``1`` and ``0x1`` are
        one key, as in the dict built).  Each distinct node is visited once (aliases share nodes)."""
        seen: set[int] = set()
        stack = [(root, "")]
        while stack:
            node, where = stack.pop()
            if id(node) in seen or not isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
                continue
            seen.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                stack.extend((child, f"{where}[{k}]") for k, child in enumerate(node.value))
                continue
            first: dict = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = self.construct_object(key_node)
                    try:
                        earlier = first.setdefault(key, key_node)
                    except TypeError:  # an unhashable key: PyYAML refuses it when it builds the mapping
                        earlier = key_node
                    if earlier is not key_node:
                        name = f"{where}.{key}" if where else str(key)
                        raise DuplicateKeyError(
                            f"duplicate key {_short(name)!r} at line {key_node.start_mark.line + 1} (first at line "
                            f"{earlier.start_mark.line + 1}): YAML would keep only the last; remove one")
                    child = f"{where}.{key}" if where else str(key)
                else:
                    child = where
                stack.append((value_node, child))


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that names one key twice (message: the key and both lines)."""


def _one_line(error: yaml.YAMLError) -> str:
    """A YAML error as one line: ``line L, column C: the problem`` (PyYAML's own text spans several
    lines and quotes the source)."""
    if not isinstance(error, yaml.MarkedYAMLError):
        return _short(" ".join(str(error).split()))
    problem = " ".join(str(error.problem or "").split())
    context = " ".join(str(error.context or "").split())
    mark = error.problem_mark or error.context_mark
    if context and problem:
        if context.startswith("while ") and error.context_mark is not None:
            problem = (f"{problem} ({context} started at line {error.context_mark.line + 1}, column "
                       f"{error.context_mark.column + 1})")
        else:
            problem = f"{context}, {problem}"
    problem = _short(problem or context or type(error).__name__)
    return problem if mark is None else f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _expanded_size(root, children, is_mapping) -> int:
    """Values under ``root`` counting a shared node once per reference (linear in the distinct
    nodes: each node's size is computed once); raises yaml.YAMLError above :data:`MAX_YAML_VALUES`."""
    sizes: dict[int, int] = {}

    def size(node, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels")
        key = id(node)
        if key not in sizes:
            sizes[key] = 0  # a node reached again while being sized: a cycle, counted once
            total = 1
            for child in children(node):
                for part in (child if is_mapping(node) else (child,)):
                    total += size(part, depth + 1)
                    if total > MAX_YAML_VALUES:
                        raise yaml.YAMLError(f"more than {MAX_YAML_VALUES} values once its aliases are expanded "
                                             "(an alias bomb?)")
            sizes[key] = total
        return sizes[key]

    return size(root, 0)


def load_yaml(path: str | Path, what: str = "params file"):
    """The YAML document at ``path``, read as a regular file of at most :data:`MAX_PARAMS_BYTES`
    with :class:`_BoundedLoader`; ConfigError naming the file for anything else."""
    from facetrust.input_files import read_regular

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such {what}")
    try:
        text = read_regular(path, what, max_bytes=MAX_PARAMS_BYTES).decode("utf-8")
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader)
    except InputError as error:
        raise ConfigError(str(error)) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except DuplicateKeyError as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML at {_one_line(error)}" if isinstance(error, yaml.MarkedYAMLError)
                          and (error.problem_mark or error.context_mark) else
                          f"{path}: not valid YAML: {_one_line(error)}") from None
