"""Stage 02 (expression fine-tuning, FER2013) and stage 03 (Emotion-GCN ablation).

The training tests use a small AffectNet-format folder written here (class = position of a bright
square, valence / arousal = red / blue level), read through the real AffectNet loader via
FER_DATA_ROOT, so they learn in a few seconds on one thread.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from affectnet_folder import face, write_affectnet
from PIL import Image

from fer_lib import config, labels, reporting
from fer_lib.models import MultiTaskNet, load_checkpoint, save_checkpoint
from fer_lib.preprocess import Preprocess
from fer_lib.stages import expression as E
from fer_lib.stages import gcn as G

SIDE = 32
FAST = {
    "finetune.backbone": "tiny_cnn",
    "finetune.image_size": SIDE,
    "finetune.batch_size": 32,
    "finetune.head_epochs": 0,
    "finetune.full_epochs": 8,
    "finetune.lr_full": 3e-3,
    "finetune.amp": False,
    "finetune.channels_last": False,
    "seed": 0,
}


def _write_fer2013(root, per_class: int = 12) -> None:
    rng = np.random.default_rng(1)
    folders = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    for split in ("train", "validation", "test"):
        for j, cls in enumerate(folders):
            d = root / "fer2013" / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                grey = face(j, 0.0, 0.0, rng).mean(axis=2).astype(np.uint8)
                Image.fromarray(grey[:, :]).resize((48, 48)).save(d / f"{i}.png")


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    write_affectnet(root, 320, 96, lambda k, rng: rng.uniform(-1, 1, 2))
    _write_fer2013(root)
    return root


@pytest.fixture
def env(fake_root, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("FER_DATA_ROOT", str(fake_root))
    monkeypatch.setenv("FER_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("FER_DATA_DIR", str(tmp_path / "data"))
    return config.get_paths()


def _attributes_checkpoint(paths, backbone: str = "tiny_cnn") -> MultiTaskNet:
    torch.manual_seed(123)
    attr = MultiTaskNet(backbone, {"age": 100, "gender": 1, "race": 5}, verbose=False)
    save_checkpoint(paths.checkpoints / "01_attributes" / "best.pt", attr, {"train": {"image_size": SIDE}})
    return attr


# ------------------------------------------------------------------------------------ evaluation
def test_seven_class_evaluation_drops_contempt_rows_and_the_contempt_logit():
    logits = np.array(
        [
            [0, 9, 0, 0, 0, 0, 0, 0],  # Happy; label Happy -> correct
            [0, 0, 1, 0, 0, 0, 0, 5],  # argmax over 8 is Contempt, over the first 7 Sad; label Sad -> correct
            [3, 0, 0, 0, 0, 0, 0, 9],  # label Contempt: right over 8 classes, dropped from the 7
            [0, 0, 0, 0, 2, 0, 0, 0],  # Fear; label Anger -> wrong
        ],
        dtype=float,
    )
    y = np.array([1, 2, 7, 6])
    y7, p7 = E.seven_class_predictions(logits, y)
    assert y7.tolist() == [1, 2, 6] and p7.tolist() == [1, 2, 4]
    pred = {"expression_logits": logits, "label_expression": y, "mask_expression": np.ones(4, bool)}
    m = E.expression_metrics(pred, 8)
    assert m["accuracy_8cls"] == pytest.approx(2 / 4)  # rows 0 and 2 (Contempt) right over 8 classes
    assert m["accuracy_7cls"] == pytest.approx(2 / 3)
    assert E.confusion(pred, 7).sum() == 3 and E.confusion(pred, 8).sum() == 4
    rec = E.per_class_table(pred, 7).set_index("class")
    assert list(rec.index) == ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger"]
    assert rec.loc["Sad", "recall"] == 1.0 and rec.loc["Anger", "recall"] == 0.0


# -------------------------------------------------------------------------------- initialisation
def test_init_from_the_attributes_checkpoint_copies_the_backbone_only(env):
    attr = _attributes_checkpoint(env)
    torch.manual_seed(7)
    model = MultiTaskNet("tiny_cnn", {"expression": 8}, verbose=False)
    head_before = model.heads["expression"].weight.clone()
    tc = config.get_profile("smoke").finetune
    init = E.init_stage(model, tc, env, "finetune")
    assert init.kind == "checkpoint" and init.label == "01_attributes" and init.tensors > 0
    for k, v in attr.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    assert torch.equal(model.heads["expression"].weight, head_before)
    other_tc = dataclasses.replace(tc, backbone="mobilenetv2_050")
    other = MultiTaskNet("mobilenetv2_050", {"expression": 8}, verbose=False)
    mismatch = E.init_stage(other, other_tc, env, "finetune")
    assert mismatch.kind == "random" and "tiny_cnn" in mismatch.reason
    assert E.init_stage(model, tc, env, "finetune", use=False).kind == "random"
    no_previous = E.init_stage(model, dataclasses.replace(tc, init_from="none"), env, "finetune")
    assert no_previous.kind == "random" and "init_from=none" in no_previous.reason
    # a configured ImageNet start is what a model keeps when no previous checkpoint fits
    imagenet = dataclasses.replace(other_tc, pretrained="imagenet")
    assert E.init_stage(other, imagenet, env, "finetune") == E.Init(
        "pretrained", "imagenet", reason=mismatch.reason
    )


def test_strict_init_names_the_stage_and_the_missing_or_mismatched_source(env):
    tc = dataclasses.replace(config.get_profile("smoke").finetune, strict_init=True, init_from="01_identity")
    model = MultiTaskNet("tiny_cnn", {"expression": 8}, verbose=False)
    with pytest.raises(E.InitError, match=r"\[finetune\] must start from 01_identity.*absent"):
        E.init_stage(model, tc, env, "finetune")
    _attributes_checkpoint(env)  # a tiny_cnn model in 01_attributes
    other = dataclasses.replace(tc, backbone="mobilenetv2_050", init_from="01_attributes")
    with pytest.raises(E.InitError, match="holds backbone 'tiny_cnn', not 'mobilenetv2_050'"):
        E.init_stage(
            MultiTaskNet("mobilenetv2_050", {"expression": 8}, verbose=False), other, env, "finetune"
        )
    # no checkpoint and no weights named: a random start must be asked for by name
    bare = dataclasses.replace(tc, init_from="none")
    with pytest.raises(E.InitError, match="would start from random weights"):
        E.init_stage(model, bare, env, "finetune")
    asked = E.init_stage(model, dataclasses.replace(tc, init_from="random"), env, "finetune")
    assert asked.kind == "random" and "by request" in asked.reason
    # a study arm that asks for no checkpoint is not an error
    assert E.init_stage(model, bare, env, "finetune", use=False).kind == "random"
    ok = E.init_stage(model, dataclasses.replace(tc, init_from="01_attributes"), env, "finetune")
    assert ok.kind == "checkpoint" and ok.label == "01_attributes"


def test_without_the_attributes_checkpoint_the_model_keeps_random_init(env):
    tc = config.get_profile("smoke").finetune
    init = E.init_stage(MultiTaskNet("tiny_cnn", {"expression": 8}, verbose=False), tc, env, "finetune")
    assert init.kind == "random" and "absent" in init.reason and str(init).startswith("random init")


# ------------------------------------------------------------------------------------- training
@pytest.mark.slow
def test_finetune_learns_expression_and_valence_arousal(env):
    cfg = config.get_profile("smoke", FAST)
    run = E.finetune_affectnet(cfg, env, with_va=True, progress=False)
    assert run.dataset == "affectnet"  # the folder under FER_DATA_ROOT is read as real
    assert len(run.pred["expression_logits"]) == 96  # reported on validation.csv, every row
    m = run.metrics
    assert m["accuracy_8cls"] > 0.6, m  # chance 0.125
    assert m["accuracy_7cls"] >= m["accuracy_8cls"] - 0.1
    assert m["valence_ccc"] > 0.5 and m["arousal_ccc"] > 0.5, m
    assert (env.checkpoints / "02_expression_va" / "best.pt").is_file()
    rows = E.record_affectnet(run, cfg, env)
    assert set(rows.metric) == {
        "accuracy_8cls",
        "accuracy_7cls",
        "macro_f1_8cls",
        "valence_ccc",
        "arousal_ccc",
    }
    assert set(rows.split) == {"val"} and set(rows.stage) == {"finetune"} and (rows.value <= 1).all()
    assert rows.model.iloc[0] == "tiny_cnn_32px_random_init_8cls_va"
    recall = E.per_class_recall_table([run])
    assert len(recall) == 8 and recall["support"].sum() == 96


@pytest.mark.slow
def test_selecting_on_the_reported_set_is_an_opt_in_that_names_itself(env):
    """The authors' rule (the best epoch on the set that is reported) picks the epoch whose report score
    is highest, and the model name says so; the default selects on rows carved from training.csv."""
    ov = {**FAST, "finetune.full_epochs": 4, "finetune.select_metric": "expression_accuracy"}
    authors = E.finetune_affectnet(
        config.get_profile("smoke", {**ov, "finetune.select_split": "report"}), env, progress=False
    )
    best = load_checkpoint(env.checkpoints / "02_expression" / "best.pt")
    assert best["metrics"]["val_expression_accuracy"] == pytest.approx(authors.metrics["accuracy_8cls"])
    assert authors.history["val_expression_accuracy"].max() == pytest.approx(authors.metrics["accuracy_8cls"])
    assert E.affectnet_model_name(authors) == "tiny_cnn_32px_random_init_8cls_selected_on_report"
    honest = E.finetune_affectnet(config.get_profile("smoke", ov), env, progress=False)
    assert E.affectnet_model_name(honest) == "tiny_cnn_32px_random_init_8cls"
    with pytest.raises(ValueError, match="select_split='test'"):
        E.finetune_affectnet(config.get_profile("smoke", {**ov, "finetune.select_split": "test"}), env)


@pytest.mark.slow
def test_gcn_stage_shapes_ablation_rows_and_checkpoint_round_trip(env):
    _attributes_checkpoint(env)
    cfg = config.get_profile("smoke", {**FAST, "finetune.full_epochs": 3, "gcn.hidden": 32})
    res = G.run_gcn(cfg, env, progress=False)
    assert res.graph.names[-2:] == ("Valence", "Arousal") and res.graph.a_hat.shape == (9, 9)
    assert res.embedding_source.startswith("packaged")
    table = G.ablation_with_source(res)
    assert list(table.model) == ["single_task", "multitask_linear", "emotion_gcn"]
    assert (table.epochs == 3).all() and (table.init == "01_attributes").all()
    assert table.accuracy_7cls.notna().all() and table.macro_f1_7cls.notna().all()
    assert math.isnan(table.valence_ccc.iloc[0]) and table.valence_ccc.iloc[1:].notna().all()
    gcn = res.runs["emotion_gcn"].model.eval()
    x = torch.randn(5, 3, SIDE, SIDE)
    out = gcn(x)
    assert out["expression"].shape == (5, 7) and out["va"].shape == (5, 2)
    again = G.load_gcn_checkpoint(env.checkpoints / "03_gcn" / "best.pt").eval()
    with torch.no_grad():
        assert torch.allclose(again(x)["expression"], gcn(x)["expression"], atol=1e-5)
    rows = G.record_gcn(res, cfg, env)
    assert set(rows.stage) == {"gcn"} and set(rows.dataset) == {"affectnet"}
    assert set(rows[rows.model.str.startswith("emotion_gcn")].metric) == set(G.ABLATION_KEYS)


@pytest.mark.slow
def test_fer2013_scratch_and_transfer_record_their_rows(env):
    cfg = config.get_profile("smoke", {"seed": 0})
    tiny = {"backbone": "tiny_cnn", "image_size": SIDE, "full_epochs": 2, "max_train_seconds": None}
    run = E.fer2013_model(cfg, "scratch", env, tiny, progress=False)
    assert set(run.metrics) == {"accuracy", "macro_f1"} and len(run.pred["expression_logits"]) == 7 * 12
    name = E.scratch_model_name(run)
    assert name == "tiny_cnn_32px_scratch_2ep"
    rows = E.record_fer2013(run, cfg, name, env)
    assert set(rows.metric) == {"accuracy", "macro_f1"} and set(rows.split) == {"test"}
    assert load_checkpoint(run.checkpoint)["metrics_model"] == name  # the name its rows are under
    assert rows.train_seconds.notna().all()
    assert E.fer2013_transfer(cfg, env, progress=False) is None  # no 01 checkpoint yet: skipped
    _attributes_checkpoint(env)
    cfg = cfg.override({"fer2013_transfer_seeds": 2, "fer2013_transfer_rows": 40})
    runs = E.fer2013_transfer(cfg, env, {"image_size": SIDE, "max_train_seconds": None}, progress=False)
    assert list(runs) == ["random_init", "utk_init"]  # tiny_cnn has no ImageNet weights: that arm is skipped
    assert all(len(rs) == 2 for rs in runs.values()) and [r.seed for r in runs["utk_init"]] == [0, 1]
    assert {r.init.kind for r in runs["utk_init"]} == {"checkpoint"} and {
        r.init.kind for r in runs["random_init"]
    } == {"random"}
    assert all(
        len(r.pred["expression_logits"]) == 7 * 12 for rs in runs.values() for r in rs
    )  # the whole test set
    t = E.transfer_table(runs)
    assert list(t.model) == [
        "tiny_cnn_random_init",
        "tiny_cnn_utk_init",
        "difference (utk_init - random_init)",
    ]
    utk = [r.metrics["accuracy"] for r in runs["utk_init"]]
    assert t.accuracy.iloc[1] == pytest.approx(np.mean(utk)) and t.accuracy_std.iloc[1] == pytest.approx(
        np.std(utk)
    )
    assert t.accuracy.iloc[2] == pytest.approx(t.accuracy.iloc[1] - t.accuracy.iloc[0])
    assert t.steps.iloc[0] == t.steps.iloc[1] == 1  # equal budget: 40 faces, 1 epoch, 1 step
    rows = E.record_transfer(runs, cfg, env)
    assert len(rows) == 2 * 2 * 2 and set(rows.seed) == {0, 1}
    assert len(reporting.load_metrics(env.metrics_csv)) == 2 + 8


@pytest.mark.slow
def test_fer2013_finetune_starts_from_the_attribute_model_and_serves_grey(env, monkeypatch):
    from fer_lib import faces

    # the detector's view of FER2013's frame (MTCNN finds none of these drawn faces): a known one
    measured = faces.Framing((0.1, -0.02, 0.12, -0.03), 0.9, 16)
    monkeypatch.setattr(faces, "measure_framing", lambda images: measured)
    cfg = config.get_profile("smoke", {"seed": 0, "fer2013_finetune.image_size": SIDE})
    _attributes_checkpoint(env)
    run = E.fer2013_model(cfg, "finetune", env, progress=False)
    assert run.init.kind == "checkpoint" and run.init.label == "01_attributes"
    # FER2013 faces are grey: the checkpoint says so, and a colour face is served grey
    from fer_lib.preprocess import from_checkpoint
    from fer_lib.serving import Recognizer

    # ... and 48 px like FER2013's: a sharper photo is shrunk to that before the resize
    # ... with each face's contrast standardised, and a detected box widened to FER2013's measured frame
    stored = from_checkpoint(load_checkpoint(run.checkpoint))
    framing = E.dataset_framing(E.fer2013_manifest(cfg, env, progress=False)[0], "fer2013", cfg, env)
    assert framing.found >= 0.5 and framing.margin != 0.0  # the (patched) measurement: faces found, a frame
    assert stored == Preprocess(
        SIDE, colour="grey", max_side=48, contrast="standardise", margin=framing.margin
    )
    rec = Recognizer(run.checkpoint)
    colour = face(3, 0.9, -0.9, np.random.default_rng(5))
    grey = np.repeat(np.asarray(Image.fromarray(colour).convert("L"))[..., None], 3, 2)
    np.testing.assert_array_equal(
        rec.infer([colour])["expression_probs"], rec.infer([grey])["expression_probs"]
    )
    # recorded as notebook 02 does, the published model's card shows this run's rows
    from fer_lib.stages import report

    rows = E.record_fer2013(run, cfg, E.model_label(run.train_cfg, run), env)
    report.publish_models(cfg, env)
    card = (env.results / "models" / "expression.md").read_text()
    assert f"| {rows.model.iloc[0]} | fer2013 | accuracy | {run.metrics['accuracy']:.4g} |" in card


def test_cached_dataset_matches_face_dataset_without_augmentation(env):
    from fer_lib.data import FaceDataset

    cfg = config.get_profile("smoke")
    df, _, _ = E.affectnet_splits(cfg, env, progress=False)
    df = df.head(6)
    cached = E.make_dataset(df, Preprocess(SIDE))
    plain = FaceDataset(df, SIDE, cache_bytes=0)
    for i in range(len(df)):
        a, la, ma = cached[i]
        b, lb, mb = plain[i]
        assert torch.allclose(a, b, atol=1e-5)
        assert all(torch.equal(la[k], lb[k]) and torch.equal(ma[k], mb[k]) for k in la)
    aug = cached.with_augment("light")
    assert aug.light is not None and cached.light is None and aug._cache is cached._cache
    assert len(cached._cache) == len(df)  # the faces were decoded once, into the shared cache
    assert aug[0][0].shape == (3, SIDE, SIDE)


@pytest.mark.realdata
def test_real_fer2013_smoke_run(real_root, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("FER_DATA_ROOT", str(real_root))
    monkeypatch.setenv("FER_RESULTS_DIR", str(tmp_path / "results"))
    paths = config.get_paths()
    cfg = config.get_profile("smoke")
    data = E.fer2013_manifest(cfg, paths, progress=False)
    assert data is not None and data[1].real
    df = data[0]
    assert (df.groupby("split").size() <= 256).all() and set(df.split) == {"train", "val", "test"}
    run = E.fer2013_model(cfg, "scratch", paths, {"full_epochs": 1}, progress=False, data=data)
    assert 0 <= run.metrics["accuracy"] <= 1 and run.train_cfg.image_size == 48


def test_served_accuracy_goes_through_detection_and_counts_missed_faces(tmp_path):
    from skimage import data as skdata

    from fer_lib.serving import Recognizer
    from fer_lib.stages.common import served_accuracy

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.pt", MultiTaskNet("tiny_cnn", {"expression": 7}, verbose=False))
    Image.fromarray(skdata.astronaut()).resize((128, 128)).save(tmp_path / "face.png")  # enlarged to 192 px
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "blank.png")
    big = np.asarray(Image.open(tmp_path / "face.png").resize((192, 192), Image.BILINEAR))
    said = Recognizer(ckpt, largest_only=True).predict(big)[0].expression
    label = labels.EXPRESSIONS_7.index(said)
    rows = pd.DataFrame(
        {"path": [str(tmp_path / "face.png"), str(tmp_path / "blank.png")], "expression": [label, label]}
    )
    # the found face fed whole, as the dataset's crop (the like-for-like reference of the framing gap)
    whole = Recognizer(ckpt, crops=True).predict_faces([Image.open(tmp_path / "face.png").convert("RGB")])
    crop_right = float(whole[0].expression == said)
    got = served_accuracy(ckpt, rows)
    assert got == {
        "face_found": 0.5,
        "expression_accuracy": 0.5,
        "expression_accuracy_found": 1.0,
        "expression_accuracy_crops_found": crop_right,
    }
    wrong = served_accuracy(ckpt, rows.assign(expression=(label + 1) % 7))
    assert wrong["expression_accuracy"] == 0.0 and wrong["face_found"] == 0.5


def test_dataset_framing_is_measured_once_and_read_back_from_its_cache(tmp_path, monkeypatch):
    from fer_lib import faces
    from fer_lib.stages.common import dataset_framing

    calls = []
    measured = faces.Framing((0.11, -0.01, 0.13, -0.02), 0.92, 4)
    monkeypatch.setattr(faces, "measure_framing", lambda images: calls.append(list(images)) or measured)
    cfg = config.get_profile("smoke", {"data.framing_faces": 4})
    paths = config.get_paths(cfg)
    paths = dataclasses.replace(paths, data=tmp_path / "data")
    rows = pd.DataFrame(
        {"path": [f"/faces/{i}.png" for i in range(10)], "split": ["train"] * 8 + ["test"] * 2}
    )
    first = dataset_framing(rows, "fer2013", cfg, paths)
    again = dataset_framing(rows, "fer2013", cfg, paths)
    assert first == again == measured and len(calls) == 1  # the second came from data/framing/
    assert len(calls[0]) == 4 and all(
        p.startswith("/faces/") and int(p[7]) < 8 for p in calls[0]
    )  # train only
    off = dataset_framing(rows, "fer2013", config.get_profile("smoke", {"data.framing_faces": 0}), paths)
    assert off.margin == 0.0 and len(calls) == 1
