# Training: backbone + margin head on the RecordIO training set (GPU on a cluster). A model whose
# `resources` ask for more than one process (nodes x tasks_per_node, one per GPU by default) trains
# data-parallel: on SLURM one sbatch allocation of nodes x tasks and an `srun` step that starts one
# trainer per task (the plugin's `mpi` resource makes the job run its own srun); on one machine
# torchrun. facetrust.config.train_layout / train_launcher and facetrust.train.launch hold the
# mapping (docs/ARCHITECTURE.md).


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
        # `facetrust`, or for several processes facetrust.train.launch (srun or torchrun), which
        # also gives each process its cpus_per_task threads
        launcher=lambda wildcards: fc.train_launcher(config, wildcards.model),
    log:
        "logs/train/{model}.log",
    benchmark:
        "logs/benchmark/train/{model}.tsv"
    threads: train_threads  # the CPUs of one node: processes per node x CPUs per process
    priority: train_priority
    conda:
        "../../envs/facetrust.yaml"
    resources:
        gpu=train_layout_value("gpus_total", when_distributed=False),
        mem_mb=model_resources("mem_mb", 8000),  # per node
        runtime=model_resources("runtime_min", 120),
        # several processes: sbatch --nodes/--ntasks(-per-gpu)/--cpus-per-task, and `mpi` tells the
        # SLURM plugin to run the job's command as it is (it starts its own srun step)
        nodes=train_layout_value("nodes"),
        tasks=train_layout_value("tasks"),
        cpus_per_task=train_layout_value("cpus_per_task"),
        tasks_per_gpu=train_layout_value("tasks_per_gpu"),
        mpi=train_layout_value("mpi"),
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


# xCos (explain line): the xCos branch on a frozen backbone initialised from a trained model,
# regressing the cosine of a frozen standard model; its `select` values are chosen on the validation
# pair set (models/<xcos>/validation.json), then `replicates` seeds train (replicate<r>/).
rule train_xcos:
    input:
        rec=f"{train_dir()}/train.rec",
        manifest="data/manifests/train.json",
        init=lambda wildcards: xcos_model_checkpoint(wildcards, "init_from"),
        standard=lambda wildcards: xcos_model_checkpoint(wildcards, "standard"),
        validation=validation_pairs,
    output:
        checkpoint="models/{xcos}/xcos.pt",
        log_csv="models/{xcos}/fit_log.csv",
        validation="models/{xcos}/validation.json",
    params:
        xcos=lambda wildcards: config["xcos"][wildcards.xcos],
        seed=config["seed"],
        config_file=PARAMS_FILE,
    log:
        "logs/train_xcos/{xcos}.log",
    benchmark:
        "logs/benchmark/train_xcos/{xcos}.tsv"
    threads: THREADS
    priority: CRITICAL_PRIORITY
    conda:
        "../../envs/facetrust.yaml"
    resources:
        gpu=1,
        mem_mb=grow(8000),
        runtime=grow(120),
    shell:
        "OMP_NUM_THREADS={threads} facetrust train-xcos --name {wildcards.xcos} --params {params.config_file}"
        " --out models/{wildcards.xcos} --validation {input.validation} --threads {threads} > {log} 2>&1"
