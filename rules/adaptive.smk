# Adaptive studies (mode: optuna): one checkpoint job per round, then the study's trials (functions:
# rules/adaptive_common.smk).


checkpoint optuna_round:
    input:
        unpack(optuna_round_input),
    output:
        round=f"{OPTUNA_DIR}/round{{round}}.json",
    log:
        "logs/optuna_round/{study}/{round}.log",
    benchmark:
        "benchmarks/runs/optuna_round/{study}/{round}.tsv"
    wildcard_constraints:
        round=r"\d+",
    priority: TRAINING_PRIORITY
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        ctx=lambda wc: OPTUNA_CTX[wc.study],
        n_trials=lambda wc: OPTUNA_ROUNDS[wc.study][int(wc.round)],
        cells_dir=CELLS_DIR,
    script:
        "../workflow/scripts/optuna_round.py"


# The study's round sizes as a plain (non-checkpoint) job. optuna_trials waits for the checkpoint rounds, and
# Snakemake skips the params check of a job whose input waits for a checkpoint, so without this job raising
# n_trials on a finished study would schedule nothing; this one reruns when the sizes change, and its
# consumer optuna_trials with it, which then asks for the new rounds.
rule optuna_plan:
    output:
        plan=f"{OPTUNA_DIR}/plan.json",
    log:
        "logs/optuna_plan/{study}.log",
    benchmark:
        "benchmarks/runs/optuna_plan/{study}.tsv"
    priority: TRAINING_PRIORITY
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        rounds=lambda wc: OPTUNA_ROUNDS[wc.study],
    script:
        "../workflow/scripts/optuna_plan.py"


# A pruned optuna study: decision k of round r's successive-halving bracket (rules/prune_common.smk).
checkpoint optuna_prune_stage:
    input:
        unpack(optuna_prune_stage_input),
    output:
        decision=f"{OPTUNA_DIR}/round{{round}}-stage{{stage}}.json",
    log:
        "logs/optuna_prune_stage/{study}/{round}-{stage}.log",
    benchmark:
        "benchmarks/runs/optuna_prune_stage/{study}/{round}-{stage}.tsv"
    wildcard_constraints:
        round=r"\d+",
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
        prior=lambda wc: [
            f"{OPTUNA_DIR.format(study=wc.study)}/round{wc.round}-stage{k}.json" for k in range(int(wc.stage))
        ],
    script:
        "../workflow/scripts/optuna_prune_stage.py"


rule optuna_trials:
    input:
        unpack(optuna_study_input),
        plan=f"{OPTUNA_DIR}/plan.json",
    output:
        trials=f"{OPTUNA_DIR}/trials.json",
        study=f"{OPTUNA_DIR}/study.json",
    log:
        "logs/optuna_trials/{study}.log",
    benchmark:
        "benchmarks/runs/optuna_trials/{study}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        ctx=lambda wc: OPTUNA_CTX[wc.study],
        study=study_dict,
        cells_dir=CELLS_DIR,
    script:
        "../workflow/scripts/optuna_trials.py"
