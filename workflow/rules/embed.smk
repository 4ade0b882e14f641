# Embedding extraction: every test set through every model, flip kept for F1 fusion.


rule embed:
    input:
        model=variant_inputs,
        testset=testset_input,
    output:
        "embeddings/{variant}/{testset}.npz",
    params:
        model=lambda wildcards: f"models/{variant_model(wildcards)}",
        uncertainty=variant_uncertainty_args,
        testset=testset_path,
        batch_size=config["embed"]["batch_size"],
        flip="" if config["embed"]["flip"] else "--no-flip",
    log:
        "logs/embed/{variant}/{testset}.log",
    benchmark:
        "logs/benchmark/embed/{variant}/{testset}.tsv"
    threads: THREADS
    conda:
        "../../envs/facetrust.yaml"
    resources:
        gpu=1,
        mem_mb=grow(8000),
        runtime=grow(60),
    shell:
        "OMP_NUM_THREADS={threads} facetrust embed --model {params.model} {params.uncertainty} --test-set {params.testset}"
        " --out {output} --batch-size {params.batch_size} {params.flip} --threads {threads}"
        " > {log} 2>&1"
