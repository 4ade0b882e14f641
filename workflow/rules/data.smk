# Data: generate the embedded synthetic benchmark (real formats) and verify the training set.


rule synthesize:
    output:
        rec=f"{SYNTH_DIR}/train/train.rec",
        idx=f"{SYNTH_DIR}/train/train.idx",
        prop=f"{SYNTH_DIR}/train/property",
        pairs=f"{SYNTH_DIR}/pairs/synth_lfw.bin",
        validation=f"{SYNTH_DIR}/pairs/synth_val.bin",
        twins=expand(
            f"{SYNTH_DIR}/pairs/{{name}}.twins.npz", name=["synth_lfw", "synth_val"]
        ),
        ijb_meta=expand(
            f"{SYNTH_DIR}/ijb/synth_ijbc/meta/synth_ijbc_{{part}}.txt",
            part=["face_tid_mid", "name_5pts_score", "template_pair_label"],
        ),
        quality=f"{SYNTH_DIR}/quality.csv",
        occluders=f"{SYNTH_DIR}/occluders.csv",
        manifest=f"{SYNTH_DIR}/manifest.json",
    params:
        synth=config["synth"],
        seed=config["seed"],
        config_file=PARAMS_FILE,
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
    log:
        "logs/synthesize.log",
    benchmark:
        "logs/benchmark/synthesize.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(4000),
        runtime=grow(30),
    shell:
        "facetrust synth --out {params.out_dir} --params {params.config_file} > {log} 2>&1"


rule decode:
    input:
        rec=f"{train_dir()}/train.rec",
        idx=f"{train_dir()}/train.idx",
    output:
        manifest="data/manifests/train.json",
    params:
        train_dir=lambda wildcards, input: os.path.dirname(input.rec),
        on_bad_image=config["align"]["on_bad_image"],
    log:
        "logs/decode.log",
    benchmark:
        "logs/benchmark/decode.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(2000),
        runtime=grow(60),
    shell:
        "facetrust data verify {params.train_dir} --out {output.manifest}"
        " --on-bad-image {params.on_bad_image} > {log} 2>&1"
