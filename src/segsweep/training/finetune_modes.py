"""Fine-tuning modes (the cell key ``finetune``): which parameters train, and when (`segsweep.training.finetune`
applies them; its module docstring describes each mode).

A mode is one class registered in ``FINETUNE_MODES``; its keyword-only constructor arguments are the cell keys
it reads, with their defaults (other modes' cells get None for them, so they never split a cell). What it
declares is all `FineTune` asks: ``needs_encoder`` (the model must name its encoder), ``starts_frozen``,
``unfreeze_at`` (the 0-based epoch at whose start a frozen encoder joins the optimizer, None: never) and
``encoder_lr_factor`` (the encoder as a second group at this × the LR; None: one group). A ``revision=``
at registration goes into the cell id of that mode's cells only: results a fix changed are not reused.
Torch-free: planning checks the names and normalises the keys.
"""

from __future__ import annotations

from segsweep.registry import Registry


class FineTuneMode:
    """Defaults: every parameter in one group, nothing frozen (``full``)."""

    needs_encoder = True
    starts_frozen = False

    def unfreeze_at(self) -> int | None:
        return None

    def encoder_lr_factor(self) -> float | None:
        return None


FINETUNE_MODES: Registry[type[FineTuneMode]] = Registry("fine-tune mode", "finetune")


@FINETUNE_MODES.register("full")
class Full(FineTuneMode):
    needs_encoder = False


@FINETUNE_MODES.register("freeze_encoder")
class FreezeEncoder(FineTuneMode):
    starts_frozen = True


# revision 2: in the unfreezing epoch the encoder's BatchNorm trains (before, it stayed in eval mode that epoch)
@FINETUNE_MODES.register("freeze_then_unfreeze", revision=2)
class FreezeThenUnfreeze(FineTuneMode):
    starts_frozen = True

    def __init__(self, *, unfreeze_epoch: int = 1):
        self.unfreeze_epoch = int(unfreeze_epoch)

    def unfreeze_at(self) -> int | None:
        return self.unfreeze_epoch


@FINETUNE_MODES.register("discriminative")
class Discriminative(FineTuneMode):
    def __init__(self, *, encoder_lr_factor: float = 0.1):
        self.factor = float(encoder_lr_factor)

    def encoder_lr_factor(self) -> float | None:
        return self.factor


def finetune_mode(p) -> FineTuneMode:
    """The mode of a cell's params (``CellParams``), built from the keys it reads."""
    return FINETUNE_MODES[p.finetune](**{k: getattr(p, k) for k in FINETUNE_MODES.params(p.finetune)})
