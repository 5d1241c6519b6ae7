"""A look inside a trained network: activations per level, dead channels, weight histograms (issue 15).

`inspect_cell` reruns a finished cell's ``best.pt`` on its validation images (``predictions.npz`` holds them on
the network grid) with a forward hook on every feature level the model names
(``SegmentationNet.feature_levels``: encoder stages, bottleneck, decoder levels; every output is post-ReLU, and
the model is in eval mode, so dropout is off) and writes one ``.npz`` that the report draws
(`segsweep.report.inspect`) without torch:

* ``images`` / ``masks`` [n,H,W], ``patient``, ``slice``: ``n_images`` validation images (the largest masks
  first among evenly spaced non-empty ones), ``levels`` / ``kinds`` (encoder | decoder) / ``n_channels``;
* ``mean_{i}`` [n,h,w]: level i's channel mean per shown image; ``top_{i}`` [n,k,h,w] and ``topch_{i}`` [k]: the
  ``top_k`` channels of level i with the largest mean activation over the whole validation set;
* ``dead_fraction`` [L]: share of level i's channels that are **dead**, i.e. exactly 0 at every position of every
  validation image (a ReLU that never fires: a sign of a too high learning rate, or a pruned-away filter);
* ``w_names``, ``w_counts`` [P,bins], ``w_edges`` [P,bins+1], ``w_std``, ``w_numel``: a histogram of each
  convolution's (and transposed convolution's) weights, on the layer's own range, in module order.

`inspect_study` does it for a study's validation-selected cell (the cell ``init_from: {study}`` would pick:
`segsweep.training.finetune.selected_cell`); a study without a finished run gets a file with ``cell = ""``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segsweep.errors import DataError
from segsweep.io import atomic_path
from segsweep.paths import BEST_CHECKPOINT, METRICS, PREDICTIONS
from segsweep.training import checkpoint
from segsweep.training.finetune import selected_cell
from segsweep.training.params import CellParams, InitFrom

N_IMAGES, TOP_K, BINS = 3, 6, 40


def _pick(mask: np.ndarray, n: int) -> list[int]:
    area = mask.reshape(len(mask), -1).astype(bool).sum(1)
    cand = np.flatnonzero(area > 0) if (area > 0).any() else np.arange(len(mask))
    if not len(cand):
        return []
    idx = sorted({int(cand[round(i * (len(cand) - 1) / max(1, n - 1))]) for i in range(min(n, len(cand)))})
    return sorted(idx, key=lambda i: -area[i])


def _weights(model: nn.Module) -> dict[str, np.ndarray]:
    names, counts, edges, std, numel = [], [], [], [], []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            w = m.weight.detach().float().flatten().cpu().numpy()
            lo, hi = float(w.min()), float(w.max())
            if hi <= lo:
                lo, hi = lo - 1e-6, hi + 1e-6
            c, e = np.histogram(w, bins=BINS, range=(lo, hi))
            names.append(name)
            counts.append(c)
            edges.append(e)
            std.append(float(w.std()))
            numel.append(w.size)
    return {
        "w_names": np.array(names, dtype=str),
        "w_counts": np.array(counts, dtype=np.int64).reshape(len(names), BINS),
        "w_edges": np.array(edges, dtype=np.float64).reshape(len(names), BINS + 1),
        "w_std": np.array(std, dtype=np.float64),
        "w_numel": np.array(numel, dtype=np.int64),
    }


def summarise(
    model: nn.Module, params: CellParams, images: np.ndarray, shown: Sequence[int], top_k: int = TOP_K
) -> dict:
    """The arrays of the module doc for ``images`` float32 [M,H,W] (a validation set) and the ``shown`` indices."""
    levels = model.feature_levels()
    outs: dict[int, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, i=i: outs.__setitem__(i, o)) for i, (_, _, m) in enumerate(levels)
    ]
    ch_max: list[torch.Tensor | None] = [None] * len(levels)
    ch_sum: list[torch.Tensor | None] = [None] * len(levels)
    keep: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(levels))}
    shown_set = set(shown)
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(images), 8):
                x = torch.from_numpy(np.ascontiguousarray(images[start : start + 8], np.float32)).unsqueeze(1)
                if params.in_channels == 3:
                    x = x.expand(-1, 3, -1, -1)
                outs.clear()
                model(x)
                rows = [j - start for j in range(start, start + len(x)) if j in shown_set]
                for i, o in outs.items():
                    o = o.float()
                    mx, sm = o.amax(dim=(0, 2, 3)), o.mean(dim=(2, 3)).sum(0)
                    ch_max[i] = mx if ch_max[i] is None else torch.maximum(ch_max[i], mx)
                    ch_sum[i] = sm if ch_sum[i] is None else ch_sum[i] + sm
                    keep[i] += [o[r].clone() for r in rows]
    finally:
        for h in hooks:
            h.remove()
    order = {j: k for k, j in enumerate(sorted(shown))}  # keep[i] is in image order; the figure wants `shown`'s
    out: dict[str, np.ndarray] = {
        "levels": np.array([n for n, _, _ in levels], dtype=str),
        "kinds": np.array([k for _, k, _ in levels], dtype=str),
        "n_channels": np.array([int(ch_max[i].numel()) for i in range(len(levels))], dtype=np.int64),
        "dead_fraction": np.array([float((ch_max[i] <= 0).float().mean()) for i in range(len(levels))]),
    }
    for i in range(len(levels)):
        maps = torch.stack([keep[i][order[j]] for j in shown]) if shown else torch.zeros(0, 1, 1, 1)
        k = min(top_k, maps.shape[1])
        top = torch.argsort(ch_sum[i], descending=True)[:k]
        out[f"mean_{i}"] = maps.mean(1).numpy().astype(np.float32)
        out[f"top_{i}"] = maps[:, top].numpy().astype(np.float32)
        out[f"topch_{i}"] = top.numpy().astype(np.int64)
    return out


def inspect_cell(cell_dir: Path, out_path: Path, n_images: int = N_IMAGES, top_k: int = TOP_K) -> dict:
    """Write the module doc's ``.npz`` for the finished cell in ``cell_dir``; returns its arrays."""
    from segsweep.training.model import MODELS

    cell_dir = Path(cell_dir)
    try:
        metrics = json.loads((cell_dir / METRICS).read_text())
        state = checkpoint.load(cell_dir / BEST_CHECKPOINT)["model"]  # CorruptCheckpoint names the file
        with np.load(cell_dir / PREDICTIONS, allow_pickle=False) as z:
            images, masks = z["image"], z["mask"]
            patient, slc = z["patient"].astype(str), z["slice"].astype(int)
    except FileNotFoundError as exc:
        raise DataError(f"cell {cell_dir.name}: {exc.filename} not found (a finished, ok cell has it)") from None
    params = CellParams.from_dict(metrics["params"])
    torch.manual_seed(0)
    model = MODELS[params.model](
        params, n_classes=int(next(v for k, v in state.items() if k.startswith("head.")).shape[0])
    )
    model.load_state_dict(state)
    shown = _pick(masks, n_images)
    arrays = summarise(model, params, images, shown, top_k)
    arrays.update(
        cell=np.array(cell_dir.name),
        model=np.array(params.model),
        images=images[shown].astype(np.float32),
        masks=masks[shown].astype(np.uint8),
        patient=patient[shown],
        slice=slc[shown],
        **_weights(model),
    )
    _write(out_path, arrays)
    return arrays


def _write(out_path: Path, arrays: dict) -> None:
    with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def inspect_study(study: str, studies_dir: Path, cells_dir: Path, out_path: Path, threads: int = 1) -> str:
    """`inspect_cell` for the study's validation-selected cell; returns its id ("" if the study has none)."""
    torch.set_num_threads(int(threads))
    try:
        cell = selected_cell(Path(studies_dir), InitFrom(study=study))
    except DataError:
        _write(out_path, {"cell": np.array("")})
        return ""
    inspect_cell(Path(cells_dir) / cell, out_path)
    return cell


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m segsweep.training.inspect", description=__doc__.split("\n")[0])
    ap.add_argument("cell_dir", help="a finished cell's folder, e.g. results/cells/<id>")
    ap.add_argument("out", help="the .npz to write (draw it with python -m segsweep.report.inspect)")
    args = ap.parse_args(argv)
    inspect_cell(Path(args.cell_dir), Path(args.out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
