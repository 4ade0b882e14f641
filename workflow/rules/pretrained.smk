# Models trained elsewhere (`models.<name>.source: pretrained`): an arcface_torch backbone.pth or
# an ONNX file, checked once and recorded (path, sha256, input convention) as the model directory
# that embed, fit_head and explain read.


rule import_model:
    input:
        pretrained_path,
    output:
        "models/{model}/pretrained.json",
    wildcard_constraints:
        model="|".join(PRETRAINED_MODELS) or "no_pretrained_models",
    params:
        model=lambda wildcards: config["models"][wildcards.model],
        config_file=PARAMS_FILE,
    log:
        "logs/import_model/{model}.log",
    benchmark:
        "logs/benchmark/import_model/{model}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(4000),
        runtime=grow(10),
    shell:
        "facetrust import-model --model {wildcards.model} --params {params.config_file}"
        " --out models/{wildcards.model} > {log} 2>&1"
