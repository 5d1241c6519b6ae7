# Config validation and the cell table, built once per Snakemake invocation (O(cells)).
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # the in-repo package, also under --use-conda

from snakemake.exceptions import WorkflowError
from segsweep.data.config import PHANTOM_ROOT, DataConfig
from segsweep.data.scan import watch_root
from segsweep.io import identity
from segsweep.plan import config as sscfg
from segsweep.plan.cells import build_plan
from segsweep.plan.optuna_rounds import TrialCells
from segsweep.study import study_to_dict
from segsweep.errors import SegsweepError
from segsweep.plan.resources import train_runtime_min

# Names the offending key on a typo (and fills defaults); study_files are merged and checked again below.
validate(config, sscfg.schema_path())
try:
    CFG = sscfg.prepare(config, base_dir=workflow.basedir)
    # A real data root is read in place: its content manifest (rewritten only when the content changes) is
    # ingest's input and its digest the data part of every cell id; the phantom is made by a rule.
    DATA_CFG = DataConfig.from_config(CFG)
    ROOT_SCAN = None if DATA_CFG.source == "phantom" else watch_root(DATA_CFG)
    PLAN = build_plan(CFG, data_content=ROOT_SCAN.digest if ROOT_SCAN else None)
except SegsweepError as exc:
    raise WorkflowError(f"segsweep: {exc}") from None

# + the trial cells of adaptive studies, recorded in their round files (rules/adaptive.smk)
CELLS = TrialCells(PLAN.cells, lambda: optuna_round_files())
STUDIES = PLAN.studies
DATA_DIR = "results/data"
CELLS_DIR = "results/cells"
MAX_ATTEMPTS = 1 + CFG["resources"]["train_retries"]


wildcard_constraints:
    cell="[0-9a-f]{12}",
    study="|".join(STUDIES) or "NONE",
    split=r"seed\d+(-cv\d+)?",


def cell_split(wc):
    # ancient: what the split holds is in the cell id (seed, fractions, the data's identity), so a split
    # rewritten with the same content (after ingest reran) retrains nothing
    return ancient(f"results/splits/{CELLS[wc.cell].split}.json")


def init_from_inputs(wc):
    # init_from (rules/train.smk): the source cell's metrics.json, or the source study's table (the job picks its
    # validation-selected cell there); ancient: the source's identity is in the cell's id. [] for other cells.
    ref = CELLS[wc.cell].params.init_from
    if ref is None:
        return []
    if ref.cell is not None:
        return [ancient(f"{CELLS_DIR}/{ref.cell}/metrics.json")]
    return [ancient(f"results/studies/{ref.study}/{f}") for f in ("table.json", "cells.csv")]


def study_metrics(wc):
    if STUDIES[wc.study].mode == "optuna":  # its cells are known once its rounds are (rules/adaptive.smk)
        return optuna_trial_metrics(wc)
    return [f"{CELLS_DIR}/{c}/metrics.json" for c in STUDIES[wc.study].cell_ids]


def study_dict(wc):
    return study_to_dict(STUDIES[wc.study])


REPORT_OUTPUTS = ["reports/report.html", "reports/report.pdf"]
