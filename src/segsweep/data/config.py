"""Typed settings of the data stage: where the images come from, the phantom, preprocessing, splits."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from segsweep.errors import ConfigError
from segsweep.io import added_field, digest, identity, inline_field
from segsweep.paths import (
    DATA_DIR,
    DATA_FIGURES_DIR,
    DATASETS_DIR,
    PHANTOM_ROOT,
    RESULTS,
    SCAN_DIR,
    SPLITS_DIR,
)

TARGETS = ("endo", "epi", "myo", "multiclass")
LABELS = ("lv", "myo", "rv")  # structures of a label volume (nifti layout): rv is read, no target uses it yet
# number of label values in the mask, background included (binary targets: 0/1)
N_CLASSES = {"endo": 2, "epi": 2, "myo": 2, "multiclass": 3}
# the foreground classes of a multi-class mask by label value (1, 2, ...): metrics.json's per-class keys
CLASS_NAMES = {"multiclass": ("lv", "myo")}  # LV cavity (inner contour), myocardium (outer minus inner)


def class_names(target: str | None, n_classes: int) -> tuple[str, ...]:
    """Names of the foreground classes of a mask with ``n_classes`` label values (background included):
    ``("foreground",)`` for a binary target, ``CLASS_NAMES[target]`` (or ``class1``, ``class2``, ...) else."""
    if n_classes <= 2:
        return ("foreground",)
    names = CLASS_NAMES.get(target or "", ())
    return tuple(names) if len(names) == n_classes - 1 else tuple(f"class{k}" for k in range(1, n_classes))


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
    # the layout's own config keys (``layouts.base.LayoutOption``: data.roi_map, data.label_map, ...) that differ
    # from their defaults, normalised, as sorted (name, value) pairs. Inline in the identity: each is hashed
    # under its own key, as when it was a field of its own, and a default one is not hashed at all
    options: tuple[tuple[str, object], ...] = inline_field()

    @property
    def layout(self) -> str:
        return self.phantom.layout if self.source == "phantom" else self.source

    @property
    def layout_options(self) -> dict:
        """What the layout's ``resolve`` reads: each of its options (``Layout.options``), normalised, defaults
        filled in (e.g. nifti: ``{"label_map": (("lv", 3), ("myo", 2), ("rv", 1))}``)."""
        from segsweep.data import layouts  # the layout modules import this one

        return layouts.option_values(self.layout, dict(self.options))

    @classmethod
    def from_config(cls, cfg: Mapping, dataset: str | None = None) -> DataConfig:
        """The top-level ``data`` block, or (``dataset``) the entry ``datasets.<dataset>``: the same keys;
        its phantom is generated under ``dataset_base(dataset)``. ConfigError names the block's key."""
        if dataset is None:  # its phantom: results/raw/phantom/<key of its settings>
            return cls._from_block(cfg["data"], cfg, PHANTOM_ROOT, "data", keyed=True)
        if dataset not in (cfg.get("datasets") or {}):
            raise ConfigError(
                f"config key 'datasets': no data set '{dataset}' (declared: {', '.join(cfg.get('datasets') or {}) or 'none'})"
            )
        key = f"datasets.{dataset}"
        try:
            return cls._from_block(cfg["datasets"][dataset], cfg, f"{dataset_base(dataset)}/raw/phantom", key)
        except ConfigError as exc:  # the option parsers name data.<key>: name the entry instead
            raise ConfigError(str(exc).replace("'data.", f"'{key}.")) from None

    @classmethod
    def _from_block(cls, d: Mapping, cfg: Mapping, phantom_root: str, key: str, keyed: bool = False) -> DataConfig:
        ph = dict(d["phantom"])
        seed = int(ph.pop("seed", cfg["seed"]))  # the phantom's own seed; default: the master seed
        ph = PhantomConfig(**ph, seed=seed)
        if d["source"] == "phantom":
            if d.get("root"):  # e.g. --config data='{root: ...}' without source: it would be silently ignored
                raise ConfigError(
                    f"config key '{key}.root': '{d['root']}' is set but {key}.source is 'phantom', which generates "
                    f"its data and reads no root; set {key}.source to the root's layout (rvsc, sunnybrook, ...: "
                    "docs/data.md), or remove the root"
                )
            root = f"{phantom_root}/{digest(identity(ph))}" if keyed else phantom_root
        elif d["root"]:
            root = os.path.normpath(d["root"])  # "a/b/" and "a/b" are one root
        else:
            raise ConfigError(f"config key '{key}.root': required when {key}.source is '{d['source']}'")
        from segsweep.data import layouts  # the layout modules import this one

        # the layout's own keys (the others' raise: they would be ignored); their parsers name 'data.<key>',
        # which from_config renames for a `datasets` entry
        layout = ph.layout if d["source"] == "phantom" else d["source"]
        options = layouts.parse_options(layout, d)
        return cls(d["source"], root, d["target"], bool(d["strict"]), d["pseudonym_key"], ph, options=options)


def dataset_base(dataset: str | None) -> str:
    """Prefix of a data set's files: ``results`` for the default one (results/data, results/splits/...),
    ``results/datasets/<name>`` for an entry of ``datasets`` (its data/, splits/, raw/phantom, raw/scan)."""
    return RESULTS if dataset is None else f"{DATASETS_DIR}/{dataset}"


@dataclass(frozen=True)
class DataFolders:
    """Where the default data set's files live, each folder named by a key of what its content depends on in
    the config, so that configs with other data or preprocessing settings (a second config run in the same
    folder, a `scale` preset's image size) never overwrite them:

    * ``data``: ``results/data/<key>/`` (the arrays, ``qc.csv``, ``dataset.json``), key = 12 hex of sha256
      over the source, its root (real data) or phantom settings, target, pseudonym key, the layout's options
      off their defaults (``data.roi_map``, ...) and the preprocessing; not over the root's *content* (a changed
      file re-ingests into the same folder, and the content is in every cell id) nor ``data.strict`` (it only
      decides whether a bad file stops the run);
    * ``splits``: ``results/splits/<key>/`` (``seed{s}.json``), key over the data key and the split fractions
      (the seed and fold count are in the file names);
    * ``figures``: ``results/figures/data/<data key>/`` (made from the arrays);
    * ``scan``: ``results/raw/scan/<key of the root path>/`` (real data: the root's content manifest).

    The phantom's folder is keyed by its settings (``DataConfig.root``). None of this enters a cell id."""

    key: str
    data: str
    splits: str
    figures: str
    scan: str

    @classmethod
    def of(cls, data: DataConfig, prep: PreprocessConfig, splits: SplitConfig) -> DataFolders:
        ident: dict = {"source": data.source, "target": data.target, "pseudonym_key": data.pseudonym_key}
        if data.source == "phantom":
            ident["phantom"] = identity(data.phantom)
        else:
            ident["root"] = data.root
        ident.update(data.options)  # only options off their defaults, each under its key: older keys unchanged
        key = digest({"data": ident, "preprocess": identity(prep)})
        split_key = digest({"data": key, "splits": identity(replace(splits, seed=0, folds=0))})
        return cls(
            key=key,
            data=f"{DATA_DIR}/{key}",
            splits=f"{SPLITS_DIR}/{split_key}",
            figures=f"{DATA_FIGURES_DIR}/{key}",
            scan=scan_dir(data),
        )


def scan_dir(data: DataConfig) -> str:
    """The default data set's content manifest of a real root: results/raw/scan/<key of the root path>/."""
    return f"{SCAN_DIR}/{digest(data.root)}"


def dataset_root(results_dir: str | os.PathLike, dataset: str | None) -> Path:
    """``dataset_base`` under another results folder: ``results_dir`` itself, or ``results_dir/datasets/<name>``."""
    return Path(results_dir) if dataset is None else Path(results_dir) / "datasets" / dataset


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
    # share of all patients held out for testing (docs/evaluation.md); 0 = no test set, as before the field
    test_fraction: float = added_field(0.0)

    @classmethod
    def from_config(cls, cfg: Mapping) -> SplitConfig:
        s = cfg["splits"]
        return cls(int(s["seed"]), float(s["val_fraction"]), int(s["folds"]), float(s.get("test_fraction", 0.0)))


def data_from_dict(d: Mapping) -> DataConfig:
    """A ``DataConfig`` from its ``identity`` (the layout options as keys of their own) or ``asdict`` form
    (``options`` as pairs), as JSON/YAML gave them back: lists for the tuples."""
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    out = {k: v for k, v in d.items() if k in fields}
    pairs = [*(out.pop("options", None) or ()), *((k, v) for k, v in d.items() if k not in fields)]
    out["phantom"] = PhantomConfig(**d["phantom"])
    return DataConfig(**out, options=tuple(sorted((k, _tuples(v)) for k, v in pairs)))


def _tuples(value):
    """``value`` with every list turned into a tuple (layout option values are built of tuples)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def preprocess_from_dict(d: Mapping) -> PreprocessConfig:
    return PreprocessConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
