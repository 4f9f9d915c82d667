"""AffectNet loader: the csv columns, exclusions 8-10, VA -2, boxes, missing/escaping files, splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_lib.datasets import affectnet
from fer_lib.datasets.affectnet import COLUMNS

LANDMARKS = ";".join(["1.0"] * 136)


def _row(path, expr, v, a, box=("5", "6", "20", "22")):
    return dict(zip(COLUMNS, [path, *box, LANDMARKS, str(expr), str(v), str(a)]))


def _image(root, rel):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40)).save(p)


@pytest.fixture
def affect(tmp_path):
    base = tmp_path / "Manually_Annotated_Images"
    train = [
        _row("1/a.jpg", 1, 0.5, -0.25),  # 0 kept
        _row("1/b.jpg", 8, 0.1, 0.2),  # 1 None, valid VA -> kept, expression NaN
        _row("1/c.jpg", 10, -2, -2),  # 2 No-Face, VA -2 -> dropped
        _row("1/d.jpg", 3, -2, -2),  # 3 VA -2 -> kept, VA cleared
        _row("1/e.jpg", 2, 1.5, 0.0),  # 4 valence out of range -> cleared
        _row("1/missing.jpg", 0, 0.0, 0.0),  # 5 file missing -> dropped
        _row("../../etc/passwd", 0, 0.0, 0.0),  # 6 escapes root -> dropped
        _row("1/f.jpg", 6, 0.3, 0.3, box=("x", "1", "2", "3")),  # 7 invalid box -> NaN box
        _row("1/g.jpg", 9, -2, 0.4),  # 8 Uncertain without valid VA -> dropped
        _row("1/h.jpg", "abc", 0.2, 0.2),  # 9 invalid expression, valid VA -> kept
    ]
    for i in range(20):
        train.append(_row(f"2/t{i}.jpg", i % 8, 0.0, 0.0))
    for r in train:
        if "missing" not in r["subDirectory_filePath"] and ".." not in r["subDirectory_filePath"]:
            _image(base, r["subDirectory_filePath"])
    pd.DataFrame(train).to_csv(tmp_path / "training.csv", index=False)
    val = [_row(f"3/v{i}.jpg", i % 8, 0.1, 0.1) for i in range(8)]
    for r in val:
        _image(base, r["subDirectory_filePath"])
    pd.DataFrame(val).to_csv(tmp_path / "validation.csv", index=False)
    return tmp_path


def _by_name(df):
    return {p.split("/")[-1]: r for p, r in zip(df["path"], df.to_dict("records"))}


def test_rows_kept_dropped_and_cleared(affect):
    df, report = affectnet.load_manifest(affect, val_fraction=0.0)
    rows = _by_name(df)
    assert len(df) == 30 - 4 + 8  # 4 dropped training rows
    assert rows["a.jpg"]["expression"] == 1 and rows["a.jpg"]["valence"] == 0.5
    assert rows["a.jpg"]["arousal"] == -0.25
    assert (
        rows["a.jpg"]["face_x"],
        rows["a.jpg"]["face_y"],
        rows["a.jpg"]["face_w"],
        rows["a.jpg"]["face_h"],
    ) == (5, 6, 20, 22)
    assert np.isnan(rows["b.jpg"]["expression"]) and rows["b.jpg"]["label_raw"] == 8
    assert rows["b.jpg"]["valence"] == pytest.approx(0.1)
    assert rows["d.jpg"]["expression"] == 3 and np.isnan(rows["d.jpg"]["valence"])
    assert np.isnan(rows["e.jpg"]["valence"]) and rows["e.jpg"]["arousal"] == 0.0
    assert np.isnan(rows["f.jpg"]["face_x"]) and np.isnan(rows["f.jpg"]["face_h"])
    assert np.isnan(rows["h.jpg"]["expression"])
    assert "c.jpg" not in rows and "missing.jpg" not in rows and "g.jpg" not in rows
    assert report.dropped == {
        "expression 10 (No-Face) and no valid valence/arousal": 1,
        "expression 9 (Uncertain) and no valid valence/arousal": 1,
        "missing image file": 1,
        "path escapes the dataset root": 1,
    }
    cleared = report.by_reason("value cleared")
    assert cleared["expression 8 (None) excluded from the emotion task"] == 1
    assert cleared["valence -2 (no face)"] == 1 and cleared["arousal -2 (no face)"] == 1
    assert cleared["valence missing or outside [-1, 1]"] == 1
    assert cleared["invalid face box (whole image used)"] == 1
    assert cleared["invalid expression"] == 1
    assert all(p.startswith(str(affect / "Manually_Annotated_Images")) for p in df["path"])
    assert df.loc[df["split"] == "test"].shape[0] == 8 and set(df["split"]) == {"train", "test"}


def test_val_carved_from_training_csv_only(affect):
    df, _ = affectnet.load_manifest(affect, val_fraction=0.5, seed=0)
    val = df[df["split"] == "val"]
    assert len(val) > 0 and not val["path"].str.contains("/3/").any()
    assert (df.loc[df["path"].str.contains("/3/"), "split"] == "test").all()
    df2, _ = affectnet.load_manifest(affect, val_fraction=0.5, seed=0)
    assert df2["split"].tolist() == df["split"].tolist()


def test_check_files_off_keeps_missing_file(affect):
    df, report = affectnet.load_manifest(affect, val_fraction=0.0, check_files=False)
    assert df["path"].str.endswith("missing.jpg").any()
    assert "missing image file" not in report.dropped


def test_headerless_validation_csv_and_images_in_root(tmp_path):
    rows = [_row(f"1/v{i}.jpg", i, 0.0, 0.0) for i in range(3)]
    for r in rows:
        _image(tmp_path, r["subDirectory_filePath"])
    pd.DataFrame(rows).to_csv(tmp_path / "validation.csv", index=False, header=False)
    df, report = affectnet.load_manifest(tmp_path, keep_landmarks=True)
    assert df["expression"].tolist() == [0, 1, 2] and (df["split"] == "test").all()
    assert df.loc[0, "landmarks"] == LANDMARKS
    assert any("no header" in n for n in report.notes) and any(
        "training.csv not found" in n for n in report.notes
    )


def test_missing_column_is_one_clear_error(tmp_path):
    pd.DataFrame([_row("1/a.jpg", 1, 0, 0)]).drop(columns="arousal").to_csv(
        tmp_path / "training.csv", index=False
    )
    with pytest.raises(ValueError, match=r"training\.csv.*missing column\(s\) arousal"):
        affectnet.load_manifest(tmp_path)


def _landmarks(left, right, spread=2.0):
    """68 points ``x;y;...``: jaw etc. at (50, 90); six points around each eye centre (iBUG 36-41, 42-47)."""
    pts = np.tile([50.0, 90.0], (68, 1))
    ring = spread * np.array([[-1, 0], [-0.5, -0.5], [0.5, -0.5], [1, 0], [0.5, 0.5], [-0.5, 0.5]])
    pts[36:42], pts[42:48] = np.add(left, ring), np.add(right, ring)
    return ";".join(f"{v:.2f}" for v in pts.ravel())


def test_eye_centres_from_the_68_landmarks_and_bad_strings_counted(tmp_path):
    good = _landmarks((12.5, 20.0), (31.0, 17.25))
    nan_eye = good.split(";")
    nan_eye[2 * 40] = "x"  # a point of the left eye is not a number
    cases = {
        "good.jpg": good,
        "tilted.jpg": _landmarks((10.0, 25.0), (30.0, 15.0)),
        "empty.jpg": "",
        "short.jpg": "1;2;3",
        "same.jpg": LANDMARKS,  # every point on (1, 1): no eye line
        "nan.jpg": ";".join(nan_eye),
    }
    rows = []
    for name, lm in cases.items():
        row = _row(f"1/{name}", 1, 0.1, 0.1)
        row["facial_landmarks"] = lm
        rows.append(row)
        _image(tmp_path, row["subDirectory_filePath"])
    rows.append(_row("1/gone.jpg", 1, 0.1, 0.1) | {"facial_landmarks": ""})  # dropped: not counted twice
    pd.DataFrame(rows).to_csv(tmp_path / "training.csv", index=False)
    df, report = affectnet.load_manifest(tmp_path, val_fraction=0.0)
    got = _by_name(df)
    assert [c for c in df.columns if c.startswith("eye_")] == list(affectnet.EYE_COLUMNS)
    assert [got["good.jpg"][c] for c in affectnet.EYE_COLUMNS] == pytest.approx([12.5, 20.0, 31.0, 17.25])
    assert [got["tilted.jpg"][c] for c in affectnet.EYE_COLUMNS] == pytest.approx([10.0, 25.0, 30.0, 15.0])
    for name in ("empty.jpg", "short.jpg", "same.jpg", "nan.jpg"):
        assert all(np.isnan(got[name][c]) for c in affectnet.EYE_COLUMNS), name
    assert report.by_reason("value cleared") == {"facial landmarks malformed (no eye centres)": 3}
    issues = report.to_frame().set_index("file")
    assert issues.loc["training.csv row 5", "detail"] == "3 values"  # the short string, named with its row
    assert report.dropped == {"missing image file": 1}
    assert "training.csv: 1 kept rows have no facial landmarks" in " ".join(report.notes)  # gone.jpg is not
    assert "landmarks" not in df.columns  # the raw string only on request
