"""Which device a training job runs on, and a one-line description of the hardware for metrics.json."""

from __future__ import annotations

import logging
import os
import platform
from functools import cache

import torch

from segsweep.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto", log: logging.Logger | None = None) -> torch.device:
    """'auto' → the first visible GPU if any, else CPU (logged once, clearly); 'cuda' without a GPU is an error.

    Slurm restricts a job to its GPUs through CUDA_VISIBLE_DEVICES, which torch already honours: 'cuda'
    means the first *visible* device, so nothing here picks a device index.
    """
    log = log or logging.getLogger("segsweep.device")
    if name not in DEVICE_CHOICES:
        raise ConfigError(f"config key 'resources.device': unknown device '{name}' (use {', '.join(DEVICE_CHOICES)})")
    has_cuda = torch.cuda.is_available()
    if name == "cuda" and not has_cuda:
        raise ConfigError(
            "config key 'resources.device' is 'cuda' but no CUDA GPU is visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})"
        )
    if name == "cpu" or (name == "auto" and not has_cuda):
        if name == "auto":
            log.info("no CUDA GPU visible: training on the CPU with %d thread(s)", torch.get_num_threads())
        return torch.device("cpu")
    return torch.device("cuda")


@cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_description(device: torch.device) -> str:
    """GPU name for CUDA, CPU model (+ threads in use) otherwise."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()} ({torch.get_num_threads()} thread(s))"
