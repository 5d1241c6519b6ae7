# Patient-level splits: one file per split seed (and per fold count for cross-validation cells).


rule split:
    input:
        data=DATA_DIR,
    output:
        f"{FOLDERS.splits}/{{split}}.json",
    log:
        "logs/split/{split}.log",
    benchmark:
        "benchmarks/runs/split/{split}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        spec=lambda wc: PLAN.split_specs[wc.split],
    script:
        "../workflow/scripts/split.py"


# The splits of an extra data set (config key `datasets`): results/datasets/{dataset}/splits/{split}.json.
use rule split as dataset_split with:
    input:
        data=f"{DATASETS_DIR}/{{dataset}}/data",
    output:
        f"{DATASETS_DIR}/{{dataset}}/splits/{{split}}.json",
    log:
        "logs/split/{dataset}/{split}.log",
    benchmark:
        "benchmarks/runs/split/{dataset}/{split}.tsv"
    params:
        spec=lambda wc: DATASETS[wc.dataset].split_specs[wc.split],
