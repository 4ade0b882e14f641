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
        flags=" ".join(
            flag
            for flag, on in (
                ("--normalize-images", config["evaluate"]["normalize_images"]),
                ("--no-detector-score", not config["evaluate"]["use_detector_score"]),
                ("--no-flip", not config["evaluate"]["flip"]),
            )
            if on
        ),
        tar_method=config["evaluate"]["tar_method"],
        pooling=lambda wildcards: VARIANTS[wildcards.variant]["pooling"],
    log:
        "logs/evaluate/{variant}/{ijb}.log",
    benchmark:
        "logs/benchmark/evaluate/{variant}/{ijb}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "facetrust evaluate ijb --embeddings {input.embeddings} --protocol {params.ijb_dir}"
        " --name {wildcards.ijb} --out {output.metrics} --roc {output.roc} --fars {params.fars}"
        " {params.flags} --tar-method {params.tar_method} --pooling {params.pooling} > {log} 2>&1"
