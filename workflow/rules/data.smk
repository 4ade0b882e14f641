# Data: generate the embedded synthetic benchmark (real formats) and verify the training set.


rule synthesize:
    output:
        rec=f"{SYNTH_DIR}/train/train.rec",
        idx=f"{SYNTH_DIR}/train/train.idx",
        prop=f"{SYNTH_DIR}/train/property",
        pairs=f"{SYNTH_DIR}/pairs/synth_lfw.bin",
        ijb_meta=expand(
            f"{SYNTH_DIR}/ijb/synth_ijbc/meta/synth_ijbc_{{part}}.txt",
            part=["face_tid_mid", "name_5pts_score", "template_pair_label"],
        ),
        quality=f"{SYNTH_DIR}/quality.csv",
        manifest=f"{SYNTH_DIR}/manifest.json",
    params:
        synth=config["synth"],
        seed=config["seed"],
    log:
        "logs/synthesize.log",
    benchmark:
        "logs/benchmark/synthesize.tsv"
    threads: 1
    resources:
        mem_mb=grow(4000),
        runtime=grow(30),
    shell:
        "facetrust synth --out {SYNTH_DIR} --params {PARAMS_FILE} > {log} 2>&1"


rule decode:
    input:
        rec=f"{train_dir()}/train.rec",
        idx=f"{train_dir()}/train.idx",
    output:
        manifest="data/manifests/train.json",
    params:
        train_dir=train_dir(),
    log:
        "logs/decode.log",
    benchmark:
        "logs/benchmark/decode.tsv"
    threads: 1
    resources:
        mem_mb=grow(2000),
        runtime=grow(60),
    shell:
        "facetrust data verify {params.train_dir} --out {output.manifest} > {log} 2>&1"
