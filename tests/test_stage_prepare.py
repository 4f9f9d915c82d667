import numpy as np
import pandas as pd
from PIL import Image

from fer_lib import config
from fer_lib.datasets.synthetic import write_video
from fer_lib.stages import prepare as stage
from fer_lib.video.fakes import ColourBlobDetector


def _real_utkface(root, n):
    img = root / "utkface" / "images"
    img.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((20, 20, 3), 100, np.uint8)).save(
            img / f"{30 + i}_{i % 2}_{i % 5}_20170101{i:04d}.jpg.chip.jpg"
        )
    (img / "41_1_20170101.jpg.chip.jpg").write_bytes(b"")  # race field missing: reported


def test_summary_and_dropped_tables_count_what_the_loader_reported(tmp_path, monkeypatch):
    _real_utkface(tmp_path, 10)
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path))
    cfg = config.get_profile("smoke", {"data.real_limit": None})
    prepared = stage.prepare(cfg, datasets=("utkface",), progress=False)
    s = stage.summary_table(prepared).iloc[0]
    assert s.dataset == "utkface" and s.source == "real"
    assert s.train + s.val + s.test == 10 and s.dropped == 1
    d = stage.dropped_table(prepared)
    assert d["count"].sum() == 1 and (d.dataset == "utkface").all()
    images, caps = stage.sample_faces(prepared["utkface"].manifest, "utkface", n=3, size=32)
    assert (
        len(images) == 3
        and images[0].shape == (32, 32, 3)
        and set(caps) <= {"White", "Black", "Asian", "Indian", "Others"}
    )


def test_balance_uses_canonical_names():
    df = pd.DataFrame({"expression": [1.0, 1.0, 7.0, np.nan], "split": ["train", "train", "test", "train"]})
    b = stage.balance(df, "affectnet")
    assert b.loc["Happy", "train"] == 2 and b.loc["Contempt", "test"] == 1
    assert b.loc["none (VA only)", "train"] == 1


def test_detection_rate_counts_frames_with_a_big_enough_face(tmp_path):
    frames = []
    for i in range(8):
        f = np.zeros((60, 80, 3), np.uint8)
        if i % 2 == 0:  # a 'face' (saturated blob) on even frames only
            f[10:50, 20:60] = (250, 10, 10)
        frames.append(f)
    path = tmp_path / "v.avi"
    write_video(path, frames, fps=8)
    manifest = pd.DataFrame({"path": [str(path)]})
    rates = stage.detection_rate(
        manifest, min_face_size=32, stride=1, progress=False, detector=ColourBlobDetector()
    )
    assert rates.frames.item() == 8 and rates.frames_with_face.item() == 4
    small = stage.detection_rate(
        manifest, min_face_size=48, stride=1, progress=False, detector=ColourBlobDetector()
    )
    assert small.frames_with_face.item() == 0
