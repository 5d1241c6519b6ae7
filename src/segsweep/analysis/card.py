"""Which trained model to use, and its model card (docs/predict.md).

**Selection** (`resolve_model`, the ``predict.model`` key; the model card of a study uses the same rule):

* a **study name**: the study's configuration selected on validation (its table's best, `ranking.ranked` on
  the table value, as in the report's Test set section);
* ``best``: the report's overall validation-selected configuration: the selected configuration of every
  study, then, among the studies that rank by the table value most of them use (the report's
  ``overall_sentence``: ties keep the first study), the best mean of that value (`ranking.rank_key`: fully
  finished configurations first, then the mean in the study's direction); ties keep the first study;
* a **cell id** (12 hex digits): that cell, which must have finished ``ok``.

A configuration can have several runs (training seeds, folds): its weights are those of the ``ok`` run with
the best value of the table value (ties: the first run in cells.csv order). Test numbers are read, never used
to choose.

**Model card** (`study_card`, `card_markdown`, `card_context`): per study, from files the pipeline wrote
(dataset.json, the split, cells.csv, table.json, the cell's metrics.json and per_patient.csv, best.pt):
the training data (counts only, no identifiers), the selected configuration, validation and test metrics
with 95 % patient-bootstrap intervals (`testset.patient_bootstrap` over the run's per-patient values; the
table value also with the study table's interval), the worst validation patients (lowest per-patient
Dice), intended use and limitations, and the weights' path and sha256. Patients appear only as the
pseudonyms of results/data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from segsweep import __version__
from segsweep.analysis.ranking import rank_key, ranked
from segsweep.analysis.study_results import read_study
from segsweep.analysis.testset import MIN_PATIENTS, patient_bootstrap
from segsweep.data.config import dataset_root
from segsweep.data.splits import select_patients
from segsweep.errors import ConfigError, DataError
from segsweep.io import sha256_file, write_text
from segsweep.labels import ConfigNames, fmt
from segsweep.paths import BEST_CHECKPOINT, CELLS_SUB, METRICS, PER_PATIENT, STUDIES_SUB, TABLE_JSON, cell_file
from segsweep.study import check_one_dataset
from segsweep.training.record import CellMetrics

if TYPE_CHECKING:
    from segsweep.study import Study

CELL_ID = re.compile(r"^[0-9a-f]{12}$")
# (metrics.json key without val_/test prefix, per_patient.csv column or None, label): the card's metric rows
CARD_ROWS = (
    ("dice_patient", "dice", "Dice per patient"),
    ("dice", None, "Dice per slice"),
    ("hd95_mm_patient", "hd95_mm", "HD95 per patient (mm)"),
    ("nsd_patient", "nsd", "NSD per patient"),
)
N_WORST = 3
TARGET_WORDS = {
    "endo": "left-ventricular cavity (inside the endocardial contour)",
    "epi": "left ventricle inside the epicardial contour (cavity and myocardium)",
    "myo": "left-ventricular myocardium (between the endocardial and epicardial contours)",
    "multiclass": "left-ventricular cavity (class 1) and myocardium (class 2)",
}


@dataclass(frozen=True)
class Selection:
    """A model chosen for prediction or described by a model card."""

    cell: str
    study: str | None = None  # the study whose validation selected it (None: a cell id given directly)
    config: str | None = None  # the configuration's name in that study
    labels: Mapping[str, str] = field(default_factory=dict)
    value: str | None = None  # the table value the study ranks by
    mean: float | None = None  # the configuration's mean of it (over its ok runs)
    run_value: float | None = None  # the chosen run's own value
    how: str = ""  # one sentence: why this cell


# -------------------------------------------------------------------------------------- selection
def study_groups(study: Study, results_dir: Path) -> tuple[list[dict], dict]:
    """The study's configurations (`configs.config_groups`, intervals from table.json) and its table.json."""
    res = read_study(study, Path(results_dir) / STUDIES_SUB / study.name)
    return res.groups, res.table


def selected_run(group: Mapping, higher_is_better: bool) -> dict | None:
    """The ``ok`` run of a configuration with the best table value (ties: the first), or None."""
    runs = [r for r in group["runs"] if r["status"] == "ok" and r["value"] is not None]
    if not runs:
        return None
    sign = 1.0 if higher_is_better else -1.0
    return max(runs, key=lambda r: sign * r["value"])  # max keeps the first of equals


def select_in_study(study: Study, results_dir: Path) -> Selection | None:
    """The study's validation-selected configuration and its best run, or None when no run finished."""
    groups, _ = study_groups(study, results_dir)
    higher = study.table.higher_is_better
    for g in ranked(groups, higher):  # the first configuration with an ok run (ranked ones have a mean)
        run = selected_run(g, higher)
        if run is None:
            continue
        labels = dict(g["labels"])
        n_ok = sum(r["status"] == "ok" for r in g["runs"])
        return Selection(
            cell=run["cell"],
            study=study.name,
            config=g["config"],
            labels=labels,
            value=study.table.value,
            mean=g["mean"],
            run_value=run["value"],
            how=(
                f"selected on validation in study '{study.name}' ({study.table.value} "
                f"{fmt(g['mean'], study.table.value)}, mean of {_plural(g['n'], 'run')}); the best of its "
                f"{_plural(n_ok, 'ok run')}"
            ),
        )
    return None


def select_best(studies: Sequence[Study], results_dir: Path) -> Selection:
    """``best``: the overall validation-selected configuration across studies (module docstring)."""
    check_one_dataset(studies)
    picks = []
    for s in studies:
        sel = select_in_study(s, results_dir)
        if sel is not None:
            picks.append((s, sel))
    if not picks:
        raise DataError("predict.model 'best': no study has a finished (ok) run to use")
    value = Counter(s.table.value for s, _ in picks).most_common(1)[0][0]
    cands = [(s, sel) for s, sel in picks if s.table.value == value]
    higher = cands[0][0].table.higher_is_better

    def key(t):
        g = {"mean": t[1].mean, "status": "ok"}
        return rank_key(g, higher)

    s, sel = max(cands, key=key)
    return dataclasses.replace(sel, how=f"best of {len(cands)} studies ranking by {value}: " + sel.how)


def resolve_model(spec: str, studies: Sequence[Study], results_dir: Path) -> Selection:
    """``predict.model``: ``best``, a study name or a cell id → the `Selection` (raises ConfigError/DataError)."""
    spec = str(spec).strip()
    by_name = {s.name: s for s in studies}
    if spec == "best":
        return select_best(studies, results_dir)
    if spec in by_name:
        sel = select_in_study(by_name[spec], results_dir)
        if sel is None:
            raise DataError(f"predict.model '{spec}': no run of study '{spec}' finished ok")
        return sel
    if CELL_ID.match(spec):
        path = Path(results_dir) / CELLS_SUB / spec / METRICS
        try:
            m = CellMetrics.read(path)
        except (FileNotFoundError, DataError):
            raise DataError(f"predict.model '{spec}': {path} not found (train the cell first)") from None
        if m.status not in ("ok", "collapsed"):  # diverged / failed cells have no model to use
            raise DataError(f"predict.model '{spec}': the cell's status is '{m.status}': it has no model ({path})")
        note = "" if m.status == "ok" else f"; WARNING: its status is {m.status} ({m.reason})"
        return Selection(cell=spec, how=f"cell {spec} (given by id){note}")
    raise ConfigError(
        f"config key 'predict.model': '{spec}' is neither 'best', a study ({', '.join(by_name) or 'none'}) "
        "nor a cell id (12 hex digits)"
    )


# ------------------------------------------------------------------------------------------- card
def _weights_sha256(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _per_patient(cell_dir: Path) -> pd.DataFrame | None:
    try:
        df = pd.read_csv(cell_dir / PER_PATIENT, dtype={"patient": str, "set": str})
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    return df if "set" in df.columns else None


def _ci(values: Sequence[float], seed: Sequence[int]) -> tuple[float, float] | None:
    return patient_bootstrap([float(v) for v in values if v is not None and math.isfinite(float(v))], seed=seed)


def _split_counts(splits: Path, params: Mapping) -> dict | None:
    """Training / validation / test patients of the cell's split in the folder ``splits`` (None if the split
    file is absent)."""
    seed, fold = params.get("split_seed", 0), params.get("fold")
    splits = Path(splits)
    files = [splits / f"seed{seed}.json"] if fold is None else sorted(splits.glob(f"seed{seed}-cv*.json"))
    split = _read_json(files[0]) if files else None
    if not split:
        return None
    try:
        train, val = select_patients(split, float(params.get("fraction", 1.0)), fold)
    except (KeyError, DataError, IndexError):
        return None
    return {"train": len(train), "val": len(val), "test": len(split.get("test", []))}


def study_card(
    study: Study, results_dir: Path, seed: int = 0, data_dir: Path | None = None, splits_dir: Path | None = None
) -> dict:
    """The model card of one study as a dict (what `card_markdown` and the report's section show).
    ``data_dir`` / ``splits_dir``: the study's ingested data and split folders (the rules pass the keyed
    folders of the default data set); default: ``data`` and ``splits`` under the study's data-set root."""
    results_dir = Path(results_dir)
    card: dict[str, Any] = {"study": study.name, "title": study.title, "version": __version__}
    data_root = dataset_root(results_dir, study.dataset)  # the study's data set (config key `datasets`)
    data_dir = Path(data_dir) if data_dir is not None else data_root / "data"
    splits_dir = Path(splits_dir) if splits_dir is not None else data_root / "splits"
    dataset = _read_json(data_dir / "dataset.json") or {}
    card["data"] = {
        "dataset": study.dataset,
        "source": dataset.get("source"),
        "layout": dataset.get("layout"),
        "target": dataset.get("target"),
        "target_words": TARGET_WORDS.get(dataset.get("target"), dataset.get("target") or "–"),
        "n_classes": dataset.get("n_classes"),
        "size": dataset.get("size"),
        "n_patients": len(dataset.get("patients") or []),
        "n_images": dataset.get("n_images"),
    }
    try:
        sel = select_in_study(study, results_dir)
    except DataError:
        sel = None
    card["selection"] = sel
    if sel is None:
        card["ok"] = False
        return card
    card["ok"] = True
    cell_dir = results_dir / CELLS_SUB / sel.cell
    m = CellMetrics.read(cell_dir / METRICS)
    params = dict(m.params or {})
    card["params"] = params
    groups, table = study_groups(study, results_dir)
    card["config"] = ConfigNames.of_table(table).name(sel.labels)  # as the report's tables name it
    card["split"] = _split_counts(splits_dir, params)
    card["metrics"] = m
    weights = cell_dir / BEST_CHECKPOINT
    card["weights"] = {"path": cell_file(sel.cell, BEST_CHECKPOINT), "sha256": _weights_sha256(weights)}
    card["best_epoch"], card["epochs_run"] = m.best_epoch, m.epochs_run
    card["n_train"], card["n_val"] = m.n_train, m.n_val

    g = next(x for x in groups if x["config"] == sel.config)
    card["table_value"] = {
        "key": sel.value,
        "mean": g["mean"],
        "n": g["n"],
        "ci_low": g.get("ci_low"),
        "ci_high": g.get("ci_high"),
        "ci_note": g.get("ci_note"),
        "run_value": sel.run_value,
    }
    pp = _per_patient(cell_dir)
    stream = int(hashlib.sha256(f"card:{study.name}".encode()).hexdigest()[:8], 16)
    rows = []
    for k, (key, col, label) in enumerate(CARD_ROWS):
        row = {"key": key, "label": label}
        for part, values in (("val", _val(m, key)), ("test", (m.test or {}).get(key))):
            row[part] = values
            ci = None
            if col is not None and pp is not None and col in pp.columns:
                sub = pd.to_numeric(pp.loc[pp["set"] == part, col], errors="coerce").dropna()
                ci = _ci(sub.to_list(), [int(seed), 3, stream, k, int(part == "test")])
            row[f"{part}_ci"] = ci
        rows.append(row)
    card["rows"] = rows
    card["val_n"] = {k: getattr(m, f"val_{k}", None) for k in ("n_patients", "n_slices", "n_one_empty")}
    card["test_n"] = {k: (m.test or {}).get(k) for k in ("n_patients", "n_slices", "n_one_empty")} if m.test else None
    worst = []
    if pp is not None and "dice" in pp.columns:
        val = pp[pp["set"] == "val"].copy()
        val["dice"] = pd.to_numeric(val["dice"], errors="coerce")
        for r in val.sort_values(["dice", "patient"], na_position="first").head(N_WORST).to_dict("records"):
            worst.append(
                {
                    "patient": r["patient"],
                    "n_slices": int(r["n_slices"]) if not pd.isna(r.get("n_slices")) else None,
                    **{c: None if pd.isna(r.get(c)) else float(r[c]) for c in ("dice", "hd95_mm", "nsd")},
                }
            )
    card["worst"] = worst
    card["postprocessing"] = postprocessing_summary(_read_json(results_dir / STUDIES_SUB / study.name / TABLE_JSON))
    card["limitations"] = _limitations(card)
    return card


def postprocessing_summary(table: Mapping | None) -> dict:
    """The post-processing of a study's model, from table.json ``final`` (`segsweep.analysis.final`):
    ``name``, ``description``, ``rule`` and, for the selected configuration's runs (means), validation and
    test Dice / HD95 per patient before (``none``) and after it; name "none" and no numbers for older files."""
    final = (table or {}).get("final") or {}
    name = final.get("chosen") or "none"
    out = {"name": name, "description": final.get("chosen_description") or "no post-processing"}
    out["rule"] = final.get("rule")
    cands = {c["name"]: c for c in final.get("candidates") or []}
    tests = {k: {r["key"]: r.get("value") for r in rows} for k, rows in (final.get("test") or {}).items()}
    out["numbers"] = (
        [
            {
                "key": key,
                "label": label,
                "val_before": (cands.get("none") or {}).get(key),
                "val_after": (cands.get(name) or {}).get(key),
                "test_before": (tests.get("none") or {}).get(key),
                "test_after": (tests.get(name) or {}).get(key),
            }
            for key, label in (("dice_patient", "Dice per patient"), ("hd95_mm_patient", "HD95 per patient (mm)"))
        ]
        if cands
        else []
    )
    out["n_runs"] = final.get("n_runs")
    return out


def _val(m: CellMetrics, key: str) -> float | None:
    return getattr(m, f"val_{key}", None)


def _limitations(card: Mapping) -> list[str]:
    d, out = card["data"], []
    if d["source"] == "phantom":
        out.append(
            "Trained on a synthetic phantom, not on patient images: it has never seen real anatomy, pathology, "
            "artefacts or scanner variation, and its numbers say nothing about clinical performance."
        )
    else:
        out.append(
            f"Trained on one data source ({d['layout']}): other scanners, sequences, field strengths, sites and "
            "patient groups may perform worse."
        )
    vn = (card.get("val_n") or {}).get("n_patients")
    tn = (card.get("test_n") or {}).get("n_patients") if card.get("test_n") else 0
    if vn is not None and vn < 10:
        out.append(
            f"Chosen on {_plural(vn, 'validation patient')}: the selection is noisy and its validation number "
            "optimistic (compare the test column)."
        )
    if not tn:
        out.append("No test set was held out: no number here is an unbiased estimate on new patients.")
    elif tn < MIN_PATIENTS:
        out.append(f"{_plural(tn, 'test patient')}: too few for an interval; the test numbers are anecdotal.")
    out.append(
        "2-D and slice by slice: no consistency across slices or cardiac phases is enforced; volumes are sums of "
        "slice areas times the slice spacing (no partial-volume or basal-slice correction)."
    )
    out.append(f"Segments only the {d['target_words']}; the right ventricle and other structures are not segmented.")
    return out


def _num(x: float | None, key: str) -> str:
    return fmt(x, key)


def _ci_text(ci: tuple[float, float] | None, key: str) -> str:
    return "–" if ci is None else f"{fmt(ci[0], key)}–{fmt(ci[1], key)}"


def card_markdown(card: Mapping) -> str:
    """The model card as markdown (results/studies/<study>/model_card.md)."""
    lines = [f"# Model card: {card['title']}", ""]
    lines.append(f"Study `{card['study']}`; generated by segsweep {card['version']} from the pipeline's results.")
    lines.append("")
    d = card["data"]
    if not card["ok"]:
        lines += ["No run of this study finished ok: there is no model to describe.", ""]
        return "\n".join(lines)
    sel, p = card["selection"], card["params"]
    arch = p.get("model", "unet")
    arch = f"U-Net, depth {p.get('depth')}, base width {p.get('base_width')}" if arch == "unet" else arch
    lines += [
        "## Model",
        "",
        f"- Configuration {card['config']}, {sel.how}.",
        f"- Cell `{sel.cell}`: {arch}, batch norm {'on' if p.get('batch_norm') else 'off'}, "
        f"{_plural(p.get('in_channels'), 'input channel')}; loss {_loss(p.get('loss'))}, optimizer "
        f"{p.get('optimizer')}, learning rate {p.get('lr')}, batch size {p.get('batch_size')}; "
        f"best epoch {card['best_epoch']} of {card['epochs_run']}.",
        f"- Weights: `{card['weights']['path']}`, sha256 `{card['weights']['sha256'] or 'file missing'}`.",
        "",
        "## Training data",
        "",
        f"- Source: {d['source']} (layout {d['layout']}); target: {d['target']}, the {d['target_words']}"
        + (f"; data set `{d['dataset']}` (config key `datasets`)." if d.get("dataset") else "."),
        f"- Data set after quality control: {_plural(d['n_patients'], 'patient')}, "
        f"{_plural(d['n_images'], 'contoured slice')}, resized to {_size(d['size'])} pixels.",
    ]
    sp = card.get("split")
    who = f" ({_plural(sp['train'], 'patient')})" if sp else ""
    lines.append(
        f"- This model: {_plural(card['n_train'], 'training slice')}{who}, "
        f"{_plural(card['n_val'], 'validation slice')} ({_plural((card['val_n'] or {}).get('n_patients'), 'patient')})"
        + (f"; {_plural(sp['test'], 'test patient')} held out." if sp and sp["test"] else "; no test set held out.")
    )
    lines += ["- Patients appear only as pseudonyms; no image, name, ID or date is part of this card.", ""]
    tv = card["table_value"]
    lines += ["## Performance", ""]
    ci = (
        f"95 % CI {fmt(tv['ci_low'], tv['key'])}–{fmt(tv['ci_high'], tv['key'])}"
        if tv["ci_low"] is not None
        else (tv["ci_note"] or "no interval")
    )
    lines += [
        f"Selection value {tv['key']}: {fmt(tv['mean'], tv['key'])} (mean of {_plural(tv['n'], 'run')}; {ci}, study table); "
        f"this run {fmt(tv['run_value'], tv['key'])}.",
        "",
        "Native resolution, this run; intervals: 95 % percentile bootstrap over patients (none below "
        f"{MIN_PATIENTS} patients, none per slice).",
        "",
        "| metric | validation | 95 % CI | test | 95 % CI |",
        "|---|---|---|---|---|",
    ]
    for r in card["rows"]:
        lines.append(
            f"| {r['label']} | {_num(r['val'], r['key'])} | {_ci_text(r['val_ci'], r['key'])} | "
            f"{_num(r['test'], r['key'])} | {_ci_text(r['test_ci'], r['key'])} |"
        )
    post = card.get("postprocessing") or {}
    if post:
        lines += ["", "## Post-processing", ""]
        lines.append(
            f"Chosen for this model's label maps (`predict` applies it, read from the study's table.json): "
            f"{post['description']} (`{post['name']}`)" + (f"; {post['rule']}." if post.get("rule") else ".")
        )
        if post.get("numbers"):
            lines += [
                "",
                f"Means over the selected configuration's {_plural(post['n_runs'], 'run')}, before → after:",
                "",
                "| metric | validation | test |",
                "|---|---|---|",
            ]
            for r in post["numbers"]:
                lines.append(
                    f"| {r['label']} | {_num(r['val_before'], r['key'])} → {_num(r['val_after'], r['key'])} | "
                    f"{_num(r['test_before'], r['key'])} → {_num(r['test_after'], r['key'])} |"
                )
        lines.append("")
        lines.append("The metrics table above is the network's raw output (no post-processing).")
    lines += ["", "## Failure modes seen", ""]
    vn = card["val_n"] or {}
    lines.append(
        f"Worst validation patients (lowest per-patient Dice); {vn.get('n_one_empty') or 0} of "
        f"{vn.get('n_slices')} validation slices had exactly one empty mask (a missed or hallucinated structure)."
    )
    lines += ["", "| patient | slices | Dice | HD95 (mm) | NSD |", "|---|---|---|---|---|"]
    for w in card["worst"]:
        lines.append(
            f"| {w['patient']} | {w['n_slices']} | {fmt(w['dice'], 'dice')} | {fmt(w['hd95_mm'], 'hd95')} | "
            f"{fmt(w['nsd'], 'nsd')} |"
        )
    lines += [
        "",
        "## Intended use",
        "",
        "Research: segmenting the "
        + d["target_words"]
        + " in short-axis cine MR slices like the training data, and measuring areas and volumes from them "
        "(`snakemake predict`, docs/predict.md). Not a medical device: not for diagnosis or treatment decisions; "
        "every contour must be reviewed by a qualified reader.",
        "",
        "## Limitations",
        "",
    ]
    lines += [f"- {x}" for x in card["limitations"]]
    return "\n".join(lines) + "\n"


def _loss(loss: Any) -> str:
    """'dice + bce', '0.5·dice + bce' from the loss terms of CellParams.to_dict()."""
    terms = loss.get("terms", [loss]) if isinstance(loss, Mapping) else loss
    if not isinstance(terms, (list, tuple)):
        return str(loss)
    out = []
    for t in terms:
        if not isinstance(t, Mapping):
            out.append(str(t))
            continue
        w = t.get("weight", 1.0)
        out.append(str(t.get("name")) if w == 1 else f"{w:g}·{t.get('name')}")
    return " + ".join(out)


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _size(size: Any) -> str:
    return f"{size[0]} × {size[1]}" if size else "–"


def write_model_card(
    study: Study,
    results_dir: Path,
    out: Path,
    seed: int = 0,
    data_dir: Path | None = None,
    splits_dir: Path | None = None,
) -> dict:
    """Write results/studies/<study>/model_card.md; returns the card."""
    card = study_card(study, Path(results_dir), seed, data_dir, splits_dir)
    write_text(out, card_markdown(card))
    return card


def card_context(
    studies: Sequence[Study],
    results_dir: Path,
    config: Mapping,
    data_dir: Path | None = None,
    splits_dir: Path | None = None,
) -> list[dict]:
    """The report's "Model cards" section: one card per study, with its table rows as text; ``data_dir`` /
    ``splits_dir``: the default data set's folders (studies on a named data set use theirs)."""
    seed = int(config.get("seed", 0) or 0)
    out = []
    for s in studies:
        folders = (data_dir, splits_dir) if s.dataset is None else (None, None)
        try:
            c = study_card(s, Path(results_dir), seed, *folders)
        except (DataError, OSError, KeyError, StopIteration):
            c = {"study": s.name, "title": s.title, "ok": False}
        if c["ok"]:
            c["rows_text"] = [
                {
                    "label": r["label"],
                    "val": _num(r["val"], r["key"]),
                    "val_ci": _ci_text(r["val_ci"], r["key"]),
                    "test": _num(r["test"], r["key"]),
                    "test_ci": _ci_text(r["test_ci"], r["key"]),
                }
                for r in c["rows"]
            ]
            c["worst_text"] = [
                {**w, "dice": fmt(w["dice"], "dice"), "hd95_mm": fmt(w["hd95_mm"], "hd95"), "nsd": fmt(w["nsd"], "nsd")}
                for w in c["worst"]
            ]
        out.append(c)
    return out
