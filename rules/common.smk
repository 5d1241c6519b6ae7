# Config validation and the cell table, built once per Snakemake invocation (O(cells)).
import copy
import os
import sys
import uuid
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # the in-repo package, also under --use-conda

from snakemake.exceptions import WorkflowError
from segsweep.data.config import DataConfig, DataFolders, dataset_base, scan_dir
from segsweep.data.scan import watch_root
from segsweep.io import identity
from segsweep.paths import (
    CELLS_DIR,
    DATASETS_DIR,
    OPTUNA_DIR,
    PREDICT_DIR,
    PRUNE_DIR,
    STUDY_DIR,
    cell_file,
    rung_path,
    study_dir,
)
from segsweep.plan import config as sscfg
from segsweep.plan.cells import build_plan, used_datasets
from segsweep.plan.headers import params_header, study_headers
from segsweep.plan.optuna_rounds import round_file, round_files
from segsweep.training.params import CellParams
from segsweep.plan.snapshots import PlannedCells
from segsweep.plan import planned_config
from segsweep.study import check_one_dataset, study_to_dict
from segsweep.errors import SegsweepError
from segsweep.plan.resources import train_runtime_min
from segsweep.training.job import RUN_ENV
from segsweep.training.spawner import start_for_batch_step, target_rules as spawner_target_rules
from segsweep.training.step_signals import forward_in_job_step

# A job's own invocation (a Slurm job step) parses the config the run was planned with, not the file as it
# is now (edited since?); the submitting invocation records it for them (plan/planned_config.py).
JOB_INVOCATION = workflow.remote_exec or workflow.subprocess_exec
try:
    if JOB_INVOCATION:
        planned_config.adopt(config, notify=lambda msg: print(f"segsweep: {msg}", file=sys.stderr))
    GIVEN_CONFIG = None if JOB_INVOCATION else copy.deepcopy(config)
except SegsweepError as exc:
    raise WorkflowError(f"segsweep: {exc}") from None
sscfg.coerce_cli_scalars(config)  # --config predict='{deidentify: true}' gives the string 'true'
try:  # a typo names the key in one line (sscfg.validate), not jsonschema's dump of the schema
    CFG = sscfg.prepare(config, base_dir=workflow.basedir)
    if not JOB_INVOCATION:  # the config its jobs will parse (above); sbatch and srun pass the variable on
        os.environ[planned_config.ENV] = str(planned_config.record(GIVEN_CONFIG, CFG))
        # this invocation's id: a finished cell whose pack failed is restored, not redone (training/job.py)
        os.environ[RUN_ENV] = uuid.uuid4().hex
    # A real data root is read in place: its content manifest (rewritten only when the content changes) is
    # ingest's input and its digest the data part of every cell id; the phantom is made by a rule.
    DATA_CFG = DataConfig.from_config(CFG)
    ROOT_SCAN = None if DATA_CFG.source == "phantom" else watch_root(DATA_CFG, scan_dir(DATA_CFG))
    # the same for each extra data set a study uses (`datasets`, `studies.<s>.data`), under its own prefix
    DATASET_SCANS = {}
    for _ds in used_datasets(CFG):
        _dcfg = DataConfig.from_config(CFG, _ds)
        if _dcfg.source != "phantom":
            DATASET_SCANS[_ds] = watch_root(_dcfg, f"{dataset_base(_ds)}/raw/scan", key=f"datasets.{_ds}")
    PLAN = build_plan(
        CFG,
        data_content=ROOT_SCAN.digest if ROOT_SCAN else None,
        dataset_content={k: v.digest for k, v in DATASET_SCANS.items()},
    )
except SegsweepError as exc:
    raise WorkflowError(f"segsweep: {exc}") from None

# The plan's cells + the trial cells of adaptive studies, recorded in their round files (rules/adaptive.smk);
# each cell looked up is snapshot as planned (results/cells/<id>/cell.json), and a job whose cell the config no longer holds
# (edited while a Slurm run goes on: each job step parses it again) runs the snapshot (plan/snapshots.py)
ROUND_FILES = round_files(CFG, PLAN.studies)
CELLS = PlannedCells(
    PLAN.cells,
    lambda: ROUND_FILES,
    CELLS_DIR,
    on_snapshot=lambda msg: print(f"segsweep: {msg}", file=sys.stderr),
)
STUDIES = PLAN.studies
# the default data set's folders, keyed by its data, preprocessing and split settings (data.config.DataFolders):
# results/data/<key>, results/splits/<key>, results/figures/data/<key>
FOLDERS = DataFolders.of(PLAN.data, PLAN.preprocess, PLAN.splits)
DATA_DIR = FOLDERS.data
DATASETS = PLAN.datasets  # the extra data sets in use: results/datasets/{dataset}/ (rules/data.smk, split.smk)
MAX_ATTEMPTS = 1 + CFG["resources"]["train_retries"]
# Snakemake retries a training job for crashes (counted by the job: training/job.py) and for stops (a cancelled
# Slurm job is resubmitted; a time-limit stop requeues itself and uses none): training/slurm_job.py
TRAIN_RETRIES = CFG["resources"]["train_retries"] + CFG["resources"]["train_max_stops"]
# Training, and the decisions that release more of it, go first: a core that frees takes the next cell, not a
# finished study's summaries (aggregate, figures, report), so the last study's cells do not queue behind the
# others' summaries; those run on the cores the last cells leave (benchmarks/README.md, benchmark 8).
TRAINING_PRIORITY = 1
# a training job's execution settings (last.pt frequency, trainer worker, amp/channels_last "auto"): rule
# resources (Snakemake's are integers), passed on whole by the scripts (segsweep.training.job.execution_settings)
EXECUTION_RESOURCES = PLAN.resources.execution_resources()
# A Slurm job's batch step (the pack's own Snakemake) starts the job's worker spawner: the cells' srun steps
# have it start their trainer workers, which then outlive each step (training/spawner.py)
start_for_batch_step(
    spawner_target_rules(sys.argv),
    PLAN.resources.worker,
    notify=lambda msg: print(f"segsweep: {msg}", file=sys.stderr),
)
# A cell's srun step passes its stop signals on to the training script: under proctrack/cgroup only the step's
# Snakemake gets them (training/step_signals.py)
forward_in_job_step(spawner_target_rules(sys.argv))
# the execution settings among the train rules' params (a rerun trigger): device, amp / channels_last as
# "set to true" (segsweep.plan.resources.ResourceConfig.rerun_params: an upgrade to "auto" reruns nothing)
DEVICE_PARAMS = PLAN.resources.rerun_params()


wildcard_constraints:
    cell="[0-9a-f]{12}",
    dataset="|".join(DATASETS) or "NONE",
    study="|".join(STUDIES) or "NONE",
    split=r"seed\d+(-cv\d+)?",


# a training job's header names its studies and their axis values (segsweep.plan.headers): a string resource
CELL_HEADERS = study_headers(STUDIES)
_TRAIN_BASE = CellParams.from_config(CFG["train"]).to_dict(identity=True)


def cell_header(wc):
    """study: axis=value ... for the train rules' `study` resource; an optuna trial: what differs from `train`."""
    if wc.cell in CELL_HEADERS:
        return CELL_HEADERS[wc.cell]
    return params_header(CELLS[wc.cell].params.to_dict(identity=True), _TRAIN_BASE)


def data_dir(dataset):
    """The ingested arrays of a data set: results/data/<key> (default), results/datasets/<name>/data."""
    return DATA_DIR if dataset is None else f"{dataset_base(dataset)}/data"


def splits_dir(dataset):
    """A data set's split files: results/splits/<key> (default), results/datasets/<name>/splits."""
    return str(FOLDERS.splits) if dataset is None else f"{dataset_base(dataset)}/splits"


def split_file(cell):
    return f"{splits_dir(cell.dataset)}/{cell.split}.json"


def cell_data(wc):
    # ancient: the data's identity is part of the cell id (docs/architecture.md, "Cell ids"), so an ingest
    # rerun that produces the same data retrains nothing, and new data means new cells
    return ancient(data_dir(CELLS[wc.cell].dataset))


def cell_split(wc):
    # ancient: what the split holds is in the cell id (seed, fractions, the data's identity), so a split
    # rewritten with the same content (after ingest reran) retrains nothing
    return ancient(split_file(CELLS[wc.cell]))


def dataset_source(wc):
    """An extra data set's ingest input: its phantom's manifest, or its data root's content manifest."""
    if wc.dataset in DATASET_SCANS:
        return str(DATASET_SCANS[wc.dataset].manifest)
    return f"{dataset_base(wc.dataset)}/raw/phantom/MANIFEST.json"


def study_data(wc):
    return data_dir(STUDIES[wc.study].dataset)


def init_from_inputs(wc):
    # init_from (rules/train.smk): the source cell's metrics.json, or the source study's table (the job picks its
    # validation-selected cell there); ancient: the source's identity is in the cell's id. [] for other cells.
    ref = CELLS[wc.cell].params.init_from
    if ref is None:
        return []
    if ref.cell is not None:
        return [ancient(cell_file(ref.cell))]
    return [ancient(f"{study_dir(ref.study)}/{f}") for f in ("table.json", "cells.csv")]


def study_dict(wc):
    return study_to_dict(STUDIES[wc.study])


# named after the config (report.name, else the --configfile's name; the demo's is reports/report.*), so two
# configs run in one folder keep their own reports
REPORT_NAME = sscfg.report_name(CFG, workflow.overwrite_configfiles)
REPORT_OUTPUTS = [f"reports/{REPORT_NAME}.html", f"reports/{REPORT_NAME}.pdf"]
# the job's header (braces doubled: Snakemake formats a message with the job's wildcards)
REPORT_MESSAGE = f"report {CFG['title']!r} of {len(STUDIES)} stud{'y' if len(STUDIES) == 1 else 'ies'}: {', '.join(STUDIES)}".replace(
    "{", "{{"
).replace(
    "}", "}}"
)
