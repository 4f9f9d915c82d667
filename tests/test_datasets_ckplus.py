"""CK+48, an evaluation-only dataset: the loader (manifest, report, registry) and the cross-dataset
protocol of ``fer_lib.stages.expression`` (contempt never scored, a 7-way argmax where Neutral is wrong).

The fake folder is written here: uniform grey 48x48 PNGs whose grey level encodes the class a stub model
predicts (``20 + 30 k`` for canonical class ``k``), so accuracy and recall are known by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fer_lib import config, datasets, reporting
from fer_lib.datasets import ckplus48
from fer_lib.labels import CKPLUS_FOLDERS, EXPRESSIONS_7, EXPRESSIONS_8, canonical_expression
from fer_lib.metrics import metric_spec
from fer_lib.models import MultiTaskNet, load_checkpoint, save_checkpoint
from fer_lib.preprocess import Preprocess
from fer_lib.stages import expression as E

K = {name: i for i, name in enumerate(EXPRESSIONS_8)}
# folder -> the canonical class the stub predicts for each of its images
PREDICTED = {
    "anger": ["Anger", "Anger", "Neutral"],
    "disgust": ["Disgust", "Anger", "Neutral"],
    "fear": ["Fear", "Fear", "Fear"],
    "happy": ["Happy", "Happy", "Happy"],
    "sadness": ["Neutral", "Neutral", "Neutral"],
    "surprise": ["Surprise", "Fear", "Surprise"],
    "contempt": ["Neutral", "Happy"],  # right or wrong, never scored
}
# by hand: right answers per scored folder over its 3 images; neutral predictions count as wrong
RECALL = {"Anger": 2 / 3, "Disgust": 1 / 3, "Fear": 1.0, "Happy": 1.0, "Sad": 0.0, "Surprise": 2 / 3}
ACCURACY = (2 + 1 + 3 + 3 + 0 + 2) / 18


def level(name: str) -> int:
    return 20 + 30 * K[name]


def write_ckplus(root, predicted=PREDICTED):
    """The CK+48 layout: subject s, frames 0 and 1 of sequence 1, frame 2 of sequence 2, per folder."""
    for s, (folder, preds) in enumerate(predicted.items()):
        d = root / folder
        d.mkdir(parents=True)
        for i, name in enumerate(preds):
            seq, frame = (1, 10 + i) if i < 2 else (2, 5)
            face = np.full((48, 48), level(name), np.uint8)
            Image.fromarray(face).save(d / f"S{100 + s:03d}_{seq:03d}_{frame:08d}.png")
    return root


class ByGrey(torch.nn.Module):
    """Stub model: one-hot logits of the class the face's grey level encodes (canonical order); with 8
    outputs a Contempt logit larger than all of them."""

    def __init__(self, n: int = 7):
        super().__init__()
        self.tasks = {"expression": n}
        self.preprocess = Preprocess(16, mean=(0, 0, 0), std=(1, 1, 1), colour="grey")
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward_features(self, x):
        return x.mean(dim=(1, 2, 3)) * 255  # the grey level (uniform faces stay uniform when resized)

    def forward_heads(self, f):
        k = ((f - 20) / 30).round().long().clamp(0, 6)
        out = torch.nn.functional.one_hot(k, self.tasks["expression"]).float() * self.scale
        if self.tasks["expression"] == 8:
            out[:, 7] = 10.0
        return {"expression": out}

    def forward(self, x):  # what evaluation calls
        return self.forward_heads(self.forward_features(x))


@pytest.fixture
def fake(tmp_path):
    return write_ckplus(tmp_path / "ckplus48")


# ----------------------------------------------------------------------------------------- loader
def test_folder_names_map_explicitly_onto_the_canonical_order():
    assert set(CKPLUS_FOLDERS) == set(PREDICTED)
    assert all(canonical_expression(f) == c for f, c in CKPLUS_FOLDERS.items())
    assert ckplus48.SCORED == ("Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger")
    assert "Contempt" not in ckplus48.SCORED and "Neutral" not in ckplus48.SCORED


def test_manifest_labels_subjects_and_the_report(fake):
    (fake / "anger" / "S999.png").write_bytes(b"x")  # one field only: malformed
    (fake / "happy" / "Thumbs.db").write_bytes(b"\x00")
    (fake / "README.txt").write_text("CK+48")
    (fake / "neutral").mkdir()  # CK+48 has no neutral folder: not guessed, reported
    Image.new("L", (48, 48)).save(fake / "neutral" / "S001_001_00000001.png")
    df, report = ckplus48.load_manifest(fake)
    assert len(df) == 20 and set(df.split) == {"test"} and (df.source == "ckplus48").all()
    assert list(df.columns[: len(datasets.MANIFEST_COLUMNS)]) == datasets.MANIFEST_COLUMNS
    for raw, expr in zip(df.label_raw, df.expression):
        assert EXPRESSIONS_8[int(expr)] == CKPLUS_FOLDERS[raw]
    first = df[df.label_raw == "sadness"].iloc[0]
    assert first.identity == "S104" and first.sequence == "S104_001"
    assert df.groupby("label_raw").sequence.nunique().to_dict() == {f: 2 for f in PREDICTED} | {"contempt": 1}
    assert df.loc[~df.scored, "label_raw"].tolist() == ["contempt", "contempt"]
    assert df.loc[df.scored, "expression"].map(lambda v: EXPRESSIONS_8[int(v)]).isin(ckplus48.SCORED).all()
    assert report.dropped == {"malformed file name": 1, "unknown class folder": 1}
    assert report.by_reason("ignored") == {"not an image file": 1, "file outside a class folder": 1}
    assert report.kept == 20 and report.kept_by_split == {"test": 20}
    assert any("2 contempt rows kept" in n for n in report.notes)
    assert df.face_w.isna().all()  # an already-cropped face: the whole image is the face


def test_registered_but_never_a_training_dataset(fake):
    df, _ = datasets.load("CKPlus48", fake)
    assert len(df) == 20
    assert "ckplus48" in datasets.REGISTRY and "ckplus48" in datasets.EVALUATION_ONLY
    assert "ckplus48" not in datasets.DATASET_NAMES  # not prepared, no synthetic stand-in
    with pytest.raises(ValueError, match="ckplus48, an evaluation-only dataset"):
        datasets.check_trainable(df)
    with pytest.raises(ValueError, match="evaluation-only"):
        datasets.check_trainable(pd.concat([df.assign(source="fer2013"), df.head(1)]))
    datasets.check_trainable(df.assign(source="fer2013"))


def test_wrong_root_raises_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        ckplus48.load_manifest(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"empty.*expected one folder per class"):
        ckplus48.load_manifest(tmp_path / "empty")


def test_absent_folder_is_skipped_with_its_path_never_synthesised(tmp_path, monkeypatch, capsys):
    from fer_lib.datasets.sources import load_for_profile

    monkeypatch.setenv("FER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FER_RESULTS_DIR", str(tmp_path / "results"))
    cfg = config.get_profile("smoke")
    for root in (None, tmp_path / "real"):
        if root is None:
            monkeypatch.delenv("FER_DATA_ROOT", raising=False)
        else:
            root.mkdir()
            monkeypatch.setenv("FER_DATA_ROOT", str(root))
        paths = config.get_paths()
        where = "FER_DATA_ROOT/ckplus48" if root is None else str(root / "ckplus48")
        with pytest.raises(FileNotFoundError, match=where):
            load_for_profile("ckplus48", cfg, paths)
        assert E.ckplus_manifest(cfg, paths) is None
        assert where in capsys.readouterr().out
    assert not (tmp_path / "data" / "synthetic" / "smoke" / "ckplus48").exists()
    write_ckplus(tmp_path / "real" / "ckplus48")
    df, report = E.ckplus_manifest(cfg, config.get_paths())
    assert len(df) == 20 and report.kept == 20


# --------------------------------------------------------------------------------------- protocol
def test_protocol_scores_six_classes_neutral_wrong_contempt_never(fake):
    df, _ = ckplus48.load_manifest(fake)
    pred = E.ckplus_predictions(ByGrey(), df)
    assert pred["expression_logits"].shape == (20, 7) and pred["scored"].sum() == 18
    y, p = E.ckplus_scores(pred)
    assert len(y) == 18 and 7 not in y  # no Contempt row is scored
    m = E.ckplus_metrics(pred)
    assert m["accuracy"] == pytest.approx(ACCURACY)  # 11/18: the 5 neutral predictions stay wrong
    assert m == pytest.approx({"accuracy": ACCURACY, **{f"recall_{c.lower()}": r for c, r in RECALL.items()}})
    assert all(metric_spec(name).direction == "max" for name in m)
    t = E.ckplus_table(pred).set_index("class")
    assert list(t.index) == list(ckplus48.SCORED)
    assert t.images.tolist() == [3] * 6 and t.sequences.tolist() == [2] * 6
    assert t.recall.to_dict() == pytest.approx(RECALL)
    assert t.loc["Sad", "predicted Neutral"] == 3 and t.loc["Disgust", "predicted Anger"] == 1
    assert t[[f"predicted {n}" for n in EXPRESSIONS_7]].to_numpy().sum() == 18
    # an 8-class model is scored on its first 7 outputs: its Contempt logit never wins
    assert E.ckplus_metrics(E.ckplus_predictions(ByGrey(8), df)) == pytest.approx(m)


def test_record_ckplus_writes_declared_rows_beside_fer2013(fake, tmp_path):
    df, _ = ckplus48.load_manifest(fake)
    cfg = config.get_profile("smoke", {"seed": 3})
    paths = config.Paths(tmp_path, tmp_path / "data", tmp_path / "results", None)
    rows = E.record_ckplus(
        E.ckplus_metrics(E.ckplus_predictions(ByGrey(), df)), "m_48px_utk_init", cfg, paths
    )
    saved = reporting.load_metrics(paths.metrics_csv)
    assert len(saved) == 7 == len(rows)
    assert (
        set(saved.stage) == {"finetune"}
        and set(saved.dataset) == {"ckplus48"}
        and set(saved.split) == {"test"}
    )
    assert set(saved.model) == {"m_48px_utk_init"} and set(saved.seed) == {3}
    assert set(saved.metric) == {"accuracy", *(f"recall_{c.lower()}" for c in ckplus48.SCORED)}
    assert saved.set_index("metric").value["accuracy"] == pytest.approx(ACCURACY)


def test_checkpoint_runs_through_its_own_preprocessing_and_label_order(fake, tmp_path, one_torch_thread):
    df, _ = ckplus48.load_manifest(fake)
    torch.manual_seed(0)
    net = MultiTaskNet("tiny_cnn", {"expression": 7}, verbose=False)
    net.preprocess = Preprocess(32, colour="grey", max_side=48)
    path = save_checkpoint(tmp_path / "m.pt", net)
    pred = E.ckplus_predictions(path, df)
    faces = torch.stack(
        [Preprocess(32, colour="grey", max_side=48).tensor(np.asarray(Image.open(p))) for p in df.path]
    )
    with torch.no_grad():
        direct = net.eval().forward_heads(net.forward_features(faces))["expression"].numpy()
    np.testing.assert_allclose(pred["expression_logits"], direct, rtol=1e-4, atol=1e-5)
    # a checkpoint whose head is in another order (FER2013's) is brought into the canonical one by name
    ckpt = load_checkpoint(path)
    perm = [
        K[canonical_expression(n)]
        for n in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    ]
    ckpt["label_orders"] = {"expression": [EXPRESSIONS_8[k] for k in perm]}
    np.testing.assert_allclose(
        E.ckplus_predictions(ckpt, df)["expression_logits"][:, perm], direct, rtol=1e-4, atol=1e-5
    )


def test_no_fer2013_stage_trains_or_selects_on_it(fake, tmp_path, monkeypatch, one_torch_thread):
    from fer_lib.datasets.sources import DataSource
    from fer_lib.training import Trainer

    monkeypatch.setenv("FER_RESULTS_DIR", str(tmp_path / "results"))
    df, _ = ckplus48.load_manifest(fake)
    cfg = config.get_profile("smoke", {"seed": 0})
    tiny = {"backbone": "tiny_cnn", "image_size": 16, "full_epochs": 1, "max_train_seconds": None}
    data = (df, DataSource("ckplus48", fake, True))
    with pytest.raises(ValueError, match="training set is empty"):  # every row is 'test'
        E.fer2013_model(cfg, "scratch", config.get_paths(), tiny, progress=False, data=data)
    model = MultiTaskNet("tiny_cnn", {"expression": 7}, verbose=False)
    tc = E.fer2013_config(cfg, "scratch", tiny)
    ds = E.make_dataset(df, model.preprocess.replace(input_size=16))
    with pytest.raises(ValueError, match="evaluation-only dataset"):  # the trainer refuses to train on it
        Trainer(model, tc, device="cpu", progress=False).fit(ds, ds)
    other = E.make_dataset(
        df.assign(source="fer2013", split="train"), model.preprocess.replace(input_size=16)
    )
    with pytest.raises(ValueError, match="the validation loader holds rows of ckplus48"):  # nor select on it
        Trainer(model, tc, device="cpu", progress=False, allow_test_selection=True).fit(other, ds)


# -------------------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_ckplus48_counts(real_root):
    if not (real_root / "ckplus48").is_dir():
        pytest.skip(f"no ckplus48 folder under FER_DATA_ROOT={real_root}")
    df, report = ckplus48.load_manifest(real_root / "ckplus48")
    assert len(df) == 981 and report.n_dropped == 0 and set(df.split) == {"test"}
    counts = df.label_raw.value_counts().to_dict()
    assert counts == {
        "anger": 135,
        "contempt": 54,
        "disgust": 177,
        "fear": 75,
        "happy": 207,
        "sadness": 84,
        "surprise": 249,
    }
    assert df.identity.nunique() == 118 and df.sequence.nunique() == 327
    assert int(df.scored.sum()) == 981 - 54
