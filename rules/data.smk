# Raw data → ingested arrays + QC manifest.


rule phantom:
    output:
        manifest=f"{PHANTOM_ROOT}/MANIFEST.json",
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
        rules.phantom.output.manifest if ROOT_SCAN is None else str(ROOT_SCAN.manifest),
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
