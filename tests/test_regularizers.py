"""Keras-style penalties on a tiny network with hand-set weights; normalisation layers excluded."""

import pytest
import torch
from torch import nn

from segsweep.errors import ConfigError
from segsweep.training.regularizers import penalty, regularized_parameters

torch.set_num_threads(1)


def tiny():
    """Conv2d(1→2, 2x2) → BatchNorm2d(2) → ConvTranspose2d(2→1, 1x1), weights set by hand."""
    conv, bn, up = nn.Conv2d(1, 2, 2), nn.BatchNorm2d(2), nn.ConvTranspose2d(2, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]], [[[-1.0, 0.0], [2.0, -1.0]]]]))
        conv.bias.copy_(torch.tensor([0.5, -1.5]))
        bn.weight.fill_(7.0)  # large, so including BN by mistake would show
        bn.bias.fill_(3.0)
        up.weight.copy_(torch.tensor([2.0, -3.0]).reshape(2, 1, 1, 1))
        up.bias.fill_(1.0)
    return nn.Sequential(conv, bn, up)


# Kernels: conv Σ|w| = 1+2+0+3+1+0+2+1 = 10, Σw² = 1+4+0+9+1+0+4+1 = 20; transpose Σ|w| = 5, Σw² = 4+9 = 13
#   → Σ|k| = 15, Σk² = 33.
# Biases: conv Σ|b| = 0.5+1.5 = 2, Σb² = 0.25+2.25 = 2.5; transpose 1, 1 → Σ|b| = 3, Σb² = 3.5.
@pytest.mark.parametrize(
    "kind,lam,ratio,on,expected",
    [
        ("l1", 0.1, None, ("kernel",), 0.1 * 15),
        ("l2", 0.01, None, ("kernel",), 0.01 * 33),  # Keras: no ½
        ("l2", 1.0, None, ("bias",), 3.5),
        ("l1", 1.0, None, ("bias", "kernel"), 18.0),
        # elastic λ(rΣ|w| + (1-r)Σw²) on kernels + biases: 0.1·(0.25·18 + 0.75·36.5) = 0.1·31.875
        ("elastic", 0.1, 0.25, ("kernel", "bias"), 3.1875),
        ("elastic", 0.1, 1.0, ("kernel",), 1.5),  # r = 1 is L1
        ("elastic", 0.1, 0.0, ("kernel",), 3.3),  # r = 0 is L2
    ],
)
def test_penalty_by_hand(kind, lam, ratio, on, expected):
    value = penalty(tiny(), kind, lam, on, l1_ratio=ratio)
    assert value.ndim == 0 and value.item() == pytest.approx(expected, rel=1e-6)


def test_gradients_and_batchnorm_untouched():
    model = tiny()
    conv, bn, up = model
    penalty(model, "elastic", 0.1, ("kernel",), l1_ratio=0.25).backward()
    # d/dw λ(r|w| + (1-r)w²) = λ(r·sign(w) + 2(1-r)w); sign(0) = 0
    w = conv.weight.detach()
    assert torch.allclose(conv.weight.grad, 0.1 * (0.25 * torch.sign(w) + 1.5 * w))
    assert bn.weight.grad is None and bn.bias.grad is None
    assert conv.bias.grad is None and up.bias.grad is None  # biases not selected
    assert up.weight.grad is not None


def test_none_and_zero_lambda_cost_nothing():
    model = tiny()
    for args in (("none", 0.0, ()), ("l2", 0.0, ("kernel",))):
        z = penalty(model, *args)
        assert z.item() == 0.0 and z.grad_fn is None and not z.requires_grad


def test_linear_included_tied_counted_once_no_bias_is_zero():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]]))
    tied = nn.Sequential(lin, nn.ReLU(), lin)  # the same layer twice
    assert len(regularized_parameters(tied, ("kernel", "bias"))) == 1
    assert penalty(tied, "l2", 1.0, ("kernel",)).item() == pytest.approx(1 + 4 + 9 + 0 + 1 + 1)
    assert penalty(tied, "l1", 1.0, ("bias",)).item() == 0.0  # no bias anywhere
    norms = nn.Sequential(nn.GroupNorm(1, 4), nn.LayerNorm(4), nn.InstanceNorm2d(4, affine=True))
    assert regularized_parameters(norms, ("kernel", "bias")) == []


def test_unet_penalty_matches_a_plain_loop():
    from segsweep.training.unet import UNet

    model = UNet(depth=2, base_width=4, batch_norm=True)
    kernels = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(regularized_parameters(model, ("kernel",))) == len(kernels)
    ref = sum((k**2).sum() for k in kernels)
    assert penalty(model, "l2", 0.5, ("kernel",)).item() == pytest.approx(0.5 * ref.item(), rel=1e-5)


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match="'regularizer'"):
        penalty(tiny(), "l3", 0.1, ("kernel",))
    with pytest.raises(ConfigError, match="'reg_l1_ratio'"):
        penalty(tiny(), "elastic", 0.1, ("kernel",), l1_ratio=None)
    with pytest.raises(ConfigError, match="'reg_on'"):
        penalty(tiny(), "l1", 0.1, ("weights",))
    with pytest.raises(ConfigError, match="'reg_on'"):
        penalty(tiny(), "l1", 0.1, ())


def test_settings_come_from_the_reg_cell_keys_and_a_missing_key_is_named():
    from types import SimpleNamespace

    from segsweep.errors import ConfigError
    from segsweep.training.regularizers import settings_of

    assert settings_of(SimpleNamespace(regularizer="elastic", reg_l1_ratio=0.25)) == {"l1_ratio": 0.25}
    assert settings_of(SimpleNamespace(regularizer="l2")) == {}
    with pytest.raises(ConfigError, match="'reg_l1_ratio'"):  # a kind's keyword without its cell key
        settings_of(SimpleNamespace(regularizer="elastic"))
