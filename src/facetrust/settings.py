"""Settings groups: dataclasses whose fields are also command-line options.

A group owns its defaults (written once, as the fields' defaults), the params section it reads
(:meth:`SettingsGroup.from_params`), the flags it adds to a parser (:meth:`~SettingsGroup.add_arguments`)
and reads back (:meth:`~SettingsGroup.from_args`), and the flags that give its values
(:meth:`~SettingsGroup.cli_args`, what a Snakemake rule passes).  A field is an option when its
metadata names a ``flag`` (:func:`option`); a boolean whose flag turns it off (``--no-flip``) says
``invert``; tuple values travel as comma-separated numbers.  The evaluation protocols' groups are in
:mod:`facetrust.evaluate.settings`.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import field
from typing import Any, ClassVar, Mapping, Sequence

from facetrust import options


def option(default, flag: str, help: str, *, type=None, choices=None, invert: bool = False, key: str | None = None,
           nargs: str | None = None, const=None, metavar: str | None = None):
    """A settings field that is also a command-line option (see the module docstring)."""
    metadata = {"flag": flag, "help": help, "type": type, "choices": choices, "invert": invert, "key": key,
                "nargs": nargs, "const": const, "metavar": metavar}
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


class SettingsGroup:
    """What every group can do: add its flags, read them back, read its params section, and
    turn its values back into flags."""

    SECTION: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def option_fields(cls, only: Sequence[str] | None = None) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if f.metadata.get("flag") and (only is None or f.name in only)]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
        for f in cls.option_fields(only):
            meta = f.metadata
            if isinstance(f.default, bool):
                parser.add_argument(meta["flag"], dest=f.name, action="store_false" if meta["invert"] else "store_true",
                                    default=f.default, help=meta["help"])
                continue
            kwargs: dict[str, Any] = {"dest": f.name, "default": f.default, "help": meta["help"] + " (default: %(default)s)"}
            if isinstance(f.default, tuple):
                kwargs.update(type=lambda text: tuple(options.rates(text)), metavar="R1,R2,...")
                kwargs["help"] = meta["help"] + f" (default: {','.join(str(v) for v in f.default)})"
            elif meta["type"] is not None:
                kwargs["type"] = meta["type"]
            if meta["choices"] is not None:
                kwargs.update(choices=meta["choices"], metavar=f.name.upper())
                kwargs["help"] = meta["help"] + ": %(choices)s (default: %(default)s)"
            if meta["nargs"]:
                kwargs.update(nargs=meta["nargs"], const=meta["const"])
            if meta["metavar"]:
                kwargs["metavar"] = meta["metavar"]
            parser.add_argument(meta["flag"], **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **values):
        """The group from parsed flags (fields the parser did not add keep their defaults)."""
        found = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        return cls(**{**found, **values})

    @classmethod
    def section(cls, params: Mapping) -> Mapping:
        node: Any = params
        for key in cls.SECTION:
            node = (node or {}).get(key) or {}
        return node

    @classmethod
    def from_params(cls, params: Mapping, **values):
        """The group from its params section (keys absent there keep their defaults; a dotted
        ``key`` such as ``perturbation.masks`` reads a sub-section)."""
        section = cls.section(params)
        found = {}
        for f in cls.option_fields():
            *parents, key = (f.metadata["key"] or f.name).split(".")
            node = section
            for parent in parents:
                node = (node or {}).get(parent) or {}
            if key in node:
                found[f.name] = tuple(node[key]) if isinstance(f.default, tuple) else node[key]
        return cls(**{**found, **values})

    def cli_args(self, only: Sequence[str] | None = None) -> list[str]:
        """The flags that give these values, in field order (a boolean only when it is on; a None
        value not at all)."""
        out: list[str] = []
        for f in self.option_fields(only):
            value, meta = getattr(self, f.name), f.metadata
            if isinstance(f.default, bool):
                if bool(value) != bool(meta["invert"]):
                    out.append(meta["flag"])
            elif value is not None:
                out += [meta["flag"], ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)]
        return out

    def kwargs(self, only: Sequence[str] | None = None) -> dict[str, Any]:
        """The values as keyword arguments of the protocol's ``run_evaluate_*``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if only is None or f.name in only}
