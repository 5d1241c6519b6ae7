# Adaptive studies (mode: optuna, rules/adaptive.smk): rounds of trials as a checkpoint. Round r's proposals
# depend only on the study's context (the config) and the metrics of the trials of rounds < r; each valid trial is
# an ordinary cell trained by the train rule (CELLS falls back to the cells recorded in round files, common.smk).
# Layered: this file knows rounds only; rules/prune_common.smk builds on it (what a round reads when the study
# is pruned, and the rules' input functions that depend on both), never the other way round.
from segsweep.plan.optuna_rounds import round_sizes, study_context, trial_cells

OPTUNA_STUDIES = [n for n, s in STUDIES.items() if s.adaptive]
OPTUNA_CTX = {n: study_context(CFG, n, PLAN.data_fp) for n in OPTUNA_STUDIES}
OPTUNA_ROUNDS = {n: round_sizes(CFG["studies"][n]) for n in OPTUNA_STUDIES}


def optuna_rounds_done(study, upto):
    """The round files of rounds < upto (each a finished checkpoint)."""
    return [checkpoints.optuna_round.get(study=study, round=str(r)).output.round for r in range(upto)]


def optuna_metrics(rounds):
    return [cell_file(c) for c in sorted(trial_cells(rounds))]
