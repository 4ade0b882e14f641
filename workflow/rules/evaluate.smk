# Evaluation: IJB 1:1 verification (InsightFace eval_ijbc.py conventions by default).


rule evaluate_ijb:
    input:
        embeddings="embeddings/{variant}/{ijb}.npz",
        meta=ijb_meta,
    output:
        metrics="results/metrics/{variant}/{ijb}.json",
        roc="results/roc/{variant}/{ijb}.csv",
    params:
        ijb_dir=ijb_dir,
        fars=",".join(str(far) for far in config["evaluate"]["fars"]),
        flags=ijb_flags(),
        tar_method=config["evaluate"]["tar_method"],
        pooling=lambda wildcards: VARIANTS[wildcards.variant]["pooling"],
    log:
        "logs/evaluate/{variant}/{ijb}.log",
    benchmark:
        "logs/benchmark/evaluate/{variant}/{ijb}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(8000),
        runtime=grow(60),
    shell:
        "facetrust evaluate ijb --embeddings {input.embeddings} --protocol {params.ijb_dir}"
        " --name {wildcards.ijb} --out {output.metrics} --roc {output.roc} --fars {params.fars}"
        " {params.flags} --tar-method {params.tar_method} --pooling {params.pooling} > {log} 2>&1"


rule evaluate_pairs:
    input:
        embeddings="embeddings/{variant}/{pairs}.npz",
    output:
        metrics="results/metrics/{variant}/{pairs}.json",
        roc="results/roc/{variant}/{pairs}.csv",
    params:
        metric=config["evaluate"]["pairs"]["metric"],
        flip="" if config["evaluate"]["flip"] else "--no-flip",
    log:
        "logs/evaluate/{variant}/{pairs}.log",
    benchmark:
        "logs/benchmark/evaluate/{variant}/{pairs}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(4000),
        runtime=grow(30),
    shell:
        "facetrust evaluate pairs --embeddings {input.embeddings} --out {output.metrics}"
        " --roc {output.roc} --metric {params.metric} {params.flip} > {log} 2>&1"


rule evaluate_reject:
    input:
        embeddings="embeddings/{variant}/{ijb}.npz",
        meta=ijb_meta,
    output:
        curve="results/reject/{variant}/{ijb}.json",
        csv="results/reject/{variant}/{ijb}.csv",
    params:
        ijb_dir=ijb_dir,
        how=config["evaluate"]["reject"]["how"],
        space=config["evaluate"]["reject"]["space"],
        fars=",".join(str(far) for far in config["evaluate"]["reject"]["fars"]),
        step=config["evaluate"]["reject"]["fraction_step"],
        max_fraction=config["evaluate"]["reject"]["max_fraction"],
        pooling=lambda wildcards: VARIANTS[wildcards.variant]["pooling"],
        tar_method=config["evaluate"]["tar_method"],
    log:
        "logs/evaluate_reject/{variant}/{ijb}.log",
    benchmark:
        "logs/benchmark/evaluate_reject/{variant}/{ijb}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(8000),
        runtime=grow(60),
    shell:
        "facetrust evaluate reject --embeddings {input.embeddings} --protocol {params.ijb_dir}"
        " --name {wildcards.ijb} --out {output.curve} --csv {output.csv} --how {params.how}"
        " --space {params.space} --fars {params.fars} --fraction-step {params.step}"
        " --max-fraction {params.max_fraction} --pooling {params.pooling}"
        " --tar-method {params.tar_method} > {log} 2>&1"
