"""Plan-time rules of the model axis, pretrained weights and ``init_from`` (called by `segsweep.plan.cells`).

* **Keys a backbone does not read.** ``depth`` and ``base_width`` shape the plain U-Net only. A study that
  *sets* one of them (in its ``base`` or as an axis) to a value other than the schema's default for a cell
  whose ``model`` is a backbone is rejected, naming the study and the key. "Set" is decided by where the key
  is written, not by the value a cell ends up with: the config's ``train`` section and a ``scales`` preset
  (e.g. smoke's ``depth: 2``) apply to every study and are normalised away for backbones
  (`CellParams.from_config` stores 0), so they neither fail nor split cells.
* **``init_from: {study: X}``.** X's validation-selected cell depends on X's results, so it cannot be known
  when the DAG is built. The plan resolves the reference to what decides the choice: X's cell ids (sorted), its
  table value and direction. These are the identity of the fine-tuning cells (X's name is only where the
  job reads X's table, and is not hashed): adding a cell to X, or changing its table value, gives them new ids.
  The train rule makes the fine-tuning cells wait for X's ``table.json`` (rules/train.smk), and the job
  picks the cell there (`segsweep.training.finetune.selected_cell`). So X is expanded first: studies are
  planned in dependency order (config order otherwise); a cycle or an unknown study is a ConfigError.
* **``init_from: {cell: <id>}``** must name a cell of this plan (it is built by the same workflow); the
  train rule waits for its metrics.json.
* In both cases the source must have the fine-tuned cell's architecture (parameter names and shapes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from segsweep.errors import ConfigError
from segsweep.study import Study
from segsweep.training.params import CellParams
from segsweep.training.pretrained import BACKBONES

UNET_ONLY = ("depth", "base_width")


class Cell(Protocol):
    params: CellParams


def check_backbone_keys(study: str, base: Mapping, point: Mapping, cell: Mapping, defaults: Mapping) -> None:
    """ConfigError when the study's ``base`` or axis point sets a U-Net-only key for a backbone (module doc)."""
    model = cell.get("model", "unet")
    if model not in BACKBONES:
        return
    for key in UNET_ONLY:
        if (key in base or key in point) and cell.get(key) != defaults.get(key):
            raise ConfigError(
                f"study '{study}': config key '{key}': model '{model}' has a fixed ResNet encoder; '{key}' "
                f"applies to model unet only (remove it from this study, or vary it in a unet study)"
            )


def _refs(value: Any) -> list[str]:
    """Studies named by ``init_from`` values (a single value or an axis list)."""
    vals = value if isinstance(value, list) else [value]
    return [v["study"] for v in vals if isinstance(v, Mapping) and v.get("study") is not None]


def study_dependencies(cfg: Mapping) -> dict[str, set[str]]:
    """Study → the studies its cells initialise from (``init_from: {study: X}`` in train, base or an axis)."""
    deps: dict[str, set[str]] = {}
    for name, spec in cfg["studies"].items():
        refs = _refs(cfg["train"].get("init_from"))
        refs += _refs((spec.get("base") or {}).get("init_from"))
        refs += _refs((spec.get("axes") or {}).get("init_from"))
        unknown = sorted(set(refs) - set(cfg["studies"]))
        if unknown:
            raise ConfigError(
                f"study '{name}': config key 'init_from': study '{unknown[0]}' is not in this run "
                f"(declared and selected: {', '.join(cfg['studies'])}; add it to `select`)"
            )
        deps[name] = set(refs)
    return deps


def planning_order(cfg: Mapping) -> list[str]:
    """Study names, each after the studies it initialises from; config order otherwise (stable)."""
    deps = study_dependencies(cfg)
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " → ".join([*path[path.index(name) :], name])
            raise ConfigError(f"config key 'init_from': studies initialise from each other in a cycle ({cycle})")
        state[name] = 1
        for dep in [s for s in cfg["studies"] if s in deps[name]]:
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in cfg["studies"]:
        visit(name, [])
    return order


def resolve_init_from(study: str, cell: dict, studies: Mapping[str, Study]) -> None:
    """Replace ``init_from: {study: X}`` in a cell dict by X's content (module doc); X is already planned."""
    ref = cell.get("init_from")
    if not isinstance(ref, Mapping) or ref.get("study") is None or "cells" in ref:
        return
    src = studies.get(ref["study"])
    if src is None:  # planning_order puts X first; only a self-reference lands here
        raise ConfigError(f"study '{study}': config key 'init_from': a study cannot initialise from itself")
    cell["init_from"] = {
        "study": src.name,
        "cells": sorted(set(src.cell_ids)),
        "value": src.table.value,
        "higher_is_better": src.table.higher_is_better,
    }


def source_cells(params: CellParams) -> list[str]:
    """The cells whose weights a cell may start from: its ``init_from`` cell, or every cell of the study."""
    ref = params.init_from
    if ref is None:
        return []
    return [ref.cell] if ref.cell is not None else list(ref.cells)


def check_sources(
    cells: Mapping[str, Cell], where: Mapping[str, str], architecture: Callable[[CellParams], Mapping]
) -> None:
    """Each ``init_from`` source is a cell of the plan with the same architecture: ``architecture(params)``
    gives what decides the parameter names and shapes (`segsweep.training.model.ModelSpec.architecture`)."""

    for cid, cell in cells.items():
        for src in source_cells(cell.params):
            study = where.get(cid, "?")
            if src not in cells:
                raise ConfigError(
                    f"study '{study}': config key 'init_from': cell '{src}' is not a cell of this run "
                    "(cell ids are listed in results/studies/*/cells.csv; its study must be in this config)"
                )
            if src == cid:
                raise ConfigError(f"study '{study}': config key 'init_from': cell '{src}' cannot start from itself")
            a, b = dict(architecture(cells[src].params)), dict(architecture(cell.params))
            if a != b:
                diff = [k for k in a if k not in b or a[k] != b[k]] or sorted(set(b) - set(a))
                raise ConfigError(
                    f"study '{study}': config key 'init_from': cell '{src}' has another architecture "
                    f"({cells[src].params.model} vs {cell.params.model}; first difference: {diff[0]})"
                )
