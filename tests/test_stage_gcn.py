"""Stage 03 (Emotion-GCN): the model's home and checkpoint, the common start of the arms, the ABAW
scores and frame counts, the Aff-Wild2 ablation, and the GCN's valence/arousal learning like a linear head.

The learning test writes a small AffectNet-format folder (class = position of a bright square; valence
/ arousal = class prototype x intensity + noise, shown as red / blue level, so the labels depend on the
expression as in AffectNet) and reads it through the real loader via FER_DATA_ROOT.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from affectnet_folder import write_affectnet

from fer_lib import config, reporting
from fer_lib.models import MultiTaskNet, load_checkpoint, save_checkpoint
from fer_lib.models import emotion_gcn as EG
from fer_lib.stages import common as C
from fer_lib.stages import gcn as G

SIDE = 32
# valence / arousal of the canonical classes at full intensity (Neutral .. Contempt)
PROTO = np.array(
    [[0, 0], [0.8, 0.5], [-0.6, -0.3], [0.2, 0.8], [-0.6, 0.8], [-0.7, 0.3], [-0.6, 0.7], [-0.4, 0.2]]
)
FAST = {
    "finetune.backbone": "tiny_cnn",
    "finetune.image_size": SIDE,
    "finetune.batch_size": 32,
    "finetune.head_epochs": 0,
    "finetune.full_epochs": 12,
    "finetune.lr_full": 3e-3,
    "finetune.optimizer": "adamw",
    "finetune.augment": "none",
    "finetune.amp": False,
    "finetune.channels_last": False,
    "finetune.pretrained": None,
    "seed": 0,
    "gcn.hidden": 64,
}


def _proto_va(k: int, rng: np.random.Generator) -> np.ndarray:
    """Valence / arousal near the class prototype: the expression-VA dependency the GCN's graph encodes."""
    return np.clip(PROTO[k] * rng.uniform(0.3, 1.0) + rng.normal(0, 0.1, 2), -1, 1)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    write_affectnet(root, 480, 160, _proto_va)
    return root


@pytest.fixture
def env(fake_root, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("FER_DATA_ROOT", str(fake_root))
    monkeypatch.setenv("FER_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("FER_DATA_DIR", str(tmp_path / "data"))
    return config.get_paths()


def _graph():
    rng = np.random.default_rng(0)
    e = rng.integers(0, 7, 200)
    va = np.clip(PROTO[e] + rng.normal(0, 0.2, (200, 2)), -1, 1)
    return EG.label_adjacency(dict(expression=e, valence=va[:, 0], arousal=va[:, 1]))


# ------------------------------------------------------------------------------------------ the model
def test_gcnnet_is_a_model_and_round_trips_through_its_checkpoint(tmp_path):
    assert G.GCNNet is EG.GCNNet and G.load_gcn_checkpoint is EG.load_gcn_checkpoint
    cfg = config.GCNConfig(hidden=16, lr_scale=0.5, va_scale=0.2)
    torch.manual_seed(0)
    net = EG.GCNNet("tiny_cnn", _graph(), cfg, input_size=SIDE).eval()
    assert net.tasks == {"expression": 7, "va": 2} and net.preprocess.input_size == SIDE
    assert net.gcn.va_scale == 0.2 and net.gcn.layers[1].lr_scale == 0.5
    path = tmp_path / "03_gcn" / "best.pt"
    save_checkpoint(path, net, {"train": {"image_size": SIDE}})
    again = G.load_gcn_checkpoint(path).eval()
    x = torch.randn(3, 3, SIDE, SIDE)
    with torch.no_grad():
        a, b = net(x), again(x)
    torch.testing.assert_close(a["va"], b["va"])
    torch.testing.assert_close(a["expression"], b["expression"])
    assert again.preprocess.input_size == SIDE and again.gcn.va_scale == 0.2


# ------------------------------------------------------------------------------------- the arms' start
def test_every_arm_starts_from_the_best_checkpoint_backbone_only(tmp_path):
    paths = config.Paths(repo=tmp_path, data=tmp_path / "d", results=tmp_path / "r", real_root=None)
    tc = config.get_profile("smoke", FAST).gcn_train
    assert C.find_start(tc, paths, "gcn_train")[0] is None
    torch.manual_seed(1)
    attr = MultiTaskNet("tiny_cnn", {"age": 100, "gender": 1}, verbose=False)
    save_checkpoint(paths.checkpoint("01_attributes"), attr, {})
    assert C.find_start(tc, paths, "gcn_train")[0].parent.name == "01_attributes"
    torch.manual_seed(2)
    va_model = MultiTaskNet("tiny_cnn", {"expression": 8, "va": 2}, verbose=False)
    save_checkpoint(paths.checkpoint("02_expression_va"), va_model, {})
    ckpt, _ = C.find_start(tc, paths, "gcn_train")
    assert ckpt.parent.name == "02_expression_va"  # the best the project has
    named = dataclasses.replace(tc, init_from="01_attributes")
    assert C.find_start(named, paths, "gcn_train")[0].parent.name == "01_attributes"
    none, why = C.find_start(dataclasses.replace(tc, backbone="mobilenetv2_050"), paths, "gcn_train")
    assert none is None and "tiny_cnn" in why
    assert C.find_start(dataclasses.replace(tc, init_from="none"), paths, "gcn_train")[0] is None
    with pytest.raises(ValueError, match="gcn_train.init_from"):
        C.find_start(dataclasses.replace(tc, init_from="03_nowhere"), paths, "gcn_train")
    torch.manual_seed(3)
    linear = MultiTaskNet("tiny_cnn", {"expression": 7, "va": 2}, verbose=False)
    gcn = EG.GCNNet("tiny_cnn", _graph(), config.GCNConfig(hidden=8))
    va_before = linear.heads["va"].weight.clone()
    for model in (linear, gcn):
        init = C.init_stage(model, tc, paths, "gcn_train", backbone_only=True)
        assert init.kind == "checkpoint" and init.label == "02_expression_va" and init.tensors > 0
        for k, v in va_model.backbone.state_dict().items():
            assert torch.equal(model.backbone.state_dict()[k], v), k
    # the 02 model's trained VA head (same shape) is not handed to the linear arm
    assert torch.equal(linear.heads["va"].weight, va_before)
    assert not torch.equal(linear.heads["va"].weight, va_model.heads["va"].weight)


# ---------------------------------------------------------------------------------------- ABAW scores
def test_abaw_metrics_by_hand_with_invalid_frames_masked():
    logits = np.eye(7)[[0, 1, 1, 2, 3, 0]] * 5.0
    pred = {
        "expression_logits": logits,
        "label_expression": np.array([0, 1, 2, 2, -1, 0]),
        "mask_expression": np.array([1, 1, 1, 1, 0, 1], bool),  # frame 4: EXPR -1
        "valence_pred": np.array([0.1, 0.5, -0.2, 0.3, 9.0, 0.0]),
        "label_valence": np.array([0.2, 0.4, -0.1, 0.2, -5, 0.1]),
        "mask_valence": np.array([1, 1, 1, 1, 0, 1], bool),  # frame 4: VA -5
        "arousal_pred": np.array([0.0, 0.2, 0.4, 0.1, 9.0, 0.3]),
        "label_arousal": np.array([0.1, 0.3, 0.3, 0.0, -5, 0.2]),
        "mask_arousal": np.array([1, 1, 1, 1, 0, 1], bool),
    }
    m = G.abaw_metrics(pred, 7)
    # kept frames: labels 0 1 2 2 0, predictions 0 1 1 2 0 -> accuracy 4/5; F1 over the classes present:
    # class 0: 1, class 1: P 1/2 R 1 -> 2/3, class 2: P 1 R 1/2 -> 2/3
    f1 = (1 + 2 / 3 + 2 / 3) / 3
    assert m["expression_accuracy"] == pytest.approx(0.8)
    assert m["expression_macro_f1"] == pytest.approx(f1)
    assert m["expression_abaw2020"] == pytest.approx(0.67 * f1 + 0.33 * 0.8)

    def ccc(x, y):
        return 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)

    keep = pred["mask_valence"]
    cv = ccc(pred["label_valence"][keep], pred["valence_pred"][keep])
    ca = ccc(pred["label_arousal"][keep], pred["arousal_pred"][keep])
    assert m["valence_ccc"] == pytest.approx(cv) and m["arousal_ccc"] == pytest.approx(ca)
    assert m["va_ccc"] == pytest.approx((cv + ca) / 2)


def test_affwild2_ablation_counts_invalid_frames_and_records_each_arm(tmp_results, one_torch_thread):
    cfg = config.get_profile(
        "smoke", {**FAST, "affwild2_train.full_epochs": 1, "gcn_train.init_from": "none"}
    )
    paths = config.get_paths()
    res = G.run_affwild2(cfg, paths, progress=False)
    assert res.dataset == "synthetic_affwild2" and set(res.runs) == set(G.ARMS)
    assert all(r.train_cfg.image_size == 112 for r in res.runs.values())  # paper B's input
    counts = res.frame_counts.set_index("split")
    # the synthetic writer leaves one EXPR-only and one VA-only invalid frame in every video, and an
    # occluded run invalid in both (dropped by the loader)
    n_videos = cfg.data.n_affwild2_videos + max(1, cfg.data.n_affwild2_videos // 2)
    assert counts.loc[["train", "val", "test"], "expression_invalid"].sum() == n_videos
    assert counts.loc[["train", "val", "test"], "va_invalid"].sum() == n_videos
    assert counts.loc["loader (all sets)", "expression_invalid"] >= n_videos
    assert counts.loc["val", "frames"] > 0 and counts.loc["test", "frames"] > 0
    gcn = res.runs["emotion_gcn"]
    n_test = counts.loc["test", "frames"]
    assert len(gcn.pred["expression_logits"]) == n_test
    assert gcn.pred["mask_expression"].sum() == counts.loc["test", "expression_scored"]
    table = res.ablation_table()
    assert list(table.model) == list(G.ARMS) and set(G.ABAW_KEYS) <= set(table.columns)
    assert np.isnan(table.set_index("model").loc["single_task", "va_ccc"])
    rows = G.record_affwild2(res, cfg, paths)
    assert set(rows.dataset) == {"synthetic_affwild2"} and set(rows.stage) == {"gcn"}
    assert {"expression_macro_f1", "va_ccc"} <= set(rows[rows.model.str.startswith("emotion_gcn")].metric)
    assert rows.model.str.endswith("_112px").all()
    assert len(reporting.load_metrics(paths.metrics_csv)) == len(rows)


# -------------------------------------------------------------------------------- learning like linear
@pytest.mark.slow
def test_gcn_learns_valence_arousal_like_the_linear_head_at_equal_budget(env):
    """Equal budget (16 epochs, same start, data, optimizer): the GCN is within 0.05 CCC of the linear
    multi-task head on valence and on arousal and within 2 points of its accuracy."""
    cfg = config.get_profile("smoke", {**FAST, "finetune.full_epochs": 16, "gcn_train.init_from": "none"})
    assert cfg.gcn.va_scale == 0.3  # the fix is the default
    res = G.run_gcn(cfg, env, progress=False, arms=("multitask_linear", "emotion_gcn"))
    lin, gcn = res.runs["multitask_linear"].metrics, res.runs["emotion_gcn"].metrics
    print(f"linear {lin}\ngcn {gcn}")
    assert lin["accuracy_7cls"] > 0.9 and lin["valence_ccc"] > 0.9  # the task is learnable at this budget
    for dim in ("valence_ccc", "arousal_ccc"):
        assert gcn[dim] >= lin[dim] - 0.05, (dim, gcn, lin)
    assert gcn["accuracy_7cls"] >= lin["accuracy_7cls"] - 0.02, (gcn, lin)


@pytest.mark.slow
def test_va_scale_study_trains_each_optimiser_and_scale_and_measures_gaps_to_its_linear_head(env):
    cfg = config.get_profile("smoke", {**FAST, "finetune.full_epochs": 2, "gcn_train.init_from": "none"})
    t = G.va_scale_study(cfg, env, progress=False)
    assert list(zip(t.optimiser, t.model)) == [
        (opt, m)
        for opt in ("profile", "paper_b")
        for m in ("multitask_linear", "emotion_gcn (va_scale=0.3)", "emotion_gcn (va_scale=1)")
    ]
    for _, g in t.groupby("optimiser"):
        linear = g[g.model == "multitask_linear"].iloc[0]
        assert (g.valence_gap == g.valence_ccc - linear.valence_ccc).all()
        assert (g.arousal_gap == g.arousal_ccc - linear.arousal_ccc).all()
        assert (g.epochs == 2).all()  # paper B's optimiser for as many epochs as the profile's recipe
    sgd = load_checkpoint(env.checkpoints / "03_gcn_va_study_paper_b_1" / "last.pt")
    assert sgd["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert sgd["model_config"]["gcn"]["va_scale"] == 1.0
    with pytest.raises(ValueError, match="choose one of profile, paper_b"):
        G.va_scale_study(cfg, env, optimisers=("rmsprop",), progress=False)


def test_output_scales_compare_va_spread_with_the_labels():
    from types import SimpleNamespace

    labels = np.array([-0.5, 0.5, -0.5, 0.5])
    wide = {
        "expression_logits": np.array([[4.0, -4.0], [-4.0, 4.0]] * 2),
        "valence_pred": 10 * labels,
        "label_valence": labels,
        "mask_valence": np.ones(4, bool),
        "arousal_pred": labels,
        "label_arousal": labels,
        "mask_arousal": np.array([1, 1, 0, 0], bool),
    }
    single = {"expression_logits": np.zeros((4, 2))}
    res = G.GCNResult(
        _graph(),
        "",
        "x",
        runs={"emotion_gcn": SimpleNamespace(pred=wide), "single_task": SimpleNamespace(pred=single)},
    )
    t = G.output_scales(res).set_index("model")
    assert list(t.index) == ["emotion_gcn"]  # no VA head, no row
    assert t.loc["emotion_gcn", "valence_pred_std"] == pytest.approx(5.0)
    assert t.loc["emotion_gcn", "valence_label_std"] == pytest.approx(0.5)
    assert t.loc["emotion_gcn", "arousal_pred_std"] == pytest.approx(0.5)  # masked rows left out
    assert t.loc["emotion_gcn", "logit_std"] == pytest.approx(4.0)


# ---------------------------------------------------------------------------- the synthetic VA option
def test_synthetic_affectnet_with_and_without_the_label_dependency(tmp_path, one_torch_thread):
    from fer_lib.datasets import load, synthetic

    base = config.get_profile(
        "smoke", {"data.n_affectnet_train": 400, "data.n_affectnet_val": 16, "data.chip_size": 48}
    ).data
    default_marker = synthetic.marker_for("affectnet", base, 0)
    assert "affectnet_va" not in default_marker["config"]  # folders written before stay valid
    rho = {}
    for mode in ("expression", "independent"):
        data = dataclasses.replace(base, affectnet_va=mode)
        root = synthetic.generate(tmp_path / mode, data, datasets=("affectnet",), progress=False, workers=0)
        df, _ = load("affectnet", root["affectnet"])
        g = G.build_graph(df, config.get_profile("smoke"))
        rho[mode] = g.corr[1, 7]  # Happy - Valence
    assert rho["expression"] > 0.5, rho  # AffectNet: +0.86
    assert abs(rho["independent"]) < 0.2, rho
    assert (
        synthetic.marker_for("affectnet", dataclasses.replace(base, affectnet_va="independent"), 0)["config"][
            "affectnet_va"
        ]
        == "independent"
    )


def test_a_checkpoint_from_before_the_scale_knobs_loads_as_published(tmp_path):
    torch.manual_seed(0)
    net = EG.GCNNet("tiny_cnn", _graph(), config.GCNConfig(hidden=8, va_scale=1.0)).eval()
    path = tmp_path / "old.pt"
    save_checkpoint(path, net, {})
    ckpt = torch.load(path, weights_only=True)
    for key in ("va_scale", "lr_scale"):  # what older checkpoints lacked
        ckpt["model_config"]["gcn"].pop(key)
    torch.save(ckpt, path)
    again = G.load_gcn_checkpoint(path).eval()
    assert again.gcn.va_scale == 1.0 and again.gcn.layers[0].lr_scale == 1.0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x)["va"], net(x)["va"])
