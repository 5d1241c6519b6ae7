"""Fine-tuning: where a cell's initial weights come from, which parameters train, and at which learning rate.

Initial weights (`FineTune.initialise`, once per run, before a resume would overwrite them):

* ``pretrained``: a local torchvision state dict into the backbone's encoder (`backbones.load_pretrained`;
  its sha256 must still be the one the cell id was made from).
* ``init_from: {cell: <id>}``: that cell's ``best.pt`` (the whole network). The train rule waits for its
  metrics.json (best.pt is not a declared output: a failed cell has none), so the job checks the source's
  status and stops with a clear error unless it is ``ok``.
* ``init_from: {study: X}``: X's **validation-selected cell** (`selected_cell`): the best configuration of
  X's table (table.json's ``best``, the ranking rule of the table and the report), and of its ok runs the one
  with the best table value (the first in study order on ties). The train rule waits for X's table.json.

Modes (``finetune``), with the encoder as the model names it (``SegmentationNet.encoder_modules``):

=======================  ======================================================================================
full                     every parameter in one group (exactly the optimizer of a run without this option)
freeze_encoder           encoder ``requires_grad = False``; the optimizer gets only the other parameters
freeze_then_unfreeze     as freeze_encoder for ``unfreeze_epoch`` epochs; at the start of the next epoch the
                         encoder is unfrozen and added to the optimizer as a second group (fresh optimizer
                         state, the schedule's current LR). A resumed run adds the group before loading an
                         optimizer state that has it, so resume stays exact.
discriminative           two groups: the encoder at ``encoder_lr_factor`` × the LR, the rest at the LR
=======================  ======================================================================================

Frozen BatchNorm layers stay in eval mode (running statistics unchanged; ``SegmentationNet.train``). The
schedule multiplies each group's LR by its ``lr_factor`` (`segsweep.training.schedules.LRSchedule`), so every
schedule works unchanged in every mode. The LR the encoder's first step of an epoch used is logged as
``history.csv``'s ``lr_encoder`` (0 while frozen), next to ``lr`` (the other parameters').
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import torch
from torch import nn

from segsweep.errors import DataError
from segsweep.paths import BEST_CHECKPOINT, CELLS_CSV, METRICS, STUDIES_SUB, TABLE_JSON
from segsweep.training.blocks import SegmentationNet
from segsweep.training.finetune_modes import finetune_mode
from segsweep.training.optim import optimizer_factory
from segsweep.training.params import CellParams, InitFrom

ENCODER_GROUP = "encoder"


def selected_cell(studies_dir: Path, ref: InitFrom) -> str:
    """The validation-selected cell of study ``ref.study`` from its table.json and cells.csv (module doc).

    DataError when the table is missing, stale (other cells than the plan's) or has no ok run.
    """
    study_dir = Path(studies_dir) / str(ref.study)
    try:
        table = json.loads((study_dir / TABLE_JSON).read_text())
        with open(study_dir / CELLS_CSV, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError as exc:
        raise DataError(
            f"init_from study '{ref.study}': {exc.filename} not found (aggregate the study first)"
        ) from None
    if ref.cells and {r["cell"] for r in rows} != set(ref.cells):
        raise DataError(
            f"init_from study '{ref.study}': {study_dir / 'cells.csv'} lists other cells than the plan; "
            "rerun its aggregation (snakemake -R aggregate)"
        )
    best = table.get("best")
    value = table.get("value") or ref.value
    higher = table.get("higher_is_better", True if ref.higher_is_better is None else ref.higher_is_better)
    runs = []
    for i, r in enumerate(rows):
        if best is None or r.get("config") != best.get("config") or r.get("status") != "ok":
            continue
        try:
            v = float(r.get(value) or "nan")
        except ValueError:
            continue
        if v == v:  # not NaN
            runs.append((v if higher else -v, -i, r["cell"]))
    if not runs:
        raise DataError(f"init_from study '{ref.study}': no finished (ok) run to start from in {study_dir}")
    return max(runs)[2]


def source_checkpoint(ref: InitFrom, cells_dir: Path, studies_dir: Path) -> tuple[str, Path]:
    """(source cell id, its best.pt) for ``init_from``; DataError unless the source finished ``ok``."""
    src = ref.cell if ref.cell is not None else selected_cell(studies_dir, ref)
    metrics = Path(cells_dir) / src / METRICS
    try:
        status = json.loads(metrics.read_text()).get("status")
    except FileNotFoundError:
        raise DataError(f"init_from cell {src}: {metrics} not found (the source cell has not run)") from None
    if status != "ok":
        raise DataError(
            f"init_from cell {src} finished with status '{status}' ({metrics}): it has no weights to start from"
        )
    best = Path(cells_dir) / src / BEST_CHECKPOINT
    if not best.exists():
        raise DataError(f"init_from cell {src}: {best} not found although the cell is ok; rerun it (snakemake -R)")
    return src, best


def set_trainable(params: list[nn.Parameter], trainable: bool) -> None:
    for p in params:
        p.requires_grad_(trainable)


class FineTune:
    """One cell's initial weights, trainable parameters, optimizer parameter groups and unfreezing."""

    def __init__(self, params: CellParams, model: nn.Module):
        self.p, self.model, self.mode = params, model, params.finetune
        self.spec = finetune_mode(params)  # what the mode declares (segsweep.training.finetune_modes)
        if self.spec.needs_encoder and not isinstance(model, SegmentationNet):
            raise TypeError(f"finetune '{self.mode}' needs a SegmentationNet (it names the encoder)")
        self.encoder = model.encoder_parameters() if isinstance(model, SegmentationNet) else []
        enc = {id(p) for p in self.encoder}
        self.rest = [p for p in model.parameters() if id(p) not in enc]
        self.frozen = self.spec.starts_frozen
        if self.frozen:
            set_trainable(self.encoder, False)
        self.optimizer: torch.optim.Optimizer | None = None
        self.lr_encoder: float | None = None  # LR of the encoder's first step in the current epoch

    # -- initial weights
    def initialise(self, out_dir: Path, log: logging.Logger | None = None) -> str | None:
        """Load ``pretrained`` or ``init_from`` weights (module doc); returns what was loaded, for the log.

        ``out_dir`` is the cell's folder (``results/cells/<id>``): source cells are its siblings and a
        study's table lies in ``results/studies/<study>/``.
        """
        log = log or logging.getLogger("segsweep.train")
        if self.p.pretrained is not None:
            from segsweep.training.backbones import load_pretrained

            load_pretrained(self.model, self.p.pretrained.path, self.p.pretrained.sha256)
            what = f"pretrained encoder {self.p.pretrained.path} (sha256 {self.p.pretrained.sha256[:12]})"
        elif self.p.init_from is not None:
            cells_dir = Path(out_dir).parent
            src, best = source_checkpoint(self.p.init_from, cells_dir, cells_dir.parent / STUDIES_SUB)
            from segsweep.training import checkpoint

            state = checkpoint.load(best).get("model")  # CorruptCheckpoint (a DataError) names the file
            if state is None:
                raise DataError(f"init_from cell {src}: {best} holds no model weights")
            try:
                self.model.load_state_dict(state)
            except RuntimeError as exc:
                raise DataError(f"init_from cell {src}: {best} does not fit this cell's model ({exc})") from None
            what = f"weights of cell {src} ({best})"
        else:
            return None
        log.info("initialised from %s; finetune %s", what, self.mode)
        return what

    # -- optimizer
    def build_optimizer(self) -> torch.optim.Optimizer:
        """The cell's optimizer over its trainable parameters, in the mode's groups (module doc)."""
        make = optimizer_factory(self.p)
        factor = self.spec.encoder_lr_factor()
        if not self.frozen and factor is None:
            trainable = [p for p in self.model.parameters() if p.requires_grad]
            if not trainable:
                raise ValueError("the model has no trainable parameters")
            self.optimizer = make(trainable)
        elif not self.frozen:
            self.optimizer = make(
                [{"params": self.rest}, {"params": self.encoder, "lr_factor": factor, "name": ENCODER_GROUP}]
            )
        else:
            self.optimizer = make([{"params": self.rest}])
            # a resumed run's optimizer state may already hold the encoder's group: add it first
            self.optimizer.register_load_state_dict_pre_hook(self._before_load)
        return self.optimizer

    def _before_load(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if self.spec.unfreeze_at() is not None and len(state["param_groups"]) > len(optimizer.param_groups):
            self._unfreeze()

    def _unfreeze(self, lr: float | None = None) -> None:
        set_trainable(self.encoder, True)
        self.frozen = False
        group = {"params": self.encoder, "lr_factor": 1.0, "name": ENCODER_GROUP}
        if lr is not None:
            group["lr"] = lr
        self.optimizer.add_param_group(group)

    def start_epoch(self, epoch0: int, lr: float) -> None:
        """Called before each epoch (0-based ``epoch0``; ``lr`` = the schedule's LR of its first step):
        unfreezes when due, and notes the encoder's LR for history.csv."""
        at = self.spec.unfreeze_at()
        if at is not None and self.frozen and epoch0 >= at:
            self._unfreeze(lr)
            logging.getLogger("segsweep.train").info("epoch %d: encoder unfrozen", epoch0 + 1)
        self.lr_encoder = self.encoder_lr(lr)

    def encoder_lr(self, lr: float) -> float:
        """The LR the encoder's parameters get now: 0 while frozen, else their group's."""
        if self.frozen:
            return 0.0
        for g in self.optimizer.param_groups if self.optimizer is not None else ():
            if g.get("name") == ENCODER_GROUP:
                return float(g["lr"])
        return float(lr)
