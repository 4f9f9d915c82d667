"""Stage 01: identity pre-training -> attribute stage on synthetic data, splits, init, metrics rows."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fer_lib import config, reporting
from fer_lib.models import load_checkpoint
from fer_lib.stages import pretrain as stage

TINY = dict(backbone="tiny_cnn", image_size=32, batch_size=32, head_epochs=0, amp=False, channels_last=False)


def _cfg(**extra):
    ov = {"data.n_utkface": 1200, "data.n_identities": 6, "data.images_per_identity": 8}
    for section in ("pretrain_identity", "pretrain_attributes"):
        for k, v in TINY.items():
            ov[f"{section}.{k}"] = v
    ov.update(
        {
            "pretrain_identity.full_epochs": 2,
            "pretrain_identity.lr_full": 3e-3,
            "pretrain_attributes.full_epochs": 12,
            "pretrain_attributes.lr_full": 3e-3,
            "pretrain_attributes.augment": "none",
        }
    )
    ov.update(extra)
    return config.get_profile("smoke", ov)


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory):
    """One synthetic data folder for the module (generated on first use, ~1,200 UTKFace-style chips)."""
    return tmp_path_factory.mktemp("pretrain_data")


@pytest.fixture
def data(tmp_results, syn_dir, monkeypatch):
    """Fresh results folder, shared synthetic data folder; synthetic even where CI sets FER_DATA_ROOT."""
    monkeypatch.setenv("FER_DATA_DIR", str(syn_dir))
    monkeypatch.delenv("FER_DATA_ROOT", raising=False)
    return tmp_results


def test_ensure_val_carves_from_train_only_and_keeps_an_existing_val():
    df = pd.DataFrame(
        {
            "path": [f"{i}.jpg" for i in range(40)],
            "identity": [str(i % 4) for i in range(40)],
            "split": ["test" if i >= 30 else "train" for i in range(40)],
        }
    )
    out = stage.ensure_val(df, by="identity", seed=0, fraction=0.25)
    assert (out.split[df.split == "test"] == "test").all()
    val = out[out.split == "val"]
    assert len(val) > 0 and set(val.path) <= set(df.path[df.split == "train"])
    assert val.groupby("identity").size().min() >= 1  # per identity
    assert stage.ensure_val(out, fraction=0.5).equals(out)  # a val split that exists is kept
    assert stage.ensure_val(df, by="identity", seed=0, fraction=0.25).equals(out)  # deterministic


def test_utkface_val_is_disjoint_from_train_and_test(data):
    cfg = _cfg()
    df, src = stage.utkface_splits(cfg, progress=False)
    assert not src.real and set(df.split) == {"train", "val", "test"}
    parts = {s: set(df.path[df.split == s]) for s in ("train", "val", "test")}
    assert not parts["val"] & parts["train"] and not parts["val"] & parts["test"]
    assert not parts["train"] & parts["test"]
    frac = len(parts["val"]) / (len(parts["val"]) + len(parts["train"]))
    assert 0.05 < frac < 0.15
    again, _ = stage.utkface_splits(cfg, progress=False)
    assert again.equals(df)


def test_chance_metrics_of_a_constant_predictor():
    train = pd.DataFrame({"age": [20, 30, 40], "gender": [0, 0, 1], "race": [2, 2, 1]})
    test = pd.DataFrame({"age": [30, 40], "gender": [0, 1], "race": [1, 2]})
    m = stage.chance_metrics(train, test)
    assert m == {
        "age_mae": 5.0,
        "age_cs5": 0.5,
        "gender_accuracy": 0.5,
        "race_accuracy": 0.5,
        "race_min_recall": 0.0,  # a constant answer never recognises the other class
        "gender_min_recall": 0.0,
    }
    pred = pd.DataFrame(
        {
            "age": [1, 2, 3, 4, 5],
            "age_pred": [1, 2, 3, 4, 5],
            "gender": [0, 0, 1, 1, 1],
            "gender_pred": [0, 1, 1, 1, 1],
            "race": [0, 0, 3, 3, 3],
            "race_pred": [0, 0, 3, 0, 0],
        }
    )
    m = stage.attribute_metrics(pred)
    assert m["gender_min_recall"] == 0.5 and m["race_min_recall"] == 1 / 3 and m["race_accuracy"] == 0.6


@pytest.mark.slow
def test_identity_then_attributes_learns_and_records(data, one_torch_thread):
    cfg = _cfg()
    paths = config.get_paths()
    ident = stage.train_identity(cfg, paths, progress=False)
    assert ident.checkpoint.is_file() and ident.model.tasks == {"identity": 6}
    assert set(ident.manifest.split) == {"train", "val"}

    # the attribute backbone starts from the identity checkpoint's backbone, tensor for tensor
    model, init = stage.init_attributes_model(cfg, paths)
    assert init.kind == "checkpoint" and init.source == str(ident.checkpoint) and init.tensors > 0
    saved = load_checkpoint(ident.checkpoint)["state_dict"]
    own = model.state_dict()
    keys = [k for k in saved if k.startswith("backbone.")]
    assert keys and all(torch.equal(own[k], saved[k]) for k in keys)
    assert set(model.tasks) == {"age", "gender", "race"}

    attr = stage.train_attributes(cfg, paths, progress=False)
    assert attr.init.kind == "checkpoint"
    pred = stage.predict_test(attr, cfg)
    test = attr.manifest[attr.manifest.split == "test"]
    assert len(pred) == len(test) > 50
    ours, overall_and_groups = stage.attribute_metrics(pred), stage.attribute_tables(attr, pred)
    chance = stage.chance_metrics(attr.manifest[attr.manifest.split == "train"], pred)
    assert ours["age_mae"] < 0.8 * chance["age_mae"], (ours, chance)
    assert ours["gender_accuracy"] > chance["gender_accuracy"] + 0.2, (ours, chance)
    assert ours["race_accuracy"] > chance["race_accuracy"] + 0.2, (ours, chance)
    overall, groups = overall_and_groups
    assert list(overall.model) == ["this run", "image-blind baseline"]
    assert set(groups.group) == {"race", "gender"} and groups[groups.group == "gender"].n.sum() == len(pred)

    stage.record_attributes(attr, pred, cfg, paths)
    m = reporting.load_metrics(paths.metrics_csv)
    rows = m[(m.stage == "pretrain") & (m.dataset == "synthetic_utkface")]
    assert set(rows.split) == {"test"} and {"age_mae", "gender_accuracy", "race_accuracy"} <= set(rows.metric)
    assert rows.set_index("metric").value["gender_accuracy"] == pytest.approx(ours["gender_accuracy"])
    assert (rows.model == "tiny_cnn@32").all() and rows.train_seconds.notna().all()
    idrow = m[(m.dataset == "synthetic_vggface2")]
    assert list(idrow.metric) == ["accuracy"] and list(idrow.split) == ["val"]
    # each checkpoint names its rows (what publish_models looks them up by)
    assert load_checkpoint(attr.checkpoint)["metrics_model"] == "tiny_cnn@32"
    assert load_checkpoint(ident.checkpoint)["metrics_model"] == idrow.model.item()


def test_other_backbone_in_the_identity_checkpoint_gives_random_init(data, one_torch_thread):
    cfg = _cfg(**{"pretrain_identity.full_epochs": 1})
    paths = config.get_paths()
    stage.train_identity(cfg, paths, progress=False, record=False)
    other = cfg.override({"pretrain_attributes.backbone": "test_resnet"})
    model, init = stage.init_attributes_model(other, paths)
    assert init.kind == "random" and "tiny_cnn" in init.reason and model.backbone_name == "test_resnet"


def test_oversample_repeats_rare_classes_up_to_half_the_mean():
    df = pd.DataFrame({"race": [0] * 80 + [1] * 2 + [2] * 18, "path": [f"{i}.jpg" for i in range(100)]})
    out = stage.oversample(df, "race", 0.5)  # target = 0.5 * 100 / 3 = 16 rows per class
    counts = out.race.value_counts()
    assert counts[0] == 80 and counts[2] == 18 and counts[1] == 16
    assert set(out.path[out.race == 1]) == set(df.path[df.race == 1])  # only repeats, nothing new
    assert out.iloc[:100].equals(df)


@pytest.mark.realdata
def test_real_utkface_splits_test_on_the_balanced_list_and_val_from_train(
    real_root, tmp_results, monkeypatch
):
    monkeypatch.setenv("FER_DATA_ROOT", str(real_root))
    cfg = config.get_profile("default", {"data.real_limit": None})
    df, src = stage.utkface_splits(cfg, progress=False)
    assert src.real
    listed = set((real_root / "utkface" / "balanced_test_2000.txt").read_text().split())
    names = df.path.map(lambda p: p.rsplit("/", 1)[-1])
    assert set(names[df.split == "test"]) == listed and len(listed) == 2000
    assert (df.split != "test").sum() == 21705  # 23,709 files - 4 malformed - 2,000 test
    assert 1950 < (df.split == "val").sum() < 2400
    assert not set(names[df.split == "val"]) & listed
    # val weighs the ethnicity x gender groups equally, as the balanced test does (train is 42 % White)
    per_group = df[df.split == "val"].groupby(["race", "gender"]).size()
    assert len(per_group) == 10 and per_group.min() == per_group.max()
    assert (df.race[df.split == "train"] == 0).mean() > 0.35


def test_group_table_per_ethnicity_and_gender():
    pred = pd.DataFrame(
        {
            "race": [1, 1, 1, 0],
            "gender": [0, 0, 1, 0],
            "race_pred": [1, 2, 1, 0],
            "gender_pred": [0, 1, 1, 0],
            "age": [20, 30, 40, 50],
            "age_pred": [22, 30, 40, 45],
        }
    )
    t = stage.group_table(pred).set_index(["ethnicity", "gender"])
    assert (
        t.loc[("Black", "Male"), "race_accuracy"] == 0.5
        and t.loc[("Black", "Male"), "gender_accuracy"] == 0.5
    )
    assert t.loc[("Black", "Male"), "age_mae"] == 1.0 and t.loc[("White", "Male"), "n"] == 1
    assert list(t.index) == [("White", "Male"), ("Black", "Male"), ("Black", "Female")]


def test_the_male_threshold_is_chosen_for_balanced_accuracy_on_validation():
    gender = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # 0 male, 1 female
    p_male = np.array([0.9, 0.8, 0.45, 0.425, 0.4, 0.2, 0.1, 0.05])
    # paper A's 0.6 calls half of these men women; 0.41 and 0.42 separate them all, 0.42 is nearer 0.5
    assert stage.choose_male_threshold(gender, 1 - p_male) == 0.42
    assert stage.choose_male_threshold(np.zeros(4, int), np.full(4, 0.5)) == 0.6  # one gender: paper A's


# ------------------------------------------------------------------ attributes vs expression and colour
def test_by_expression_summarises_each_expression():
    faces = pd.DataFrame(
        {
            "expression": ["Anger", "Anger", "Anger", "Happy"],
            "age_pred": [10.0, 20.0, 30.0, 40.0],
            "p_female": [0.2, 0.4, 0.9, 0.7],
            "gender_pred": [0.0, 0.0, 1.0, 1.0],
            "age": [30, 31, 32, 40],
            "gender": [1, 1, 1, 0],
        }
    )
    t = stage.by_expression(faces, "toy").set_index("expression")
    assert list(t.index) == ["Anger", "Happy"]  # most faces first
    anger = t.loc["Anger"]
    assert anger.faces == 3 and anger.age_pred_median == 20.0 and anger.age_true_median == 31.0
    assert anger.share_age_under_16 == pytest.approx(1 / 3) and anger.p_female_mean == pytest.approx(0.5)
    assert anger.called_female == pytest.approx(1 / 3) and anger.female_true == 1.0
    assert t.loc["Happy", "share_age_under_16"] == 0.0
    assert "subjects" not in t  # the people are not known


def test_children_among_adults_count_faces_and_people():
    # 10 people with 3 faces each (angry, happy, sad); p0 is read as a child in all three, p1 when angry
    faces = pd.DataFrame(
        {
            "identity": np.repeat([f"p{i}" for i in range(10)], 3),
            "age_pred": [10.0, 12.0, 15.0, 15.0, 30.0, 31.0] + [25.0] * 24,
            "expression": ["Anger", "Happy", "Sad"] * 10,
            "p_female": 0.5,
            "gender_pred": 1.0,
        }
    )
    row = stage.children_among_adults(faces, "toy").iloc[0]
    assert row.faces == 30 and row.subjects == 10 and row.age_pred_median == 25.0
    assert row.faces_age_under_16 == 4 and row.subjects_age_under_16 == 2
    assert row.share_age_under_16 == pytest.approx(4 / 30)
    # 10 people drawn again: p0 and p1 are both left out of (0.8)^10 = 11 % of the draws
    assert row["share_low_95%"] == 0.0 and 0.25 < row["share_high_95%"] < 0.4
    per = stage.by_expression(faces, "toy").set_index("expression")
    assert per.loc["Anger", "subjects"] == 10 and per.loc["Anger", "subjects_age_under_16"] == 2
    assert per.loc["Happy", "subjects_age_under_16"] == 1 and per.loc["Sad", "subjects_age_under_16"] == 1
    # the confound table takes the faces as computed, once, and labels their rows (no UTKFace here)
    paths = config.Paths(repo=Path("."), data=Path("d"), results=Path("r"), real_root=None)
    table = stage.expression_confound("unused.pt", None, config.get_profile("smoke"), paths, ckplus=faces)
    assert table["data"].eq("ckplus48 (labelled)").all() and table["faces"].sum() == 30
    assert table.set_index("expression").loc["Anger", "share_age_under_16"] == pytest.approx(2 / 10)


def test_view_scores_count_children_among_adults_and_the_youngest_adults():
    truth = pd.DataFrame(
        {
            "age": [18, 19, 19, 21, 30, 40, 5],
            "gender": [0, 1, 1, 0, 1, 0, 0],
            "race": [0, 1, 2, 0, 1, 2, 0],
        }
    )
    pred = pd.DataFrame(
        {
            "age_pred": [15.0, 20.0, 12.0, 15.9, 30.0, 44.0, 5.0],
            "gender_pred": [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0],
            "race_pred": [0, 1, 2, 1, 1, 2, 0],
        }
    )
    s = stage.view_scores(truth, pred)
    assert s["age_18_19_under_16"] == pytest.approx(2 / 3)  # 15 and 12 of 15, 20, 12
    assert s["age_20_21_under_16"] == 1.0  # 15.9 is under 16
    assert s["adults_under_16"] == pytest.approx(1 / 3)  # 21, 30 and 40: one of three
    assert s["age_mae"] == pytest.approx((3 + 1 + 7 + 5.1 + 0 + 4 + 0) / 7)
    assert s["gender_accuracy"] == pytest.approx(5 / 7) and s["race_accuracy"] == pytest.approx(6 / 7)
    older = truth["age"] > 20
    assert np.isnan(stage.view_scores(truth[older], pred[older])["age_18_19_under_16"])


def test_face_views_grey_is_the_luminance_and_crop_the_centre(tmp_path):
    from PIL import Image

    rgb = np.zeros((20, 10, 3), np.uint8)
    rgb[..., 0] = 200  # pure red
    rgb[5:15, 2:8, 1] = 100  # the central half of each side also green
    Image.fromarray(rgb).save(tmp_path / "red.png")
    colour, grey, centre = (
        stage._read_faces([tmp_path / "red.png"], v)[0] for v in ("colour", "grey", "crop 0.6")
    )
    assert colour.shape == grey.shape == (20, 10, 3) and tuple(colour[0, 0]) == (200, 0, 0)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert grey[0, 0, 0] == round(200 * 299 / 1000)  # ITU-R 601 luma, as PIL's "L"
    assert centre.shape == (12, 6, 3) and tuple(centre[3, 2]) == (200, 100, 0)  # rows 4..15, cols 2..7
    assert tuple(centre[0, 0]) == (200, 0, 0) and tuple(centre[1, 1]) == (200, 100, 0)
    for bad in ("sepia", "crop 0", "crop 1.5", "jpeg high", "jpeg 0"):
        with pytest.raises(ValueError, match="crop|view|jpeg_quality"):
            stage._read_faces([tmp_path / "red.png"], bad)


def test_the_jpeg_view_stores_a_face_as_utkfaces_64px_part_does(tmp_path):
    """``"jpeg 75"``: a 200 px chip shrunk to 64 px (PIL bilinear) and stored as a quality-75 JPEG."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    chip = Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8))
    chip.save(tmp_path / "chip.png")
    buf = io.BytesIO()
    chip.resize((64, 64), Image.BILINEAR).save(buf, "JPEG", quality=75)
    expected = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    (stored,) = stage._read_faces([tmp_path / "chip.png"], "jpeg 75")
    assert stored.shape == (64, 64, 3) and np.array_equal(stored, expected)
    assert "jpeg 75" in stage.INPUT_VIEWS


def test_confound_models_prefer_the_run_and_fall_back_to_the_published(tmp_path):
    from fer_lib.models import MultiTaskNet, save_checkpoint

    paths = config.Paths(repo=tmp_path, data=tmp_path / "d", results=tmp_path / "r", real_root=None)
    attr, expr, which = stage.confound_models(paths)
    if attr is not None:  # a clone with results/models/ (the repository ships them)
        assert which == "the published models" and attr.name == "attributes.pt"
    model = MultiTaskNet("tiny_cnn", {"age": 100, "gender": 1}, verbose=False)
    save_checkpoint(paths.checkpoint("01_attributes"), model, {})
    attr, expr, which = stage.confound_models(paths)
    assert which == "this run's models" and attr == paths.checkpoint("01_attributes") and expr is None
    assert stage.expression_confound(attr, expr, config.get_profile("smoke"), paths).empty  # no real data
    assert stage.input_gap(attr, config.get_profile("smoke"), paths) is None


# ------------------------------------------------------------------------------ expression balance
def test_expression_balance_weights_make_the_expression_independent_of_the_group():
    w = stage.expression_balance_weights(list("aaaabbbb"), list("ssnnsnnn"))
    np.testing.assert_allclose(w, [3 / 4, 3 / 4, 5 / 4, 5 / 4, 3 / 2, 5 / 6, 5 / 6, 5 / 6])
    rng = np.random.default_rng(0)
    group = rng.choice(["baby", "adult"], 4000, p=[0.2, 0.8])
    surprised = rng.random(4000) < np.where(group == "baby", 0.3, 0.05)
    expr = np.where(surprised, "Surprise", "Neutral")
    w = stage.expression_balance_weights(group, expr, clip=100)
    share = {g: (w * surprised)[group == g].sum() / w[group == g].sum() for g in ("baby", "adult")}
    assert share["baby"] == pytest.approx(surprised.mean()) and share["adult"] == pytest.approx(
        surprised.mean()
    )
    clipped = stage.expression_balance_weights(group, expr, clip=2)
    assert clipped.mean() == pytest.approx(1.0) and clipped.max() / clipped.min() <= 4 + 1e-9
    with pytest.raises(ValueError, match="clip"):
        stage.expression_balance_weights(group, expr, clip=0.5)


def test_age_bands_by_lower_edges():
    got = stage.age_band(pd.Series([0, 2.5, 3, 15, 16, 44, 60, 90]))
    assert list(got) == ["0-3", "0-3", "3-8", "8-16", "16-20", "30-45", "60+", "60+"]


def test_balancing_model_names_what_is_missing(tmp_path, monkeypatch):
    from fer_lib.serving import default_model

    with pytest.raises(FileNotFoundError, match="no such expression checkpoint"):
        stage.balancing_model(str(tmp_path / "nothing.pt"))
    monkeypatch.setattr(default_model, "published_models", lambda: [])
    with pytest.raises(FileNotFoundError, match="results/models/expression.pt"):
        stage.balancing_model("published")


def test_cached_expressions_predict_each_face_once_and_keep_the_order(tmp_path, monkeypatch):
    calls = []

    def fake(model, images):
        calls.append(list(images))
        return [f"E{Path(p).stem}" for p in images]

    monkeypatch.setattr(stage, "expression_predictions", fake)
    model = tmp_path / "expr.pt"
    model.write_bytes(b"weights")
    paths = config.Paths(repo=tmp_path, data=tmp_path / "d", results=tmp_path / "r", real_root=None)
    images = ["b/2.jpg", "a/1.jpg", "b/2.jpg"]
    assert stage.cached_expressions(model, images, paths) == ["E2", "E1", "E2"]
    assert stage.cached_expressions(model, images[::-1], paths) == ["E2", "E1", "E2"]
    assert calls == [["a/1.jpg", "b/2.jpg"]]  # once per face, then from data/expressions/
    model.write_bytes(b"other weights")  # another model is another cache entry
    stage.cached_expressions(model, images, paths)
    assert len(calls) == 2 and len(list((tmp_path / "d" / "expressions").glob("*.csv"))) == 2


def test_balanced_attribute_training_draws_with_the_weights(data, one_torch_thread, monkeypatch, capsys):
    from fer_lib.training import trainer as trainer_module

    seen = []

    class Recording(trainer_module.EpochSampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.weights)

    monkeypatch.setattr(trainer_module, "EpochSampler", Recording)

    def by_age(model, images):  # children "surprised", one adult in ten: an age-correlated expression
        age = [int(Path(p).name.split("_")[0]) for p in images]
        return ["Surprise" if a < 16 or i % 10 == 0 else "Neutral" for i, a in enumerate(age)]

    monkeypatch.setattr(stage, "expression_predictions", by_age)
    paths = config.get_paths()
    expr = paths.data / "expr.pt"
    expr.parent.mkdir(parents=True, exist_ok=True)
    expr.write_bytes(b"a stand-in: expression_predictions is replaced")
    cfg = _cfg(**{"pretrain_attributes.full_epochs": 1, "pretrain_attributes.balance_expressions": str(expr)})
    stage.train_attributes(cfg, paths, progress=False)
    assert "expression balance (expr.pt)" in capsys.readouterr().out
    weights = torch.as_tensor(seen[0])  # surprised children drawn less, surprised adults more
    assert len(seen) == 1 and weights.min() < 0.9 and weights.max() > 2


def test_ages_by_stored_side_counts_children_per_stored_size(tmp_path):
    """Shares per split and stored side, read from each file's header: the 200 px files hold the children."""
    from PIL import Image

    rows = []
    for i, (side, age, split) in enumerate(
        [
            (200, 2, "train"),
            (200, 30, "train"),
            (200, 12, "train"),
            (200, 40, "train"),
            (64, 30, "train"),
            (64, 3, "val"),
        ]
    ):
        path = tmp_path / f"{i}.jpg"
        Image.new("RGB", (side, side)).save(path)
        rows.append({"path": str(path), "age": age, "split": split})
    t = stage.ages_by_stored_side(pd.DataFrame(rows)).set_index(["split", "stored_side"])
    assert t.loc[("train", 200), "faces"] == 4 and t.loc[("train", 200), "share_under_16"] == 0.5
    assert t.loc[("train", 200), "share_under_5"] == 0.25 and t.loc[("train", 200), "median_age"] == 21
    assert t.loc[("train", 64), "share_under_16"] == 0 and t.loc[("val", 64), "share_under_5"] == 1
