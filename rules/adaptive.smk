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
