# Tables and reports.


rule ijbc_table:
    input:
        lambda wildcards: expand(
            "results/metrics/{variant}/{ijb}.json",
            variant=table_variants("ijbc_table"),
            ijb=config["report"]["ijbc_table"]["test_set"],
        ),
    output:
        report("results/ijbc_table.csv", caption="../report/ijbc_table.rst", category="Tables"),
    params:
        methods=lambda wildcards: [variant_label(v) for v in table_variants("ijbc_table")],
        backbones=lambda wildcards: [
            config["models"][VARIANTS[v]["model"]]["backbone"]
            for v in table_variants("ijbc_table")
        ],
        train_sets=lambda wildcards: [
            config["models"][VARIANTS[v]["model"]]["train_set"]
            for v in table_variants("ijbc_table")
        ],
        test_set=config["report"]["ijbc_table"]["test_set"],
    log:
        "logs/report/ijbc_table.log",
    benchmark:
        "logs/benchmark/report/ijbc_table.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "facetrust report table --metrics {input} --method {params.methods:q}"
        " --backbone {params.backbones:q} --train-set {params.train_sets:q}"
        " --test-set {params.test_set} --out {output} > {log} 2>&1"
