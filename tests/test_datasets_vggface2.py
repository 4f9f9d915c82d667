"""VGGFace2 loader: identity folders and a per-identity val split."""

from __future__ import annotations

from PIL import Image

from fer_lib.datasets import vggface2


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 12)).save(path)


def test_identities_and_per_identity_val(tmp_path):
    for i in range(10):
        _img(tmp_path / "train" / "n000002" / f"{i:04d}_01.jpg")
    for i in range(5):
        _img(tmp_path / "train" / "n000003" / f"{i:04d}_01.jpg")
    for i in range(2):
        _img(tmp_path / "test" / "n000009" / f"{i:04d}_01.jpg")
    _img(tmp_path / "train" / "loose.jpg")
    (tmp_path / "train" / "n000002" / "meta.csv").write_text("x")
    df, report = vggface2.load_manifest(tmp_path, val_fraction=0.2)
    counts = df.groupby(["identity", "split"]).size().to_dict()
    assert counts == {
        ("n000002", "train"): 8,
        ("n000002", "val"): 2,
        ("n000003", "train"): 4,
        ("n000003", "val"): 1,
        ("n000009", "test"): 2,
    }
    assert report.by_reason("ignored") == {"file outside an identity folder": 1, "not an image file": 1}
    assert (df["source"] == "vggface2").all() and df["age"].isna().all()
    df2, _ = vggface2.load_manifest(tmp_path, val_fraction=0.2, limit=3)
    assert df2["split"].value_counts().to_dict() == {"train": 3, "val": 3, "test": 2}
