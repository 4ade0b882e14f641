"""Registries: every kind of method is built by name, and the name lists feed the CLI and schema.

One :class:`Registry` per kind (backbones, margins, uncertainty methods, template poolings, pair
scores).  A method joins with one decorator, the timm ``register_model`` way::

    @MARGINS.register("arcface")
    def arcface(s=64.0, m=0.5): ...

``names()`` gives the CLI its ``choices`` and the params schema its ``enum`` (see
:func:`facetrust.config.schema`), so the three can never disagree.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from facetrust.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order.

    ``kind`` names the kind in error messages (``unknown margin head 'x'; allowed: …``);
    ``loader`` (optional) imports the modules that register entries, on first look-up, so that
    importing the registry itself stays cheap."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None, sort: bool = False):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._loader = loader
        self._sort = sort

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``entry`` under ``name``; a second entry of the same name is a bug."""

        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = entry
            return entry

        return decorator

    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader()

    def names(self) -> list[str]:
        """Registered names (registration order, or sorted for registries made with ``sort=True``)."""
        self._load()
        return sorted(self._entries) if self._sort else list(self._entries)

    def get(self, name: str) -> T:
        """The entry registered as ``name``; ConfigError naming the allowed ones otherwise."""
        self._load()
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]


class LazyChoices:
    """argparse ``choices`` read from registries only when used (a given value is checked, or a
    subcommand's ``--help`` lists them), so that ``facetrust --help`` does not import torch.

    ``sources``: plain names and ``"module:ATTRIBUTE"`` strings naming a :class:`Registry`
    (or a tuple of names)."""

    def __init__(self, *sources: str):
        self._sources = sources

    def names(self) -> list[str]:
        from importlib import import_module

        names: list[str] = []
        for source in self._sources:
            if ":" not in source:
                names.append(source)
                continue
            module, attribute = source.split(":")
            entry = getattr(import_module(module), attribute)
            names.extend(entry.names() if isinstance(entry, Registry) else entry)
        return names

    def __contains__(self, value: object) -> bool:
        return value in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
