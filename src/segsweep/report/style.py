"""The one matplotlib style of every segsweep figure.

Colour-blind-safe throughout: categorical colours are the Okabe–Ito palette (Okabe & Ito 2008, "Color
Universal Design"), sequential data use *cividis* (Nuñez, Anderton & Renslow 2018, designed to read the same
under colour-vision deficiency and in greyscale). Lines also differ by marker so print in greyscale works.
SVG output keeps text as text (smaller, searchable) and uses a fixed hash salt and no date, so the same data
give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib

from segsweep.io import atomic_path

matplotlib.use("Agg")  # files only: never a display, also on headless cluster nodes
# pyplot (0.35 s) is imported where a figure is styled or saved: the report and predict jobs only need
# this module's colours and labels.

# Okabe–Ito, without black (kept for text/axes) and yellow last (weak on white).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SEQUENTIAL = "cividis"
GT_COLOUR = "#009E73"  # ground truth contour (bluish green)
PRED_COLOUR = "#E69F00"  # predicted contour (orange)
BAD_COLOUR = "#D55E00"  # diverged / failed markers (vermillion)
# multi-class overlays: one Okabe–Ito colour per structure (reference solid, prediction dashed, as for binary)
CLASS_COLOURS = {"lv": "#0072B2", "myo": "#E69F00", "rv": "#CC79A7"}  # blue, orange, reddish purple
CLASS_TITLES = {"lv": "LV cavity", "myo": "myocardium", "rv": "RV cavity"}
MISSING_FACE = "#EEEEEE"
FONT = ["DejaVu Sans", "Liberation Sans", "Arial", "sans-serif"]

RC = {
    "font.family": "sans-serif",
    "font.sans-serif": FONT,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "legend.frameon": False,
    "figure.titlesize": 11,
    "axes.prop_cycle": matplotlib.cycler(color=list(OKABE_ITO)),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#DDDDDD",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "lines.linewidth": 1.5,
    "lines.markersize": 5,
    "errorbar.capsize": 3,
    "image.cmap": SEQUENTIAL,
    "figure.dpi": 100,
    "savefig.dpi": 160,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
    "svg.fonttype": "none",
    "svg.hashsalt": "segsweep",
    "hatch.color": "#777777",
    "hatch.linewidth": 0.8,
}

AXIS_LABELS = {
    "best_val_dice": "best validation Dice",
    "final_val_dice": "final validation Dice",
    "best_val_iou": "best validation IoU",
    "best_val_hd95_mm": "HD95 at best epoch (mm)",
    "val_dice_patient": "validation Dice per patient (native resolution)",
    "val_dice": "validation Dice per slice (native resolution)",
    "val_iou_patient": "validation IoU per patient (native resolution)",
    "val_iou": "validation IoU per slice (native resolution)",
    "val_hd95_mm_patient": "validation HD95 per patient (mm, native resolution)",
    "val_hd95_mm": "validation HD95 per slice (mm, native resolution)",
    "val_nsd_patient": "validation NSD per patient (native resolution)",
    "val_nsd": "validation NSD per slice (native resolution)",
    "best_epoch": "best epoch",
    "epochs_run": "epochs run",
    "wall_s": "wall time (s)",
    "lr": "learning rate",
    "fraction": "training fraction (share of the training pool)",
    "weight_decay": "weight decay",
    "epoch": "epoch",
}


def label_for(name: str) -> str:
    """Axis label with its unit for a metric or hyperparameter name (a class of a multi-class target,
    ``val_dice_patient_myo``: "validation Dice per patient (native resolution), myocardium")."""
    if name not in AXIS_LABELS:
        for c, title in CLASS_TITLES.items():
            base = name.removesuffix(f"_{c}")
            if base != name and base in AXIS_LABELS:
                return f"{AXIS_LABELS[base]}, {title}"
    return AXIS_LABELS.get(name, name.replace("_", " "))


def class_colour(name: str, i: int) -> str:
    """The colour of a class in overlays (`CLASS_COLOURS`; another name: the palette by its index)."""
    return CLASS_COLOURS.get(name, colour(i))


def colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


@contextmanager
def use() -> Iterator[None]:
    """Apply the style for the figures made inside the block (restores the caller's rcParams)."""
    import matplotlib.pyplot as plt

    with plt.rc_context(RC):
        yield


def save(fig, path: Path) -> Path:
    """Save deterministically (no creation date) and close; SVG or PNG by suffix, PNG at ≥ 150 dpi."""
    import matplotlib.pyplot as plt

    path = Path(path)
    meta = {"Date": None} if path.suffix == ".svg" else {"Software": None}
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, metadata=meta, dpi=max(150, RC["savefig.dpi"]))
    finally:
        plt.close(fig)
    return path
