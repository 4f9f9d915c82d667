import dataclasses
import os

import pytest

from fer_lib import chain, config


def test_profiles_are_distinct_and_named():
    profs = {n: config.get_profile(n) for n in config.PROFILE_NAMES}
    assert [p.name for p in profs.values()] == list(config.PROFILE_NAMES)
    # smoke is strictly smaller than default, paper uses the published schedule
    assert profs["smoke"].data.n_utkface < profs["default"].data.n_utkface
    assert profs["paper"].finetune.head_epochs == 3 and profs["paper"].finetune.full_epochs == 6
    assert profs["paper"].finetune.sam and profs["paper"].finetune.lr_full == 1e-4
    assert profs["paper"].pretrain_identity.full_epochs == 10


def test_env_selects_profile(monkeypatch):
    monkeypatch.setenv("FER_PROFILE", "smoke")
    assert config.get_profile().name == "smoke"
    monkeypatch.delenv("FER_PROFILE")
    assert config.get_profile().name == "default"


def test_overrides_coerce_strings_like_a_cli():
    p = config.get_profile(
        "default",
        config.parse_overrides(
            [
                "finetune.full_epochs=7",
                "finetune.sam=true",
                "finetune.grad_clip=1.5",
                "video.strides=1,3",
                "data.real_limit=none",
                "seed=3",
            ]
        ),
    )
    assert p.finetune.full_epochs == 7 and p.finetune.sam is True
    assert p.finetune.grad_clip == 1.5 and p.video.strides == (1, 3)
    assert p.data.real_limit is None and p.seed == 3
    # the source profile is not mutated
    assert config.get_profile("default").finetune.full_epochs != 7


def test_python_overrides_keep_types():
    p = config.get_profile("smoke", {"finetune.lr_full": 0.5, "gcn.tau": 0.2})
    assert p.finetune.lr_full == 0.5 and p.gcn.tau == 0.2


@pytest.mark.parametrize("bad", ["finetune.nope=1", "nosection.x=1", "finetune.sam=maybe"])
def test_bad_overrides_are_rejected(bad):
    with pytest.raises((KeyError, ValueError)):
        config.get_profile("smoke", config.parse_overrides([bad]))


def test_unknown_profile_and_malformed_override():
    with pytest.raises(ValueError, match="unknown profile"):
        config.get_profile("huge")
    with pytest.raises(ValueError, match="section.key=value"):
        config.parse_overrides(["finetune.full_epochs"])


def test_json_round_trip():
    p = config.get_profile("paper")
    d = p.to_dict()
    assert d["finetune"]["backbone"] == "tf_efficientnet_b0_ns"
    assert dataclasses.asdict(p) == d


# --------------------------------------------------------------------- sections derived after overrides
def test_an_override_of_a_parent_reaches_every_section_derived_from_it():
    p = config.get_profile("default", {"finetune.backbone": "mobilenetv2_100", "finetune.lr_head": 0.01})
    for section in ("fer2013_finetune", "fer2013_transfer", "gcn_train", "affwild2_train"):
        assert getattr(p, section).backbone == "mobilenetv2_100", section
    assert p.fer2013_finetune.lr_head == 1e-3  # the FER2013 recipe sets its own head LR
    assert p.gcn_train.lr_head == 0.01 and p.affwild2_train.image_size == 112
    assert p.fer2013_scratch.backbone == "fer_cnn_s"  # the scratch baseline names its own network
    assert "fer2013_finetune (from finetune)" in p.summary()


def test_an_override_of_a_derived_section_stays_with_it_when_the_parent_changes():
    p = config.get_profile("smoke", {"fer2013_finetune.image_size": 40, "affwild2_train.full_epochs": 1})
    assert p.fer2013_finetune.image_size == 40 and p.finetune.image_size == 48
    q = p.override({"finetune.backbone": "mobilenetv2_050"})
    assert q.fer2013_finetune.image_size == 40 and q.fer2013_finetune.backbone == "mobilenetv2_050"
    assert q.affwild2_train.full_epochs == 1 and q.gcn_train.backbone == "mobilenetv2_050"
    with pytest.raises(KeyError, match="unknown config key"):
        config.get_profile("smoke", {"gcn_train.no_such_key": 1})


# ----------------------------------------------------------------------------------------- the chain
def test_the_paper_chain_connects_and_names_every_start():
    p = config.get_profile("paper")
    rows = {r["stage"]: r for r in chain.plan(p)}
    assert not [
        r for r in rows.values() if r["init"].startswith("init: random") and "request" not in r["init"]
    ]
    assert chain.broken_links(p) == []
    assert rows["finetune"]["init"] == "init: checkpoint (01_identity)"
    assert rows["finetune_mobilenet"]["init"] == "init: checkpoint (01_attributes)"
    assert rows["pretrain_identity"]["init"].startswith("init: imagenet (timm hub, tf_efficientnet_b0_ns")
    assert rows["gcn_train"]["backbone"] == "densenet121 (max pool)" and rows["gcn_train"]["size"] == 227
    assert "finetune" in rows["pretrain_identity"]["feeds"]
    assert "video features" in rows["finetune"]["feeds"]
    text = chain.format_plan(p)
    assert "writes 01_identity -> feeds finetune" in text


def test_a_broken_link_in_the_chain_is_named_before_anything_trains():
    p = config.get_profile("paper", {"pretrain_identity.backbone": "mobilenetv1_100"})
    broken = chain.broken_links(p)
    assert broken == [
        "finetune: error at run time: 01_identity holds mobilenetv1_100, this stage trains tf_efficientnet_b0_ns"
    ]
    lax = config.get_profile("default", {"finetune.backbone": "mobilenetv2_100"})
    assert chain.planned_init(lax, "finetune").problem.startswith("falls back: 01_attributes holds")
    bare = config.get_profile("paper", {"gcn_train.pretrained": "none"})
    assert "no weights named" in chain.planned_init(bare, "gcn_train").problem
    with pytest.raises(ValueError, match="choose one of auto, none, random"):
        config.get_profile("smoke", {"finetune.init_from": "03_nowhere"}) and chain.plan(
            config.get_profile("smoke", {"finetune.init_from": "03_nowhere"})
        )


def test_paths_follow_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RESULTS_DIR", str(tmp_path / "r"))
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path))
    (tmp_path / "utkface").mkdir()
    paths = config.get_paths()
    assert paths.results == (tmp_path / "r").resolve()
    assert paths.metrics_csv.name == "metrics.csv"
    assert paths.real("utkface") == tmp_path.resolve() / "utkface"
    assert paths.real("affectnet") is None
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="FER_DATA_ROOT"):
        config.get_paths()


def test_seed_everything_repeats_draws():
    import numpy as np
    import torch

    config.seed_everything(5)
    a = (np.random.rand(3), torch.rand(3))  # noqa: NPY002
    config.seed_everything(5)
    b = (np.random.rand(3), torch.rand(3))  # noqa: NPY002
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_importing_fer_lib_makes_openmp_threads_wait_passively_unless_told_otherwise():
    import subprocess
    import sys

    code = "import os, fer_lib; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "ACTIVE"


class _Real:
    """Paths-like: ``real(name)`` is a folder for the named datasets only."""

    def __init__(self, *names: str):
        self.names = set(names)
        self.real_root, self.results, self.published = ("/data" if names else None), "/runs/default", False

    def real(self, name: str):
        return f"/data/{name}" if name in self.names else None


def test_stand_ins_change_the_sections_on_synthetic_data_only():
    from fer_lib.chain import stood_in, with_stand_ins

    cfg = config.get_profile("default")
    assert cfg.stand_in == {"image_size": 64}
    every = with_stand_ins(cfg, _Real())  # no real data at all: the newcomer's first run
    assert {s for s in stood_in(cfg, _Real())} >= {"pretrain_attributes", "finetune", "gcn_train"}
    assert (
        every.pretrain_attributes.image_size == every.finetune.image_size == every.gcn_train.image_size == 64
    )
    assert every.affwild2_train.image_size == 64  # derived from a derived section, its own 112 replaced
    assert cfg.pretrain_attributes.image_size == 112  # the profile itself is left alone
    from fer_lib.notebook import summary

    assert "synthetic stand-ins (image_size=64): pretrain_identity, pretrain_attributes, finetune" in summary(
        every, _Real()
    )

    # the published run: UTKFace and FER2013 real, AffectNet and Aff-Wild2 synthetic
    mixed = with_stand_ins(cfg, _Real("utkface", "fer2013", "vggface2"))
    assert mixed.pretrain_attributes == cfg.pretrain_attributes
    assert mixed.finetune.image_size == 64 and mixed.gcn_train.image_size == 64
    # FER2013 derives from the stood-in `finetune` and still trains as the profile says
    for section in ("fer2013_finetune", "fer2013_scratch", "fer2013_transfer"):
        assert getattr(mixed, section) == getattr(cfg, section), section
    # later overrides (a notebook's cfg.override) re-derive and keep both; applying twice changes nothing
    assert with_stand_ins(mixed, _Real("utkface", "fer2013", "vggface2")) is mixed
    again = mixed.override({"gcn.va_scale": 1.0})
    assert again.gcn_train.image_size == 64 and again.fer2013_finetune == cfg.fer2013_finetune
    # from the command line: a stand-in value changed, or stand-ins off
    assert with_stand_ins(cfg.override({"stand_in.image_size": "80"}), _Real()).finetune.image_size == 80
    off = cfg.override({"stand_in": "none"})
    assert off.stand_in is None and with_stand_ins(off, _Real()) is off
    # everything real, or a profile without stand-ins: unchanged
    assert with_stand_ins(cfg, _Real("vggface2", "utkface", "affectnet", "fer2013", "affwild2")) is cfg
    assert with_stand_ins(config.get_profile("paper"), _Real()) == config.get_profile("paper")


def test_the_age_readout_is_a_recipe_setting_that_the_model_and_its_checkpoint_carry(tmp_path):
    """Paper A's top-2 readout in the paper profile; the bins' median in the default profile's model, built
    by the stage's model factory and kept through a checkpoint (serving reads it from there)."""
    from fer_lib.models import build_model_from_checkpoint, load_checkpoint, save_checkpoint
    from fer_lib.stages.common import new_model

    assert config.get_profile("paper").pretrain_attributes.age_mode == "bins"
    c = config.get_profile("default").pretrain_attributes
    assert c.age_mode == "median"
    tc = dataclasses.replace(c, backbone="tiny_cnn", pretrained="none", image_size=32)
    net = new_model(tc, {"age": 100, "gender": 1})
    assert net.age_mode == "median" and net.tasks["age"] == 100
    rebuilt = build_model_from_checkpoint(load_checkpoint(save_checkpoint(tmp_path / "m.pt", net)))
    assert rebuilt.age_mode == "median"


def test_the_grey_heads_are_a_recipe_setting_that_the_stage_model_carries():
    """The default profile's attribute model reads age and gender from the greyscale view (ethnicity in
    colour), through the stage's model factory; paper A's recipe and the expression sections read colour."""
    from fer_lib.stages.common import new_model

    c = config.get_profile("default").pretrain_attributes
    assert c.grey_heads == ("age", "gender")
    tc = dataclasses.replace(c, backbone="tiny_cnn", pretrained="none", image_size=32)
    assert new_model(tc, {"age": 100, "gender": 1, "race": 5}).grey_heads == ("age", "gender")
    assert config.get_profile("paper").pretrain_attributes.grey_heads == ()
    assert config.get_profile("default").fer2013_finetune.grey_heads == ()
    with pytest.raises(ValueError, match=r"grey_heads \['age', 'gender'\] name no head"):
        new_model(tc, {"expression": 7})  # a section's grey heads must be heads of its model
    over = config.get_profile("default", {"pretrain_attributes.grey_heads": "gender"})
    assert over.pretrain_attributes.grey_heads == ("gender",)


def test_zoom_skip_reaches_the_training_set_from_the_command_line(tmp_path):
    """``--set pretrain_attributes.zoom_skip=race`` reaches the stage's training set (not the others)."""
    import pandas as pd

    from fer_lib.preprocess import Preprocess
    from fer_lib.stages.common import make_dataset

    assert config.get_profile("default").pretrain_attributes.zoom_skip == ()
    over = config.get_profile(
        "default", {"pretrain_attributes.zoom_skip": "race", "pretrain_attributes.zoom_skip_below": "0.7"}
    ).pretrain_attributes
    assert (over.zoom_skip, over.zoom_skip_below) == (("race",), 0.7)
    m = pd.DataFrame({"path": ["a.png"], "split": ["train"]})
    train = make_dataset(m, Preprocess(112), over)
    assert (train.zoom_skip, train.zoom_skip_below) == (("race",), 0.7)
    assert make_dataset(m, Preprocess(112)).zoom_skip == ()  # evaluation sets mask nothing


def test_face_jpeg_quality_reaches_the_stage_model_from_the_command_line():
    """``--set pretrain_attributes.face_jpeg_quality=75`` is carried by the stage's model (its training,
    validation and serving preprocessing) and stored in its checkpoint's preprocessing."""
    from fer_lib.stages.common import new_model

    over = config.get_profile("default", {"pretrain_attributes.face_jpeg_quality": "75"}).pretrain_attributes
    tc = dataclasses.replace(over, backbone="tiny_cnn", pretrained="none", image_size=32)
    model = new_model(tc, {"age": 100, "gender": 1, "race": 5})
    assert model.preprocess.jpeg_quality == 75 and model.preprocess.max_side == 64
    assert model.config()["preprocess"]["jpeg_quality"] == 75
    base = dataclasses.replace(
        tc, face_jpeg_quality=config.get_profile("default").pretrain_attributes.face_jpeg_quality
    )
    assert new_model(base, {"age": 100, "gender": 1, "race": 5}).preprocess.jpeg_quality is None


def test_the_mirror_readout_is_a_recipe_setting_that_the_stage_model_carries():
    """The default profile's attribute model reads every head as the mean over the face and its mirror
    image; paper A's recipe and the expression sections read the face once."""
    from fer_lib.stages.common import new_model

    c = config.get_profile("default").pretrain_attributes
    tc = dataclasses.replace(c, backbone="tiny_cnn", pretrained="none", image_size=32)
    assert c.mirror and new_model(tc, {"age": 100, "gender": 1, "race": 5}).mirror
    assert not config.get_profile("paper").pretrain_attributes.mirror
    assert not config.get_profile("default").fer2013_finetune.mirror
    off = config.get_profile("default", {"pretrain_attributes.mirror": "false"}).pretrain_attributes
    assert not new_model(
        dataclasses.replace(off, backbone="tiny_cnn", pretrained="none"), {"age": 100, "gender": 1}
    ).mirror
