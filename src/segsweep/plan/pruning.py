"""Pruners: stop bad configurations early, in rounds that Snakemake runs as a checkpoint.

A pruned study runs in *stages*. Stage 0 asks every configuration (the study's cells grouped by their axis
labels, repeats together) for its stage-0 results; after stage k a decision job (checkpoint ``prune_stage``,
rules/prune.smk) ranks the configurations still alive on what they have run so far and writes which go on to
stage k+1. What a stage asks for is a pruner's business:

* ``asha`` — successive halving over epochs (Jamieson & Talwalkar 2016; Li et al., "A System for Massively
  Parallel Hyperparameter Tuning", MLSys 2020). ``rungs: [3, 10, 30]``, ``eta: 3``: every cell trains to
  epoch 3 (``results/cells/<id>/rungs/3.json``), the best ⌊n/η⌋ configurations (at least 1) continue **from
  their checkpoint** to epoch 10, and so on; the last rung is the cells' ``epochs``, i.e. the ordinary train
  job. Promotions wait for the whole rung (the synchronous variant of ASHA): the same config and seeds give
  the same promotions, whatever finished first. Ranked on the validation monitor (``best_val_dice`` so far:
  mean per-image Dice on the network grid, the early-stopping metric); a diverged or failed cell never
  continues. Schedules see ``epochs`` (the full budget) as their horizon, and a cell's id does not depend on
  the rung it reaches, so a promoted cell's numbers equal an uninterrupted run's.
* ``folds`` — fold pruning for ``cv: true`` studies: stage f trains fold f. After each fold a configuration is
  dropped when its mean table value over its completed folds is worse than ``threshold``, or when a one-sided
  Wilcoxon signed-rank test over the folds it shares with the best configuration says it is worse with
  p < ``wilcoxon_p`` (the rule of Optuna's ``WilcoxonPruner``, with folds as its instances; scipy's exact
  test). Both wait for ``min_folds`` completed folds.

An optuna study takes ``asha`` only: each round is one bracket over its trials (`segsweep.plan.optuna_rounds`,
``decide_round_stage``), and a trial stopped at a rung is told to Optuna as PRUNED with its rung value.

A pruner is one class implementing `segsweep.plan.pruner.Pruner`, registered in ``PRUNERS`` (the study's
``pruner.name``); its keyword-only constructor arguments are its settings (schema: ``studies.<s>.pruner``).
Planning asks the interface only: ``from_study`` builds and checks it, its ``adaptive`` / ``cv`` attributes
say which studies it can prune, ``state`` / ``from_state`` carry it to the decision jobs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segsweep.errors import ConfigError
from segsweep.io import write_json
from segsweep.paths import cell_file, rung_path
from segsweep.plan.cells import study_base
from segsweep.plan.config import scale_preset
from segsweep.plan.pruner import Budget, Pruner, StudyFacts, check_round_trip
from segsweep.registry import Registry
from segsweep.study import Study, StudyCell, config_label

PRUNERS: Registry[type[Pruner]] = Registry("pruner", "pruner.name")


def configurations(study: Study) -> dict[str, list[StudyCell]]:
    """Configuration name → its cells (repeats, folds), in the study's order."""
    out: dict[str, list[StudyCell]] = {}
    for sc in study.cells:
        out.setdefault(config_label(sc.labels), []).append(sc)
    return out


def _read(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def rung_monitor(cells: Sequence[StudyCell], epoch: int) -> float | None:
    """A configuration's mean validation monitor (``best_val_dice`` so far) over its cells at rung ``epoch``;
    None unless every cell reached the rung ``ok`` or ``early_stop`` (a diverged or failed cell never goes on)."""
    recs = [_read(rung_path(c.cell_id, epoch)) or {} for c in cells]
    vals = [r.get("best_val_dice") for r in recs]
    if not all(r.get("status") in ("ok", "early_stop") for r in recs) or any(v is None for v in vals):
        return None
    return sum(vals) / len(vals)


# --------------------------------------------------------------------------------------------- asha
@PRUNERS.register("asha")
@dataclass(frozen=True)
class Asha(Pruner):
    """Successive halving over epoch rungs (module docstring)."""

    adaptive = True  # one bracket per round of an adaptive study's trials

    rungs: tuple[int, ...]
    eta: float = 3

    def __init__(self, *, rungs: Sequence[int] = (3, 10, 30), eta: float = 3):
        object.__setattr__(self, "rungs", tuple(int(r) for r in rungs))
        object.__setattr__(self, "eta", float(eta))

    @property
    def n_stages(self) -> int:
        return len(self.rungs)

    def stage_files(self, k: int, cells: Sequence[StudyCell]) -> list[str]:
        if k == self.n_stages - 1:
            return [cell_file(c.cell_id) for c in cells]
        return [rung_path(c.cell_id, self.rungs[k]) for c in cells]

    def budget(self, k: int) -> Budget:
        return Budget("epoch", self.rungs[k])

    def cell_rungs(self) -> tuple[int, ...]:
        """The epochs a cell stops at before its final train job."""
        return self.rungs[:-1]

    def decide(self, study: Study, k: int, alive: Mapping[str, Sequence[StudyCell]]) -> dict:
        epoch = self.rungs[k]
        scored = []
        for i, (name, cells) in enumerate(alive.items()):
            recs = [_read(rung_path(c.cell_id, epoch)) or {} for c in cells]
            score = rung_monitor(cells, epoch)
            reached = max((int(r.get("epochs_run") or 0) for r in recs), default=0)
            scored.append((name, score, i, reached, [r.get("status") for r in recs]))
        n_keep = max(1, math.floor(len(alive) / self.eta))
        ranked = sorted(scored, key=lambda t: (t[1] is None, -(t[1] or 0.0), t[2]))
        keep = [t[0] for t in ranked[:n_keep] if t[1] is not None]
        pruned = []
        for name, score, _, reached, statuses in ranked:
            if name in keep:
                continue
            if score is None:
                why = f"stopped at rung {k + 1} ({', '.join(sorted({str(s) for s in statuses}))}): not promoted"
            else:
                why = (
                    f"pruned at epoch {epoch} (rung {k + 1} of {self.n_stages}: validation monitor {score:.3f} "
                    f"not in the top {n_keep} of {len(alive)})"
                )
            pruned.append(
                {
                    "config": name,
                    "cells": [c.cell_id for c in alive[name]],
                    "epochs_run": reached,
                    "value": score,
                    "value_key": "best_val_dice",
                    "reason": why,
                }
            )
        return {
            "scores": {name: score for name, score, *_ in scored},
            "keep": keep,
            "pruned": pruned,
            "rule": f"top ⌊n/η⌋ = {n_keep} of {len(alive)} by best_val_dice at epoch {epoch} (η = {self.eta:g})",
        }

    @classmethod
    def from_study(cls, settings: Mapping, facts: StudyFacts) -> Asha:
        if facts.study.adaptive and "epochs" in facts.spec["axes"]:
            raise ConfigError(
                f"config key 'studies.{facts.name}.axes.epochs': the pruner's rungs set the epochs of an asha study"
            )
        return super().from_study(settings, facts).check(facts.name, set(facts.epochs), facts.cfg)

    def check(self, study: str, epochs: set[int], cfg: Mapping) -> Asha:
        """Validate against the ``epochs`` of the study's cells; at a scale preset that shortens training, the
        rungs are scaled to them (rung × epochs / last rung, rounded, at least 1, duplicates dropped)."""
        key = f"studies.{study}.pruner.rungs"
        if not self.rungs or any(r < 1 for r in self.rungs) or list(self.rungs) != sorted(set(self.rungs)):
            raise ConfigError(f"config key '{key}': strictly increasing positive epochs, got {list(self.rungs)}")
        if self.eta <= 1:
            raise ConfigError(f"config key 'studies.{study}.pruner.eta': must be > 1, got {self.eta:g}")
        if len(epochs) != 1:
            raise ConfigError(
                f"config key '{key}': the study's cells must share one epochs value, got {sorted(epochs)}"
            )
        (e,) = epochs
        if e == self.rungs[-1]:
            return self
        if cfg.get("scale", "full") == "full":
            raise ConfigError(
                f"config key '{key}': the last rung ({self.rungs[-1]}) must equal the cells' epochs ({e})"
            )
        scaled = sorted({max(1, min(e, round(r * e / self.rungs[-1]))) for r in self.rungs} | {e})
        return Asha(rungs=scaled, eta=self.eta)


# -------------------------------------------------------------------------------------------- folds
@PRUNERS.register("folds")
@dataclass(frozen=True)
class FoldPruner(Pruner):
    """Skip a configuration's remaining folds once its completed ones are bad (module docstring)."""

    cv = True

    threshold: float | None
    wilcoxon_p: float | None
    min_folds: int
    n_folds: int
    value: str
    higher_is_better: bool

    def __init__(
        self,
        *,
        threshold: float | None = None,
        wilcoxon_p: float | None = 0.1,
        min_folds: int = 2,
        n_folds: int = 0,
        value: str = "val_dice_patient",
        higher_is_better: bool = True,
    ):
        object.__setattr__(self, "threshold", None if threshold is None else float(threshold))
        object.__setattr__(self, "wilcoxon_p", None if wilcoxon_p is None else float(wilcoxon_p))
        object.__setattr__(self, "min_folds", int(min_folds))
        object.__setattr__(self, "n_folds", int(n_folds))
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "higher_is_better", bool(higher_is_better))

    @property
    def n_stages(self) -> int:
        return self.n_folds

    def stage_files(self, k: int, cells: Sequence[StudyCell]) -> list[str]:
        return [cell_file(c.cell_id) for c in cells if c.fold == k]

    def budget(self, k: int) -> Budget:
        return Budget("fold", k + 1, self.n_folds)

    def _values(self, cells: Sequence[StudyCell], upto: int) -> dict[int, float | None]:
        """fold → mean table value over the configuration's cells of that fold (None: a run without one)."""
        out: dict[int, float | None] = {}
        for f in range(upto + 1):
            vals = []
            for c in cells:
                if c.fold != f:
                    continue
                m = _read(cell_file(c.cell_id)) or {}
                v = m.get(self.value) if m.get("status") == "ok" else None
                vals.append(None if v is None or not math.isfinite(v) else float(v))
            out[f] = None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)
        return out

    def decide(self, study: Study, k: int, alive: Mapping[str, Sequence[StudyCell]]) -> dict:
        sign = 1.0 if self.higher_is_better else -1.0
        values = {name: self._values(cells, k) for name, cells in alive.items()}
        means = {
            n: (sum(v.values()) / len(v) if all(x is not None for x in v.values()) else None) for n, v in values.items()
        }
        best = max((n for n in means if means[n] is not None), key=lambda n: sign * means[n], default=None)
        pruned, keep = [], []
        done = k + 1
        for name, cells in alive.items():
            why, p = None, None
            if means[name] is None:
                why = f"a fold up to fold {done} has no {self.value} (not ok)"
            elif done >= self.min_folds:
                if self.threshold is not None and sign * means[name] < sign * self.threshold:
                    cmp = "<" if self.higher_is_better else ">"
                    why = f"mean {self.value} {means[name]:.3f} over {done} folds {cmp} threshold {self.threshold:g}"
                elif self.wilcoxon_p is not None and best is not None and name != best:
                    p = wilcoxon_worse(
                        [values[name][f] for f in range(done)], [values[best][f] for f in range(done)], sign
                    )
                    if p is not None and p < self.wilcoxon_p:
                        why = f"worse than '{best}' over {done} folds (one-sided Wilcoxon p = {p:.3g} < {self.wilcoxon_p:g})"
            if why is None:
                keep.append(name)
                continue
            pruned.append(
                {
                    "config": name,
                    "cells": [c.cell_id for c in cells if c.fold is not None and c.fold > k],
                    "epochs_run": 0,
                    "value": means[name],
                    "value_key": self.value,
                    "p": p,
                    "reason": f"folds {done + 1}–{self.n_folds} skipped: {why}",
                }
            )
        return {"scores": means, "keep": keep, "pruned": pruned, "best": best, "rule": self.rule_text()}

    def rule_text(self) -> str:
        parts = []
        if self.threshold is not None:
            parts.append(f"mean {self.value} worse than {self.threshold:g}")
        if self.wilcoxon_p is not None:
            parts.append(f"one-sided Wilcoxon p < {self.wilcoxon_p:g} against the best configuration")
        return f"after ≥ {self.min_folds} folds: " + (" or ".join(parts) or "never")

    @classmethod
    def from_study(cls, settings: Mapping, facts: StudyFacts) -> FoldPruner:
        """``n_folds``, ``value`` and ``higher_is_better`` come from the study (its folds and its table)."""
        folds = sorted({c.fold for c in facts.study.cells if c.fold is not None})
        table = facts.study.table
        derived = {"n_folds": len(folds), "value": table.value, "higher_is_better": table.higher_is_better}
        return super().from_study({**settings, **derived}, facts).check(facts.name, set(facts.epochs), facts.cfg)

    def check(self, study: str, epochs: set[int], cfg: Mapping) -> FoldPruner:
        if not cfg["studies"][study].get("cv"):
            raise ConfigError(f"config key 'studies.{study}.pruner': pruner 'folds' needs cv: true")
        if self.min_folds < 1:
            raise ConfigError(f"config key 'studies.{study}.pruner.min_folds': at least 1, got {self.min_folds}")
        if self.wilcoxon_p is not None and not 0 < self.wilcoxon_p < 1:
            raise ConfigError(f"config key 'studies.{study}.pruner.wilcoxon_p': in (0, 1), got {self.wilcoxon_p}")
        return self


def wilcoxon_worse(values: Sequence[float], best: Sequence[float], sign: float = 1.0) -> float | None:
    """One-sided p of "``values`` are worse than ``best``" (paired by fold), Wilcoxon signed-rank test
    (Wilcoxon 1945), exact null distribution; None when every difference is 0 (no evidence either way).
    ``sign`` −1 when lower is better."""
    from scipy.stats import wilcoxon

    d = [sign * (a - b) for a, b in zip(values, best)]
    if not any(d):
        return None
    return float(wilcoxon(d, alternative="less", zero_method="wilcox", method="exact").pvalue)


# ------------------------------------------------------------------------------------------ planning
def study_pruners(cfg: Mapping, studies: Mapping[str, Study], cells: Mapping[str, Any]) -> dict[str, Pruner]:
    """Study name → its pruner (checked against its cells), for the studies that have ``pruner``. Asks the
    `Pruner` interface only; a pruner whose state does not round-trip stops planning, naming it."""
    out = {}
    for name, spec in cfg["studies"].items():
        p = spec.get("pruner")
        if not p:
            continue
        pname = p.get("name")
        cls = PRUNERS.entry(pname, key=f"studies.{name}.pruner.name").obj
        study = studies[name]
        for trait, applies in (("adaptive", study.adaptive), ("cv", bool(spec.get("cv")))):
            if applies and not getattr(cls, trait):
                able = " or ".join(f"'{e.name}'" for e in PRUNERS if getattr(e.obj, trait))
                what = f"mode '{study.mode}'" if trait == "adaptive" else "a cv study"
                raise ConfigError(f"config key 'studies.{name}.pruner.name': {what} takes {able or 'no pruner'} only")
        if study.adaptive:  # its cells exist only once proposed: they share the study's base epochs
            epochs = frozenset({_adaptive_epochs(cfg, name)})
        else:
            epochs = frozenset(cells[c.cell_id].params.epochs for c in study.cells)
        settings = {k: v for k, v in p.items() if k != "name"}
        pruner = cls.from_study(settings, StudyFacts(name, study, spec, epochs, cfg))
        check_round_trip(pruner, pname, f"studies.{name}.pruner")
        out[name] = pruner
    return out


def _adaptive_epochs(cfg: Mapping, name: str) -> int:
    preset = scale_preset(cfg)
    base = study_base(cfg, name)
    return int((preset.get("cell") or {}).get("epochs", base["epochs"]))


def cell_rungs(pruners: Mapping[str, Any], studies: Mapping[str, Study]) -> dict[str, tuple[int, ...]]:
    """Cell id → the epochs it stops at before its train job (union over the studies that hold it)."""
    out: dict[str, set[int]] = {}
    for name, pruner in pruners.items():
        for sc in studies[name].cells:
            out.setdefault(sc.cell_id, set()).update(pruner.cell_rungs())
    return {c: tuple(sorted(r)) for c, r in out.items() if r}


def pruner_dict(pruner: Pruner) -> dict:
    """JSON form (the decision rule's params): its registered name and its ``state()``."""
    return {"name": next(e.name for e in PRUNERS if e.obj is type(pruner)), **pruner.state()}


def pruner_from_dict(d: Mapping) -> Pruner:
    return PRUNERS[d["name"]].from_state({k: v for k, v in d.items() if k != "name"})


# ------------------------------------------------------------------------------------------ stages
def alive_at(study: Study, decisions: Sequence[Mapping]) -> dict[str, list[StudyCell]]:
    """The configurations still running after the given decisions (stage 0: all)."""
    confs = configurations(study)
    keep = set(confs)
    for d in decisions:
        keep &= set(d["keep"])
    return {n: cs for n, cs in confs.items() if n in keep}


def read_decisions(paths: Sequence[str | Path]) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


def stage_inputs(pruner: Any, study: Study, k: int, decision_paths: Sequence[str | Path]) -> list[str]:
    """What decision k reads: the results of stages 0..k of the configurations alive at each stage."""
    decisions = read_decisions(decision_paths)
    files: set[str] = set()
    for j in range(k + 1):
        alive = alive_at(study, decisions[:j])
        files.update(f for cells in alive.values() for f in pruner.stage_files(j, cells))
    return sorted(files)


def decide_stage(pruner_d: Mapping, study: Study, k: int, prior: Sequence[str | Path], out: Path) -> dict:
    """Write stage k's decision (``results/studies/<s>/prune/stage<k>.json``) from the stage-k results."""
    pruner = pruner_from_dict(pruner_d)
    alive = alive_at(study, read_decisions(prior))
    decision = {"study": study.name, "pruner": pruner_d, "stage": k, "budget": pruner.budget(k).to_dict()}
    decision.update(pruner.decide(study, k, alive))
    decision["alive"] = list(alive)
    write_json(Path(out), decision)
    return decision


def study_files(pruner: Any, study: Study, decision_paths: Sequence[str | Path]) -> list[str]:
    """Everything the study's aggregation reads: each stage's results of the configurations alive then."""
    return stage_inputs(pruner, study, pruner.n_stages - 1, decision_paths)
