"""The report: one self-contained HTML file (figures, CSS and a small sort script inlined; no network) and an
A4 PDF of the same document (WeasyPrint).

`render_report` only reads files the earlier steps wrote:

* ``dataset.json`` and ``qc.csv`` of the default data set's ``results/data/<key>/``, its split files
  ``results/splits/<key>/*.json`` and its figures ``results/figures/data/<key>/`` (`segsweep.data.config.DataFolders`;
  the rule passes them; without them ``results/data``, ``results/splits/*.json``, ``results/figures/data``)
* ``results/datasets/<name>/data/{dataset.json, qc.csv}`` of each extra data set a study uses (counts only)
* the data figures' ``figures.json`` (+ figures) from `plots.make_data_figures`
* per study ``results/studies/{study}/{cells.csv, table.json, stats.json}`` from `aggregate.aggregate_study`
  and ``results/studies/{study}/figures/figures.json`` (+ figures) from `plots.make_study_figures`

Every sentence of the summary is generated from these numbers. Only pseudonymous patient ids appear.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from segsweep.analysis import card
from segsweep.analysis.ranking import ranked
from segsweep.analysis.stats import ALPHA, UNIT_WORDS, describe_p, holm_text, interval_units
from segsweep.analysis.study_results import read_study
from segsweep.data.config import dataset_root
from segsweep.data.splits import n_train
from segsweep.errors import DataError
from segsweep.io import write_text
from segsweep.labels import ConfigNames, fmt, label_number
from segsweep.paths import CELLS_SUB, METRICS, STATS_JSON, STUDIES_SUB
from segsweep.report import pdf
from segsweep.report.evidence import evidence
from segsweep.report.provenance import pretrained_rows
from segsweep.report.style import label_for
from segsweep.training.record import CellMetrics

if TYPE_CHECKING:
    from segsweep.study import Study

DATA_FIGURES = Path("figures") / "data"
MAX_RUN_ROWS = 2000  # per-run provenance rows; beyond this the table points to cells.csv


# ----------------------------------------------------------------------------------------- helpers
def duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def mean_ci_text(g: Mapping, value: str) -> str:
    """'0.820 (95 % bootstrap CI 0.770–0.870 over 3 runs × 8 patients)', or '0.820 (n = 1; no interval: 2
    validation patients (needs ≥ 3))' (docs/statistics.md)."""
    if g.get("mean") is None:
        return g.get("status", "–")
    if g.get("ci_low") is None:
        return f"{fmt(g['mean'], value)} (n = {g['n']}; {g.get('ci_note') or 'no interval'})"
    return (
        f"{fmt(g['mean'], value)} (95 % bootstrap CI {fmt(g['ci_low'], value)}–{fmt(g['ci_high'], value)} "
        f"over {interval_units(g)})"
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


_ID_RE = re.compile(r'\bid="([^"]+)"')


def inline_svg(text: str, prefix: str) -> Markup:
    """An SVG file as inline markup: XML prolog dropped, ids prefixed so several figures can share a page."""
    text = re.sub(r"^.*?(?=<svg\b)", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = _ID_RE.sub(lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m.group(1)}"', text)
    text = text.replace("<svg ", '<svg role="img" ', 1)
    return Markup(text)


def figure_html(path: Path, prefix: str, alt: str) -> Markup:
    if path.suffix == ".svg":
        return inline_svg(path.read_text(), prefix)
    from PIL import Image

    with Image.open(path) as im:  # show the PNG at its physical size (pixels / dpi), like the SVGs
        dpi = float((im.info.get("dpi") or (96, 96))[0]) or 96.0
        width = round(im.width * 96 / dpi)
    data = base64.b64encode(path.read_bytes()).decode()
    mime = "image/png" if path.suffix == ".png" else "image/jpeg"
    return Markup(f'<img src="data:{mime};base64,{data}" width="{width}" alt="{escape(alt)}">')


def load_figures(fig_dir: Path, prefix: str) -> list[dict]:
    """Figures listed in ``figures.json`` of a figures folder, with their HTML (missing folder: [])."""
    index = fig_dir / "figures.json"
    if not index.exists():
        return []
    out = []
    for i, f in enumerate(json.loads(index.read_text()).get("figures", [])):
        p = fig_dir / f["file"]
        if p.exists():
            out.append(
                {**f, "html": figure_html(p, f"{prefix}{i}-", f.get("title", f["file"])), "id": f"{prefix}{f['kind']}"}
            )
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run the aggregate step first)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg})") from None


# ------------------------------------------------------------------------------------------- study
@dataclass
class StudyView:
    study: Any
    cells: pd.DataFrame
    groups: list[dict]
    table: dict
    stats: dict
    figures: list[dict]
    sentences: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)  # what the study can show (`segsweep.report.evidence`)

    @property
    def name(self) -> str:
        return self.study.name

    @property
    def value(self) -> str:
        return self.study.table.value

    @property
    def best(self) -> dict | None:
        r = ranked(self.groups, self.study.table.higher_is_better)
        return r[0] if r else None

    @property
    def anchor(self) -> str:
        return "study-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.name)

    @property
    def repeats(self) -> int:
        return int(self.cells["repeat"].max()) + 1 if len(self.cells) else 0

    @property
    def folds(self) -> int:
        f = self.cells["fold"].dropna()
        return int(f.max()) + 1 if len(f) else 0

    @property
    def names(self) -> ConfigNames:
        """How this study's tables, figures and sentences name its configurations (from table.json)."""
        return ConfigNames.of_table(self.table)

    def show(self, axis: str, label: str) -> str:
        """An axis label as the study's tables show it (a fraction by its real size, from table.json)."""
        return self.names.value(axis, label)

    def name_of(self, labels: Mapping[str, str]) -> str:
        """A configuration's name, the same in every table, figure and sentence (`ConfigNames.name`)."""
        return self.names.name(labels)

    def axis_values_text(self, axis: str) -> str:
        """'0.2 → 17 % (2 of 12 patients), 1.0 → 100 % (12 of 12 patients)': the config's labels, with the
        real size where the tables show another label."""
        vals = self.study.axis_values.get(axis, ())
        return ", ".join(v if self.show(axis, v) == v else f"{v} → {self.show(axis, v)}" for v in vals)

    def interval_summary(self) -> str:
        """How the study's intervals were made: '3 configurations: resampling runs × validation patients (3 runs
        × 8 patients in 3 validation sets)'; '5 configurations: no interval: 2 validation patients, needs ≥ 3'."""
        by: Counter[str] = Counter()
        for g in self.groups:
            if g["mean"] is None:
                continue
            if g.get("ci_unit"):
                by[f"resampling {UNIT_WORDS[g['ci_unit']]} ({interval_units(g)})"] += 1
            else:
                by[g.get("ci_note") or "no interval"] += 1
        return "; ".join(f"{_plural(n, 'configuration')}: {k}" for k, n in by.items()) or "no configuration finished"

    def config_name(self, config: str) -> str:
        """The name of the configuration whose cells.csv key is ``config`` ('fraction=17 % (2 of 12
        patients), ...')."""
        g = next((g for g in self.groups if g["config"] == config), None)
        return config if g is None else self.name_of(g["labels"])


def failure_sentences(view: StudyView) -> list[str]:
    """'All 3 diverged runs used optimizer sgd (3 of 9 sgd runs).' — attribute non-ok runs to an axis label
    when they all share one; otherwise give the plain count."""
    df = view.cells
    out = []
    for status in ("collapsed", "diverged", "failed"):
        bad = df[df["status"] == status]
        if bad.empty:
            continue
        n, total = len(bad), len(df)
        if n == 1:
            r = bad.iloc[0]
            where = view.name_of({a: r[a] for a in view.study.axes})
            run = f"seed index {r['repeat']}" + (f", fold {r['fold']}" if not pd.isna(r["fold"]) else "")
            why = f": {r['reason']}" if r["reason"] else ""
            out.append(f"One of {total} runs {status} ({where}; {run}){why}.")
            continue
        shared = [(a, bad[a].iloc[0]) for a in view.study.axes if bad[a].nunique() == 1]
        # the most specific shared label: the one with the fewest runs in the study
        shared = [(a, v, int((df[a] == v).sum())) for a, v in shared if (df[a] == v).sum() < total]
        if shared:
            a, v, k = min(shared, key=lambda t: t[2])
            v = view.name_of({a: v})
            out.append(f"{n} of {total} runs {status}, all with {v} ({n} of the {k} runs with {v}).")
        elif (edge := _threshold(df, bad, view.study.axes)) is not None:
            out.append(f"{n} of {total} runs {status}: every run with {edge}.")
        else:
            out.append(f"{n} of {total} runs {status}.")
    return out


def _threshold(df: pd.DataFrame, bad: pd.DataFrame, axes: Sequence[str]) -> str | None:
    """'lr ≥ 0.0448' when the bad runs are exactly the runs at or beyond some value of a numeric axis."""
    for a in axes:
        x = df[a].map(label_number)
        if x.isna().any() or x.nunique() < 3:
            continue
        xb = x[bad.index]
        for op, edge, sel in (("≥", xb.min(), x >= xb.min()), ("≤", xb.max(), x <= xb.max())):
            if sel.sum() == len(bad) and set(df.index[sel]) == set(bad.index):
                return f"{a} {op} {edge:g}"
    return None


def study_sentences(view: StudyView) -> list[str]:
    best = view.best
    value = label_for(view.value)
    if best is None:
        t = view.table
        collapsed = f"{t['n_collapsed']} collapsed, " if t.get("n_collapsed") else ""
        pruned = f"{t['n_pruned']} pruned, " if t.get("n_pruned") else ""
        return [
            f"No run of this study finished: {pruned}{collapsed}{t['n_diverged']} diverged, {t['n_failed']} failed."
        ]
    out = [f"The best configuration is {view.name_of(best['labels'])}: mean {value} {mean_ci_text(best, view.value)}."]
    if best["status"] == "partial":
        out[-1] = out[-1][:-1] + f" ({best['note']})."
    r = ranked(view.groups, view.study.table.higher_is_better)
    if len(r) > 1:
        second = r[1]
        comp = next((c for c in view.stats.get("comparisons", []) if c["other"] == second["config"]), None)
        diff = abs(best["mean"] - second["mean"])
        s = (
            f"The runner-up, {view.name_of(second['labels'])}, reaches {fmt(second['mean'], view.value)} "
            f"({fmt(diff, view.value)} {'lower' if view.study.table.higher_is_better else 'higher'})"
        )
        if comp and comp.get("p") is not None:
            # a claim rests on the Holm-adjusted p over the study's comparisons, never on the raw p
            m = view.stats.get("n_tested") or sum(c.get("p") is not None for c in view.stats.get("comparisons", []))
            p_holm = comp.get("p_holm", comp["p"])
            s += f"; paired Wilcoxon over {comp['n_pairs']} seeds/folds, {holm_text(p_holm, m)}"
            if comp["note"].startswith("too few pairs"):  # said once, with the numbers, on the study's page
                s += ", too few pairs for the test to show any difference"
            elif p_holm >= ALPHA:
                s += ", so the difference is not established"
            else:
                s += f", a difference at the {ALPHA:g} level"
        elif comp:
            s += f" ({comp['note']})"
        out.append(s + ".")
    out += failure_sentences(view)
    return out


def load_study(study: Study, results_dir: Path) -> StudyView:
    d = results_dir / STUDIES_SUB / study.name
    res = read_study(study, d)
    view = StudyView(
        study=study,
        cells=res.cells,
        groups=res.groups,
        table=res.table,
        stats=_read_json(d / STATS_JSON),
        figures=load_figures(d / "figures", f"f-{study.name}-"),
    )
    view.sentences = study_sentences(view)
    pair = "seeds/folds" if view.repeats > 1 and view.folds else "folds" if view.folds else "seeds"
    view.evidence = evidence(
        view.groups,
        higher_is_better=study.table.higher_is_better,
        value=view.value,
        cells_dir=results_dir / "cells",
        unit=pair,
    )
    return view


# ------------------------------------------------------------------------------------------ tables
def table_html_rows(view: StudyView) -> dict:
    """Header and body of the layout table, each body cell with its CSS classes and sort key."""
    t = view.table
    rows = []
    for row, line in zip(t["rows"], t["cells"]):
        cells = []
        for x in line:
            cls = [f"st-{x['status'].replace('/', '-')}"]
            if x.get("best_in_row"):
                cls.append("best-row")
            if x.get("best_in_col"):
                cls.append("best-col")
            if x.get("best_overall"):
                cls.append("best-all")
            num = x["mean"] is not None
            cells.append(
                {
                    "text": x["text"],
                    "note": x["note"],
                    "cls": " ".join(cls),
                    "sort": x["mean"] if num else "",
                    "status": x["status"],
                    "num": num,
                }
            )
        # in the order of the header's axes (a JSON object comes back with its keys sorted), as shown in table.csv
        rows.append({"labels": [view.show(a, row["labels"][a]) for a in t["row_axes"]], "cells": cells})
    # column headers carry values only: the axis names head the row above
    cols = [
        ", ".join(view.show(a, c["labels"][a]) for a in t["col_axes"]) if t["col_axes"] else label_for(t["value"])
        for c in t["cols"]
    ]
    return {"row_axes": t["row_axes"], "cols": cols, "rows": rows}


# drawn in the appendix under "Inside the network" (segsweep.report.inspect)
INSIDE_KINDS = ("activations", "dead_channels", "weight_hist")


def study_figures(view: StudyView) -> dict:
    """A study's figures by where the report shows them: ``key`` (the first in the figure registry's report
    order, `segsweep.report.plots`) beside its table in the main part, ``more`` and ``inside``
    (the selected network's activations and weights) in the appendix; ``val_vs_test`` is the Test set's."""
    figs = [f for f in view.figures if f["kind"] != "val_vs_test"]
    rest = [f for f in figs if f["kind"] not in INSIDE_KINDS]
    return {
        "key": rest[0] if rest else None,
        "more": rest[1:],
        "inside": [f for f in figs if f["kind"] in INSIDE_KINDS],
    }


def secondary_rows(view: StudyView) -> list[dict]:
    """Per configuration: mean ± sd of IoU, HD95 (mm), final Dice, best epoch, epochs, over ok runs."""
    out = []
    for g in view.groups:
        sub = view.cells[view.cells["config"] == g["config"]]
        ok = sub[sub["status"] == "ok"]

        def ms(col: str, d: int = 3, ok: pd.DataFrame = ok) -> tuple[str, Any]:
            x = ok[col].dropna()
            if x.empty:
                return "–", ""
            if x.nunique() == 1:  # e.g. every run stopped at the last epoch: "12", not "12.0 ± 0.0"
                v = float(x.iloc[0])
                return (f"{v:.0f}" if v.is_integer() and d < 3 else f"{v:.{d}f}"), v
            return f"{x.mean():.{d}f} ± {x.std(ddof=1):.{d}f}", float(x.mean())

        out.append(
            {
                "config": view.config_name(g["config"]),
                "status": g["status"],
                "n_ok": g["n_ok"],
                "n_total": g["n_total"],
                "dice": ms("best_val_dice"),
                "final": ms("final_val_dice"),
                "iou": ms("best_val_iou"),
                "hd95": ms("best_val_hd95_mm", 2),
                "epoch": ms("best_epoch", 1),
                "epochs": ms("epochs_run", 1),
            }
        )
    return out


def stats_rows(view: StudyView) -> tuple[list[dict], int]:
    """Rows of the comparisons that could be made, and how many could not (fewer than 2 pairs)."""
    value = view.value
    out = []
    comps = view.stats.get("comparisons", [])
    for c in comps:
        if c["mean_diff"] is None:
            continue
        out.append(
            {
                "other": view.config_name(c["other"]),
                "status": c["other_status"],
                "n": c["n_pairs"],
                "diff": fmt(c["mean_diff"], value) if c["mean_diff"] is not None else "–",
                "ci": (f"{fmt(c['ci_low'], value)} to {fmt(c['ci_high'], value)}" if c["ci_low"] is not None else "–"),
                "p": describe_p(c["p"]),
                "p_holm": describe_p(c.get("p_holm")),
                # "too few pairs" is said once above the table (and on the study's page), not in every row
                "note": "" if c["note"].startswith("too few pairs") else c["note"],
                "too_few": c["note"].startswith("too few pairs"),
                "sort_p": "" if c["p"] is None else c["p"],
                "sort_diff": "" if c["mean_diff"] is None else c["mean_diff"],
            }
        )
    out.sort(key=lambda r: r["sort_diff"])
    return out, len(comps) - len(out)


# -------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class DataFiles:
    """The default data set's files the report reads (rules/report.smk passes its keyed folders)."""

    data: Path  # dataset.json, qc.csv
    splits: tuple[Path, ...]  # the split files of the config's cells
    figures: Path  # the data figures' folder

    @classmethod
    def under(cls, results_dir: Path) -> DataFiles:
        """Unkeyed folders under ``results_dir`` (tests, fixtures)."""
        return cls(
            results_dir / "data", tuple(sorted((results_dir / "splits").glob("*.json"))), results_dir / DATA_FIGURES
        )


def data_context(results_dir: Path, config: Mapping, studies: Sequence[Study], files: DataFiles | None = None) -> dict:
    files = files or DataFiles.under(results_dir)
    d = files.data
    ds = json.loads((d / "dataset.json").read_text()) if (d / "dataset.json").exists() else None
    qc = None
    if (d / "qc.csv").exists():
        q = pd.read_csv(d / "qc.csv", dtype=str, keep_default_na=False)
        if not q.empty:
            counts = q.groupby(["status", "reason"]).size().reset_index(name="n")
            order = {"skipped": 0, "warning": 1, "ok": 2}
            counts = counts.sort_values(["status", "n"], key=lambda s: s.map(order) if s.name == "status" else -s)
            qc = {
                "rows": counts.to_dict("records"),
                "n_files": len(q),
                "by_status": {k: int(v) for k, v in q["status"].value_counts().items()},
            }
    if qc is None and ds and ds.get("qc_counts"):  # no qc.csv: fall back to the counts in dataset.json
        rows = [
            {"status": "", "reason": k, "n": int(v)} for k, v in sorted(ds["qc_counts"].items(), key=lambda kv: -kv[1])
        ]
        qc = {"rows": rows, "n_files": sum(r["n"] for r in rows), "by_status": {}}
    fractions = set()
    for s in studies:
        for lab in s.axis_values.get("fraction", ()):
            if label_number(lab) is not None:
                fractions.add(float(label_number(lab)))
        base = (config.get("studies", {}).get(s.name, {}) or {}).get("base", {}) or {}
        fractions.add(float(base.get("fraction", config.get("train", {}).get("fraction", 1.0))))
    splits = []
    for p in sorted(files.splits):
        sp = json.loads(p.read_text())
        if sp.get("folds"):
            for k, f in enumerate(sp["folds"]):
                splits.append(
                    {
                        "name": p.stem,
                        "part": f"fold {k}",
                        "val": len(f["val"]),
                        "test": len(sp.get("test", [])),
                        "pool": len(f["pool"]),
                        "train": {fr: n_train(len(f["pool"]), fr) for fr in sorted(fractions)},
                    }
                )
        else:
            splits.append(
                {
                    "name": p.stem,
                    "part": "holdout",
                    "val": len(sp["val"]),
                    "test": len(sp.get("test", [])),
                    "pool": len(sp["pool"]),
                    "train": {fr: n_train(len(sp["pool"]), fr) for fr in sorted(fractions)},
                }
            )
    per_patient = [p["n_images"] for p in ds["patients"]] if ds and ds.get("patients") else []
    extra = extra_datasets(results_dir, studies)
    return {
        "extra": extra,  # the other data sets (config key `datasets`) by name, in study order
        "dataset": ds,
        "qc": qc,
        "splits": splits,
        "fractions": sorted(fractions),
        "images_min": min(per_patient) if per_patient else None,
        "images_max": max(per_patient) if per_patient else None,
        "figures": load_figures(files.figures, "f-data-"),
    }


def extra_datasets(results_dir: Path, studies: Sequence[Study]) -> dict[str, dict]:
    """Each extra data set a study trains on (``studies.<s>.data``): what it is and its counts (patients,
    images, files QC checked and dropped), from its dataset.json and qc.csv; no patient identifier."""
    out: dict[str, dict] = {}
    for s in studies:
        name = getattr(s, "dataset", None)
        if name is None:
            continue
        if name in out:
            out[name]["studies"].append(s.title)
            continue
        d = dataset_root(results_dir, name) / "data"
        ds = json.loads((d / "dataset.json").read_text()) if (d / "dataset.json").exists() else {}
        by_status: dict[str, int] = {}
        if (d / "qc.csv").exists():
            q = pd.read_csv(d / "qc.csv", dtype=str, keep_default_na=False)
            by_status = {k: int(v) for k, v in q["status"].value_counts().items()} if not q.empty else {}
        out[name] = {
            "name": name,
            "found": bool(ds),
            "source": ds.get("source"),
            "layout": ds.get("layout"),
            "target": ds.get("target"),
            "n_patients": len(ds.get("patients") or []),
            "n_images": ds.get("n_images"),
            "n_files": sum(by_status.values()),
            "n_dropped": by_status.get("skipped", 0),
            "n_warnings": by_status.get("warning", 0),
            "studies": [s.title],
        }
    return out


# -------------------------------------------------------------------------------------- test set
def test_context(
    views: Sequence[StudyView], results_dir: Path, config: Mapping, files: DataFiles | None = None
) -> dict:
    """The "Test set" section: per study, the validation-selected configuration's test numbers with
    patient-bootstrap intervals (`segsweep.analysis.testset`) and the validation-vs-test figure."""
    from segsweep.analysis import testset

    has_test = testset.split_has_test(sorted((files or DataFiles.under(results_dir)).splits))
    seed = int(config.get("seed", 0) or 0)
    ev = config.get("evaluation", {}) or {}
    out = []
    for v in views:
        sel = None
        if has_test:
            sel = testset.selected_test(v.name, v.groups, v.study.table.higher_is_better, results_dir / CELLS_SUB, seed)
        rows = []
        for r in sel["rows"] if sel else []:
            d = 2 if r["key"].startswith("hd95") else 3
            value = "–" if r["value"] is None else f"{r['value']:.{d}f}"
            rows.append({**r, "text": value, "ci_text": testset.format_ci(r["ci"], d)})
        out.append(
            {
                "view": v,
                "sel": sel,
                "config": v.config_name(sel["group"]["config"]) if sel else None,
                "rows": rows,
                "counts": testset.describe(sel) if sel else "",
                "val_text": "–" if not sel or sel["val_dice_patient"] is None else f"{sel['val_dice_patient']:.3f}",
                "figures": [f for f in v.figures if f["kind"] == "val_vs_test"],
                "final": final_context(v.table.get("final")),
            }
        )
    return {
        "has_test": has_test,
        "studies": out,
        "test_fraction": (config.get("splits", {}) or {}).get("test_fraction", 0),
        "nsd_tolerance_mm": ev.get("nsd_tolerance_mm", 2.0),
        "hd95_cap_mm": ev.get("hd95_cap_mm"),
    }


def _num(x: float | None, key: str) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}" if key.startswith("hd95") else f"{x:.3f}"


def _with_ci(row: Mapping | None) -> str:
    """'0.891 (0.85–0.93)' of a final-evaluation row, '–' when absent."""
    if not row:
        return "–"
    text = _num(row.get("value"), row["key"])
    if row.get("ci_low") is not None:
        text += f" ({_num(row['ci_low'], row['key'])}–{_num(row['ci_high'], row['key'])})"
    return text


def final_context(final: Mapping | None) -> dict | None:
    """The post-processing choice and the runs-vs-ensemble table of a study (table.json ``final``,
    `segsweep.analysis.final`): candidates on validation, and per variant (single runs / ensemble, raw /
    post-processed) validation and test numbers; the variant the study's model uses is marked."""
    if not final:
        return None
    keys = ("dice_patient", "hd95_mm_patient", "nsd_patient")
    chosen = final["chosen"]
    candidates = [
        {**c, "text": {k: _num(c.get(k), k) for k in keys}, "label": c["description"]} for c in final["candidates"]
    ]
    cand = {c["name"]: c for c in final["candidates"]}
    posts = list(dict.fromkeys(["none", chosen]))
    variants = []
    n = final.get("n_runs", 0)
    for post in posts:
        rows = {r["key"]: r for r in (final.get("test") or {}).get(post, [])}
        variants.append(
            {
                "label": f"{'single run' if n == 1 else f'{n} runs (mean)'}, "
                + ("raw" if post == "none" else f"post-processed ({post})"),
                "val": {k: _num((cand.get(post) or {}).get(k), k) for k in keys},
                "test": {k: _with_ci(rows.get(k)) for k in keys},
                "used": post == chosen,
                "units": next((r["units"] for r in rows.values() if r.get("units")), ""),
            }
        )
    ens = final.get("ensemble")
    if ens:
        for post in posts:
            rows = {r["key"]: r for r in (ens.get("test") or {}).get(post, [])}
            val = (ens.get("val") or {}).get(post) or {}
            variants.append(
                {
                    "label": f"ensemble of {ens['n_runs']} runs, "
                    + ("raw" if post == "none" else f"post-processed ({post})"),
                    "val": {k: _num(val.get(k), k) for k in keys},
                    "test": {k: _with_ci(rows.get(k)) for k in keys},
                    "used": False,
                    "units": next((r["units"] for r in rows.values() if r.get("units")), ""),
                }
            )
    notes = [x for x in (final.get("note"), (ens or {}).get("val_note"), (ens or {}).get("test_note")) if x]
    return {
        "chosen": chosen,
        "description": final["chosen_description"],
        "rule": final["rule"],
        "candidates": candidates,
        "variants": variants,
        "notes": notes,
        "n_runs": n,
    }


# --------------------------------------------------------------------------------------- summary
def top_rows(views: Sequence[StudyView], top_n: int) -> list[dict]:
    """Best configurations across studies for each study's table value (ranked within each value)."""
    rows = []
    for v in views:
        for rank, g in enumerate(ranked(v.groups, v.study.table.higher_is_better), start=1):
            rows.append(
                {
                    "study": v.study.title,
                    "anchor": v.anchor,
                    "config": v.config_name(g["config"]),
                    "value": v.value,
                    "mean": g["mean"],
                    "text": mean_ci_text(g, v.value),
                    # the table's columns: the mean, its interval, and what the interval resampled (said once
                    # in the caption when every row shares it, `top_units`)
                    "mean_text": fmt(g["mean"], v.value) if g.get("mean") is not None else g.get("status", "–"),
                    "ci_text": (
                        f"{fmt(g['ci_low'], v.value)}–{fmt(g['ci_high'], v.value)}"
                        if g.get("ci_low") is not None
                        else (g.get("ci_note") or "no interval")
                    ),
                    "units": interval_units(g) if g.get("ci_low") is not None else "",
                    "cells": tuple(sorted(x["cell"] for x in g["runs"] if x.get("cell"))),
                    "n": g["n"],
                    "note": g["note"],
                    "higher": v.study.table.higher_is_better,
                    "rank": rank,
                }
            )
    values = list(dict.fromkeys(r["value"] for r in rows))
    out = []
    for val in values:
        sub = [r for r in rows if r["value"] == val]
        sub.sort(key=lambda r: (r["note"] != "", -r["mean"] if r["higher"] else r["mean"]))
        out += sub[:top_n]
    # a configuration two studies share is the same runs (one cell id per run): say so, not two results
    first: dict[tuple, str] = {}
    for r in out:
        key = (r["value"], r.pop("cells"))
        if key in first and key[1]:
            r["note"] = "; ".join(x for x in (r["note"], f"the same runs as {first[key]}") if x)
        first.setdefault(key, r["study"])
    return out


def top_units(rows: Sequence[Mapping]) -> str | None:
    """What every interval of the top table resampled ("3 runs × 8 patients"), if they all share it."""
    units = {r["units"] for r in rows if r["units"]}
    return units.pop() if len(units) == 1 else None


def overall_sentence(views: Sequence[StudyView]) -> str | None:
    # studies are compared only on the value most of them rank by (the default: per-patient validation Dice)
    ranked_by = Counter(v.value for v in views if v.best is not None).most_common(1)
    if not ranked_by:
        return None
    value = ranked_by[0][0]
    cands = [(v, v.best) for v in views if v.best is not None and v.value == value and v.study.table.higher_is_better]
    if len(cands) < 2:
        return None
    v, b = max(cands, key=lambda t: (t[1]["status"] == "ok", t[1]["mean"]))
    return (
        f"Across the {len(cands)} studies that rank by {label_for(value)}, the highest mean is "
        f"{fmt(b['mean'], v.value)} ({v.study.title}: {v.name_of(b['labels'])}); studies differ in their "
        f"fixed settings, so compare across studies with care."
    )


def run_table(views: Sequence[StudyView]) -> pd.DataFrame:
    """One row per cell (runs shared by studies once), with the studies that use it."""
    parts = []
    for v in views:
        df = v.cells.copy()
        df["study"] = v.name
        # named as the study's tables name it (cells.csv keeps the config's labels: a fraction's requested value)
        df["config"] = [v.name_of({a: r[a] for a in v.study.axes}) for r in df.to_dict("records")]
        parts.append(df)
    if not parts:
        return pd.DataFrame()
    df = pd.concat(parts, ignore_index=True)
    studies = df.groupby("cell")["study"].agg(lambda s: ", ".join(dict.fromkeys(s)))
    first = df.drop_duplicates("cell").set_index("cell")
    first["studies"] = studies
    return first.reset_index()


def log_groups(failures: Sequence[Mapping]) -> list[dict]:
    """Identical log tails shown once, with every run that ended that way."""
    groups: dict[str, dict] = {}
    for r in failures:
        if r.get("log_tail"):
            g = groups.setdefault(r["log_tail"], {"log": r["log_tail"], "cells": [], "statuses": []})
            g["cells"].append(r["cell"])
            g["statuses"].append(r["status"])
    for g in groups.values():
        g["status"] = "/".join(dict.fromkeys(g["statuses"]))
    return list(groups.values())


# --------------------------------------------------------------------------------------------- entry
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("segsweep.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["duration"] = duration
    env.filters["label"] = label_for
    env.filters["f3"] = lambda x: "–" if x is None else f"{x:.3f}"
    return env


def execution_rows(cells: Sequence[str], cells_dir: Path) -> list[dict]:
    """How the runs executed (metrics.json ``execution``: amp, channels_last, threads), one row per setting."""
    counts: Counter[tuple] = Counter()
    for cell in cells:
        try:
            ex = CellMetrics.read(Path(cells_dir) / cell / METRICS).execution
        except (OSError, ValueError, DataError):
            ex = None
        key = (
            ("unknown", "unknown", "unknown") if not ex else (ex.get("amp"), ex.get("channels_last"), ex.get("threads"))
        )
        counts[key] += 1
    return [
        {
            "amp": {True: "bf16 autocast", False: "off"}.get(a, a),
            "channels_last": {True: "on", False: "off"}.get(c, c),
            "threads": t,
            "n": n,
        }
        for (a, c, t), n in sorted(counts.items(), key=lambda kv: str(kv[0]))
    ]


def build_context(
    *,
    config: Mapping,
    studies: Sequence[Study],
    results_dir: Path,
    provenance: Mapping,
    data_files: DataFiles | None = None,
) -> dict:
    results_dir = Path(results_dir)
    data_files = data_files or DataFiles.under(results_dir)
    views = [load_study(s, results_dir) for s in studies]
    runs = run_table(views)
    total_wall = float(runs["wall_s"].fillna(0).sum()) if len(runs) else 0.0
    status_counts = Counter(runs["status"]) if len(runs) else Counter()
    # pruned runs were stopped on purpose (the study's pruner), not lost: the tables show them, not Failures
    failures = runs[~runs["status"].isin(["ok", "pruned"])].to_dict("records") if len(runs) else []
    hardware = []
    if len(runs):
        hw = runs.assign(
            device=runs["device"].replace("", "unknown"),
            hardware=runs["hardware"].replace("", "unknown (no metrics.json)"),
        )
        for (dev, h), sub in hw.groupby(["device", "hardware"], sort=True):
            hardware.append(
                {
                    "device": dev,
                    "hardware": h,
                    "n": len(sub),
                    "wall": float(sub["wall_s"].fillna(0).sum()),
                    "median": float(sub["wall_s"].median()) if sub["wall_s"].notna().any() else None,
                }
            )
    css = (Path(__file__).parent / "templates" / "report.css").read_text()
    js = (Path(__file__).parent / "templates" / "sort.js").read_text()
    report_cfg = config.get("report", {}) or {}
    date = provenance.get("date") or dt.datetime.now(dt.UTC).isoformat()
    return {
        "title": config.get("title") or "segsweep study report",
        "author": config.get("author") or "",
        "date": date[:10],
        "css": Markup(css),
        "js": Markup(js),
        "views": views,
        "data": data_context(results_dir, config, studies, data_files),
        "test": test_context(views, results_dir, config, data_files),
        "cards": card.card_context(  # the Model cards section
            studies, results_dir, config, data_files.data, data_files.splits[0].parent if data_files.splits else None
        ),
        "top": top_rows(views, int(report_cfg.get("top_n", 10))),
        "overall": overall_sentence(views),
        "n_studies": len(views),
        "n_configs": sum(len(v.groups) for v in views),
        "n_cells": len(runs),
        "status_counts": status_counts,
        "total_wall": total_wall,
        "failures": failures,
        "log_groups": log_groups(failures),
        "hardware": hardware,
        "execution": execution_rows(list(runs["cell"]) if len(runs) else [], results_dir / CELLS_SUB),
        "pretrained": pretrained_rows(list(runs["cell"]) if len(runs) else [], results_dir / CELLS_SUB),
        "runs": runs.head(MAX_RUN_ROWS).to_dict("records") if len(runs) else [],
        "runs_truncated": max(0, len(runs) - MAX_RUN_ROWS),
        "prov": provenance,
        "table_html_rows": table_html_rows,
        "study_figures": study_figures,
        "top_units": top_units,
        "secondary_rows": secondary_rows,
        "stats_rows": stats_rows,
        "stats_method": next((v.stats.get("method") for v in views if v.stats.get("method")), ""),
        "min_pairs": next((v.stats.get("min_pairs_for_alpha") for v in views if v.stats), 6),
    }


def render_html(context: Mapping) -> str:
    return _env().get_template("report.html.j2").render(**context)


def render_report(
    *,
    config: Mapping,
    studies: Sequence[Study],
    results_dir: Path,
    out_html: Path,
    out_pdf: Path | None,
    provenance: Mapping,
    data_files: DataFiles | None = None,
) -> None:
    """Write the self-contained HTML report and, when ``out_pdf`` is given, its A4 PDF."""
    ctx = build_context(
        config=config, studies=studies, results_dir=Path(results_dir), provenance=provenance, data_files=data_files
    )
    html = render_html(ctx)
    write_text(out_html, html)
    if out_pdf is not None:
        pdf.write_pdf(html, Path(out_html).parent, out_pdf)
