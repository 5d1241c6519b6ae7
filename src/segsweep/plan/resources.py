"""Job resources derived from the config (Snakemake `resources:`), so a cluster request fits the work."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from segsweep.data.config import PreprocessConfig
from segsweep.errors import ConfigError
from segsweep.training.job import EXECUTION_SETTINGS
from segsweep.training.params import CellParams

# Seconds per training image-epoch at 256×216 for a base-width-16 U-Net: ~0.3 s on 2 CPU cores
# (stack-notes), ~0.002 s on a current GPU. Used only to size the Slurm time limit, with headroom.
_CPU_S, _GPU_S = 0.3, 0.004
_REF_PIXELS, _REF_WIDTH = 256 * 216, 16
# The U-Net base width with the per-image cost of each backbone U-Net (benchmarks/results/train_models.json: on one
# CPU thread resnet18_unet trains 6.3× and resnet34_unet 9.1× slower than the width-8 U-Net; cost ∝ width²).
EQUIVALENT_WIDTH = {"resnet18_unet": 20, "resnet34_unet": 24}


def train_runtime_min(params: CellParams, prep: PreprocessConfig, res: ResourceConfig, n_images: int = 300) -> int:
    """Time limit (minutes) for one training job: epochs × images × per-image cost, ×3 headroom."""
    if res.train_runtime_min:
        return res.train_runtime_min
    width = EQUIVALENT_WIDTH.get(params.model, params.base_width)
    scale = (prep.size[0] * prep.size[1] / _REF_PIXELS) * (width / _REF_WIDTH) ** 2
    per_image = (_GPU_S if res.train_gpus else _CPU_S) * max(scale, 0.05)
    seconds = params.epochs * n_images * params.fraction * per_image * 1.3  # + validation
    return max(10, math.ceil(3 * seconds / 60))


@dataclass(frozen=True)
class ResourceConfig:
    train_threads: int = 1
    train_mem_mb: int = 3000
    train_gpus: int = 0
    train_runtime_min: int | None = None
    device: str = "auto"
    # true / false / "auto": decided on the training device (training.device.resolve_speed_settings)
    amp: bool | str = "auto"
    channels_last: bool | str = "auto"
    ingest_threads: int = 2
    train_retries: int = 1
    # last.pt every N epochs (0: not by count) or S seconds (0: not by time); always at the end and on a stop
    # signal. Both None (the default): decided on the training device (training.loop.CheckpointEvery.for_device)
    checkpoint_every_epochs: int | None = None
    checkpoint_every_s: int | None = None
    worker: bool = True  # train in long-lived trainer workers (segsweep.training.worker)
    worker_idle_s: int = 60  # a worker exits after this long without a cell
    train_stop_margin_s: int = 120  # a Slurm training job stops this long before its time limit ...
    train_max_stops: int = 20  # ... and is requeued / resubmitted at most this often (stops are not crashes)

    def __post_init__(self):
        for key in ("amp", "channels_last"):
            value = getattr(self, key)
            # by identity: the rule params and the cell id test `is True`, so 1 must not pass for true
            if not (value is True or value is False or value == "auto"):
                raise ConfigError(f"config key 'resources.{key}': {value!r} is not true, false or auto")

    @classmethod
    def from_config(cls, cfg: Mapping) -> ResourceConfig:
        return cls(**cfg["resources"])

    @property
    def hashed_amp(self) -> bool:
        """bf16 autocast asked for by ``amp: true``: part of the cell id (`segsweep.plan.cells.cell_id`). The
        default ``auto`` is not: like ``device`` it says "what suits the device", decided at job time, so the
        ids of every config written before it existed stay as they were."""
        return self.amp is True

    def rerun_params(self) -> dict:
        """The execution settings among the train rules' ``params`` (a Snakemake rerun trigger: it compares
        the set of the params' values with the one recorded for the finished job). ``amp`` and
        ``channels_last`` appear only as "set to true": ``auto`` reads ``False`` there, as the ``false``
        default before it did, so upgrading leaves a finished cell at "Nothing to be done"; that they are
        ``auto`` reaches the job as a resource (`execution_resources`)."""
        return {"device": self.device, "amp": self.amp is True, "channels_last": self.channels_last is True}

    def execution_resources(self) -> dict[str, int]:
        """The train rules' execution-setting resources (`segsweep.training.job.EXECUTION_SETTINGS`; Snakemake's
        resources are integers here): the config's values, ``amp_auto`` / ``channels_last_auto`` = 1 when
        that setting is ``auto``, and ``checkpoint_auto`` = 1 when neither checkpoint key is set (then both read
        0 here and the job decides on its device). Resources are no rerun trigger."""
        derived = {
            "amp_auto": self.amp == "auto",
            "channels_last_auto": self.channels_last == "auto",
            "checkpoint_auto": self.checkpoint_every_epochs is None and self.checkpoint_every_s is None,
            "checkpoint_every_epochs": self.checkpoint_every_epochs or 0,  # one key set: the other one's None is 0
            "checkpoint_every_s": self.checkpoint_every_s or 0,
        }
        return {k: int(derived[k] if k in derived else getattr(self, k)) for k in EXECUTION_SETTINGS}
