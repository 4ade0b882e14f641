# Training: backbone + margin head on the RecordIO training set (GPU on a cluster; DDP under
# torchrun when a job gets more than one GPU).


rule train:
    input:
        rec=f"{train_dir()}/train.rec",
        manifest="data/manifests/train.json",
        init=init_checkpoint,
    output:
        checkpoint="models/{model}/checkpoint.pt",
        log_csv="models/{model}/train_log.csv",
    params:
        model=lambda wildcards: config["models"][wildcards.model],
        seed=config["seed"],
        config_file=PARAMS_FILE,
        launcher=lambda wildcards, resources: (
            f"torchrun --standalone --nproc_per_node={resources.gpu} -m facetrust.cli"
            if resources.gpu > 1
            else "facetrust"
        ),
    log:
        "logs/train/{model}.log",
    benchmark:
        "logs/benchmark/train/{model}.tsv"
    threads: THREADS
    conda:
        "../../envs/facetrust.yaml"
    resources:
        gpu=model_resources("gpus", 1),
        mem_mb=model_resources("mem_mb", 8000),
        runtime=model_resources("runtime_min", 120),
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} train --model {wildcards.model} --params {params.config_file}"
        " --out models/{wildcards.model} --threads {threads} > {log} 2>&1"


rule fit_head:
    input:
        model=model_file,
        rec=f"{train_dir()}/train.rec",
    output:
        "models/{model}/heads/{head}/head.pt",
    params:
        head=lambda wildcards: config["heads"][wildcards.head],
        seed=config["seed"],
        config_file=PARAMS_FILE,
    log:
        "logs/fit_head/{model}/{head}.log",
    benchmark:
        "logs/benchmark/fit_head/{model}/{head}.tsv"
    threads: THREADS
    conda:
        "../../envs/facetrust.yaml"
    resources:
        gpu=1,
        mem_mb=grow(8000),
        runtime=grow(120),
    shell:
        "OMP_NUM_THREADS={threads} facetrust fit-head --model {wildcards.model} --head {wildcards.head}"
        " --params {params.config_file} --out models/{wildcards.model}/heads/{wildcards.head}"
        " --threads {threads} > {log} 2>&1"


# xCos (explain line): the xCos branch on a backbone initialised from a trained model, regressing
# the cosine of a frozen, separately trained standard model.
rule train_xcos:
    input:
        rec=f"{train_dir()}/train.rec",
        manifest="data/manifests/train.json",
        init=lambda wildcards: xcos_model_checkpoint(wildcards, "init_from"),
        standard=lambda wildcards: xcos_model_checkpoint(wildcards, "standard"),
    output:
        checkpoint="models/{xcos}/xcos.pt",
        log_csv="models/{xcos}/fit_log.csv",
    params:
        xcos=lambda wildcards: config["xcos"][wildcards.xcos],
        seed=config["seed"],
        config_file=PARAMS_FILE,
    log:
        "logs/train_xcos/{xcos}.log",
    benchmark:
        "logs/benchmark/train_xcos/{xcos}.tsv"
    threads: THREADS
    conda:
        "../../envs/facetrust.yaml"
    resources:
        gpu=1,
        mem_mb=grow(8000),
        runtime=grow(120),
    shell:
        "OMP_NUM_THREADS={threads} facetrust train-xcos --name {wildcards.xcos} --params {params.config_file}"
        " --out models/{wildcards.xcos} --threads {threads} > {log} 2>&1"
