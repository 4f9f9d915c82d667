"""AFEW, VGAF and Aff-Wild2 loaders (videos and per-frame annotation files)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fer_lib.datasets import afew, affwild2, vgaf
from fer_lib.labels import EXPRESSIONS_8, VGAF_CLASSES


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")


# ------------------------------------------------------------------------------------------- AFEW
def test_afew_rows_labels_and_report(tmp_path):
    _touch(tmp_path / "Train" / "Angry" / "000046280.avi")
    _touch(tmp_path / "Train" / "Happy" / "000149120.avi")
    _touch(tmp_path / "Train" / "Happy" / "notes.txt")
    _touch(tmp_path / "Train" / "Bored" / "000001.avi")
    _touch(tmp_path / "Train" / "stray.avi")
    _touch(tmp_path / "Val" / "Surprise" / "002143880.mp4")
    _touch(tmp_path / "Val" / "Neutral" / "002.mkv")
    (tmp_path / "Test").mkdir()
    df, report = afew.load_manifest(tmp_path)
    assert df["video"].tolist() == ["000046280", "000149120", "002143880"]
    assert [EXPRESSIONS_8[int(e)] for e in df["expression"]] == ["Anger", "Happy", "Surprise"]
    assert df["split"].tolist() == ["train", "train", "test"]
    assert report.dropped == {"unknown class folder": 1}
    assert report.by_reason("ignored") == {
        "not a video file": 1,
        "file outside a class folder": 1,
        "video format not supported": 1,
    }
    assert any("Test/ ignored" in n for n in report.notes)


# ------------------------------------------------------------------------------------------- VGAF
def test_vgaf_label_files_both_styles(tmp_path):
    for name in ("1_1.mp4", "1_2.mp4", "2_1.mp4", "3_3.mp4"):
        _touch(tmp_path / "Train" / name)
    (tmp_path / "Train_labels.txt").write_text(
        "Vid_name Label\n1_1 1\n1_2.mp4 Negative\n9_9 2\n2_1 7\n1_1 2\nbroken line here\n"
    )
    _touch(tmp_path / "Val" / "clips" / "5_1.mp4")
    _touch(tmp_path / "Val" / "clips" / "5_2.mp4")
    (tmp_path / "Val" / "Val_labels.csv").write_text("Vid_name,Label\n5_1,neutral\n5_2,3\n../../x,1\n")
    df, report = vgaf.load_manifest(tmp_path)
    assert df["video"].tolist() == ["1_1", "1_2", "5_1", "5_2"]
    assert [VGAF_CLASSES[g] for g in df["group_label"]] == ["Positive", "Negative", "Neutral", "Negative"]
    assert df["split"].tolist() == ["train", "train", "test", "test"]
    assert df["expression"].isna().all()
    assert report.dropped == {
        "labelled video not found": 1,
        "unknown label": 1,
        "duplicate label line": 1,
        "malformed label line": 1,
        "path escapes the dataset root": 1,
    }
    ignored = report.to_frame().query("action == 'ignored'")
    assert [p.split("/")[-1] for p in ignored["file"]] == ["2_1.mp4", "3_3.mp4"]  # videos without a label


def test_vgaf_missing_label_files_is_layout_error(tmp_path):
    _touch(tmp_path / "Train" / "1_1.mp4")
    with pytest.raises(FileNotFoundError, match="Train_labels.txt"):
        vgaf.load_manifest(tmp_path)


# --------------------------------------------------------------------------------------- Aff-Wild2
@pytest.fixture
def affwild(tmp_path):
    ann = tmp_path / "annotations"
    expr = ann / "EXPR_Set" / "Train_Set"
    expr.mkdir(parents=True)
    # frames 1..6: Neutral, Happiness, invalid, Surprise, out of range, Anger
    (expr / "vid1.txt").write_text(
        "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise\n0\n4\n-1\n6\n9\n1\n"
    )
    va = ann / "VA_Set" / "Train_Set"
    va.mkdir(parents=True)
    # frames 1..5: valid, -5 both, arousal invalid, valid, valid
    (va / "vid1.txt").write_text("valence,arousal\n0.1,0.2\n-5,-5\n0.5,1.7\n-0.3,-0.4\n0.9,0.8\n")
    val = ann / "EXPR_Set" / "Validation_Set"
    val.mkdir(parents=True)
    (val / "vid2.txt").write_text("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise\n5\n2\n")
    for video, n in (("vid1", 6), ("vid2", 2)):
        d = tmp_path / "cropped_aligned" / video
        d.mkdir(parents=True)
        for k in range(1, n + 1):
            if (video, k) != ("vid1", 5):  # frame 5 of vid1 has no image
                Image.new("RGB", (8, 8)).save(d / f"{k:05d}.jpg")
    return tmp_path


def test_affwild2_merge_and_counts(affwild):
    df, report = affwild2.load_manifest(affwild)
    got = {(r.video, r.frame): r for r in df.itertuples()}
    names = {
        k: (EXPRESSIONS_8[int(r.expression)] if not np.isnan(r.expression) else None) for k, r in got.items()
    }
    assert names == {
        ("vid1", 1): "Neutral",
        ("vid1", 2): "Happy",
        ("vid1", 3): None,
        ("vid1", 4): "Surprise",
        ("vid1", 6): "Anger",
        ("vid2", 1): "Sad",
        ("vid2", 2): "Disgust",
    }
    assert got[("vid1", 1)].valence == pytest.approx(0.1) and got[("vid1", 1)].arousal == pytest.approx(0.2)
    assert np.isnan(got[("vid1", 2)].valence)  # VA -5 dropped, expression kept
    assert got[("vid1", 3)].valence == pytest.approx(0.5) and np.isnan(got[("vid1", 3)].arousal)
    assert np.isnan(got[("vid1", 6)].valence)  # no VA line for frame 6
    assert got[("vid2", 1)].split == "test" and got[("vid1", 1)].split == "train"
    assert got[("vid1", 4)].path == str(affwild / "cropped_aligned" / "vid1" / "00004.jpg")
    assert report.dropped == {
        "EXPR line -1 (invalid frame)": 1,
        "EXPR line not in 0..6": 1,
        "VA line invalid (-5 or outside [-1, 1])": 1,
        "frame image missing": 1,
    }
    assert report.by_reason("value cleared") == {"VA line: arousal invalid (valence kept)": 1}
    assert df["frame"].dtype == np.int64


def test_affwild2_val_by_video_and_no_file_check(affwild):
    for i in range(3, 9):
        (affwild / "annotations" / "EXPR_Set" / "Train_Set" / f"vid{i}.txt").write_text("h\n0\n1\n")
    df, report = affwild2.load_manifest(affwild, check_files=False, val_fraction=0.5)
    assert "frame image missing" not in report.dropped
    val_videos = set(df.loc[df["split"] == "val", "video"])
    assert len(val_videos) == 4  # round(0.5 * 7 train videos) = 4 (banker's rounding of 3.5)
    per_video = df.groupby("video")["split"].nunique()
    assert (per_video == 1).all()  # a video never straddles train and val


def test_affwild2_header_order_is_used(tmp_path):
    expr = tmp_path / "EXPR_Set" / "Train_Set"  # annotations directly in root
    expr.mkdir(parents=True)
    (expr / "v.txt").write_text("Happiness,Neutral,Anger,Disgust,Fear,Sadness,Surprise\n0\n1\n")
    df, report = affwild2.load_manifest(tmp_path, check_files=False)
    assert [EXPRESSIONS_8[int(e)] for e in df["expression"]] == ["Happy", "Neutral"]
    assert any("different order" in n for n in report.notes)
