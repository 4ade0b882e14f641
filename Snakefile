# facetrust workflow: params.yaml -> synthetic or real data -> trained models -> embeddings ->
# metrics -> tables and per-paper reports. Each rule runs one `facetrust <stage>` command.
# Run: `snakemake --cores all results/ijbc_table.csv` (or `make run`); on SLURM:
# `snakemake --profile slurm results/ijbc_table.csv`.
from facetrust.config import validate_params
from facetrust.float_path import pin_environment

# Every job's CPU kernels on their AVX2 paths: the same bytes on any x86-64 (facetrust.float_path).
pin_environment()


configfile: "params.yaml"


# Validates against workflow/schemas/params.schema.yaml, fills defaults, names a bad key.
validate_params(config, source="params.yaml (+ --configfile/--config overrides)")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/align.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/pretrained.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/explain.smk"


REPORT_TARGETS = ["results/ijbc_table.csv", "results/reports/scf.md"]
if (
    config["datasets"]["source"] == "synth"
):  # known quality exists only for the synthetic benchmark
    REPORT_TARGETS.append("results/quality_split.csv")
if config["report"]["ijbb_table"]["test_set"] in IJB_SETS:  # IJB-B beside IJB-C
    REPORT_TARGETS.append("results/ijbb_table.csv")
if config["report"]["verification_table"]["variants"]:
    REPORT_TARGETS += [
        "results/verification_table.csv",
        "results/reports/sphereface.md",
    ]
if config["report"]["reject"]["variants"]:
    REPORT_TARGETS += [
        "results/quality_table.csv",
        "results/edc_table.csv",
        "results/reports/scaleface.md",
    ]
# Explain line: xCos accuracy, faithfulness and localisation (known occluders: synthetic only),
# inversion.
if XCOS_MODELS:
    REPORT_TARGETS.append("results/reports/xcos.md")
    if config["datasets"]["source"] == "synth":
        REPORT_TARGETS.append("results/reports/explanations.md")
if INVERSION_MODEL:
    REPORT_TARGETS.append("results/reports/inversion.md")


# Every table, figure and per-paper report (the main job is results/ijbc_table.csv).
rule all:
    input:
        REPORT_TARGETS,
    default_target: True


# Named targets of the coarse DVC stages (dvc.yaml): one per stage of the picture.
rule data:
    input:
        ["data/manifests/train.json"] if needs_train_set() else [],
        expand("data/aligned/{ijb}/index.csv", ijb=IJB_SETS),


# Fitted uncertainty heads: one per (model, head) pair that a variant uses.
HEAD_FILES = sorted(
    {
        f"models/{v['model']}/heads/{v['head']}/head.pt"
        for v in VARIANTS.values()
        if "head" in v
    }
)


rule models:
    input:
        [fc.model_file(config, model) for model in MODELS],
        HEAD_FILES,
        expand("models/{xcos}/xcos.pt", xcos=XCOS_MODELS),


rule embeddings:
    input:
        expand(
            "embeddings/{variant}/{ijb}.npz",
            variant=fc.embedded_variants(VARIANTS),
            ijb=IJB_SETS,
        ),
        expand(
            "embeddings/{variant}/{pairs}.npz",
            variant=config["report"]["verification_table"]["variants"],
            pairs=config["report"]["verification_table"]["test_set"],
        ),


rule metrics:
    input:
        expand("results/metrics/{variant}/{ijb}.json", variant=VARIANTS, ijb=IJB_SETS),
        expand(
            "results/metrics/{variant}/{pairs}.json",
            variant=config["report"]["verification_table"]["variants"],
            pairs=config["report"]["verification_table"]["test_set"],
        ),
        expand(
            "results/reject/{variant}/{ijb}.json",
            variant=config["report"]["reject"]["variants"],
            ijb=config["report"]["reject"]["test_set"],
        ),
        expand(
            "results/edc/{variant}/{ijb}.json",
            variant=config["report"]["reject"]["variants"],
            ijb=config["report"]["reject"]["test_set"],
        ),
        expand(
            "results/metrics/{variant}/{pairs}.sphereface.json",
            variant=config["evaluate"]["pairs"]["sphereface_variants"],
            pairs=config["report"]["verification_table"]["test_set"],
        ),


# The explain stage's scores, metrics, faithfulness results and inversions.
rule explain:
    input:
        explain_outputs(),


rule tables:
    input:
        REPORT_TARGETS,
