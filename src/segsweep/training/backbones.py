"""U-Nets with a torchvision ResNet encoder (``resnet18_unet``, ``resnet34_unet``; registered in
`segsweep.training.model`), and loading of pretrained encoder weights from a local file.

Layout (``H × W`` input; channels of ResNet-18/34)::

    input ─ in_block (DoubleConv → 16) ──────────────────────────────────────────── dec0 (16) → 1×1 head
      stem: conv1 7×7/2 → bn1 → relu (64, H/2) ────────────────────────────── dec1 (32) ┘
        maxpool → layer1 (64, H/4) ─────────────────────────────────── dec2 (64) ┘
                   layer2 (128, H/8) ─────────────────────── dec3 (128) ┘
                     layer3 (256, H/16) ─────────── dec4 (256) ┘
                       layer4 (512, H/32) ─ [dropout_bottleneck] ┘

The encoder is torchvision's ``resnet18()`` / ``resnet34()`` (built with ``weights=None``: nothing is ever
downloaded) without ``avgpool`` and ``fc``; its parameter names are torchvision's, so a torchvision state
dict loads into it as is. Skips come from the stem and each stage (layer1..3; layer4 is the bottleneck); each
decoder level is the U-Net's ``Up`` (2×2 transposed conv, concat the skip, double 3×3 conv with optional
batch norm and ``dropout_up``). ``dropout_down`` applies to each skip's features, ``dropout_bottleneck`` to
layer4's. A small full-resolution block on the input gives the last level a skip at the input's resolution
(the stem starts at H/2). The encoder always has batch norm (ResNet's); ``batch_norm`` sets the decoder's.
``depth`` and ``base_width`` do not apply (the stages are fixed); the plan rejects them when a study sets
them for a backbone (`segsweep.plan.finetune`), and `CellParams` normalises them to 0.

**Any input size.** The input is zero-padded (bottom/right) to a multiple of 32 (five stride-2 steps), and to at
least 64 (layer4 at least 2×2, so BatchNorm trains on a last batch of one image), and the logits are cropped
back, so the output has the input's size for 96×80, 48×40 or anything else.

**Pretrained weights** (``pretrained: /path/resnet18-f37072fd.pth``): a torchvision state dict (a mapping of
parameter names to tensors, e.g. from a torch hub cache). ``pretrained.check_shapes`` compares its names and
shapes with the encoder (``fc.*`` may be present and is ignored; anything else extra or missing, e.g. a
ResNet-34 file for a ResNet-18, is a mismatch): the plan runs it without torch once per distinct file
(`segsweep.training.pretrained`), the train job again before loading. **One input channel** (``in_channels: 1``) with a 3-channel (RGB) stem: the first
convolution's weights are **summed over the RGB channels**. A grey image given to the pretrained network as
three equal channels produces exactly ``Σ_c W_c * x``, so the summed kernel computes the pretrained stem's
response to the grey image (averaging instead would scale it by 1/3 and every later BatchNorm would see
other statistics). ImageNet's per-channel mean/std normalisation is not applied (inputs are CLAHE'd [0, 1]
images); fine-tuning adapts to that.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from segsweep.errors import ConfigError, DataError
from segsweep.training.blocks import DoubleConv, SegmentationNet, Up, dropout
from segsweep.training.pretrained import BACKBONES, IGNORED_KEYS, STAGE_CHANNELS, check_shapes, file_sha256

DECODER_CHANNELS = (256, 128, 64, 32, 16)  # dec4 .. dec0
MULTIPLE = 32  # 2^5: the stem's stride 2, maxpool, layer2..4's strides
MIN_SIZE = 64  # layer4 at least 2×2: BatchNorm in training needs > 1 value per channel (a last batch of 1)


def _resnet(arch: str) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)  # never download: weights come from a local file
    del net.fc, net.avgpool
    return net


class ResNetUNet(SegmentationNet):
    """U-Net with a torchvision ResNet-18/34 encoder (module doc); logits ``[B, n_classes, H, W]``."""

    def __init__(
        self,
        arch: str = "resnet18",
        in_channels: int = 1,
        n_classes: int = 1,
        batch_norm: bool = True,
        dropout_down: float = 0.0,
        dropout_bottleneck: float = 0.0,
        dropout_up: float = 0.0,
        dropout_mode: str = "element",
    ):
        super().__init__()
        if in_channels < 1 or n_classes < 1:
            raise ValueError("in_channels and n_classes must be ≥ 1")
        self.arch, self.in_channels, self.n_classes = arch, in_channels, n_classes
        self.encoder = _resnet(arch)
        if in_channels != 3:
            self.encoder.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.skip_drop = dropout(dropout_down, dropout_mode)
        self.bottleneck_drop = dropout(dropout_bottleneck, dropout_mode)
        self.in_block = DoubleConv(in_channels, DECODER_CHANNELS[-1], batch_norm, 0.0, dropout_mode)
        skips = (STAGE_CHANNELS[3], STAGE_CHANNELS[2], STAGE_CHANNELS[1], STAGE_CHANNELS[0], DECODER_CHANNELS[-1])
        c_in = STAGE_CHANNELS[4]
        self.decoders = nn.ModuleList()
        for c_out, c_skip in zip(DECODER_CHANNELS, skips):
            self.decoders.append(Up(c_in, c_out, batch_norm, dropout_up, dropout_mode, c_skip=c_skip))
            c_in = c_out
        self.head = nn.Conv2d(DECODER_CHANNELS[-1], n_classes, kernel_size=1)

    def encoder_modules(self) -> list[nn.Module]:
        return [self.encoder]

    def feature_levels(self) -> list[tuple[str, str, nn.Module]]:
        e = self.encoder
        enc = [("stem", e.relu)] + [(f"layer{i}", getattr(e, f"layer{i}")) for i in range(1, 5)]
        dec = [(f"dec{4 - i}", d) for i, d in enumerate(self.decoders)]
        return [(n, "encoder", m) for n, m in enc] + [(n, "decoder", m) for n, m in dec]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = max(MIN_SIZE, h + (-h) % MULTIPLE) - h, max(MIN_SIZE, w + (-w) % MULTIPLE) - w
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        e = self.encoder
        full = self.in_block(x)
        stem = e.relu(e.bn1(e.conv1(x)))
        l1 = e.layer1(e.maxpool(stem))
        l2 = e.layer2(l1)
        l3 = e.layer3(l2)
        y = self.bottleneck_drop(e.layer4(l3))
        for dec, skip in zip(self.decoders, (l3, l2, l1, stem)):
            y = dec(y, self.skip_drop(skip))
        y = self.decoders[-1](y, full)
        return self.head(y)[..., :h, :w]


def build(model: str, params, n_classes: int = 1) -> ResNetUNet:
    """The backbone U-Net ``model`` of a cell (`CellParams`)."""
    return ResNetUNet(
        BACKBONES[model],
        in_channels=params.in_channels,
        n_classes=n_classes,
        batch_norm=params.batch_norm,
        dropout_down=params.dropout_down,
        dropout_bottleneck=params.dropout_bottleneck,
        dropout_up=params.dropout_up,
        dropout_mode=params.dropout_mode,
    )


# ------------------------------------------------------------------------------------- pretrained weights
def read_state_dict(path: str | Path, device: str = "cpu", key: str = "pretrained") -> dict[str, torch.Tensor]:
    """A torchvision state dict from ``path`` (``weights_only``: no code runs). ``device="meta"`` reads only
    names and shapes (the plan's check)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"config key '{key}': weights file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix, named
        raise ConfigError(
            f"config key '{key}': cannot read weights file {path} as a torch state dict ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"config key '{key}': {path} is not a torchvision state dict (a mapping of parameter names to tensors)"
        )
    return dict(state)


def adapt_state_dict(model: ResNetUNet, state: Mapping[str, torch.Tensor], path: str | Path) -> dict:
    """The file's tensors as the encoder's state dict: ``fc.*`` dropped, conv1 summed over RGB for one input
    channel (module doc). ConfigError naming ``path`` when names or shapes do not match the encoder
    (`segsweep.training.pretrained.check_shapes`, the plan's torch-free check)."""
    check_shapes(model.arch, model.in_channels, {k: tuple(v.shape) for k, v in state.items()}, path)
    state = {k: v for k, v in state.items() if k not in IGNORED_KEYS}
    conv1 = state.get("conv1.weight")
    if conv1 is not None and conv1.ndim == 4 and conv1.shape[1] == 3 and model.in_channels == 1:
        state["conv1.weight"] = conv1.sum(dim=1, keepdim=True)
    return state


def load_pretrained(model: nn.Module, path: str | Path, sha256: str | None = None) -> None:
    """Load a torchvision state dict from ``path`` into the model's encoder (module doc). With ``sha256``,
    the file must still have the content the cell id was computed from."""
    if not isinstance(model, ResNetUNet):
        raise ConfigError(f"config key 'pretrained': model {type(model).__name__} has no torchvision encoder")
    if sha256 is not None and file_sha256(path) != sha256:
        raise DataError(
            f"weights file {path} changed since the plan was made (sha256 {file_sha256(path)[:12]}, the cell "
            f"expects {sha256[:12]}): rerun snakemake, which gives the new weights new cells"
        )
    state = adapt_state_dict(model, read_state_dict(path), path)
    model.encoder.load_state_dict(state, strict=False)  # strict on names/shapes above; only num_batches_tracked
