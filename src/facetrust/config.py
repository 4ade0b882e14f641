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


def schema() -> dict:
    """The params schema as a dict."""
    text = resources.files("facetrust.schemas").joinpath("params.schema.yaml").read_text()
    return yaml.safe_load(text)


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
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read params file: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return validate_params(params, source=str(path))


def model_params(params: dict, model: str) -> dict[str, Any]:
    """The ``models.<model>`` section; ConfigError lists the configured models if absent."""
    models = params.get("models", {})
    if model not in models:
        raise ConfigError(f"params: models.{model}: no such model; configured: {', '.join(sorted(models))}")
    return models[model]
