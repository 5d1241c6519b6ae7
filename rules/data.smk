# Raw data → ingested arrays + QC manifest.


rule phantom:
    output:
        manifest=f"{PLAN.data.root}/MANIFEST.json",  # results/raw/phantom/<key of its settings>
    log:
        "logs/phantom.log",
    benchmark:
        "benchmarks/runs/phantom.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        phantom=asdict(PLAN.data.phantom),
    script:
        "../workflow/scripts/phantom.py"


rule ingest:
    input:
        # The phantom is generated; a user's data root is watched through its content manifest.
        f"{PLAN.data.root}/MANIFEST.json" if ROOT_SCAN is None else str(ROOT_SCAN.manifest),
    output:
        data=directory(DATA_DIR),
    log:
        "logs/ingest.log",
    benchmark:
        "benchmarks/runs/ingest.tsv"
    conda:
        "../envs/data.yaml"
    threads: CFG["resources"]["ingest_threads"]
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        # identity form (a params change reruns ingest): a setting added later at its neutral value does not
        data=identity(PLAN.data),
        preprocess=identity(PLAN.preprocess),
    script:
        "../workflow/scripts/ingest.py"


# An extra data set (config key `datasets`, used by a study's `data: <name>`): the same two jobs, under
# results/datasets/{dataset}/ (raw/phantom, data); a real root is watched like the default one (common.smk).
use rule phantom as dataset_phantom with:
    output:
        manifest=f"{DATASETS_DIR}/{{dataset}}/raw/phantom/MANIFEST.json",
    log:
        "logs/phantom/{dataset}.log",
    benchmark:
        "benchmarks/runs/phantom/{dataset}.tsv"
    params:
        phantom=lambda wc: asdict(DATASETS[wc.dataset].data.phantom),


use rule ingest as dataset_ingest with:
    input:
        dataset_source,
    output:
        data=directory(f"{DATASETS_DIR}/{{dataset}}/data"),
    log:
        "logs/ingest/{dataset}.log",
    benchmark:
        "benchmarks/runs/ingest/{dataset}.tsv"
    params:
        data=lambda wc: identity(DATASETS[wc.dataset].data),
        preprocess=identity(PLAN.preprocess),
