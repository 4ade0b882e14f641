"""Settings groups own their defaults and flags (facetrust.settings, facetrust.evaluate.settings):
the params schema's defaults equal the groups', the values a rule passes come back as the same
group, and each ``facetrust evaluate`` sub-command takes only its own flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from facetrust.cli import build_parser
from facetrust.config import bootstrap_args, ijb_flags
from facetrust.evaluate.bootstrap import BootstrapSettings
from facetrust.evaluate.settings import (GROUPS, EDCSettings, IJBConvention, PairsSettings, RejectSettings,
                                         VerificationSettings)
from facetrust.yaml_files import load_yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "params.schema.yaml").read_text())
PARAMS = load_yaml(REPO / "params.yaml")

# Which sub-command takes a whole group (the rule that passes it).
SUBCOMMAND_OF = {IJBConvention: "ijb", VerificationSettings: "ijb", PairsSettings: "pairs",
                 RejectSettings: "reject", EDCSettings: "edc", BootstrapSettings: "ijb"}
REQUIRED = {"pairs": ["--embeddings", "e.npz", "--out", "m.json"],
            "ijb": ["--embeddings", "e.npz", "--protocol", "p", "--name", "n", "--out", "m.json"],
            "reject": ["--embeddings", "e.npz", "--out", "m.json"],
            "edc": ["--embeddings", "e.npz", "--out", "m.json"]}


def schema_section(path: tuple[str, ...]) -> dict:
    node = SCHEMA
    for key in path:
        node = node["properties"][key]
    return node["properties"]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_every_schema_default_equals_the_groups_default(group):
    section = schema_section(group.SECTION)
    compared = 0
    for field in group.option_fields():
        key = field.metadata["key"] or field.name
        if key not in section:
            continue  # a command-line-only option (e.g. --replicates) or one params gives elsewhere (seed)
        expected = tuple(field.default) if isinstance(field.default, tuple) else field.default
        got = section[key].get("default")
        assert got is not None, f"{group.__name__}.{field.name}: the schema has no default for {key}"
        assert (tuple(got) if isinstance(got, list) else got) == expected, f"{group.__name__}.{field.name}"
        compared += 1
    assert compared, f"{group.__name__}: no field found in the schema section {'.'.join(group.SECTION)}"


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_params_to_flags_and_back_gives_the_same_group(group):
    """What a rule passes (the group from params.yaml, as flags) parses back to the same group."""
    settings = group.from_params(PARAMS)
    changed = {}
    for field in group.option_fields():  # move every value off its default so a dropped flag shows
        value = getattr(settings, field.name)
        if isinstance(field.default, bool):
            changed[field.name] = not value
        elif field.metadata["choices"] is not None:
            changed[field.name] = next(c for c in field.metadata["choices"] if c != value)
    if "replicates_out" in {f.name for f in group.option_fields()}:
        changed["replicates_out"] = "r.npz"
    settings = dataclasses.replace(settings, **changed)
    command = SUBCOMMAND_OF[group]
    args = build_parser().parse_args(["evaluate", command, *REQUIRED[command], *settings.cli_args()])
    assert group.from_args(args) == settings


def test_the_rules_flags_are_the_groups():
    params = {"seed": 7, "evaluate": {"normalize_images": True, "use_detector_score": False, "flip": True,
                                      "bootstrap": {"n_resamples": 200, "level": 0.9, "within": True}}}
    assert ijb_flags(params["evaluate"]) == ["--normalize-images", "--no-detector-score"]
    assert bootstrap_args(params) == ["--bootstrap", "200", "--seed", "7", "--ci-level", "0.9", "--bootstrap-within"]
    assert ijb_flags({}) == [] and IJBConvention() == IJBConvention.from_params({})


@pytest.mark.parametrize("command, flag", [
    ("pairs", ["--how", "mean"]), ("pairs", ["--protocol", "p"]), ("pairs", ["--starting-error", "0.1"]),
    ("ijb", ["--how", "mean"]), ("ijb", ["--metric", "cosine"]), ("ijb", ["--quality", "q.csv"]),
    ("reject", ["--metric", "cosine"]), ("reject", ["--discard-limit", "0.1"]), ("reject", ["--roc", "r.csv"]),
    ("edc", ["--tar-method", "nearest"]), ("edc", ["--fraction-step", "0.1"]), ("edc", ["--csv", "c.csv"]),
])
def test_each_subcommand_refuses_the_others_flags(command, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["evaluate", command, *REQUIRED[command], *flag])
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_bootstrap_is_off_without_the_flag_and_takes_the_groups_count_with_it():
    parse = build_parser().parse_args
    assert BootstrapSettings.requested(parse(["evaluate", "ijb", *REQUIRED["ijb"]])) is None
    chosen = BootstrapSettings.requested(parse(["evaluate", "ijb", *REQUIRED["ijb"], "--bootstrap"]))
    assert chosen.n_resamples == BootstrapSettings().n_resamples == 1000
    chosen = BootstrapSettings.requested(parse(["evaluate", "ijb", *REQUIRED["ijb"], "--bootstrap", "50",
                                                "--replicates", "r.npz"]))
    assert (chosen.n_resamples, chosen.replicates_out) == (50, Path("r.npz"))


def test_the_sub_commands_defaults_are_the_groups():
    args = build_parser().parse_args(["evaluate", "reject", *REQUIRED["reject"]])
    assert RejectSettings.from_args(args) == RejectSettings()
    args = build_parser().parse_args(["evaluate", "edc", *REQUIRED["edc"]])
    assert EDCSettings.from_args(args) == EDCSettings()
    assert RejectSettings.from_args(args).space == RejectSettings().space
    args = build_parser().parse_args(["evaluate", "pairs", *REQUIRED["pairs"]])
    assert PairsSettings.from_args(args) == PairsSettings() and IJBConvention.from_args(args).flip is True


def _schema_default(section: tuple[str, ...], dotted: str):
    node = SCHEMA
    for key in (*section, *dotted.split(".")):
        node = node["properties"][key]
    return node.get("default")


def test_the_maps_group_owns_the_explain_map_flags_and_the_schema_s_defaults():
    """MapSettings: the schema's explain.gradient / explain.perturbation defaults are its own, the
    stages read params through it, and `explain map` takes its flags from it."""
    from facetrust.explain.defaults import MapSettings
    from facetrust.explain.faithfulness_stage import map_settings

    for field in MapSettings.option_fields():
        assert _schema_default(MapSettings.SECTION, field.metadata["key"]) == field.default, field.name
    section = {"gradient": {"steps": 4}, "perturbation": {"masks": 64, "cells": 3, "keep_probability": 0.25}}
    settings = map_settings(section, 7)
    assert settings == MapSettings(steps=4, masks=64, cells=3, keep_probability=0.25, seed=7)
    assert map_settings({}, 0) == MapSettings()
    args = build_parser().parse_args(["explain", "map", "a.png", "b.png", "--model", "m", "--out", "o.png",
                                      "--seed", "7", *settings.cli_args()])
    assert MapSettings.from_args(args) == settings
    args = build_parser().parse_args(["explain", "map", "a.png", "b.png", "--model", "m", "--out", "o.png"])
    assert MapSettings.from_args(args) == MapSettings()


def test_every_inversion_schema_default_is_the_inversion_config_s():
    from facetrust.explain.inversion import InversionConfig

    section = SCHEMA["properties"]["inversion"]["properties"]
    compared = 0
    for field in dataclasses.fields(InversionConfig):
        if field.name in section and "default" in section[field.name]:
            default = section[field.name]["default"]
            assert (tuple(default) if isinstance(default, list) else default) == field.default, field.name
            compared += 1
    assert compared >= 12
