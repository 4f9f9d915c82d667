import numpy as np
from PIL import Image

from fer_lib import config
from fer_lib.datasets import sources


def _chips(folder, n):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((16, 16, 3), i, np.uint8)).save(
            folder / f"{20 + i}_{i % 2}_{i % 5}_2017010{i % 9}.jpg.chip.jpg"
        )


def test_real_dataset_is_preferred_and_capped(tmp_path, monkeypatch):
    _chips(tmp_path / "real" / "utkface" / "images", 30)
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path / "real"))
    cfg = config.get_profile("smoke", {"data.real_limit": 4})
    df, report, src = sources.load_for_profile("utkface", cfg)
    assert src.real and src.kind == "real" and src.root == (tmp_path / "real" / "utkface").resolve()
    assert report.kept == 30
    assert df.groupby("split").size().max() <= 4
    assert set(df.age) <= set(range(20, 50))
    # without the cap every row stays
    df_all, _, _ = sources.load_for_profile("utkface", config.get_profile("smoke", {"data.real_limit": None}))
    assert len(df_all) == 30
