"""The model registry: one *specification* per architecture, torch-free, chosen by the config key ``model``.

A specification (`ModelSpec`) says which cell keys shape the network's parameters (``arch_fields``: two
cells whose values agree there have the same parameter names and shapes, so one can start from the other's
weights), checks a cell's values against the data (``check``: e.g. a U-Net needs images of at least 2^depth
pixels), and builds the network (calling it: ``MODELS[name](params, n_classes) -> nn.Module``), importing
its torch implementation only then. The plan runs ``check`` for every distinct architecture of a config
without importing torch (`segsweep.plan.validate`); a new architecture is one spec registered here plus its
network module.

=================  =======================================================================================
unet               `segsweep.training.unet.UNet` (Ronneberger et al. 2015): depth, base width, batch norm,
                   dropout per part
resnet18_unet      `segsweep.training.backbones.ResNetUNet`: a torchvision ResNet-18/34 encoder (optionally
resnet34_unet      pretrained from a local file, `segsweep.training.pretrained`) and a U-Net decoder
=================  =======================================================================================

Every network is a ``blocks.SegmentationNet`` (its encoder, its feature levels, frozen BatchNorm kept in
eval mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from segsweep.errors import ConfigError
from segsweep.registry import Registry
from segsweep.training.pretrained import BACKBONES, check_shapes, file_sha256, read_shapes

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from segsweep.training.params import CellParams

__all__ = ["BACKBONES", "MODELS", "ModelSpec", "n_parameters"]

MODELS: Registry[ModelSpec] = Registry("model", "model")


class ModelSpec:
    """One architecture (module doc). ``arch_fields``: the `CellParams` fields that shape its parameters."""

    name = "?"
    arch_fields: tuple[str, ...] = ()

    def architecture(self, p: CellParams) -> dict[str, Any]:
        """What decides the parameter names and shapes: the model and its ``arch_fields`` values."""
        return {"model": self.name, **{f: getattr(p, f) for f in self.arch_fields}}

    def check(self, p: CellParams, n_classes: int = 1, image_size: Sequence[int] | None = None) -> None:
        """ConfigError naming the key when the cell's values cannot make this network (torch-free)."""
        if p.in_channels < 1 or n_classes < 1:
            raise ConfigError(f"config key 'in_channels': {self.name} needs in_channels >= 1, got {p.in_channels}")

    def min_batch(self, p: CellParams, image_size: Sequence[int]) -> int:
        """The fewest images a training step takes: 1, or 2 where a BatchNorm layer in training mode would
        see a single value per channel from one image (BatchNorm's batch variance needs two)."""
        return 1

    def network(self, p: CellParams, n_classes: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, p: CellParams, n_classes: int = 1) -> nn.Module:
        """The network of a cell (imports torch)."""
        self.check(p, n_classes)
        return self.network(p, n_classes)


class UNetSpec(ModelSpec):
    """``unet``: depth, base width, batch norm, input channels and dropout per part (`segsweep.training.unet`)."""

    name = "unet"
    arch_fields = ("in_channels", "depth", "base_width", "batch_norm")

    def check(self, p: CellParams, n_classes: int = 1, image_size: Sequence[int] | None = None) -> None:
        super().check(p, n_classes)
        if p.depth < 1:
            raise ConfigError(f"config key 'depth': unet needs depth >= 1, got {p.depth}")
        if p.base_width < 1:
            raise ConfigError(f"config key 'base_width': unet needs base_width >= 1, got {p.base_width}")
        # each level max-pools by 2: the bottleneck needs at least one pixel
        if image_size is not None and min(image_size) < 2**p.depth:
            h, w = image_size
            raise ConfigError(
                f"config key 'depth': {p.depth} is too deep for the image size {h}×{w} "
                f"(needs at least 2^depth = {2**p.depth} pixels)"
            )
        # every batch would be one image: the loop can merge a lone last image (`min_batch`), not this
        if image_size is not None and p.batch_size < self.min_batch(p, image_size):
            h, w = image_size
            raise ConfigError(
                f"config keys 'batch_size', 'depth': batch_size {p.batch_size} with depth {p.depth} on "
                f"{h}×{w} images leaves a 1×1 bottleneck whose BatchNorm needs at least 2 images per batch "
                "(raise batch_size, lower depth, or set batch_norm: false)"
            )

    def min_batch(self, p: CellParams, image_size: Sequence[int]) -> int:
        # max pooling floors: the bottleneck is (H >> depth) × (W >> depth); 1×1 gives BatchNorm one value
        # per channel and image
        h, w = image_size
        return 2 if p.batch_norm and (h >> p.depth) * (w >> p.depth) == 1 else 1

    def network(self, p: CellParams, n_classes: int) -> nn.Module:
        from segsweep.training.unet import UNet

        return UNet.from_params(p, n_classes=n_classes)


class BackboneSpec(ModelSpec):
    """``resnet18_unet`` / ``resnet34_unet``: a torchvision ResNet encoder, any input size (padded to a
    multiple of 32); ``pretrained`` names a local state dict whose names and shapes are checked here."""

    arch_fields = ("in_channels", "batch_norm")

    def __init__(self, name: str):
        self.name, self.arch = name, BACKBONES[name]
        self.__doc__ = f"U-Net with a torchvision {self.arch} encoder (segsweep.training.backbones)."

    def check(self, p: CellParams, n_classes: int = 1, image_size: Sequence[int] | None = None) -> None:
        super().check(p, n_classes)
        if p.pretrained is not None:
            check_pretrained_file(self.arch, p.in_channels, p.pretrained.path)

    def network(self, p: CellParams, n_classes: int) -> nn.Module:
        from segsweep.training import backbones

        try:
            return backbones.build(self.name, p, n_classes=n_classes)
        except ValueError as exc:
            raise ConfigError(f"config key 'model': {self.name}: {exc}") from None


def check_pretrained_file(arch: str, in_channels: int, path: str) -> None:
    """The weights file's names and shapes fit the encoder (read without torch, once per file and arch)."""
    key = (arch, in_channels, str(path), file_sha256(path))
    if key not in _CHECKED:
        check_shapes(arch, in_channels, read_shapes(path), path)
        _CHECKED.add(key)


_CHECKED: set[tuple] = set()

MODELS.register("unet")(UNetSpec())
for _name in BACKBONES:  # resnet18_unet, resnet34_unet
    MODELS.register(_name)(BackboneSpec(_name))


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
