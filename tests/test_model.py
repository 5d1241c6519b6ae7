"""U-Net: output shapes for odd sizes and depths, dropout placement and train/eval behaviour."""

import pytest
import torch
from torch import nn

from segsweep.plan.config import cell_params
from segsweep.training.model import n_parameters
from segsweep.training.unet import UNet

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "depth,size",
    [(1, (8, 8)), (2, (33, 29)), (3, (37, 45)), (3, (128, 112)), (4, (50, 17)), (5, (64, 63))],
)
def test_output_has_input_size_for_any_size(depth, size):
    model = UNet(in_channels=1, n_classes=1, depth=depth, base_width=2)
    out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 1, *size)


def test_channels_and_classes():
    model = UNet(in_channels=3, n_classes=4, depth=2, base_width=4, batch_norm=False)
    assert model(torch.randn(1, 3, 20, 24)).shape == (1, 4, 20, 24)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # Without batch norm the convolutions carry their own bias; with it they don't.
    assert all(c.bias is not None for c in model.modules() if isinstance(c, nn.Conv2d))
    bn = UNet(depth=2, base_width=4, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 2 * (2 * 2 + 1)


def test_widths_double_per_level():
    model = UNet(depth=3, base_width=8)
    assert [enc[0].out_channels for enc in model.encoders] == [8, 16, 32]
    assert model.bottleneck[0].out_channels == 64
    assert [dec.up.out_channels for dec in model.decoders] == [32, 16, 8]


def test_parameter_count_matches_hand_count():
    # depth 1, width 2, BN: enc 1→2 (18 + 4 BN + 36 + 4), bottleneck 2→4 (72 + 8 + 144 + 8),
    # up: transposed conv 4→2 (32 + 2 bias) + double conv 4→2 (72 + 4 + 36 + 4), head 2→1 (2 + 1)
    assert n_parameters(UNet(depth=1, base_width=2)) == 62 + 232 + 34 + 116 + 3


def _dropouts(model, kind):
    return [m for m in model.modules() if type(m) is kind]


def test_dropout_per_block_and_mode():
    m = UNet(depth=3, base_width=4, dropout_down=0.1, dropout_bottleneck=0.2, dropout_up=0.3, dropout_mode="spatial")
    assert [d.p for d in _dropouts(m.encoders, nn.Dropout2d)] == [0.1] * 3
    assert [d.p for d in _dropouts(m.bottleneck, nn.Dropout2d)] == [0.2]
    assert [d.p for d in _dropouts(m.decoders, nn.Dropout2d)] == [0.3] * 3
    assert not _dropouts(m, nn.Dropout)
    e = UNet(depth=2, base_width=4, dropout_bottleneck=0.5, dropout_mode="element")
    assert len(_dropouts(e, nn.Dropout)) == 1 and not _dropouts(e, nn.Dropout2d)
    off = UNet(depth=2, base_width=4)
    assert not _dropouts(off, nn.Dropout) and not _dropouts(off, nn.Dropout2d)


@pytest.mark.parametrize("mode", ["element", "spatial"])
def test_dropout_active_in_train_off_in_eval(mode):
    torch.manual_seed(0)
    m = UNet(
        depth=2,
        base_width=4,
        batch_norm=False,
        dropout_down=0.5,
        dropout_bottleneck=0.5,
        dropout_up=0.5,
        dropout_mode=mode,
    )
    x = torch.randn(2, 1, 16, 16)
    m.train()
    a, b = m(x), m(x)
    assert not torch.equal(a, b)  # random masks differ between calls
    m.eval()
    assert torch.equal(m(x), m(x))


def test_spatial_dropout_zeroes_whole_channels():
    drop = UNet(depth=1, base_width=8, dropout_down=0.5, dropout_mode="spatial").encoders[0][-1]
    drop.train()
    torch.manual_seed(1)
    y = drop(torch.ones(4, 8, 5, 5))
    per_channel = y.flatten(2)
    # each (sample, channel) map is all zero or all scaled by 1/(1-p)
    assert torch.all((per_channel == 0).all(-1) | (per_channel == 2.0).all(-1))
    assert (per_channel == 0).all(-1).any()


def test_bad_arguments():
    with pytest.raises(ValueError):
        UNet(dropout_mode="channel", dropout_up=0.1)
    with pytest.raises(ValueError):
        UNet(depth=0)
    with pytest.raises(ValueError):
        UNet(dropout_down=1.0)


def test_from_params():
    p = cell_params(
        {
            "depth": 2,
            "base_width": 4,
            "in_channels": 3,
            "dropout_blocks": 0.2,
            "dropout_body": 0.4,
            "dropout_mode": "spatial",
            "batch_norm": False,
        }
    )
    m = UNet.from_params(p)
    assert m.in_channels == 3 and m.depth == 2
    assert [d.p for d in _dropouts(m.bottleneck, nn.Dropout2d)] == [0.4]
    assert [d.p for d in _dropouts(m.encoders, nn.Dropout2d)] == [0.2, 0.2]
    assert m(torch.randn(1, 3, 12, 12)).shape == (1, 1, 12, 12)
