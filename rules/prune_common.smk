# Functions of rules/prune.smk. Pruned studies (`pruner:` asha or folds, segsweep.plan.pruning) run in stages:
# stage k's results of the configurations still alive, then a decision (checkpoint prune_stage) that keeps
# some of them for stage k+1. Cells and ids are the plan's; only which files are asked for changes.
from segsweep.plan.pruning import cell_rungs, pruner_dict, rung_path, stage_inputs, study_pruners

try:
    PRUNERS_OF = study_pruners(CFG, STUDIES, CELLS)
except SegsweepError as exc:
    raise WorkflowError(f"segsweep: {exc}") from None
CELL_RUNGS = cell_rungs(PRUNERS_OF, STUDIES)  # cell → the rung epochs it stops at before its train job
PRUNE_DIR = "results/studies/{study}/prune"


def prune_decisions(study, upto):
    """The decision files of stages < upto (each a finished checkpoint)."""
    return [checkpoints.prune_stage.get(study=study, stage=str(k)).output.decision for k in range(upto)]


def prune_stage_input(wc):
    k = int(wc.stage)
    return stage_inputs(PRUNERS_OF[wc.study], STUDIES[wc.study], k, prune_decisions(wc.study, k))


def pruned_study_decisions(wc):
    """The aggregate rule's decision files of a pruned study ([] for other studies)."""
    if wc.study not in PRUNERS_OF:
        return []
    return prune_decisions(wc.study, PRUNERS_OF[wc.study].n_stages - 1)


def pruned_study_metrics(wc):
    """Every result the study's table reads: each stage's files of the configurations alive at that stage."""
    p = PRUNERS_OF[wc.study]
    return stage_inputs(p, STUDIES[wc.study], p.n_stages - 1, pruned_study_decisions(wc))


def rung_before(cell, epoch):
    """The cell's rung file just below ``epoch`` (its checkpoint continues from there), or []."""
    prev = [r for r in CELL_RUNGS.get(cell, ()) if r < epoch]
    return [rung_path(cell, prev[-1], CELLS_DIR)] if prev else []


def train_rung_prev(wc):
    return rung_before(wc.cell, int(wc.epoch))


def train_last_rung(wc):
    # a cell of a pruned study trains its final stretch after its last rung (same cell dir, same last.pt)
    return rung_before(wc.cell, CELLS[wc.cell].params.epochs + 1)
