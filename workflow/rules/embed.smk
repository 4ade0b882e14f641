# Embedding extraction: every test set through every model, flip kept for F1 fusion.


rule embed:
    input:
        checkpoint="models/{model}/checkpoint.pt",
        testset=testset_input,
    output:
        "embeddings/{model}/{testset}.npz",
    params:
        testset=testset_path,
        batch_size=config["embed"]["batch_size"],
        flip="" if config["embed"]["flip"] else "--no-flip",
    log:
        "logs/embed/{model}/{testset}.log",
    benchmark:
        "logs/benchmark/embed/{model}/{testset}.tsv"
    threads: THREADS
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    shell:
        "facetrust embed --model models/{wildcards.model} --testset {params.testset} --out {output}"
        " --batch-size {params.batch_size} {params.flip} --threads {threads} > {log} 2>&1"
