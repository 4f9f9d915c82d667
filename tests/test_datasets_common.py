"""Shared loader machinery: report, splits, limits, path safety, dispatcher, image validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_lib import datasets
from fer_lib.datasets._common import (
    ValidationReport,
    apply_limit,
    carve_val,
    finalize_manifest,
    hash_split,
    inside_root,
    stable_hash,
)


def _frame(n: int, split: str = "train", group=None) -> pd.DataFrame:
    df = pd.DataFrame({"path": [f"/d/{split}/{i:04d}.jpg" for i in range(n)], "split": split})
    if group is not None:
        df["expression"] = [group[i % len(group)] for i in range(n)]
    return df


def test_manifest_columns_and_finalize_types():
    assert datasets.MANIFEST_COLUMNS[:3] == ["path", "split", "identity"]
    assert datasets.MANIFEST_COLUMNS[-1] == "source"
    df = finalize_manifest([{"path": "/a.jpg", "split": "train", "age": 3, "video": "v1"}], "x")
    assert list(df.columns) == datasets.MANIFEST_COLUMNS + ["video"]
    assert df.loc[0, "identity"] == "" and df.loc[0, "source"] == "x"
    assert df["age"].dtype == np.float64 and df.loc[0, "age"] == 3.0
    assert np.isnan(df.loc[0, "gender"]) and np.isnan(df.loc[0, "face_w"])
    assert list(df[datasets.MANIFEST_COLUMNS].columns) == datasets.MANIFEST_COLUMNS


def test_report_counts_frame_and_text():
    r = ValidationReport("demo", "/root")
    r.drop("a.jpg", "malformed file name", "3 fields")
    r.drop("b.jpg", "malformed file name")
    r.clear("c.jpg", "valence -2 (no face)")
    r.add_many(["d.jpg", "e.jpg", "f.jpg"], "missing image file")
    r.ignore("g.txt", "not an image file")
    r.set_kept(pd.DataFrame({"split": ["train", "train", "test"]}))
    assert r.dropped == {"malformed file name": 2, "missing image file": 3}
    assert r.n_dropped == 5 and r.n_cleared == 1 and r.kept == 3
    assert r.kept_by_split == {"train": 2, "test": 1}
    frame = r.to_frame()
    assert len(frame) == 7 and set(frame["action"]) == {"dropped", "value cleared", "ignored"}
    assert frame.loc[frame["file"] == "a.jpg", "detail"].item() == "3 fields"
    text = str(r)
    assert "kept 3 rows (train 2, test 1)" in text and "dropped 5" in text and "missing image file" in text
    summary = r.summary_frame()
    assert summary["count"].sum() == 7


def test_stable_hash_and_hash_split_are_deterministic():
    assert stable_hash("x", 0) == stable_hash("x", 0) != stable_hash("x", 1)
    keys = [f"k{i}" for i in range(2000)]
    a = hash_split(keys, 0.2, seed=3)
    assert (a == hash_split(keys, 0.2, seed=3)).all()
    assert 0.16 < (a == "test").mean() < 0.24
    # each key's split depends on the key only, not on the other keys
    assert (hash_split(keys[:100], 0.2, seed=3) == a[:100]).all()


def test_carve_val_exact_per_group_and_never_touches_test():
    df = pd.concat(
        [_frame(100, "train", group=[0, 1, 2, 3]), _frame(40, "test", group=[0, 1])], ignore_index=True
    )
    out = carve_val(df, 0.1, seed=0, by="expression")
    assert (out.loc[df["split"] == "test", "split"] == "test").all()
    val = out[out["split"] == "val"]
    assert val["expression"].value_counts().to_dict() == {0: 2, 1: 2, 2: 2, 3: 2}  # round(0.1 * 25) each
    # row order does not change the choice
    shuffled = carve_val(df.sample(frac=1, random_state=1), 0.1, seed=0, by="expression")
    assert set(shuffled.loc[shuffled["split"] == "val", "path"]) == set(val["path"])
    assert carve_val(df, 0.0)["split"].tolist() == df["split"].tolist()
    with pytest.raises(ValueError):
        carve_val(df, 1.5)


def test_carve_val_balanced_takes_the_same_number_from_every_group():
    # 70 rows of group 0, 20 of group 1, 10 of group 2 (by two columns): a skewed training pool
    df = _frame(100, "train", group=[0] * 7 + [1] * 2 + [2])
    df["gender"] = (np.arange(100) // 10) % 2
    out = carve_val(df, 0.12, seed=0, by=("expression", "gender"), balanced=True)
    counts = out[out["split"] == "val"].groupby(["expression", "gender"]).size().to_dict()
    # 12 val rows over 6 groups: 2 from each, however large the group (a proportional carve takes 4
    # from each half of group 0 and 1 from each half of group 2)
    assert counts == {(g, s): 2 for g in (0, 1, 2) for s in (0, 1)}
    # a group never gives more than half of its rows
    small = carve_val(df, 0.6, seed=0, by="expression", balanced=True)
    assert small[small["split"] == "val"]["expression"].value_counts().to_dict() == {0: 20, 1: 10, 2: 5}


def test_apply_limit_per_split_deterministic_order_kept():
    df = pd.concat([_frame(50, "train"), _frame(5, "test")], ignore_index=True)
    out = apply_limit(df, 10, seed=0)
    assert out["split"].value_counts().to_dict() == {"train": 10, "test": 5}
    assert out["path"].tolist() == apply_limit(df, 10, seed=0)["path"].tolist()
    train = out.loc[out["split"] == "train", "path"].tolist()
    assert train == sorted(train) and out["split"].tolist() == ["train"] * 10 + ["test"] * 5  # order kept
    assert apply_limit(df, None) is df


def test_inside_root(tmp_path):
    assert inside_root(tmp_path, "a/b.jpg") == tmp_path / "a" / "b.jpg"
    assert inside_root(tmp_path, "a/../b.jpg") == tmp_path / "b.jpg"
    assert inside_root(tmp_path, "../../etc/passwd") is None
    assert inside_root(tmp_path, "/etc/passwd") is None
    assert inside_root(tmp_path, "a\\..\\..\\x") is None
    assert inside_root(tmp_path, "") is None


def test_registry_and_dispatch(tmp_path):
    assert set(datasets.DATASET_NAMES) == {
        "utkface",
        "fer2013",
        "affectnet",
        "afew",
        "vgaf",
        "affwild2",
        "vggface2",
    }
    for name in datasets.DATASET_NAMES:
        assert callable(datasets.get_loader(name))
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        datasets.load("imagenet", tmp_path)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "20_1_3_20170101.jpg.chip.jpg")
    df, report = datasets.load("UTKFace", tmp_path, val_fraction=0.0)
    assert len(df) == 1 and df.loc[0, "race"] == 3 and report.kept == 1


@pytest.mark.parametrize("name", ["utkface", "fer2013", "affectnet", "afew", "vgaf", "affwild2", "vggface2"])
def test_wrong_root_raises_one_clear_error(tmp_path, name):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        datasets.load(name, missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"empty.*expected"):
        datasets.load(name, empty)


def test_validate_images_reports_unreadable(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    video = tmp_path / "clip.avi"
    video.write_bytes(b"\x00")
    df = finalize_manifest([{"path": str(p), "split": "train"} for p in (good, bad, video)], "x")
    report = ValidationReport("x", str(tmp_path))
    out = datasets.validate_images(df, report, progress=False)
    assert out["path"].tolist() == [str(good), str(video)]
    assert report.dropped == {"not an image file": 1} and report.kept == 2
    assert report.to_frame()["file"].tolist() == [str(bad)]


def test_splits_and_limits_do_not_depend_on_where_the_dataset_lives():
    from fer_lib.datasets._common import apply_limit, carve_val, location_free

    names = [f"id{i % 5}/img{i:03d}.jpg" for i in range(200)]
    frames = [
        pd.DataFrame(
            {
                "path": [f"{root}/{n}" for n in names],
                "identity": [n[:3] for n in names],
                "split": ["train"] * 150 + ["test"] * 50,
            }
        )
        for root in ("/data/a/vggface2", "/mnt/other/copy/vggface2")
    ]
    assert list(location_free(frames[0].path)) == names
    val = [carve_val(f, 0.2, seed=3, by="identity").split for f in frames]
    assert (val[0] == "val").sum() == 30 and val[0].equals(val[1])
    kept = [apply_limit(f, 40, seed=1).path.str.split("vggface2/").str[1] for f in frames]
    assert len(kept[0]) == 80 and kept[0].equals(kept[1])
    assert location_free(pd.Series(["/x/y/one.jpg"])).tolist() == ["one.jpg"]
