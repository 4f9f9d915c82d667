"""Synthetic datasets: determinism, exact distributed formats, recoverable labels, detectable faces.

The formats are parsed here with plain regex / csv on purpose: these tests must not depend on the
loader modules, which are checked against the same files elsewhere.
"""

from __future__ import annotations

import csv
import filecmp
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_lib.config import DataConfig, get_profile
from fer_lib.datasets import synthetic as syn
from fer_lib.datasets._render import (
    Identity,
    Look,
    Nuisance,
    Person,
    action_units,
    render_chip,
    render_scene,
    valence_arousal,
)
from fer_lib.labels import AFEW_ORDER, EXPRESSIONS_8, FER2013_ORDER

TINY = DataConfig(
    n_identities=3,
    images_per_identity=3,
    n_utkface=14,
    n_affectnet_train=40,
    n_affectnet_val=16,
    n_fer2013_per_class=2,
    n_afew_per_class=1,
    n_vgaf_per_class=1,
    n_affwild2_videos=2,
    affwild2_frames=24,
    video_frames=8,
    video_size=(128, 96),
    chip_size=64,
)
AFFECTNET_COLUMNS = [
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    syn.generate(root, TINY, seed=7, progress=False, workers=0)
    return root


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _decode(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# ------------------------------------------------------------------------------------ labels / units
def test_valence_arousal_follows_prototype_and_intensity():
    happy, sad = EXPRESSIONS_8.index("Happy"), EXPRESSIONS_8.index("Sad")
    assert valence_arousal(happy, 1.0) == pytest.approx((0.8, 0.5))
    assert valence_arousal(happy, 0.5) == pytest.approx((0.4, 0.25))
    assert valence_arousal(sad, 1.0) == pytest.approx((-0.6, -0.3))
    assert valence_arousal(0, 1.0) == (0.0, 0.0)
    rng = np.random.default_rng(0)
    noisy = np.array([valence_arousal(happy, 1.0, rng, noise=2.0) for _ in range(200)])
    assert noisy.min() >= -1 and noisy.max() <= 1 and (np.abs(noisy) == 1).any()  # clipped


def test_action_units_scale_with_intensity():
    happy = EXPRESSIONS_8.index("Happy")
    assert action_units(happy, 1.0)["AU12"] == 1.0
    assert action_units(happy, 0.4)["AU12"] == pytest.approx(0.4)
    assert all(v == 0 for v in action_units(0, 1.0).values())


def test_group_label_is_strict_majority():
    e = {n: EXPRESSIONS_8.index(n) for n in EXPRESSIONS_8}
    assert syn.group_label([e["Happy"], e["Surprise"], e["Neutral"]]) == "Positive"
    assert syn.group_label([e["Anger"], e["Sad"], e["Neutral"], e["Fear"]]) == "Negative"
    assert syn.group_label([e["Neutral"], e["Neutral"], e["Happy"]]) == "Neutral"
    assert syn.group_label([e["Happy"], e["Sad"]]) is None


def test_largest_remainder_split():
    parts = syn._largest_remainder(100, [5, 3, 1, 1], minimum=4)
    assert sum(parts) == 100 and min(parts) >= 4 and parts[0] > parts[1] > parts[2]


# -------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_files(tiny, tmp_path):
    # the fixture ran in this process; this copy renders in two worker processes
    syn.generate(tmp_path, TINY, seed=7, progress=False, workers=2)
    for name in syn.DATASETS:
        a, b = tiny / name, tmp_path / name
        files = _files(a)
        assert files == _files(b), name
        assert len(files) > 3
        match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
        assert not mismatch and not errors, (name, mismatch[:3])


def test_other_seed_gives_other_data(tiny, tmp_path):
    syn.generate(tmp_path, TINY, seed=8, datasets=("utkface", "afew"), progress=False)
    a = pd.read_csv(tiny / "utkface" / "ground_truth.csv")
    b = pd.read_csv(tmp_path / "utkface" / "ground_truth.csv")
    assert list(a["file"]) != list(b["file"])
    va, vb = tiny / "afew" / "Train" / "Angry", tmp_path / "afew" / "Train" / "Angry"
    fa, fb = _decode(next(va.glob("*.avi"))), _decode(next(vb.glob("*.avi")))
    assert np.abs(fa[0].astype(int) - fb[0].astype(int)).mean() > 5


def test_complete_folder_is_skipped_and_changed_config_regenerates(tmp_path):
    cfg = DataConfig(n_utkface=10, chip_size=48, num_workers=0)
    syn.generate(tmp_path, cfg, seed=1, datasets=("utkface",), progress=False)
    marker = json.loads((tmp_path / "utkface" / syn.MARKER).read_text())
    assert marker["seed"] == 1 and marker["config"] == {"n_utkface": 10, "chip_size": 48}
    probe = tmp_path / "utkface" / "images" / "probe.txt"
    probe.write_text("kept when the folder is complete")
    syn.generate(tmp_path, cfg, seed=1, datasets=("utkface",), progress=False)
    assert probe.exists()
    syn.generate(
        tmp_path,
        DataConfig(n_utkface=12, chip_size=48, num_workers=0),
        seed=1,
        datasets=("utkface",),
        progress=False,
    )
    assert not probe.exists() and len(list((tmp_path / "utkface" / "images").glob("*.jpg"))) == 12
    syn.generate(
        tmp_path,
        DataConfig(n_utkface=12, chip_size=48, num_workers=0),
        seed=2,
        datasets=("utkface",),
        progress=False,
    )
    assert json.loads((tmp_path / "utkface" / syn.MARKER).read_text())["seed"] == 2


def test_interrupted_or_foreign_folders(tmp_path):
    cfg = DataConfig(n_utkface=10, chip_size=48, num_workers=0)
    leftover = tmp_path / ".utkface.partial"
    (leftover / "images").mkdir(parents=True)
    (leftover / "images" / "half_written.jpg").write_bytes(b"\xff\xd8")
    syn.generate(tmp_path, cfg, seed=1, datasets=("utkface",), progress=False)
    assert not leftover.exists()
    assert not (tmp_path / "utkface" / "images" / "half_written.jpg").exists()
    foreign = tmp_path / "other"
    (foreign / "afew").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="no .complete.json"):
        syn.generate(foreign, cfg, datasets=("afew",), progress=False)
    with pytest.raises(ValueError, match="unknown synthetic dataset"):
        syn.generate(tmp_path, cfg, datasets=("imagenet",), progress=False)
    with pytest.raises(ValueError, match="must be even"):
        syn.generate(tmp_path, DataConfig(video_size=(161, 120)), datasets="afew", progress=False)


# ------------------------------------------------------------------------------------------ formats
def test_utkface_names(tiny):
    names = sorted(p.name for p in (tiny / "utkface" / "images").iterdir())
    good = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d{17})\.jpg\.chip\.jpg$")
    bad = re.compile(r"^(\d{1,3})_([01])_(\d{17})\.jpg\.chip\.jpg$")
    parsed = {n: good.match(n) for n in names}
    malformed = [n for n, m in parsed.items() if m is None]
    assert len(names) == TINY.n_utkface and len(malformed) == 2
    assert all(bad.match(n) for n in malformed)
    gt = pd.read_csv(tiny / "utkface" / "ground_truth.csv").set_index("file")
    assert sorted(gt.index[gt["malformed"]]) == sorted(f"images/{n}" for n in malformed)
    for n, m in parsed.items():
        if m:
            row = gt.loc[f"images/{n}"]
            assert (int(m[1]), int(m[2]), int(m[3])) == (row.age, row.gender, row.race)
            assert 1 <= int(m[1]) <= 99
    with Image.open(tiny / "utkface" / "images" / names[0]) as im:
        assert im.size == (TINY.chip_size, TINY.chip_size) and im.mode == "RGB"


def test_affectnet_csv(tiny):
    root = tiny / "affectnet"
    for csv_name, n in (("training.csv", TINY.n_affectnet_train), ("validation.csv", TINY.n_affectnet_val)):
        with open(root / csv_name, newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows[0] == AFFECTNET_COLUMNS
        body = [dict(zip(rows[0], r)) for r in rows[1:]]
        expr = np.array([int(r["expression"]) for r in body])
        assert ((expr >= 0) & (expr <= 10)).all()
        assert (expr <= 7).sum() == n and {8, 9, 10} <= set(expr.tolist())
        for r in body:
            with Image.open(root / "Manually_Annotated_Images" / r["subDirectory_filePath"]) as im:
                w, h = im.size
            x, y, bw, bh = (int(r[k]) for k in ("face_x", "face_y", "face_width", "face_height"))
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
            assert bw * bh < 0.6 * w * h  # the face is not the whole frame: the box matters
            v, a = float(r["valence"]), float(r["arousal"])
            if r["expression"] == "10":
                assert (v, a) == (-2.0, -2.0) and r["facial_landmarks"] == ""
            else:
                assert (v, a) == (-2.0, -2.0) or (-1 <= v <= 1 and -1 <= a <= 1)
                pts = np.array([float(t) for t in r["facial_landmarks"].split(";")]).reshape(68, 2)
                inside = (
                    (pts[:, 0] >= x - 0.1 * bw) & (pts[:, 0] <= x + 1.1 * bw) & (pts[:, 1] >= y - 0.1 * bh)
                )
                assert inside.mean() > 0.9
                # iBUG order: image-left eye (36-41) left of the other (42-47), mouth (48-67) below
                # the eyes, chin (8) below the mouth, jaw (0-16) running left to right
                eyes_l, eyes_r, mouth = pts[36:42].mean(0), pts[42:48].mean(0), pts[48:68].mean(0)
                assert eyes_l[0] < pts[27:36, 0].mean() < eyes_r[0]
                assert mouth[1] > max(eyes_l[1], eyes_r[1]) and pts[8, 1] > mouth[1]
                assert pts[0, 0] < pts[8, 0] < pts[16, 0]
        counts = np.bincount(expr[expr <= 7], minlength=8)
        if csv_name == "training.csv":  # AffectNet-like imbalance
            assert counts.argmax() == EXPRESSIONS_8.index("Happy")
            assert counts[EXPRESSIONS_8.index("Contempt")] == counts.min() >= 2
        else:
            assert counts.max() - counts.min() <= 1
    gt = pd.read_csv(root / "ground_truth.csv")
    assert gt["va_missing"].sum() >= 2  # canonical rows whose VA is written as -2
    canon = gt[gt["expression_raw"] <= 7]
    assert (canon["expression"] == canon["expression_raw"]).all()


def test_vggface2_layout(tiny):
    root = tiny / "vggface2"
    ids = {s: sorted(p.name for p in (root / s).iterdir()) for s in ("train", "test")}
    assert len(ids["train"]) == TINY.n_identities and len(ids["test"]) >= 2
    assert not set(ids["train"]) & set(ids["test"])
    for split, folders in ids.items():
        for f in folders:
            assert re.fullmatch(r"n\d{6}", f)
            files = sorted(p.name for p in (root / split / f).iterdir())
            assert len(files) == TINY.images_per_identity
            assert all(re.fullmatch(r"\d{4}_\d{2}\.jpg", n) for n in files)
    gt = pd.read_csv(root / "ground_truth.csv", dtype={"identity": str})
    per_id = gt.groupby("identity")[["gender", "race"]].nunique()
    assert (per_id == 1).all().all()  # one person per folder


def test_fer2013_layout(tiny):
    root = tiny / "fer2013"
    classes = sorted(c.lower() for c in FER2013_ORDER)
    for split, usage in (("train", "Training"), ("validation", "PublicTest"), ("test", "PrivateTest")):
        assert sorted(p.name for p in (root / split).iterdir()) == classes
        for c in classes:
            files = list((root / split / c).glob("*.jpg"))
            assert len(files) >= 2 and all(re.fullmatch(rf"{usage}_\d+\.jpg", f.name) for f in files)
            with Image.open(files[0]) as im:
                assert im.size == (48, 48) and im.mode == "L"


def test_afew_videos_decode_in_order(tiny):
    root = tiny / "afew"
    for split in ("Train", "Val"):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(AFEW_ORDER)
    gt = pd.read_csv(root / "ground_truth.csv")
    assert len(gt) == 2 * len(AFEW_ORDER) * TINY.n_afew_per_class
    for _, row in gt.head(3).iterrows():
        assert re.fullmatch(r"(Train|Val)/[A-Za-z]+/\d{9}\.avi", row.file)
        decoded = _decode(root / row.file)
        assert len(decoded) == TINY.video_frames
        assert decoded[0].shape == (TINY.video_size[1], TINY.video_size[0], 3)
        s_i, c_i, k = (int(v) for v in row.clip_keys.split("/"))
        rendered, _, _ = syn.afew_clip(7, TINY, s_i, c_i, k)
        err = np.array([[np.abs(d.astype(float) - r).mean() for r in rendered] for d in decoded])
        assert (err.argmin(axis=1) == np.arange(len(decoded))).all()  # every frame, in order
        assert err.diagonal().max() < 6  # and close to what was rendered


def test_afew_expression_envelope(tiny):
    frames = pd.read_csv(tiny / "afew" / "ground_truth_frames.csv")
    for _, clip in frames[frames["expression"] != 0].groupby("file"):
        inten = clip["intensity"].to_numpy()
        peak = inten.argmax()
        assert inten[peak] > 0.5 and inten[0] < inten[peak] and inten[-1] < inten[peak]
    neutral = frames[frames["expression"] == 0]
    assert (neutral["intensity"] == 0).all()


def test_vgaf_labels(tiny):
    root = tiny / "vgaf"
    gt = pd.read_csv(root / "ground_truth.csv").set_index("name")
    for split in ("Train", "Val"):
        lines = (root / f"{split}_labels.txt").read_text().splitlines()
        assert lines[0].split() == ["Vid_name", "Label"]
        assert len(lines) == 1 + 3 * TINY.n_vgaf_per_class
        for line in lines[1:]:
            name, label = line.split()
            assert label in {"1", "2", "3"} and (root / split / f"{name}.mp4").is_file()
            members = [EXPRESSIONS_8.index(e) for e in gt.loc[name, "member_expressions"].split(";")]
            assert 2 <= len(members) <= 4
            assert syn.group_label(members) == ("Positive", "Neutral", "Negative")[int(label) - 1]
    first = gt.iloc[0]
    assert len(_decode(root / first.file)) == TINY.video_frames


def test_affwild2_annotations(tiny):
    root = tiny / "affwild2"
    for set_name in ("Train_Set", "Validation_Set"):
        expr_files = sorted((root / "annotations" / "EXPR_Set" / set_name).glob("*.txt"))
        assert expr_files
        for ef in expr_files:
            lines = ef.read_text().splitlines()
            assert lines[0] == "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"
            values = [int(v) for v in lines[1:]]
            assert len(values) == TINY.affwild2_frames and set(values) <= set(range(-1, 7)) and -1 in values
            va = (root / "annotations" / "VA_Set" / set_name / ef.name).read_text().splitlines()
            assert va[0] == "valence,arousal" and len(va) == TINY.affwild2_frames + 1
            pairs = np.array([[float(t) for t in line.split(",")] for line in va[1:]])
            invalid = (pairs == -5).all(axis=1)
            assert invalid.any() and (np.abs(pairs[~invalid]) <= 1).all()
            frames = sorted((root / "cropped_aligned" / ef.stem).glob("*.jpg"))
            assert [f.name for f in frames] == [f"{i:05d}.jpg" for i in range(1, TINY.affwild2_frames + 1)]
            with Image.open(frames[0]) as im:
                assert im.size == (112, 112)


def test_ground_truth_helper(tiny):
    frames = syn.ground_truth(tiny / "affwild2", frames=True)
    assert {"video", "frame", "expression", "valence", "arousal", "occluded"} <= set(frames.columns)
    with pytest.raises(FileNotFoundError, match="generate"):
        syn.ground_truth(tiny / "missing")


def test_smoke_profile_sizes_are_used():
    cfg = get_profile("smoke").data
    assert syn.marker_for("afew", cfg, 0)["config"] == {
        "n_afew_per_class": cfg.n_afew_per_class,
        "video_frames": cfg.video_frames,
        "video_size": list(cfg.video_size),
    }


# ----------------------------------------------------------------------------------- recoverability
def _features(images: list[np.ndarray], colour: bool) -> np.ndarray:
    """HOG of the 48x48 grey image, plus an 8x8 colour thumbnail (skin tone) when ``colour``."""
    from skimage.feature import hog

    out = []
    for im in images:
        pil = Image.fromarray(im)
        f = [
            hog(
                np.asarray(pil.convert("L").resize((48, 48)), float),
                pixels_per_cell=(8, 8),
                cells_per_block=(2, 2),
            )
        ]
        if colour:
            f.append(np.asarray(pil.convert("RGB").resize((8, 8), Image.BOX), float).ravel() / 255)
        out.append(np.concatenate(f))
    return np.stack(out)


def _fit_score(x: np.ndarray, y: np.ndarray, n_train: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    clf.fit(x[:n_train], y[:n_train])
    return float((clf.predict(x[n_train:]) == y[n_train:]).mean())


@pytest.mark.slow
def test_labels_are_recoverable_from_pixels(tmp_path):
    cfg = DataConfig(n_utkface=500, chip_size=64, n_fer2013_per_class=40, num_workers=0)
    syn.generate(tmp_path, cfg, seed=3, datasets=("utkface", "fer2013"), progress=False)
    utk = pd.read_csv(tmp_path / "utkface" / "ground_truth.csv")
    x = _features([np.asarray(Image.open(tmp_path / "utkface" / f)) for f in utk["file"]], colour=True)
    n_train = 380
    gender = _fit_score(x, utk["gender"].to_numpy(), n_train)
    race = _fit_score(x, utk["race"].to_numpy(), n_train)
    majority = utk["race"][n_train:].value_counts(normalize=True).max()
    fer = pd.read_csv(tmp_path / "fer2013" / "ground_truth.csv")
    xf = _features([np.asarray(Image.open(tmp_path / "fer2013" / f)) for f in fer["file"]], colour=False)
    train = (fer["split"] == "train").to_numpy()
    order = np.concatenate([np.flatnonzero(train), np.flatnonzero(~train)])
    expr = _fit_score(xf[order], fer["expression"].to_numpy()[order], int(train.sum()))
    print(
        f"recoverability: gender {gender:.3f}, race {race:.3f} (majority {majority:.3f}), "
        f"expression {expr:.3f} (7 classes)"
    )
    assert gender > 0.75
    assert race > majority + 0.15
    assert expr > 0.5  # chance is 1/7


# ----------------------------------------------------------------------------------------- detection
def _iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def detection_rate(n: int = 30, seed: int = 11) -> dict[str, float]:
    """Share of rendered faces found by MTCNN (IoU > 0.3 with the generator's face box)."""
    import torch
    from facenet_pytorch import MTCNN

    torch.set_num_threads(1)
    mtcnn = MTCNN(keep_all=True, min_face_size=20, device="cpu")
    rng = np.random.default_rng(seed)
    hits = {"frame": [], "chip": []}
    for i in range(n):
        ident = Identity.sample(10_000 + i)
        look = Look.sample(rng, ident.base_age, i % 8, float(rng.uniform(0.3, 1.0)))
        nz = Nuisance.sample(rng, occlusion_p=0.0)
        for kind in hits:
            if kind == "frame":  # face 60-120 px tall in a 320x240 frame
                scale = rng.uniform(60, 120) / 1.33
                person = Person(ident, look, rng.uniform(0.3, 0.7) * 320, rng.uniform(0.35, 0.5) * 240, scale)
                img, infos = render_scene([person], (320, 240), rng, nuisance=nz)
                info = infos[0]
            else:
                img, info = render_chip(ident, look, 160, rng, nz, "tight")
            x, y, w, h = info.box
            boxes, _ = mtcnn.detect(Image.fromarray(img))
            best = (
                max((_iou((x, y, x + w, y + h), b) for b in boxes), default=0.0) if boxes is not None else 0.0
            )
            hits[kind].append(best > 0.3)
    return {k: float(np.mean(v)) for k, v in hits.items()}


def test_mtcnn_detects_rendered_faces():
    rates = detection_rate()
    print(f"MTCNN detection rate: {rates}")
    assert rates["frame"] >= 0.9 and rates["chip"] >= 0.9
