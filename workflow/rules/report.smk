# Tables, figures and per-paper reports. Row labels come from `variants` (method names).


rule ijbc_table:
    input:
        lambda wildcards: expand(
            "results/metrics/{variant}/{ijb}.json",
            variant=_rows("ijbc_table")[0],
            ijb=config["report"]["ijbc_table"]["test_set"],
        ),
    output:
        report(
            "results/ijbc_table.csv",
            caption="../report/ijbc_table.rst",
            category="Tables",
        ),
    params:
        methods=lambda wildcards: _rows("ijbc_table")[1],
        backbones=lambda wildcards: _rows("ijbc_table")[2],
        train_sets=lambda wildcards: _rows("ijbc_table")[3],
        test_set=config["report"]["ijbc_table"]["test_set"],
        variants=lambda wildcards: _rows("ijbc_table")[0],
        models=lambda wildcards: [VARIANTS[v]["model"] for v in _rows("ijbc_table")[0]],
    log:
        "logs/report/ijbc_table.log",
    benchmark:
        "logs/benchmark/report/ijbc_table.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(1000),
        runtime=grow(10),
    shell:
        "facetrust report table --metrics {input} --method {params.methods:q}"
        " --backbone {params.backbones:q} --train-set {params.train_sets:q}"
        " --test-set {params.test_set} --variant {params.variants} --model {params.models}"
        " --out {output} > {log} 2>&1"


rule verification_table:
    input:
        metrics=lambda wildcards: expand(
            "results/metrics/{variant}/{pairs}.json",
            variant=_rows("verification_table")[0],
            pairs=config["report"]["verification_table"]["test_set"],
        ),
        embeddings=lambda wildcards: expand(
            "embeddings/{variant}/{pairs}.npz",
            variant=_rows("verification_table")[0],
            pairs=config["report"]["verification_table"]["test_set"],
        ),
        quality=identity_source,
    output:
        report(
            "results/verification_table.csv",
            caption="../report/verification_table.rst",
            category="Tables",
        ),
    params:
        methods=lambda wildcards: _rows("verification_table")[1],
        backbones=lambda wildcards: _rows("verification_table")[2],
        train_sets=lambda wildcards: _rows("verification_table")[3],
        test_set=config["report"]["verification_table"]["test_set"],
        quality=lambda wildcards, input: (
            f"--quality {input.quality}" if input.quality else ""
        ),
    log:
        "logs/report/verification_table.log",
    benchmark:
        "logs/benchmark/report/verification_table.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(2000),
        runtime=grow(10),
    shell:
        "facetrust report verification-table --metrics {input.metrics}"
        " --embeddings {input.embeddings} --method {params.methods:q}"
        " --backbone {params.backbones:q} --train-set {params.train_sets:q}"
        " --test-set {params.test_set} {params.quality} --out {output} > {log} 2>&1"


rule quality_table:
    input:
        embeddings=lambda wildcards: expand(
            "embeddings/{variant}/{ijb}.npz",
            variant=_reject_variants(),
            ijb=config["report"]["reject"]["test_set"],
        ),
        quality=f"{SYNTH_DIR}/quality.csv",
    output:
        report(
            "results/quality_table.csv",
            caption="../report/quality_table.rst",
            category="Tables",
        ),
    params:
        methods=lambda wildcards: [variant_label(v) for v in _reject_variants()],
    log:
        "logs/report/quality_table.log",
    benchmark:
        "logs/benchmark/report/quality_table.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(2000),
        runtime=grow(10),
    shell:
        "facetrust report quality --embeddings {input.embeddings} --method {params.methods:q}"
        " --quality {input.quality} --out {output} > {log} 2>&1"


rule figure_roc:
    input:
        lambda wildcards: expand(
            "results/roc/{variant}/{ijb}.csv",
            variant=_rows("ijbc_table")[0],
            ijb=wildcards.ijb,
        ),
    output:
        report(
            "results/figures/roc_{ijb}.png",
            caption="../report/roc.rst",
            category="Figures",
        ),
    params:
        labels=lambda wildcards: _rows("ijbc_table")[1],
    log:
        "logs/report/roc_{ijb}.log",
    benchmark:
        "logs/benchmark/report/roc_{ijb}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(2000),
        runtime=grow(10),
    shell:
        "facetrust report roc --roc {input} --label {params.labels:q}"
        " --title 'ROC, {wildcards.ijb}' --out {output} > {log} 2>&1"


rule figure_reject:
    input:
        lambda wildcards: expand(
            "results/reject/{variant}/{ijb}.json",
            variant=_reject_variants(),
            ijb=wildcards.ijb,
        ),
    output:
        report(
            "results/figures/reject_{ijb}.png",
            caption="../report/reject.rst",
            category="Figures",
        ),
    params:
        labels=lambda wildcards: [variant_label(v) for v in _reject_variants()],
    log:
        "logs/report/reject_{ijb}.log",
    benchmark:
        "logs/benchmark/report/reject_{ijb}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(2000),
        runtime=grow(10),
    shell:
        "facetrust report reject-plot --reject {input} --label {params.labels:q}"
        " --title 'Reject verification, {wildcards.ijb}' --out {output} > {log} 2>&1"


rule figure_histograms:
    input:
        embeddings="embeddings/{variant}/{ijb}.npz",
        quality=f"{SYNTH_DIR}/quality.csv",
        meta=ijb_meta,
    output:
        report(
            "results/figures/uncertainty_{variant}_{ijb}.png",
            caption="../report/histograms.rst",
            category="Figures",
        ),
    params:
        ijb_dir=ijb_dir,
        label=lambda wildcards: variant_label(wildcards.variant),
    log:
        "logs/report/uncertainty_{variant}_{ijb}.log",
    benchmark:
        "logs/benchmark/report/uncertainty_{variant}_{ijb}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(2000),
        runtime=grow(10),
    shell:
        "facetrust report histograms --embeddings {input.embeddings} --quality {input.quality}"
        " --protocol {params.ijb_dir} --name {wildcards.ijb} --title {params.label:q}"
        " --out {output} > {log} 2>&1"


rule figure_verification:
    input:
        table="results/verification_table.csv",
    output:
        report(
            "results/figures/verification_{pairs}.png",
            caption="../report/verification.rst",
            category="Figures",
        ),
    params:
        margins=config["report"]["sphereface"]["margin_methods"],
    log:
        "logs/report/verification_{pairs}.log",
    benchmark:
        "logs/benchmark/report/verification_{pairs}.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(1000),
        runtime=grow(10),
    shell:
        "facetrust report verification-plot --verification-table {input.table}"
        " --margin-methods {params.margins:q} --out {output} > {log} 2>&1"


rule report_sphereface:
    input:
        table="results/verification_table.csv",
        figure=lambda wildcards: f"results/figures/verification_{config['report']['verification_table']['test_set']}.png",
        paper_protocol=lambda wildcards: expand(
            "results/metrics/{variant}/{pairs}.sphereface.json",
            variant=config["evaluate"]["pairs"]["sphereface_variants"],
            pairs=config["report"]["verification_table"]["test_set"],
        ),
    output:
        report("results/reports/sphereface.md", category="Reports"),
    params:
        baseline=config["report"]["sphereface"]["baseline"],
        normalised=config["report"]["sphereface"].get("normalised_baseline", ""),
        margins=config["report"]["sphereface"]["margin_methods"],
        depth_method=config["report"]["sphereface"]["depth_method"],
        depth=config["report"]["sphereface"]["depth_backbones"],
        paper_protocol=lambda wildcards, input: (
            "--paper-protocol "
            + " ".join(input.paper_protocol)
            + " --paper-protocol-label "
            + " ".join(
                f"'{variant_label(v)} ({config['models'][VARIANTS[v]['model']]['backbone']})'"
                for v in config["evaluate"]["pairs"]["sphereface_variants"]
            )
            if input.paper_protocol
            else ""
        ),
    log:
        "logs/report/sphereface.log",
    benchmark:
        "logs/benchmark/report/sphereface.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(1000),
        runtime=grow(10),
    shell:
        paper_command(
            "sphereface",
            "{params.paper_protocol}",
            verification_table="{input.table}",
            baseline="{params.baseline:q}",
            normalised_baseline="{params.normalised:q}",
            margin_methods="{params.margins:q}",
            depth_method="{params.depth_method:q}",
            depth_backbones="{params.depth}",
            figure="{input.figure}",
            out="{output}",
        )


rule report_scf:
    input:
        table="results/ijbc_table.csv",
        replicates=lambda wildcards: expand(
            "results/bootstrap/{variant}/{ijb}.npz",
            variant=_rows("ijbc_table")[0],
            ijb=config["report"]["ijbc_table"]["test_set"],
        ),
        roc=lambda wildcards: f"results/figures/roc_{config['report']['ijbc_table']['test_set']}.png",
    output:
        report("results/reports/scf.md", category="Reports"),
    log:
        "logs/report/scf.log",
    benchmark:
        "logs/benchmark/report/scf.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(1000),
        runtime=grow(10),
    shell:
        paper_command(
            "scf", table="{input.table}", figure="{input.roc}", out="{output}"
        )


rule report_scaleface:
    input:
        reject=lambda wildcards: expand(
            "results/reject/{variant}/{ijb}.json",
            variant=_reject_variants(),
            ijb=config["report"]["reject"]["test_set"],
        ),
        quality_table="results/quality_table.csv",
        edc_table="results/edc_table.csv",
        replicates=lambda wildcards: expand(
            "results/bootstrap/{kind}/{variant}/{ijb}.npz",
            kind=["reject", "edc"],
            variant=_reject_variants(),
            ijb=config["report"]["reject"]["test_set"],
        ),
        figures=lambda wildcards: [
            f"results/figures/reject_{config['report']['reject']['test_set']}.png",
            f"results/figures/edc_{config['report']['reject']['test_set']}.png",
        ]
        + expand(
            "results/figures/uncertainty_{variant}_{ijb}.png",
            variant=_reject_variants(),
            ijb=config["report"]["reject"]["test_set"],
        ),
    output:
        report("results/reports/scaleface.md", category="Reports"),
    params:
        labels=lambda wildcards: [variant_label(v) for v in _reject_variants()],
    log:
        "logs/report/scaleface.log",
    benchmark:
        "logs/benchmark/report/scaleface.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(1000),
        runtime=grow(10),
    shell:
        paper_command(
            "scaleface",
            reject="{input.reject}",
            label="{params.labels:q}",
            quality_table="{input.quality_table}",
            edc_table="{input.edc_table}",
            figure="{input.figures}",
            out="{output}",
        )


rule edc_table:
    input:
        lambda wildcards: expand(
            "results/edc/{variant}/{ijb}.json",
            variant=_reject_variants(),
            ijb=config["report"]["reject"]["test_set"],
        ),
    output:
        table=report(
            "results/edc_table.csv",
            caption="../report/edc_table.rst",
            category="Tables",
        ),
        figure=report(
            f"results/figures/edc_{config['report']['reject']['test_set']}.png",
            caption="../report/edc_table.rst",
            category="Figures",
        ),
    params:
        labels=lambda wildcards: [variant_label(v) for v in _reject_variants()],
        test_set=config["report"]["reject"]["test_set"],
    log:
        "logs/report/edc_table.log",
    benchmark:
        "logs/benchmark/report/edc_table.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(2000),
        runtime=grow(10),
    shell:
        "facetrust report edc --edc {input} --label {params.labels:q}"
        " --figure {output.figure} --title 'EDC, {params.test_set}'"
        " --out {output.table} > {log} 2>&1"


rule quality_split:
    input:
        embeddings=lambda wildcards: expand(
            "embeddings/{variant}/{ijb}.npz",
            variant=base_variants("ijbc_table"),
            ijb=config["report"]["ijbc_table"]["test_set"],
        ),
        quality=f"{SYNTH_DIR}/quality.csv",
    output:
        report(
            "results/quality_split.csv",
            caption="../report/quality_split.rst",
            category="Tables",
        ),
    params:
        methods=lambda wildcards: [
            variant_label(v) for v in base_variants("ijbc_table")
        ],
        ijb=config["report"]["ijbc_table"]["test_set"],
        ijb_dir=lambda wildcards: config["datasets"]["ijb"][
            config["report"]["ijbc_table"]["test_set"]
        ],
        flags=ijb_flags(),
        tar_method=config["evaluate"]["tar_method"],
    log:
        "logs/report/quality_split.log",
    benchmark:
        "logs/benchmark/report/quality_split.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(4000),
        runtime=grow(10),
    shell:
        "facetrust report quality-split --embeddings {input.embeddings} --method {params.methods:q}"
        " --protocol {params.ijb_dir} --name {params.ijb} --quality {input.quality}"
        " {params.flags} --tar-method {params.tar_method} --out {output} > {log} 2>&1"


# Explain line (workflow/rules/explain.smk computes; these rules draw and write).
rule report_xcos:
    input:
        metrics=lambda wildcards: expand(
            "results/explain/metrics/{xcos}/{pairs}.{score}.json",
            xcos=XCOS_MODELS,
            pairs=EXPLAIN_SET,
            score=XCOS_SCORES,
        ),
        scores=lambda wildcards: f"results/explain/scores/{EXPLAIN_MODEL}/{EXPLAIN_SET}.npz",
        pairs=lambda wildcards: config["datasets"]["pairs"][EXPLAIN_SET],
        validation=lambda wildcards: expand(
            "results/explain/validation/{xcos}/validation.json", xcos=XCOS_MODELS
        ),
    output:
        report=report("results/reports/xcos.md", category="Reports"),
        table=report(
            "results/xcos_table.csv",
            caption="../report/xcos_table.rst",
            category="Tables",
        ),
        figure=report(
            "results/figures/xcos_pairs.png",
            caption="../report/xcos_pairs.rst",
            category="Figures",
        ),
        fit=report(
            "results/figures/xcos_fit.png",
            caption="../report/xcos_fit.rst",
            category="Figures",
        ),
    params:
        models=XCOS_MODELS,
        labels=[config["xcos"][m].get("method", m) for m in XCOS_MODELS],
        margin=config["explain"]["accuracy_margin"],
        per_kind=config["explain"]["figure_pairs"],
    log:
        "logs/report/xcos.log",
    benchmark:
        "logs/benchmark/report/xcos.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(2000),
        runtime=grow(10),
    shell:
        paper_command(
            "xcos",
            metrics="{input.metrics}",
            model="{params.models}",
            label="{params.labels:q}",
            scores="{input.scores}",
            test_set="{input.pairs}",
            pairs_per_kind="{params.per_kind}",
            margin="{params.margin}",
            table="{output.table}",
            figure="{output.figure}",
            validation_record="{input.validation}",
            fit_figure="{output.fit}",
            out="{output.report}",
        )


rule report_explanations:
    input:
        results=lambda wildcards: f"results/explain/faithfulness/{EXPLAIN_MODEL}/{EXPLAIN_SET}.json",
        examples=lambda wildcards: f"results/explain/faithfulness/{EXPLAIN_MODEL}/{EXPLAIN_SET}.examples.npz",
        sanity=lambda wildcards: f"results/explain/sanity/{EXPLAIN_MODEL}/{EXPLAIN_SET}.json",
        sanity_examples=lambda wildcards: f"results/explain/sanity/{EXPLAIN_MODEL}/{EXPLAIN_SET}.examples.npz",
    output:
        report=report("results/reports/explanations.md", category="Reports"),
        table=report(
            "results/explain_table.csv",
            caption="../report/explain_table.rst",
            category="Tables",
        ),
        curves=report(
            "results/figures/explain_curves.png",
            caption="../report/explain_curves.rst",
            category="Figures",
        ),
        maps=report(
            "results/figures/explain_maps.png",
            caption="../report/explain_maps.rst",
            category="Figures",
        ),
        cascade=report(
            "results/figures/explain_cascade.png",
            caption="../report/explain_cascade.rst",
            category="Figures",
        ),
        restoration=report(
            "results/figures/explain_restoration.png",
            caption="../report/explain_restoration.rst",
            category="Figures",
        ),
    log:
        "logs/report/explanations.log",
    benchmark:
        "logs/benchmark/report/explanations.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(2000),
        runtime=grow(10),
    shell:
        paper_command(
            "explanations",
            results="{input.results}",
            examples="{input.examples}",
            sanity="{input.sanity}",
            sanity_examples="{input.sanity_examples}",
            table="{output.table}",
            curves="{output.curves}",
            maps="{output.maps}",
            cascade="{output.cascade}",
            restoration="{output.restoration}",
            out="{output.report}",
        )


rule report_inversion:
    input:
        results=lambda wildcards: f"results/explain/inversion/{INVERSION_MODEL}.json",
        images=lambda wildcards: f"results/explain/inversion/{INVERSION_MODEL}.npz",
        selection=lambda wildcards: f"results/explain/inversion/{INVERSION_MODEL}.selection.json",
    output:
        report=report("results/reports/inversion.md", category="Reports"),
        table=report(
            "results/inversion_table.csv",
            caption="../report/inversion_table.rst",
            category="Tables",
        ),
        figure=report(
            "results/figures/inversion.png",
            caption="../report/inversion.rst",
            category="Figures",
        ),
    log:
        "logs/report/inversion.log",
    benchmark:
        "logs/benchmark/report/inversion.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(2000),
        runtime=grow(10),
    shell:
        paper_command(
            "inversion",
            results="{input.results}",
            images="{input.images}",
            selection="{input.selection}",
            table="{output.table}",
            figure="{output.figure}",
            out="{output.report}",
        )


rule ijbb_table:
    input:
        lambda wildcards: expand(
            "results/metrics/{variant}/{ijb}.json",
            variant=ijbb_rows()[0],
            ijb=config["report"]["ijbb_table"]["test_set"],
        ),
    output:
        report(
            "results/ijbb_table.csv",
            caption="../report/ijbb_table.rst",
            category="Tables",
        ),
    params:
        methods=lambda wildcards: ijbb_rows()[1],
        backbones=lambda wildcards: ijbb_rows()[2],
        train_sets=lambda wildcards: ijbb_rows()[3],
        test_set=config["report"]["ijbb_table"]["test_set"],
    log:
        "logs/report/ijbb_table.log",
    benchmark:
        "logs/benchmark/report/ijbb_table.tsv"
    threads: 1
    conda:
        "../../envs/facetrust.yaml"
    resources:
        mem_mb=grow(1000),
        runtime=grow(10),
    shell:
        "facetrust report table --metrics {input} --method {params.methods:q}"
        " --backbone {params.backbones:q} --train-set {params.train_sets:q}"
        " --test-set {params.test_set} --out {output} > {log} 2>&1"
