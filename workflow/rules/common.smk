# Helpers shared by the rules: the effective configuration file, names of models and test sets,
# and input functions. No science here: that lives in src/facetrust.
import os
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError

from facetrust import config as fc

SYNTH_DIR = "data/synth"
MODELS = sorted(config["models"])
# A variant = a trained model + an optional uncertainty estimate (head or the model's own) + a
# template pooling (facetrust.config.resolve_variants: defaults, and errors that name the key).
VARIANTS = fc.resolve_variants(config)
fc.check_report_variants(config, VARIANTS)
HEADS = sorted(config["heads"])
PAIR_SETS = sorted(config["datasets"]["pairs"])
IJB_SETS = sorted(config["datasets"]["ijb"])
TEST_SETS = PAIR_SETS + IJB_SETS
# Validation pair sets: identities in no test or training set; the only sets on which a stage
# fits a threshold or chooses a value (tests/test_validation_split.py walks the DAG for it).
VALIDATION_SETS = config["datasets"].get("validation") or {}
THREADS = config["threads"]
# Models trained elsewhere (`source: pretrained`): imported, never trained (pretrained.smk).
PRETRAINED_MODELS = [m for m in MODELS if fc.is_pretrained(config, m)]
TRAINED_MODELS = [m for m in MODELS if m not in PRETRAINED_MODELS]


wildcard_constraints:
    model="|".join(MODELS),
    variant="|".join(VARIANTS),
    head="|".join(HEADS) or "no_heads",
    ijb="|".join(IJB_SETS),
    pairs="|".join(PAIR_SETS),
    testset="|".join(TEST_SETS),


def effective_params():
    """The merged configuration (params.yaml + --configfile/--config) as a file the CLI reads.

    A fixed path, rewritten only when its content changes, so the path itself never looks like a
    changed parameter; each rule declares the config sections it uses as `params`, so Snakemake
    reruns exactly the jobs whose settings changed."""
    text = yaml.safe_dump(config, sort_keys=True)
    path = Path(".snakemake/facetrust/params.yaml")
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"params.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return str(path)


PARAMS_FILE = effective_params()


def validation_pairs(wildcards=None):
    """The validation pair set (`explain.validation_set`) a choosing stage fits its values on."""
    name = config["explain"].get("validation_set", "synth_val")
    if name not in VALIDATION_SETS:
        raise ValueError(
            f"params: explain.validation_set: {name!r} is not a key of datasets.validation"
        )
    return VALIDATION_SETS[name]


def train_dir():
    return config["datasets"]["train"]


def ijb_dir(wildcards):
    return config["datasets"]["ijb"][wildcards.ijb]


def ijb_meta(wildcards):
    root = ijb_dir(wildcards)
    return [
        f"{root}/meta/{wildcards.ijb}_{part}.txt"
        for part in ("face_tid_mid", "name_5pts_score", "template_pair_label")
    ]


def testset_input(wildcards):
    """An IJB-style set is embedded from its aligned crops, a pair set from its .bin file."""
    if wildcards.testset in config["datasets"]["ijb"]:
        return f"data/aligned/{wildcards.testset}/aligned.idx"
    return config["datasets"]["pairs"][wildcards.testset]


def testset_path(wildcards):
    if wildcards.testset in config["datasets"]["ijb"]:
        return f"data/aligned/{wildcards.testset}"
    return config["datasets"]["pairs"][wildcards.testset]


def model_resources(key, default):
    """A train job's resource from its model's `resources` section; memory and runtime grow
    with the retry attempt (the SLURM profile retries failed jobs)."""

    def resource(wildcards, attempt):
        return (
            config["models"][wildcards.model].get("resources", {}).get(key, default)
            * attempt
        )

    return resource


def train_layout_value(key, when_distributed=True):
    """A train job's layout value (facetrust.config.train_layout: nodes, tasks, cpus_per_task...).
    With ``when_distributed``, None (= not declared, so the SLURM plugin adds nothing) for a
    one-process job, keeping its sbatch call as it was."""

    def value(wildcards):
        layout = fc.train_layout(config, wildcards.model)
        if when_distributed and layout["tasks"] == 1:
            return None
        # the SLURM plugin's keys: one task per GPU; `mpi` = the job starts its own srun step
        extra = {"tasks_per_gpu": 1 if layout["gpus"] else None, "mpi": "srun"}
        return extra[key] if key in extra else layout[key]

    return value


def train_threads(wildcards):
    """A train job's CPUs on one node: processes per node x CPUs per process."""
    layout = fc.train_layout(config, wildcards.model)
    return layout["tasks_per_node"] * layout["cpus_per_task"]


def failed_images_input(wildcards):
    """When align may skip images: the aligned set's index (align writes its manifest.json, which
    lists the skipped images, beside it in the same job; the manifest is not a declared output, so
    declaring it would rerun every existing align job); else nothing, and evaluation refuses an
    image the embeddings lack."""
    if config["align"].get("on_bad_image", "fail") != "skip":
        return []
    return [f"data/aligned/{wildcards.ijb}/index.csv"]


def failed_images_args(wildcards, input):
    """`--failed-images <the aligned manifest>` under align.on_bad_image: skip."""
    if not input.failed:
        return ""
    return f"--failed-images {Path(input.failed[0]).parent / 'manifest.json'}"


def run_cores(wildcards=None):
    """The run's `--cores`, for a job that has the machine to itself (the renderer, which nothing
    can run beside), on a local run; 1 on a cluster (the submitting process and the job must ask for
    the same threads: SLURM refuses a step that wants more than its allocation) and where the run
    has no `--cores` (`--unlock`)."""
    try:
        if workflow.remote_exec or workflow.non_local_exec:
            return 1
        return max(1, int(workflow.cores))
    except (WorkflowError, TypeError, ValueError):
        return 1


def paper_command(name, *raw, **flags):
    """The shell command of a paper's report (facetrust.report.papers), `facetrust report paper NAME
    --flag VALUE …`, flags in the order given (`_` -> `-`), each VALUE a Snakemake placeholder such as
    "{input.table}"; `raw` parts go in as they are (a params string that is itself flags); logged to {log}.
    """
    parts = [f"--{flag.replace('_', '-')} {value}" for flag, value in flags.items()]
    return " ".join(["facetrust report paper", name, *raw, *parts, "> {log} 2>&1"])


def grow(base):
    """A resource that grows with the retry attempt: base on the first try, 2x base on the second..."""
    return lambda wildcards, attempt: base * attempt


def variant_model(wildcards):
    return VARIANTS[wildcards.variant]["model"]


def variant_inputs(wildcards):
    """The model file a variant embeds with (checkpoint, or a pretrained model's descriptor), plus
    its fitted head if it has one."""
    variant = VARIANTS[wildcards.variant]
    inputs = [fc.model_file(config, variant["model"])]
    if "head" in variant:
        inputs.append(
            fc.path_of("head_file", model=variant["model"], head=variant["head"])
        )
    return inputs


def variant_uncertainty_args(wildcards):
    variant = VARIANTS[wildcards.variant]
    if "head" in variant:
        head_dir = fc.path_of("head_dir", model=variant["model"], head=variant["head"])
        return f"--head {head_dir}"
    if variant["uncertainty"] != "none":
        return f"--uncertainty {variant['uncertainty']}"
    return ""


def variant_label(name):
    return fc.variant_label(config, VARIANTS, name)


def table_variants(section):
    return fc.table_variants(config, VARIANTS, section)


def _rows(section):
    """(variants, method labels, backbones, train sets) of a report section, in table order."""
    return fc.table_rows(config, VARIANTS, section)


def _reject_variants():
    return config["report"]["reject"]["variants"]


def identity_source(wildcards):
    """quality.csv holds the identities of the synthetic pair set (angular Fisher score); real
    .bin sets carry none, so the score is left out there."""
    return (
        [f"{SYNTH_DIR}/quality.csv"] if config["datasets"]["source"] == "synth" else []
    )


def init_checkpoint(wildcards):
    """The checkpoint a model starts from (`train.init_from`, e.g. ScaleFace's frozen ArcFace)."""
    source = config["models"][wildcards.model]["train"].get("init_from")
    return [str(Path(source) / "checkpoint.pt")] if source else []


def base_variants(section):
    """The variants of a table that are a model's own embeddings (no fitted head): one per model."""
    return fc.base_variants(config, VARIANTS, section)


def ijb_flags():
    """The configured IJB convention (N, D, F flags) as `facetrust evaluate` options."""
    return " ".join(fc.ijb_flags(config["evaluate"]))


def model_file(wildcards):
    """A model's checkpoint, or the descriptor of a pretrained one (facetrust.config.model_file)."""
    return fc.model_file(config, wildcards.model)


def pretrained_path(wildcards):
    return config["models"][wildcards.model]["path"]


def needs_train_set():
    """Whether anything reads the training set: a model trained here or a fitted head."""
    return bool(TRAINED_MODELS) or any("head" in v for v in VARIANTS.values())


def ijb_table_test_set(section):
    return config["report"][section]["test_set"]


def ijbb_rows():
    """Rows of results/ijbb_table.csv: its own `variants`, else those of ijbc_table."""
    return _rows(
        "ijbb_table" if config["report"]["ijbb_table"]["variants"] else "ijbc_table"
    )


# Explanations (workflow/rules/explain.smk): xCos models, the explained pair set, the inversion.
fc.check_explain(config)
XCOS_MODELS = sorted(config["xcos"])
EXPLAIN_MODEL = fc.explain_model(config)
EXPLAIN_SET = config["explain"]["test_set"]
INVERSION_MODEL = config["inversion"]["model"]
XCOS_SCORES = ["xcos", "cosine", "standard_cosine"]
# The xCos chain (training its standard model, train_xcos, the explain stages on the xCos model)
# is the critical path of `all` (benchmarks/bench_pipeline.py). Its jobs get a higher Snakemake
# priority so they start as soon as their inputs exist and the other jobs fill the second core
# around them, instead of the chain running alone at the end. Outputs do not change.
CRITICAL_PRIORITY = 10
# The long jobs that are not on that chain: the inversion (invert_select ~0.6 min, then invert ~2.5
# min) needs only trained models, yet without a priority it waited behind the embed/evaluate jobs
# and ran alone for the last 0.8 min of `all` (one core idle); the trainings (train_priority) the
# same. Above the default, below the xCos chain. Outputs do not change.
LONG_PRIORITY = 5
XCOS_STANDARD_MODELS = sorted(
    {
        Path(config["xcos"][name][key]).name
        for name in XCOS_MODELS
        for key in ("init_from", "standard")
        if config["xcos"][name].get(key)
    }
)


def train_priority(wildcards):
    """A train job's priority: the xCos chain's models first (CRITICAL_PRIORITY), then every other
    training (LONG_PRIORITY). Trainings are the long jobs (the 32x32 iResNets ~1.5 min each) and
    need only the decoded set; at the default priority one waited behind the short embed and
    evaluate jobs and trained alone for the last 1.5 min of `all` (one core idle, note 15 of
    benchmarks/README.md). Started first, they leave the short jobs to fill both cores at the end.
    Outputs do not change."""
    return (
        CRITICAL_PRIORITY if wildcards.model in XCOS_STANDARD_MODELS else LONG_PRIORITY
    )


wildcard_constraints:
    xcos="|".join(XCOS_MODELS) or "no_xcos",
    score="|".join(XCOS_SCORES),


def xcos_replicate_dirs(name):
    """The other training seeds of xCos model `name` (written by its train_xcos job)."""
    count = int(config["xcos"][name].get("replicates", 1))
    return [f"models/{name}/replicate{r}" for r in range(1, count)]


def xcos_model_checkpoint(wildcards, key):
    """The training checkpoint an xCos model reads (`init_from` or `standard`)."""
    return str(Path(config["xcos"][wildcards.xcos][key]) / "checkpoint.pt")


def explain_outputs():
    """Every file of the explain stage (the `explain` target)."""
    files = []
    for name in XCOS_MODELS:
        files += expand(
            fc.PATHS["xcos_metrics"], xcos=name, test_set=EXPLAIN_SET, score=XCOS_SCORES
        )
        files.append(f"results/explain/validation/{name}/validation.json")
    if EXPLAIN_MODEL and config["datasets"]["source"] == "synth":  # known occluders
        files.append(
            fc.path_of("faithfulness", xcos=EXPLAIN_MODEL, test_set=EXPLAIN_SET)
        )
        files.append(fc.path_of("sanity", xcos=EXPLAIN_MODEL, test_set=EXPLAIN_SET))
    if INVERSION_MODEL:
        files.append(fc.path_of("inversion", model=INVERSION_MODEL))
    return files


def variant_embeddings(wildcards):
    """The embeddings file a variant evaluates: its own, or its `embeddings_of` variant's (controls)."""
    source = fc.embeddings_variant(VARIANTS, wildcards.variant)
    test_set = getattr(wildcards, "ijb", None) or getattr(wildcards, "pairs")
    return fc.path_of("embeddings", variant=source, test_set=test_set)


def variant_evaluate_args(wildcards):
    """Pooling, score and control options of a variant for `facetrust evaluate`."""
    return " ".join(fc.evaluate_args(VARIANTS[wildcards.variant]))


def bootstrap_args():
    """`--bootstrap N --seed S --ci-level L` from `evaluate.bootstrap` (paired across variants)."""
    return " ".join(fc.bootstrap_args(config))


def pair_identity_source(wildcards):
    """The identity list of a pair set (bootstrap subjects): quality.csv for the synthetic set,
    `datasets.pair_identities.<set>` for a real .bin; none: one cluster per pair."""
    if config["datasets"]["source"] == "synth":
        return [f"{SYNTH_DIR}/quality.csv"]
    path = (config["datasets"].get("pair_identities") or {}).get(wildcards.pairs)
    return [path] if path else []


def identities_args(wildcards, input):
    """`--identities FILE` when the pair set has an identity list (see pair_identity_source)."""
    return f"--identities {input.identities}" if input.identities else ""


# Your own folders to pack (datasets.pack; rules pack_* in data.smk).
PACK = config["datasets"]["pack"]


def pack_settings(wildcards):
    """The face-preparation flags every pack command shares."""
    return (
        f"--align {PACK['align']} --on-bad-image {PACK['on_bad_image']}"
        f" --min-score {PACK['min_score']}"
    )


def files_below(folder):
    """Every image file below a folder to pack (the packers' extensions; not hidden), so a changed or
    added image reruns the pack and a rewritten .DS_Store or notes.txt does not; a dangling symlink
    is left to the packer (it lists it as unreadable) instead of stopping the whole DAG. The folder
    itself when it is absent (Snakemake then names it as missing input)."""
    from facetrust.pack.faces import is_image_name

    if not os.path.isdir(folder):
        return [folder]
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(root, name)
            for name in sorted(files)
            if is_image_name(name) and os.path.exists(os.path.join(root, name))
        ]
    return found


# A packed test set is checked against the packed training set (`--training-faces`): the images that
# are byte for byte training images are listed in its pack.json (in_training_set) and logged.
TRAINING_FACES = "data/packed/train/faces.csv"


def training_faces_input(wildcards):
    return [TRAINING_FACES] if PACK["train"] else []


def training_faces_flag(wildcards):
    return f"--training-faces {TRAINING_FACES}" if PACK["train"] else ""


def pair_list_inputs(wildcards):
    spec = PACK["pairs"][wildcards.pairs]
    return [spec["list"], *files_below(spec["images"] or os.path.dirname(spec["list"]))]


def ijb_pack_inputs(wildcards):
    spec = PACK["ijb"][wildcards.ijb]
    return [spec["subjects"], *files_below(spec["images"])]
