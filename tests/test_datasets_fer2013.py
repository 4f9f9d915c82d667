"""FER2013 loader: Kaggle folders and the original csv (decoded once into a cache)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_lib.datasets import fer2013
from fer_lib.labels import EXPRESSIONS_8

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def _folders(root, splits=("train", "validation", "test"), per_class=2):
    for split in splits:
        for c in CLASSES:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.new("L", (48, 48), 10 * i).save(d / f"{split}_{c}_{i}.jpg")


def test_folder_layout_labels_and_splits(tmp_path):
    _folders(tmp_path)
    (tmp_path / "train" / "contemptuous").mkdir()
    Image.new("L", (48, 48)).save(tmp_path / "train" / "contemptuous" / "x.jpg")
    (tmp_path / "train" / "happy" / "Thumbs.db").write_bytes(b"\x00")
    df, report = fer2013.load_manifest(tmp_path)
    assert df["split"].value_counts().to_dict() == {"train": 14, "val": 14, "test": 14}
    for raw, expr in zip(df["label_raw"], df["expression"]):
        want = {
            "angry": "Anger",
            "happy": "Happy",
            "sad": "Sad",
            "surprise": "Surprise",
            "fear": "Fear",
            "disgust": "Disgust",
            "neutral": "Neutral",
        }[raw]
        assert EXPRESSIONS_8[int(expr)] == want
    assert report.dropped == {"unknown class folder": 1}
    assert report.by_reason("ignored") == {"not an image file": 1}
    assert (df["source"] == "fer2013").all() and df["face_w"].isna().all()


def test_train_test_only_layout_carves_val(tmp_path):
    _folders(tmp_path, splits=("train", "test"), per_class=10)
    df, report = fer2013.load_manifest(tmp_path, val_fraction=0.2)
    assert df["split"].value_counts().to_dict() == {"train": 56, "test": 70, "val": 14}
    assert (df[df["split"] == "val"].groupby("expression").size() == 2).all()  # stratified per class
    df0, _ = fer2013.load_manifest(tmp_path, val_fraction=0.0)
    assert "val" not in set(df0["split"])


def _pixels(seed):
    return np.random.default_rng(seed).integers(0, 256, size=(48, 48), dtype=np.uint8)


def _write_csv(path):
    rows = [
        {"emotion": 0, "pixels": " ".join(map(str, _pixels(0).ravel())), "Usage": "Training"},
        {"emotion": 3, "pixels": " ".join(map(str, _pixels(1).ravel())), "Usage": "PublicTest"},
        {"emotion": 6, "pixels": " ".join(map(str, _pixels(2).ravel())), "Usage": "PrivateTest"},
        {"emotion": 5, "pixels": " ".join(map(str, _pixels(3).ravel())), "Usage": "Training"},
        {"emotion": 1, "pixels": "1 2 3", "Usage": "Training"},  # too few pixels
        {"emotion": 9, "pixels": " ".join(["0"] * 2304), "Usage": "Training"},  # bad emotion
        {"emotion": 2, "pixels": " ".join(["0"] * 2304), "Usage": "Holdout"},  # bad usage
        {"emotion": 2, "pixels": " ".join(["300"] * 2304), "Usage": "Training"},  # out of range
    ]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_csv_decoded_once_with_bad_rows_reported(tmp_path):
    _write_csv(tmp_path / "fer2013.csv")
    cache = tmp_path / "cache" / "fer"
    df, report = fer2013.load_manifest(tmp_path, cache_dir=cache, val_fraction=0.0, progress=False)
    assert df["split"].tolist() == ["train", "val", "test", "train"]
    names = [EXPRESSIONS_8[int(e)] for e in df["expression"]]
    assert names == ["Anger", "Happy", "Neutral", "Surprise"]
    assert np.array_equal(np.asarray(Image.open(df.loc[0, "path"])), _pixels(0))
    assert np.array_equal(np.asarray(Image.open(df.loc[3, "path"])), _pixels(3))
    assert report.dropped == {"invalid pixels": 2, "invalid emotion": 1, "unknown Usage": 1}
    assert "fer2013.csv row 6" in report.to_frame()["file"].tolist()  # 5th data row, after the header
    assert (cache / ".complete").is_file() and not list(cache.parent.glob(".fer.*"))
    stamp = (cache / "train" / "00000.png").stat().st_mtime_ns
    df2, report2 = fer2013.load_manifest(tmp_path / "fer2013.csv", cache_dir=cache, val_fraction=0.0)
    assert df2["path"].tolist() == df["path"].tolist()
    assert (cache / "train" / "00000.png").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert report2.n_dropped == 4


def test_csv_missing_column(tmp_path):
    pd.DataFrame({"emotion": [0], "Usage": ["Training"]}).to_csv(tmp_path / "fer2013.csv", index=False)
    with pytest.raises(ValueError, match=r"fer2013\.csv.*missing column.*pixels"):
        fer2013.load_manifest(tmp_path, cache_dir=tmp_path / "c")


@pytest.mark.realdata
def test_real_fer2013_counts(real_root):
    root = real_root / "fer2013"
    if not root.is_dir():
        pytest.skip(f"no fer2013 folder under {real_root}")
    df, report = fer2013.load_manifest(root)
    assert df["split"].value_counts().to_dict() == {"train": 28709, "val": 3589, "test": 3589}
    assert report.n_dropped == 0
    test = df[df["split"] == "test"]
    assert (test["expression"] == EXPRESSIONS_8.index("Disgust")).sum() == 55
    assert (df[df["split"] == "train"]["expression"] == EXPRESSIONS_8.index("Disgust")).sum() == 436
