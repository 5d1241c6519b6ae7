# One job per cell. The cell id is a content hash of its parameters (+ data and split identity), so this
# rule's only wildcard needs no parsing: everything comes from the CELLS table built in common.smk.
# Only metrics.json is a declared output: checkpoints (last.pt) must survive a killed job so the rerun resumes.
# Rerun triggers: `params` hold the cell's identity form (so a new hyperparameter at its neutral value reruns
# nothing) and the execution settings; the script's mtime is a trigger too, so workflow/scripts/train.py is
# kept stable (tests/test_cell_ids.py pins it).
# Packing several cells into one Slurm job is the profile's business (groups + group-components).


# What every job that trains a cell shares: this rule (to the cell's epochs) and train_rung (to a pruner's
# rung epoch, rules/prune.smk). Snakemake's `use rule ... with:` cannot change a rule's script, so the two rules
# share these instead.
TRAIN_INPUT = dict(
    # the cell's data set (ancient: its identity is in the cell id; rules/common.smk `cell_data`)
    data=cell_data,
    split=cell_split,
    # init_from: the source cell's metrics.json, or the source study's table (the job reads the selected
    # cell's best.pt there); ancient: the source's identity is in this cell's id. [] for other cells.
    init=init_from_inputs,
)
TRAIN_RESOURCES = dict(
    # how a cell runs, never what it computes (segsweep.training.job.EXECUTION_SETTINGS): resources, so
    # changing them reruns nothing: last.pt frequency, the trainer worker (training/worker.py), and whether
    # amp / channels_last are "auto"
    **EXECUTION_RESOURCES,
    mem_mb=CFG["resources"]["train_mem_mb"],
    runtime=lambda wc: train_runtime_min(CELLS[wc.cell].params, PLAN.preprocess, PLAN.resources),
    gpu=CFG["resources"]["train_gpus"],
    attempt=lambda wc, attempt: attempt,
    max_attempts=MAX_ATTEMPTS,  # a resource, not a param: a retry count changes no result
    # shown in the job's header: its studies and axis values (a resource: no rerun); last, so the header
    # keeps reading "attempt=k, max_attempts=n"
    study=cell_header,
)
TRAIN_PARAMS = dict(
    cell=lambda wc: CELLS[wc.cell].params.to_dict(identity=True),
    # device, amp, channels_last: amp / channels_last only as "set to true" (rules/common.smk)
    **DEVICE_PARAMS,
)


rule train:
    input:
        **TRAIN_INPUT,
        # a cell of a pruned study: its last rung (that job's last.pt is where this one continues). [] else.
        rung=lambda wc: [ancient(f) for f in train_last_rung(wc)],
    output:
        # update(): Snakemake does not remove it before the job (a requeued pack's Snakemake forces its targets,
        # a read-only cell folder would crash Snakemake itself); the job overwrites it atomically (training/job.py)
        metrics=update(cell_file("{cell}")),
    log:
        "logs/train/{cell}.log",
    benchmark:
        "benchmarks/runs/train/{cell}.tsv"
    priority: TRAINING_PRIORITY
    retries: TRAIN_RETRIES
    conda:
        "../envs/train.yaml"
    threads: CFG["resources"]["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        **TRAIN_PARAMS,
        # the final evaluation's settings: a change re-evaluates finished cells (resumed from last.pt, no training)
        evaluation=CFG["evaluation"],
    script:
        "../workflow/scripts/train.py"
