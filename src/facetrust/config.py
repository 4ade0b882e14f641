"""Loading and validating ``params.yaml`` against the JSON schema shipped with the package.

Only the CLI and the Snakefile call this: library modules take plain arguments, never the file.
The schema (``facetrust/schemas/params.schema.yaml``, linked from ``workflow/schemas/``) gives every
key a type, a description and a default; defaults are filled in on load.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from facetrust.errors import ConfigError
from facetrust.io import atomic_path, cache_dir, source_digest
from facetrust.yaml_files import _expanded_size, _short, load_yaml

log = logging.getLogger(__name__)


def schema_file() -> dict:
    """The params schema exactly as the file ``params.schema.yaml`` writes it."""
    text = resources.files("facetrust.schemas").joinpath("params.schema.yaml").read_text()
    return yaml.safe_load(text)


# Schema locations whose ``enum`` is the name list of a registry: (key path, registry getter).
# ``*`` steps into ``additionalProperties`` (a map of user-named entries).
def _registry_enums() -> list[tuple[tuple[str, ...], list[str]]]:
    from facetrust.evaluate.poolings import POOLINGS
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
    (so the schema, the CLI choices and the registries cannot disagree) and each margin kind's
    options taken from its factory's signature (:func:`_margin_options`)."""
    return registry_snapshot()["schema"]


def _live_schema() -> dict:
    tree = schema_file()
    for path, names in _registry_enums():
        schema_node(tree, path)["enum"] = list(names)
    _margin_options(tree["$defs"]["head"])
    return tree


#: The modules that hold the registries :func:`schema` and :func:`_check_backbones` read.
REGISTRY_MODULES = ("facetrust.models.margins.kinds", "facetrust.models.uncertainty.methods",
                    "facetrust.evaluate.poolings", "facetrust.evaluate.pairs", "facetrust.evaluate.scores",
                    "facetrust.models.artifacts", "facetrust.models.registry")
SNAPSHOT_VERSION = 2  # 2: the live key order (1 wrote sorted keys)
SNAPSHOTS_KEPT = 8  # entries of other sources (older checkouts, edits) beyond these are removed


def registry_snapshot() -> dict:
    """``{"schema": the effective schema, "backbones": the registered backbone names}``.

    Building it imports every method module and with them torch: 1.8 of the 4.1 s a `snakemake -n`
    of the embedded default took, paid again by every job Snakemake starts (on SLURM each job runs
    the Snakefile).  While none of :data:`REGISTRY_MODULES` is imported, the registries hold exactly
    what the package's source registers, so the snapshot is read from a cache entry named by a
    SHA-256 over the Python version and every file of the package (:func:`source_key`): an edited,
    added or removed file, or another checkout, is a new key and never served stale.  Once a registry
    module is imported (a plugin may have registered a method in this process), it is built live.
    Where: ``$FACETRUST_CACHE_DIR/schema/`` (``off`` disables it), else ``~/.cache/facetrust/schema/``
    (``$XDG_CACHE_HOME``); a damaged entry is rebuilt, an unwritable directory only costs the time."""
    if any(name in sys.modules for name in REGISTRY_MODULES):
        return _live_snapshot()
    root = cache_dir("schema")
    if root is None:
        return _live_snapshot()
    if _read_snapshots:  # this process read it already (validate_params reads it twice)
        return copy.deepcopy(_read_snapshots[0])
    entry = root / f"{source_key()}.json"
    try:
        cached = json.loads(entry.read_text())
        if isinstance(cached, dict) and isinstance(cached.get("schema"), dict) \
                and isinstance(cached.get("backbones"), list):
            _read_snapshots.append(cached)
            return copy.deepcopy(cached)
    except (OSError, ValueError):
        pass
    snapshot = _live_snapshot()
    try:
        with atomic_path(entry) as tmp:
            # the live order, not sorted: the defaults validate_params fills follow the schema's key
            # order, and Snakemake compares a rule's params in order (sorted keys here made every job
            # after a cold start look changed: tests/test_config.py)
            tmp.write_text(json.dumps(snapshot))
        for stale in sorted(root.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[SNAPSHOTS_KEPT:]:
            stale.unlink(missing_ok=True)
    except OSError as error:
        log.debug("schema cache not written (%s)", error)
    return snapshot


_read_snapshots: list[dict] = []


def _live_snapshot() -> dict:
    from facetrust.models.registry import BACKBONES

    return {"schema": _live_schema(), "backbones": BACKBONES.names()}


def source_key(package: Path | None = None) -> str:
    """SHA-256 (hex) over the snapshot format and :func:`facetrust.io.source_digest` (the Python
    version and every file of the package; ``package``: its directory, default the installed one)."""
    return hashlib.sha256(f"facetrust-schema-v{SNAPSHOT_VERSION}\0{source_digest(package)}".encode()).hexdigest()


#: Options every margin head takes besides its factory's (facetrust.models.margins.build_head).
HEAD_COMMON_OPTIONS = ("kind", "seed", "detach_margin")
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _margin_options(head: dict) -> None:
    """``models.*.head`` per margin kind: the factory's keyword arguments (ScaleFace's also its
    scale predictor's), each typed by its default; an option of another kind is refused.

    A margin registered with new options (``h``, ``t_alpha`` …) is valid in params.yaml without
    touching the schema file, whose entries only add descriptions and bounds."""
    import inspect

    from facetrust.models.artifacts import SCALE_PREDICTOR_OPTIONS
    from facetrust.models.margins import MARGINS

    properties = head["properties"]
    rules = []
    for kind in MARGINS.names():
        parameters = inspect.signature(MARGINS.get(kind)).parameters
        names = list(parameters) + (list(SCALE_PREDICTOR_OPTIONS) if kind == "scaleface" else [])
        for name in names:
            if name not in properties and name in parameters:
                default = parameters[name].default
                json_type = _JSON_TYPES.get(type(default))
                properties[name] = {**({"type": json_type} if json_type else {}),
                                    "description": f"{kind} margin option (default {default!r})"}
            elif name not in properties:  # ScaleFace's scale predictor (models.artifacts)
                properties[name] = {"description": f"{kind}: scale predictor option"}
        rules.append({"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                      "then": {"propertyNames": {"enum": [*HEAD_COMMON_OPTIONS, *names]}}})
    head["allOf"] = rules


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
    try:  # a config loaded elsewhere (Snakemake's configfile) may share values through aliases
        _expanded_size(params, lambda v: v.items() if isinstance(v, dict) else v if isinstance(v, list) else (),
                       lambda v: isinstance(v, dict))
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: {error}") from None
    errors = sorted(_Validator(schema()).iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            message = f"{_short(error.message)}; allowed keys: {', '.join(allowed)}"
        elif "propertyNames" in error.schema_path:  # an option this margin kind does not take
            head = params
            for part in error.absolute_path:
                head = head[part]
            message = (f"{_short(repr(error.instance))} is not an option of margin {head.get('kind')!r}; "
                       f"its options: {', '.join(error.schema['enum'])}")
        else:
            message = _short(error.message)  # jsonschema quotes the whole offending value
        raise ConfigError(f"{source}: {_short(_key_path(error))}: {message}")
    _check_backbones(params, source)
    _check_packed_paths(params, source)
    return params


#: Where the pack rules write each packed set (datasets.pack; workflow/rules/data.smk).
PACKED_TRAIN, PACKED_PAIRS, PACKED_IJB = "data/packed/train", "data/packed/pairs/{name}.bin", "data/packed/ijb/{name}"


def _check_packed_paths(params: dict, source: str) -> None:
    """A set packed from your folders (datasets.pack) is read from where the pack rule writes it,
    so datasets.train / pairs / ijb must name that place (else the DAG would never pack it)."""
    datasets = params.get("datasets") or {}
    pack = datasets.get("pack") or {}
    wanted = []
    if pack.get("train"):
        wanted.append(("datasets.train", datasets.get("train"), PACKED_TRAIN))
    for kind, pattern in (("pairs", PACKED_PAIRS), ("ijb", PACKED_IJB)):
        for name in pack.get(kind) or {}:
            wanted.append((f"datasets.{kind}.{name}", (datasets.get(kind) or {}).get(name),
                           pattern.format(name=name)))
    for key, value, path in wanted:
        if value != path:
            raise ConfigError(f"{source}: {key}: {value!r}; a set packed by datasets.pack is written to {path!r}, "
                              f"so {key} must be {path!r}")


def _check_backbones(params: dict, source: str) -> None:
    """Every trained model names a registered backbone (so ``snakemake -n`` fails on a typo, not
    the train job); pretrained files are checked against their weights when imported."""
    backbones = registry_snapshot()["backbones"]
    for name, model in (params.get("models") or {}).items():
        if model.get("source", "train") == "pretrained" or "backbone" not in model:
            continue
        if model["backbone"] not in backbones:
            raise ConfigError(f"{source}: models.{name}.backbone: {model['backbone']!r} is not a registered backbone; "
                              f"allowed: {', '.join(backbones)}")


def load_params(path: str | Path) -> dict:
    """Read and validate a params file; every problem raises ConfigError naming the file and key."""
    return validate_params(load_yaml(path), source=str(path))


def model_params(params: dict, model: str) -> dict[str, Any]:
    """The ``models.<model>`` section; ConfigError lists the configured models if absent."""
    models = params.get("models", {})
    if model not in models:
        raise ConfigError(f"params: models.{model}: no such model; configured: {', '.join(sorted(models))}")
    return models[model]


def xcos_params(params: dict, name: str) -> dict[str, Any]:
    """The ``xcos.<name>`` section; ConfigError lists the configured xCos models if absent."""
    entries = params.get("xcos") or {}
    if name not in entries:
        raise ConfigError(f"params: xcos.{name}: no such xCos model; configured: {', '.join(sorted(entries)) or 'none'}")
    return entries[name]


def train_layout(params: dict, model: str) -> dict[str, int]:
    """How ``models.<model>``'s train job is laid out on a cluster, from its ``resources``:
    ``nodes``, ``gpus`` (per node), ``tasks_per_node`` (processes per node; default one per GPU,
    else 1), ``tasks`` (all processes), ``cpus_per_task`` (default the top-level ``threads``),
    ``gpus_total``.  One task is the single-process trainer; more are one data-parallel group
    (srun on SLURM, torchrun on one machine).  ConfigError when a layout cannot work."""
    resources = model_params(params, model).get("resources") or {}
    key = f"models.{model}.resources"
    nodes = int(resources.get("nodes", 1))
    gpus = int(resources.get("gpus", 1))
    tasks_per_node = int(resources.get("tasks_per_node", max(gpus, 1)))
    cpus_per_task = int(resources.get("cpus_per_task", params.get("threads", 1)))
    if gpus > 1 and tasks_per_node != gpus:
        raise ConfigError(f"params: {key}: tasks_per_node {tasks_per_node} with gpus {gpus}: "
                          "data-parallel training runs one process per GPU")
    tasks = nodes * tasks_per_node
    if tasks > 1:
        batch = int((model_params(params, model).get("train") or {}).get("batch_size", 0) or 0)
        if batch and batch % tasks:
            raise ConfigError(f"params: models.{model}.train.batch_size {batch} is not divisible by the "
                              f"{tasks} processes of {key} (nodes x tasks_per_node)")
    return {"nodes": nodes, "gpus": gpus, "tasks_per_node": tasks_per_node, "tasks": tasks,
            "cpus_per_task": cpus_per_task, "gpus_total": nodes * gpus}


def train_launcher(params: dict, model: str) -> str:
    """The words that start ``facetrust`` in ``models.<model>``'s train job: ``facetrust`` for one
    process; for several, :mod:`facetrust.train.launch` (one ``srun`` step inside a SLURM
    allocation, torchrun on one machine elsewhere) with the model's layout."""
    layout = train_layout(params, model)
    if layout["tasks"] == 1:
        return "facetrust"
    return (f"python -m facetrust.train.launch --nodes {layout['nodes']} "
            f"--tasks-per-node {layout['tasks_per_node']} --cpus-per-task {layout['cpus_per_task']} "
            f"--gpus {layout['gpus']} --")


# ------------------------------------------------------------------ variants, rows and paths
# Where each stage writes, relative to the working directory (the rules' outputs).  One template
# per artifact, so a path is spelled once (the rules and the CLI defaults read these).
PATHS = {
    "model_dir": "models/{model}",
    "checkpoint": "models/{model}/checkpoint.pt",
    "pretrained": "models/{model}/pretrained.json",
    "head_dir": "models/{model}/heads/{head}",
    "head_file": "models/{model}/heads/{head}/head.pt",
    "embeddings": "embeddings/{variant}/{test_set}.npz",
    "metrics": "results/metrics/{variant}/{test_set}.json",
    "roc": "results/roc/{variant}/{test_set}.csv",
    "reject": "results/reject/{variant}/{test_set}.json",
    "reject_csv": "results/reject/{variant}/{test_set}.csv",
    # explanations (facetrust explain …; docs/FORMATS.md "Explanation results")
    "xcos_dir": "models/{xcos}",
    "xcos_checkpoint": "models/{xcos}/xcos.pt",
    "pair_scores": "results/explain/scores/{xcos}/{test_set}.npz",
    "xcos_metrics": "results/explain/metrics/{xcos}/{test_set}.{score}.json",
    "faithfulness": "results/explain/faithfulness/{xcos}/{test_set}.json",
    "faithfulness_examples": "results/explain/faithfulness/{xcos}/{test_set}.examples.npz",
    "sanity": "results/explain/sanity/{xcos}/{test_set}.json",
    "explain_thresholds": "results/explain/thresholds/{xcos}.json",
    "inversion": "results/explain/inversion/{model}.json",
    "inversion_images": "results/explain/inversion/{model}.npz",
    "replicates": "results/bootstrap/{variant}/{test_set}.npz",
    "reject_replicates": "results/bootstrap/reject/{variant}/{test_set}.npz",
    "metrics_sphereface": "results/metrics/{variant}/{test_set}.sphereface.json",
    "edc": "results/edc/{variant}/{test_set}.json",
    "edc_replicates": "results/bootstrap/edc/{variant}/{test_set}.npz",
}


def path_of(artifact: str, **fields: str) -> str:
    """The path of ``artifact`` (a key of :data:`PATHS`) with its fields filled in."""
    return PATHS[artifact].format(**fields)


def is_pretrained(params: dict, model: str) -> bool:
    """Whether ``models.<model>`` is a file trained elsewhere (``source: pretrained``)."""
    return params["models"][model].get("source", "train") == "pretrained"


def model_file(params: dict, model: str) -> str:
    """The file that stands for a model downstream: its training checkpoint, or for a pretrained
    model the descriptor ``facetrust import-model`` writes (both in ``models/<model>/``)."""
    return path_of("pretrained" if is_pretrained(params, model) else "checkpoint", model=model)


def backbone_label(model: dict) -> str:
    """A model's backbone column in tables: ``backbone``, else (a pretrained file) the file's name."""
    return model.get("backbone") or Path(model["path"]).name


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
    if "pfe_sigma" in variant:
        args += ["--pfe-sigma", str(variant["pfe_sigma"])]
    return args


def reject_space(params: dict, variant: dict) -> str:
    """The uncertainty space of a variant's reject and EDC runs: its ``reject_space``, else
    ``evaluate.reject.space`` (``method``: each method's own)."""
    return str(variant.get("reject_space") or params["evaluate"]["reject"]["space"])


def bootstrap_args(params: dict) -> list[str]:
    """``--bootstrap N --seed S --ci-level L [--bootstrap-within]`` from ``evaluate.bootstrap`` and
    the top-level seed (:class:`facetrust.evaluate.bootstrap.BootstrapSettings`)."""
    from facetrust.evaluate.bootstrap import BootstrapSettings

    return BootstrapSettings.from_params(params).cli_args()


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
    return (names, [variant_label(params, variants, v) for v in names], [backbone_label(m) for m in models],
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
    """The ``facetrust evaluate`` flags of the configured IJB convention (N, D, F):
    :class:`facetrust.evaluate.settings.IJBConvention` of the ``evaluate`` section."""
    from facetrust.evaluate.settings import IJBConvention

    return IJBConvention.from_params({"evaluate": evaluate}).cli_args()


def explain_model(params: dict) -> str | None:
    """The xCos model every map explains (``explain.model``, default the first of ``xcos``), or None."""
    names = sorted(params.get("xcos") or {})
    chosen = (params.get("explain") or {}).get("model")
    return chosen or (names[0] if names else None)


def check_explain(params: dict) -> None:
    """The explanation sections name what exists: xCos names distinct from model names, their
    ``init_from``/``standard`` trained models, ``explain.model`` an xCos model, ``explain.test_set``
    a pair set, the inversion's model and verifier two different models (ConfigError naming the key)."""
    models, xcos = params.get("models") or {}, params.get("xcos") or {}
    model_dirs = {path_of("model_dir", model=m): m for m in models}
    for name, entry in xcos.items():
        if name in models:
            raise ConfigError(f"params: xcos.{name}: the name is also a key of models; xCos models need their own")
        for key in ("init_from", "standard"):
            if str(entry[key]).rstrip("/") not in model_dirs:
                raise ConfigError(f"params: xcos.{name}.{key}: {entry[key]!r} is not a trained model of this "
                                  f"configuration; configured: {', '.join(sorted(model_dirs))}")
    explain = params.get("explain") or {}
    if xcos and explain_model(params) not in xcos:
        raise ConfigError(f"params: explain.model: {explain.get('model')!r} is not a key of xcos; "
                          f"configured: {', '.join(sorted(xcos))}")
    if xcos and explain.get("test_set", "synth_lfw") not in (params.get("datasets") or {}).get("pairs", {}):
        raise ConfigError(f"params: explain.test_set: {explain.get('test_set')!r} is not a key of datasets.pairs")
    datasets = params.get("datasets") or {}
    validation, tests = datasets.get("validation") or {}, datasets.get("pairs") or {}
    overlap = sorted(set(validation) & set(tests)) + sorted(
        name for name, path in validation.items() if path in set(tests.values()))
    if overlap:
        raise ConfigError(f"params: datasets.validation.{overlap[0]}: a test set cannot be a validation set "
                          "(nothing is chosen on a test set)")
    if xcos and explain.get("validation_set", "synth_val") not in validation:
        raise ConfigError(f"params: explain.validation_set: {explain.get('validation_set', 'synth_val')!r} is not "
                          "a key of datasets.validation (thresholds are fitted on a validation split)")
    inversion = params.get("inversion") or {}
    for key in ("model", "verifier"):
        if inversion.get(key) is not None and inversion[key] not in models:
            raise ConfigError(f"params: inversion.{key}: {inversion[key]!r} is not a key of models; "
                              f"configured: {', '.join(sorted(models))}")
    if (inversion.get("model") is None) != (inversion.get("verifier") is None):
        raise ConfigError("params: inversion.model and inversion.verifier go together (the images are checked "
                          "by the verifier)")
    if inversion.get("model") is not None and inversion.get("model") == inversion.get("verifier"):
        raise ConfigError("params: inversion.verifier must be a second, independently trained model, "
                          "not inversion.model itself")
    for name in inversion.get("secondary_verifiers") or []:
        if name not in models:
            raise ConfigError(f"params: inversion.secondary_verifiers: {name!r} is not a key of models")
    if inversion.get("model") is not None:
        inverted, verifier = models[inversion["model"]] or {}, models[inversion["verifier"]] or {}

        def seed_of(entry):
            return (entry.get("train") or {}).get("seed", params.get("seed"))

        # DeepInversion's check is only independent when the verifier shares neither the inverted
        # model's architecture nor its initial weights, sample order and flips (all from the seed)
        if "backbone" in inverted and inverted.get("backbone") == verifier.get("backbone"):
            raise ConfigError(f"params: inversion.verifier {inversion['verifier']!r} has the inverted model's "
                              f"architecture ({inverted['backbone']}); the independent verifier needs another one "
                              "(a twin goes under inversion.secondary_verifiers)")
        if "backbone" in inverted and seed_of(inverted) == seed_of(verifier):
            raise ConfigError(f"params: inversion.verifier {inversion['verifier']!r} has the inverted model's seed "
                              f"({seed_of(inverted)}), so the same initialisation and data order: give it its own "
                              "models.<verifier>.train.seed")
