"""Losses: hand-computed values, empty-mask conventions, finite gradients, and agreement with MONAI."""

import math

import pytest
import torch
import torch.nn.functional as F

from segsweep.errors import ConfigError
from segsweep.training.losses import (
    LOSSES,
    BCELoss,
    ComboLoss,
    DiceLoss,
    FocalLoss,
    InverseDiceLoss,
    IoULoss,
    SwitchingLoss,
    TverskyLoss,
    WeightedCELoss,
    WeightedSum,
    build_loss,
)
from segsweep.training.params import parse_loss

torch.set_num_threads(1)

# One 2x2 image. p = sigmoid(logits) = [0.8, 0.6, 0.2, 0.4] (logit = ln(p/(1-p))), target g = [1, 0, 0, 0].
P = torch.tensor([0.8, 0.6, 0.2, 0.4], dtype=torch.float64)
LOGITS = torch.log(P / (1 - P)).reshape(1, 1, 2, 2).float()
TARGET = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
# Sums: I = Σpg = 0.8, Σp = 2.0, Σg = 1, FP = Σp(1-g) = 1.2, FN = Σ(1-p)g = 0.2.
# BCE per pixel: -ln 0.8, -ln(1-0.6) = -ln 0.4, -ln 0.8, -ln 0.6.
BCE = -(math.log(0.8) + math.log(0.4) + math.log(0.8) + math.log(0.6)) / 4
DICE_S1 = 1 - (2 * 0.8 + 1) / (2.0 + 1 + 1)  # smooth 1: 1 - 2.6/4 = 0.35


def _val(loss, logits=LOGITS, target=TARGET) -> float:
    return float(loss(logits, target))


def test_dice_by_hand():
    assert _val(DiceLoss(smooth=1.0)) == pytest.approx(0.35, abs=1e-6)
    assert _val(DiceLoss(smooth=0.0)) == pytest.approx(1 - 1.6 / 3.0, abs=1e-6)  # 1 - 2·0.8/(2+1)


def test_inverse_dice_by_hand():
    # 1-p = [0.2, 0.4, 0.8, 0.6], 1-g = [0, 1, 1, 1]: I' = 0.4+0.8+0.6 = 1.8, Σ(1-p) = 2.0, Σ(1-g) = 3
    # smooth 1: 1 - (3.6 + 1)/(2 + 3 + 1) = 1 - 4.6/6
    assert _val(InverseDiceLoss(smooth=1.0)) == pytest.approx(1 - 4.6 / 6, abs=1e-6)
    # and it is literally the Dice loss of the complements (logit of 1-p is -logit)
    assert _val(InverseDiceLoss(smooth=1.0)) == pytest.approx(_val(DiceLoss(smooth=1.0), -LOGITS, 1 - TARGET), abs=1e-6)


def test_iou_by_hand():
    # smooth 1: 1 - (0.8 + 1)/(2 + 1 - 0.8 + 1) = 1 - 1.8/3.2 = 0.4375
    assert _val(IoULoss(smooth=1.0)) == pytest.approx(0.4375, abs=1e-6)


def test_tversky_by_hand():
    # α=0.3 (FP), β=0.7 (FN), smooth 1: 1 - 1.8/(0.8 + 0.3·1.2 + 0.7·0.2 + 1) = 1 - 1.8/2.3
    assert _val(TverskyLoss(alpha=0.3, beta=0.7, smooth=1.0)) == pytest.approx(1 - 1.8 / 2.3, abs=1e-6)
    # swapping α and β: 1 - 1.8/(0.8 + 0.7·1.2 + 0.3·0.2 + 1) = 1 - 1.8/2.7 — FP now costs more here
    assert _val(TverskyLoss(alpha=0.7, beta=0.3, smooth=1.0)) == pytest.approx(1 - 1.8 / 2.7, abs=1e-6)
    # α = β = 0.5 is Dice with doubled smoothing: (I + s)/(I + FP/2 + FN/2 + s) = (2I + 2s)/(Σp + Σg + 2s)
    assert _val(TverskyLoss(alpha=0.5, beta=0.5, smooth=1.0)) == pytest.approx(_val(DiceLoss(smooth=2.0)), abs=1e-6)


def test_bce_and_weighted_ce_by_hand():
    assert _val(BCELoss()) == pytest.approx(BCE, abs=1e-6)
    # pos_weight 2 doubles the one positive pixel's -ln 0.8
    wce = -(2 * math.log(0.8) + math.log(0.4) + math.log(0.8) + math.log(0.6)) / 4
    assert _val(WeightedCELoss(pos_weight=2.0)) == pytest.approx(wce, abs=1e-6)


def test_focal_by_hand():
    # α=0.25, γ=2. p_t = [0.8, 0.4, 0.8, 0.6]; α_t = [0.25, 0.75, 0.75, 0.75]
    terms = [
        -0.25 * 0.2**2 * math.log(0.8),
        -0.75 * 0.6**2 * math.log(0.4),
        -0.75 * 0.2**2 * math.log(0.8),
        -0.75 * 0.4**2 * math.log(0.6),
    ]
    assert _val(FocalLoss(alpha=0.25, gamma=2.0)) == pytest.approx(sum(terms) / 4, abs=1e-6)
    # γ = 0, α = 0.5 is half the BCE
    assert _val(FocalLoss(alpha=0.5, gamma=0.0)) == pytest.approx(BCE / 2, abs=1e-6)


def test_combo_and_switching_by_hand():
    # combo, ce_ratio 0.3, pos_weight 1: 0.3·BCE + 0.7·Dice
    assert _val(ComboLoss(ce_ratio=0.3, pos_weight=1.0, smooth=1.0)) == pytest.approx(
        0.3 * BCE + 0.7 * DICE_S1, abs=1e-6
    )
    # switching λ = 0.25: BCE + 0.25·Dice + 0.75·InverseDice
    inv = 1 - 4.6 / 6
    assert _val(SwitchingLoss(lam=0.25, smooth=1.0)) == pytest.approx(BCE + 0.25 * DICE_S1 + 0.75 * inv, abs=1e-6)


def test_region_losses_average_per_image():
    # Image 2 is the complement case: logits -LOGITS and target 1-TARGET. The batch loss is the mean of the
    # two per-image losses, not the loss of pooled sums.
    logits = torch.cat([LOGITS, -LOGITS])
    target = torch.cat([TARGET, 1 - TARGET])
    d1 = _val(DiceLoss(smooth=1.0))
    d2 = _val(DiceLoss(smooth=1.0), -LOGITS, 1 - TARGET)
    assert _val(DiceLoss(smooth=1.0), logits, target) == pytest.approx((d1 + d2) / 2, abs=1e-6)


# ------------------------------------------------------------------------------------- empty masks
ALL = [
    DiceLoss(),
    InverseDiceLoss(),
    IoULoss(),
    TverskyLoss(),
    BCELoss(),
    WeightedCELoss(),
    FocalLoss(),
    ComboLoss(),
    SwitchingLoss(),
]


def test_empty_prediction_and_empty_target_give_zero_region_loss():
    target = torch.zeros(2, 1, 4, 4)
    logits = torch.full((2, 1, 4, 4), -40.0)  # p ≈ 4e-18: an empty prediction
    for loss in (DiceLoss(), IoULoss(), TverskyLoss(), InverseDiceLoss()):
        assert _val(loss, logits, target) == pytest.approx(0.0, abs=1e-9), type(loss).__name__


def test_zero_smoothing_empty_case_is_zero_not_nan():
    # sigmoid(-200) underflows to exactly 0 in float32: Σp = Σg = 0 and smooth 0 would be 0/0.
    target = torch.zeros(1, 1, 3, 3)
    logits = torch.full((1, 1, 3, 3), -200.0, requires_grad=True)
    for loss in (DiceLoss(smooth=0.0), IoULoss(smooth=0.0), TverskyLoss(smooth=0.0)):
        value = loss(logits, target)
        value.backward()
        assert value.item() == 0.0
        assert torch.isfinite(logits.grad).all()
        logits.grad = None


def test_empty_target_with_full_prediction_is_maximal():
    target = torch.zeros(1, 1, 4, 4)
    logits = torch.full((1, 1, 4, 4), 40.0)
    # Dice: 1 - s/(16 + s); Tversky: 1 - s/(0.3·16 + s) ≈ 1 - 2e-6
    for loss in (DiceLoss(), IoULoss(), TverskyLoss()):
        assert _val(loss, logits, target) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("loss", ALL, ids=lambda m: type(m).__name__)
def test_gradients_finite_for_extreme_logits(loss):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 1, 6, 6, generator=g) * 100).requires_grad_()
    target = (torch.rand(2, 1, 6, 6, generator=g) > 0.7).float()
    target[1] = 0  # one empty mask
    value = loss(logits, target)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_half_precision_logits_give_float32_loss():
    logits = LOGITS.to(torch.bfloat16)
    for loss in ALL:
        assert loss(logits, TARGET).dtype == torch.float32


# ------------------------------------------------------------------------------------------- MONAI
def _batch(c=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, c, 9, 7, generator=g) * 3
    if c == 1:
        target = (torch.rand(3, 1, 9, 7, generator=g) > 0.6).float()
    else:
        target = F.one_hot(torch.randint(0, c, (3, 9, 7), generator=g), c).permute(0, 3, 1, 2).float()
    target[2] = 0 if c == 1 else target[2]  # an empty binary mask in the batch
    return logits, target


def test_matches_monai():
    monai_losses = pytest.importorskip("monai.losses")
    logits, target = _batch()
    s = 1e-5
    pairs = [
        (DiceLoss(smooth=s), monai_losses.DiceLoss(sigmoid=True, smooth_nr=s, smooth_dr=s)),
        # MONAI's Jaccard is 1 - (2I + s)/(2U + s): ours with smoothing s equals MONAI's with 2s
        (IoULoss(smooth=s), monai_losses.DiceLoss(sigmoid=True, jaccard=True, smooth_nr=2 * s, smooth_dr=2 * s)),
        (
            TverskyLoss(alpha=0.3, beta=0.7, smooth=s),
            monai_losses.TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7, smooth_nr=s, smooth_dr=s),
        ),
        (FocalLoss(alpha=0.25, gamma=2.0), monai_losses.FocalLoss(use_softmax=False, gamma=2.0, alpha=0.25)),
        (FocalLoss(alpha=0.6, gamma=1.5), monai_losses.FocalLoss(use_softmax=False, gamma=1.5, alpha=0.6)),
        # DiceCELoss with C=1 uses BCEWithLogits; its `weight` would also scale the Dice part, so pos_weight 1
        (
            ComboLoss(ce_ratio=0.4, pos_weight=1.0, smooth=s),
            monai_losses.DiceCELoss(sigmoid=True, lambda_ce=0.4, lambda_dice=0.6, smooth_nr=s, smooth_dr=s),
        ),
    ]
    for ours, theirs in pairs:
        assert _val(ours, logits, target) == pytest.approx(float(theirs(logits, target)), rel=1e-5), type(ours).__name__


def test_multiclass_matches_monai_and_torch():
    monai_losses = pytest.importorskip("monai.losses")
    logits, target = _batch(c=3)
    s = 1e-5
    assert _val(DiceLoss(smooth=s), logits, target) == pytest.approx(
        float(monai_losses.DiceLoss(softmax=True, smooth_nr=s, smooth_dr=s)(logits, target)), rel=1e-5
    )
    ref = monai_losses.TverskyLoss(softmax=True, alpha=0.3, beta=0.7, smooth_nr=s, smooth_dr=s)
    assert _val(TverskyLoss(alpha=0.3, beta=0.7, smooth=s), logits, target) == pytest.approx(
        float(ref(logits, target)), rel=1e-5
    )
    assert _val(BCELoss(), logits, target) == pytest.approx(float(F.cross_entropy(logits, target.argmax(1))), rel=1e-5)
    with pytest.raises(ConfigError, match="binary"):
        WeightedCELoss()(logits, target)


def test_weighted_ce_matches_torch_and_is_stable():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 1, 5, 5, generator=g) * 40  # |x| up to ~100
    target = (torch.rand(2, 1, 5, 5, generator=g) > 0.5).float()
    ref = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor([3.0]))
    assert _val(WeightedCELoss(pos_weight=3.0), logits, target) == pytest.approx(float(ref), rel=1e-5)


def test_focal_matches_torchvision():
    tv_ops = pytest.importorskip("torchvision.ops")
    logits, target = _batch(seed=5)
    ref = tv_ops.sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction="mean")
    assert _val(FocalLoss(alpha=0.25, gamma=2.0), logits, target) == pytest.approx(float(ref), rel=1e-5)


# --------------------------------------------------------------------------------------- build_loss
def test_build_loss_from_config_terms():
    logits, target = _batch(seed=2)
    loss = build_loss(parse_loss("0.5*tversky + dice"))
    assert isinstance(loss, WeightedSum) and loss.weights == (0.5, 1.0)
    expected = 0.5 * _val(TverskyLoss(alpha=0.3, beta=0.7, smooth=1e-5), logits, target) + _val(
        DiceLoss(smooth=1e-5), logits, target
    )
    assert _val(loss, logits, target) == pytest.approx(expected, rel=1e-6)
    # term parameters reach the module
    focal = build_loss(parse_loss([{"name": "focal", "alpha": 0.9, "gamma": 0.5, "weight": 2}]))
    assert focal.losses[0].alpha == 0.9 and focal.losses[0].gamma == 0.5 and focal.weights == (2.0,)


def test_every_config_loss_builds():
    for name in LOSSES.names():
        loss = build_loss(parse_loss(name))
        assert torch.isfinite(loss(LOGITS, TARGET))


def test_build_loss_errors_name_the_key():
    from segsweep.training.params import LossTerm

    with pytest.raises(ConfigError, match="'loss'.*unknown loss"):
        build_loss([LossTerm("dicey")])
    with pytest.raises(ConfigError, match="'loss'.*takes no parameter"):
        build_loss([LossTerm("dice", 1.0, (("gamma", 2.0),))])
    with pytest.raises(ConfigError, match="'loss'.*focal"):
        build_loss([LossTerm("focal", 1.0, (("alpha", 2.0), ("gamma", 2.0)))])
    with pytest.raises(ConfigError):
        build_loss([])
