"""The typed hyperparameters of one training run (a cell): what training reads, and what a cell id hashes.

Values that do not change what a run computes are normalised away here (e.g. momentum for Adam), so they do
not split one cell into two.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from segsweep.errors import ConfigError
from segsweep.io import added_field, is_added, is_neutral
from segsweep.training.finetune_modes import FINETUNE_MODES
from segsweep.training.losses import LOSSES
from segsweep.training.optim import OPTIMIZERS
from segsweep.training.pretrained import BACKBONES, file_sha256
from segsweep.training.regularizers import REGULARIZERS
from segsweep.training.schedules import SCHEDULES

# The registries above hold every variant's name and defaults (its keyword-only arguments). Their modules
# import torch lazily (segsweep.lazy), so planning, which imports them from here, does not import torch.


@dataclass(frozen=True)
class LossTerm:
    name: str
    weight: float = 1.0
    params: tuple[tuple[str, float], ...] = ()

    def get(self, key: str) -> float:
        return dict(self.params)[key]

    def to_dict(self) -> dict:
        return {"name": self.name, "weight": self.weight, **dict(self.params)}


@dataclass(frozen=True)
class ScheduleParams:
    name: str = "none"
    params: tuple[tuple[str, float], ...] = ()

    def get(self, key: str) -> float:
        return dict(self.params)[key]

    def to_dict(self) -> dict:
        return {"name": self.name, **dict(self.params)}


@dataclass(frozen=True)
class AugmentParams:
    flip: bool = False
    rotate_deg: float = 0.0
    scale: float = 0.0
    intensity: float = 0.0

    @property
    def active(self) -> bool:
        return self.flip or self.rotate_deg > 0 or self.scale > 0 or self.intensity > 0


_TERM_RE = re.compile(r"^\s*(?:([0-9.eE+-]+)\s*\*\s*)?([a-z_]+)\s*$")


def parse_loss(value: Any, key: str = "loss") -> tuple[LossTerm, ...]:
    """A loss name, a sum string ("0.5*tversky + dice"), a list of term dicts, or {label, terms}."""
    if isinstance(value, Mapping):
        value = value["terms"]
    if isinstance(value, str):
        terms = []
        for part in value.split("+"):
            m = _TERM_RE.match(part)
            if not m or m.group(2) not in LOSSES:
                raise ConfigError(
                    f"config key '{key}': cannot read loss term '{part.strip()}' in '{value}' "
                    f"(known: {', '.join(LOSSES.names())})"
                )
            terms.append({"name": m.group(2), "weight": float(m.group(1) or 1.0)})
        value = terms
    out = []
    for t in value:
        defaults = LOSSES.params(LOSSES.entry(t["name"], key).name)  # ConfigError for an unknown name
        unknown = sorted(set(t) - {"name", "weight"} - set(defaults))
        if unknown:
            raise ConfigError(
                f"config key '{key}': loss '{t['name']}' takes no parameter(s) {', '.join(unknown)} "
                f"(it reads: {', '.join(defaults) or 'none'})"
            )
        params = tuple(sorted((k, float(t.get(k, d))) for k, d in defaults.items()))
        out.append(LossTerm(t["name"], float(t.get("weight", 1.0)), params))
    return tuple(out)


def parse_schedule(value: Any) -> ScheduleParams:
    """A schedule name or {name, <parameters>}: the keys the schedule reads, defaults from its function.

    Keys the schedule does not read are dropped (a `schedule.rate` axis crossed with a schedule axis).
    """
    if isinstance(value, str):
        value = {"name": value}
    defaults = SCHEDULES.params(value["name"])  # ConfigError for an unknown name
    return ScheduleParams(value["name"], tuple(sorted((k, value.get(k, d)) for k, d in defaults.items())))


@dataclass(frozen=True)
class WeightsFile:
    """Pretrained encoder weights (``pretrained``): known to a cell id by their **sha256**, not their path.

    ``path`` (absolute) is where the train job opens the file; it travels in the identity form (the train
    rule's params) but `CellParams.id_form` leaves it out, so moving the file keeps the cell id.
    """

    path: str
    sha256: str

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256}

    def id_form(self) -> dict:
        return {"sha256": self.sha256}


@dataclass(frozen=True)
class InitFrom:
    """Initial weights from another cell's ``best.pt`` (``init_from``).

    ``{cell: <id>}``: that cell. ``{study: X}``: X's validation-selected cell, known only once X has run, so the
    plan stores what decides it: X's cell ids, its table value and direction (`segsweep.plan.finetune`).
    The study's name says where its table lies and is left out of the id (`id_form`), like a weights path.
    """

    cell: str | None = None
    study: str | None = None
    cells: tuple[str, ...] = ()
    value: str | None = None
    higher_is_better: bool | None = None

    @classmethod
    def from_value(cls, v: Mapping) -> InitFrom:
        if v.get("cell") is not None:
            return cls(cell=str(v["cell"]))
        if not v.get("cells"):
            raise ConfigError(
                f"config key 'init_from': {{study: {v.get('study')}}} is resolved by the plan (the study's cells); "
                "build cells through segsweep.plan.cells.build_plan"
            )
        return cls(
            study=str(v["study"]),
            cells=tuple(v["cells"]),
            value=str(v["value"]),
            higher_is_better=bool(v["higher_is_better"]),
        )

    def to_dict(self) -> dict:
        if self.cell is not None:
            return {"cell": self.cell}
        return {
            "study": self.study,
            "cells": list(self.cells),
            "value": self.value,
            "higher_is_better": self.higher_is_better,
        }

    def id_form(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k != "study"}


def _weights_file(path: Any) -> WeightsFile | None:
    if path is None:
        return None
    if isinstance(path, Mapping):
        if "sha256" in path:  # already resolved (from_dict)
            return WeightsFile(str(path["path"]), str(path["sha256"]))
        path = path["path"]  # {path, label}: the label names the value in tables only
    expanded = os.path.expandvars(str(path))
    unset = [m.group(1) or m.group(2) for m in _VAR.finditer(expanded)]
    if unset:  # expandvars leaves an unset variable as written: the path would be relative to the folder
        names = ", ".join(f"${v}" for v in dict.fromkeys(unset))
        raise ConfigError(
            f"config key 'pretrained': {path} names the environment variable {names}, which is not set: set it "
            f"(e.g. export {unset[0]}=~/.cache/torch, torch's hub cache) and put the weights file at {path}, "
            "or write the file's full path in the config"
        )
    full = os.path.abspath(os.path.expanduser(expanded))
    return WeightsFile(full, file_sha256(full))


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")  # a $NAME or ${NAME} that expandvars left (unset)

SCHEMA = "segsweep_schema"  # dataclass field metadata key: a `cell_key`'s schema (besides its type)


def cell_key(neutral: Any, description: str, **schema: Any) -> Any:
    """A cell key added after 0.1.0, declared in one place: a `CellParams` field annotated with its type
    (``bool``, ``int``, ``float``, ``str``, or one of them ``| None``) whose default ``neutral`` reproduces what
    training did before the key existed (`added_field`: left out of the cell id at that value).

    ``schema``: the rest of its JSON schema (``minimum``, ``maximum``, ``exclusiveMinimum``, ``enum``, ...). At
    load, plan/config.py puts ``{type: <the annotation's>, **schema, description}`` under the schema's
    ``definitions.cell`` (`cell_key_schemas`), the default into ``train.default`` (`cell_config_defaults`), and
    `CellParams.from_config` reads the key by its name and type.
    """
    added = added_field(neutral)
    return dataclasses.field(
        default=neutral, metadata={**added.metadata, SCHEMA: {**schema, "description": description}}
    )


@dataclass(frozen=True)
class CellParams:
    """Everything that determines one training run (and so its content hash)."""

    lr: float
    optimizer: str
    momentum: float | None
    nesterov: bool
    weight_decay: float
    schedule: ScheduleParams
    regularizer: str
    reg_lambda: float
    reg_l1_ratio: float | None
    reg_on: tuple[str, ...]
    dropout_down: float
    dropout_bottleneck: float
    dropout_up: float
    dropout_mode: str
    loss: tuple[LossTerm, ...]
    batch_size: int
    epochs: int
    grad_clip: float | None
    patience: int | None
    augment: AugmentParams
    in_channels: int
    depth: int
    base_width: int
    batch_norm: bool
    fraction: float
    seed: int
    fold: int | None
    split_seed: int
    # added after 0.1.0 (docs/architecture.md, "Cell ids"): left out of the id at these neutral values. A new
    # plain key is one `cell_key` line at the end (CONTRIBUTING.md, "Add a hyperparameter").
    model: str = added_field("unet")
    pretrained: WeightsFile | None = added_field(None)
    init_from: InitFrom | None = added_field(None)
    finetune: str = added_field("full")
    unfreeze_epoch: int | None = added_field(None)
    encoder_lr_factor: float | None = added_field(None)

    @classmethod
    def from_config(cls, d: Mapping) -> CellParams:
        """From a complete cell dict (schema defaults + base + axis values); normalises no-op keys."""
        opt = d["optimizer"]
        g = float(d["dropout"])

        def first(*vals):
            return next(float(v) for v in vals if v is not None)

        reg = d["regularizer"]
        if reg != "none" and float(d["reg_lambda"]) == 0.0:
            reg = "none"
        # A key the optimizer / regulariser does not read (its keyword parameters) gets one neutral value.
        opt_reads, reg_reads = OPTIMIZERS.params(opt), REGULARIZERS.params(reg)
        model = d.get("model", CellParams.model)
        backbone = model in BACKBONES  # depth and base_width do not apply: one neutral value (0)
        ft = d.get("finetune", CellParams.finetune)
        ft_reads = FINETUNE_MODES.params(ft)  # unknown: ConfigError naming 'finetune' and the known modes
        if d.get("pretrained") is not None and not backbone:
            raise ConfigError(
                f"config key 'pretrained': model '{model}' has no torchvision encoder to load it into "
                f"(pretrained weights apply to {', '.join(BACKBONES)})"
            )
        pretrained = _weights_file(d.get("pretrained"))  # hashed once per file and plan (memo)
        init_from = None if d.get("init_from") is None else InitFrom.from_value(d["init_from"])
        if pretrained is not None and init_from is not None:
            raise ConfigError("config keys 'pretrained' and 'init_from' both set: a cell starts from one of them")
        drop = (
            first(d["dropout_down"], d["dropout_blocks"], g),
            first(d["dropout_bottleneck"], d["dropout_body"], g),
            first(d["dropout_up"], d["dropout_blocks"], g),
        )
        kw = dict(
            optimizer=opt,
            momentum=float(d["momentum"]) if "momentum" in opt_reads else None,
            nesterov=bool(d["nesterov"]) if "nesterov" in opt_reads else False,
            schedule=parse_schedule(d["schedule"]),
            regularizer=reg,
            reg_lambda=float(d["reg_lambda"]) if reg != "none" else 0.0,
            reg_l1_ratio=float(d["reg_l1_ratio"]) if "l1_ratio" in reg_reads else None,
            reg_on=tuple(sorted(set(d["reg_on"]))) if reg != "none" else (),
            dropout_down=drop[0],
            dropout_bottleneck=drop[1],
            dropout_up=drop[2],
            # without dropout the mode selects nothing: one value, so it does not split a cell
            dropout_mode=d["dropout_mode"] if any(drop) else "element",
            loss=parse_loss(d["loss"]),
            augment=AugmentParams(**{k: v for k, v in d["augment"].items()}),
            depth=0 if backbone else int(d["depth"]),
            base_width=0 if backbone else int(d["base_width"]),
            model=model,
            pretrained=pretrained,
            init_from=init_from,
            finetune=ft,
            # read only by the mode that uses it, so other modes' cells do not split on it
            unfreeze_epoch=int(d.get("unfreeze_epoch", ft_reads["unfreeze_epoch"]))
            if "unfreeze_epoch" in ft_reads
            else None,
            encoder_lr_factor=(
                float(d.get("encoder_lr_factor", ft_reads["encoder_lr_factor"]))
                if "encoder_lr_factor" in ft_reads
                else None
            ),
        )
        # every other key is a plain value, read by its name and annotated type (`cell_key`)
        kw.update({f.name: _read_plain(cls, f, d) for f in fields(cls) if f.name not in kw})
        return cls(**kw)

    def to_dict(self, identity: bool = False) -> dict:
        """Canonical JSON-able form (written to metrics.json; read back by `from_dict`).

        ``identity=True``: the form a cell id hashes and the train rule passes as its ``params`` (Snakemake
        reruns a job whose params change): fields added after 0.1.0 are left out while they hold their
        neutral value (``segsweep.io.added_field``), so adding a field keeps every finished cell.
        """
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if identity and is_neutral(f, v):
                continue
            if f.name == "loss":
                v = [t.to_dict() for t in v]
            elif f.name == "schedule":
                v = v.to_dict()
            elif f.name == "augment":
                v = asdict(v)
            elif isinstance(v, (WeightsFile, InitFrom)):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    def id_form(self) -> dict:
        """What a cell id hashes (`segsweep.plan.cells.cell_id`): the identity form without where files lie:
        a weights file by its sha256 (not its path), ``init_from`` a study by its content (not its name). For
        every cell without those two it is the identity form itself."""
        out = self.to_dict(identity=True)
        for name in ("pretrained", "init_from"):
            if name in out:
                out[name] = getattr(self, name).id_form()
        revision = FINETUNE_MODES.entry(self.finetune).meta.get("revision")
        if revision is not None:  # a fix changed this mode's numbers: its cells only get new ids
            out["finetune_revision"] = revision
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> CellParams:
        """Inverse of ``to_dict`` (either form: an absent added field takes its neutral default)."""
        kw = dict(d)
        kw["loss"] = parse_loss(kw["loss"])
        kw["schedule"] = parse_schedule(kw["schedule"])
        kw["augment"] = AugmentParams(**kw["augment"])
        kw["reg_on"] = tuple(kw["reg_on"])
        if kw.get("pretrained") is not None:
            kw["pretrained"] = _weights_file(kw["pretrained"])
        if kw.get("init_from") is not None:
            kw["init_from"] = InitFrom.from_value(kw["init_from"])
        return cls(**kw)

    def same_run(self, saved: Mapping | None) -> bool:
        """Whether ``saved`` (a checkpoint's ``to_dict()``) describes this cell: compared by `id_form`, so a
        checkpoint from before a field was added, or with a weights file since moved, still resumes."""
        if saved is None:
            return False
        try:
            return CellParams.from_dict(saved).id_form() == self.id_form()
        except (KeyError, TypeError, ValueError, ConfigError):
            return False

    @property
    def is_backbone(self) -> bool:
        return self.model in BACKBONES


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


@functools.cache
def _plain_types(cls: type) -> dict[str, tuple[type, bool]]:
    """name → (type, whether None is allowed) of each field of ``cls`` (`CellParams`) annotated with a plain
    value (``float``, ``int | None``, ...): what `from_config` can read by name and type. A `cell_key` with
    another annotation stops the import, naming it (its schema type would be unknown)."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        values = [a for a in args if a is not type(None)]
        if len(values) == 1 and values[0] in _JSON_TYPES:
            out[name] = (values[0], len(values) < len(args))
    for f in fields(cls):
        if SCHEMA in f.metadata and f.name not in out:
            raise TypeError(
                f"{cls.__name__}.{f.name}: a cell_key is annotated bool, int, float or str (or one of them | None); "
                "declare another type with added_field, its schema in config.schema.yaml and its from_config line"
            )
    return out


_plain_types(CellParams)  # at import: a cell_key of another type stops it, naming the field


def _read_plain(cls: type, f: dataclasses.Field, d: Mapping) -> Any:
    """Field ``f`` of ``cls`` from the config dict ``d`` by its name and type; an added field absent from ``d`` (a trial
    config stored before it existed) takes its neutral value."""
    plain = _plain_types(cls)
    if f.name not in plain:  # a structured field that from_config forgot: every plan stops here, naming it
        raise TypeError(f"{cls.__name__}.from_config does not read '{f.name}' (not a plain value: read it there)")
    kind, nullable = plain[f.name]
    v = d.get(f.name, f.default) if is_added(f) else d[f.name]
    return None if v is None and nullable else kind(v)


def cell_key_schemas(cls: type | None = None) -> dict[str, dict]:
    """The config schema of each `cell_key` field of ``cls`` (default `CellParams`): ``{type, **schema,
    description}`` (``oneOf`` with null for an ``X | None`` annotation). plan/config.py puts them under
    ``definitions.cell`` at load."""
    cls = cls or CellParams
    out = {}
    for f in fields(cls):
        if SCHEMA not in f.metadata:
            continue
        spec = dict(f.metadata[SCHEMA])
        description = spec.pop("description")
        kind, nullable = _plain_types(cls)[f.name]
        body = {"type": _JSON_TYPES[kind], **spec}
        out[f.name] = {"oneOf": [{"type": "null"}, body]} if nullable else body
        out[f.name]["description"] = description
    return out


# The config form of each cell key's default: what a cell gets that neither `train:`, its study's `base` nor an
# axis sets. Written once: plan/config.py makes `cell_config_defaults()` the schema's `train.default` at load.
# Keys the config writes differently from the fields (`dropout`, `dropout_blocks`, `dropout_body` expand to the
# per-part dropouts; `loss`, `schedule` as names) are here; a field added after 0.1.0 (`added_field`) is not:
# its default is its neutral value, or, for the keys a fine-tune mode reads, the mode's keyword default.
CONFIG_DEFAULTS: dict[str, Any] = {
    "lr": 0.001,
    "optimizer": "adam",
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 0.0,
    "schedule": "none",
    "regularizer": "none",
    "reg_lambda": 0.0,
    "reg_l1_ratio": 0.5,
    "reg_on": ["kernel"],
    "dropout": 0.0,
    "dropout_down": None,
    "dropout_bottleneck": None,
    "dropout_up": None,
    "dropout_blocks": None,
    "dropout_body": None,
    "dropout_mode": "element",
    "loss": "dice",
    "batch_size": 8,
    "epochs": 10,
    "grad_clip": None,
    "patience": None,
    "augment": {"flip": False, "rotate_deg": 0, "scale": 0, "intensity": 0},
    "in_channels": 1,
    "depth": 3,
    "base_width": 8,
    "batch_norm": True,
    "fraction": 1.0,
    "seed": 0,
    "fold": None,
    "split_seed": 0,
}


def cell_config_defaults() -> dict[str, Any]:
    """Every cell key's default in config form: `CONFIG_DEFAULTS`, then each added field's (its neutral value;
    a key some fine-tune mode reads: that mode's keyword default, `FINETUNE_MODES`). A fresh dict."""
    mode_keys = {k: v for n in FINETUNE_MODES.names() for k, v in FINETUNE_MODES.params(n).items()}
    out = copy.deepcopy(CONFIG_DEFAULTS)
    for f in fields(CellParams):
        if f.name in CONFIG_DEFAULTS:
            continue
        if f.name in mode_keys:
            out[f.name] = mode_keys[f.name]
        elif is_added(f):
            out[f.name] = copy.deepcopy(f.default)
        else:  # a 0.1.0 field has no dataclass default: its config default belongs in CONFIG_DEFAULTS
            raise TypeError(f"CellParams.{f.name}: no config default (add it to CONFIG_DEFAULTS)")
    return out


# Label values (background included) that training can learn: binary targets (one sigmoid output) and
# multiclass (LV cavity + myocardium: softmax over 3 channels). The plan rejects a data.target with more
# (segsweep.plan.cells), and a binary-only loss for a multi-class target (segsweep.plan.validate), so no
# train job fails on either.
TRAINABLE_CLASSES = 3
