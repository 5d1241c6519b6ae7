"""Which device a training job runs on, the speed settings that suit it, and a one-line description of the
hardware for metrics.json."""

from __future__ import annotations

import logging
import os
import platform
from functools import cache

import torch

from segsweep.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
# bf16 in hardware (tensor cores, no emulation): compute capability 8.0, Ampere (A100, RTX 30xx) and later
BF16_CAPABILITY = (8, 0)


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


def speed_defaults(device_type: str, capability: tuple[int, int] | None) -> bool:
    """What ``auto`` means for ``resources.amp`` and ``channels_last`` on a device: on for a CUDA device of
    compute capability ≥ `BF16_CAPABILITY` (bf16 tensor-core kernels, which prefer the NHWC layout; NVIDIA,
    "Tensor Core requirements" in the cuDNN developer guide), off elsewhere: on the CPU bf16 autocast is
    emulated on most processors (slower) and channels_last convolutions gain nothing, and older GPUs have no
    bf16 tensor cores (``torch.cuda.is_bf16_supported`` says true there through emulation, hence the
    capability)."""
    return device_type == "cuda" and capability is not None and tuple(capability) >= BF16_CAPABILITY


def resolve_speed_settings(
    amp: bool | str, channels_last: bool | str, device: torch.device, log: logging.Logger | None = None
) -> tuple[bool, bool]:
    """``amp`` / ``channels_last`` (True, False or "auto") for training on ``device``: "auto" is
    `speed_defaults` of the device, decided here, on the training device at job time, and logged; True and
    False are kept as they are."""
    log = log or logging.getLogger("segsweep.device")
    cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    on = speed_defaults(device.type, cap)
    out = []
    for key, value in (("amp", amp), ("channels_last", channels_last)):
        if not (value is True or value is False or value == "auto"):
            raise ConfigError(f"config key 'resources.{key}': {value!r} is not true, false or auto")
        if value == "auto":
            what = f"{device.type}" + (f", compute capability {cap[0]}.{cap[1]}" if cap else "")
            log.info("resources.%s auto: %s on this device (%s)", key, "on" if on else "off", what)
            value = on
        out.append(bool(value))
    return out[0], out[1]


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
