"""The results layout: every folder and file name a rule, a job or the report finds another's output by.

Folders are relative to the run folder (Snakemake's working directory); ``{study}`` is filled by the rules
(a wildcard) or by `study_dir`. File names are those inside a cell's or a study's folder. Names only, and
the functions that join them: the keyed data folders (``results/data/<key>`` ...) are computed by
`segsweep.data.config.DataFolders` from these prefixes, an adaptive study's round files by
`segsweep.plan.optuna_rounds.round_file`.
"""

from __future__ import annotations

RESULTS = "results"
# under a results folder (the report and predict take one as an argument): cells/<cell id>/, studies/<study>/
CELLS_SUB, STUDIES_SUB = "cells", "studies"
CELLS_DIR = f"{RESULTS}/{CELLS_SUB}"  # results/cells/<cell id>/: one folder per cell (content-addressed)
STUDIES_DIR = f"{RESULTS}/{STUDIES_SUB}"
STUDY_DIR = f"{STUDIES_DIR}/{{study}}"  # cells.csv, table.csv, table.json, stats.json, figures/, model_card.md
OPTUNA_DIR = f"{STUDY_DIR}/optuna"  # an adaptive study's round{r}.json files and journal (rules/adaptive.smk)
PRUNE_DIR = f"{STUDY_DIR}/prune"  # a pruned study's stage{k}.json decisions (rules/prune.smk)
DATA_DIR = f"{RESULTS}/data"  # + /<data key>: the default data set's arrays, qc.csv, dataset.json
SPLITS_DIR = f"{RESULTS}/splits"  # + /<split key>/seed{s}.json
DATA_FIGURES_DIR = f"{RESULTS}/figures/data"  # + /<data key>: figures of the data (CLAHE examples)
PHANTOM_ROOT = f"{RESULTS}/raw/phantom"  # + /<key of the phantom settings>
SCAN_DIR = f"{RESULTS}/raw/scan"  # + /<key of a real root's path>: its content manifest
DATASETS_DIR = f"{RESULTS}/datasets"  # + /<name>/{raw/phantom, raw/scan, data, splits}: extra data sets
PREDICT_DIR = f"{RESULTS}/predict"

# in a cell's folder (training/record.py describes metrics.json)
METRICS = "metrics.json"
SNAPSHOT = "cell.json"  # the cell as planned (plan/snapshots.py)
HISTORY = "history.csv"
PER_IMAGE = "per_image.csv"
PER_PATIENT = "per_patient.csv"
PREDICTIONS = "predictions.npz"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
RUNGS = "rungs"  # rungs/<epoch>.json: a pruned cell's result at a rung epoch

# in a study's folder
CELLS_CSV = "cells.csv"
TABLE_CSV = "table.csv"
TABLE_JSON = "table.json"
STATS_JSON = "stats.json"


def study_dir(study: str) -> str:
    """results/studies/<study>."""
    return STUDY_DIR.format(study=study)


def cell_file(cell: str, name: str = METRICS, cells_dir: str = CELLS_DIR) -> str:
    """results/cells/<cell>/<name> (metrics.json by default)."""
    return f"{cells_dir}/{cell}/{name}"


def rung_path(cell: str, epoch: int, cells_dir: str = CELLS_DIR) -> str:
    """results/cells/<cell>/rungs/<epoch>.json: the cell's result when its training stopped at ``epoch``."""
    return f"{cells_dir}/{cell}/{RUNGS}/{epoch}.json"
