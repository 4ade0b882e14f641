# Evaluation: IJB 1:1 verification (InsightFace eval_ijbc.py conventions by default).


rule evaluate_ijb:
    input:
        embeddings="embeddings/{model}/{ijb}.npz",
        meta=ijb_meta,
    output:
        metrics="results/metrics/{model}/{ijb}.json",
        roc="results/roc/{model}/{ijb}.csv",
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
    log:
        "logs/evaluate/{model}/{ijb}.log",
    benchmark:
        "logs/benchmark/evaluate/{model}/{ijb}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "facetrust evaluate ijb --embeddings {input.embeddings} --protocol {params.ijb_dir}"
        " --name {wildcards.ijb} --out {output.metrics} --roc {output.roc} --fars {params.fars}"
        " {params.flags} --tar-method {params.tar_method} > {log} 2>&1"
