# Per study: the tidy per-cell table, the pivot in the study's layout, and its figures.


rule aggregate:
    input:
        study_metrics,
        # an optuna study: the study with its trials as rows (rules/adaptive.smk)
        optuna_study=lambda wc: (
            f"{OPTUNA_DIR.format(study=wc.study)}/study.json" if STUDIES[wc.study].adaptive else []
        ),
        # a pruned study: its pruner's decisions (rules/prune.smk)
        prune=pruned_study_decisions,
        # the split files of the study's cells: the real size of each training fraction
        splits=lambda wc: sorted({split_file(CELLS[c]) for c in STUDIES[wc.study].cell_ids}),
        # the patient files: native reference masks for the selected configuration's post-processing choice
        # and ensemble (segsweep.analysis.final); ancient, as for the cells that trained on them
        data=lambda wc: ancient(study_data(wc)),
    output:
        cells=report(
            f"{STUDY_DIR}/cells.csv",
            category="{study}",
            subcategory="tables",
            caption="../workflow/report/cells.rst",
        ),
        table=report(
            f"{STUDY_DIR}/table.csv",
            category="{study}",
            subcategory="tables",
            caption="../workflow/report/table.rst",
        ),
        table_json=f"{STUDY_DIR}/table.json",
        stats=report(
            f"{STUDY_DIR}/stats.json",
            category="{study}",
            subcategory="tables",
            caption="../workflow/report/stats.rst",
        ),
    log:
        "logs/aggregate/{study}.log",
    benchmark:
        "benchmarks/runs/aggregate/{study}.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        study=study_dict,
        cells_dir=CELLS_DIR,
        logs_dir="logs/train",
        seed=CFG["seed"],
    script:
        "../workflow/scripts/aggregate.py"


# A look inside the study's validation-selected cell (its best.pt on its validation images): activations per
# level, dead channels, weight histograms, as arrays for the figures rule (torch runs here, not in the report env).
rule inspect:
    input:
        table=f"{STUDY_DIR}/table.json",
        cells=f"{STUDY_DIR}/cells.csv",
    output:
        f"{STUDY_DIR}/inspect.npz",
    log:
        "logs/inspect/{study}.log",
    benchmark:
        "benchmarks/runs/inspect/{study}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cells_dir=CELLS_DIR,
    script:
        "../workflow/scripts/inspect.py"


# Any cell on request, one command: snakemake results/cells/<id>/inspect/figures (trains the cell if needed).
rule inspect_cell:
    input:
        metrics=cell_file("{cell}"),
    output:
        f"{CELLS_DIR}/{{cell}}/inspect/inspect.npz",
    log:
        "logs/inspect_cell/{cell}.log",
    benchmark:
        "benchmarks/runs/inspect_cell/{cell}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/scripts/inspect_cell.py"


rule inspect_cell_figures:
    input:
        f"{CELLS_DIR}/{{cell}}/inspect/inspect.npz",
    output:
        directory(f"{CELLS_DIR}/{{cell}}/inspect/figures"),
    log:
        "logs/inspect_cell_figures/{cell}.log",
    benchmark:
        "benchmarks/runs/inspect_cell_figures/{cell}.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/inspect_cell_figures.py"


rule figures:
    input:
        cells=f"{STUDY_DIR}/cells.csv",
        inspect=f"{STUDY_DIR}/inspect.npz",
    output:
        figures=report(
            directory(f"{STUDY_DIR}/figures"),
            patterns=["{name}.svg", "{name}.png"],
            category="{study}",
            subcategory="figures",
            caption="../workflow/report/study_figures.rst",
        ),
    log:
        "logs/figures/{study}.log",
    benchmark:
        "benchmarks/runs/figures/{study}.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        study=study_dict,
        cells_dir=CELLS_DIR,
    script:
        "../workflow/scripts/figures.py"


rule data_figures:
    input:
        data=DATA_DIR,
    output:
        figures=report(
            directory(FOLDERS.figures),
            patterns=["{name}.svg", "{name}.png"],
            category="data",
            caption="../workflow/report/data_figures.rst",
        ),
    log:
        "logs/data_figures.log",
    benchmark:
        "benchmarks/runs/data_figures.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/data_figures.py"
