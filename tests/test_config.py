"""params.yaml is validated against the schema; a bad key fails with a message naming it."""

import copy
from pathlib import Path

import pytest
import yaml

from facetrust.config import load_params, model_params, validate_params
from facetrust.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_params_validate_and_get_defaults():
    params = load_params(REPO / "params.yaml")
    assert params["evaluate"]["tar_method"] == "nearest"
    for model in params["models"].values():
        assert model["train"]["epochs"] >= 1
        assert "momentum" in model["train"]  # default filled in


def test_workflow_schema_is_the_package_schema():
    linked = REPO / "workflow" / "schemas" / "params.schema.yaml"
    shipped = REPO / "src" / "facetrust" / "schemas" / "params.schema.yaml"
    assert linked.read_text() == shipped.read_text()


@pytest.fixture
def params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_unknown_top_level_key_is_named(params):
    params["evaluat"] = {}
    with pytest.raises(ConfigError, match=r"'evaluat' was unexpected.*allowed keys: .*evaluate"):
        validate_params(params)


def test_bad_enum_value_names_the_key_path_and_allowed_values(params):
    model = next(iter(params["models"]))
    params["models"][model]["head"]["kind"] = "arcfase"
    with pytest.raises(ConfigError, match=rf"models\.{model}\.head\.kind: 'arcfase' is not one of .*'arcface'"):
        validate_params(params)


def test_wrong_type_is_refused(params):
    params["seed"] = "seven"
    with pytest.raises(ConfigError, match=r"seed: 'seven' is not of type 'integer'"):
        validate_params(params)


def test_missing_file_and_bad_yaml_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such params file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_params(bad)


def test_unknown_model_lists_the_configured_ones(params):
    validated = validate_params(copy.deepcopy(params))
    with pytest.raises(ConfigError, match="no such model; configured: "):
        model_params(validated, "not_a_model")


def test_synth_schema_describes_every_synth_config_field_with_its_default():
    import dataclasses

    from facetrust.config import schema
    from facetrust.data.synthetic import SynthConfig

    properties = schema()["properties"]["synth"]["properties"]
    fields = {f.name: f.default for f in dataclasses.fields(SynthConfig)}
    assert set(properties) == set(fields)
    for name, default in fields.items():
        expected = list(default) if isinstance(default, tuple) else default
        assert properties[name]["default"] == expected, name
        assert properties[name]["description"], name


def test_unknown_synth_key_is_named(params):
    params["synth"] = {"train_identites": 3}
    with pytest.raises(ConfigError, match="'train_identites' was unexpected"):
        validate_params(params)


def test_an_unknown_backbone_fails_validation_naming_the_key_not_the_train_job():
    import copy

    import yaml

    from facetrust.config import validate_params

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    broken = copy.deepcopy(params)
    broken["models"]["arcface"]["backbone"] = "iresnt"
    with pytest.raises(ConfigError, match=r"models\.arcface\.backbone: 'iresnt' is not a registered backbone"):
        validate_params(broken)
    validate_params(params)  # the embedded default passes


def test_a_control_variant_evaluates_another_variants_embeddings(params):
    from facetrust.config import embedded_variants, embeddings_variant, evaluate_args, resolve_variants

    variants = resolve_variants(params)
    assert embeddings_variant(variants, "arcface_kappa_control") == "arcface_scf"
    assert "arcface_kappa_control" not in embedded_variants(variants)
    assert evaluate_args(variants["arcface_kappa_vmf_control"]) == [
        "--pooling", "kappa", "--score", "scf_vmf", "--constant-uncertainty", "mean"]
    params["variants"]["bad"] = {"model": "arcface", "embeddings_of": "arcface_kappa_control"}
    with pytest.raises(ConfigError, match="variants.bad.embeddings_of"):
        resolve_variants(params)


def test_a_new_margin_s_own_options_are_valid_params_and_another_kind_s_option_is_refused(params, monkeypatch):
    """The margin recipe: a registered factory's keyword arguments are its params.yaml options
    (typed by their defaults); the schema file is not touched, and an option the kind does not take
    is refused naming it and the kind's options."""
    from facetrust.models.margins import MARGINS

    def adaface(s: float = 64.0, m: float = 0.4, h: float = 0.333, t_alpha: float = 0.01) -> dict:
        return {"logits": "linear"}

    monkeypatch.setitem(MARGINS._entries, "adaface", adaface)
    params["models"]["arcface"]["head"] = {"kind": "adaface", "s": 64.0, "h": 0.333, "t_alpha": 0.01}
    validate_params(copy.deepcopy(params))
    params["models"]["arcface"]["head"]["t_alpha"] = "fast"
    with pytest.raises(ConfigError, match=r"models\.arcface\.head\.t_alpha: 'fast' is not of type 'number'"):
        validate_params(copy.deepcopy(params))
    params["models"]["arcface"]["head"] = {"kind": "arcface", "s": 64.0, "m": 0.5, "h": 0.333}
    with pytest.raises(ConfigError, match=r"models\.arcface\.head: 'h' is not an option of margin 'arcface'; "
                                          r"its options: kind, seed, detach_margin, s, m, easy_margin"):
        validate_params(copy.deepcopy(params))


def test_scaleface_takes_its_scale_predictor_s_options(params):
    head = params["models"]["scaleface"]["head"]
    validate_params(copy.deepcopy(params))
    head["activation"] = "relu"
    validate_params(copy.deepcopy(params))
    head["m1"] = 0.5  # the combined margin's, not ScaleFace's
    with pytest.raises(ConfigError, match=r"'m1' is not an option of margin 'scaleface'"):
        validate_params(copy.deepcopy(params))
