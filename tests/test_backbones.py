"""ResNet-encoder U-Nets: output sizes, the model axis in CellParams and the plan, pretrained weights from a
local file (loaded for real, summed over RGB for one channel, checked at plan time, hashed by content)."""

import shutil

import pytest
import torch
import torchvision

from segsweep.errors import ConfigError, DataError
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
from segsweep.training.backbones import ResNetUNet, load_pretrained
from segsweep.training.model import MODELS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A torchvision ResNet-18 state dict in a file, as a torch hub cache holds it (random: no download)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hub") / "resnet18-f37072fd.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
@pytest.mark.parametrize("size", [(64, 64), (96, 80), (48, 40), (37, 45)])
def test_output_has_input_size(arch, size):
    model = ResNetUNet(arch, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, *size)).shape == (1, 1, *size)


def test_three_channels_and_classes():
    model = ResNetUNet("resnet18", in_channels=3, n_classes=2).eval()
    assert model.encoder.conv1.weight.shape == (64, 3, 7, 7)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2, 32, 32)


def test_levels_and_encoder():
    model = ResNetUNet("resnet18")
    names = [n for n, _, _ in model.feature_levels()]
    assert names == ["stem", "layer1", "layer2", "layer3", "layer4", "dec4", "dec3", "dec2", "dec1", "dec0"]
    enc = {id(p) for p in model.encoder_parameters()}
    assert {id(p) for p in model.encoder.parameters()} == enc
    assert not any(id(p) in enc for p in model.decoders.parameters())
    assert not hasattr(model.encoder, "fc")


def test_model_axis_normalises_unet_keys():
    p = sc.cell_params({"model": "resnet18_unet", "depth": 5, "base_width": 32})
    assert (p.model, p.depth, p.base_width) == ("resnet18_unet", 0, 0)
    assert isinstance(MODELS[p.model](p), ResNetUNet)
    unet = sc.cell_params({})
    assert unet.model == "unet" and "model" not in unet.to_dict(identity=True)
    assert sc.cell_params({"model": "resnet18_unet", "depth": 4}) == sc.cell_params({"model": "resnet18_unet"})


def _study(axes, **kw):
    return {"axes": axes, "table": {"rows": list(axes)[:1], "cols": []}, **kw}


def _plan(studies, **cfg):
    return build_plan(sc.prepare({"studies": studies, **cfg}))


def test_unet_keys_set_by_a_backbone_study_fail_at_plan_time():
    with pytest.raises(ConfigError, match=r"^study 'b': config key 'depth': model 'resnet18_unet'"):
        _plan({"b": _study({"lr": [1e-3]}, base={"model": "resnet18_unet", "depth": 4})})
    with pytest.raises(ConfigError, match=r"config key 'base_width'"):
        _plan({"b": _study({"model": ["unet", "resnet34_unet"], "base_width": [8, 16]})})
    # the schema default written out, the train section and a scale preset are not "set by the study"
    plan = _plan(
        {"b": _study({"model": ["unet", "resnet18_unet"]}, base={"depth": 3})},
        train={"base_width": 16},
        scale="smoke",
        scales={"smoke": {"cell": {"depth": 2, "base_width": 4, "epochs": 1}}},
    )
    models = {c.params.model: c.params for c in plan.cells.values()}
    assert (models["unet"].depth, models["unet"].base_width) == (2, 4)
    assert (models["resnet18_unet"].depth, models["resnet18_unet"].base_width) == (0, 0)


# ------------------------------------------------------------------------------------------ pretrained
def test_weights_are_loaded_and_summed_over_rgb(weights):
    state = torch.load(weights, weights_only=True)
    for ch in (1, 3):
        model = ResNetUNet("resnet18", in_channels=ch)
        load_pretrained(model, weights)
        assert torch.equal(model.encoder.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
        assert torch.equal(model.encoder.bn1.running_var, state["bn1.running_var"])
        want = state["conv1.weight"] if ch == 3 else state["conv1.weight"].sum(1, keepdim=True)
        assert torch.equal(model.encoder.conv1.weight, want)
    # one grey channel through the summed stem = the grey image as three equal channels through the file's stem
    grey = torch.rand(1, 1, 32, 32)
    rgb_conv = torch.nn.functional.conv2d(grey.expand(-1, 3, -1, -1), state["conv1.weight"], stride=2, padding=3)
    assert torch.allclose(model.encoder.conv1(grey.expand(-1, 3, -1, -1)), rgb_conv)


def test_mismatched_weights_name_the_file(weights, tmp_path):
    r34 = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), r34)
    with pytest.raises(ConfigError, match=r"resnet34.pth does not match the resnet18 encoder"):
        load_pretrained(ResNetUNet("resnet18"), r34)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"cannot read weights file .*junk.pth"):
        load_pretrained(ResNetUNet("resnet18"), junk)
    with pytest.raises(ConfigError, match=r"resnet34.pth does not match"):
        _plan({"p": _study({"lr": [1e-3]}, base={"model": "resnet18_unet", "pretrained": str(r34)})})


def test_missing_weights_fail_the_plan_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "resnet18-f37072fd.pth"
    with pytest.raises(ConfigError, match=rf"^study 'p': config key 'pretrained': weights file not found: {missing}"):
        _plan({"p": _study({"lr": [1e-3]}, base={"model": "resnet18_unet", "pretrained": str(missing)})})
    with pytest.raises(ConfigError, match=r"config key 'pretrained': model 'unet' has no torchvision encoder"):
        sc.cell_params({"pretrained": str(missing)})


def test_cell_id_follows_the_file_content_not_its_path(weights, tmp_path):
    def ids(path):
        plan = _plan(
            {"p": _study({"pretrained": [None, str(path)]}, base={"model": "resnet18_unet"})},
        )
        return [sc.cell_id for sc in plan.studies["p"].cells], plan

    (scratch, first), plan = ids(weights)
    assert scratch != first
    moved = tmp_path / "elsewhere" / "renamed.pth"
    moved.parent.mkdir()
    shutil.copy(weights, moved)
    (scratch2, second), plan2 = ids(moved)
    assert (scratch2, second) == (scratch, first)  # moving (or renaming) the file keeps the id
    p = plan2.cells[second].params
    assert p.pretrained.path == str(moved) and p.to_dict(identity=True)["pretrained"]["path"] == str(moved)
    assert "path" not in p.id_form()["pretrained"] and p.id_form()["pretrained"]["sha256"] == p.pretrained.sha256
    assert p.same_run(plan.cells[first].params.to_dict())  # a checkpoint written before the move still resumes
    state = torch.load(moved, weights_only=True)
    state["fc.bias"] = state["fc.bias"] + 1.0  # other bytes, same names and shapes
    torch.save(state, moved)
    (_, third), _ = ids(moved)
    assert third != first
    with pytest.raises(DataError, match="changed since the plan was made"):
        load_pretrained(ResNetUNet("resnet18"), moved, sha256=p.pretrained.sha256)


def test_identity_form_round_trips_with_new_fields(weights):
    p = sc.cell_params({"model": "resnet34_unet", "finetune": "discriminative", "encoder_lr_factor": 0.2})
    assert p.to_dict(identity=True)["encoder_lr_factor"] == 0.2 and p.unfreeze_epoch is None
    from segsweep.training.params import CellParams

    assert CellParams.from_dict(p.to_dict(identity=True)) == p
    q = sc.cell_params({"model": "resnet18_unet", "pretrained": str(weights)})
    assert CellParams.from_dict(q.to_dict(identity=True)) == q == CellParams.from_dict(q.to_dict())
