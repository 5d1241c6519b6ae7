# The report: one self-contained HTML and its A4 PDF. A report-only change (title, layout) reruns only this.


rule report:
    input:
        tables=expand(f"{STUDY_DIR}/table.json", study=STUDIES),
        cells=expand(f"{STUDY_DIR}/cells.csv", study=STUDIES),
        stats=expand(f"{STUDY_DIR}/stats.json", study=STUDIES),
        figures=expand(f"{STUDY_DIR}/figures", study=STUDIES),
        data_figures=FOLDERS.figures,
        splits=[f"{FOLDERS.splits}/{s}.json" for s in PLAN.split_specs],
        data=DATA_DIR,
        # the extra data sets in use (their counts in the Data section): results/datasets/{dataset}/data
        datasets=[data_dir(d) for d in DATASETS],
    output:
        # flagged for `snakemake --report`: the zip carries segsweep's own report beside the tables and figures
        html=report(REPORT_OUTPUTS[0], category="report", caption="../workflow/report/report.rst"),
        pdf=report(REPORT_OUTPUTS[1], category="report", caption="../workflow/report/report.rst"),
    log:
        f"logs/report/{REPORT_NAME}.log",
    benchmark:
        f"benchmarks/runs/report/{REPORT_NAME}.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        config=CFG,
        studies=[study_to_dict(s) for s in STUDIES.values()],
        results_dir=lambda wc, input: str(Path(input.tables[0]).parents[2]),  # results/
    message:
        REPORT_MESSAGE
    script:
        "../workflow/scripts/report.py"
