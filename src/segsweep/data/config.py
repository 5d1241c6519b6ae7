"""Typed settings of the data stage: where the images come from, the phantom, preprocessing, splits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from segsweep.errors import ConfigError
from segsweep.io import added_field, digest, identity
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
# data.roi_map (rtstruct layout): RTSTRUCT ROI names of each contour, compared case-insensitively with runs of
# whitespace as one space; data.label_map (nifti layout): label value of each structure (ACDC's values).
# The schema repeats these defaults (tests/test_clinical_layouts.py checks that they agree).
ROI_MAP_DEFAULT = {"endo": ("LV Endo", "LV endocardium"), "epi": ("LV Epi", "LV epicardium")}
LABEL_MAP_DEFAULT = {"rv": 1, "myo": 2, "lv": 3}
LABELS = ("lv", "myo", "rv")  # rv is read (its voxels are not unmapped) but no target uses it yet
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
    # normalised data.roi_map / data.label_map, kept only for the layout that reads them; None = the default
    # (so other layouts' data identity, and every cell id from before these keys, stay unchanged)
    roi_map: tuple[tuple[str, tuple[str, ...]], ...] | None = added_field(None)
    label_map: tuple[tuple[str, int], ...] | None = added_field(None)

    @property
    def layout(self) -> str:
        return self.phantom.layout if self.source == "phantom" else self.source

    @property
    def layout_options(self) -> dict:
        """What a layout's ``resolve`` reads: ``roi_map`` {"endo"|"epi": (normalised ROI names)} and
        ``label_map`` {"lv"|"myo"|"rv": label value}, defaults filled in."""
        return {
            "roi_map": dict(self.roi_map or roi_map_option(ROI_MAP_DEFAULT, keep_default=True)),
            "label_map": dict(self.label_map or LABEL_MAP_DEFAULT),
        }

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
        layout = ph.layout if d["source"] == "phantom" else d["source"]
        roi_map, label_map = roi_map_option(d.get("roi_map")), label_map_option(d.get("label_map"))
        return cls(
            d["source"],
            root,
            d["target"],
            bool(d["strict"]),
            d["pseudonym_key"],
            ph,
            roi_map=roi_map if layout == "rtstruct" else None,
            label_map=label_map if layout == "nifti" else None,
        )


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
      over the source, its root (real data) or phantom settings, target, pseudonym key, ROI/label maps and
      the preprocessing; not over the root's *content* (a changed file re-ingests into the same folder, and
      the content is in every cell id) nor ``data.strict`` (it only decides whether a bad file stops the run);
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
        for name in ("roi_map", "label_map"):  # only when set (the layout reads them): older keys unchanged
            if getattr(data, name) is not None:
                ident[name] = getattr(data, name)
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


def roi_name(name: str) -> str:
    """The form ROI names are compared in: case-folded, surrounding whitespace dropped, inner runs as one space."""
    return " ".join(str(name).split()).casefold()


def roi_map_option(value, keep_default: bool = False) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    """``data.roi_map`` checked and normalised: ((contour, (ROI names in ``roi_name`` form, sorted)), ...);
    None for None or the default map (unless ``keep_default``). Raises ConfigError naming the key."""
    if value is None:
        return None
    key = "config key 'data.roi_map'"
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{key}: expected a mapping of endo and/or epi to lists of ROI names, got {value!r}")
    out, seen = [], {}
    for kind, names in value.items():
        if kind not in ROI_MAP_DEFAULT:
            raise ConfigError(f"{key}: unknown contour '{kind}' (known: {', '.join(ROI_MAP_DEFAULT)})")
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, (list, tuple)) or not names:
            raise ConfigError(f"config key 'data.roi_map.{kind}': expected a non-empty list of ROI names")
        norm = []
        for n in names:
            if not isinstance(n, str) or not roi_name(n):
                raise ConfigError(f"config key 'data.roi_map.{kind}': ROI names must be non-empty strings, got {n!r}")
            other = seen.setdefault(roi_name(n), kind)
            if other != kind:
                raise ConfigError(f"{key}: ROI name '{n}' is listed under both {other} and {kind}")
            norm.append(roi_name(n))
        out.append((kind, tuple(sorted(set(norm)))))
    result = tuple(sorted(out))
    if not keep_default and result == roi_map_option(ROI_MAP_DEFAULT, keep_default=True):
        return None
    return result


def label_map_option(value) -> tuple[tuple[str, int], ...] | None:
    """``data.label_map`` checked and normalised: ((structure, value), ...) sorted; None for None or the
    default map. lv and myo are required, values are distinct integers 1..65535 (0 is the background)."""
    if value is None:
        return None
    key = "config key 'data.label_map'"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping of lv, myo (and rv) to label values, got {value!r}")
    unknown = sorted(set(value) - set(LABELS))
    if unknown:
        raise ConfigError(f"{key}: unknown structure(s) {unknown} (known: {', '.join(LABELS)})")
    missing = [k for k in ("lv", "myo") if k not in value]
    if missing:
        raise ConfigError(f"{key}: {' and '.join(missing)} required (the targets are built from lv and myo)")
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
            raise ConfigError(
                f"config key 'data.label_map.{k}': expected a label value 1..65535 (0 is background), got {v!r}"
            )
    by_value: dict[int, list[str]] = {}
    for k, v in value.items():
        by_value.setdefault(v, []).append(k)
    shared = {v: ks for v, ks in by_value.items() if len(ks) > 1}
    if shared:
        v, ks = next(iter(shared.items()))
        raise ConfigError(f"{key}: {' and '.join(ks)} have the same label value {v}")
    result = tuple(sorted((k, int(v)) for k, v in value.items()))
    return None if result == tuple(sorted(LABEL_MAP_DEFAULT.items())) else result


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
    out = {**d, "phantom": PhantomConfig(**d["phantom"])}
    if out.get("roi_map") is not None:  # JSON/YAML round trips turn the tuples into lists
        out["roi_map"] = tuple((k, tuple(names)) for k, names in out["roi_map"])
    if out.get("label_map") is not None:
        out["label_map"] = tuple((k, int(v)) for k, v in out["label_map"])
    return DataConfig(**out)


def preprocess_from_dict(d: Mapping) -> PreprocessConfig:
    return PreprocessConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
