# Pruned studies (functions: rules/prune_common.smk). A rung job trains a cell up to a rung epoch and keeps its
# last.pt; the cell's next rung, or its ordinary train job, continues from there. After each stage, one
# decision job per study says which configurations go on.


rule train_rung:
    input:
        **TRAIN_INPUT,  # rules/train.smk: what every training job shares
        prev=train_rung_prev,
    output:
        rung=rung_path("{cell}", "{epoch}"),
    log:
        "logs/train_rung/{cell}-{epoch}.log",
    benchmark:
        "benchmarks/runs/train_rung/{cell}-{epoch}.tsv"
    wildcard_constraints:
        epoch=r"\d+",
    priority: TRAINING_PRIORITY
    retries: TRAIN_RETRIES
    conda:
        "../envs/train.yaml"
    threads: CFG["resources"]["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        **TRAIN_PARAMS,
    script:
        "../workflow/scripts/train_rung.py"


checkpoint prune_stage:
    input:
        prune_stage_input,
    output:
        decision=f"{PRUNE_DIR}/stage{{stage}}.json",
    log:
        "logs/prune_stage/{study}/{stage}.log",
    benchmark:
        "benchmarks/runs/prune_stage/{study}/{stage}.tsv"
    wildcard_constraints:
        stage=r"\d+",
    priority: TRAINING_PRIORITY
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        pruner=lambda wc: pruner_dict(PRUNERS_OF[wc.study]),
        study=study_dict,
        prior=lambda wc: [f"{PRUNE_DIR.format(study=wc.study)}/stage{k}.json" for k in range(int(wc.stage))],
    script:
        "../workflow/scripts/prune_stage.py"
