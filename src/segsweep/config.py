"""Configuration: load, validate against the schema, and turn into typed, frozen parameter objects.

Every key is named in ``schemas/config.schema.yaml``; this module only converts the validated dict into
dataclasses and normalises values that do not change what a cell computes (so they do not change its hash).
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError

PHANTOM_ROOT = "results/raw/phantom"

# Keys each schedule / loss reads, with their defaults. Keys not listed for a name are dropped, so an
# irrelevant key (e.g. `gamma` on an exponential schedule) does not split one cell into two.
SCHEDULE_KEYS: dict[str, dict[str, float]] = {
    "none": {},
    "inverse_time": {"rate": 0.5, "decay_steps": 100},
    "exponential": {"rate": 0.96, "decay_steps": 100},
    "staircase": {"rate": 0.96, "decay_steps": 100},
    "step": {"gamma": 0.5, "step_epochs": 10},
    "delayed_step": {"gamma": 0.8, "step_epochs": 10, "delay_epochs": 50},
    "cosine": {"eta_min": 0.0},
    "one_cycle": {"max_lr_factor": 10.0, "pct_start": 0.3},
}
LOSS_KEYS: dict[str, dict[str, float]] = {
    "dice": {"smooth": 1e-5},
    "inverse_dice": {"smooth": 1e-5},
    "iou": {"smooth": 1e-5},
    "bce": {},
    "wce": {"pos_weight": 2.0},
    "focal": {"alpha": 0.25, "gamma": 2.0},
    "tversky": {"alpha": 0.3, "beta": 0.7, "smooth": 1e-5},
    "combo": {"ce_ratio": 0.5, "pos_weight": 1.0, "smooth": 1e-5},
    "switching": {"lam": 0.5, "smooth": 1e-5},
}


# --------------------------------------------------------------------------------------------- schema
@lru_cache(maxsize=1)
def schema() -> dict:
    text = resources.files("segsweep.schemas").joinpath("config.schema.yaml").read_text()
    return yaml.safe_load(text)


def schema_path() -> str:
    return str(resources.files("segsweep.schemas").joinpath("config.schema.yaml"))


def cell_defaults() -> dict:
    return copy.deepcopy(schema()["properties"]["train"]["default"])


def _validator():
    import jsonschema

    base = jsonschema.Draft202012Validator
    validate_props = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from validate_props(validator, properties, instance, sch)

    return jsonschema.validators.extend(base, {"properties": set_defaults})(schema())


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate(cfg: dict) -> dict:
    """Validate in place (filling defaults); raise ConfigError naming the key on the first problem."""
    errors = sorted(_validator().iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            best = err
            if err.context:  # oneOf: report the branch that got furthest
                best = max(err.context, key=lambda e: len(e.absolute_path))
            lines.append(f"config key '{_where(best.absolute_path)}': {best.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    return cfg


def load_config(path: str | Path, overrides: Mapping | None = None) -> dict:
    """Read a YAML config (plus its `study_files`), apply overrides, validate, fill defaults."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return prepare(cfg, base_dir=path.parent.parent if path.parent.name == "config" else path.parent)


def prepare(cfg: dict, base_dir: str | Path = ".") -> dict:
    """Merge study files into `studies`, validate, and fill every default (idempotent)."""
    cfg = copy.deepcopy(dict(cfg))
    for rel in cfg.get("study_files", []) or []:
        sp = Path(rel) if Path(rel).is_absolute() else Path(base_dir) / rel
        try:
            extra = yaml.safe_load(sp.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config key 'study_files': file not found: {sp}") from None
        if not isinstance(extra, dict) or not isinstance(extra.get("studies"), dict):
            raise ConfigError(f"study file {sp} must hold a mapping 'studies: {{name: study}}'")
        for name, study in extra["studies"].items():
            cfg.setdefault("studies", {}).setdefault(name, study)
    cfg["study_files"] = []
    validate(cfg)
    cfg["train"] = deep_merge(cell_defaults(), cfg.get("train") or {})
    if cfg["scale"] != "full" and cfg["scale"] not in cfg["scales"]:
        raise ConfigError(
            f"config key 'scale': unknown preset '{cfg['scale']}' (known: full, {', '.join(cfg['scales'])})"
        )
    if cfg["select"]:
        unknown = [s for s in cfg["select"] if s not in cfg["studies"]]
        if unknown:
            raise ConfigError(
                f"config key 'select': unknown stud{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
                f"(declared: {', '.join(cfg['studies'])})"
            )
        cfg["studies"] = {k: v for k, v in cfg["studies"].items() if k in cfg["select"]}
    if not cfg["studies"]:
        raise ConfigError("config key 'studies': no study is declared")
    return cfg


def deep_merge(a: Mapping, b: Mapping) -> dict:
    out = copy.deepcopy(dict(a))
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def digest(obj: Any, n: int = 12) -> str:
    """Short sha256 of canonical JSON: key order and float formatting do not matter."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


# ------------------------------------------------------------------------------------- parameter types
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
            if not m or m.group(2) not in LOSS_KEYS:
                raise ConfigError(
                    f"config key '{key}': cannot read loss term '{part.strip()}' in '{value}' "
                    f"(known: {', '.join(LOSS_KEYS)})"
                )
            terms.append({"name": m.group(2), "weight": float(m.group(1) or 1.0)})
        value = terms
    out = []
    for t in value:
        if t["name"] not in LOSS_KEYS:
            raise ConfigError(f"config key '{key}': unknown loss '{t['name']}'")
        defaults = LOSS_KEYS[t["name"]]
        params = tuple(sorted((k, float(t.get(k, d))) for k, d in defaults.items()))
        out.append(LossTerm(t["name"], float(t.get("weight", 1.0)), params))
    return tuple(out)


def parse_schedule(value: Any) -> ScheduleParams:
    if isinstance(value, str):
        value = {"name": value}
    defaults = SCHEDULE_KEYS[value["name"]]
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
    def from_config(cls, d: Mapping) -> "CellParams":
        """From a merged cell dict (defaults + base + axis values); normalises no-op keys."""
        d = deep_merge(cell_defaults(), d)
        opt = d["optimizer"]
        g = float(d["dropout"])

        def first(*vals):
            return next(float(v) for v in vals if v is not None)

        reg = d["regularizer"]
        if reg != "none" and float(d["reg_lambda"]) == 0.0:
            reg = "none"
        return cls(
            lr=float(d["lr"]),
            optimizer=opt,
            momentum=float(d["momentum"]) if opt in ("sgd", "rmsprop") else None,
            nesterov=bool(d["nesterov"]) if opt == "sgd" else False,
            weight_decay=float(d["weight_decay"]),
            schedule=parse_schedule(d["schedule"]),
            regularizer=reg,
            reg_lambda=float(d["reg_lambda"]) if reg != "none" else 0.0,
            reg_l1_ratio=float(d["reg_l1_ratio"]) if reg == "elastic" else None,
            reg_on=tuple(sorted(set(d["reg_on"]))) if reg != "none" else (),
            dropout_down=first(d["dropout_down"], d["dropout_blocks"], g),
            dropout_bottleneck=first(d["dropout_bottleneck"], d["dropout_body"], g),
            dropout_up=first(d["dropout_up"], d["dropout_blocks"], g),
            dropout_mode=d["dropout_mode"],
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

    def to_dict(self) -> dict:
        """Canonical JSON-able form (hashed; written to metrics.json; read back by `from_dict`)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
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
    def from_dict(cls, d: Mapping) -> "CellParams":
        kw = dict(d)
        kw["loss"] = parse_loss(kw["loss"])
        kw["schedule"] = parse_schedule(kw["schedule"])
        kw["augment"] = AugmentParams(**kw["augment"])
        kw["reg_on"] = tuple(kw["reg_on"])
        return cls(**kw)

    @property
    def has_dropout(self) -> bool:
        return max(self.dropout_down, self.dropout_bottleneck, self.dropout_up) > 0


@dataclass(frozen=True)
class PhantomConfig:
    patients: int = 12
    slices: int = 10
    rows: int = 256
    cols: int = 216
    layout: str = "rvsc"
    no_contour_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    source: str
    root: str
    target: str
    strict: bool
    pseudonym_key: str
    phantom: PhantomConfig

    @property
    def layout(self) -> str:
        return self.phantom.layout if self.source == "phantom" else self.source

    @classmethod
    def from_config(cls, cfg: Mapping) -> "DataConfig":
        d = cfg["data"]
        ph = PhantomConfig(**d["phantom"], seed=int(cfg["seed"]))
        if d["source"] == "phantom":
            root = PHANTOM_ROOT
        elif d["root"]:
            root = d["root"]
        else:
            raise ConfigError(f"config key 'data.root': required when data.source is '{d['source']}'")
        return cls(d["source"], root, d["target"], bool(d["strict"]), d["pseudonym_key"], ph)


@dataclass(frozen=True)
class PreprocessConfig:
    clip_limit: float = 2.0
    tile_grid: tuple[int, int] = (8, 8)
    window: tuple[float, float] = (0.5, 99.5)
    size: tuple[int, int] = (128, 112)
    policy: str = "resize_pad"

    @classmethod
    def from_config(cls, cfg: Mapping, size_override=None) -> "PreprocessConfig":
        p = cfg["preprocess"]
        return cls(
            clip_limit=float(p["clahe"]["clip_limit"]),
            tile_grid=tuple(int(x) for x in p["clahe"]["tile_grid"]),
            window=tuple(float(x) for x in p["window"]),
            size=tuple(int(x) for x in (size_override or p["size"])),
            policy=p["policy"],
        )


@dataclass(frozen=True)
class SplitConfig:
    seed: int = 0
    val_fraction: float = 0.25
    folds: int = 5

    @classmethod
    def from_config(cls, cfg: Mapping) -> "SplitConfig":
        s = cfg["splits"]
        return cls(int(s["seed"]), float(s["val_fraction"]), int(s["folds"]))


@dataclass(frozen=True)
class TableLayout:
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    value: str = "best_val_dice"
    higher_is_better: bool = True


@dataclass(frozen=True)
class ResourceConfig:
    train_threads: int = 1
    train_mem_mb: int = 3000
    train_gpus: int = 0
    train_runtime_min: int | None = None
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    ingest_threads: int = 2
    train_retries: int = 1

    @classmethod
    def from_config(cls, cfg: Mapping) -> "ResourceConfig":
        return cls(**cfg["resources"])


def data_fingerprint(data: DataConfig, prep: PreprocessConfig) -> str:
    return digest({"data": asdict(data), "preprocess": asdict(prep)})


def split_fingerprint(split: SplitConfig, split_seed: int, cv: bool) -> dict:
    fp = {"seed": split_seed, "val_fraction": split.val_fraction}
    if cv:
        fp["folds"] = split.folds
    return fp


def data_from_dict(d: Mapping) -> DataConfig:
    return DataConfig(**{**d, "phantom": PhantomConfig(**d["phantom"])})


def preprocess_from_dict(d: Mapping) -> PreprocessConfig:
    return PreprocessConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
