# What the predict and model_card rules (rules/predict.smk) need: the chosen model's inputs, the model cards.
import re

MODEL_CARDS = expand(f"{STUDY_DIR}/model_card.md", study=STUDIES)


def predict_inputs(wc):
    """What the chosen model needs: the study tables it is selected from (best, a study) or the cell's
    metrics (a cell id); and the ingested data set the model trained on (its target and image size)."""
    spec = str(CFG["predict"]["model"]).strip()
    if not CFG["predict"]["input"]:
        raise WorkflowError(
            "segsweep: config key 'predict.input' is required for the predict target, e.g. "
            "snakemake predict --config predict='{input: /path/to/dicom, model: best}'"
        )
    if re.fullmatch("[0-9a-f]{12}", spec):
        if spec not in CELLS:
            raise WorkflowError(f"segsweep: config key 'predict.model': cell {spec} is not a cell of this config")
        return {"data": data_dir(CELLS[spec].dataset), "cell": cell_file(spec)}
    if spec != "best" and spec not in STUDIES:
        raise WorkflowError(
            f"segsweep: config key 'predict.model': '{spec}' is neither 'best', a study "
            f"({', '.join(STUDIES)}) nor a cell id (12 hex digits)"
        )
    names = list(STUDIES) if spec == "best" else [spec]
    try:  # 'best' compares validation values: one data set only (known now, so `snakemake -n` says it)
        check_one_dataset([STUDIES[n] for n in names])
    except SegsweepError as exc:
        raise WorkflowError(f"segsweep: {exc}") from None
    return {
        "data": data_dir(STUDIES[names[0]].dataset),  # the model's data set: its target and image size
        "tables": expand(f"{STUDY_DIR}/table.json", study=names),
        "cells": expand(f"{STUDY_DIR}/cells.csv", study=names),
    }
