"""Typed settings of the data stage: where the images come from, the phantom, preprocessing, splits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from segsweep.errors import ConfigError

PHANTOM_ROOT = "results/raw/phantom"
TARGETS = ("endo", "epi", "myo", "multiclass")
# number of label values in the mask, background included (binary targets: 0/1)
N_CLASSES = {"endo": 2, "epi": 2, "myo": 2, "multiclass": 3}


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
    def from_config(cls, cfg: Mapping) -> DataConfig:
        d = cfg["data"]
        ph = PhantomConfig(**d["phantom"], seed=int(cfg["seed"]))
        if d["source"] == "phantom":
            root = PHANTOM_ROOT
        elif d["root"]:
            root = os.path.normpath(d["root"])  # "a/b/" and "a/b" are one root
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
    def from_config(cls, cfg: Mapping, size_override=None) -> PreprocessConfig:
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
    def from_config(cls, cfg: Mapping) -> SplitConfig:
        s = cfg["splits"]
        return cls(int(s["seed"]), float(s["val_fraction"]), int(s["folds"]))


def data_from_dict(d: Mapping) -> DataConfig:
    return DataConfig(**{**d, "phantom": PhantomConfig(**d["phantom"])})


def preprocess_from_dict(d: Mapping) -> PreprocessConfig:
    return PreprocessConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
