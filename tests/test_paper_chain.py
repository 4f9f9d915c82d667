"""The `paper` profile's chain end to end on tiny synthetic data, without a GPU.

The authors' architectures (timm's tf_efficientnet_b0_ns, mobilenetv1_100, densenet121) with the
authors' optimisers and starts, capped to two optimiser steps per epoch at 64 px on a few dozen faces.
ImageNet weights come from local files written here (what `pretrained_file` does offline), so the
test checks the wiring, not ImageNet: with learning rate 0 in the stages after them, a tensor of the
file must arrive unchanged at the end of each link (file -> 01_identity -> 02_expression).
"""

from __future__ import annotations

import pytest
import timm
import torch

from fer_lib import chain, config
from fer_lib.models import load_checkpoint
from fer_lib.stages import common as C
from fer_lib.stages import expression as E
from fer_lib.stages import gcn as G
from fer_lib.stages import pretrain as P

pytestmark = pytest.mark.slow

SECTIONS = ("pretrain_identity", "pretrain_attributes", "finetune", "finetune_mobilenet", "gcn_train")
SIZE = 64


def _weights_file(tmp_path, name: str, seed: int) -> str:
    """A state dict in timm's names, as a user's downloaded ImageNet file would be (classifier included)."""
    torch.manual_seed(seed)
    path = tmp_path / f"{name}.pth"
    torch.save(timm.create_model(name, pretrained=False).state_dict(), path)
    return str(path)


def _params(state: dict, prefix: str = "backbone.") -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("weights")
    return {
        "pretrain_identity": _weights_file(tmp, config.PAPER_A_EFFICIENTNET, 1),
        "pretrain_attributes": _weights_file(tmp, config.PAPER_A_MOBILENET, 2),
        "gcn_train": _weights_file(tmp, config.PAPER_B_BACKBONE, 3),
    }


def _profile(files: dict[str, str], **extra) -> config.Profile:
    ov = {
        "data.n_identities": 4,
        "data.images_per_identity": 6,
        "data.n_utkface": 160,
        "data.n_affectnet_train": 64,
        "data.n_affectnet_val": 24,
        "data.n_affwild2_videos": 2,
        "data.affwild2_frames": 12,
        "data.num_workers": 0,
        "device": "cpu",
    }
    for s in SECTIONS:
        ov.update(
            {
                f"{s}.image_size": SIZE,
                f"{s}.batch_size": 8,
                f"{s}.max_steps_per_epoch": 2,
                f"{s}.head_epochs": 1 if s != "gcn_train" else 0,
                f"{s}.full_epochs": 1,
                f"{s}.channels_last": False,
                # learning rate 0 after the first stages: what a stage starts from is what it ends with
                f"{s}.lr_head": 0.0 if s != "pretrain_attributes" else 1e-3,
                f"{s}.lr_full": 0.0 if s != "pretrain_attributes" else 1e-3,
            }
        )
    for s, path in files.items():
        ov[f"{s}.pretrained_file"] = path
    ov["affwild2_train.image_size"] = SIZE
    ov.update(extra)
    return config.get_profile("paper", ov)


@pytest.fixture(scope="module")
def run(files, tmp_path_factory):
    """Every training stage of the paper chain, in order, in one fresh run folder (module-scoped: the
    stages take about a minute together on two cores)."""
    root = tmp_path_factory.mktemp("paper_chain")
    mp = pytest.MonkeyPatch()
    mp.setenv("FER_RESULTS_DIR", str(root / "results"))
    mp.setenv("FER_DATA_DIR", str(root / "data"))
    mp.delenv("FER_DATA_ROOT", raising=False)  # the synthetic data, even where CI has real data
    mp.delenv("FER_PUBLISH", raising=False)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = _profile(files)
        paths = config.get_paths(cfg)
        out = {"cfg": cfg, "paths": paths}
        out["identity"] = P.train_identity(cfg, paths, progress=False, record=False)
        out["attributes"] = P.train_attributes(cfg, paths, progress=False)
        out["finetune"] = E.finetune_affectnet(cfg, paths, progress=False)
        out["mobilenet"] = E.finetune_affectnet(cfg, paths, progress=False, section="finetune_mobilenet")
        out["gcn"] = G.run_gcn(cfg, paths, progress=False, arms=("emotion_gcn",))
        out["affwild2"] = G.run_affwild2(cfg, paths, progress=False, arms=("emotion_gcn",))
        yield out
    finally:
        torch.set_num_threads(old)
        mp.undo()


def test_the_plan_names_every_start_and_no_random_one(files):
    cfg = _profile(files)
    assert chain.broken_links(cfg) == []
    inits = {r["stage"]: r["init"] for r in chain.plan(cfg)}
    assert inits["pretrain_identity"] == f"init: imagenet (file {files['pretrain_identity']})"
    assert inits["finetune"] == "init: checkpoint (01_identity)"
    assert inits["finetune_mobilenet"] == "init: checkpoint (01_attributes)"
    assert inits["gcn_train"] == f"init: imagenet (file {files['gcn_train']})"


def test_efficientnet_path_imagenet_file_to_identity_to_affectnet(run, files):
    fine = run["finetune"]
    assert run["cfg"].finetune.backbone == "tf_efficientnet_b0_ns"
    file_state = torch.load(files["pretrain_identity"], weights_only=True)
    first = "conv_stem.weight"
    id_ckpt = load_checkpoint(run["paths"].checkpoint("01_identity"))
    assert torch.equal(_params(id_ckpt["state_dict"])[first], file_state[first])
    assert fine.init.kind == "checkpoint" and fine.init.label == "01_identity"
    fine_ckpt = load_checkpoint(run["paths"].checkpoint("02_expression"))
    for k, v in _params(id_ckpt["state_dict"]).items():
        if k.endswith("weight") and "bn" not in k:
            assert torch.equal(_params(fine_ckpt["state_dict"])[k], v), k
    # paper A's AffectNet recipe ran: SAM around Adam, no scheduler, batch 32 in the profile
    last = load_checkpoint(run["paths"].checkpoints / "02_expression" / "last.pt")
    assert last["config"]["train"]["sam"] and last["config"]["train"]["label_smoothing"] == 0.0
    assert not last["config"]["train"]["amp"]


def test_mobilenet_path_attributes_to_affectnet_on_the_256d_layer(run):
    mob = run["mobilenet"]
    a_ckpt = load_checkpoint(run["paths"].checkpoint("01_attributes"))
    assert a_ckpt["config"]["run"]["init_kind"] == "pretrained"
    assert mob.init.kind == "checkpoint" and mob.init.label == "01_attributes"
    m_ckpt = load_checkpoint(run["paths"].checkpoint("02_expression_mobilenet"))
    assert m_ckpt["model_config"]["head_on"] == "attribute_trunk"
    trunk, served = (
        _params(a_ckpt["state_dict"], "attribute_trunk."),
        _params(m_ckpt["state_dict"], "attribute_trunk."),
    )
    assert trunk.keys() == served.keys() == {"0.weight", "0.bias"}
    for k, v in trunk.items():  # SAM steps away and back by subtraction: equal up to float rounding
        torch.testing.assert_close(served[k], v, rtol=0, atol=1e-6)
    assert m_ckpt["state_dict"]["heads.expression.weight"].shape == (8, 256)


def test_the_gcn_stage_runs_paper_b_recipe_from_imagenet(run, files):
    for key, folder in (("gcn", "03_gcn"), ("affwild2", "03_affwild2_emotion_gcn")):
        r = run[key].runs["emotion_gcn"]
        assert r.init.kind == "pretrained" and r.init.source == files["gcn_train"], key
        assert r.model.backbone.global_pool.pool_type == "max"
        last = load_checkpoint(run["paths"].checkpoints / folder / "last.pt")
        group = last["optimizer"]["param_groups"][0]
        assert group["momentum"] == 0.9 and group["weight_decay"] == 1e-3, key
        assert last["model_config"]["gcn"]["va_scale"] == 1.0 and last["model_config"]["pool"] == "max"
    train = load_checkpoint(run["paths"].checkpoints / "03_gcn" / "last.pt")["config"]["train"]
    assert (train["optimizer"], train["scheduler"], train["align"], train["augment"]) == (
        "sgd",
        "step",
        "eyes",
        "flip_rotate30",
    )
    aw = load_checkpoint(run["paths"].checkpoints / "03_affwild2_emotion_gcn" / "last.pt")["config"]["train"]
    assert aw["class_weights"] is False and aw["align"] == "box"


def test_a_broken_link_stops_the_stage_with_what_to_do(run, files):
    cfg = _profile(files, **{"finetune.backbone": config.PAPER_A_MOBILENET})
    assert chain.broken_links(cfg) == [
        "finetune: error at run time: 01_identity holds tf_efficientnet_b0_ns, this stage trains mobilenetv1_100"
    ]
    with pytest.raises(C.InitError, match=r"\[finetune\] must start from 01_identity.*not 'mobilenetv1_100'"):
        E.finetune_affectnet(cfg, run["paths"], progress=False)
