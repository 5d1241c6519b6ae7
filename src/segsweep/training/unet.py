"""2D U-Net (Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI, arXiv:1505.04597), with the knobs the studies vary: depth, base width, batch norm
and dropout per part of the network.

Layout for ``depth = d`` and base width ``w``::

    enc_0 (w) ─────────────────────────────────────────────── dec_0 (w) → 1×1 head → logits
      └ pool → enc_1 (2w) ─────────────────────── dec_1 (2w) ┘
                 └ pool → ...  bottleneck (2^d·w) ┘  (up: 2×2 transposed conv, concat skip, double conv)

Each block is a double 3×3 convolution (``padding=1`` so sizes are kept, unlike the paper's valid
convolutions) with optional batch norm, each followed by ReLU, then optional dropout:
``dropout_down`` in the contracting blocks enc_0..enc_{d-1}, ``dropout_bottleneck`` in the bottleneck,
``dropout_up`` in the expanding blocks. ``dropout_mode='element'`` drops single activations
(``nn.Dropout``); ``'spatial'`` drops whole feature maps (``nn.Dropout2d``, Tompson et al. 2015), which
suits convolutional features whose neighbouring activations are strongly correlated.

Inputs of any size ≥ 2^depth pixels work: max pooling floors odd sizes, and the expanding path zero-pads the
upsampled map (by at most one pixel per level, bottom/right) to its skip connection's size, so the output
always has the input's spatial size.

Registered as ``unet`` by its specification in `segsweep.training.model` (torch-free: the plan's checks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from segsweep.training.blocks import DoubleConv, SegmentationNet, Up

if TYPE_CHECKING:  # pragma: no cover
    from segsweep.training.params import CellParams

__all__ = ["UNet"]


class UNet(SegmentationNet):
    """Classic 2D U-Net returning logits ``[B, n_classes, H, W]`` for input ``[B, in_channels, H, W]``."""

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 1,
        depth: int = 3,
        base_width: int = 8,
        batch_norm: bool = True,
        dropout_down: float = 0.0,
        dropout_bottleneck: float = 0.0,
        dropout_up: float = 0.0,
        dropout_mode: str = "element",
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be ≥ 1, got {depth}")
        if base_width < 1 or in_channels < 1 or n_classes < 1:
            raise ValueError("in_channels, n_classes and base_width must be ≥ 1")
        self.in_channels, self.n_classes, self.depth = in_channels, n_classes, depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        c = in_channels
        for w in widths[:-1]:
            self.encoders.append(DoubleConv(c, w, batch_norm, dropout_down, dropout_mode))
            c = w
        self.bottleneck = DoubleConv(widths[-2], widths[-1], batch_norm, dropout_bottleneck, dropout_mode)
        self.decoders = nn.ModuleList(
            Up(widths[i + 1], widths[i], batch_norm, dropout_up, dropout_mode) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for dec, skip in zip(self.decoders, reversed(skips)):
            x = dec(x, skip)
        return self.head(x)

    def encoder_modules(self) -> list[nn.Module]:
        return [self.encoders, self.bottleneck]  # the contracting path and the bottleneck

    def feature_levels(self) -> list[tuple[str, str, nn.Module]]:
        enc = [(f"enc{i}", "encoder", m) for i, m in enumerate(self.encoders)] + [
            ("bottleneck", "encoder", self.bottleneck)
        ]
        return enc + [(f"dec{self.depth - 1 - i}", "decoder", m) for i, m in enumerate(self.decoders)]

    @classmethod
    def from_params(cls, p: CellParams, n_classes: int = 1) -> UNet:
        return cls(
            in_channels=p.in_channels,
            n_classes=n_classes,
            depth=p.depth,
            base_width=p.base_width,
            batch_norm=p.batch_norm,
            dropout_down=p.dropout_down,
            dropout_bottleneck=p.dropout_bottleneck,
            dropout_up=p.dropout_up,
            dropout_mode=p.dropout_mode,
        )
