"""Figures of a look inside the network: activation maps, dead channels, weight histograms.

They draw the ``.npz`` that `segsweep.training.inspect` writes for a study's validation-selected cell
(``results/studies/{study}/inspect.npz``, made by the ``inspect`` rule; no torch here). The figures are
registered in `segsweep.report.plots` (``activations``, ``dead_channels``, ``weight_hist``), whose wrappers
call the functions below; each returns its caption's fields, or None when the study has no such file or no
finished cell (the figure does not apply).

Any single cell on request (two steps: torch computes, the report env draws)::

    python -m segsweep.training.inspect results/cells/<id> out/inspect.npz
    python -m segsweep.report.inspect out/inspect.npz out/
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# .style first: it selects the Agg backend before pyplot is imported
# isort: off
from segsweep.report import style

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
# isort: on

INSPECT_FILE = "inspect.npz"
MAX_WEIGHT_PANELS = 48
WEIGHT_COLS = 6


def load(path: Path) -> dict | None:
    """The arrays of an inspect file, or None when it is absent or holds no cell."""
    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    return d if str(d.get("cell", "")) else None


def _cell_text(d: dict) -> str:
    return f"cell {d['cell']} ({d['model']})"


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for s in ax.spines.values():
        s.set_visible(False)


def activations(d: dict | None, path: Path) -> dict | None:
    """Rows: the input, then every level (encoder first); columns: the channel mean for each shown image,
    then the strongest channels of the first image."""
    if d is None or not len(d["images"]):
        return None
    levels, n = list(d["levels"]), len(d["images"])
    k = d["top_0"].shape[1]
    ncol = n + k
    fig, axes = plt.subplots(len(levels) + 1, ncol, figsize=(0.95 * ncol + 1.2, 0.95 * (len(levels) + 1) + 0.4))
    axes = np.atleast_2d(axes)
    for j in range(ncol):
        ax = axes[0, j]
        _off(ax)
        if j < n:
            ax.imshow(d["images"][j], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{d['patient'][j]}\nslice {int(d['slice'][j])}", fontsize=6.5)
    axes[0, 0].set_ylabel("input", fontsize=7, rotation=0, ha="right", va="center")
    for i, name in enumerate(levels):
        row = axes[i + 1]
        mean, top, ch = d[f"mean_{i}"], d[f"top_{i}"], d[f"topch_{i}"]
        for j in range(ncol):
            ax = row[j]
            _off(ax)
            if j < n:
                ax.imshow(mean[j], cmap=style.SEQUENTIAL, interpolation="nearest")
            elif j - n < top.shape[1]:
                ax.imshow(top[0, j - n], cmap=style.SEQUENTIAL, interpolation="nearest")
                ax.set_title(f"ch {int(ch[j - n])}", fontsize=6)
        row[0].set_ylabel(f"{name}\n({d['kinds'][i]})", fontsize=7, rotation=0, ha="right", va="center")
    fig.text(
        0.5,
        0.995,
        f"channel mean (first {n} columns) · strongest channels of the first image",
        ha="center",
        va="top",
        fontsize=7.5,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985), h_pad=0.3, w_pad=0.2)
    style.save(fig, path)
    return {"cell": _cell_text(d), "n_images": str(n), "k": str(k)}


def dead_channels(d: dict | None, path: Path) -> dict | None:
    if d is None:
        return None
    levels, frac, nch = list(d["levels"]), d["dead_fraction"], d["n_channels"]
    kinds = list(d["kinds"])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(levels) + 1.5), 2.8))
    colours = [style.colour(0) if k == "encoder" else style.colour(1) for k in kinds]
    ax.bar(range(len(levels)), 100 * frac, color=colours)
    for x, (f, c) in enumerate(zip(frac, nch)):
        ax.text(x, 100 * f + 1, f"{round(f * c)}/{c}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(levels)), levels, rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("dead channels (%)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=style.colour(i)) for i in (0, 1)]
    ax.legend(handles, ["encoder", "decoder"], loc="upper left")
    style.save(fig, path)
    n_dead = int(sum(round(f * c) for f, c in zip(frac, nch)))
    return {"cell": _cell_text(d), "n_dead": str(n_dead), "n_total": str(int(nch.sum()))}


def weight_histograms(d: dict | None, path: Path) -> dict | None:
    if d is None or not len(d["w_names"]):
        return None
    names = list(d["w_names"])
    pick = list(range(len(names)))
    if len(pick) > MAX_WEIGHT_PANELS:  # evenly spaced layers, first and last kept
        pick = sorted({round(i * (len(names) - 1) / (MAX_WEIGHT_PANELS - 1)) for i in range(MAX_WEIGHT_PANELS)})
    ncol = min(WEIGHT_COLS, len(pick))
    nrow = -(-len(pick) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.55 * ncol + 0.3, 1.2 * nrow + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, i in zip(axes.flat, pick):
        ax.set_visible(True)
        e, c = d["w_edges"][i], d["w_counts"][i]
        ax.stairs(c, e, fill=True, color=style.colour(0))
        ax.set_title(f"{names[i]}\nσ={d['w_std'][i]:.3g}, n={int(d['w_numel'][i])}", fontsize=5.8)
        ax.tick_params(labelsize=5.5)
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.set_yticks([])
        ax.grid(False)
    fig.tight_layout(h_pad=0.4, w_pad=0.3)
    style.save(fig, path)
    return {"cell": _cell_text(d), "n_layers": str(len(names)), "n_shown": str(len(pick))}


def draw_all(npz: Path, out_dir: Path) -> list[Path]:
    """The three figures of an inspect file into ``out_dir`` (rule ``inspect_cell_figures``, and the CLI)."""
    d, out = load(Path(npz)), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    with style.use():
        for f, name in (
            (activations, "activations.png"),
            (dead_channels, "dead_channels.svg"),
            (weight_histograms, "weight_hist.svg"),
        ):
            if f(d, out / name) is not None:
                drawn.append(out / name)
    return drawn


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m segsweep.report.inspect", description="Draw an inspect file.")
    ap.add_argument("npz", help="written by python -m segsweep.training.inspect")
    ap.add_argument("out_dir", help="folder for the three figures")
    args = ap.parse_args(argv)
    for p in draw_all(Path(args.npz), Path(args.out_dir)):
        print(p)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
