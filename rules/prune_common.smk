# Functions of rules/prune.smk. Pruned studies (`pruner:` asha or folds, segsweep.plan.pruning) run in stages:
# stage k's results of the configurations still alive, then a decision (checkpoint prune_stage) that keeps
# some of them for stage k+1. Cells and ids are the plan's; only which files are asked for changes.
# Built on rules/adaptive_common.smk (an optuna study's rounds; a pruned one's rounds are brackets): the input
# functions that depend on both a study's rounds and its pruner are here, and that file uses none of this one.
import json

from segsweep.plan.optuna_rounds import trial_study

from segsweep.plan.pruning import cell_rungs, pruner_dict, stage_inputs, study_pruners

try:
    PRUNERS_OF = study_pruners(CFG, STUDIES, CELLS)
except SegsweepError as exc:
    raise WorkflowError(f"segsweep: {exc}") from None
CELL_RUNGS = cell_rungs(PRUNERS_OF, STUDIES)  # cell → the rung epochs it stops at before its train job


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
    if STUDIES[wc.study].adaptive:  # every round's bracket
        return optuna_study_input(wc)["decisions"]
    return prune_decisions(wc.study, PRUNERS_OF[wc.study].n_stages - 1)


# A pruned optuna study: each round is one successive-halving bracket over its valid trials.
def round_study(study, round_file):
    return trial_study(STUDIES[study], json.loads(Path(round_file).read_text())["trials"])


def optuna_round_decisions(study, r, upto):
    return [
        checkpoints.optuna_prune_stage.get(study=study, round=str(r), stage=str(k)).output.decision for k in range(upto)
    ]


def optuna_bracket(study, r, round_file):
    """(the files the round's last stage reads, the round's decision files)."""
    p = PRUNERS_OF[study]
    decisions = optuna_round_decisions(study, r, p.n_stages - 1)
    return stage_inputs(p, round_study(study, round_file), p.n_stages - 1, decisions), decisions


def optuna_prune_stage_input(wc):
    path = checkpoints.optuna_round.get(study=wc.study, round=wc.round).output.round
    k = int(wc.stage)
    files = stage_inputs(
        PRUNERS_OF[wc.study], round_study(wc.study, path), k, optuna_round_decisions(wc.study, int(wc.round), k)
    )
    return {"round": path, "results": files}


def optuna_trial_rungs(cell):
    """The rungs of a cell proposed by a pruned optuna study's round (() for any other cell)."""
    for s in OPTUNA_STUDIES:
        if s in PRUNERS_OF:
            rounds = [round_file(s, r) for r in range(len(OPTUNA_ROUNDS[s]))]
            if cell in trial_cells(rounds):
                return PRUNERS_OF[s].cell_rungs()
    return ()


def pruned_study_metrics(wc):
    """Every result the study's table reads: each stage's files of the configurations alive at that stage."""
    p = PRUNERS_OF[wc.study]
    return stage_inputs(p, STUDIES[wc.study], p.n_stages - 1, pruned_study_decisions(wc))


def rung_before(cell, epoch):
    """The cell's rung file just below ``epoch`` (its checkpoint continues from there), or []."""
    rungs = CELL_RUNGS.get(cell) or optuna_trial_rungs(cell)
    prev = [r for r in rungs if r < epoch]
    return [rung_path(cell, prev[-1])] if prev else []


def train_rung_prev(wc):
    return rung_before(wc.cell, int(wc.epoch))


def train_last_rung(wc):
    # a cell of a pruned study trains its final stretch after its last rung (same cell dir, same last.pt)
    return rung_before(wc.cell, CELLS[wc.cell].params.epochs + 1)


# What an adaptive study's rounds read (rules/adaptive.smk): a pruned study's rounds are brackets.
def optuna_results(study, rounds):
    """What a round (and the study's end) reads of the rounds before: each valid trial's metrics.json; in a
    pruned study, each round's successive-halving bracket (its decisions and the files they read)."""
    if study not in PRUNERS_OF:
        return {"metrics": optuna_metrics(rounds), "decisions": []}
    metrics, decisions = [], []
    for r, path in enumerate(rounds):
        files, dec = optuna_bracket(study, r, path)
        metrics += files
        decisions += dec
    return {"metrics": sorted(set(metrics)), "decisions": decisions}


def optuna_round_input(wc):
    rounds = optuna_rounds_done(wc.study, int(wc.round))
    return {"rounds": rounds, **optuna_results(wc.study, rounds)}


def optuna_study_input(wc):
    rounds = optuna_rounds_done(wc.study, len(OPTUNA_ROUNDS[wc.study]))
    return {"rounds": rounds, **optuna_results(wc.study, rounds)}


def optuna_trial_metrics(wc):
    """The aggregate rule's metrics for an optuna study: every valid trial's cell."""
    return optuna_study_input(wc)["metrics"]


# The aggregate rule's metrics of any study (rules/aggregate.smk).
def study_metrics(wc):
    if wc.study in PRUNERS_OF:  # the stages its pruner let each configuration reach (rules/prune.smk)
        return pruned_study_metrics(wc)
    if STUDIES[wc.study].adaptive:  # its cells are known once its rounds are (rules/adaptive.smk)
        return optuna_trial_metrics(wc)
    return [cell_file(c) for c in STUDIES[wc.study].cell_ids]
