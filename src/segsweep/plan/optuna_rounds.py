"""``mode: optuna`` studies as rounds: each round's trials are ordinary cells.

Round r's proposals are a pure function of the study's context (config) and the metrics of the trials of
rounds < r: `propose_round` rebuilds an in-memory Optuna study from those finished trials
(``optuna.trial.create_trial``; a trial that is not ``ok`` with a finite table value, or an ``invalid``
proposal, is told as FAIL), asks the round's trials with a sampler seeded by (sample_seed, r), and resolves
each into a cell exactly like every other cell (`segsweep.plan.cells.resolve_cell`, the plan-time checks). A
proposal the plan would reject (a ConfigError, a depth too deep for the image size) is recorded as an
``invalid`` trial with its reason and never becomes a cell.

Files (``results/studies/{study}/optuna/``): ``round{r}.json`` (`ROUND_KEYS`), ``trials.json`` (every trial
with its value and state), ``study.json`` (the study with one row per valid trial, `segsweep.study`
JSON form) and ``journal.log`` (an Optuna journal of the told trials, for ``optuna-dashboard``).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from segsweep.data.config import SplitConfig
from segsweep.errors import ConfigError
from segsweep.io import digest, write_json
from segsweep.labels import format_value
from segsweep.paths import HISTORY, METRICS, OPTUNA_DIR
from segsweep.plan.cells import Cell, _set, resolve_cell, study_base
from segsweep.plan.config import deep_merge, scale_preset
from segsweep.plan.resources import ResourceConfig
from segsweep.plan.search import SAMPLERS, optuna_space
from segsweep.plan.validate import check_cells
from segsweep.study import Study, StudyCell, TableLayout, pruned_cells, study_from_dict, study_to_dict
from segsweep.training.params import CellParams

DEFAULT_PARALLEL = 4
ROUND_KEYS = ("study", "round", "seed", "sampler", "trials")  # a trial: number, round, params, labels, state, ...


# ------------------------------------------------------------------------------------------- context
def study_context(cfg: Mapping, name: str, data_fp: str) -> dict:
    """Everything a round of study ``name`` depends on, as JSON (the round rule's params): no ``n_trials``,
    so raising it leaves the existing rounds' inputs unchanged."""
    spec = cfg["studies"][name]
    preset = scale_preset(cfg)
    base = deep_merge(study_base(cfg, name), preset.get("cell") or {})
    base["fold"] = None
    splits = SplitConfig.from_config(cfg)
    size = preset.get("size") or cfg["preprocess"]["size"]
    table = spec["table"]
    hib = table.get("higher_is_better", True)
    return {
        "study": name,
        "axes": spec["axes"],
        "sampler": spec.get("sampler", "tpe"),
        "sample_seed": int(spec.get("sample_seed", 0)),
        "direction": spec.get("direction", "maximize" if hib else "minimize"),
        "value": table.get("value", "val_dice_patient"),
        "base": base,
        "splits": {
            "seed": splits.seed,
            "val_fraction": splits.val_fraction,
            "test_fraction": splits.test_fraction,
            "folds": splits.folds,
        },
        "size": list(size),
        "data_fp": data_fp,
        "amp": ResourceConfig.from_config(cfg).hashed_amp,
    }


def round_sizes(spec: Mapping) -> list[int]:
    """Trials per round: ``parallel`` each, the last one the rest of ``n_trials``."""
    n, k = int(spec["n_trials"]), int(spec.get("parallel", DEFAULT_PARALLEL))
    return [min(k, n - i) for i in range(0, n, k)]


def round_file(study: str, r: int | str) -> str:
    """results/studies/<study>/optuna/round<r>.json: round r's proposals (the rules' checkpoint output)."""
    return f"{OPTUNA_DIR.format(study=study)}/round{r}.json"


def round_files(cfg: Mapping, studies: Mapping[str, Study]) -> list[str]:
    """Every round file of the config's adaptive studies; those that exist hold their trial cells."""
    return [
        round_file(name, r)
        for name, study in studies.items()
        if study.adaptive
        for r in range(len(round_sizes(cfg["studies"][name])))
    ]


def write_plan(study: str, sizes: Sequence[int], out: Path) -> dict:
    """``plan.json``: the study's trials per round (`round_sizes`); the file a changed ``n_trials`` reruns."""
    plan = {"study": study, "n_trials": int(sum(sizes)), "rounds": [int(n) for n in sizes]}
    write_json(Path(out), plan)
    return plan


def _splits(ctx: Mapping) -> SplitConfig:
    s = ctx["splits"]
    return SplitConfig(
        seed=s["seed"], val_fraction=s["val_fraction"], folds=s["folds"], test_fraction=s["test_fraction"]
    )


# ----------------------------------------------------------------------------------------- optuna glue
def distributions(ctx: Mapping) -> tuple[dict, dict[str, dict[str, Any]]]:
    """(axis → Optuna distribution, axis → {label: value} for the categorical axes)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists, decode = {}, {}
    for a, (kind, arg) in optuna_space(ctx["study"], {"axes": ctx["axes"]}).items():
        if kind == "categorical":
            labels = [format_value(v) for v in arg]
            if len(set(labels)) != len(labels):
                raise ConfigError(f"config key 'studies.{ctx['study']}.axes.{a}': values share a label ({labels})")
            dists[a] = CategoricalDistribution(labels)
            decode[a] = dict(zip(labels, arg))
        elif kind == "int":
            dists[a] = IntDistribution(int(arg[0]), int(arg[1]))
        else:
            dists[a] = FloatDistribution(float(arg[0]), float(arg[1]), log=kind == "loguniform")
    return dists, decode


def round_seed(sample_seed: int, r: int) -> int:
    return int(digest({"sample_seed": sample_seed, "round": r}, 8), 16)


def make_sampler(name: str, seed: int, study: str | None = None):
    """The registered sampler ``name`` (`segsweep.plan.search.SAMPLERS`), seeded."""
    import optuna

    key = f"studies.{study}.sampler" if study else None
    return getattr(optuna.samplers, SAMPLERS.entry(name, key=key).obj)(seed=seed)


def trial_value(trial: Mapping, metrics: Mapping[str, Mapping], value: str) -> tuple[str, float | None, str]:
    """(state, value, status) of a recorded trial: COMPLETE with the table value of an ok cell, PRUNED for a
    trial its round's pruner stopped (`read_metrics`), else FAIL."""
    if trial["state"] == "invalid":
        return "FAIL", None, "invalid"
    m = metrics.get(trial["cell"])
    if m is None:
        return "FAIL", None, "missing"
    if m.get("status") == "pruned":
        return "PRUNED", None, "pruned"
    v = m.get(value)
    if m.get("status") == "ok" and isinstance(v, (int, float)) and math.isfinite(v):
        return "COMPLETE", float(v), "ok"
    return "FAIL", None, str(m.get("status") or "failed")


def _frozen(trial: Mapping, state: str, value: float | None, dists: Mapping, times: Mapping | None = None):
    """An Optuna trial of a recorded one. ``times`` (`cell_times`): its cell's real start and end, so the
    journal shows durations; without them Optuna stamps both with the moment of the call (duration 0)."""
    import optuna

    # a pruned trial: its rung value at the epoch it stopped, as Optuna's pruners report (TPE ranks such
    # trials after the complete ones, by how far they got and that value)
    steps = trial.get("intermediate") or {}
    reason = trial.get("reason")
    attrs = {"round": trial["round"], "cell": trial.get("cell"), "status": trial.get("status"), "reason": reason}
    ft = optuna.trial.create_trial(
        state=getattr(optuna.trial.TrialState, state),
        value=value,
        intermediate_values={int(k): float(v) for k, v in steps.items()},
        params=dict(trial["optuna_params"]),
        distributions={a: dists[a] for a in trial["optuna_params"]},
        user_attrs={k: v for k, v in attrs.items() if v is not None},
        # "fail_reason" is where Optuna itself records why a trial failed (optuna.study._optimize)
        system_attrs={"fail_reason": reason} if state == "FAIL" and reason else None,
    )
    if times:
        ft.datetime_start = times["start"]
        if ft.state.is_finished():
            ft.datetime_complete = times["end"]
    return ft


def _decode(a: str, v: Any, dists: Mapping, decode: Mapping) -> tuple[Any, Any]:
    """(Optuna's value, the cell's value): floats kept to 4 significant digits (stable labels and ids)."""
    if a in decode:
        return v, decode[a][v]
    d = dists[a]
    if isinstance(v, float):
        v = min(max(float(f"{v:.4g}"), d.low), d.high)
        return v, v
    return int(v), int(v)


FAIL_REASONS = {"missing": "no metrics.json: the cell's training job failed or was not run"}


def told_trials(ctx: Mapping, prior: Sequence[Mapping], metrics: Mapping[str, Mapping]) -> list[dict]:
    """Every trial of ``prior`` round files with its state, value, status and ``reason`` (trial order): the
    proposal's reason for an invalid one, the cell's own (``metrics.json`` ``reason``, e.g. why it
    collapsed) or its status for a failed, diverged or collapsed one, the pruner's for a pruned one."""
    out = []
    for rnd in sorted(prior, key=lambda x: x["round"]):
        for t in rnd["trials"]:
            state, value, status = trial_value(t, metrics, ctx["value"])
            rec = {**t, "optuna_state": state, "value": value, "status": status}
            m = metrics.get(t["cell"]) or {}
            if state == "PRUNED" and m.get("epochs_run") and m.get("pruned_value") is not None:
                rec["intermediate"] = {str(int(m["epochs_run"])): float(m["pruned_value"])}
            if status not in ("ok", "invalid"):
                rec["reason"] = m.get("reason") or FAIL_REASONS.get(status, status)
            out.append(rec)
    return out


def propose_round(ctx: Mapping, r: int, count: int, prior: Sequence[Mapping], metrics: Mapping[str, Mapping]) -> dict:
    """Round ``r``: ``count`` trials asked of a study rebuilt from the trials of ``prior`` (rounds < r)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sorted(p["round"] for p in prior) != list(range(r)):
        raise ConfigError(
            f"study '{ctx['study']}': round {r} needs rounds 0..{r - 1}, got {[p['round'] for p in prior]}"
        )
    dists, decode = distributions(ctx)
    seed = round_seed(ctx["sample_seed"], r)
    study = optuna.create_study(direction=ctx["direction"], sampler=make_sampler(ctx["sampler"], seed, ctx["study"]))
    told = told_trials(ctx, prior, metrics)
    for t in told:
        study.add_trial(_frozen(t, t["optuna_state"], t["value"], dists))
    splits, size = _splits(ctx), ctx["size"]
    trials = []
    for _ in range(count):
        ot = study.ask(dists)
        opt_params, cell_params = {}, {}
        for a in dists:
            opt_params[a], cell_params[a] = _decode(a, ot.params[a], dists, decode)
        d = json.loads(json.dumps(ctx["base"]))
        for a, v in cell_params.items():
            _set(d, a, v)
        trial = {
            "number": len(told) + len(trials),
            "round": r,
            "params": cell_params,
            "labels": {a: format_value(v) for a, v in cell_params.items()},
            "optuna_params": opt_params,
            "state": "proposed",
            "reason": None,
            "cell": None,
            "split": None,
            "config": d,
        }
        try:
            cell, _ = resolve_cell(ctx["study"], d, splits=splits, data_fp=ctx["data_fp"], amp=ctx["amp"])
            check_cells({cell.id: cell}, {cell.id: ctx["study"]}, image_size=size)  # depth vs size too
            trial.update(cell=cell.id, split=cell.split)
        except ConfigError as exc:
            trial.update(state="invalid", reason=str(exc))
        trials.append(trial)
    return {"study": ctx["study"], "round": r, "seed": seed, "sampler": ctx["sampler"], "trials": trials}


# ----------------------------------------------------------------------------------------------- files
def read_rounds(paths: Sequence[str | Path]) -> list[dict]:
    return sorted((json.loads(Path(p).read_text()) for p in paths), key=lambda x: x["round"])


def read_metrics(
    rounds: Sequence[Mapping], cells_dir: Path, decision_paths: Sequence[str | Path] = ()
) -> dict[str, dict]:
    """Cell → its metrics.json, or, for a trial its round's pruner stopped (``decision_paths``: the rounds'
    `segsweep.plan.pruning` decision files), ``{status: pruned, epochs_run, pruned_value, reason}``."""
    out = {}
    decisions = [json.loads(Path(p).read_text()) for p in decision_paths]
    pruned = {
        c: {"status": "pruned", "epochs_run": p["epochs_run"], "pruned_value": p["value"], "reason": p["reason"]}
        for c, p in pruned_cells(decisions).items()
    }
    for rnd in rounds:
        for t in rnd["trials"]:
            if t["cell"] in pruned:
                out[t["cell"]] = pruned[t["cell"]]
                continue
            p = Path(cells_dir) / str(t["cell"]) / METRICS
            if t["cell"] and p.exists():
                out[t["cell"]] = json.loads(p.read_text())
    return out


def cell_times(trials: Sequence[Mapping], cells_dir: Path) -> dict[str, dict]:
    """Cell → ``{start, end}`` (naive local datetimes, as Optuna stamps its own trials) of the trials' cells that have run: end = when ``metrics.json``
    was written (else ``history.csv``: a pruned cell's last epoch), start = end − the training time the cell
    recorded (``wall_s``; else the sum of ``history.csv``'s ``epoch_s``). Only the journal uses them (a view,
    never a result), so the file times' non-determinism touches no output that anything is keyed on."""
    import csv
    from datetime import datetime, timedelta

    out = {}
    for t in trials:
        d = Path(cells_dir) / str(t.get("cell"))
        if not t.get("cell") or t["cell"] in out:
            continue
        metrics, history = d / METRICS, d / HISTORY
        if metrics.exists():
            end, seconds = metrics.stat().st_mtime, json.loads(metrics.read_text()).get("wall_s")
        elif history.exists():
            end, seconds = history.stat().st_mtime, None
        else:
            continue
        if not isinstance(seconds, (int, float)) and history.exists():
            with history.open(newline="") as fh:
                seconds = sum(float(r.get("epoch_s") or 0) for r in csv.DictReader(fh))
        end_dt = datetime.fromtimestamp(end)
        out[t["cell"]] = {"start": end_dt - timedelta(seconds=float(seconds or 0)), "end": end_dt}
    return out


_ROUND_CELLS: dict[tuple[str, int, int], tuple[int, dict[str, Cell]]] = {}


def _round_cells(path: Path) -> tuple[int, dict[str, Cell]]:
    """(round number, cells of its valid trials) of one round file, parsed once per file version: the train
    rule asks for every cell it does not know from the plan, so a Snakemake call may ask thousands of times."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _ROUND_CELLS:
        rnd = json.loads(path.read_text())
        cells: dict[str, Cell] = {}
        for t in rnd["trials"]:
            if t["state"] != "invalid" and t["cell"]:
                cells.setdefault(t["cell"], Cell(t["cell"], CellParams.from_config(t["config"]), t["split"]))
        _ROUND_CELLS[key] = (rnd["round"], cells)
    return _ROUND_CELLS[key]


def trial_cells(paths: Sequence[str | Path]) -> dict[str, Cell]:
    """The cells of the valid trials recorded in round files (the train rule's fallback for trial cells)."""
    out: dict[str, Cell] = {}
    for _, cells in sorted((_round_cells(Path(p)) for p in paths if Path(p).exists()), key=lambda rc: rc[0]):
        for cid, cell in cells.items():
            out.setdefault(cid, cell)
    return out


def write_journal(
    path: Path,
    ctx: Mapping,
    told: Sequence[Mapping],
    times: Mapping[str, Mapping] | None = None,
    running: Sequence[Mapping] = (),
) -> None:
    """An Optuna journal holding ``told`` (rewritten whole, then moved into place: never half a file), for
    ``optuna-dashboard``: each trial with its cell's real start and end (``times``, `cell_times`), a failed
    one's reason, the objective named after the table value (``set_metric_names``), and ``running``: the
    trials of the round just proposed, RUNNING from now until the next round rewrites the journal."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists, _ = distributions(ctx)
    times = times or {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    storage = JournalStorage(JournalFileBackend(str(tmp)))
    study = optuna.create_study(storage=storage, study_name=ctx["study"], direction=ctx["direction"])
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2, unchanged since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([ctx["value"]])
    for t in told:
        study.add_trial(_frozen(t, t["optuna_state"], t["value"], dists, times.get(t.get("cell"))))
    for t in running:
        if t["state"] == "invalid":
            study.add_trial(_frozen({**t, "status": "invalid"}, "FAIL", None, dists))
        else:
            study.add_trial(_frozen(t, "RUNNING", None, dists))
    del study, storage
    os.replace(tmp, path)
    Path(f"{tmp}.lock").unlink(missing_ok=True)


def run_round(
    ctx: Mapping,
    r: int,
    count: int,
    prior_paths: Sequence[str | Path],
    cells_dir: Path,
    out: Path,
    decision_paths: Sequence[str | Path] = (),
) -> dict:
    """The round rule's job: propose round ``r`` into ``out`` (and refresh the journal beside it).
    ``decision_paths``: the earlier rounds' pruning decisions (a study with ``pruner``)."""
    prior = read_rounds(prior_paths)
    metrics = read_metrics(prior, cells_dir, decision_paths)
    rnd = propose_round(ctx, r, count, prior, metrics)
    trials = [t for p in prior for t in p["trials"]]
    told = told_trials(ctx, prior, metrics)
    write_journal(Path(out).parent / "journal.log", ctx, told, cell_times(trials, cells_dir), rnd["trials"])
    write_json(Path(out), rnd)
    return rnd


def trial_study(study: Study, trials: Sequence[Mapping]) -> Study:
    """``study`` with one row per valid trial (axes ``trial`` + the searched parameters)."""
    rows, labels = [], []
    for t in trials:
        if t["state"] == "invalid":
            continue
        lab = (("trial", str(t["number"])), *((a, t["labels"][a]) for a in study.axes if a != "trial"))
        rows.append(StudyCell(t["cell"], lab, 0, None))
        labels.append(str(t["number"]))
    values = dict(study.axis_values)
    values["trial"] = tuple(labels)
    table = TableLayout(("trial",), (), study.table.value, study.table.higher_is_better)
    return replace(study, table=table, cells=tuple(rows), axis_values=values)


def finish_study(
    ctx: Mapping,
    study: Study,
    round_paths: Sequence[str | Path],
    cells_dir: Path,
    out_dir: Path,
    decision_paths: Sequence[str | Path] = (),
) -> list[dict]:
    """After the last round: ``trials.json``, ``study.json`` and the full ``journal.log`` in ``out_dir``."""
    rounds = read_rounds(round_paths)
    told = told_trials(ctx, rounds, read_metrics(rounds, cells_dir, decision_paths))
    from optuna.distributions import distribution_to_json

    keys = ("number", "round", "params", "labels", "optuna_params", "state", "reason", "cell", "value", "status")
    trials = [{k: t[k] for k in keys} for t in told]
    write_journal(Path(out_dir) / "journal.log", ctx, told, cell_times(told, cells_dir))
    dists, _ = distributions(ctx)
    write_json(
        Path(out_dir) / "trials.json",
        {
            "study": ctx["study"],
            "direction": ctx["direction"],
            "value": ctx["value"],
            "distributions": {a: json.loads(distribution_to_json(d)) for a, d in dists.items()},
            "trials": trials,
        },
    )
    write_json(Path(out_dir) / "study.json", study_to_dict(trial_study(study, told)))
    return trials


def decide_round_stage(
    pruner_d: Mapping, study_d: Mapping, round_path: Path, k: int, prior: Sequence[str | Path], out: Path
) -> dict:
    """A pruned optuna study: decision ``k`` of one round's successive-halving bracket over its trials."""
    from segsweep.plan.pruning import decide_stage

    rnd = json.loads(Path(round_path).read_text())
    return decide_stage(pruner_d, trial_study(study_from_dict(study_d), rnd["trials"]), k, prior, out)


class TrialCells(dict):
    """The plan's cells, falling back to the trial cells recorded in round files (``round_files()`` lists
    them): what the train rule reads as ``CELLS[wc.cell]`` for a cell proposed by a round."""

    def __init__(self, cells: Mapping[str, Cell], round_files):
        super().__init__(cells)
        self._round_files = round_files

    def __missing__(self, key: str) -> Cell:
        for cid, cell in trial_cells(self._round_files()).items():
            if not dict.__contains__(self, cid):
                dict.__setitem__(self, cid, cell)
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        raise KeyError(key)
