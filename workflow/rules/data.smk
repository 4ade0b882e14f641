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
    threads: run_cores  # nothing else can run yet: every job needs the benchmark (same files for any count)
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(4000),
        runtime=grow(30),
    shell:
        "facetrust synth --out {params.out_dir} --params {params.config_file} --workers {threads} > {log} 2>&1"


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


# Your own folders (datasets.pack, config/own_data.yaml): `facetrust data pack` turns them into the
# formats the rest of the DAG reads, at the fixed places facetrust.config.PACKED_* names (the
# config check there makes datasets.train/pairs/ijb point at them).


rule pack_train:
    input:
        lambda wildcards: files_below(PACK["train"]),
    output:
        rec="data/packed/train/train.rec",
        idx="data/packed/train/train.idx",
        prop="data/packed/train/property",
        lst="data/packed/train/train.lst",
        faces="data/packed/train/faces.csv",
        report="data/packed/train/pack.json",
    params:
        images=PACK["train"],
        settings=pack_settings,
        size=",".join(str(v) for v in PACK["output_size"]),
        encoding=PACK["encoding"],
        out_dir=lambda wildcards, output: os.path.dirname(output.rec),
    log:
        "logs/pack/train.log",
    benchmark:
        "logs/benchmark/pack/train.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(4000),
        runtime=grow(120),
    shell:
        "facetrust data pack rec {params.images} --out {params.out_dir} {params.settings}"
        " --size {params.size} --encoding {params.encoding} --threads {threads} > {log} 2>&1"


rule pack_pairs:
    input:
        pair_list_inputs,
        training_faces=training_faces_input,
    output:
        bin="data/packed/pairs/{pairs}.bin",
        report="data/packed/pairs/{pairs}.pack.json",
    params:
        pair_list=lambda wildcards: PACK["pairs"][wildcards.pairs]["list"],
        images=lambda wildcards: PACK["pairs"][wildcards.pairs]["images"]
        or os.path.dirname(PACK["pairs"][wildcards.pairs]["list"]),
        format=lambda wildcards: PACK["pairs"][wildcards.pairs]["format"],
        training=training_faces_flag,
        settings=pack_settings,
        size=",".join(str(v) for v in PACK["output_size"]),
        encoding=PACK["encoding"],
    log:
        "logs/pack/pairs_{pairs}.log",
    benchmark:
        "logs/benchmark/pack/pairs_{pairs}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(4000),
        runtime=grow(60),
    shell:
        "facetrust data pack bin {params.pair_list} --images {params.images} --format {params.format}"
        " --out {output.bin} {params.settings} --size {params.size} --encoding {params.encoding}"
        " {params.training} --threads {threads} > {log} 2>&1"


rule pack_ijb:
    input:
        ijb_pack_inputs,
        training_faces=training_faces_input,
    output:
        meta=expand(
            "data/packed/ijb/{{ijb}}/meta/{{ijb}}_{part}.txt",
            part=["face_tid_mid", "name_5pts_score", "template_pair_label"],
        ),
        report="data/packed/ijb/{ijb}/pack.json",
    params:
        images=lambda wildcards: PACK["ijb"][wildcards.ijb]["images"],
        subjects=lambda wildcards: PACK["ijb"][wildcards.ijb]["subjects"],
        templates=lambda wildcards: PACK["ijb"][wildcards.ijb]["templates_per_subject"],
        impostors=lambda wildcards: (
            f"--impostor-pairs {PACK['ijb'][wildcards.ijb]['impostor_pairs']}"
            if PACK["ijb"][wildcards.ijb]["impostor_pairs"]
            else ""
        ),
        settings=pack_settings,
        seed=config["seed"],
        training=training_faces_flag,
        out_dir=lambda wildcards, output: os.path.dirname(output.report),
    log:
        "logs/pack/ijb_{ijb}.log",
    benchmark:
        "logs/benchmark/pack/ijb_{ijb}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(4000),
        runtime=grow(60),
    shell:
        "facetrust data pack ijb {params.images} --subjects {params.subjects} --name {wildcards.ijb}"
        " --out {params.out_dir} --templates-per-subject {params.templates} {params.impostors}"
        " --seed {params.seed} {params.settings} {params.training} --threads {threads} > {log} 2>&1"
