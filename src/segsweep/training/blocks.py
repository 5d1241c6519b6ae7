"""Building blocks shared by the registered models (`segsweep.training.model`, `segsweep.training.backbones`).

* ``DoubleConv``: (3×3 conv → [BN] → ReLU) × 2 → dropout, sizes kept (``padding=1``).
* ``Up``: 2×2 transposed conv → zero-pad to the skip's size → concat the skip → ``DoubleConv``.
* ``SegmentationNet``: the base of every model. It names the model's **encoder** (``encoder_modules``: what
  fine-tuning freezes or trains at another learning rate, `segsweep.training.finetune`) and its **feature
  levels** (``feature_levels``: the modules whose outputs, all after a ReLU, the interpretability figures
  show, `segsweep.report.inspect`). Its ``train()`` keeps **frozen BatchNorm layers in eval mode**: a
  BatchNorm whose parameters all have ``requires_grad = False`` normalises with its stored running
  statistics and never updates them, so a frozen encoder computes exactly the features it was given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DROPOUT_MODES = ("element", "spatial")


def dropout(p: float, mode: str) -> nn.Module:
    if mode not in DROPOUT_MODES:
        raise ValueError(f"dropout_mode must be one of {DROPOUT_MODES}, got {mode!r}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if p == 0.0:
        return nn.Identity()  # no module in the graph at all: zero cost when dropout is off
    return nn.Dropout(p) if mode == "element" else nn.Dropout2d(p)


class DoubleConv(nn.Sequential):
    """(3×3 conv → [BN] → ReLU) × 2 → dropout."""

    def __init__(self, c_in: int, c_out: int, batch_norm: bool, p: float, mode: str):
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            # A conv followed by BN needs no bias: BN's shift makes it redundant.
            layers.append(nn.Conv2d(c, c_out, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
        layers.append(dropout(p, mode))
        super().__init__(*layers)


class Up(nn.Module):
    """2×2 transposed conv ``c_in → c_out`` (doubles size) → pad to the skip's size → concat the skip
    (``c_skip`` channels, default ``c_out``: the U-Net's) → DoubleConv to ``c_out``."""

    def __init__(self, c_in: int, c_out: int, batch_norm: bool, p: float, mode: str, c_skip: int | None = None):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)
        self.conv = DoubleConv(c_out + (c_out if c_skip is None else c_skip), c_out, batch_norm, p, mode)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dh = skip.shape[-2] - x.shape[-2]
        dw = skip.shape[-1] - x.shape[-1]
        if dh or dw:  # odd size at this level: pooling floored it, so the upsampled map is 1 px short
            x = F.pad(x, (0, dw, 0, dh))
        return self.conv(torch.cat([skip, x], dim=1))


class SegmentationNet(nn.Module):
    """Base of the registered models (module doc): encoder, feature levels, frozen BatchNorm kept in eval."""

    def encoder_modules(self) -> list[nn.Module]:
        """The modules that make up the encoder (contracting path, bottleneck included)."""
        raise NotImplementedError

    def feature_levels(self) -> list[tuple[str, str, nn.Module]]:
        """``(name, "encoder" | "decoder", module)`` per level, input to output; each output is post-ReLU."""
        raise NotImplementedError

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.encoder_modules() for p in m.parameters()]

    def train(self, mode: bool = True) -> SegmentationNet:
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and is_frozen(m):
                    m.eval()
        return self


def is_frozen(module: nn.Module) -> bool:
    """A module with parameters, none of which is trainable."""
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)
