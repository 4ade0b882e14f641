# Alignment: IJB-style loose crops + 5-point landmarks -> aligned crops (indexed RecordIO).


rule align:
    input:
        ijb_meta,
    output:
        rec="data/aligned/{ijb}/aligned.rec",
        idx="data/aligned/{ijb}/aligned.idx",
        index="data/aligned/{ijb}/index.csv",
    params:
        ijb_dir=ijb_dir,
        size=lambda wildcards: ",".join(str(v) for v in config["align"]["output_size"]),
        method=config["align"]["method"],
        no_face=config["align"]["no_face"],
        on_bad_image=config["align"]["on_bad_image"],
    log:
        "logs/align/{ijb}.log",
    benchmark:
        "logs/benchmark/align/{ijb}.tsv"
    threads: THREADS
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(4000),
        runtime=grow(120),
    shell:
        "facetrust align --in {params.ijb_dir} --name {wildcards.ijb} --out data/aligned/{wildcards.ijb}"
        " --size {params.size} --detector {params.method} --no-face {params.no_face}"
        " --on-bad-image {params.on_bad_image} --threads {threads} > {log} 2>&1"
