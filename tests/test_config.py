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


def test_train_schema_defaults_are_train_config_defaults():
    """A model's ``train`` block is filled from the schema's defaults before TrainConfig sees it:
    the two must agree, or a value would depend on which way a run is started."""
    import dataclasses

    from facetrust.config import schema
    from facetrust.train.config import TrainConfig

    properties = schema()["$defs"]["train"]["properties"]
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    with_default = {name: spec["default"] for name, spec in properties.items() if "default" in spec}
    assert "memory_format" in with_default and set(with_default) <= set(fields)
    for name, default in with_default.items():
        field = fields[name]
        expected = field.default_factory() if field.default is dataclasses.MISSING else field.default
        assert default == expected, name


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


# --- the schema snapshot cache (facetrust.config.registry_snapshot) --------------------------------

_SNAPSHOT_PROBE = """
import json, sys
from facetrust.config import load_params
load_params(sys.argv[1])
from facetrust.config import registry_snapshot
print(json.dumps({"torch": "torch" in sys.modules, "snapshot": registry_snapshot()}))
"""


def _probe(cache: str, params: Path = REPO / "params.yaml") -> dict:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "FACETRUST_CACHE_DIR": cache}
    done = subprocess.run([sys.executable, "-c", _SNAPSHOT_PROBE, str(params)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_a_warm_validation_reads_the_snapshot_without_torch_and_it_equals_the_live_registries(tmp_path):
    from facetrust.config import _live_snapshot, source_key

    cold = _probe(str(tmp_path))
    assert cold["torch"]  # the first validation builds the snapshot from the registries
    entry = tmp_path / "schema" / f"{source_key()}.json"
    assert entry.is_file()
    warm = _probe(str(tmp_path))
    assert not warm["torch"]  # ... every later one reads it
    live = _live_snapshot()
    assert warm["snapshot"] == cold["snapshot"] == live
    assert "iresnet50" in live["backbones"] and "arcface" in str(live["schema"]["$defs"]["head"])


_PARAMS_PROBE = """
import json, sys
from facetrust.config import load_params
print(json.dumps(load_params(sys.argv[1])))
"""


def test_cold_and_warm_validations_fill_the_defaults_in_the_same_key_order(tmp_path):
    """Snakemake compares a rule's params in key order: a snapshot read from the cache must fill
    the defaults in the order the live schema does, or every job after the first looks changed."""
    import os
    import subprocess
    import sys

    tiny = REPO / "tests" / "data" / "tiny_params.yaml"
    runs = []
    for _ in range(2):  # cold (builds and writes the snapshot), then warm (reads it)
        done = subprocess.run([sys.executable, "-c", _PARAMS_PROBE, str(tiny)], capture_output=True, text=True,
                              env={**os.environ, "FACETRUST_CACHE_DIR": str(tmp_path)}, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(done.stdout)
    assert (tmp_path / "schema").is_dir() and any((tmp_path / "schema").iterdir())
    import json

    assert list(json.loads(runs[0])["synth"]) == list(json.loads(runs[1])["synth"])
    assert runs[0] == runs[1]


def test_a_damaged_snapshot_is_rebuilt_and_off_writes_none(tmp_path):
    from facetrust.config import _live_snapshot, source_key

    entry = tmp_path / "schema" / f"{source_key()}.json"
    entry.parent.mkdir(parents=True)
    entry.write_text('{"schema": {"properties"')  # cut short
    assert _probe(str(tmp_path))["snapshot"] == _live_snapshot()
    import json

    assert json.loads(entry.read_text()) == _live_snapshot()
    entry.write_text('{"schema": [], "backbones": []}')  # valid JSON of the wrong shape
    assert _probe(str(tmp_path))["snapshot"] == _live_snapshot()
    assert _probe("off")["torch"]


def test_a_bad_backbone_is_named_from_a_warm_snapshot_too(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"]["arcface"]["backbone"] = "iresnet5O"
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    import os
    import subprocess
    import sys

    _probe(str(tmp_path))  # warm
    done = subprocess.run([sys.executable, "-c", _SNAPSHOT_PROBE, str(bad)], capture_output=True, text=True,
                          env={**os.environ, "FACETRUST_CACHE_DIR": str(tmp_path)}, timeout=120)
    assert done.returncode != 0 and "models.arcface.backbone: 'iresnet5O' is not a registered backbone" in done.stderr


def test_the_snapshot_key_changes_with_any_edited_added_or_removed_source_file(tmp_path):
    from facetrust.config import source_key

    package = tmp_path / "facetrust"
    (package / "models").mkdir(parents=True)
    (package / "models" / "margins.py").write_text("A = 1\n")
    (package / "schemas.yaml").write_text("a: 1\n")
    first = source_key(package)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "margins.cpython-311.pyc").write_bytes(b"\0")
    assert source_key(package) == first  # bytecode caches do not count
    (package / "models" / "margins.py").write_text("A = 2\n")
    edited = source_key(package)
    (package / "models" / "planted.py").write_text("")
    added = source_key(package)
    (package / "models" / "planted.py").unlink()
    (package / "models" / "margins.py").write_text("A = 1\n")
    assert len({first, edited, added}) == 3 and source_key(package) == first
    (package / "models" / "margins.py").rename(package / "margins.py")  # the same bytes elsewhere
    assert source_key(package) != first


def test_a_method_registered_in_this_process_reaches_the_schema(monkeypatch):
    """Once a registry module is imported, the snapshot is built live: a plugin's registration counts."""
    from facetrust.config import schema, schema_node
    from facetrust.models.margins import MARGINS

    def planted(s: float = 64.0, h: float = 0.3) -> dict:
        return {}

    monkeypatch.setitem(MARGINS._entries, "planted_here", planted)
    tree = schema()
    assert "planted_here" in schema_node(tree, ("models", "*", "head", "kind"))["enum"]
    assert "h" in tree["$defs"]["head"]["properties"]


def test_without_a_home_directory_the_caches_are_off_not_an_error(monkeypatch):
    from pathlib import Path

    import facetrust.config as config
    from facetrust.data import ijb_cache

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    for name in ("FACETRUST_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert config.cache_dir("schema") is None and ijb_cache.cache_root() is None
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    validate_params(params)  # validated from the live registries
