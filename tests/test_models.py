"""Backbones, multi-task heads, age/gender readouts, freezing and checkpoint io."""

from __future__ import annotations

import copy
import math
import re

import pytest
import timm
import torch
from safetensors.torch import save_file

from fer_lib.models import (
    MultiTaskNet,
    build_model_from_checkpoint,
    create_backbone,
    freeze_backbone,
    init_from_checkpoint,
    load_checkpoint,
    predict_age,
    predict_gender,
    read_state_dict,
    rng_state,
    save_checkpoint,
)
from fer_lib.tasks import all_tasks

ALL_TASKS = {"identity": 7, "age": 100, "gender": 1, "race": 5, "expression": 8, "va": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------- backbones
@pytest.mark.parametrize(
    "name, dim, size",
    [
        ("mobilenetv1_100", 1024, 224),
        ("mobilenetv2_100", 1280, 224),
        ("efficientnet_b0", 1280, 224),
        ("efficientnet_b2", 1408, 260),
        ("rexnet_150", 1920, 224),
    ],
)
def test_paper_backbones_sizes_and_normalisation(name, dim, size, no_network):
    module, num_features, input_size, mean, std = create_backbone(name)
    assert (num_features, input_size) == (dim, size)  # b2: the paper's 260, not timm's 256
    cfg = timm.create_model(name, pretrained=False).pretrained_cfg
    assert mean == tuple(cfg["mean"]) and std == tuple(cfg["std"])
    with torch.no_grad():
        feat = module.eval()(torch.zeros(1, 3, 64, 64))
    assert feat.shape == (1, dim)


def test_tiny_cnn_and_any_timm_name():
    module, dim, size, mean, std = create_backbone("tiny_cnn")
    assert module(torch.zeros(2, 3, size, size)).shape == (2, dim)
    module, dim, size, _, _ = create_backbone("resnet10t")
    assert dim == 512 and size == 176  # not in the paper table: timm's pretrained_cfg input size
    with pytest.raises(ValueError, match="unknown backbone 'no_such_net'"):
        create_backbone("no_such_net")


def test_fer_cnn_backbones_need_no_stage_import():
    # predict / video features rebuild a default-profile checkpoint in a fresh process
    import subprocess
    import sys

    code = (
        "import torch; from fer_lib.models import create_backbone\n"
        "m, d, s, _, _ = create_backbone('fer_cnn_s')\n"
        "assert m(torch.zeros(1, 3, s, s)).shape == (1, d) == (1, 192), d\n"
        "import sys; assert 'fer_lib.stages.expression' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "lcnet_050"])
def test_feature_dim_of_models_with_a_head_after_pooling(name):
    # their num_features is the width before conv_head; the feature fer_lib uses comes after it
    torch.manual_seed(0)
    net = MultiTaskNet(name, {"expression": 8}, verbose=False).eval()
    with torch.no_grad():
        feat = net.forward_features(torch.zeros(2, 3, 64, 64))
        assert feat.shape == (2, net.num_features) and net.num_features in (1024, 1280)
        assert net(torch.zeros(2, 3, 64, 64))["expression"].shape == (2, 8)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_file_loads_backbone_and_drops_classifier(tmp_path, suffix, no_network):
    src = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=1000)
    state = {k: v.clone() for k, v in src.state_dict().items()}
    path = tmp_path / f"imagenet{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # DDP-style wrapper
    module, *_ = create_backbone("mobilenetv2_050", pretrained_file=path, verbose=False)
    own = module.state_dict()
    assert torch.equal(own["conv_stem.weight"], state["conv_stem.weight"])
    assert torch.equal(own["blocks.3.0.conv_pw.weight"], state["blocks.3.0.conv_pw.weight"])
    report = module.load_report
    assert report.missing == [] and report.mismatched == [] and report.unexpected == []
    assert report.loaded == sum(1 for k in state if not k.startswith("classifier."))


def test_pretrained_file_errors_name_the_path(tmp_path):
    missing = tmp_path / "vggface2_b0.pth"
    with pytest.raises(FileNotFoundError, match="vggface2_b0.pth"):
        create_backbone("efficientnet_b0", pretrained_file=missing)
    wrong = tmp_path / "wrong.pth"
    torch.save({"foo.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="no tensor of .*wrong.pth fits"):
        create_backbone("tiny_cnn", pretrained_file=wrong)


def test_whole_pickled_model_needs_trust_flag(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(2, 3), path)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        read_state_dict(path)
    assert set(read_state_dict(path, trust_pickle=True)) == {"weight", "bias"}


# ------------------------------------------------------------------------------------------- heads
def test_multitask_outputs_and_features():
    torch.manual_seed(0)
    net = MultiTaskNet("tiny_cnn", ALL_TASKS, hidden=32).eval()
    x = torch.randn(3, 3, 32, 32)
    out = net(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "identity": (3, 7),
        "age": (3, 100),
        "gender": (3,),
        "race": (3, 5),
        "expression": (3, 8),
        "va": (3, 2),
    }
    feat = net.forward_features(x)
    assert feat.shape == (3, net.num_features)
    # attributes go through paper A's Dense(hidden) trunk; expression / identity / va read the pooled feature
    assert net.heads["age"].in_features == 32 and net.heads["expression"].in_features == net.num_features
    torch.testing.assert_close(out["expression"], net.heads["expression"](feat))
    reg = MultiTaskNet("tiny_cnn", {"age": 100}, age_mode="regression")
    assert reg.tasks["age"] == 1 and reg(x)["age"].shape == (3,)
    with pytest.raises(ValueError, match="'va' head has 2 outputs"):
        MultiTaskNet("tiny_cnn", {"va": 3})


@pytest.mark.parametrize("spec", [s for s in all_tasks() if s.sizes], ids=lambda s: s.key)
def test_a_head_of_fixed_sizes_refuses_any_other(spec):
    for n in spec.sizes:
        assert MultiTaskNet("tiny_cnn", {spec.key: n}, verbose=False).heads[spec.key].out_features == n
    with pytest.raises(ValueError, match=f"the '{spec.key}' head has {re.escape(spec.sizes_doc)}, got"):
        MultiTaskNet("tiny_cnn", {spec.key: max(spec.sizes) + 1}, verbose=False)


def test_head_on_attribute_trunk_puts_every_head_on_the_trunk():
    torch.manual_seed(0)
    heads = {s.key: s.outputs or 7 for s in all_tasks()}
    net = MultiTaskNet("tiny_cnn", heads, hidden=32, verbose=False)
    assert {t for t in heads if net.heads[t].in_features == 32} == {s.key for s in all_tasks() if s.on_trunk}
    trunk = MultiTaskNet("tiny_cnn", heads, hidden=32, verbose=False, head_on="attribute_trunk")
    assert all(trunk.heads[t].in_features == 32 for t in heads)


def _colour_and_grey_faces(n: int = 4, size: int = 32):
    """``n`` colour faces (uint8, strong hue differences) and their greyscale photos (PIL's luma)."""
    import numpy as np

    from fer_lib.preprocess import Preprocess

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    faces = (
        np.stack(
            [
                np.stack(
                    [xx * rng.uniform(50, 255), yy * rng.uniform(50, 255), (1 - xx) * rng.uniform(50, 255)],
                    -1,
                )
                for _ in range(n)
            ]
        )
        .clip(0, 255)
        .astype(np.uint8)
    )
    return faces, np.stack([Preprocess.to_grey(f) for f in faces])


@pytest.mark.parametrize("contrast", ["none", "standardise"])
def test_grey_view_is_what_a_greyscale_photo_reaches_the_network_as(contrast):
    net = MultiTaskNet("tiny_cnn", {"age": 100}, verbose=False)
    pre = net.preprocess = net.preprocess.replace(contrast=contrast)
    colour, grey = _colour_and_grey_faces()
    x_colour, x_grey = pre.normalise_torch(colour), pre.normalise_torch(grey)
    # PIL rounds the luma to whole grey levels: half a level (scaled as the standardisation scales the
    # face's contrast, whose mean and sd the rounding also moves a little), in normalised units
    from fer_lib.preprocess import CONTRAST_TARGET

    scale = CONTRAST_TARGET[1] / grey[..., 0].reshape(len(grey), -1).std(1).min() if contrast != "none" else 1
    step = (0.5 + 0.05) * scale / 255 / min(pre.std)
    assert float((net.grey_view(x_colour) - x_grey).abs().max()) <= step
    assert float((x_colour - x_grey).abs().max()) > 100 * step  # the faces are far from grey
    torch.testing.assert_close(net.grey_view(x_grey), x_grey, atol=1e-5, rtol=0)  # grey stays grey


def test_grey_heads_read_age_and_gender_from_the_grey_view_and_the_rest_in_colour(tmp_path):
    from torch.utils.data import DataLoader

    from fer_lib.training.evaluation import predict

    torch.manual_seed(0)
    tasks = {"age": 100, "gender": 1, "race": 5}
    net = MultiTaskNet("tiny_cnn", tasks, hidden=16, verbose=False, grey_heads=["gender", "age"]).eval()
    assert net.grey_heads == ("age", "gender")  # in head order
    colour, grey = _colour_and_grey_faces()
    x_colour, x_grey = net.preprocess.normalise_torch(colour), net.preprocess.normalise_torch(grey)

    def plain_of(model):  # every head from the faces as they are
        return lambda x: model.forward_heads(model.forward_features(x))

    plain = plain_of(net)
    with torch.no_grad():
        out, of_colour, of_grey = net(x_colour), plain(x_colour), plain(net.grey_view(x_colour))
        torch.testing.assert_close(out["race"], of_colour["race"])
        for head in ("age", "gender"):
            torch.testing.assert_close(out[head], of_grey[head], atol=1e-5, rtol=1e-4)
            # the colour photo and its greyscale copy agree; read from the colour face they would not
            gap = float((out[head] - net(x_grey)[head]).abs().max())
            assert gap < 0.02 * float((of_colour[head] - of_grey[head]).abs().max())
        assert not torch.allclose(out["race"], net(x_grey)["race"], atol=1e-3)
    # evaluation (validation, model selection, thresholds) reads what serving reads
    pred = predict(net, DataLoader(x_colour, batch_size=3), progress=False)
    torch.testing.assert_close(torch.from_numpy(pred["age_logits"]), out["age"], atol=1e-5, rtol=1e-4)
    # training runs one pass over the faces as the batch gives them (TrainConfig.grey augments)
    with torch.no_grad():
        trained = copy.deepcopy(net).train()
        torch.testing.assert_close(trained(x_colour)["age"], plain_of(trained)(x_colour)["age"])
    # the checkpoint rebuilds it
    rebuilt = build_model_from_checkpoint(load_checkpoint(save_checkpoint(tmp_path / "g.pt", net))).eval()
    assert rebuilt.grey_heads == ("age", "gender")
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x_colour)["gender"], out["gender"])
    with pytest.raises(ValueError, match=r"grey_heads \['va'\] name no head of this model"):
        MultiTaskNet("tiny_cnn", tasks, verbose=False, grey_heads=("va",))


def test_mirror_reads_every_head_as_the_mean_over_the_face_and_its_mirror_image(tmp_path):
    torch.manual_seed(0)
    tasks = {"age": 100, "gender": 1, "race": 5}
    colour, _ = _colour_and_grey_faces()
    both = MultiTaskNet("tiny_cnn", tasks, hidden=16, verbose=False, grey_heads=("age",), mirror=True).eval()
    x = both.preprocess.normalise_torch(colour)
    plain = copy.deepcopy(both)
    plain.mirror, plain.grey_heads = False, ()
    grey_only = copy.deepcopy(both)
    grey_only.mirror = False
    with torch.no_grad():
        out = both(x)
        flipped = x.flip(-1)
        assert not torch.allclose(plain(x)["race"], plain(flipped)["race"], atol=1e-3)  # faces not symmetric
        # a colour head: the mean of its logits on the face and on its mirror image
        torch.testing.assert_close(out["race"], (plain(x)["race"] + plain(flipped)["race"]) / 2)
        torch.testing.assert_close(out["gender"], (plain(x)["gender"] + plain(flipped)["gender"]) / 2)
        # a grey head: the same mean over the grey view and its mirror image
        grey = both.grey_view(x)
        torch.testing.assert_close(out["age"], (plain(grey)["age"] + plain(grey.flip(-1))["age"]) / 2)
        # a photo and its mirror image get the same answers
        for head, y in both(flipped).items():
            torch.testing.assert_close(y, out[head], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(grey_only(flipped)["age"], grey_only(x)["age"], atol=1e-3)
        # training runs one pass over the faces as the batch gives them
        torch.testing.assert_close(copy.deepcopy(both).train()(x)["race"], plain.train()(x)["race"])
    rebuilt = build_model_from_checkpoint(load_checkpoint(save_checkpoint(tmp_path / "m.pt", both))).eval()
    assert rebuilt.mirror and rebuilt.grey_heads == ("age",)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x)["age"], out["age"])


def test_age_readout_top2_expected_value():
    logits = torch.full((3, 100), -30.0)
    logits[0, 30] = logits[0, 31] = 5.0  # equal mass on 30 and 31 -> 30.5
    logits[1, 20] = math.log(3.0)
    logits[1, 40] = 0.0  # p(20) = 3 p(40) -> (3*20 + 40) / 4 = 25
    logits[1, 60] = -1.0  # third bin is ignored by the top-2 readout
    logits[2, 99] = 10.0
    torch.testing.assert_close(predict_age(logits)[:2], torch.tensor([30.5, 25.0]), atol=1e-3, rtol=0)
    assert 98.9 < float(predict_age(logits)[2]) <= 99.0
    torch.testing.assert_close(predict_age(torch.tensor([0.25, 0.5])), torch.tensor([25.0, 50.0]))


def test_age_readout_median_is_the_bins_median_not_the_top_peak():
    logits = torch.full((3, 100), -30.0)
    # a frowning adult's bimodal distribution: a narrow child peak (p 0.45 at 2 years) beside adult mass
    # spread over 30-34 (0.11 each): the top-2 readout snaps to the child, the median is 30
    logits[0, 2] = math.log(0.45)
    logits[0, 30:35] = math.log(0.11)
    logits[1, 40] = 10.0  # one peak: every readout gives it
    logits[2, 10], logits[2, 20] = math.log(0.6), math.log(0.4)  # median 10; top-2 mean 14
    assert predict_age(logits, "median").tolist() == [30.0, 40.0, 10.0]
    top2 = predict_age(logits, "bins")
    assert float(top2[0]) < 10.0 and 39.9 < float(top2[1]) <= 40.0
    torch.testing.assert_close(top2[2], torch.tensor(14.0), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="median"):
        predict_age(logits, "mean")
    with pytest.raises(ValueError, match="age_mode"):
        MultiTaskNet("tiny_cnn", {"age": 100}, age_mode="mean", verbose=False)


def test_gender_readout_uses_p_male_threshold():
    # sigmoid(logit) = p(female); male (0) iff p(male) = 1 - p(female) >= 0.6
    p_female = torch.tensor([0.1, 0.39, 0.41, 0.5, 0.9])
    logits = torch.log(p_female / (1 - p_female))
    assert predict_gender(logits).tolist() == [0, 0, 1, 1, 1]
    assert predict_gender(logits, male_threshold=0.5).tolist() == [0, 0, 0, 0, 1]  # >=: a tie is male
    two = torch.stack([torch.zeros(5), logits], 1)  # softmax over (male, female) gives the same p
    assert predict_gender(two).tolist() == [0, 0, 1, 1, 1]


def test_freeze_backbone_keeps_backbone_exactly():
    torch.manual_seed(0)
    net = MultiTaskNet("tiny_cnn", {"expression": 4}).train()
    freeze_backbone(net)
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 3, 32, 32))["expression"].logsumexp(1).mean().backward()
        opt.step()
    after = net.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert all(p.grad is None for p in net.backbone.parameters())
    assert not net.backbone.training and net.heads.training
    freeze_backbone(net, False)
    assert net.backbone.training and all(p.requires_grad for p in net.parameters())


# -------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_weights_only(tmp_path):
    torch.manual_seed(0)
    net = MultiTaskNet("tiny_cnn", ALL_TASKS, hidden=16, dropout=0.1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3, 32, 32))["race"].sum().backward()
    opt.step()
    path = save_checkpoint(
        tmp_path / "ck.pt",
        net,
        {"train": {"lr": 1e-3, "size": (32, 32)}},
        {"expression": ("Neutral", "Happy")},
        {"acc": torch.tensor(0.5).item()},
        optimizer=opt,
        epoch=3,
        step=12,
        rng=rng_state(),
    )
    raw = torch.load(path, weights_only=True)  # no pickled classes anywhere
    assert raw["epoch"] == 3 and raw["label_orders"]["expression"] == ["Neutral", "Happy"]
    assert raw["model_config"]["tasks"] == ALL_TASKS and raw["metrics"] == {"acc": 0.5}
    ck = load_checkpoint(path)
    rebuilt = build_model_from_checkpoint(ck).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = net.eval()(x), rebuilt(x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    opt2 = torch.optim.Adam(rebuilt.parameters(), lr=1e-3)
    opt2.load_state_dict(ck["optimizer"])
    assert opt2.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])


def test_checkpoint_adapts_heads_with_a_warning(tmp_path):
    torch.manual_seed(0)
    attr = MultiTaskNet("tiny_cnn", {"age": 100, "gender": 1, "race": 5, "expression": 8})
    path = save_checkpoint(tmp_path / "attr.pt", attr)
    expr = MultiTaskNet("tiny_cnn", {"expression": 7, "va": 2})
    va_before = expr.heads["va"].weight.clone()
    with pytest.warns(UserWarning, match="heads.expression.weight"):
        report = init_from_checkpoint(expr, path)
    assert torch.equal(expr.backbone.features[0].weight, attr.backbone.features[0].weight)
    assert torch.equal(expr.heads["va"].weight, va_before)  # new head keeps its init
    assert "heads.age.weight" in report.unexpected and "heads.va.weight" in report.missing
    assert any(m.startswith("heads.expression.weight (8, 256) -> (7, 256)") for m in report.mismatched)
    other = MultiTaskNet("mobilenetv2_050", {"expression": 7})
    with pytest.raises(ValueError, match="backbone 'tiny_cnn'"):
        init_from_checkpoint(other, path)


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="not a fer_lib checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")
