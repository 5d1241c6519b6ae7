# Use the trained model: `snakemake predict --config predict='{input: /path/to/dicom, model: best}'` segments
# every MR series under the input root (results/predict/); a model card per study (docs/predict.md).
# Functions: rules/predict_common.smk.
rule predict:
    input:
        unpack(predict_inputs),
    output:
        # predict.json only, not the folder: a failing run must not make Snakemake delete the series that
        # were written and qc.csv, which says why the rest failed (the run itself clears the last run's)
        f"{PREDICT_DIR}/predict.json",
    log:
        "logs/predict.log",
    benchmark:
        "benchmarks/runs/predict.tsv"
    conda:
        "../envs/predict.yaml"
    threads: CFG["resources"]["train_threads"]
    resources:
        mem_mb=CFG["resources"]["train_mem_mb"],
        runtime=60,
        gpu=CFG["resources"]["train_gpus"],
    params:
        # a new input root, model or setting reruns predict; new files in the same root need -R predict
        predict=CFG["predict"],
        preprocess=identity(PLAN.preprocess),
        pseudonym_key=CFG["data"]["pseudonym_key"],
        studies=[study_to_dict(s) for s in STUDIES.values()],
        results_dir=lambda wc, output: str(Path(output[0]).parents[1]),  # results/: cells/, studies/
    script:
        "../workflow/scripts/predict.py"


rule model_card:
    input:
        table=f"{STUDY_DIR}/table.json",
        cells=f"{STUDY_DIR}/cells.csv",
        data=study_data,  # the study's data set (its dataset.json and split)
    output:
        f"{STUDY_DIR}/model_card.md",
    log:
        "logs/model_card/{study}.log",
    benchmark:
        "benchmarks/runs/model_card/{study}.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        study=study_dict,
        results_dir=lambda wc, input: str(Path(input.table).parents[2]),
        seed=CFG["seed"],
        splits_dir=lambda wc: splits_dir(STUDIES[wc.study].dataset),
    script:
        "../workflow/scripts/model_card.py"
