"""Studies → cells.

A study is base parameters + axes (a full grid, one-factor-at-a-time sweeps around the base, or a seeded
random sample) + repeats (training seeds) or cross-validation folds + a table layout. Expanding all studies
gives a static list of cells at DAG time. A cell's id is a short hash of its fully resolved parameters plus
the identity of its data and split, so a cell shared by two studies is trained once and a config change
touches only the cells whose parameters changed. Expansion is O(cells): axis values are validated once each,
not once per cell. A study with ``data: <name>`` trains on that entry of ``datasets``: its cells carry the name
(``Cell.dataset``) and that data set's identity, so the same parameters on two data sets are two cells.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from segsweep.data.config import N_CLASSES, DataConfig, PreprocessConfig, SplitConfig
from segsweep.data.splits import make_split
from segsweep.errors import ConfigError, DataError
from segsweep.io import digest, identity
from segsweep.labels import format_value
from segsweep.plan.config import cell_defaults, deep_merge, scale_preset
from segsweep.plan.finetune import check_backbone_keys, planning_order, resolve_init_from, source_cells
from segsweep.plan.resources import ResourceConfig
from segsweep.plan.search import SEARCH_MODES, mode_traits
from segsweep.plan.validate import check_plan
from segsweep.study import Study, StudyCell, TableLayout
from segsweep.training.params import TRAINABLE_CLASSES, CellParams


@dataclass(frozen=True)
class Cell:
    id: str
    params: CellParams
    split: str  # name of the split file (without .json) under <dataset_base(dataset)>/splits/
    dataset: str | None = None  # the `datasets` entry it trains on; None: the default data set (`data`)


@dataclass(frozen=True)
class Dataset:
    """An extra data set (config key ``datasets``) that a study uses: its settings, identity and splits."""

    name: str
    data: DataConfig
    data_fp: str
    split_specs: dict[str, dict]  # as Plan.split_specs, for the splits its cells use


@dataclass(frozen=True)
class Plan:
    """Everything the Snakefile needs, built once per invocation. ``data``, ``data_fp`` and ``split_specs``
    are the default data set's (``data``); ``datasets`` holds the used entries of ``datasets``."""

    data: DataConfig
    preprocess: PreprocessConfig
    splits: SplitConfig
    resources: ResourceConfig
    cells: dict[str, Cell]
    studies: dict[str, Study]
    split_specs: dict[str, dict]  # split name → {"seed", "val_fraction", "folds"}
    data_fp: str
    datasets: dict[str, Dataset] = field(default_factory=dict)


# ------------------------------------------------------------------------------------- expansion
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


def used_datasets(cfg: Mapping) -> list[str]:
    """The entries of ``datasets`` that a study names (``studies.<s>.data``), in ``datasets`` order.

    ConfigError naming ``studies.<s>.data`` for an unknown name, or for an optuna study (its trials are
    recorded without a data set: not supported yet).
    """
    declared = cfg.get("datasets") or {}
    used = set()
    for name, spec in cfg["studies"].items():
        ds = spec.get("data")
        if ds is None:
            continue
        if ds not in declared:
            raise ConfigError(
                f"config key 'studies.{name}.data': unknown data set '{ds}' (declared under `datasets`: "
                f"{', '.join(declared) or 'none'}; without `data` a study uses the top-level `data`)"
            )
        mode = spec.get("mode", "grid")
        if mode_traits(mode, key=f"studies.{name}.mode").adaptive:
            raise ConfigError(
                f"config key 'studies.{name}.data': a mode {mode} study trains on the default data set only "
                "(remove `data`, or make this data set the top-level `data`)"
            )
        used.add(ds)
    return [d for d in declared if d in used]


def build_plan(cfg: Mapping, data_content: str | None = None, dataset_content: Mapping[str, str] | None = None) -> Plan:
    """Expand every study of a validated config (see config.prepare) into cells.

    ``data_content`` identifies a real data root's content (``segsweep.data.scan.watch_root``); the phantom
    is identified by its settings instead. ``dataset_content``: the same for each used entry of ``datasets``
    with a real source (by name).
    """
    preset = scale_preset(cfg)
    prep = PreprocessConfig.from_config(cfg, size_override=preset.get("size"))
    # the data sets: None = the default (`data`), then each entry of `datasets` a study uses
    sources: dict[str | None, DataConfig] = {None: DataConfig.from_config(cfg)}
    for ds in used_datasets(cfg):
        sources[ds] = DataConfig.from_config(cfg, ds)
    fps: dict[str | None, str] = {}
    for ds, dcfg in sources.items():
        key = "data" if ds is None else f"datasets.{ds}"
        if N_CLASSES[dcfg.target] > TRAINABLE_CLASSES:
            raise ConfigError(
                f"config key '{key}.target': training cannot serve '{dcfg.target}' yet ({N_CLASSES[dcfg.target]} "
                f"label values); it trains: {', '.join(t for t, n in N_CLASSES.items() if n <= TRAINABLE_CLASSES)}"
            )
        fps[ds] = data_fingerprint(dcfg, prep, data_content if ds is None else (dataset_content or {}).get(ds))
    data, data_fp = sources[None], fps[None]
    splits = SplitConfig.from_config(cfg)
    amp = ResourceConfig.from_config(cfg).hashed_amp
    cells: dict[str, Cell] = {}
    studies: dict[str, Study] = {}
    split_specs: dict[str | None, dict[str, dict]] = {ds: {} for ds in sources}
    by_params: dict[str, str] = {}  # params digest → cell id (memo: identical cells resolve once)
    defaults = cell_defaults()

    for name in planning_order(cfg):  # a study that initialises from another is planned after it
        spec = cfg["studies"][name]
        ds = spec.get("data")
        base = study_base(cfg, name)
        mode_key = f"studies.{name}.mode"
        mode = SEARCH_MODES.entry(spec.get("mode", "grid"), key=mode_key).obj
        traits = mode_traits(spec.get("mode", "grid"), key=mode_key)
        pts, order = mode(name, spec, base, preset.get("axes_limit"))
        axes = tuple(order)  # the spec's axes (an adaptive mode may add one, e.g. optuna's "trial")
        layout = TableLayout(
            rows=tuple(spec["table"]["rows"]),
            cols=tuple(spec["table"]["cols"]),
            value=spec["table"].get("value", "val_dice_patient"),
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
                    check_backbone_keys(name, spec.get("base") or {}, p, d, defaults)
                    resolve_init_from(name, d, studies)
                    if preset.get("cell"):
                        d = deep_merge(d, preset["cell"])
                    key = digest(d if ds is None else [d, ds], 24)
                    cid = by_params.get(key)
                    if cid is None:
                        cell, spec_ = resolve_cell(name, d, splits=splits, data_fp=fps[ds], amp=amp, dataset=ds)
                        cid = by_params[key] = cell.id
                        cell = cells.setdefault(cid, cell)  # the same data under two names: one cell
                        split_specs[cell.dataset][cell.split] = spec_
                    rows.append(StudyCell(cid, labels, r, f))
        if not pts and traits.adaptive:  # trials become cells in rounds; their split is the base's
            d = deep_merge(base, preset.get("cell") or {})
            cell, spec_ = resolve_cell(name, {**d, "fold": None}, splits=splits, data_fp=data_fp, amp=amp)
            split_specs[None][cell.split] = spec_
        studies[name] = Study(
            name=name,
            title=spec.get("title", name),
            description=spec.get("description", ""),
            mode=spec.get("mode", "grid"),
            axes=axes,
            table=layout,
            cells=tuple(rows),
            axis_values={a: tuple(dict.fromkeys(format_value(v) for v in order[a])) for a in axes},
            dataset=ds,
            adaptive=traits.adaptive,
            ordered=traits.ordered,
        )
    studies = {n: studies[n] for n in cfg["studies"]}  # config order (planning order may differ)
    _check_init_from_targets(cells, studies, {ds: c.target for ds, c in sources.items()})
    # build each distinct loss/schedule/optimizer/... once: bad values fail now (a binary-only loss for multiclass too)
    check_plan(
        cells,
        studies,
        n_classes={cid: N_CLASSES[sources[c.dataset].target] for cid, c in cells.items()},
        image_size=prep.size,
    )
    for ds, dcfg in sources.items():
        if dcfg.source == "phantom":
            _check_splits(dcfg.phantom.patients, split_specs[ds], "data" if ds is None else f"datasets.{ds}")
    extra = {ds: Dataset(ds, sources[ds], fps[ds], split_specs[ds]) for ds in sources if ds is not None}
    return Plan(data, prep, splits, ResourceConfig.from_config(cfg), cells, studies, split_specs[None], data_fp, extra)


def _dataset_words(ds: str | None, target: str) -> str:
    return f"{'the default data set `data`' if ds is None else f'data set {ds!r}'}, target {target}"


def _check_init_from_targets(
    cells: Mapping[str, Cell], studies: Mapping[str, Study], targets: Mapping[str | None, str]
) -> None:
    """``init_from`` across data sets needs the source's target (ConfigError naming both studies otherwise).

    A multi-class network ends in a softmax over background + classes and a binary one in one sigmoid channel,
    so their weights do not fit each other (the architecture check sees one target per plan and would not
    notice). Two binary targets (endo → myo) would load, but the output channel would be retrained for another
    structure from a source selected for the first one; that is refused too rather than passed off as
    fine-tuning (within one data set the target is one, so nothing changes there)."""
    where: dict[str, str] = {}
    for name, study in studies.items():
        for sc in study.cells:
            where.setdefault(sc.cell_id, name)
    for cid, cell in cells.items():
        for src in source_cells(cell.params):
            if src not in cells:
                continue  # named by check_plan
            a, b = cells[src].dataset, cell.dataset
            if a != b and targets[a] != targets[b]:
                raise ConfigError(
                    f"study '{where.get(cid, '?')}' ({_dataset_words(b, targets[b])}): config key 'init_from': "
                    f"its source, cell '{src}' of study '{where.get(src, '?')}' ({_dataset_words(a, targets[a])}), "
                    "was trained for another target; init_from across data sets needs the same target "
                    "(binary and multiclass networks have different output layers)"
                )


def study_base(cfg: Mapping, name: str) -> dict:
    """A study's base cell: the config's ``train`` + the split seed + the study's ``base``."""
    base = deep_merge(cfg["train"], {"split_seed": SplitConfig.from_config(cfg).seed})
    return deep_merge(base, cfg["studies"][name].get("base") or {})


def resolve_cell(
    study: str, d: Mapping, *, splits: SplitConfig, data_fp: str, amp: bool, dataset: str | None = None
) -> tuple[Cell, dict]:
    """One fully merged cell dict → (its ``Cell``, its split's spec); ConfigError names the study."""
    f = d.get("fold")
    try:
        params = CellParams.from_config(d)
    except ConfigError as exc:
        raise ConfigError(f"study '{study}': {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"config key 'studies.{study}': cannot resolve a cell ({exc!r})") from None
    sname = f"seed{params.split_seed}" + (f"-cv{splits.folds}" if f is not None else "")
    sspec = {
        "seed": params.split_seed,
        "val_fraction": splits.val_fraction,
        "folds": splits.folds if f is not None else None,
    }
    if splits.test_fraction > 0:  # absent otherwise: split params unchanged (no rerun)
        sspec["test_fraction"] = splits.test_fraction
    cid = cell_id(params, data_fp, split_fingerprint(splits, params.split_seed, f is not None), amp)
    return Cell(cid, params, sname, dataset), sspec


def _check_splits(n_patients: int, split_specs: Mapping[str, dict], key: str = "data") -> None:
    """The phantom's patient count is known before ingest: split it now, so that e.g. 5 folds of 4 patients
    stop the dry run (for real data the same check runs in the split job, once the patients are known)."""
    ids = [f"p{i:08x}" for i in range(n_patients)]
    for spec in split_specs.values():
        try:
            make_split(ids, spec["seed"], spec["val_fraction"], spec["folds"], spec.get("test_fraction", 0.0))
        except DataError as exc:
            raise ConfigError(f"{exc} ({key}.phantom.patients is {n_patients})") from None


# ------------------------------------------------------------------------------------------ identity
def cell_id(params: CellParams, data_fp: str, split_fp: dict, amp: bool = False) -> str:
    """12 hex of sha256 over canonical JSON of the cell's identity form (docs/architecture.md, "Cell ids").

    bf16 autocast asked for by ``resources.amp: true`` changes the numbers a run produces, so it is part of the
    identity (only when on: runs without it keep their ids); ``amp: auto`` (the default: bf16 where the
    training GPU supports it) is decided at job time like the device, so neither is hashed; device, threads
    and channels_last are recorded (metrics.json ``execution``), not hashed.
    """
    ident = {"params": params.id_form(), "data": data_fp, "split": split_fp}  # a weights file by its sha256
    if amp:
        ident["amp"] = True
    return digest(ident)


def data_fingerprint(data: DataConfig, prep: PreprocessConfig, content: str | None = None) -> str:
    """What the ingested data depend on: the source's content (real data: the root's content manifest,
    whatever the path is spelled like; the phantom: its settings), the target, the pseudonym key (it orders
    the split), the layout's own options off their defaults (``roi_map``, ``label_map``: which structure
    becomes which mask) and the preprocessing. ``data.strict`` only decides whether a bad file stops the run."""
    ident = {"source": data.source, "target": data.target, "pseudonym_key": data.pseudonym_key}
    ident.update(data.options)  # empty at the defaults: ids of configs without custom maps are unchanged
    if data.source == "phantom":
        ident["phantom"] = identity(data.phantom)
    else:
        ident["content"] = content
    return digest({"data": ident, "preprocess": identity(prep)})


def split_fingerprint(split: SplitConfig, split_seed: int, cv: bool) -> dict:
    fp = {"seed": split_seed, "val_fraction": split.val_fraction}
    if cv:
        fp["folds"] = split.folds
    if split.test_fraction > 0:  # only then: cells without a test set keep their ids
        fp["test_fraction"] = split.test_fraction
    return fp
