"""A small, deterministic results directory in the formats of docs/architecture.md, for report-side tests.

`make_results(root)` expands a real config with `segsweep.cells.build_plan` (so cell ids, shared cells, labels
and axis orders are the pipeline's own) and writes, per cell, what the train rule would: metrics.json,
history.csv, per_image.csv, predictions.npz — plus results/data (npz per patient, qc.csv, dataset.json),
results/splits and logs/train. Metric values follow a simple known function of the parameters so tests can
check aggregation by hand:

* optimizer_lr (grid, 3 repeats): adam @ lr 0.001 gives best_val_dice 0.80, 0.82, 0.84 (seeds 0, 1, 2);
  sgd @ 0.01 diverges in all repeats; adam @ 0.01 diverges for seed 1 only; sgd @ 0.0001 seed 2 crashed
  (no metrics.json, a log with a traceback).
* fraction_loss (grid, 2 repeats): shares its (dice, 1.0) cells with optimizer_lr (adam, 0.001).
* schedules (3-fold CV): cosine fold 2 failed with a metrics.json saying why.
* random_search (40 sampled configurations, empty table layout → a long table): lr > 0.03 diverges.
Every study ranks by best_val_dice (the value the fixture's known functions give; real studies default to
val_dice_patient).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from segsweep.data.splits import make_split, select_patients
from segsweep.plan.cells import Plan, build_plan
from segsweep.plan.config import prepare
from segsweep.study import Study
from segsweep.training.record import CellMetrics

H, W = 48, 40
N_PATIENTS = 8
SLICES = 3
EPOCHS = 12
SECRET_KEY = "fixture-secret-pseudonym-key"
LEAK_PROBE = "DOE^JANE"

CONFIG = {
    "title": "Fixture segmentation study",
    "author": "Test Author",
    "seed": 0,
    "data": {"source": "phantom", "pseudonym_key": SECRET_KEY, "phantom": {"patients": N_PATIENTS, "slices": SLICES}},
    "train": {"epochs": EPOCHS},
    "splits": {"folds": 3, "val_fraction": 0.25},
    "studies": {
        "optimizer_lr": {
            "title": "Optimizer × learning rate",
            "description": "Adam and SGD over three learning rates.",
            "axes": {"optimizer": ["adam", "sgd"], "lr": [1e-4, 1e-3, 1e-2]},
            "repeats": 3,
            "table": {"rows": ["optimizer"], "cols": ["lr"], "value": "best_val_dice"},
        },
        "fraction_loss": {
            "title": "Training fraction × loss",
            "axes": {"loss": ["dice", "bce"], "fraction": [0.25, 0.5, 1.0]},
            "repeats": 2,
            "table": {"rows": ["loss"], "cols": ["fraction"], "value": "best_val_dice"},
        },
        "schedules": {
            "title": "Learning-rate schedules",
            "axes": {"schedule": ["none", "step", "cosine"]},
            "cv": True,
            "table": {"rows": ["schedule"], "cols": [], "value": "best_val_dice"},
        },
        "random_search": {
            "title": "Random search",
            "mode": "random",
            "n": 40,
            "axes": {"lr": {"loguniform": [1e-5, 1e-1]}, "weight_decay": [0.0, 0.0001, 0.001]},
            "table": {"rows": [], "cols": [], "value": "best_val_dice"},
        },
    },
}

HAND_CHECKED = {"study": "optimizer_lr", "labels": {"optimizer": "adam", "lr": "0.001"}, "values": [0.80, 0.82, 0.84]}


@dataclass
class Fixture:
    root: Path
    results: Path
    logs: Path
    config: dict
    plan: Plan

    @property
    def studies(self) -> list[Study]:
        return list(self.plan.studies.values())

    def study(self, name: str) -> Study:
        return self.plan.studies[name]

    def render(self, out_html: Path, out_pdf: Path | None = None) -> str:
        """The report of this fixture (`render`)."""
        return render(out_html, self.config, self.studies, self.results, self.root, out_pdf)


def pseudonym(i: int) -> str:
    return "p" + hashlib.sha256(f"fixture-{i}".encode()).hexdigest()[:8]


def quality(p) -> float:
    """Known 'true' best_val_dice of a parameter set (before the seed/fold offset)."""
    peak = {"adam": 0.82, "sgd": 0.76, "adamw": 0.81, "rmsprop": 0.78}[p.optimizer]
    best_lr = {"adam": -3.0, "sgd": -2.5, "adamw": -3.0, "rmsprop": -3.2}[p.optimizer]
    q = peak - 0.05 * (math.log10(p.lr) - best_lr) ** 2
    q -= 0.15 * (1.0 - p.fraction)
    q -= 0.03 * (p.loss[0].name == "bce")
    q += {"none": 0.0, "step": 0.005, "cosine": 0.01}.get(p.schedule.name, 0.0)
    q -= 5.0 * p.weight_decay
    return q


def outcome(p) -> tuple[str, str]:
    """(status, reason) of a run; 'crash' means the job died before writing metrics.json."""
    if p.optimizer == "sgd" and p.lr >= 1e-2:
        return "diverged", "loss became NaN at epoch 4"
    if p.optimizer == "adam" and p.lr >= 1e-2 and p.lr < 0.03 and p.seed == 1 and p.weight_decay == 0:
        return "diverged", "loss became NaN at epoch 6"
    if p.lr > 0.03:
        return "diverged", "loss above 1e3 × its first value at epoch 2"
    if p.optimizer == "sgd" and p.lr <= 1e-4 and p.seed == 2:
        return "crash", ""
    if p.schedule.name == "cosine" and p.fold == 2:
        return "failed", "out of memory (RuntimeError)"
    return "ok", ""


def lr_at(p, epoch: int) -> float:
    if p.schedule.name == "step":
        return p.lr * 0.5 ** (epoch // 10)
    if p.schedule.name == "cosine":
        return p.lr * 0.5 * (1 + math.cos(math.pi * epoch / p.epochs))
    return p.lr


def _disk(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(np.uint8)


def _patient_arrays(i: int) -> dict:
    rng = np.random.default_rng([7, i])
    raw, img, mask = [], [], []
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))
    for s in range(SLICES):
        m = _disk(H / 2 + rng.uniform(-3, 3), W / 2 + rng.uniform(-3, 3), 6 + 2 * s)
        base = 60 + 90 * m + 40 * _disk(H / 2, W / 2, 16) + rng.normal(0, 12, (H, W))
        r = np.clip(base * 0.6, 0, 255).astype(np.uint8)  # low contrast before CLAHE
        raw.append(r)
        img.append(clahe.apply(r).astype(np.float32) / 255.0)
        mask.append(m)
    return {
        "raw": np.stack(raw),
        "image": np.stack(img),
        "mask": np.stack(mask),
        "spacing": np.full((SLICES, 2), 1.4, np.float32),
        "slice": np.arange(SLICES, dtype=np.int32),
    }


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def write_data(results: Path) -> tuple[list[str], dict[str, dict]]:
    data = results / "data"
    data.mkdir(parents=True, exist_ok=True)
    pids, arrays, qc = [], {}, []
    for i in range(N_PATIENTS):
        pid = pseudonym(i)
        pids.append(pid)
        arrays[pid] = _patient_arrays(i)
        np.savez_compressed(data / f"{pid}.npz", **arrays[pid])
        for s in range(SLICES):
            qc.append([pid, f"{pid}/images/IM-{s:04d}.dcm", "ok", "ok", ""])
        qc.append([pid, f"{pid}/images/IM-{SLICES:04d}.dcm", "skipped", "no_contour", "image has no contour file"])
    # the report must show QC counts only: a message that (wrongly) carried a header value must not leak
    qc.append(
        [
            pids[0],
            f"{pids[0]}/contours/IM-0099-icontour.txt",
            "warning",
            "contour_out_of_bounds",
            f"3 points outside the image were clipped ({LEAK_PROBE})",
        ]
    )
    pd.DataFrame(qc, columns=["patient", "file", "status", "reason", "message"]).to_csv(data / "qc.csv", index=False)
    counts = {"ok": N_PATIENTS * SLICES, "no_contour": N_PATIENTS, "contour_out_of_bounds": 1}
    (data / "dataset.json").write_text(
        json.dumps(
            {
                "source": "phantom",
                "layout": "rvsc",
                "target": "endo",
                "n_classes": 2,
                "size": [H, W],
                "patients": [{"id": p, "n_images": SLICES} for p in pids],
                "n_images": N_PATIENTS * SLICES,
                "qc_counts": counts,
            },
            indent=2,
        )
    )
    return pids, arrays


def write_cell(cell, results: Path, logs: Path, splits: dict, arrays: dict) -> None:
    p = cell.params
    d = results / "cells" / cell.id
    d.mkdir(parents=True, exist_ok=True)
    status, reason = outcome(p)
    train, val = select_patients(splits[cell.split], p.fraction, p.fold)
    if status == "crash":
        (logs / f"{cell.id}.log").write_text(
            "epoch 1/12 train_loss 0.71 val_dice 0.31\n"
            "Traceback (most recent call last):\n"
            '  File "segsweep/train.py", line 210, in run\n'
            "RuntimeError: DataLoader worker (pid 4242) is killed by signal: Killed.\n"
        )
        return
    offset = 0.02 * (p.seed - 1) + (0.01 * (p.fold - 1) if p.fold is not None else 0.0)
    best = quality(p) + offset
    n_ep = {"ok": p.epochs, "diverged": 4, "failed": 3}[status]
    hist = []
    for e in range(n_ep):
        frac = (e + 1) / p.epochs
        vd = best * (1 - math.exp(-4 * frac)) / (1 - math.exp(-4))
        tl = 1 - vd + 0.02
        if status == "diverged" and e == n_ep - 1:
            tl, vd = float("nan"), float("nan")
        hist.append([e + 1, lr_at(p, e), tl, tl + 0.03, vd, vd * 0.85 if vd == vd else vd, 0.5])
    pd.DataFrame(hist, columns=["epoch", "lr", "train_loss", "val_loss", "val_dice", "val_iou", "epoch_s"]).to_csv(
        d / "history.csv", index=False
    )
    ok = status == "ok"
    CellMetrics(
        cell=cell.id,
        status=status,
        reason=reason,
        best_val_dice=round(best, 6) if ok else None,
        best_epoch=p.epochs if ok else n_ep,
        final_val_dice=round(best - 0.005, 6) if ok else None,
        best_val_iou=round(best * 0.85, 6) if ok else None,
        best_val_hd95_mm=round(12 * (1 - best) + 1, 4) if ok else None,
        epochs_run=n_ep,
        wall_s=round(6.0 * n_ep + p.seed, 2),
        device="cpu",
        hardware="Fixture CPU @ 2.0GHz (2 threads)",
        n_train=len(train),
        n_val=len(val),
        params=p.to_dict(),
    ).write(d / "metrics.json")
    if status != "ok":
        (logs / f"{cell.id}.log").write_text(f"epoch 1/12 train_loss 0.70\n{reason}\n")
        return
    # predictions: the ground-truth disk, shifted by an amount that grows as the cell gets worse
    rng = np.random.default_rng(int(cell.id[:8], 16))
    preds, imgs, masks, pats, slices, rows = [], [], [], [], [], []
    for pid in val:
        a = arrays[pid]
        for s in range(SLICES):
            shift = int(round((1 - best) * 10 * rng.uniform(0.3, 1.7)))
            pr = np.roll(a["mask"][s], shift, axis=1)
            preds.append(pr)
            imgs.append(a["image"][s])
            masks.append(a["mask"][s])
            pats.append(pid)
            slices.append(s)
            dc = _dice(pr.astype(bool), a["mask"][s].astype(bool))
            rows.append([pid, s, dc, dc / (2 - dc), 1.4 * shift])
    np.savez_compressed(
        d / "predictions.npz",
        pred=np.stack(preds),
        image=np.stack(imgs),
        mask=np.stack(masks),
        patient=np.array(pats),
        slice=np.array(slices, dtype=np.int32),
    )
    # as train_cell writes them, best_val_dice is the mean of the per-image Dice: move the drawn Dice values
    # (order kept, within [0, 1]) so that their mean is the cell's value
    dc = np.array([r[2] for r in rows])
    target, mid = round(best, 6), float(dc.mean())
    k = min(
        1.0,
        target / (mid - dc.min()) if mid > dc.min() else 1.0,
        (1 - target) / (dc.max() - mid) if dc.max() > mid else 1.0,
    )
    for r, x in zip(rows, target + (dc - mid) * k):
        r[2] = float(x)
    _write_final_evaluation(d, rows, best, splits[cell.split].get("test", []), arrays, rng)


def _write_final_evaluation(d: Path, rows: list, best: float, test: list, arrays: dict, rng) -> None:
    """per_image.csv (network columns, then set and native columns), per_patient.csv and the final-evaluation
    fields of metrics.json, as train_cell writes them (docs/evaluation.md). The fixture's "native" numbers
    are its network ones; test patients score about 0.03 below validation (the optimism of selection)."""
    native = ["native_dice", "native_iou", "native_hd95_mm", "native_nsd", "empty"]
    out = [[*r, "val", r[2], r[3], r[4], min(1.0, r[2] + 0.05), ""] for r in rows]
    for pid in test:
        for s in range(SLICES):
            m = arrays[pid]["mask"][s].astype(bool)
            shift = int(round((1.03 - best) * 10 * rng.uniform(0.3, 1.7)))
            dc = _dice(np.roll(m, shift, axis=1), m)
            net = [dc, dc / (2 - dc), 1.4 * shift]
            out.append([pid, s, *net, "test", *net, min(1.0, dc + 0.05), ""])
    df = pd.DataFrame(out, columns=["patient", "slice", "dice", "iou", "hd95_mm", "set", *native])
    t = df["set"] == "test"
    if t.any():  # test Dice about 0.03 below the validation value, within [0, 1]
        dt = (df.loc[t, "dice"] - df.loc[t, "dice"].mean() + best - 0.03).clip(0.0, 1.0)
        df.loc[t, "dice"] = df.loc[t, "native_dice"] = dt
        df.loc[t, "iou"] = df.loc[t, "native_iou"] = dt / (2 - dt)
        df.loc[t, "native_nsd"] = (dt + 0.05).clip(upper=1.0)
    df.to_csv(d / "per_image.csv", index=False)
    g = df.groupby(["set", "patient"], sort=False)
    pp = g.agg(
        n_slices=("slice", "size"),
        dice=("native_dice", "mean"),
        iou=("native_iou", "mean"),
        hd95_mm=("native_hd95_mm", "mean"),
        nsd=("native_nsd", "mean"),
    ).reset_index()
    pp.to_csv(d / "per_patient.csv", index=False)

    def summary(name: str) -> dict:
        im, pa = df[df["set"] == name], pp[pp["set"] == name]
        return {
            "dice": float(im["native_dice"].mean()),
            "dice_patient": float(pa["dice"].mean()),
            "iou": float(im["native_iou"].mean()),
            "iou_patient": float(pa["iou"].mean()),
            "hd95_mm": float(im["native_hd95_mm"].mean()),
            "hd95_mm_patient": float(pa["hd95_mm"].mean()),
            "nsd": float(im["native_nsd"].mean()),
            "nsd_patient": float(pa["nsd"].mean()),
            "n_slices": len(im),
            "n_patients": len(pa),
            "n_excluded_both_empty": 0,
            "n_one_empty": 0,
        }

    m = CellMetrics.read(d / "metrics.json")
    fields = {f"val_{k}": v for k, v in summary("val").items()}
    evaluation = {"nsd_tolerance_mm": 2.0, "hd95_cap_mm": None, "grid": "native"}
    replace(m, **fields, test=summary("test") if test else None, evaluation=evaluation).write(d / "metrics.json")


def make_results(root: Path, test_fraction: float = 0.0) -> Fixture:
    """Write the fixture under ``root`` (results/ and logs/train/) and return its handles; ``test_fraction``
    > 0 holds out test patients (splits.test_fraction; the default fixture has none, as a config without it)."""
    root = Path(root)
    results, logs = root / "results", root / "logs" / "train"
    logs.mkdir(parents=True, exist_ok=True)
    config = prepare({**CONFIG, "splits": {**CONFIG["splits"], "test_fraction": test_fraction}})
    plan = build_plan(config)
    pids, arrays = write_data(results)
    splits = {}
    for name, spec in plan.split_specs.items():
        splits[name] = make_split(pids, spec["seed"], spec["val_fraction"], spec["folds"], test_fraction)
        (results / "splits").mkdir(parents=True, exist_ok=True)
        (results / "splits" / f"{name}.json").write_text(json.dumps(splits[name], indent=2))
    for cell in plan.cells.values():
        write_cell(cell, results, logs, splits, arrays)
    return Fixture(root, results, logs, config, plan)


# ------------------------------------------------------------------------------------- pytest helpers
_BUILT: dict[str, Fixture] = {}


def aggregate(fx: Fixture) -> Fixture:
    """Every study of ``fx`` aggregated and its figures made, as the aggregate and figures rules do."""
    from segsweep.analysis.aggregate import aggregate_study
    from segsweep.report.plots import make_study_figures

    splits = sorted((fx.results / "splits").glob("*.json"))  # as the rule passes them: fraction sizes
    for s in fx.studies:
        sd = fx.results / "studies" / s.name
        aggregate_study(s, fx.results / "cells", sd, fx.logs, seed=0, splits=splits)
        make_study_figures(s, sd, fx.results / "cells", sd / "figures")
    return fx


def built_fixture(tmp_path_factory) -> Fixture:
    """The fixture with every study aggregated and every figure made — built once per test session."""
    if "fx" not in _BUILT:
        from segsweep.report.plots import make_data_figures

        fx = aggregate(make_results(tmp_path_factory.mktemp("fixture")))
        make_data_figures(fx.results / "data", fx.results / "figures" / "data")
        _BUILT["fx"] = fx
    return _BUILT["fx"]


def render(
    out_html: Path, config: dict, studies: list[Study], results: Path, root: Path, out_pdf: Path | None = None
) -> str:
    """`render_report` on a results tree, provenance collected from ``root`` (as the report rule does); returns the
    HTML. ``out_pdf`` None: no PDF (seconds saved)."""
    from segsweep.report.provenance import collect
    from segsweep.report.render import render_report

    render_report(
        config=config,
        studies=studies,
        results_dir=results,
        out_html=out_html,
        out_pdf=out_pdf,
        provenance=collect(config, root),
    )
    return Path(out_html).read_text()
