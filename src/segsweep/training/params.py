"""The typed hyperparameters of one training run (a cell): what training reads, and what a cell id hashes.

Values that do not change what a run computes are normalised away here (e.g. momentum for Adam), so they do
not split one cell into two.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from segsweep.errors import ConfigError
from segsweep.io import is_neutral
from segsweep.training.losses import LOSSES
from segsweep.training.optim import OPTIMIZERS
from segsweep.training.regularizers import REGULARIZERS
from segsweep.training.schedules import SCHEDULES

# The registries above hold every variant's name and defaults (its keyword-only arguments). Planning imports
# them from here, so it imports torch (about 1.5-2 s, once per Snakemake invocation).


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


def _opt(v):
    return None if v is None else float(v)


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
        drop = (
            first(d["dropout_down"], d["dropout_blocks"], g),
            first(d["dropout_bottleneck"], d["dropout_body"], g),
            first(d["dropout_up"], d["dropout_blocks"], g),
        )
        return cls(
            lr=float(d["lr"]),
            optimizer=opt,
            momentum=float(d["momentum"]) if "momentum" in opt_reads else None,
            nesterov=bool(d["nesterov"]) if "nesterov" in opt_reads else False,
            weight_decay=float(d["weight_decay"]),
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
            batch_size=int(d["batch_size"]),
            epochs=int(d["epochs"]),
            grad_clip=_opt(d["grad_clip"]),
            patience=None if d["patience"] is None else int(d["patience"]),
            augment=AugmentParams(**{k: v for k, v in d["augment"].items()}),
            in_channels=int(d["in_channels"]),
            depth=int(d["depth"]),
            base_width=int(d["base_width"]),
            batch_norm=bool(d["batch_norm"]),
            fraction=float(d["fraction"]),
            seed=int(d["seed"]),
            fold=None if d["fold"] is None else int(d["fold"]),
            split_seed=int(d["split_seed"]),
        )

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
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> CellParams:
        """Inverse of ``to_dict`` (either form: an absent added field takes its neutral default)."""
        kw = dict(d)
        kw["loss"] = parse_loss(kw["loss"])
        kw["schedule"] = parse_schedule(kw["schedule"])
        kw["augment"] = AugmentParams(**kw["augment"])
        kw["reg_on"] = tuple(kw["reg_on"])
        return cls(**kw)


# Label values (background included) that training can learn: one sigmoid output, i.e. binary targets.
# The plan rejects a data.target with more (segsweep.plan.cells), so no train job fails on it.
TRAINABLE_CLASSES = 2
