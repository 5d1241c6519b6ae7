"""Fine-tuning modes: frozen parameters and BatchNorm statistics really stay, the optimizer gets only trainable
parameters, per-group LRs follow the schedule, unfreezing resumes exactly, and init_from starts a cell from
the source cell's best.pt (whose absence or failure is a clear error)."""

import csv
import json

import pytest
import torch
from test_train import _write_dataset

from segsweep.errors import DataError
from segsweep.plan.config import cell_params
from segsweep.training.finetune import FineTune, selected_cell
from segsweep.training.loop import train_cell
from segsweep.training.model import MODELS
from segsweep.training.params import InitFrom
from segsweep.training.schedules import LRSchedule

torch.set_num_threads(1)


def _setup(model="resnet18_unet", **kw):
    p = cell_params({"model": model, "lr": 0.01, **kw})
    torch.manual_seed(0)
    net = MODELS[p.model](p)
    ft = FineTune(p, net)
    return p, net, ft, ft.build_optimizer()


def _step(net, opt, n=1):
    net.train()
    for _ in range(n):
        x = torch.rand(2, 1, 32, 32)
        loss = net(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _snapshot(mods):
    return [t.detach().clone() for m in mods for t in list(m.parameters()) + list(m.buffers())]


@pytest.mark.parametrize("model", ["resnet18_unet", "unet"])
def test_freeze_encoder_really_freezes(model):
    p, net, ft, opt = _setup(model, finetune="freeze_encoder")
    enc, dec = net.encoder_modules(), [net.decoders, net.head]
    in_opt = {id(q) for g in opt.param_groups for q in g["params"]}
    assert in_opt == {id(q) for q in net.parameters() if q.requires_grad}  # only trainable ones
    assert not in_opt & {id(q) for q in net.encoder_parameters()}
    before_enc, before_dec = _snapshot(enc), _snapshot(dec)
    _step(net, opt)
    bns = [m for e in enc for m in e.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(b.training for b in bns)  # frozen BatchNorm stays in eval mode under train()
    assert all(torch.equal(a, b) for a, b in zip(before_enc, _snapshot(enc)))  # weights and running stats
    assert not all(torch.equal(a, b) for a, b in zip(before_dec, _snapshot(dec)))
    assert any(m.training for m in net.decoders.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_full_mode_is_one_group_of_every_parameter():
    _, net, _, opt = _setup("unet")
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["params"] == list(net.parameters())
    assert "lr_factor" not in opt.param_groups[0]


def test_discriminative_lrs_in_the_optimizer_groups():
    p, net, ft, opt = _setup(finetune="discriminative", encoder_lr_factor=0.1, schedule="one_cycle", epochs=3)
    sched = LRSchedule(p.schedule, opt, p.lr, steps_per_epoch=4, epochs=p.epochs)
    dec, enc = opt.param_groups
    assert {id(q) for q in enc["params"]} == {id(q) for q in net.encoder_parameters()}
    for _ in range(5):
        assert enc["lr"] == pytest.approx(0.1 * dec["lr"]) and dec["lr"] == sched.lr
        sched.step()
    ft.start_epoch(1, sched.lr)
    assert ft.lr_encoder == pytest.approx(0.1 * sched.lr)


def test_freeze_then_unfreeze_adds_the_encoder_group_and_resumes():
    p, net, ft, opt = _setup(finetune="freeze_then_unfreeze", unfreeze_epoch=1)
    sched = LRSchedule(p.schedule, opt, p.lr, steps_per_epoch=1, epochs=3)
    ft.start_epoch(0, sched.lr)
    assert len(opt.param_groups) == 1 and ft.lr_encoder == 0.0
    _step(net, opt)
    sched.step()
    ft.start_epoch(1, sched.lr)
    assert len(opt.param_groups) == 2 and all(q.requires_grad for q in net.encoder_parameters())
    assert ft.lr_encoder == sched.lr
    enc_before = _snapshot(net.encoder_modules())
    _step(net, opt)
    assert not all(torch.equal(a, b) for a, b in zip(enc_before, _snapshot(net.encoder_modules())))
    state = opt.state_dict()
    # a resumed run: a fresh (frozen) set-up loads the two-group state
    _, net2, ft2, opt2 = _setup(finetune="freeze_then_unfreeze", unfreeze_epoch=1)
    opt2.load_state_dict(state)
    assert len(opt2.param_groups) == 2 and not ft2.frozen
    assert all(q.requires_grad for q in net2.encoder_parameters())


def test_history_logs_the_encoder_lr(tmp_path):
    data_dir, split = _write_dataset(tmp_path / "data", n_per_patient=2)
    p = cell_params(
        {
            "model": "resnet18_unet",
            "epochs": 3,
            "batch_size": 4,
            "finetune": "freeze_then_unfreeze",
            "unfreeze_epoch": 2,
        }
    )
    m = train_cell(p, data_dir, split, tmp_path / "cell")
    assert m.status in ("ok", "collapsed")
    with open(tmp_path / "cell" / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:7] == ["epoch", "lr", "train_loss", "val_loss", "val_dice", "val_iou", "epoch_s"]
    assert [float(r["lr_encoder"]) for r in rows] == [0.0, 0.0, float(rows[2]["lr"])]


def test_the_unfreezing_epoch_trains_the_encoder_batchnorm(tmp_path):
    """Epoch 1 frozen, epoch 2 unfrozen: the encoder's BatchNorm statistics move in epoch 2 (fresh BatchNorm
    has running_mean 0; a frozen encoder never leaves it)."""
    data_dir, split = _write_dataset(tmp_path / "data", n_per_patient=2)
    kw = {"model": "resnet18_unet", "epochs": 2, "batch_size": 4, "finetune": "freeze_then_unfreeze"}
    p = cell_params({**kw, "unfreeze_epoch": 1})
    train_cell(p, data_dir, split, tmp_path / "cell")
    state = torch.load(tmp_path / "cell" / "last.pt", weights_only=False)["model"]
    enc_bn = [k for k in state if k.startswith("encoder.") and k.endswith("running_mean")]
    assert enc_bn and all(state[k].abs().sum() > 0 for k in enc_bn)
    # the fix changed these cells' numbers, so their ids carry it; other modes keep theirs
    assert p.id_form()["finetune_revision"] == 2
    assert "finetune_revision" not in cell_params({**kw, "finetune": "freeze_encoder"}).id_form()


# ------------------------------------------------------------------------------------------- init_from
def _tiny(**kw):
    return cell_params({"epochs": 1, "depth": 1, "base_width": 2, "batch_size": 4, **kw})


def test_init_from_a_cell_starts_from_its_best_weights(tmp_path):
    data_dir, split = _write_dataset(tmp_path / "data", n_per_patient=2)
    cells = tmp_path / "cells"
    src = train_cell(_tiny(), data_dir, split, cells / "aaaaaaaaaaaa")
    assert src.status in ("ok", "collapsed")
    if src.status != "ok":  # the source must be ok; make it so for this test
        mj = cells / "aaaaaaaaaaaa" / "metrics.json"
        mj.write_text(json.dumps({**json.loads(mj.read_text()), "status": "ok"}))
    p = _tiny(init_from={"cell": "aaaaaaaaaaaa"}, finetune="freeze_encoder", seed=5)
    torch.manual_seed(5)
    net = MODELS[p.model](p)
    ft = FineTune(p, net)
    assert "aaaaaaaaaaaa" in ft.initialise(cells / "bbbbbbbbbbbb")
    best = torch.load(cells / "aaaaaaaaaaaa" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(v, best[k]) for k, v in net.state_dict().items())
    assert train_cell(p, data_dir, split, cells / "bbbbbbbbbbbb").status in ("ok", "collapsed")
    # a source that did not finish ok is named
    mj = cells / "aaaaaaaaaaaa" / "metrics.json"
    mj.write_text(json.dumps({**json.loads(mj.read_text()), "status": "diverged"}))
    with pytest.raises(DataError, match=r"init_from cell aaaaaaaaaaaa finished with status 'diverged'"):
        FineTune(p, MODELS[p.model](p)).initialise(cells / "bbbbbbbbbbbb")
    with pytest.raises(DataError, match=r"init_from cell cccccccccccc: .* not found"):
        FineTune(_tiny(init_from={"cell": "cccccccccccc"}), MODELS["unet"](p)).initialise(cells / "x")


def test_selected_cell_of_a_study(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / "table.json").write_text(
        json.dumps({"value": "val_dice", "higher_is_better": True, "best": {"config": "lr=0.1"}})
    )
    rows = [
        ("a1", "lr=0.01", "ok", "0.9"),
        ("b1", "lr=0.1", "ok", "0.7"),
        ("b2", "lr=0.1", "ok", "0.8"),
        ("b3", "lr=0.1", "diverged", ""),
    ]
    with open(d / "cells.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["cell", "config", "status", "val_dice"])
        w.writerows(rows)
    ref = InitFrom(study="s", cells=("a1", "b1", "b2", "b3"), value="val_dice", higher_is_better=True)
    assert selected_cell(tmp_path, ref) == "b2"  # the best configuration's best ok run
    with pytest.raises(DataError, match="lists other cells than the plan"):
        selected_cell(tmp_path, InitFrom(study="s", cells=("a1",), value="val_dice", higher_is_better=True))


class _Killed(Exception):
    pass


@pytest.mark.parametrize("mode", ["freeze_then_unfreeze", "discriminative"])
def test_a_resumed_fine_tuning_run_is_identical(tmp_path, mode):
    """Interrupted after the encoder was unfrozen (its group added), the resumed run equals the uninterrupted one."""
    data_dir, split = _write_dataset(tmp_path / "data", n_per_patient=2)
    p = _tiny(epochs=3, finetune=mode, unfreeze_epoch=1, schedule="cosine", lr=0.01)

    def kill_after_two(row):
        if row["epoch"] == 2:
            raise _Killed

    whole = train_cell(p, data_dir, split, tmp_path / "whole")
    with pytest.raises(_Killed):
        train_cell(p, data_dir, split, tmp_path / "split", on_epoch=kill_after_two)
    resumed = train_cell(p, data_dir, split, tmp_path / "split")

    def hist(d):
        with open(d / "history.csv") as fh:
            return [{k: v for k, v in r.items() if k != "epoch_s"} for r in csv.DictReader(fh)]

    assert hist(tmp_path / "whole") == hist(tmp_path / "split")
    assert resumed.best_val_dice == whole.best_val_dice
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
