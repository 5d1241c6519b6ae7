"""Pretrained encoder weights, torch-free: a file's identity, the names and shapes it holds, and whether they
fit a torchvision ResNet encoder (the checks the plan runs; loading is `segsweep.training.backbones`).

**Reading shapes without torch.** ``torch.save`` (zip format, torch ≥ 1.6, what torchvision's files use)
writes a zip archive whose ``<name>/data.pkl`` is a pickle of the state dict; each tensor in it is a call
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` whose storage is a persistent id
pointing at ``<name>/data/<key>``. `read_shapes` unpickles ``data.pkl`` with every ``torch.*`` global
replaced by a stand-in that keeps only ``size``; no tensor data is read and no code from the file runs
(only the globals ``torch.save`` writes are accepted). A legacy (pre-zip) file is read with ``torch.load``.

**Expected shapes** (`encoder_shapes`): torchvision's ``resnet18`` / ``resnet34`` without ``fc``: a 7×7/2
stem conv ``conv1`` (64 × in_channels) and ``bn1``, then four stages of BasicBlocks ([2, 2, 2, 2] and
[3, 4, 6, 3] blocks, 64/128/256/512 channels), each block ``conv1``, ``bn1``, ``conv2``, ``bn2`` (3×3) and, in
the first block of stages 2–4, a 1×1/2 ``downsample`` conv + BatchNorm (He et al., "Deep residual learning
for image recognition", CVPR 2016, table 1; torchvision ``models/resnet.py``). ``tests/test_pretrained.py``
compares the table with torchvision's own state dicts.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from segsweep.errors import ConfigError
from segsweep.io import sha256_file
from segsweep.lazy import LazyModule

torch = LazyModule("torch")  # only for legacy (pre-zip) files
# model name → torchvision constructor name; one model per entry (registered in segsweep.training.model)
BACKBONES = {"resnet18_unet": "resnet18", "resnet34_unet": "resnet34"}
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}  # BasicBlocks per stage
STAGE_CHANNELS = (64, 64, 128, 256, 512)  # stem, layer1..layer4 (BasicBlock ResNets: 18 and 34)
IGNORED_KEYS = ("fc.weight", "fc.bias")  # the ImageNet classifier of a torchvision state dict
_BN = ("weight", "bias", "running_mean", "running_var")


# ------------------------------------------------------------------------------------------- identity
@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)  # size and mtime only key the memo


def file_sha256(path: str | Path, key: str = "pretrained") -> str:
    """sha256 (hex) of a weights file; memoised per (path, size, mtime), so a plan hashes each file once."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(
            f"config key '{key}': weights file not found: {path} ({exc.strerror}); put the state dict there "
            "(nothing is downloaded) or change the path"
        ) from None
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


# ------------------------------------------------------------------------------------ expected shapes
def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (c,) for k in _BN} | {f"{prefix}.num_batches_tracked": ()}


def encoder_shapes(arch: str, in_channels: int) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer name → shape of torchvision's ``arch`` encoder (no ``fc``) for ``in_channels``."""
    shapes = {"conv1.weight": (STAGE_CHANNELS[0], in_channels, 7, 7)} | _bn("bn1", STAGE_CHANNELS[0])
    c_in = STAGE_CHANNELS[0]
    for stage, n_blocks in enumerate(BLOCKS[arch], start=1):
        c = STAGE_CHANNELS[stage]
        for b in range(n_blocks):
            p = f"layer{stage}.{b}"
            shapes[f"{p}.conv1.weight"] = (c, c_in, 3, 3)
            shapes |= _bn(f"{p}.bn1", c)
            shapes[f"{p}.conv2.weight"] = (c, c, 3, 3)
            shapes |= _bn(f"{p}.bn2", c)
            if b == 0 and (stage > 1 or c_in != c):
                shapes[f"{p}.downsample.0.weight"] = (c, c_in, 1, 1)
                shapes |= _bn(f"{p}.downsample.1", c)
            c_in = c
    return shapes


# ------------------------------------------------------------------------------------- reading a file
class _Shape(tuple):
    """A tensor of the file, known by its shape only (``.shape`` as torch has it)."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self)

    @property
    def ndim(self) -> int:
        return len(self)


def _rebuild_tensor(storage, offset, size, *args, **kwargs) -> _Shape:
    return _Shape(int(s) for s in size)


def _rebuild_parameter(data, *args, **kwargs):
    return data


class _ShapeUnpickler(pickle.Unpickler):
    # The globals torch.save writes for a state dict of tensors; anything else is refused (no code runs).
    _TORCH = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    }

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) in self._TORCH:
            return self._TORCH[(module, name)]
        if module == "torch" and (name.endswith("Storage") or name in {"device"} or _is_dtype(name)):
            return _placeholder  # storage types, dtypes: their value is not needed for shapes
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):
        return None  # the storage: shapes need no data


def _is_dtype(name: str) -> bool:
    return name in {"float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "int8", "bool"}


def _placeholder(*args, **kwargs):
    return None


def read_shapes(path: str | Path, key: str = "pretrained") -> dict[str, tuple[int, ...]]:
    """Name → shape of every tensor in a torch state-dict file (module doc); ConfigError naming ``key`` when
    the file is missing or is not a state dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config key '{key}': weights file not found: {path}")
    try:
        if not zipfile.is_zipfile(path):
            return _read_shapes_legacy(path, key)
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if not pkl:
                raise ValueError("no data.pkl in the archive")
            with zf.open(min(pkl, key=len)) as fh:
                state = _ShapeUnpickler(fh).load()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix, named
        raise ConfigError(
            f"config key '{key}': cannot read weights file {path} as a torch state dict ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, _Shape) for v in state.values()):
        raise ConfigError(
            f"config key '{key}': {path} is not a torchvision state dict (a mapping of parameter names to tensors)"
        )
    return {str(k): v.shape for k, v in state.items()}


def _read_shapes_legacy(path: Path, key: str) -> dict[str, tuple[int, ...]]:
    # a pre-1.6 (non-zip) file: only torch reads it; names and shapes only (meta device)
    state = torch.load(path, map_location="meta", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"config key '{key}': {path} is not a torchvision state dict (a mapping of parameter names to tensors)"
        )
    return {str(k): tuple(v.shape) for k, v in state.items()}


# ------------------------------------------------------------------------------------------ the check
def check_shapes(arch: str, in_channels: int, shapes: Mapping[str, tuple[int, ...]], path: str | Path) -> None:
    """ConfigError naming ``path`` when a file's names/shapes do not fit the ``arch`` encoder. ``fc.*`` is
    ignored; a 3-channel stem is accepted for one input channel (it is summed over RGB when loaded)."""
    want = encoder_shapes(arch, in_channels)
    state = {k: tuple(v) for k, v in shapes.items() if k not in IGNORED_KEYS}
    conv1 = state.get("conv1.weight")
    if conv1 is not None and len(conv1) == 4 and conv1[1] == 3 and in_channels == 1:
        state["conv1.weight"] = (conv1[0], 1, *conv1[2:])
    # BatchNorm's num_batches_tracked is absent from older torchvision files; loading fills it in
    missing = sorted(k for k in want if k not in state and not k.endswith("num_batches_tracked"))
    extra = sorted(k for k in state if k not in want)
    wrong = sorted(k for k in want if k in state and state[k] != want[k])
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} encoder tensor(s) ({', '.join(missing[:3])}...)")
        if extra:
            parts.append(f"{len(extra)} tensor(s) the encoder lacks ({', '.join(extra[:3])}...)")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {k}: file {state[k]}, model {want[k]}")
        raise ConfigError(f"config key 'pretrained': {path} does not match the {arch} encoder: {'; '.join(parts)}")
