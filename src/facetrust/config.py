"""Loading and validating ``params.yaml`` against the JSON schema shipped with the package.

Only the CLI and the Snakefile call this: library modules take plain arguments, never the file.
The schema (``facetrust/schemas/params.schema.yaml``, linked from ``workflow/schemas/``) gives every
key a type, a description and a default; defaults are filled in on load.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from facetrust.errors import ConfigError


def schema_file() -> dict:
    """The params schema exactly as the file ``params.schema.yaml`` writes it."""
    text = resources.files("facetrust.schemas").joinpath("params.schema.yaml").read_text()
    return yaml.safe_load(text)


# Schema locations whose ``enum`` is the name list of a registry: (key path, registry getter).
# ``*`` steps into ``additionalProperties`` (a map of user-named entries).
def _registry_enums() -> list[tuple[tuple[str, ...], list[str]]]:
    from facetrust.evaluate.fusion import POOLINGS
    from facetrust.evaluate.pairs import PAIR_DISTANCES
    from facetrust.evaluate.scores import SCORES
    from facetrust.models.margins import MARGINS
    from facetrust.models.uncertainty.methods import MODEL_UNCERTAINTIES, UNCERTAINTY_HEADS

    return [
        (("models", "*", "head", "kind"), MARGINS.names()),
        (("heads", "*", "method"), UNCERTAINTY_HEADS.names()),
        (("variants", "*", "uncertainty"), ["none", *MODEL_UNCERTAINTIES.names()]),
        (("variants", "*", "pooling"), POOLINGS.names()),
        (("variants", "*", "score"), SCORES.names()),
        (("evaluate", "pairs", "metric"), PAIR_DISTANCES.names()),
    ]


def schema_node(tree: dict, path: tuple[str, ...]) -> dict:
    """The sub-schema at ``path`` (``*`` = the ``additionalProperties`` schema of a map)."""
    node = tree
    for part in path:
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
        if "$ref" in node and part != path[-1]:
            node = tree["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def schema() -> dict:
    """The params schema, with the enums of registered methods taken from their registries
    (so the schema, the CLI choices and the registries cannot disagree)."""
    tree = schema_file()
    for path, names in _registry_enums():
        schema_node(tree, path)["enum"] = list(names)
    return tree


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, node_schema):
        if isinstance(instance, dict):
            for key, sub_schema in properties.items():
                if "default" in sub_schema and key not in instance:
                    instance[key] = copy.deepcopy(sub_schema["default"])
        yield from validate_properties(validator, properties, instance, node_schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "<top level>"


def validate_params(params: dict, source: str = "params.yaml") -> dict:
    """Validate ``params`` in place (filling defaults) and return it.

    Raises ConfigError naming the first offending key, e.g.
    ``params.yaml: models.arcface.head.kind: 'arcfase' is not one of ['arcface', …]``.
    """
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(params).__name__}")
    errors = sorted(_Validator(schema()).iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            message = f"{error.message}; allowed keys: {', '.join(allowed)}"
        else:
            message = error.message
        raise ConfigError(f"{source}: {_key_path(error)}: {message}")
    return params


def load_params(path: str | Path) -> dict:
    """Read and validate a params file; every problem raises ConfigError naming the file and key."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return validate_params(params, source=str(path))


def model_params(params: dict, model: str) -> dict[str, Any]:
    """The ``models.<model>`` section; ConfigError lists the configured models if absent."""
    models = params.get("models", {})
    if model not in models:
        raise ConfigError(f"params: models.{model}: no such model; configured: {', '.join(sorted(models))}")
    return models[model]


# ------------------------------------------------------------------ variants, rows and paths
# Where each stage writes, relative to the working directory (the rules' outputs).  One template
# per artifact, so a path is spelled once (the rules and the CLI defaults read these).
PATHS = {
    "model_dir": "models/{model}",
    "checkpoint": "models/{model}/checkpoint.pt",
    "head_dir": "models/{model}/heads/{head}",
    "head_file": "models/{model}/heads/{head}/head.pt",
    "embeddings": "embeddings/{variant}/{test_set}.npz",
    "metrics": "results/metrics/{variant}/{test_set}.json",
    "roc": "results/roc/{variant}/{test_set}.csv",
    "reject": "results/reject/{variant}/{test_set}.json",
    "reject_csv": "results/reject/{variant}/{test_set}.csv",
    "replicates": "results/bootstrap/{variant}/{test_set}.npz",
    "reject_replicates": "results/bootstrap/reject/{variant}/{test_set}.npz",
    "metrics_sphereface": "results/metrics_sphereface/{variant}/{test_set}.json",
    "edc": "results/edc/{variant}/{test_set}.json",
    "edc_replicates": "results/bootstrap/edc/{variant}/{test_set}.npz",
}


def path_of(artifact: str, **fields: str) -> str:
    """The path of ``artifact`` (a key of :data:`PATHS`) with its fields filled in."""
    return PATHS[artifact].format(**fields)


def resolve_variants(params: dict) -> dict[str, dict[str, Any]]:
    """``variants`` with defaults filled in (``uncertainty: none``, ``pooling: mean``); without a
    ``variants`` section every model is one variant.  ConfigError names a variant whose ``model`` or
    ``head`` is not configured."""
    models, heads = params.get("models") or {}, params.get("heads") or {}
    variants = params.get("variants") or {model: {"model": model} for model in sorted(models)}
    resolved = {}
    for name, variant in variants.items():
        variant = {"uncertainty": "none", "pooling": "mean", "score": "cosine", **variant}
        if variant["model"] not in models:
            raise ConfigError(f"params: variants.{name}.model: {variant['model']!r} is not a key of models; "
                              f"configured: {', '.join(sorted(models))}")
        if "head" in variant and variant["head"] not in heads:
            raise ConfigError(f"params: variants.{name}.head: {variant['head']!r} is not a key of heads; "
                              f"configured: {', '.join(sorted(heads)) or 'none'}")
        resolved[name] = variant
    for name, variant in resolved.items():
        source = variant.get("embeddings_of")
        if source is not None and (source not in resolved or "embeddings_of" in resolved[source]):
            raise ConfigError(f"params: variants.{name}.embeddings_of: {source!r} is not a variant that embeds; "
                              f"configured: {', '.join(sorted(v for v in resolved if 'embeddings_of' not in resolved[v]))}")
    return resolved


def embeddings_variant(variants: dict[str, dict], name: str) -> str:
    """The variant whose embeddings file ``name`` evaluates: its ``embeddings_of``, else itself."""
    return variants[name].get("embeddings_of", name)


def embedded_variants(variants: dict[str, dict]) -> list[str]:
    """The variants that are embedded (no ``embeddings_of``), in configuration order."""
    return [name for name, variant in variants.items() if "embeddings_of" not in variant]


def evaluate_args(variant: dict) -> list[str]:
    """The ``facetrust evaluate ijb|reject`` options a variant adds: pooling, score, control."""
    args = ["--pooling", variant.get("pooling", "mean"), "--score", variant.get("score", "cosine")]
    if "constant_uncertainty" in variant:
        args += ["--constant-uncertainty", str(variant["constant_uncertainty"])]
    return args


def bootstrap_args(params: dict) -> list[str]:
    """``--bootstrap N --seed S --ci-level L`` from ``evaluate.bootstrap`` and the top-level seed."""
    settings = params["evaluate"]["bootstrap"]
    return ["--bootstrap", str(settings["n_resamples"]), "--seed", str(params["seed"]),
            "--ci-level", str(settings["level"])] + (["--bootstrap-within"] if settings["within"] else [])


def check_report_variants(params: dict, variants: dict[str, dict]) -> None:
    """Every variant a report section names must exist (ConfigError naming the section and key)."""
    for section, settings in (params.get("report") or {}).items():
        for name in (settings or {}).get("variants") or []:
            if name not in variants:
                raise ConfigError(f"params: report.{section}.variants: {name!r} is not a key of variants; "
                                  f"configured: {', '.join(sorted(variants))}")


def variant_label(params: dict, variants: dict[str, dict], name: str) -> str:
    """A variant's row name in tables: its ``method``, else its model's ``method``, else its name."""
    variant = variants[name]
    return variant.get("method") or params["models"][variant["model"]].get("method", name)


def table_variants(params: dict, variants: dict[str, dict], section: str) -> list[str]:
    """The variants of report section ``section``, in table order (empty: every variant, sorted)."""
    return list(params["report"][section]["variants"] or sorted(variants))


def table_rows(params: dict, variants: dict[str, dict], section: str) -> tuple[list, list, list, list]:
    """(variants, method labels, backbones, train sets) of a report section, in table order."""
    names = table_variants(params, variants, section)
    models = [params["models"][variants[v]["model"]] for v in names]
    return (names, [variant_label(params, variants, v) for v in names], [m["backbone"] for m in models],
            [m["train_set"] for m in models])


def base_variants(params: dict, variants: dict[str, dict], section: str) -> list[str]:
    """The variants of a table that are a model's own embeddings (no fitted head): one per model."""
    seen, names = set(), []
    for name in table_variants(params, variants, section):
        model = variants[name]["model"]
        if "head" not in variants[name] and model not in seen:
            seen.add(model)
            names.append(name)
    return names


def ijb_flags(evaluate: dict) -> list[str]:
    """The ``facetrust evaluate`` flags of the configured IJB convention (N, D, F)."""
    return [flag for flag, on in (("--normalize-images", evaluate["normalize_images"]),
                                  ("--no-detector-score", not evaluate["use_detector_score"]),
                                  ("--no-flip", not evaluate["flip"])) if on]
