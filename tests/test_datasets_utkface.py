"""UTKFace loader: names parsed, malformed names reported, test list honoured, val carved from train."""

from __future__ import annotations

import pytest
from PIL import Image

from fer_lib.datasets import utkface

VALID = {
    "25_0_0_20170116174525125.jpg.chip.jpg": (25, 0, 0),
    "3_1_2_20161219140530307.jpg.chip.jpg": (3, 1, 2),
    "116_1_4_20170120134921760.jpg.chip.jpg": (116, 1, 4),
    "40_0_3_20170119201022181.jpg.chip.jpg": (40, 0, 3),
    "0_1_1_20170109142408075.jpg.chip.jpg": (0, 1, 1),
    "60_0_1_20170110182418362.jpg.chip.jpg": (60, 0, 1),
}
MALFORMED = [
    "61_1_20170109142408075.jpg.chip.jpg",  # race field missing (as in the official release)
    "x5_0_0_20170109142408075.jpg.chip.jpg",  # age not a number
    "117_0_0_20170109142408075.jpg.chip.jpg",  # age out of range
    "30_2_0_20170109142408075.jpg.chip.jpg",  # gender not 0/1
    "30_0_5_20170109142408075.jpg.chip.jpg",  # race not 0..4
]


def _write(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", (20, 20), (120, 80, 60)).save(folder / n, format="JPEG")


@pytest.fixture
def utk(tmp_path):
    root = tmp_path / "utkface"
    _write(root / "images", list(VALID) + MALFORMED)
    (root / "images" / "notes.txt").write_text("not an image")
    test_names = [
        "25_0_0_20170116174525125.jpg.chip.jpg",
        "3_1_2_20161219140530307.jpg.chip.jpg",
        "61_1_20170109142408075.jpg.chip.jpg",
        "999_0_0_gone.jpg.chip.jpg",
    ]
    (root / "balanced_test_2000.txt").write_text("\n".join(test_names) + "\n")
    return root


def test_parse_name():
    assert utkface.parse_name("25_0_0_20170116174525125.jpg.chip.jpg") == (25, 0, 0)
    assert utkface.parse_name("25_1_3_20170116174525125.jpg") == (25, 1, 3)
    assert "4 fields" in utkface.parse_name("61_1_20170109142408075.jpg.chip.jpg")
    assert "not a number" in utkface.parse_name("a_1_2_3.jpg.chip.jpg")
    assert "age 117" in utkface.parse_name("117_0_0_1.jpg")


def test_labels_malformed_and_test_list(utk):
    df, report = utkface.load_manifest(utk, val_fraction=0.0)
    assert len(df) == len(VALID) and report.kept == len(VALID)
    assert report.dropped == {"malformed file name": len(MALFORMED)}
    dropped_files = {p.split("/")[-1] for p in report.to_frame().query("action == 'dropped'")["file"]}
    assert dropped_files == set(MALFORMED)
    by_name = {p.split("/")[-1]: row for p, row in zip(df["path"], df.itertuples())}
    for name, (age, gender, race) in VALID.items():
        row = by_name[name]
        assert (row.age, row.gender, row.race) == (age, gender, race)
        assert row.source == "utkface" and row.identity == ""
    assert set(df.loc[df["split"] == "test", "path"].str.split("/").str[-1]) == {
        "25_0_0_20170116174525125.jpg.chip.jpg",
        "3_1_2_20161219140530307.jpg.chip.jpg",
    }
    assert report.by_reason("ignored") == {"listed in the test list but not found": 1}
    assert all(p.startswith(str(utk)) for p in df["path"])


def test_val_carved_from_train_only_and_deterministic(utk):
    df, _ = utkface.load_manifest(utk, val_fraction=0.5, seed=1)
    tests = set(df.loc[df["split"] == "test", "path"])
    assert len(tests) == 2 and (df["split"] == "val").sum() == 2  # round(0.5 * 4 train files)
    again, _ = utkface.load_manifest(utk, val_fraction=0.5, seed=1)
    assert again["split"].tolist() == df["split"].tolist()


def test_without_test_list_hash_split_and_flat_folder(tmp_path):
    names = [f"{20 + i % 50}_{i % 2}_{i % 5}_2017010{i:05d}.jpg.chip.jpg" for i in range(60)]
    _write(tmp_path, names)  # chips directly in root
    df, report = utkface.load_manifest(tmp_path, val_fraction=0.1, test_fraction=0.25, seed=0)
    assert len(df) == 60 and set(df["split"]) == {"train", "val", "test"}
    assert 5 <= (df["split"] == "test").sum() <= 25
    df2, _ = utkface.load_manifest(tmp_path, val_fraction=0.1, test_fraction=0.25, seed=0)
    assert df2["split"].tolist() == df["split"].tolist()
    assert any("hash" in n for n in report.notes)


def test_limit_per_split(utk):
    df, report = utkface.load_manifest(utk, val_fraction=0.0, limit=1)
    assert df["split"].value_counts().to_dict() == {"train": 1, "test": 1}
    assert any("limit=1" in n for n in report.notes)


def test_test_list_entry_escaping_root_is_reported(utk):
    (utk / "balanced_test_2000.txt").write_text("../../etc/passwd\n25_0_0_20170116174525125.jpg.chip.jpg\n")
    df, report = utkface.load_manifest(utk, val_fraction=0.0)
    assert (df["split"] == "test").sum() == 1
    assert report.by_reason("ignored")["test list entry escapes the root"] == 1


@pytest.mark.realdata
def test_real_utkface_counts(real_root):
    root = real_root / "utkface"
    if not root.is_dir():
        pytest.skip(f"no utkface folder under {real_root}")
    df, report = utkface.load_manifest(root)
    # The whole release: 23,709 files, 4 with a field missing in the name (reported, skipped).
    assert report.kept + report.n_dropped == 23709
    assert report.dropped == {"malformed file name": 4}
    assert len(df) == 23705
    assert (df["split"] == "test").sum() == 2000
    assert (df["split"] == "val").sum() == round(0.1 * 21705)
    assert (
        df["age"].between(0, 116).all() and set(df["gender"]) == {0, 1} and set(df["race"]) == {0, 1, 2, 3, 4}
    )


def test_only_malformed_names_gives_empty_manifest_and_warning(tmp_path):
    _write(tmp_path / "images", MALFORMED)
    with pytest.warns(UserWarning, match="no usable rows"):
        df, report = utkface.load_manifest(tmp_path)
    assert len(df) == 0 and list(df.columns)[:2] == ["path", "split"]
    assert report.n_dropped == len(MALFORMED) and report.kept == 0
