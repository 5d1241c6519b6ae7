# Functions of rules/adaptive.smk. Adaptive studies (mode: optuna): rounds of trials as a checkpoint. Round r's proposals depend only on the
# study's context (the config) and the metrics of the trials of rounds < r; each valid trial is an ordinary
# cell trained by the train rule (CELLS falls back to the cells recorded in round files, common.smk).
from segsweep.plan.optuna_rounds import OPTUNA_DIR, round_sizes, study_context, trial_cells

OPTUNA_STUDIES = [n for n, s in STUDIES.items() if s.adaptive]
OPTUNA_CTX = {n: study_context(CFG, n, PLAN.data_fp) for n in OPTUNA_STUDIES}
OPTUNA_ROUNDS = {n: round_sizes(CFG["studies"][n]) for n in OPTUNA_STUDIES}


def optuna_round_files():
    return [f"{OPTUNA_DIR.format(study=s)}/round{r}.json" for s in OPTUNA_STUDIES for r in range(len(OPTUNA_ROUNDS[s]))]


def optuna_rounds_done(study, upto):
    """The round files of rounds < upto (each a finished checkpoint)."""
    return [checkpoints.optuna_round.get(study=study, round=str(r)).output.round for r in range(upto)]


def optuna_metrics(rounds):
    return [f"{CELLS_DIR}/{c}/metrics.json" for c in sorted(trial_cells(rounds))]


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
