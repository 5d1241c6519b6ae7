"""Studies → cells.

A study is base parameters + axes (a full grid, one-factor-at-a-time sweeps around the base, or a seeded
random sample) + repeats (training seeds) or cross-validation folds + a table layout. Expanding all studies
gives a static list of cells at DAG time. A cell's id is a short hash of its fully resolved parameters plus
the identity of its data and split, so a cell shared by two studies is trained once and a config change
touches only the cells whose parameters changed. Expansion is O(cells): axis values are validated once each,
not once per cell.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import jsonschema
import numpy as np

from segsweep.data.config import DataConfig, PreprocessConfig, SplitConfig
from segsweep.errors import ConfigError
from segsweep.io import digest
from segsweep.labels import format_value
from segsweep.plan.config import deep_merge, schema
from segsweep.plan.resources import ResourceConfig
from segsweep.study import Study, StudyCell, TableLayout
from segsweep.training.params import CellParams

@dataclass(frozen=True)
class Cell:
    id: str
    params: CellParams
    split: str  # name of the split file (without .json) under results/splits/

    @property
    def uses_cv(self) -> bool:
        return self.params.fold is not None


@dataclass(frozen=True)
class Plan:
    """Everything the Snakefile needs, built once per invocation."""

    data: DataConfig
    preprocess: PreprocessConfig
    splits: SplitConfig
    resources: ResourceConfig
    cells: dict[str, Cell]
    studies: dict[str, Study]
    split_specs: dict[str, dict]  # split name → {"seed", "val_fraction", "folds"}
    data_fp: str


# ------------------------------------------------------------------------------------- expansion
def _cell_keys() -> dict:
    return schema()["definitions"]["cell"]["properties"]


def _set(d: dict, axis: str, value: Any) -> None:
    """Set a cell key; dotted axes ('augment.flip', 'schedule.rate') set one nested key."""
    if "." in axis:
        head, tail = axis.split(".", 1)
        cur = d.get(head)
        if isinstance(cur, str):  # schedule given by name
            cur = {"name": cur}
        cur = dict(cur or {})
        cur[tail] = value
        d[head] = cur
    else:
        d[axis] = value


def _check_axis_values(study: str, axis: str, values: list) -> None:
    """Validate each value of an axis once against the schema of its key (names the key on error)."""
    keys = _cell_keys()
    head = axis.split(".", 1)[0]
    if head not in keys:
        raise ConfigError(
            f"config key 'studies.{study}.axes.{axis}': unknown hyperparameter '{head}' "
            f"(known: {', '.join(sorted(keys))})"
        )
    sub = keys[head]
    if "." in axis:
        return  # nested values are checked when the cell resolves
    validator = jsonschema.Draft202012Validator({**sub, "definitions": schema()["definitions"]})
    for v in values:
        probe = {k: x for k, x in v.items() if k != "label"} if isinstance(v, Mapping) and head != "loss" and head != "schedule" else v
        err = jsonschema.exceptions.best_match(validator.iter_errors(probe))
        if err is not None:
            raise ConfigError(f"config key 'studies.{study}.axes.{axis}': value {v!r}: {err.message}")


def _subsample(values: list, limit: int | None) -> list:
    if not limit or len(values) <= limit:
        return values
    idx = sorted({round(i * (len(values) - 1) / (limit - 1)) for i in range(limit)}) if limit > 1 else [0]
    return [values[i] for i in idx]


def _sample(study: str, axis: str, dist: Any, rng: np.random.Generator) -> Any:
    if isinstance(dist, list):
        return dist[int(rng.integers(len(dist)))]
    if isinstance(dist, Mapping) and len(dist) == 1:
        (kind, arg), = dist.items()
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


def _points(name: str, spec: Mapping, base: dict, limit: int | None) -> tuple[list[dict], dict[str, list]]:
    """Axis-value combinations as {axis: value} dicts, plus the declared value order per axis."""
    axes = dict(spec["axes"])
    mode = spec.get("mode", "grid")
    if mode == "random":
        if "n" not in spec:
            raise ConfigError(f"config key 'studies.{name}.n': required for mode 'random'")
        rng = np.random.default_rng(spec.get("sample_seed", 0))
        pts, seen = [], set()
        for _ in range(spec["n"] * 20):  # bounded retries: duplicates are dropped
            p = {a: _sample(name, a, d, rng) for a, d in axes.items()}
            key = digest(p)
            if key not in seen:
                seen.add(key)
                pts.append(p)
            if len(pts) == spec["n"]:
                break
        for a in axes:
            _check_axis_values(name, a, [p[a] for p in pts])
        order = {a: [] for a in axes}
        for p in pts:
            for a in axes:
                if p[a] not in order[a]:
                    order[a].append(p[a])
        return pts, order
    for a, vals in axes.items():
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"config key 'studies.{name}.axes.{a}': expected a non-empty list of values")
        _check_axis_values(name, a, vals)
    axes = {a: _subsample(v, limit) for a, v in axes.items()}
    if mode == "grid":
        pts = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    else:  # oneway: the base point, then each axis varied alone around it
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
    return pts, {a: list(v) for a, v in axes.items()}


def build_plan(cfg: Mapping) -> Plan:
    """Expand every study of a validated config (see config.prepare) into cells."""
    preset = cfg["scales"].get(cfg["scale"], {}) if cfg["scale"] != "full" else {}
    data = DataConfig.from_config(cfg)
    prep = PreprocessConfig.from_config(cfg, size_override=preset.get("size"))
    splits = SplitConfig.from_config(cfg)
    data_fp = data_fingerprint(data, prep)
    cells: dict[str, Cell] = {}
    studies: dict[str, Study] = {}
    split_specs: dict[str, dict] = {}
    by_params: dict[str, str] = {}  # params digest → cell id (memo: identical cells resolve once)

    for name, spec in cfg["studies"].items():
        base = deep_merge(cfg["train"], {"split_seed": splits.seed})
        base = deep_merge(base, spec.get("base") or {})
        pts, order = _points(name, spec, base, preset.get("axes_limit"))
        axes = tuple(spec["axes"])
        layout = TableLayout(
            rows=tuple(spec["table"]["rows"]),
            cols=tuple(spec["table"]["cols"]),
            value=spec["table"].get("value", "best_val_dice"),
            higher_is_better=spec["table"].get("higher_is_better", True),
        )
        for a in (*layout.rows, *layout.cols):
            if a not in axes:
                raise ConfigError(
                    f"config key 'studies.{name}.table': '{a}' is not an axis of this study (axes: {', '.join(axes)})"
                )
        repeats = spec.get("repeats", 1)
        if "repeats" in preset:
            repeats = min(repeats, preset["repeats"])
        folds: list[int | None] = [None]
        if spec.get("cv"):
            folds = list(range(min(splits.folds, preset.get("max_folds", splits.folds))))
        rows = []
        for p in pts:
            labels = tuple((a, format_value(p[a])) for a in axes)
            for r in range(repeats):
                for f in folds:
                    d = copy.deepcopy(base)
                    for a, v in p.items():
                        _set(d, a, v)
                    d["seed"] = int(d.get("seed", 0)) + r
                    d["fold"] = f
                    if preset.get("cell"):
                        d = deep_merge(d, preset["cell"])
                    key = digest(d, 24)
                    cid = by_params.get(key)
                    if cid is None:
                        try:
                            params = CellParams.from_config(d)
                        except ConfigError as exc:
                            raise ConfigError(f"study '{name}': {exc}") from None
                        except (KeyError, TypeError, ValueError) as exc:
                            raise ConfigError(f"config key 'studies.{name}': cannot resolve a cell ({exc!r})") from None
                        sname = f"seed{params.split_seed}" + (f"-cv{splits.folds}" if f is not None else "")
                        split_specs[sname] = {
                            "seed": params.split_seed,
                            "val_fraction": splits.val_fraction,
                            "folds": splits.folds if f is not None else None,
                        }
                        cid = digest(
                            {
                                "params": params.to_dict(),
                                "data": data_fp,
                                "split": split_fingerprint(splits, params.split_seed, f is not None),
                            }
                        )
                        by_params[key] = cid
                        cells.setdefault(cid, Cell(cid, params, sname))
                    rows.append(StudyCell(cid, labels, r, f))
        studies[name] = Study(
            name=name,
            title=spec.get("title", name),
            description=spec.get("description", ""),
            mode=spec.get("mode", "grid"),
            axes=axes,
            table=layout,
            cells=tuple(rows),
            axis_values={a: tuple(dict.fromkeys(format_value(v) for v in order[a])) for a in axes},
        )
    return Plan(data, prep, splits, ResourceConfig.from_config(cfg), cells, studies, split_specs, data_fp)


def data_fingerprint(data: DataConfig, prep: PreprocessConfig) -> str:
    return digest({"data": asdict(data), "preprocess": asdict(prep)})


def split_fingerprint(split: SplitConfig, split_seed: int, cv: bool) -> dict:
    fp = {"seed": split_seed, "val_fraction": split.val_fraction}
    if cv:
        fp["folds"] = split.folds
    return fp
