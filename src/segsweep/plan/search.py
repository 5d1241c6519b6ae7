"""Search modes: how a study's ``axes`` become a list of points (``{axis: value}`` dicts) at plan time.

A mode is one function registered in ``SEARCH_MODES`` (the study's ``mode`` key) with the signature
``mode(study, spec, base, limit) -> (points, order)``: ``study`` names the study in error messages, ``spec`` is
its config mapping, ``base`` its fully merged base cell (for modes that vary around it), ``limit`` the
``scale`` preset's ``axes_limit`` (values per axis, or None); ``order`` is the declared value order per axis
(tables and figures use it). Every value must pass ``check_axis_values`` so a bad value names its key.

A mode declares what it is at registration, and everything after planning asks these (``Study.adaptive``,
``Study.ordered``), never its name:

* ``adaptive=True``: its points are proposed in rounds from earlier results (it returns no points at plan
  time; rules/adaptive.smk runs the rounds, `segsweep.plan.optuna_rounds`); default False (static).
* ``ordered=False``: its order is a sampling order, so tables and figures sort the values instead; default
  True (the declared order is the reading order).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import numpy as np

from segsweep.errors import ConfigError
from segsweep.io import digest
from segsweep.plan.config import schema
from segsweep.registry import Registry

Points = tuple[list[dict], dict[str, list]]
SEARCH_MODES: Registry[Callable[[str, Mapping, dict, int | None], Points]] = Registry("search mode", "mode")


@dataclass(frozen=True)
class ModeTraits:
    """What a search mode declares (module docstring)."""

    adaptive: bool = False
    ordered: bool = True


def mode_traits(name: str, key: str = "mode") -> ModeTraits:
    """The traits a registered mode declares (ConfigError naming ``key`` for an unknown mode)."""
    return ModeTraits(**SEARCH_MODES.entry(name, key=key).meta)


def check_axis_values(study: str, axis: str, values: list) -> None:
    """Validate each value of an axis once against the schema of its key (names the key on error)."""
    keys = schema()["definitions"]["cell"]["properties"]
    head = axis.split(".", 1)[0]
    if head not in keys:
        raise ConfigError(
            f"config key 'studies.{study}.axes.{axis}': unknown hyperparameter '{head}' "
            f"(known: {', '.join(sorted(keys))})"
        )
    if "." in axis:
        return  # nested values are checked when the cell resolves
    validator = jsonschema.Draft202012Validator({**keys[head], "definitions": schema()["definitions"]})
    for v in values:
        labelled = isinstance(v, Mapping) and head not in ("loss", "schedule")
        probe = {k: x for k, x in v.items() if k != "label"} if labelled else v
        err = jsonschema.exceptions.best_match(validator.iter_errors(probe))
        if err is not None:
            raise ConfigError(f"config key 'studies.{study}.axes.{axis}': value {v!r}: {err.message}")


def _listed_axes(study: str, spec: Mapping, limit: int | None) -> dict[str, list]:
    """The axes of a list-valued mode, each checked and cut to ``limit`` evenly spaced values."""
    axes = {}
    for a, vals in spec["axes"].items():
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"config key 'studies.{study}.axes.{a}': expected a non-empty list of values")
        check_axis_values(study, a, vals)
        axes[a] = _subsample(vals, limit)
    return axes


def _subsample(values: list, limit: int | None) -> list:
    if not limit or len(values) <= limit:
        return values
    idx = sorted({round(i * (len(values) - 1) / (limit - 1)) for i in range(limit)}) if limit > 1 else [0]
    return [values[i] for i in idx]


@SEARCH_MODES.register("grid")
def grid(study: str, spec: Mapping, base: dict, limit: int | None) -> Points:
    """Every combination of the axis values (itertools.product, in declared order)."""
    axes = _listed_axes(study, spec, limit)
    pts = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    return pts, axes


@SEARCH_MODES.register("oneway")
def oneway(study: str, spec: Mapping, base: dict, limit: int | None) -> Points:
    """One factor at a time: the base point, then each axis varied alone around it (duplicates dropped)."""
    axes = _listed_axes(study, spec, limit)

    def base_value(a):
        cur: Any = base
        for part in a.split("."):
            cur = cur.get(part) if isinstance(cur, Mapping) else None
        return cur

    anchor = {a: base_value(a) for a in axes}
    pts, seen = [], set()
    for a, vals in axes.items():
        for v in vals:
            p = {**anchor, a: v}
            key = digest(p)
            if key not in seen:
                seen.add(key)
                pts.append(p)
    for a in axes:
        if anchor[a] not in axes[a]:
            axes[a] = [anchor[a], *axes[a]]
    return pts, axes


def _sample(study: str, axis: str, dist: Any, rng: np.random.Generator) -> Any:
    if isinstance(dist, list):
        return dist[int(rng.integers(len(dist)))]
    if isinstance(dist, Mapping) and len(dist) == 1:
        ((kind, arg),) = dist.items()
        if kind == "choice":
            return arg[int(rng.integers(len(arg)))]
        if kind in ("uniform", "loguniform") and isinstance(arg, list) and len(arg) == 2:
            lo, hi = float(arg[0]), float(arg[1])
            if kind == "uniform":
                return float(f"{rng.uniform(lo, hi):.4g}")
            if lo > 0 and hi > lo:
                return float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.3g}")
    raise ConfigError(
        f"config key 'studies.{study}.axes.{axis}': expected a list, {{choice: [...]}}, "
        f"{{uniform: [lo, hi]}} or {{loguniform: [lo, hi]}} with 0 < lo < hi, got {dist!r}"
    )


@SEARCH_MODES.register("random", ordered=False)
def random(study: str, spec: Mapping, base: dict, limit: int | None) -> Points:
    """``n`` distinct points drawn from the axes' distributions with ``numpy.random.default_rng(sample_seed)``."""
    if "n" not in spec:
        raise ConfigError(f"config key 'studies.{study}.n': required for mode 'random'")
    axes = dict(spec["axes"])
    rng = np.random.default_rng(spec.get("sample_seed", 0))
    pts, seen = [], set()
    for _ in range(spec["n"] * 20):  # bounded retries: duplicates are dropped
        p = {a: _sample(study, a, d, rng) for a, d in axes.items()}
        key = digest(p)
        if key not in seen:
            seen.add(key)
            pts.append(p)
        if len(pts) == spec["n"]:
            break
    for a in axes:
        check_axis_values(study, a, [p[a] for p in pts])
    order: dict[str, list] = {a: [] for a in axes}
    for p in pts:
        for a in axes:
            if p[a] not in order[a]:
                order[a].append(p[a])
    return pts, order


# Optuna's samplers a `mode: optuna` study may name (`sampler`): name → the class in optuna.samplers (imported
# only when a round proposes: planning stays free of Optuna). Each takes ``seed=``.
SAMPLERS: Registry[str] = Registry("sampler", "sampler")
for _name, _cls in (("tpe", "TPESampler"), ("gp", "GPSampler"), ("cmaes", "CmaEsSampler"), ("random", "RandomSampler")):
    SAMPLERS.register(_name)(_cls)


def optuna_space(study: str, spec: Mapping) -> dict[str, tuple[str, Any]]:
    """The search space of a ``mode: optuna`` study: axis → (kind, arg) with kind ∈ categorical (arg: the
    values), uniform / loguniform / int (arg: (lo, hi)). Values and bounds pass ``check_axis_values``."""
    out: dict[str, tuple[str, Any]] = {}
    for a, dist in spec["axes"].items():
        where = f"config key 'studies.{study}.axes.{a}'"
        if isinstance(dist, Mapping) and len(dist) == 1 and "choice" in dist:
            dist = dist["choice"]
        if isinstance(dist, list) and dist:
            check_axis_values(study, a, dist)
            out[a] = ("categorical", list(dist))
            continue
        if isinstance(dist, Mapping) and len(dist) == 1:
            ((kind, arg),) = dist.items()
            if kind in ("uniform", "loguniform", "int") and isinstance(arg, list) and len(arg) == 2:
                lo, hi = arg
                ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in arg) and lo < hi
                ok = ok and (kind != "loguniform" or lo > 0) and (kind != "int" or all(isinstance(x, int) for x in arg))
                if ok:
                    check_axis_values(study, a, [lo, hi])
                    out[a] = (kind, (lo, hi))
                    continue
        raise ConfigError(
            f"{where}: expected a list, {{choice: [...]}}, {{uniform: [lo, hi]}}, {{loguniform: [lo, hi]}} "
            f"(0 < lo) or {{int: [lo, hi]}} with lo < hi, got {dist!r}"
        )
    return out


@SEARCH_MODES.register("optuna", adaptive=True)
def optuna(study: str, spec: Mapping, base: dict, limit: int | None) -> Points:
    """No static points: trials are proposed in rounds by Optuna (``segsweep.plan.optuna_rounds``); the
    study's axes are ``trial`` + the searched parameters (one table row per trial)."""
    if "n_trials" not in spec:
        raise ConfigError(f"config key 'studies.{study}.n_trials': required for mode 'optuna'")
    if spec.get("repeats", 1) != 1 or spec.get("cv"):
        raise ConfigError(f"config key 'studies.{study}': mode 'optuna' takes no repeats or cv (one cell per trial)")
    if "trial" in spec["axes"]:
        raise ConfigError(f"config key 'studies.{study}.axes.trial': 'trial' is the trial number's axis")
    SAMPLERS.entry(spec.get("sampler", "tpe"), key=f"studies.{study}.sampler")  # unknown: named at plan time
    space = optuna_space(study, spec)
    order: dict[str, list] = {"trial": []}
    order.update({a: list(arg) if kind == "categorical" else [] for a, (kind, arg) in space.items()})
    return [], order
