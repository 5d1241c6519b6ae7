"""Train one cell: in-memory tensors, batched on-device augmentation, early stopping, checkpoints + resume.

Decisions (the contract the rest of the pipeline relies on):

* **Data** (`segsweep.training.cell_data`). All training and validation images of the cell's patients are
  loaded once, as float32 tensors on the training device (a study's data set is a few hundred 2D slices: tens of MB). ``in_channels = 3``
  replicates the grey channel *after* augmentation (an ``expand``, no copy in memory).
* **Batches.** Each epoch visits the training images in a new random order drawn from a generator seeded by
  the cell seed. The last, smaller batch is **kept**: with small training fractions (a few patients) dropping
  it would discard a noticeable share of the data, and keeping it means every image is seen every epoch.
  Steps per epoch = ceil(n_train / batch_size); schedules are told that number.
* **No per-step host syncs.** Losses and validation sums accumulate in device tensors; the host reads them
  once per epoch (one ``tolist()``). Hence divergence is detected at the epoch's end: a non-finite mean
  training (or validation) loss stops the run with status ``diverged`` — a normal return, not an error.
  Its metrics.json has every quality field (Dice, IoU, HD95, best_epoch) null, ``epochs_run`` = the epoch
  it diverged in and ``reason`` naming epoch and value; per_image.csv is header-only, predictions.npz empty.
  A finite-loss run whose best checkpoint predicts (almost) nothing or everything on the validation slices
  that contain the structure is ``collapsed`` (`segsweep.training.evaluate.collapse_reason`): its outputs and
  numbers are written as for ``ok``, ``reason`` says which way and the measured fractions.
* **Logged LR** (``history.csv`` column ``lr``) is the LR of the epoch's *first* optimizer step; per-step
  schedules move it within the epoch. ``train_loss`` is the mean data loss over the epoch's images
  (without the regulariser penalty, so cells with and without a penalty compare); ``val_loss`` likewise
  over validation images; ``val_dice`` / ``val_iou`` are means of per-image scores (both masks empty → 1)
  of ``sigmoid(logits) > 0.5``.
* **Early stopping** on validation Dice: stop after ``patience`` epochs without a strict improvement.
  ``best.pt`` holds the best epoch's weights; it is restored for the final evaluation (``per_image.csv``,
  ``per_patient.csv``, ``predictions.npz``, HD95, NSD), which runs once at the end because the distance
  metrics are computed in numpy. The per-epoch validation Dice on the network grid is only the *monitor*
  (early stopping, best.pt, ``best_val_dice``); the final evaluation maps the best checkpoint's predictions
  of the validation and test patients back to the native grid and scores them there
  (`segsweep.training.final_evaluation`, `segsweep.training.evaluate`, docs/evaluation.md); the network's
  part runs first, then the training device is let go (`_Trainer.release`) before the CPU scoring. Test patients (the split's ``test``) are loaded only
  then and never influence training, stopping or the checkpoint.
* **Resume.** ``last.pt`` is written atomically at an epoch's end (model, optimizer, schedule, every random
  generator's state, early-stopping state, history): by default after every epoch; ``checkpoint_every_epochs``
  / ``checkpoint_every_s`` (config ``resources``, an execution setting outside the cell id) write it only
  once that many epochs or seconds have passed since the last write, and always after the run's last epoch
  (horizon, early stop, divergence, a rung's ``stop_at``) and on a stop signal. When it exists at start
  (same parameters) training continues from it, also from an older epoch than the latest trained (a job
  killed between two writes retrains the epochs since); on the CPU the result is bit-identical to an
  uninterrupted run. A finished run's ``last.pt`` makes a rerun only redo the (deterministic) final
  evaluation. ``best.pt`` is written together with ``last.pt`` (just before it): a new best epoch's
  weights wait in memory until then, so ``best.pt`` always holds the best epoch of the state ``last.pt``
  resumes (a job killed between writes loses both, and the retrained epochs write them again).
  Both are written and read by `segsweep.training.checkpoint` (fsync + rename, a SHA-256 sidecar verified
  on every load), written by a background thread (`checkpoint.Writer`) from a CPU snapshot taken at the
  epoch's end, so the next epoch trains while the file is written; one write in flight at a time, joined
  before the next, before best.pt is read back, on a stop signal and before the cell returns (metrics.json
  is written after its checkpoints are on disk). A corrupt ``last.pt`` starts the cell afresh; a corrupt ``best.pt`` is ignored in favour
  of ``last.pt`` and, unless a later epoch beats it, rebuilt before the final evaluation by replaying the
  epochs up to the best one (`_best_state`): a finished cell is re-evaluated, never ``failed``.
* **Stop signals** (SIGTERM, SIGUSR1: Slurm's time-limit warning, preemption, scancel; `preempt`). The flag
  is read after every optimizer step; when set, ``last.pt`` is written *inside* the epoch (version
  ``PARTIAL_CHECKPOINT_VERSION``: the state above after the step, plus ``partial``: the epoch's image order,
  the steps done, the device loss sum, its first-step LRs) and `preempt.Preempted` is raised, which the job
  turns into an exit for the retry, never a ``failed`` cell. Resuming goes on with the next step of that
  epoch (no new shuffle draw), so the numbers stay those of an uninterrupted run. A signal before an epoch's
  first step (e.g. while the data load) stops there, with last.pt as it was; one during the final
  evaluation lets it finish.
* **Failures.** A crash (CUDA OOM, I/O error...) propagates: `segsweep.training.job.run_train_job` decides between a
  Snakemake retry (which resumes from ``last.pt``) and recording status ``failed``. User errors (missing
  files, bad split) raise `DataError` / `ConfigError` naming the file; the job never records them as failed.
* **Privacy.** Outputs carry only pseudonymous patient ids (the npz names) and slice indices; no DICOM
  header value ever reaches this module.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segsweep.errors import ConfigError
from segsweep.io import write_text
from segsweep.paths import BEST_CHECKPOINT, HISTORY, LAST_CHECKPOINT, METRICS
from segsweep.training import checkpoint, preempt
from segsweep.training.augment import Augmenter
from segsweep.training.cell_data import CellData, load_cell_data
from segsweep.training.device import hardware_description, resolve_device, resolve_speed_settings
from segsweep.training.evaluate import collapse_reason
from segsweep.training.final_evaluation import final_evaluation, write_empty_evaluation
from segsweep.training.params import CellParams
from segsweep.training.record import CellMetrics

HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_dice", "val_iou", "epoch_s", "lr_encoder")
CHECKPOINT_VERSION = 1  # last.pt written after a whole epoch
# last.pt written inside an epoch on a stop signal: version 1 plus its "partial" section. A number of its own
# so that a segsweep predating it starts afresh instead of resuming at the epoch's start (other numbers).
PARTIAL_CHECKPOINT_VERSION = 2


# ----------------------------------------------------------------------------------------- components
def batch_bounds(n: int, batch_size: int, min_batch: int = 1) -> list[tuple[int, int]]:
    """``[start, end)`` of each batch of an epoch's ``n`` shuffled images: ``batch_size`` each, the last the
    rest; a rest smaller than ``min_batch`` (`ModelSpec.min_batch`: 2 under a 1×1 BatchNorm bottleneck,
    where a lone image cannot be normalised) joins the batch before it. With ``min_batch`` 1 (every cell
    whose training this never crashed) the batches are exactly those of ``range(0, n, batch_size)``."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_batch:
        bounds[-2:] = [(bounds[-2][0], n)]
    if n < min_batch:
        raise ConfigError(
            f"{n} training image(s): a 1×1 BatchNorm bottleneck needs at least {min_batch} per batch "
            "(config keys 'depth', 'batch_norm'; or more training data)"
        )
    return bounds


def _seeds(seed: int) -> tuple[int, int]:
    """Independent seeds for the shuffle and augmentation streams, derived from the cell seed."""
    a, b = np.random.SeedSequence([int(seed), 0x5E65]).generate_state(2)
    return int(a), int(b)


def _format_row(row: dict) -> list[str]:
    # .get: rows of a last.pt written before a column existed (lr_encoder) leave it empty
    return [repr(v) if isinstance(v := row.get(c, ""), float) else str(v) for c in HISTORY_COLUMNS]


def _history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HISTORY_COLUMNS)
    for row in history:
        w.writerow(_format_row(row))
    return buf.getvalue()


GPU_EVERY_S = 60  # the default last.pt interval on a GPU (`CheckpointEvery.for_device`)


@dataclass(frozen=True)
class CheckpointEvery:
    """When an epoch's end writes ``last.pt`` (config ``resources.checkpoint_every_epochs`` / ``_s``; module
    docstring, Resume): once ``epochs`` epochs (0: never by count) or ``seconds`` seconds (0: never by time)
    have passed since the last write. The run's last epoch and a stop signal write it regardless."""

    epochs: int = 1
    seconds: float = 0

    def __post_init__(self):
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(
                f"config key 'resources.checkpoint_every_epochs': {self.epochs!r} is not a whole number >= 0"
            )
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int | float) or not self.seconds >= 0:
            raise ConfigError(f"config key 'resources.checkpoint_every_s': {self.seconds!r} is not a number >= 0")

    @classmethod
    def for_device(cls, device_type: str) -> CheckpointEvery:
        """The default (neither config key set): after every epoch on the CPU, where an epoch takes seconds or
        more; every ``GPU_EVERY_S`` seconds on a GPU, where an epoch can take a tenth of a second and writing
        a 23 MB ``last.pt`` (~0.09 s here) after each would cost more than the epoch (benchmarks/README.md, 5b)."""
        return cls(1, 0) if device_type == "cpu" else cls(0, GPU_EVERY_S)

    def describe(self) -> str:
        """For the log: 'every 3 epochs or every 600 s,' / 'only' (then: 'after the last epoch...')."""
        parts = []
        if self.epochs > 0:
            parts.append(f"every {self.epochs} epoch" + ("s" if self.epochs != 1 else ""))
        if self.seconds > 0:
            parts.append(f"every {self.seconds:g} s")
        return " or ".join(parts) + "," if parts else "only"

    def due(self, epochs_since: int, seconds_since: float) -> bool:
        return (self.epochs > 0 and epochs_since >= self.epochs) or (self.seconds > 0 and seconds_since >= self.seconds)


class _StopInEpoch(Exception):
    """`_Trainer.train_epoch` stopped after a step on a stop signal; ``state`` is what a mid-epoch last.pt
    needs to go on inside the epoch (its ``partial`` section)."""

    def __init__(self, state: dict):
        super().__init__(f"stopped after step {state['step']}")
        self.state = state


class _Trainer:
    """One cell's training state: model, optimizer, schedule, random generators; `train_epoch` trains one
    epoch, `predict` validates, `logits` serves the final evaluation. `train_cell` drives it."""

    def __init__(self, params: CellParams, data: CellData, device: torch.device, amp: bool, channels_last: bool):
        from segsweep.training.finetune import FineTune
        from segsweep.training.losses import build_loss
        from segsweep.training.model import MODELS
        from segsweep.training.regularizers import penalty, settings_of
        from segsweep.training.schedules import LRSchedule

        self.p, self.data, self.device = params, data, device
        self.amp, self.channels_last = amp, channels_last
        torch.manual_seed(params.seed)  # weight init + dropout masks (global generators, CPU and CUDA)
        # Built on the CPU, then moved: the same seed gives the same initial weights on every device.
        self.model = MODELS[params.model](params, n_classes=data.n_outputs).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(params.loss)  # Python floats only: nothing to move to the device
        # trainable parameters and their groups (segsweep.training.finetune; "full": one group, as ever)
        self.finetune = FineTune(params, self.model)
        self.optimizer = self.finetune.build_optimizer()
        size = tuple(data.x_train.shape[-2:])
        self.batches = batch_bounds(data.n_train, params.batch_size, MODELS[params.model].min_batch(params, size))
        self.steps_per_epoch = len(self.batches)
        self.schedule = LRSchedule(params.schedule, self.optimizer, params.lr, self.steps_per_epoch, params.epochs)
        self._penalty = penalty
        self._reg_settings = settings_of(params)  # e.g. reg_l1_ratio, for the kinds that read it
        shuffle_seed, aug_seed = _seeds(params.seed)
        self.shuffle_gen = torch.Generator().manual_seed(shuffle_seed)
        self.augmenter = Augmenter(params.augment, aug_seed, device)
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=amp)

    # -- one batch's input in the model's layout
    def _target(self, y: torch.Tensor) -> torch.Tensor:
        """The loss's target: the 0/1 mask [B,1,H,W] (binary), or label values one-hot [B,C,H,W] (softmax)."""
        if self.data.n_outputs == 1:
            return y
        return F.one_hot(y[:, 0].long(), self.data.n_outputs).permute(0, 3, 1, 2).to(y.dtype)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if self.p.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train_epoch(
        self, partial: Mapping | None = None, stop: Callable[[], object] | None = None
    ) -> tuple[float, torch.Tensor]:
        """One pass over the training images. Returns (LR of the first step, device sum of batch losses × size).

        ``partial``: a mid-epoch last.pt's section: go on after its step, with its order, sums and LRs (the
        shuffle draw and `FineTune.start_epoch` of this epoch happened before it was written). ``stop``:
        asked after every step but the epoch's last (a flag read, no sync); true raises `_StopInEpoch`.
        """
        p, d = self.p, self.data
        if partial is None:
            order = torch.randperm(d.n_train, generator=self.shuffle_gen)
            loss_sum = torch.zeros((), device=self.device)
            lr_first = float(self.schedule.lr)
            self.finetune.start_epoch(self.schedule.step_count // self.steps_per_epoch, lr_first)
            # after start_epoch: an encoder unfrozen now has its BatchNorm in train mode from this epoch on
            # (SegmentationNet.train keeps only frozen BatchNorm in eval)
            self.model.train()
            done = 0
        else:
            order, loss_sum = partial["perm"], partial["loss_sum"].to(self.device)
            lr_first, self.finetune.lr_encoder, done = partial["lr_first"], partial["lr_encoder"], partial["step"]
            # the modes the interrupted epoch ran in, as recorded
            for m, training in zip(self.model.modules(), partial["training"], strict=True):
                m.training = training
        perm = order.to(self.device, non_blocking=True)
        modes = [m.training for m in self.model.modules()]
        reg = p.regularizer != "none"
        for step, (start, end) in enumerate(self.batches[done:], start=done + 1):
            idx = perm[start:end]
            x, y = d.x_train[idx], d.y_train[idx]
            if self.augmenter.active:
                x, y = self.augmenter(x, y)
            with torch.autocast(**self.autocast):
                logits = self.model(self._input(x))
            loss = self.loss_fn(logits, self._target(y))
            total = loss
            if reg:
                total = loss + self._penalty(self.model, p.regularizer, p.reg_lambda, p.reg_on, **self._reg_settings)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if p.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), p.grad_clip)
            self.optimizer.step()
            self.schedule.step()
            logged = loss.detach()
            if reg:  # log the data loss, but let a blown-up penalty turn it NaN so divergence is still seen
                logged = logged + 0.0 * total.detach()
            loss_sum += logged * idx.numel()
            if stop is not None and step < self.steps_per_epoch and stop():
                raise _StopInEpoch(
                    {
                        "step": step,
                        "perm": order,
                        "loss_sum": loss_sum.detach().cpu(),
                        "lr_first": lr_first,
                        "lr_encoder": self.finetune.lr_encoder,
                        "training": modes,
                    }
                )
        return lr_first, loss_sum

    def predict(self, x_all: torch.Tensor, y_all: torch.Tensor, keep_pred: bool = False):
        """Validation in batches: (loss sum, per-image Dice [M], per-image IoU [M], optional pred uint8 [M,H,W])."""
        from segsweep.training.metrics import class_dice_iou, dice_per_image, iou_per_image

        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        dice, iou, preds = [], [], []
        bs = self.p.batch_size  # as in training, so validation never needs more memory than training
        with torch.inference_mode():
            for start in range(0, x_all.shape[0], bs):
                x, y = x_all[start : start + bs], y_all[start : start + bs]
                with torch.autocast(**self.autocast):
                    logits = self.model(self._input(x))
                loss_sum += self.loss_fn(logits, self._target(y)) * x.shape[0]
                if self.data.n_outputs == 1:
                    pred = logits > 0  # sigmoid(z) > 0.5  ⇔  z > 0, without computing the sigmoid
                    truth = y > 0.5
                    dice.append(dice_per_image(pred, truth))
                    iou.append(iou_per_image(pred, truth))
                    pred = pred[:, 0]
                else:  # softmax: the most probable label; Dice/IoU the mean over the foreground classes
                    pred = logits.argmax(1)
                    d, j = class_dice_iou(pred, y[:, 0].long(), self.data.n_outputs)
                    dice.append(d)
                    iou.append(j)
                if keep_pred:
                    preds.append(pred.to(torch.uint8))
        out = (loss_sum, torch.cat(dice), torch.cat(iou))
        return out + ((torch.cat(preds) if keep_pred else None),)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits float32 (CPU) of network-grid images float32 [B,H,W], in training-size batches: [B,H,W] for
        one sigmoid channel, [B,C,H,W] for softmax outputs."""
        self.model.eval()
        out = []
        bs = self.p.batch_size
        with torch.inference_mode():
            for start in range(0, len(x), bs):
                xb = torch.from_numpy(np.ascontiguousarray(x[start : start + bs], dtype=np.float32))
                xb = xb.unsqueeze(1).to(self.device)
                with torch.autocast(**self.autocast):
                    z = self.model(self._input(xb))
                out.append((z[:, 0] if z.shape[1] == 1 else z).float().cpu().numpy())
        if not out:
            n = self.data.n_outputs
            return np.zeros((0, *x.shape[1:]) if n == 1 else (0, n, *x.shape[1:]), np.float32)
        return np.concatenate(out)

    def release(self) -> None:
        """Let the training device go (the final evaluation's CPU part, `segsweep.training.final_evaluation`):
        weights and images moved to the CPU, the optimizer state dropped, CUDA's cached blocks returned.
        Nothing to do on the CPU. The trainer can still `predict` and give `logits` afterwards, on the CPU."""
        if self.device.type == "cpu":
            return
        self.model.to("cpu")
        self.optimizer.state.clear()
        for name in ("x_train", "y_train", "x_val", "y_val"):
            setattr(self.data, name, getattr(self.data, name).cpu())
        self.device = torch.device("cpu")
        self.autocast = {**self.autocast, "device_type": "cpu"}
        torch.cuda.empty_cache()

    # -- checkpoints
    def rng_state(self) -> dict:
        state = {
            "torch": torch.get_rng_state(),
            "shuffle": self.shuffle_gen.get_state(),
            "augment": self.augmenter.state_dict(),
            "device_type": self.device.type,
        }
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_rng_state(self, state: dict, log: logging.Logger) -> None:
        torch.set_rng_state(state["torch"])
        self.shuffle_gen.set_state(state["shuffle"])
        if state.get("device_type") == self.device.type:
            self.augmenter.load_state_dict(state["augment"])
            if self.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda"], self.device)
        else:
            log.warning(
                "resuming on %s a run checkpointed on %s: augmentation and dropout random streams "
                "differ from an uninterrupted run",
                self.device.type,
                state.get("device_type"),
            )


# ---------------------------------------------------------------------------------------------- driver
@preempt.stop_signals_caught  # SIGTERM / SIGUSR1: a mid-epoch last.pt and `preempt.Preempted` (module docstring)
def train_cell(
    params: CellParams,
    data_dir: Path,
    split_path: Path,
    out_dir: Path,
    *,
    threads: int = 1,
    device: str = "auto",
    log: logging.Logger | None = None,
    amp: bool | str = False,
    channels_last: bool | str = False,
    on_epoch: Callable[[dict], None] | None = None,
    evaluation: Mapping | None = None,
    stop_at: int | None = None,
    checkpoint_every_epochs: int = 1,
    checkpoint_every_s: float = 0,
    checkpoint_auto: bool = False,
) -> CellMetrics | dict:
    """Train one cell and write its outputs to ``out_dir``; return its `CellMetrics` (also metrics.json).

    ``stop_at`` (a pruner's rung, `segsweep.plan.pruning`): train only up to that epoch, keep ``last.pt``, skip
    the final evaluation and return `rung_summary` instead. The schedule's horizon stays ``params.epochs``,
    so a later call without ``stop_at`` continues exactly where an uninterrupted run would be; a ``last.pt``
    already past ``stop_at`` trains nothing (the summary is read from its history).

    ``evaluation`` is the config's ``evaluation`` section (NSD tolerance, HD95 cap) for the final evaluation.

    ``amp`` (bf16 autocast) and ``channels_last`` are speed options for GPUs, off by default here and not part
    of the cell's parameters (they do not change what is being compared, only rounding); "auto" (the config's
    default) turns them on where the training device suits them (`device.resolve_speed_settings`: decided
    and logged here, recorded in metrics.json ``execution``). ``on_epoch`` is called
    with each epoch's history row at the epoch's very end, after ``last.pt`` when one was due (its background
    write waited for, so the callback may read it; progress reporting; tests use it to interrupt a run).
    SIGTERM / SIGUSR1 while it trains: a mid-epoch ``last.pt``, then `preempt.Preempted`.

    ``checkpoint_every_epochs`` (0: never by count) and ``checkpoint_every_s`` (0: never by time) say when an
    epoch's end writes ``last.pt`` (and a pending ``best.pt``): once that many epochs, or seconds, have passed
    since the last write (or since this call began training). It is always written after the run's last
    epoch and on a stop signal. Like ``amp`` they are execution settings (config ``resources``), outside the
    cell's parameters: they change how much a killed job retrains, never the numbers. ``checkpoint_auto``
    (the config's default, neither key set): the training device decides instead (`CheckpointEvery.for_device`).
    """
    t_start = time.perf_counter()
    log = log or logging.getLogger("segsweep.train")
    every = CheckpointEvery(checkpoint_every_epochs, checkpoint_every_s)  # checked before any work
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(threads))
    dev = resolve_device(device, log)
    amp, channels_last = resolve_speed_settings(amp, channels_last, dev, log)
    if checkpoint_auto:
        every = CheckpointEvery.for_device(dev.type)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    data = load_cell_data(params, Path(data_dir), Path(split_path), dev)
    log.info(
        "cell %s: %d training images (%d patients), %d validation images (%d patients), %d test patients "
        "(final evaluation only), device %s",
        out_dir.name,
        data.n_train,
        len(data.train_patients),
        data.n_val,
        len(data.val_patients),
        len(data.test_patients),
        dev,
    )
    tr = _Trainer(params, data, dev, amp, channels_last)
    tr.finetune.initialise(out_dir, log)  # pretrained / init_from weights (a resume overwrites them)

    run = _resume(tr, params, out_dir / LAST_CHECKPOINT, out_dir / BEST_CHECKPOINT, log)
    horizon = params.epochs if stop_at is None else min(int(stop_at), params.epochs)
    if every != CheckpointEvery():
        how = f" (resources.checkpoint_every_*: not set, so decided on the {dev.type})" if checkpoint_auto else ""
        log.info("last.pt written %s after the last epoch and on a stop signal%s", every.describe(), how)
    # joined on the way out, whatever the way: a cell never returns (nor stops) with a write in flight
    with checkpoint.Writer(log=log) as writer:
        saver = _Saver(tr, run, out_dir, writer, t_start)
        _train_epochs(tr, run, saver, horizon, every, out_dir, log, on_epoch)
        write_text(out_dir / HISTORY, _history_csv(run.history))
        if stop_at is not None:
            return rung_summary(run.history, int(stop_at), params.patience, run.wall_s(t_start))
        if run.stopped == "diverged":
            # no model of this run is reported: every quality field stays null; epochs_run is the diverging epoch
            status, best_epoch, quality = "diverged", None, {}
            write_empty_evaluation(out_dir, data)
        else:
            status, best_epoch = "ok", run.best["epoch"]
            best_state = saver.best_state(log)
            final = final_evaluation(tr, data, best_state, out_dir, Path(data_dir), evaluation, log)
            quality = {**final, "final_val_dice": run.history[-1]["val_dice"]}
            collapsed = collapse_reason(final["val_collapse"])
            if collapsed:  # a finite loss, but a model that predicts (almost) nothing or everything: numbers kept
                status, run.reason = "collapsed", collapsed + (f"; {run.reason}" if run.reason else "")
                log.warning("cell %s collapsed: %s", out_dir.name, collapsed)
        writer.wait()  # last.pt and best.pt on disk before metrics.json says the cell is finished
    metrics = CellMetrics(
        cell=out_dir.name,
        status=status,
        reason=run.reason,
        best_epoch=best_epoch,
        epochs_run=len(run.history),
        wall_s=round(run.wall_s(t_start), 3),
        n_train=data.n_train,
        n_val=data.n_val,
        device=dev.type,
        hardware=hardware_description(dev),
        params=params.to_dict(),
        execution={
            "amp": bool(amp),
            "channels_last": bool(channels_last),
            "threads": torch.get_num_threads(),
            "device_requested": device,
        },
        **quality,
    )
    metrics.write(out_dir / METRICS)
    log.info(
        "cell %s: %s, best val Dice %s at epoch %s, %.1f s",
        out_dir.name,
        metrics.status,
        metrics.best_val_dice,
        metrics.best_epoch,
        metrics.wall_s,
    )
    return metrics


@dataclass
class _Run:
    """A cell's progress besides the trainer's state (what last.pt holds with it): the history rows, the best
    epoch so far, the epochs without a gain, why it stopped, the wall time of earlier attempts, and the
    ``partial`` section of a mid-epoch last.pt (the first epoch goes on inside it, `_Trainer.train_epoch`)."""

    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"dice": -math.inf, "epoch": None})
    bad_epochs: int = 0
    stopped: str | None = None
    reason: str | None = None
    wall_before: float = 0.0
    partial: dict | None = None

    def wall_s(self, t_start: float) -> float:
        return self.wall_before + time.perf_counter() - t_start


def _resume(tr: _Trainer, params: CellParams, last_path: Path, best_path: Path, log: logging.Logger) -> _Run:
    """The run so far: from ``last_path`` when it verifies and belongs to these parameters (the trainer's
    state restored from it), else a fresh one."""
    ckpt = _load_checkpoint(last_path, log) if last_path.exists() else None
    if ckpt is None:
        return _Run()
    if not params.same_run(ckpt.get("params")) or not _resumable(ckpt, tr.steps_per_epoch, tr.data.n_train):
        log.warning("%s belongs to other parameters or another version: starting afresh", last_path)
        return _Run()
    tr.model.load_state_dict(ckpt["model"])
    tr.optimizer.load_state_dict(ckpt["optimizer"])
    tr.schedule.load_state_dict(ckpt["schedule"])
    tr.load_rng_state(ckpt["rng"], log)
    run = _Run(
        history=ckpt["history"],
        best=ckpt["best"],
        bad_epochs=ckpt["bad_epochs"],
        stopped=ckpt["stopped"],
        reason=ckpt["reason"],
        wall_before=ckpt["wall_s"],
        partial=ckpt.get("partial"),
    )
    if run.partial is None:
        log.info("resuming from %s after epoch %d", last_path, len(run.history))
    else:
        log.info(
            "resuming from %s inside epoch %d, after step %d/%d",
            last_path,
            run.partial["epoch"],
            run.partial["step"],
            tr.steps_per_epoch,
        )
    if run.best["epoch"] is not None:
        # best.pt is written just before last.pt, so it can only be newer when a job died between the
        # two writes (or was written by a segsweep that saved it at once): the epochs retrained now
        # write it again (on the CPU the same weights). A corrupt one is ignored in favour of last.pt:
        # a later best epoch rewrites it, else `_best_state` rebuilds it before the final evaluation.
        try:
            saved = checkpoint.load(best_path)["epoch"]
            if saved != run.best["epoch"]:
                log.warning("%s holds epoch %s, last.pt expects %s", best_path, saved, run.best["epoch"])
        except (checkpoint.CorruptCheckpoint, KeyError) as exc:
            log.warning("%s; ignored: resuming from %s", exc, last_path)
            checkpoint.remove(best_path)
    return run


class _Saver:
    """Writes a cell's best.pt and last.pt through ``writer`` (`checkpoint.Writer`: in the background) and
    remembers what they hold (module docstring, Resume)."""

    def __init__(self, tr: _Trainer, run: _Run, out_dir: Path, writer: checkpoint.Writer, t_start: float):
        self.tr, self.run, self.writer, self.t_start = tr, run, writer, t_start
        self.out_dir, self.last_path, self.best_path = out_dir, out_dir / LAST_CHECKPOINT, out_dir / BEST_CHECKPOINT
        # best.pt's content for a best epoch since the last write of last.pt: written just before the next one
        self.pending_best: dict | None = None
        self.written_best: dict | None = None  # the snapshot of the best.pt last handed to the background writer
        self.saved_epochs, self.saved_at = len(run.history), time.perf_counter()  # what last.pt holds, since when

    def new_best(self, epoch: int, val_dice: float) -> None:
        self.pending_best = {
            "model": self.tr.model.state_dict(),
            "epoch": epoch,
            "val_dice": val_dice,
            "params": self.tr.p.to_dict(),
        }

    def save(self, partial_state: dict | None = None) -> None:
        """Write the pending best.pt, then last.pt (after ``len(history)`` epochs, plus ``partial_state``)."""
        run = self.run
        items = [(self.pending_best, self.best_path)] if self.pending_best is not None else []
        ckpt = _checkpoint(self.tr, run, run.wall_s(self.t_start), partial_state)
        written = self.writer.submit([*items, (ckpt, self.last_path)])
        if items and self.writer.background:
            self.written_best = written[0]
        self.pending_best = None
        self.saved_epochs, self.saved_at = len(run.history), time.perf_counter()

    def epoch_end(self, epoch: int, last_epoch: bool, every: CheckpointEvery) -> None:
        """last.pt when due (module docstring, Resume); else a best epoch's weights kept until the next write."""
        if last_epoch or every.due(len(self.run.history) - self.saved_epochs, time.perf_counter() - self.saved_at):
            self.save()
        elif self.pending_best is not None and self.pending_best["epoch"] == epoch:
            # kept until the next write: a copy, as training goes on changing the model's tensors in place
            self.pending_best["model"] = {k: v.detach().clone() for k, v in self.pending_best["model"].items()}

    def best_state(self, log: logging.Logger) -> dict:
        """best.pt's content for the final evaluation: the snapshot being written when it holds the run's best
        epoch (no read back, and the evaluation need not wait for the write), else the file (`_best_state`)."""
        best = self.run.best
        if self.written_best is not None and self.written_best["epoch"] == best["epoch"]:
            return self.written_best
        self.writer.wait()  # best.pt may be the file in flight
        return _best_state(self.tr, self.best_path, best, self.out_dir, log)


def _train_epochs(
    tr: _Trainer,
    run: _Run,
    saver: _Saver,
    horizon: int,
    every: CheckpointEvery,
    out_dir: Path,
    log: logging.Logger,
    on_epoch: Callable[[dict], None] | None,
) -> None:
    """Train epochs until ``horizon``, an early stop or divergence (``run`` records which), writing
    history.csv after each and last.pt when due; a stop signal writes last.pt and raises `preempt.Preempted`."""
    p, data = tr.p, tr.data
    while run.stopped is None and len(run.history) < horizon:
        epoch = len(run.history) + 1
        partial = run.partial
        if signum := preempt.requested():  # came since the last step (data load, last epoch's end)
            if len(run.history) > saver.saved_epochs:  # epochs since the last write of last.pt: write it now
                saver.save()
            saver.writer.wait()
            saved = saver.last_path if run.history or partial else None
            raise preempt.Preempted(signum, epoch, partial["step"] if partial else 0, tr.steps_per_epoch, saved)
        t0 = time.perf_counter() - (partial["epoch_s"] if partial else 0.0)
        try:
            lr, train_sum = tr.train_epoch(partial, preempt.requested)
        except _StopInEpoch as stop:  # a stop signal: save the epoch so far (module docstring, Stop signals)
            saver.save({**stop.state, "epoch": epoch, "epoch_s": time.perf_counter() - t0})
            saver.writer.wait()
            raise preempt.Preempted(
                preempt.requested(), epoch, stop.state["step"], tr.steps_per_epoch, saver.last_path
            ) from None
        run.partial = None
        val_sum, dice, iou, _ = tr.predict(data.x_val, data.y_val)
        # The one host sync of the epoch.
        tl, vl, vd, vi = torch.stack([train_sum / data.n_train, val_sum / data.n_val, dice.mean(), iou.mean()]).tolist()
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": tl,
            "val_loss": vl,
            "val_dice": vd,
            "val_iou": vi,
            "epoch_s": round(time.perf_counter() - t0, 4),
            "lr_encoder": tr.finetune.lr_encoder,  # the encoder group's LR (0 while frozen; finetune.py)
        }
        run.history.append(row)
        if not math.isfinite(tl) or not math.isfinite(vl):
            which, value = ("training", tl) if not math.isfinite(tl) else ("validation", vl)
            run.stopped, run.reason = "diverged", f"non-finite {which} loss ({value}) in epoch {epoch}"
            log.warning("cell %s diverged: %s", out_dir.name, run.reason)
        else:
            log.info(
                "epoch %d/%d lr %.3g train_loss %.4f val_loss %.4f val_dice %.4f val_iou %.4f (%.1f s)",
                epoch,
                p.epochs,
                lr,
                tl,
                vl,
                vd,
                vi,
                row["epoch_s"],
            )
            if vd > run.best["dice"]:
                run.best, run.bad_epochs = {"dice": vd, "epoch": epoch}, 0
                saver.new_best(epoch, vd)
            else:
                run.bad_epochs += 1
                if p.patience is not None and run.bad_epochs >= p.patience:
                    run.stopped = "early_stop"
                    run.reason = f"early stop after epoch {epoch}: no val Dice gain in {p.patience} epochs"
                    log.info("%s", run.reason)
        saver.epoch_end(epoch, run.stopped is not None or len(run.history) >= horizon, every)
        write_text(out_dir / HISTORY, _history_csv(run.history))
        if on_epoch is not None:
            saver.writer.wait()  # last.pt as documented for on_epoch: on disk (a caller may read it)
            on_epoch(dict(row))


def _checkpoint(tr: _Trainer, run: _Run, wall_s: float, partial: dict | None = None) -> dict:
    """last.pt's content after ``len(run.history)`` whole epochs, plus ``partial`` (the next epoch's progress,
    `_StopInEpoch`) for a mid-epoch one. Live references (the model's and optimizer's tensors, the history
    list): `checkpoint.Writer` snapshots them before training goes on."""
    out = {
        "version": CHECKPOINT_VERSION if partial is None else PARTIAL_CHECKPOINT_VERSION,
        "epoch": len(run.history),
        "params": tr.p.to_dict(),
        "model": tr.model.state_dict(),
        "optimizer": tr.optimizer.state_dict(),
        "schedule": tr.schedule.state_dict(),
        "rng": tr.rng_state(),
        "history": run.history,
        "best": run.best,
        "bad_epochs": run.bad_epochs,
        "stopped": run.stopped,
        "reason": run.reason,
        "wall_s": wall_s,
    }
    if partial is not None:
        out["partial"] = partial
    return out


def _resumable(ckpt: dict, steps_per_epoch: int, n_train: int) -> bool:
    """A last.pt of a version this code reads; a mid-epoch one must fit this run's epoch layout."""
    if ckpt.get("version") == CHECKPOINT_VERSION:
        return True
    if ckpt.get("version") != PARTIAL_CHECKPOINT_VERSION or not isinstance(ckpt.get("partial"), dict):
        return False
    part = ckpt["partial"]
    return (
        part.get("epoch") == len(ckpt.get("history", ())) + 1
        and 0 < part.get("step", 0) < steps_per_epoch
        and isinstance(part.get("perm"), torch.Tensor)
        and isinstance(part.get("training"), list)
        and tuple(part["perm"].shape) == (n_train,)
        and ckpt["schedule"]["step_count"] == (part["epoch"] - 1) * steps_per_epoch + part["step"]
    )


def rung_summary(history: list[dict], stop_at: int, patience: int | None, wall_s: float) -> dict:
    """A run's state at epoch ``stop_at`` from its history alone (so it is the same whether the epochs were
    trained just now or by a longer run earlier): ``status`` ok / early_stop / diverged, ``epochs_run``,
    ``best_val_dice`` and ``best_epoch`` (the validation monitor up to then) and the history rows."""
    rows, status, reason = [], "ok", None
    best, best_epoch, bad = -math.inf, None, 0
    for row in history[:stop_at]:
        rows.append(dict(row))
        if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
            status, reason = "diverged", f"non-finite loss in epoch {row['epoch']}"
            best_epoch = None
            break
        if row["val_dice"] > best:
            best, best_epoch, bad = row["val_dice"], row["epoch"], 0
        else:
            bad += 1
            if patience is not None and bad >= patience:
                status, reason = "early_stop", f"early stop after epoch {row['epoch']}"
                break
    return {
        "stop_at": stop_at,
        "status": status,
        "reason": reason,
        "epochs_run": len(rows),
        "best_val_dice": None if best_epoch is None else best,
        "best_epoch": best_epoch,
        "wall_s": round(wall_s, 3),
        "history": rows,
    }


def _load_checkpoint(path: Path, log: logging.Logger) -> dict | None:
    """last.pt, or None (start afresh) if it fails verification (`checkpoint.load`: truncated, altered,
    written by an incompatible torch version).

    Loaded onto the CPU: generator states must be CPU byte tensors, and ``load_state_dict`` of the model
    and optimizer copies the rest onto the parameters' device.
    """
    try:
        return checkpoint.load(path)
    except checkpoint.CorruptCheckpoint as exc:  # must not make every retry crash
        log.warning("%s: starting afresh", exc)
        return None


def _best_state(tr: _Trainer, best_path: Path, best: dict, out_dir: Path, log: logging.Logger) -> dict:
    """best.pt's content for the final evaluation: the file when it verifies and holds the best epoch, else
    rebuilt and written again. Rebuilt = the first ``best["epoch"]`` epochs replayed from the cell's initial
    state by a fresh trainer (same seeds, same generators: on the CPU bit-identical weights; validation draws
    no random number, so it is skipped). A corrupt best.pt thus never fails a finished cell."""
    try:
        state = checkpoint.load(best_path)
        if state.get("epoch") == best["epoch"] and "model" in state:
            return state
        why = f"{best_path}: holds epoch {state.get('epoch')}, the run's best is epoch {best['epoch']}"
    except checkpoint.CorruptCheckpoint as exc:
        why = str(exc)
    log.warning("%s; rebuilding it: replaying epochs 1-%d from the cell's initial state", why, best["epoch"])
    replay = _Trainer(tr.p, tr.data, tr.device, tr.amp, tr.channels_last)
    replay.finetune.initialise(out_dir, log)
    for _ in range(best["epoch"]):
        replay.train_epoch()
    state = {"model": replay.model.state_dict(), "epoch": best["epoch"], "val_dice": best["dice"]}
    state["params"] = tr.p.to_dict()
    checkpoint.save(state, best_path)
    log.info("%s rebuilt (epoch %d)", best_path, best["epoch"])
    return state
