"""FaceDataset items (labels, masks, crops, image modes) and seeded loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fer_lib.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FaceDataset,
    identity_index,
    load_rgb,
    make_loader,
)
from fer_lib.datasets import finalize_manifest
from fer_lib.preprocess import Preprocess

RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _manifest(rows):
    return finalize_manifest(rows, "test")


@pytest.fixture
def boxed(tmp_path):
    """A grey 100x80 image with a solid (200, 30, 90) box at x 20..60, y 10..40."""
    arr = np.full((80, 100, 3), 50, np.uint8)
    arr[10:40, 20:60] = (200, 30, 90)
    path = tmp_path / "boxed.png"
    Image.fromarray(arr).save(path)
    return path


def test_box_crop_has_the_region_colour(boxed):
    m = _manifest(
        [{"path": str(boxed), "split": "train", "face_x": 20, "face_y": 10, "face_w": 40, "face_h": 30}]
    )
    image, _, _ = FaceDataset(m, 16, **RAW)[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert torch.allclose(image.mean((1, 2)), torch.tensor([200, 30, 90]) / 255.0, atol=1e-6)
    assert torch.allclose(image.amin((1, 2)), image.amax((1, 2)))  # nothing of the grey border
    whole, _, _ = FaceDataset(m.assign(face_x=np.nan), 16, **RAW)[0]  # NaN box: whole image
    assert whole[0].min() == pytest.approx(50 / 255, abs=1e-6)
    wide, _, _ = FaceDataset(m, 16, margin=0.25, **RAW)[0]  # margin brings some border in
    assert wide[0].min() == pytest.approx(50 / 255, abs=1e-6)


def test_imagenet_normalisation(boxed):
    m = _manifest(
        [{"path": str(boxed), "split": "train", "face_x": 20, "face_y": 10, "face_w": 40, "face_h": 30}]
    )
    image, _, _ = FaceDataset(m, 8)[0]
    want = (torch.tensor([200, 30, 90]) / 255.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(image[:, 4, 4], want, atol=1e-5)


def test_labels_and_masks_for_missing_values(boxed):
    m = _manifest(
        [
            {
                "path": str(boxed),
                "split": "train",
                "identity": "bob",
                "age": 31.0,
                "gender": 1.0,
                "race": np.nan,
                "expression": 3.0,
                "valence": np.nan,
                "arousal": -0.5,
            },
            {"path": str(boxed), "split": "train", "identity": "", "age": np.nan, "gender": 0.0, "race": 4.0},
            {"path": str(boxed), "split": "train", "identity": "zed", "valence": 0.25, "arousal": 0.75},
        ]
    )
    ds = FaceDataset(m, 8, identity_index={"alice": 0, "bob": 1})
    _, lab, mask = ds[0]
    assert lab["identity"].item() == 1 and lab["identity"].dtype == torch.int64 and mask["identity"]
    assert lab["age"].item() == 31.0 and lab["age"].dtype == torch.float32 and mask["age"]
    assert lab["gender"].item() == 1 and lab["gender"].dtype == torch.int64
    assert lab["race"].item() == 0 and not mask["race"]
    assert lab["expression"].item() == 3 and mask["expression"]
    assert lab["valence"].item() == 0 and not mask["valence"]
    assert lab["arousal"].item() == -0.5 and mask["arousal"] and lab["arousal"].dtype == torch.float32
    _, lab, mask = ds[1]
    assert not mask["identity"] and not mask["age"] and lab["age"].item() == 0
    assert lab["gender"].item() == 0 and mask["gender"] and lab["race"].item() == 4 and mask["race"]
    assert not mask["expression"] and not mask["valence"]
    _, lab, mask = ds[2]
    assert not mask["identity"]  # identity not in the index
    assert mask["valence"] and lab["valence"].item() == 0.25
    assert all(m.dtype == torch.bool for m in mask.values())
    _, _, mask = FaceDataset(m, 8)[0]  # no identity index: identity masked
    assert not mask["identity"]


def test_collate_batches_dicts(boxed):
    m = _manifest([{"path": str(boxed), "split": "train", "age": a} for a in (1.0, 2.0, np.nan)])
    images, labels, masks = next(iter(make_loader(FaceDataset(m, 8), batch_size=3)))
    assert images.shape == (3, 3, 8, 8)
    assert labels["age"].tolist() == [1.0, 2.0, 0.0] and masks["age"].tolist() == [True, True, False]


def _save(tmp_path, name, image, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return str(path)


def test_image_modes_become_rgb(tmp_path):
    cases = {
        "grey.png": (Image.new("L", (10, 10), 128), (128, 128, 128)),
        "palette.png": (Image.new("RGB", (10, 10), (10, 200, 30)).convert("P"), (10, 200, 30)),
        "rgba.png": (Image.new("RGBA", (10, 10), (250, 40, 20, 255)), (250, 40, 20)),
        "clear.png": (Image.new("RGBA", (10, 10), (250, 40, 20, 0)), (0, 0, 0)),
        "cmyk.jpg": (Image.new("CMYK", (10, 10), (0, 0, 0, 0)), (255, 255, 255)),
        "deep.png": (Image.fromarray(np.full((10, 10), 65535, np.uint16)), (255, 255, 255)),
        "bw.png": (Image.new("1", (10, 10), 1), (255, 255, 255)),
    }
    rows = [{"path": _save(tmp_path, n, im), "split": "test"} for n, (im, _) in cases.items()]
    ds = FaceDataset(_manifest(rows), 4, **RAW)
    for i, (name, (_, colour)) in enumerate(cases.items()):
        image, _, _ = ds[i]
        assert image.shape == (3, 4, 4), name
        assert torch.allclose(image[:, 1, 1] * 255, torch.tensor(colour, dtype=torch.float32), atol=3), name


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red, right half blue as stored
    arr[:, 20:] = (0, 0, 255)
    image = Image.fromarray(arr)
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    path = _save(tmp_path, "rot.jpg", image, exif=exif, quality=95)
    shown = np.asarray(load_rgb(path))
    assert shown.shape == (40, 20, 3)
    assert shown[5, 10, 0] > 200 and shown[35, 10, 2] > 200  # red on top, blue at the bottom


def test_unreadable_image_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(OSError, match="broken.jpg.*validate_images"):
        FaceDataset(_manifest([{"path": str(bad), "split": "train"}]), 8)[0]


def test_augment_shape_and_reproducible(boxed):
    m = _manifest([{"path": str(boxed), "split": "train"}])
    ds = FaceDataset(m, 24, augment="full")
    torch.manual_seed(3)
    a = ds[0][0]
    torch.manual_seed(3)
    b = ds[0][0]
    outs = [ds[0][0] for _ in range(4)]
    assert a.shape == (3, 24, 24) and torch.equal(a, b)
    assert any(not torch.equal(a, o) for o in outs)


def test_zoom_min_frames_faces_tighter(tmp_path):
    # a face whose outer ring (a fifth of the side each way) is red and centre green: the full frame shows
    # the ring over 1 - 0.6^2 = 64 % of the picture; zoom crops down to 30 % of the area show less of it
    arr = np.zeros((50, 50, 3), np.uint8)
    arr[..., 0] = 255
    arr[10:40, 10:40] = (0, 255, 0)
    Image.fromarray(arr).save(tmp_path / "ring.png")
    m = _manifest([{"path": str(tmp_path / "ring.png"), "split": "train"}])

    def red_share(zoom_min):
        ds = FaceDataset(m, 25, augment="full", zoom_min=zoom_min, **RAW)
        torch.manual_seed(0)
        return float(np.mean([(ds[0][0][0] > 0.5).float().mean() for _ in range(40)]))

    assert red_share(1.0) == pytest.approx(0.64, abs=0.05)  # rotation only: the whole frame
    assert red_share(0.3) < red_share(0.8) - 0.05 < red_share(1.0) - 0.05
    with pytest.raises(ValueError, match="zoom_min"):
        FaceDataset(m, 25, augment="full", zoom_min=0.0)


def test_zoom_skip_masks_the_named_labels_on_tight_crops_only(tmp_path):
    # the ring face again: a crop keeping less of the area shows less red, so the masked items must be
    # the ones with the least red; zoom areas drawn in 0.3-1 fall under 0.6 in about half the draws (more
    # than 3/7: wide or tall windows of large areas do not fit and are drawn again)
    arr = np.zeros((50, 50, 3), np.uint8)
    arr[..., 0] = 255
    arr[10:40, 10:40] = (0, 255, 0)
    Image.fromarray(arr).save(tmp_path / "ring.png")
    m = _manifest([{"path": str(tmp_path / "ring.png"), "split": "train", "age": 30.0, "race": 2}])
    ds = FaceDataset(m, 25, augment="full", zoom_min=0.3, zoom_skip=("race",), zoom_skip_below=0.6, **RAW)
    torch.manual_seed(0)
    items, areas = [], []
    for _ in range(200):
        items.append(ds[0])
        areas.append(ds.augment.area)
    red = np.array([float((x[0] > 0.5).float().mean()) for x, _, _ in items])
    kept = np.array([bool(mask["race"]) for _, _, mask in items])
    assert all(bool(mask["age"]) for _, _, mask in items)  # the other labels train on every crop
    assert 0.35 < 1 - kept.mean() < 0.7
    assert np.array_equal(kept, np.array(areas) >= 0.6)
    assert red[~kept].mean() < red[kept].mean() - 0.1
    assert all(int(labels["race"]) == 2 for _, labels, _ in items)  # masked, not changed
    plain = FaceDataset(m, 25, zoom_skip=("race",), zoom_skip_below=0.6, **RAW)  # no zoom: nothing masked
    assert bool(plain[0][2]["race"])
    with pytest.raises(ValueError, match=r"zoom_skip: unknown labels \['ethnicity'\]"):
        FaceDataset(m, 25, augment="full", zoom_skip=("ethnicity",))
    with pytest.raises(ValueError, match="zoom_skip_below"):
        FaceDataset(m, 25, augment="full", zoom_skip=("race",), zoom_skip_below=0.0)


def test_make_loader_seeded_shuffle(boxed):
    m = _manifest([{"path": str(boxed), "split": "train", "age": float(i)} for i in range(12)])
    ds = FaceDataset(m, 4)

    def order(seed):
        return [int(a) for _, lab, _ in make_loader(ds, 4, shuffle=True, seed=seed) for a in lab["age"]]

    assert order(5) == order(5) and sorted(order(5)) == list(range(12))
    assert order(5) != order(6)


def test_identity_index_sorted_and_by_split():
    m = pd.DataFrame(
        {"identity": ["n3", "n1", "", "n2", "n1"], "split": ["train", "train", "train", "test", "train"]}
    )
    assert identity_index(m) == {"n1": 0, "n2": 1, "n3": 2}
    assert identity_index(m, splits=["train"]) == {"n1": 0, "n3": 1}


def test_workers_reproducible_with_augmentation(boxed):
    m = _manifest([{"path": str(boxed), "split": "train", "age": float(i)} for i in range(6)])
    ds = FaceDataset(m, 12, augment="full")

    def run(seed):
        return torch.cat([x for x, _, _ in make_loader(ds, 3, shuffle=True, num_workers=2, seed=seed)])

    a, b = run(11), run(11)
    assert a.shape == (6, 3, 12, 12) and torch.equal(a, b)
    assert not torch.equal(a, run(12))


@pytest.fixture
def noisy(tmp_path):
    """Four random 60x50 JPEGs with a face box each (JPEG: the path that decodes)."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(4):
        path = tmp_path / f"face{k}.jpg"
        Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(path, quality=90)
        rows.append(
            {"path": str(path), "split": "train", "face_x": 5 + k, "face_y": 4, "face_w": 40, "face_h": 36}
        )
    return _manifest(rows)


@pytest.mark.parametrize("augment", ["none", "full", "light"])
def test_decoded_face_cache_is_exact_and_skips_decoding(noisy, augment):
    plain = FaceDataset(noisy, image_size=16, augment=augment, cache_bytes=0)
    cached = FaceDataset(noisy, image_size=16, augment=augment)
    for epoch in range(2):
        for i in range(len(noisy)):
            torch.manual_seed(epoch * 100 + i)
            a = plain[i][0]
            torch.manual_seed(epoch * 100 + i)
            b = cached[i][0]
            assert torch.equal(a, b), (epoch, i)
    assert len(cached._cache) == len(noisy) and not plain._cache
    # later epochs read nothing from disk: they work with the files gone
    for p in noisy.path:
        Path(p).unlink()
    assert cached[0][0].shape == (3, 16, 16)
    with pytest.raises(OSError):
        plain[0]


def test_decoded_face_cache_respects_its_budget(noisy):
    one = 16 * 16 * 3
    ds = FaceDataset(noisy, image_size=16, cache_bytes=2 * one + 1)
    for i in range(len(noisy)):
        ds[i]
    assert len(ds._cache) == 2 and ds._cached == 2 * one


def test_light_augment_flips_shifts_and_erases(noisy):
    plain = FaceDataset(noisy, image_size=16, **RAW)[1][0]
    flips = FaceDataset(noisy, image_size=16, augment="light", shift=0, **RAW)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        x = flips[1][0]
        assert torch.equal(x, plain) or torch.equal(x, plain.flip(-1))
        seen.add(torch.equal(x, plain))
    assert seen == {True, False}
    shifted = FaceDataset(noisy, image_size=16, augment="light", shift=3, **RAW)
    torch.manual_seed(1)
    x = shifted[1][0]
    # a shifted copy of the plain (or mirrored) face: some interior block matches exactly
    assert any(
        torch.equal(x[:, 3:13, 3:13], src[:, 3 + dy : 13 + dy, 3 + dx : 13 + dx])
        for src in (plain, plain.flip(-1))
        for dy in range(-3, 4)
        for dx in range(-3, 4)
    )
    erased = FaceDataset(noisy, image_size=16, augment="light", shift=0, erase=1.0, **RAW)[1][0]
    patch = (erased == 128 / 255).all(0)
    assert patch.sum() == 16 and patch.any(0).sum() == 4
    with pytest.raises(ValueError, match="augment must be one of"):
        FaceDataset(noisy, image_size=16, augment="strong")
    with pytest.raises(ValueError, match="augment must be one of"):
        FaceDataset(noisy, image_size=16, augment=True)  # one explicit mode, no boolean spellings
    with pytest.raises(ValueError, match="with_augment"):
        FaceDataset(noisy, image_size=16, augment="full").with_augment("light")


def test_degrade_blurs_training_faces_to_a_lower_resolution(noisy):
    plain = FaceDataset(noisy, image_size=32, **RAW)[1][0]
    torch.manual_seed(0)
    low = FaceDataset(noisy, image_size=32, degrade=1.0, degrade_min=8, **RAW)
    degraded = torch.stack([low[1][0] for _ in range(6)])
    # shrinking and enlarging removes fine detail: neighbouring pixels differ much less than in the face
    detail = (plain[:, :, 1:] - plain[:, :, :-1]).abs().mean()
    assert ((degraded[..., 1:] - degraded[..., :-1]).abs().mean((1, 2, 3)) < 0.8 * detail).all()
    assert not torch.equal(degraded[0], degraded[1])  # a random side per draw
    assert torch.equal(FaceDataset(noisy, image_size=32, degrade=0.0, **RAW)[1][0], plain)
    # eval views switch it off, train views on; bad values are refused
    assert low.with_augment("none").degrade is None and low.with_augment("none", degrade=0.5).degrade.p == 0.5
    with pytest.raises(ValueError, match="degrade"):
        FaceDataset(noisy, image_size=32, degrade=1.0, degrade_min=64)


def _moments(mask):
    """Centroid (x, y) and orientation in degrees of the pixels of a boolean mask."""
    ys, xs = np.nonzero(mask)
    x, y = xs - xs.mean(), ys - ys.mean()
    return (
        xs.mean(),
        ys.mean(),
        np.degrees(0.5 * np.arctan2(2 * (x * y).mean(), (x * x).mean() - (y * y).mean())),
    )


def test_flip_rotate30_flips_and_rotates_up_to_30_degrees_and_nothing_else(tmp_path):
    # a red bar through the centre (its angle) with a green tag at its left end (which side it is on)
    arr = np.full((48, 48, 3), 50, np.uint8)
    arr[23:26, 10:38] = (220, 20, 20)
    arr[18:22, 10:15] = (20, 220, 20)
    Image.fromarray(arr).save(tmp_path / "bar.png")
    m = _manifest([{"path": str(tmp_path / "bar.png"), "split": "train"}])
    ds = FaceDataset(m, 48, augment="flip_rotate30", **RAW)
    plain = FaceDataset(m, 48, **RAW)[0][0]

    def parts(x):
        img = (x.permute(1, 2, 0).numpy() * 255).round()
        red = (img[..., 0] > 150) & (img[..., 1] < 100)
        green = (img[..., 1] > 150) & (img[..., 0] < 100)
        return _moments(red), _moments(green)[0], red.sum()

    (px, py, pangle), ptag, plen = parts(plain)
    assert abs(pangle) < 1e-6 and ptag < 20
    angles, sides = [], set()
    for seed in range(40):
        torch.manual_seed(seed)
        x = ds[0][0]
        torch.manual_seed(seed)
        assert torch.equal(x, ds[0][0])  # a seeded draw
        (cx, cy, angle), tag, length = parts(x)
        assert abs(cx - px) < 1.0 and abs(cy - py) < 1.0  # no shift
        assert 0.75 * plen < length < 1.3 * plen  # no zoom
        angles.append(angle)
        sides.add(tag < 24)
    assert max(abs(a) for a in angles) <= 31.0
    assert max(angles) > 15 and min(angles) < -15  # both ways, beyond the 'full' mode's 10 degrees
    assert sides == {True, False}  # flipped and not flipped
    # the eval view of the same (shared-cache) dataset is never augmented
    view = ds.with_augment("none")
    assert view.flip_rotate is None and view._cache is ds._cache
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.equal(view[0][0], plain)
    back = FaceDataset(m, 48, **RAW).with_augment("flip_rotate30")
    torch.manual_seed(0)
    assert back.flip_rotate is not None and not torch.equal(back[0][0], plain)


def _tilted_face(tmp_path, tilt=25.0):
    """A 200x200 PNG of an upright face (60x80 skin box, red left eye, blue right eye) turned by ``tilt``
    degrees about a point off the face, and its manifest row (eye centres and upright face box)."""
    up = np.full((200, 200, 3), 50, np.uint8)
    up[60:140, 70:130] = (200, 180, 160)
    up[84:93, 81:90], up[84:93, 111:120] = (255, 0, 0), (0, 0, 255)
    pivot, t = np.array([60.0, 150.0]), np.radians(tilt)
    turn = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])  # PIL's on-screen counter-clockwise
    (lx, ly), (rx, ry), (cx, cy) = (
        pivot + turn @ (np.array(p) - pivot) for p in ((85, 88), (115, 88), (100, 100))
    )
    path = tmp_path / "tilted.png"
    Image.fromarray(up).rotate(tilt, resample=Image.BILINEAR, center=tuple(pivot)).save(path)
    box = {"face_x": cx - 30, "face_y": cy - 40, "face_w": 60.0, "face_h": 80.0}
    eyes = {"eye_left_x": lx, "eye_left_y": ly, "eye_right_x": rx, "eye_right_y": ry}
    return {"path": str(path), "split": "train", **box, **eyes}


def _eye_line(x):
    img = (x.permute(1, 2, 0).numpy() * 255).round()
    red = (img[..., 0] > 150) & (img[..., 1] < 90) & (img[..., 2] < 90)
    blue = (img[..., 2] > 150) & (img[..., 0] < 90) & (img[..., 1] < 90)
    (rx, ry, _), (bx, by, _) = _moments(red), _moments(blue)
    return np.degrees(np.arctan2(by - ry, bx - rx)), img


def test_align_eyes_levels_rows_with_eye_centres_and_counts_the_others(tmp_path):
    row = _tilted_face(tmp_path)
    m = _manifest([row, {k: v for k, v in row.items() if not k.startswith("eye_")}])
    boxed = FaceDataset(m, 64, **RAW)  # default: the box as it is, eye columns ignored
    # tilted 25 degrees; the 60x80 box squeezed to a square shows it at about 19
    assert boxed.unaligned == 0 and _eye_line(boxed[0][0])[0] < -15
    with pytest.warns(UserWarning, match=r"1 of 2 rows have no eye centres"):
        ds = FaceDataset(m, 64, align="eyes", **RAW)
    assert ds.unaligned == 1 and ds.levelled.tolist() == [True, False]
    angle, img = _eye_line(ds[0][0])
    assert abs(angle) < 1.0
    assert ((img[..., 0] > 120) | (img[..., 2] > 120)).mean() > 0.93  # the levelled box holds the face
    assert torch.equal(ds[1][0], boxed[1][0])  # no eye centres: the box crop
    with pytest.raises(ValueError, match="align must be one of"):
        FaceDataset(m, 64, align="landmarks")


def test_affwild2_both_labels_keeps_frames_with_an_expression_and_valence_arousal():
    from fer_lib.datasets import ValidationReport
    from fer_lib.datasets.affwild2 import both_labels

    rows = [  # (expression, valence, arousal), kept?
        (3, 0.2, -0.1, True),
        (-1, 0.5, 0.5, False),  # EXPR -1: invalid frame
        (2, -5, -5, False),  # VA -5: invalid frame
        (np.nan, 0.1, 0.1, False),
        (4, 0.3, np.nan, False),  # arousal missing
        (5, 1.2, 0.0, False),  # valence out of range
        (1, 1.0, -1.0, True),  # the range's ends are valid
        (7, 0.0, 0.0, True),
        (8, 0.0, 0.0, False),  # no such class
        (2.5, 0.0, 0.0, False),
    ]
    df = pd.DataFrame(rows, columns=["expression", "valence", "arousal", "want"])
    df["frame"] = np.arange(1, len(df) + 1)
    df.index = df.index + 100
    report = ValidationReport("affwild2", "root")
    out = both_labels(df, report)
    assert out["frame"].tolist() == df.loc[df["want"], "frame"].tolist() == [1, 7, 8]
    assert out.index.tolist() == [0, 1, 2] and list(out.columns) == list(df.columns)
    assert report.notes == [
        "both_labels kept 3 of 10 frames (left out: 4 without a valid expression, "
        "3 with one but without valid valence/arousal)"
    ]


# ------------------------------------------------------------------------------ photometric augmentation
def test_photometric_grey_is_the_luminance_and_jitter_moves_colour_within_its_bounds():
    from fer_lib.data import _Photometric

    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    grey = _Photometric(grey=1.0)(face)
    expect = np.asarray(Image.fromarray(face).convert("L"), dtype=np.int16)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert np.abs(grey[..., 0].astype(np.int16) - expect).max() <= 1  # PIL's own luma, to rounding
    torch.manual_seed(0)
    jit = _Photometric(jitter=0.4)
    means = [jit(face).astype(float).mean() for _ in range(40)]
    assert np.std(means) > 3  # brightness / contrast move from draw to draw
    assert all(0.5 * face.mean() < m < 1.5 * face.mean() for m in means)  # factors within 1 +- 0.4
    assert np.array_equal(_Photometric(jitter=0.0)(face), face)  # no jitter, no grey: the face itself
    with pytest.raises(ValueError, match="grey must be in"):
        _Photometric(grey=1.5)


def test_photometric_augmentation_is_for_training_views_only(tmp_path):
    path = tmp_path / "f.png"
    Image.fromarray(np.full((32, 32, 3), (200, 40, 40), np.uint8)).save(path)
    df = pd.DataFrame({"path": [str(path)] * 4})
    pre = Preprocess(32)
    train = FaceDataset(df, pre, grey=1.0)
    x = train[0][0]
    assert torch.allclose(x[0] * pre.std[0] + pre.mean[0], x[1] * pre.std[1] + pre.mean[1], atol=1e-5)
    assert FaceDataset(df, pre).photometric is None  # eval view: colour as it is
    assert train.with_augment("none").photometric is None
    assert train.with_augment("light", grey=0.5).photometric.grey == 0.5
