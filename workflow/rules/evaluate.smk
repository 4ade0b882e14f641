# Evaluation: IJB 1:1 verification (InsightFace eval_ijbc.py conventions by default).


rule evaluate_ijb:
    input:
        embeddings=variant_embeddings,
        meta=ijb_meta,
        # under align.on_bad_image: skip, the images align left out (failure to enrol)
        failed=failed_images_input,
    output:
        metrics="results/metrics/{variant}/{ijb}.json",
        roc="results/roc/{variant}/{ijb}.csv",
        replicates="results/bootstrap/{variant}/{ijb}.npz",
    params:
        ijb_dir=ijb_dir,
        fars=",".join(str(far) for far in config["evaluate"]["fars"]),
        flags=ijb_flags(),
        tar_method=config["evaluate"]["tar_method"],
        variant_args=variant_evaluate_args,
        bootstrap=bootstrap_args(),
        failed=lambda wildcards, input: (
            f"{failed_images_args(wildcards, input)} --failed-templates {config['evaluate']['failed_templates']}"
            if input.failed
            else ""
        ),
    log:
        "logs/evaluate/{variant}/{ijb}.log",
    benchmark:
        "logs/benchmark/evaluate/{variant}/{ijb}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(8000),
        runtime=grow(60),
    shell:
        "facetrust evaluate ijb --embeddings {input.embeddings} --protocol {params.ijb_dir}"
        " --name {wildcards.ijb} --out {output.metrics} --roc {output.roc} --fars {params.fars}"
        " {params.flags} --tar-method {params.tar_method} {params.variant_args}"
        " {params.bootstrap} --replicates {output.replicates}"
        " {params.failed} > {log} 2>&1"


rule evaluate_pairs:
    input:
        embeddings="embeddings/{variant}/{pairs}.npz",
        identities=pair_identity_source,
    output:
        metrics="results/metrics/{variant}/{pairs}.json",
        roc="results/roc/{variant}/{pairs}.csv",
        replicates="results/bootstrap/{variant}/{pairs}.npz",
    params:
        metric=config["evaluate"]["pairs"]["metric"],
        flip="" if config["evaluate"]["flip"] else "--no-flip",
        bootstrap=bootstrap_args(),
        identities=identities_args,
    log:
        "logs/evaluate/{variant}/{pairs}.log",
    benchmark:
        "logs/benchmark/evaluate/{variant}/{pairs}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(4000),
        runtime=grow(30),
    shell:
        "facetrust evaluate pairs --embeddings {input.embeddings} --out {output.metrics}"
        " --roc {output.roc} --metric {params.metric} {params.flip} {params.bootstrap}"
        " {params.identities} --replicates {output.replicates} > {log} 2>&1"


rule evaluate_pairs_sphereface:
    input:
        embeddings="embeddings/{variant}/{pairs}.npz",
        identities=pair_identity_source,
    output:
        metrics="results/metrics/{variant}/{pairs}.sphereface.json",
    params:
        bootstrap=bootstrap_args(),
        identities=identities_args,
    log:
        "logs/evaluate_sphereface/{variant}/{pairs}.log",
    benchmark:
        "logs/benchmark/evaluate_sphereface/{variant}/{pairs}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(4000),
        runtime=grow(30),
    shell:
        "facetrust evaluate pairs --embeddings {input.embeddings} --out {output.metrics}"
        " --pairs-protocol sphereface {params.bootstrap} {params.identities} > {log} 2>&1"


rule evaluate_reject:
    input:
        embeddings="embeddings/{variant}/{ijb}.npz",
        meta=ijb_meta,
        failed=failed_images_input,
    output:
        curve="results/reject/{variant}/{ijb}.json",
        csv="results/reject/{variant}/{ijb}.csv",
        replicates="results/bootstrap/reject/{variant}/{ijb}.npz",
    params:
        ijb_dir=ijb_dir,
        how=config["evaluate"]["reject"]["how"],
        space=lambda wildcards: fc.reject_space(config, VARIANTS[wildcards.variant]),
        template_how=config["evaluate"]["reject"]["template_how"],
        bootstrap=bootstrap_args(),
        failed=failed_images_args,
        fars=",".join(str(far) for far in config["evaluate"]["reject"]["fars"]),
        step=config["evaluate"]["reject"]["fraction_step"],
        max_fraction=config["evaluate"]["reject"]["max_fraction"],
        pooling=lambda wildcards: VARIANTS[wildcards.variant]["pooling"],
        tar_method=config["evaluate"]["reject"]["tar_method"],
        probes=config["evaluate"]["reject"]["probe_templates"],
    log:
        "logs/evaluate_reject/{variant}/{ijb}.log",
    benchmark:
        "logs/benchmark/evaluate_reject/{variant}/{ijb}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(8000),
        runtime=grow(60),
    shell:
        "facetrust evaluate reject --embeddings {input.embeddings} --protocol {params.ijb_dir}"
        " --name {wildcards.ijb} --out {output.curve} --csv {output.csv} --how {params.how}"
        " --space {params.space} --fars {params.fars} --fraction-step {params.step}"
        " --max-fraction {params.max_fraction} --pooling {params.pooling}"
        " --template-how {params.template_how} --tar-method {params.tar_method}"
        " --probe-templates {params.probes}"
        " {params.bootstrap} --replicates {output.replicates} {params.failed} > {log} 2>&1"


rule evaluate_edc:
    input:
        embeddings="embeddings/{variant}/{ijb}.npz",
        meta=ijb_meta,
        failed=failed_images_input,
        quality=identity_source,
    output:
        edc="results/edc/{variant}/{ijb}.json",
        replicates="results/bootstrap/edc/{variant}/{ijb}.npz",
    params:
        ijb_dir=ijb_dir,
        flags=ijb_flags(),
        space=lambda wildcards: fc.reject_space(config, VARIANTS[wildcards.variant]),
        template_how=config["evaluate"]["reject"]["template_how"],
        starting_error=config["evaluate"]["edc"]["starting_error"],
        limit=config["evaluate"]["edc"]["discard_limit"],
        draws=config["evaluate"]["edc"]["random_draws"],
        fmrs=",".join(str(fmr) for fmr in config["evaluate"]["edc"]["crfiqa_fmrs"]),
        quality=lambda wildcards, input: (
            f"--quality {input.quality}" if input.quality else ""
        ),
        bootstrap=bootstrap_args(),
        failed=failed_images_args,
    log:
        "logs/evaluate_edc/{variant}/{ijb}.log",
    benchmark:
        "logs/benchmark/evaluate_edc/{variant}/{ijb}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(8000),
        runtime=grow(60),
    shell:
        "facetrust evaluate edc --embeddings {input.embeddings} --protocol {params.ijb_dir}"
        " --name {wildcards.ijb} --out {output.edc} {params.flags} --space {params.space}"
        " --template-how {params.template_how} --starting-error {params.starting_error}"
        " --discard-limit {params.limit} --random-draws {params.draws}"
        " --crfiqa-fmrs {params.fmrs} {params.quality} {params.bootstrap}"
        " --replicates {output.replicates} {params.failed} > {log} 2>&1"
