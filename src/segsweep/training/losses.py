"""Segmentation losses: one class per loss, each called as ``loss(logits, target)``.

Conventions shared by every class:

* ``logits`` is ``[B, C, H, W]`` (any number of trailing spatial dims works). With ``C == 1`` the
  probability is ``p = sigmoid(logits)``; with ``C > 1`` it is ``softmax`` over channels and the target is
  one-hot (or soft) of the same shape. ``target`` holds {0, 1} floats (any real/integer dtype is cast).
* Region losses (Dice, inverse Dice, IoU, Tversky) are computed **per (sample, channel)** by summing over
  the spatial dims only, then averaged over B and C (MONAI's default ``batch=False``). So one image with an
  empty mask does not borrow overlap from another image in the batch.
* Pixel losses (BCE, weighted CE, focal) are averaged over every element.
* Every loss returns a scalar (0-dim) tensor and is computed in float32, also under autocast, because the
  spatial sums of a 16-bit tensor lose precision.
* Smoothing ``s`` is added to numerator and denominator. An empty prediction *and* empty target give a
  ratio of ``s / s = 1`` i.e. loss 0; with ``s = 0`` that case is 0/0, which we define as ratio 1 (loss 0)
  too, with a gradient of 0 instead of NaN.

Every loss is registered in ``LOSSES`` under its config name; its hyperparameters are the keyword-only
arguments of its ``__init__``, and their defaults are the config's defaults (``Registry.params``). A new loss
is one class with its ``@LOSSES.register("name")`` line (plus the name in the schema's ``loss_term`` enum).
Invalid values raise ``ConfigError`` naming the key ``loss``; the plan constructs every distinct loss once
(``segsweep.plan.validate``), so such a value fails at plan time. ``build_loss`` turns the config's
``LossTerm`` list into a ``WeightedSum``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from segsweep.errors import ConfigError
from segsweep.lazy import LazyModule
from segsweep.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

# Specification (a class's keyword-only defaults and the checks in its __init__) is torch-free: the plan
# builds every distinct loss without importing torch. The implementation (``forward``) reaches torch here.
torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")


class Term(Protocol):
    """One config loss term (``segsweep.training.params.LossTerm``, which imports this module for LOSSES)."""

    name: str
    weight: float
    params: tuple[tuple[str, float], ...]


class Loss:
    """Base of the losses: ``loss(logits, target) -> 0-dim tensor`` calls ``forward``.

    A loss holds no tensors (only Python floats), so it is a plain object, not an ``nn.Module``: it is not
    moved to a device, and its construction (the plan's check) imports nothing. ``binary_only``: the loss needs a
    sigmoid (one-channel) output; the plan rejects it for a multi-class target (`segsweep.plan.validate`).
    """

    binary_only = False

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.forward(logits, target)

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({attrs})"


LOSSES: Registry[type] = Registry("loss", "loss")


# ----------------------------------------------------------------------------------------------- helpers
def _prepare(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if logits.ndim < 3:
        raise ValueError(f"logits must be [B, C, H, W], got shape {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} must equal logits shape {tuple(logits.shape)} "
            "(binary: [B,1,H,W]; multi-class: one-hot [B,C,H,W])"
        )
    logits = logits.float()
    return logits, target.to(logits.dtype)


def _probs(logits: Tensor) -> Tensor:
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def _overlap(p: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
    """Per (sample, channel) sums over the spatial dims: (Σp·g, Σp, Σg) each [B, C], and the pixel count N."""
    dims = tuple(range(2, p.ndim))
    n = float(math.prod(p.shape[2:]))
    return (p * g).sum(dims), p.sum(dims), g.sum(dims), n


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den, with 0/0 := 1 (both masks empty and no smoothing) and a zero (not NaN) gradient there."""
    empty = den <= 0
    return torch.where(empty, torch.ones_like(num), num / torch.where(empty, torch.ones_like(den), den))


def binary_only_error(name: str, n_outputs: int) -> ConfigError:
    """The error for a binary (sigmoid) loss given ``n_outputs > 1`` channels (train job and plan check)."""
    multi = ", ".join(e.name for e in LOSSES if not getattr(e.obj, "binary_only", False))
    return ConfigError(
        f"config key 'loss': '{name}' is a binary (sigmoid) loss but the model has "
        f"{n_outputs} output channels; use one of {multi} for multi-class"
    )


def _binary_only(name: str, logits: Tensor) -> None:
    if logits.shape[1] != 1:
        raise binary_only_error(name, logits.shape[1])


def _invalid(message: str) -> ConfigError:
    return ConfigError(f"config key '{LOSSES.key}': {message}")


def _check_smooth(smooth: float) -> float:
    smooth = float(smooth)
    if smooth < 0:
        raise _invalid(f"smooth must be >= 0, got {smooth}")
    return smooth


def _wce_elementwise(logits: Tensor, target: Tensor, pos_weight: float) -> Tensor:
    # -[w·g·log σ(x) + (1-g)·log(1-σ(x))] = w·g·softplus(-x) + (1-g)·softplus(x): stable for large |x|,
    # and a Python-float weight needs no device tensor (no host→device copy per step).
    return pos_weight * target * F.softplus(-logits) + (1.0 - target) * F.softplus(logits)


# -------------------------------------------------------------------------------------------- region losses
@LOSSES.register("dice")
class DiceLoss(Loss):
    """Soft Dice loss.

    ``L = mean_{b,c} [ 1 − (2·Σ p·g + s) / (Σ p + Σ g + s) ]``, sums over the spatial dims of one (sample,
    channel); ``p`` = sigmoid (C=1) or softmax (C>1) of the logits, ``g`` the target, ``s = smooth``.

    Reference: Milletari, Navab & Ahmadi, "V-Net", 3DV 2016 (with the linear, not squared, denominator and
    MONAI's ``smooth_nr = smooth_dr = s`` smoothing; equals ``monai.losses.DiceLoss(sigmoid=True)``).

    Empty masks: an image whose prediction and target are both empty scores loss 0 (``s/s``); an empty
    target with a non-empty prediction scores ≈ 1.
    """

    def __init__(self, *, smooth: float = 1e-5):
        self.smooth = _check_smooth(smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = _prepare(logits, target)
        inter, ps, gs, _ = _overlap(_probs(logits), target)
        s = self.smooth
        return (1.0 - _safe_ratio(2.0 * inter + s, ps + gs + s)).mean()


@LOSSES.register("inverse_dice")
class InverseDiceLoss(Loss):
    """Inverse Dice loss: the Dice loss of the complements ``1 − p`` and ``1 − g`` (the background).

    ``L = mean_{b,c} [ 1 − (2·Σ(1−p)(1−g) + s) / (Σ(1−p) + Σ(1−g) + s) ]``. The complement sums are
    derived from the foreground ones: ``Σ(1−p)(1−g) = N − Σp − Σg + Σpg`` with N pixels per image.

    Reference: Anand, Patel, Dang & Sethi, "Switching loss for generalized nucleus detection in
    histopathology", MICCAI 2020 (arXiv:2008.03750), where it is the background counterpart of Dice.

    Empty masks: empty prediction and target → complements are all ones → loss 0. It is ≈ 0 whenever the
    background agrees, so it is small for any image that is mostly background; useful only mixed with Dice.
    """

    def __init__(self, *, smooth: float = 1e-5):
        self.smooth = _check_smooth(smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = _prepare(logits, target)
        inter, ps, gs, n = _overlap(_probs(logits), target)
        return _inverse_dice(inter, ps, gs, n, self.smooth).mean()


def _inverse_dice(inter: Tensor, ps: Tensor, gs: Tensor, n: float, s: float) -> Tensor:
    inter_c = n - ps - gs + inter
    return 1.0 - _safe_ratio(2.0 * inter_c + s, (n - ps) + (n - gs) + s)


@LOSSES.register("iou")
class IoULoss(Loss):
    """Soft IoU (Jaccard) loss.

    ``L = mean_{b,c} [ 1 − (Σ p·g + s) / (Σ p + Σ g − Σ p·g + s) ]``.

    Reference: Rahman & Wang, "Optimizing intersection-over-union in deep neural networks for image
    segmentation", ISVC 2016. MONAI's ``DiceLoss(jaccard=True)`` computes ``1 − (2I + s_nr)/(2U + s_dr)``,
    i.e. the same loss with half the smoothing: ours equals MONAI's with ``smooth_nr = smooth_dr = 2s``.

    Empty masks: both empty → loss 0; empty target, non-empty prediction → ≈ 1.
    """

    def __init__(self, *, smooth: float = 1e-5):
        self.smooth = _check_smooth(smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = _prepare(logits, target)
        inter, ps, gs, _ = _overlap(_probs(logits), target)
        s = self.smooth
        return (1.0 - _safe_ratio(inter + s, ps + gs - inter + s)).mean()


@LOSSES.register("tversky")
class TverskyLoss(Loss):
    """Tversky loss: Dice with separate weights for false positives and false negatives.

    ``TP = Σ p·g, FP = Σ p·(1−g), FN = Σ (1−p)·g`` per (sample, channel);
    ``L = mean [ 1 − (TP + s) / (TP + α·FP + β·FN + s) ]``: ``alpha`` weights FP, ``beta`` weights FN, so
    ``β > α`` favours recall. ``α = β = 0.5`` is the Dice loss with smoothing ``2s``.

    Reference: Salehi, Erdogmus & Gholipour, "Tversky loss function for image segmentation using 3D fully
    convolutional deep networks", MLMI 2017. Equals ``monai.losses.TverskyLoss(sigmoid=True, alpha, beta)``.

    Empty masks: both empty → loss 0.
    """

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1e-5):
        if alpha < 0 or beta < 0:
            raise _invalid(f"tversky alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.smooth = _check_smooth(smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = _prepare(logits, target)
        tp, ps, gs, _ = _overlap(_probs(logits), target)
        fp, fn = ps - tp, gs - tp
        s = self.smooth
        return (1.0 - _safe_ratio(tp + s, tp + self.alpha * fp + self.beta * fn + s)).mean()


# --------------------------------------------------------------------------------------------- pixel losses
@LOSSES.register("bce")
class BCELoss(Loss):
    """Binary cross-entropy on logits (C=1), or softmax cross-entropy with a one-hot target (C>1).

    ``L = −mean [ g·log σ(x) + (1−g)·log(1−σ(x)) ]`` (``F.binary_cross_entropy_with_logits``);
    for C>1 ``L = −mean_{b,pixels} Σ_c g_c·log softmax(x)_c`` (``F.cross_entropy`` with probability targets).

    Reference: the standard log-likelihood loss (e.g. Goodfellow, Bengio & Courville, Deep Learning, §6.2).

    Empty masks: no special case; an empty target is an ordinary all-background image.
    """

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = _prepare(logits, target)
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.cross_entropy(logits, target)


@LOSSES.register("wce")
class WeightedCELoss(Loss):
    """Weighted binary cross-entropy: foreground pixels weighted by ``pos_weight`` (binary only).

    ``L = mean [ w·g·softplus(−x) + (1−g)·softplus(x) ] = −mean [ w·g·log σ(x) + (1−g)·log(1−σ(x)) ]``,
    identical to ``F.binary_cross_entropy_with_logits(x, g, pos_weight=w)`` and Keras'
    ``weighted_cross_entropy_with_logits``.

    Reference: e.g. Ronneberger, Fischer & Brox, "U-Net", MICCAI 2015 (class-frequency weighting of CE).

    Empty masks: an empty target leaves only the background term.
    """

    binary_only = True

    def __init__(self, *, pos_weight: float = 2.0):
        if pos_weight <= 0:
            raise _invalid(f"pos_weight must be > 0, got {pos_weight}")
        self.pos_weight = float(pos_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = _prepare(logits, target)
        _binary_only("wce", logits)
        return _wce_elementwise(logits, target, self.pos_weight).mean()


@LOSSES.register("focal")
class FocalLoss(Loss):
    """Sigmoid focal loss (binary only).

    ``p_t = p if g = 1 else 1 − p``, ``α_t = α if g = 1 else 1 − α``;
    ``L = mean [ −α_t · (1 − p_t)^γ · log p_t ]``. ``(1 − p_t)^γ`` is evaluated as
    ``exp(γ·logsigmoid(−x·(2g−1)))`` so it stays finite for large logits.

    Reference: Lin, Goyal, Girshick, He & Dollár, "Focal loss for dense object detection", ICCV 2017 (α
    weights the positive class). Equals ``monai.losses.FocalLoss(use_softmax=False, gamma, alpha)`` and
    ``torchvision.ops.sigmoid_focal_loss(..., reduction="mean")``.

    Empty masks: no special case (pixel-wise).
    """

    binary_only = True

    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0):
        if not 0.0 <= alpha <= 1.0:
            raise _invalid(f"focal alpha must lie in [0, 1], got {alpha}")
        if gamma < 0:
            raise _invalid(f"focal gamma must be >= 0, got {gamma}")
        self.alpha, self.gamma = float(alpha), float(gamma)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = _prepare(logits, target)
        _binary_only("focal", logits)
        ce = _wce_elementwise(logits, target, 1.0)  # −log p_t
        log_one_minus_pt = F.logsigmoid(-logits * (2.0 * target - 1.0))
        alpha_t = self.alpha * target + (1.0 - self.alpha) * (1.0 - target)
        return (alpha_t * torch.exp(self.gamma * log_one_minus_pt) * ce).mean()


# ----------------------------------------------------------------------------------------------- compounds
@LOSSES.register("combo")
class ComboLoss(Loss):
    """Combo loss: ``L = r · WCE_w + (1 − r) · DiceLoss_s`` with ``r = ce_ratio``, ``w = pos_weight``.

    Reference: Taghanaki et al., "Combo loss: handling input and output imbalance in multi-organ
    segmentation", CMIG 2019, which writes ``α·L_mBCE − (1−α)·DSC`` with
    ``L_mBCE = −mean[β·g·log p + (1−β)(1−g)·log(1−p)]``. The form chosen here differs only by constants:
    (1) the Dice *loss* ``1 − DSC`` replaces ``−DSC`` (adds ``1 − r``, so the loss is ≥ 0; same gradient);
    (2) the paper's β-weighted CE equals ``(1 − β)·WCE_w`` with ``w = β/(1 − β)``, so ``pos_weight`` is that
    odds ratio and a global factor ``1 − β`` is dropped. With ``pos_weight = 1`` it equals
    ``monai.losses.DiceCELoss(sigmoid=True, lambda_ce=r, lambda_dice=1−r)``.

    Binary only. Empty masks: those of ``DiceLoss`` (both empty → Dice part 0) and ``WeightedCELoss``.
    """

    binary_only = True

    def __init__(self, *, ce_ratio: float = 0.5, pos_weight: float = 1.0, smooth: float = 1e-5):
        if not 0.0 <= ce_ratio <= 1.0:
            raise _invalid(f"combo ce_ratio must lie in [0, 1], got {ce_ratio}")
        self.ce_ratio = float(ce_ratio)
        self.wce = WeightedCELoss(pos_weight=pos_weight)
        self.dice = DiceLoss(smooth=smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = _prepare(logits, target)
        _binary_only("combo", logits)
        r = self.ce_ratio
        return r * self.wce(logits, target) + (1.0 - r) * self.dice(logits, target)


@LOSSES.register("switching")
class SwitchingLoss(Loss):
    """Switching loss: ``L = L_BCE + λ·L_Dice + (1 − λ)·L_InverseDice``.

    Reference: Anand, Patel, Dang & Sethi, "Switching loss for generalized nucleus detection in
    histopathology", MICCAI 2020 (arXiv:2008.03750). The paper switches λ per mini-batch from the
    foreground fraction; here λ (``lam``) is a fixed hyperparameter chosen by the study.

    Works for C=1 (BCE) and C>1 (softmax CE, per-channel Dice). Empty masks: those of the three parts
    (both empty → Dice and inverse Dice parts 0).
    """

    def __init__(self, *, lam: float = 0.5, smooth: float = 1e-5):
        if not 0.0 <= lam <= 1.0:
            raise _invalid(f"switching lam must lie in [0, 1], got {lam}")
        self.lam = float(lam)
        self.smooth = _check_smooth(smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = _prepare(logits, target)
        if logits.shape[1] == 1:
            ce = F.binary_cross_entropy_with_logits(logits, target)
        else:
            ce = F.cross_entropy(logits, target)
        # One set of sums feeds both region terms.
        inter, ps, gs, n = _overlap(_probs(logits), target)
        s = self.smooth
        dice = 1.0 - _safe_ratio(2.0 * inter + s, ps + gs + s)
        inv = _inverse_dice(inter, ps, gs, n, s)
        return ce + self.lam * dice.mean() + (1.0 - self.lam) * inv.mean()


class WeightedSum(Loss):
    """``L = Σ_i w_i · L_i(logits, target)`` over the given loss modules and weights."""

    def __init__(self, losses: Sequence[Loss], weights: Sequence[float]):
        if len(losses) != len(weights) or not losses:
            raise ValueError("WeightedSum needs one weight per loss and at least one loss")
        self.losses = tuple(losses)
        self.weights = tuple(float(w) for w in weights)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        total = None
        for w, loss in zip(self.weights, self.losses):
            term = loss(logits, target)
            term = term if w == 1.0 else w * term
            total = term if total is None else total + term
        return total


def build_loss(terms: Sequence[Term]) -> WeightedSum:
    """Build ``WeightedSum(term.weight · LOSSES[term.name](**params))`` from the config's loss terms.

    Parameters missing from a term take the class's defaults (``LOSSES.params``). Raises ``ConfigError``
    (naming the key ``loss``) for an unknown name, an unknown parameter or an invalid value.
    """
    if not terms:
        raise ConfigError("config key 'loss': at least one loss term is required")
    modules, weights = [], []
    for term in terms:
        cls = LOSSES[term.name]
        defaults = LOSSES.params(term.name)
        given = dict(term.params)
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ConfigError(
                f"config key 'loss': loss '{term.name}' takes no parameter(s) {', '.join(unknown)} "
                f"(it reads: {', '.join(defaults) or 'none'})"
            )
        modules.append(cls(**{**defaults, **given}))
        weights.append(float(term.weight))
    return WeightedSum(modules, weights)
