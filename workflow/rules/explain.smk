# Explanations: xCos scores and their 10-fold accuracy, every map scored against known truth
# (deletion/insertion, occluder localisation), and ArcFace model inversion checked by a verifier.


rule xcos_scores:
    input:
        model="models/{xcos}/xcos.pt",
        standard=lambda wildcards: xcos_model_checkpoint(wildcards, "standard"),
        pairs=lambda wildcards: config["datasets"]["pairs"][wildcards.pairs],
    output:
        "results/explain/scores/{xcos}/{pairs}.npz",
    params:
        standard=lambda wildcards: config["xcos"][wildcards.xcos]["standard"],
        replicates=lambda wildcards: " ".join(xcos_replicate_dirs(wildcards.xcos)),
    log:
        "logs/explain/scores/{xcos}/{pairs}.log",
    benchmark:
        "logs/benchmark/explain/scores/{xcos}/{pairs}.tsv"
    threads: THREADS
    conda:
        "../../envs/facetrust.yaml"
    resources:
        gpu=1,
        mem_mb=grow(4000),
        runtime=grow(30),
    shell:
        "OMP_NUM_THREADS={threads} facetrust explain score --model models/{wildcards.xcos}"
        " --standard {params.standard} --replicates {params.replicates} --test-set {input.pairs}"
        " --out {output} > {log} 2>&1"


rule xcos_validation_record:
    # the report stage reads results only (DVC's CI-from-cache never pulls models/): the training
    # stage's record of the choices made on the validation split is copied beside the explain results
    input:
        "models/{xcos}/validation.json",
    output:
        "results/explain/validation/{xcos}/validation.json",
    log:
        "logs/explain/validation/{xcos}.log",
    benchmark:
        "logs/benchmark/explain/validation/{xcos}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(500),
        runtime=grow(5),
    shell:
        "cp {input} {output} > {log} 2>&1"


rule evaluate_xcos:
    input:
        "results/explain/scores/{xcos}/{pairs}.npz",
    output:
        "results/explain/metrics/{xcos}/{pairs}.{score}.json",
    params:
        references=lambda wildcards: (
            "--reference-key cosine standard_cosine"
            if wildcards.score == "xcos"
            else ""
        ),
    log:
        "logs/explain/metrics/{xcos}/{pairs}.{score}.log",
    benchmark:
        "logs/benchmark/explain/metrics/{xcos}/{pairs}.{score}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(2000),
        runtime=grow(10),
    shell:
        "facetrust evaluate pairs --scores {input} --score-key {wildcards.score}"
        " {params.references} --out {output} > {log} 2>&1"


rule explain_thresholds:
    input:
        model="models/{xcos}/xcos.pt",
        validation=validation_pairs,
        twins=lambda wildcards: validation_pairs(wildcards).replace(
            ".bin", ".twins.npz"
        ),
        occluders=f"{SYNTH_DIR}/occluders.csv",
    output:
        "results/explain/thresholds/{xcos}.json",
    params:
        explain=config["explain"],
        config_file=PARAMS_FILE,
    log:
        "logs/explain/thresholds/{xcos}.log",
    benchmark:
        "logs/benchmark/explain/thresholds/{xcos}.tsv"
    threads: THREADS
    priority: CRITICAL_PRIORITY
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(4000),
        runtime=grow(30),
    shell:
        "OMP_NUM_THREADS={threads} facetrust explain thresholds --model models/{wildcards.xcos}"
        " --validation {input.validation} --occluders {input.occluders} --twins {input.twins}"
        " --params {params.config_file} --out {output} > {log} 2>&1"


rule explain_sanity:
    input:
        model="models/{xcos}/xcos.pt",
        pairs=lambda wildcards: config["datasets"]["pairs"][wildcards.pairs],
        validation=validation_pairs,
        thresholds="results/explain/thresholds/{xcos}.json",
    output:
        results="results/explain/sanity/{xcos}/{pairs}.json",
        examples="results/explain/sanity/{xcos}/{pairs}.examples.npz",
    params:
        explain=config["explain"],
        seed=config["seed"],
        config_file=PARAMS_FILE,
    log:
        "logs/explain/sanity/{xcos}/{pairs}.log",
    benchmark:
        "logs/benchmark/explain/sanity/{xcos}/{pairs}.tsv"
    threads: THREADS
    priority: CRITICAL_PRIORITY
    conda:
        "../../envs/facetrust.yaml"
    resources:
        gpu=1,
        mem_mb=grow(4000),
        runtime=grow(60),
    shell:
        "OMP_NUM_THREADS={threads} facetrust explain sanity --model models/{wildcards.xcos}"
        " --test-set {input.pairs} --validation {input.validation} --thresholds {input.thresholds}"
        " --params {params.config_file} --out {output.results} --examples {output.examples} > {log} 2>&1"


rule explain_faithfulness:
    input:
        model="models/{xcos}/xcos.pt",
        pairs=lambda wildcards: config["datasets"]["pairs"][wildcards.pairs],
        twins=lambda wildcards: config["datasets"]["pairs"][wildcards.pairs].replace(
            ".bin", ".twins.npz"
        ),
        validation=validation_pairs,
        thresholds="results/explain/thresholds/{xcos}.json",
        occluders=f"{SYNTH_DIR}/occluders.csv",
    output:
        results="results/explain/faithfulness/{xcos}/{pairs}.json",
        examples="results/explain/faithfulness/{xcos}/{pairs}.examples.npz",
    params:
        explain=config["explain"],
        seed=config["seed"],
        config_file=PARAMS_FILE,
    log:
        "logs/explain/faithfulness/{xcos}/{pairs}.log",
    benchmark:
        "logs/benchmark/explain/faithfulness/{xcos}/{pairs}.tsv"
    threads: THREADS
    priority: CRITICAL_PRIORITY
    conda:
        "../../envs/facetrust.yaml"
    resources:
        gpu=1,
        mem_mb=grow(4000),
        runtime=grow(60),
    shell:
        "OMP_NUM_THREADS={threads} facetrust explain faithfulness --model models/{wildcards.xcos}"
        " --test-set {input.pairs} --twins {input.twins} --thresholds {input.thresholds}"
        " --validation {input.validation} --occluders {input.occluders}"
        " --params {params.config_file}"
        " --out {output.results} --examples {output.examples} > {log} 2>&1"


# The inversion's TV weight and step count, chosen on validation classes (inversion.select.classes,
# never the reported ones) by a model-independent criterion (never a verifier's top-1).
rule invert_select:
    input:
        model="models/{model}/checkpoint.pt",
    output:
        "results/explain/inversion/{model}.selection.json",
    params:
        select=config["inversion"].get("select"),
        synth=config["synth"],
        seed=config["seed"],
        config_file=PARAMS_FILE,
    log:
        "logs/explain/invert_select/{model}.log",
    benchmark:
        "logs/benchmark/explain/invert_select/{model}.tsv"
    threads: THREADS
    priority: LONG_PRIORITY
    conda:
        "../../envs/facetrust.yaml"
    resources:
        gpu=1,
        mem_mb=grow(4000),
        runtime=grow(30),
    shell:
        "OMP_NUM_THREADS={threads} facetrust explain invert-select --model models/{wildcards.model}"
        " --params {params.config_file} --out {output} > {log} 2>&1"


rule invert:
    input:
        model="models/{model}/checkpoint.pt",
        verifier=lambda wildcards: f"models/{config['inversion']['verifier']}/checkpoint.pt",
        secondary=lambda wildcards: [
            f"models/{name}/checkpoint.pt"
            for name in config["inversion"].get("secondary_verifiers") or []
        ],
        selection="results/explain/inversion/{model}.selection.json",
        rec=f"{train_dir()}/train.rec",
    output:
        results="results/explain/inversion/{model}.json",
        images="results/explain/inversion/{model}.npz",
    params:
        inversion=config["inversion"],
        synth=config["synth"],
        seed=config["seed"],
        config_file=PARAMS_FILE,
        verifier=lambda wildcards: f"models/{config['inversion']['verifier']}",
        secondary=lambda wildcards: " ".join(
            f"models/{name}"
            for name in config["inversion"].get("secondary_verifiers") or []
        ),
        train_dir=lambda wildcards, input: os.path.dirname(input.rec),
    log:
        "logs/explain/invert/{model}.log",
    benchmark:
        "logs/benchmark/explain/invert/{model}.tsv"
    threads: THREADS
    priority: LONG_PRIORITY
    conda:
        "../../envs/facetrust.yaml"
    resources:
        gpu=1,
        mem_mb=grow(4000),
        runtime=grow(60),
    shell:
        "OMP_NUM_THREADS={threads} facetrust explain invert --model models/{wildcards.model}"
        " --verifier {params.verifier} --secondary {params.secondary} --selection {input.selection}"
        " --train-data {params.train_dir} --params {params.config_file}"
        " --ablation --results {output.results} --images {output.images} > {log} 2>&1"
