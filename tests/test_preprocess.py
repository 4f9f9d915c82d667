"""One face pipeline: training, predict, video features and ONNX feed a model the same tensor, and a
model is served at the size it was trained at (not its backbone's default)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fer_lib.data import FaceDataset, make_loader
from fer_lib.export import export_onnx
from fer_lib.models import MultiTaskNet, build_model_from_checkpoint, load_checkpoint, save_checkpoint
from fer_lib.preprocess import (
    CONTRAST_TARGET,
    LUMA,
    Preprocess,
    crop_window,
    for_model,
    from_checkpoint,
)
from fer_lib.serving import Recognizer
from fer_lib.video import Sampling, TorchFeatureExtractor, faces_in_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# a box with fractional corners (as MTCNN gives), none on a .5 tie
BOX_XYWH = (10.4, 20.6, 40.3, 40.1)
BOX = np.array([10.4, 20.6, 10.4 + 40.3, 20.6 + 40.1, 0.99], np.float32)


def test_crop_tight_margin_clip_and_resize():
    img = np.arange(100 * 80 * 3, dtype=np.int64).reshape(100, 80, 3).astype(np.uint8)
    box = [10, 20, 50, 60, 0.9]
    tight, wide = Preprocess(16), Preprocess(16, margin=0.25)
    assert np.array_equal(tight.crop(img, box), img[20:60, 10:50])
    assert np.array_equal(wide.crop(img, box), img[10:70, 0:60])  # 10 px on every side
    assert np.array_equal(tight.crop(img, [-30, -30, 20, 20]), img[0:20, 0:20])  # clipped to the image
    assert np.array_equal(tight.crop(img, [10.4, 19.6, 49.7, 60.2]), img[20:60, 10:50])  # rounded
    assert tight.face(img, box).shape == (16, 16, 3) and tight.face(img).shape == (16, 16, 3)
    assert crop_window([10, 20, 50, 60], (80, 100)) == (10, 20, 50, 60)
    with pytest.raises(ValueError, match="outside"):
        tight.crop(img, [200, 200, 220, 220])
    with pytest.raises(ValueError, match="missing"):
        tight.crop(img, [np.nan, 0, 10, 10])


def test_four_margins_frame_each_side_of_the_box_on_its_own():
    img = np.zeros((100, 80, 3), np.uint8)
    box = [10, 20, 50, 60, 0.9]  # 40 x 40
    framed = Preprocess(16, margin=(0.25, -0.1, 0.5, 0.0))  # 10 px left, 4 px in at the top, 20 px right
    assert framed.window(box, (80, 100)) == (0, 24, 70, 60)
    assert framed.crop(img, box).shape == (36, 70, 3)
    assert Preprocess(16, margin=(0.1,) * 4) == Preprocess(16, margin=0.1)  # one number for four equal ones
    assert Preprocess(16, margin=(0.1,) * 4).margin == 0.1  # and stored as it
    assert Preprocess.from_dict(framed.to_dict()) == framed and framed.margin == (0.25, -0.1, 0.5, 0.0)
    assert framed.key != Preprocess(16, margin=0.25).key and "0.25,-0.1,0.5,0" in framed.key
    with pytest.raises(ValueError, match="four"):
        Preprocess(16, margin=(0.1, 0.2))


def test_contrast_standardise_takes_exposure_and_contrast_out_of_a_face():
    rng = np.random.default_rng(3)
    face = rng.integers(60, 200, (3, 16, 16, 3)).astype(np.uint8)
    dim_flat = (face.astype(np.float32) * 0.4 + 20).round().astype(np.uint8)  # a darker, flatter copy
    plain, std = Preprocess(16), Preprocess(16, contrast="standardise")
    assert np.abs(plain.normalise(face) - plain.normalise(dim_flat)).mean() > 0.5
    assert np.abs(std.normalise(face) - std.normalise(dim_flat)).max() < 0.06  # uint8 rounding only
    # every face comes out with the target luma mean and spread, whatever it went in with
    pixels = std.normalise(dim_flat).transpose(0, 2, 3, 1) * np.array(std.std) + np.array(std.mean)
    luma = np.einsum("nhwc,c->nhw", pixels * 255, LUMA)
    np.testing.assert_allclose(luma.mean(axis=(1, 2)), CONTRAST_TARGET[0], atol=1e-3)
    np.testing.assert_allclose(luma.std(axis=(1, 2)), CONTRAST_TARGET[1], rtol=1e-4)
    flat = np.full((1, 16, 16, 3), 90, np.uint8)  # no contrast to stretch: not divided by zero
    assert np.isfinite(std.normalise(flat)).all()
    np.testing.assert_allclose(std.normalise_torch(face).numpy(), std.normalise(face), atol=1e-5)
    assert std.key != plain.key and Preprocess.from_dict(std.to_dict()) == std
    with pytest.raises(ValueError, match="contrast"):
        Preprocess(16, contrast="equalise")


def test_plain_values_round_trip_and_bad_values():
    pre = Preprocess(96, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), margin=0.1)
    assert Preprocess.from_dict(pre.to_dict()) == pre
    assert pre.replace(input_size=64).input_size == 64 and pre.input_size == 96
    with pytest.raises(ValueError, match="unknown preprocessing key"):
        Preprocess.from_dict({**pre.to_dict(), "interpolation": "bicubic"})
    with pytest.raises(ValueError, match="unsupported"):
        Preprocess(96, colour="bgr")


def test_max_side_brings_sharp_and_low_resolution_copies_of_a_face_together():
    rng = np.random.default_rng(0)
    sharp = np.asarray(
        Image.fromarray(rng.integers(0, 256, (25, 25, 3), dtype=np.uint8)).resize((200, 200), Image.BICUBIC)
    )
    sharp = np.clip(sharp.astype(int) + rng.integers(-40, 41, sharp.shape), 0, 255).astype(np.uint8)
    low = np.asarray(Image.fromarray(sharp).resize((64, 64), Image.BILINEAR))  # UTKFace's 64 px copies
    capped, plain = Preprocess(112, max_side=64), Preprocess(112)
    assert capped.limit(sharp).shape == (64, 64, 3) and capped.limit(low) is low
    assert capped.limit(Image.fromarray(sharp[:, :100])).size == (32, 64)  # aspect kept, PIL in, PIL out
    gap = lambda pre: np.abs(pre.face(sharp).astype(int) - pre.face(low).astype(int)).mean()  # noqa: E731
    assert gap(capped) == 0  # the 200 px face reaches the network exactly as its 64 px copy
    assert gap(plain) > 5  # without the limit its fine detail tells the two apart
    assert capped.key != plain.key and Preprocess.from_dict(capped.to_dict()) == capped
    with pytest.raises(ValueError, match="max_side"):
        Preprocess(112, max_side=4)


def test_jpeg_quality_gives_a_smooth_face_the_compression_of_utkface_64px_copies():
    """UTKFace's 64 px part is stored as quality-75 JPEGs: shrinking its 200 px part to 64 px leaves it
    smooth, unless every face is stored the same way after the shrink."""
    import io

    def jpeg(img, q=75):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    rng = np.random.default_rng(1)
    sharp = np.asarray(
        Image.fromarray(rng.integers(0, 256, (25, 25, 3), dtype=np.uint8)).resize((200, 200), Image.BICUBIC)
    )
    sharp = np.clip(sharp.astype(int) + rng.integers(-40, 41, sharp.shape), 0, 255).astype(np.uint8)
    shrunk = Image.fromarray(sharp).resize((64, 64), Image.BILINEAR)
    stored = np.asarray(jpeg(shrunk))  # what UTKFace's 64 px part holds
    pre, capped = Preprocess(112, max_side=64, jpeg_quality=75), Preprocess(112, max_side=64)
    assert np.array_equal(pre.limit(sharp), stored)  # shrink, then the JPEG round trip
    assert pre.limit(Image.fromarray(sharp)).size == (64, 64)  # PIL in, PIL out
    small = np.asarray(Image.fromarray(sharp).resize((48, 48), Image.BILINEAR))  # not shrunk, still stored
    assert np.array_equal(pre.limit(small), np.asarray(jpeg(Image.fromarray(small))))
    gap = lambda p: np.abs(p.face(sharp).astype(int) - p.face(stored).astype(int)).mean()  # noqa: E731
    assert gap(pre) < 0.5 * gap(capped)  # the smooth face reaches the network as its stored copy does
    assert gap(capped) > 1
    assert pre.key != capped.key and Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="jpeg_quality"):
        Preprocess(112, jpeg_quality=0)


def test_checkpoints_without_a_stored_preprocess_use_the_size_they_were_trained_at():
    old = {
        "model_config": {"backbone": "tiny_cnn", "input_size": 32, "mean": [0.5] * 3, "std": [0.2] * 3},
        "config": {"train": {"image_size": 40}},
    }
    assert from_checkpoint(old) == Preprocess(40, (0.5,) * 3, (0.2,) * 3)
    new = {**old, "model_config": {**old["model_config"], "preprocess": Preprocess(56, margin=0.1).to_dict()}}
    assert from_checkpoint(new) == Preprocess(56, margin=0.1)
    with pytest.raises(ValueError, match="no input size"):
        from_checkpoint({"model_config": {}})


def test_normalise_numpy_and_torch_give_the_same_bits():
    pre = Preprocess(8, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    faces = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    a = pre.normalise(faces)
    b = pre.normalise_torch(faces).numpy()
    assert a.shape == (3, 3, 8, 8) and np.array_equal(a, b)
    ref = (faces / 255.0 - np.array(pre.mean)) / np.array(pre.std)
    np.testing.assert_allclose(a, ref.transpose(0, 3, 1, 2), atol=1e-5)


def _image_file(tmp_path) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    path = tmp_path / "face.png"
    Image.fromarray(arr).save(path)
    return str(path), arr


class _OneBox:
    def detect_batch(self, frames):
        return [BOX[None].copy() for _ in frames]


def _capture(module: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone().contiguous()))
    return seen


class _SessionSpy:
    """Records what the ONNX backend feeds onnxruntime."""

    def __init__(self, session):
        self.session, self.seen = session, []

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, names, feed):
        self.seen.append(next(iter(feed.values())).copy())
        return self.session.run(names, feed)


# 24: the 40 px face is shrunk before the resize; standardise: each face's contrast set (numpy in training,
# torch in predict: the same formula, equal to float rounding)
@pytest.mark.parametrize("max_side, contrast", [(None, "none"), (24, "none"), (None, "standardise")])
def test_training_predict_video_and_onnx_feed_the_same_tensor(tmp_path, max_side, contrast):
    path, arr = _image_file(tmp_path)
    torch.manual_seed(0)
    model = MultiTaskNet(
        "tiny_cnn", {"expression": 8}, verbose=False, input_size=48
    )  # tiny_cnn's default: 32
    model.preprocess = model.preprocess.replace(max_side=max_side, contrast=contrast)
    assert model.preprocess.input_size == 48 and model.config()["preprocess"]["input_size"] == 48
    assert model.config()["preprocess"]["max_side"] == max_side
    ckpt = save_checkpoint(tmp_path / "m.pt", model)

    # training: the manifest's face box through FaceDataset
    x, y, w, h = BOX_XYWH
    manifest = pd.DataFrame(
        [{"path": path, "face_x": x, "face_y": y, "face_w": w, "face_h": h, "expression": 1}]
    )
    train_x = FaceDataset(manifest, for_model(model))[0][0]
    assert train_x.shape == (3, 48, 48)

    # predict (torch): a detector box through Recognizer, captured at the backbone's input
    rec = Recognizer(ckpt, detector=_OneBox(), fold_bn=False, channels_last=False)
    seen = _capture(rec._backend.model.backbone)
    rec.predict(path)
    predict_x = seen[-1][0]

    # video: the same frame and box through the video stage's selection, crop and extractor
    ext = TorchFeatureExtractor(build_model_from_checkpoint(ckpt), channels_last=False)
    seen_video = _capture(ext.model.backbone)
    crops, _, _ = faces_in_batch([arr], [0], [BOX[None]], Sampling(min_face=20), ext.preprocess)
    ext.features(crops)
    video_x = seen_video[-1][0]

    # ONNX: the exported file's own metadata drives its preprocessing
    export_onnx(ckpt, tmp_path / "m.onnx")
    onnx_rec = Recognizer(tmp_path / "m.onnx", detector=_OneBox())
    spy = onnx_rec._backend.session = _SessionSpy(onnx_rec._backend.session)
    onnx_rec.predict(path)
    onnx_x = torch.from_numpy(spy.seen[-1][0])

    for name, got in (("predict", predict_x), ("video", video_x), ("onnx", onnx_x)):
        assert got.shape == train_x.shape, name
        same = torch.equal(got, train_x) if contrast == "none" else torch.allclose(got, train_x, atol=1e-5)
        assert same, f"{name} differs from training by {(got - train_x).abs().max()}"


def _learnable_faces(tmp_path, n: int = 48) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Faces whose class is where a bright block sits (4 classes); files of 60-80 px with a box."""
    rng = np.random.default_rng(2)
    rows, crops = [], []
    for i in range(n):
        c = i % 4
        side = int(rng.integers(60, 81))
        img = rng.integers(0, 60, (side + 10, side + 6, 3), dtype=np.uint8)
        half = side // 2
        y0, x0 = 5 + (c // 2) * half, 3 + (c % 2) * half
        img[y0 : y0 + half, x0 : x0 + half] = 230
        p = tmp_path / f"f{i}.png"
        Image.fromarray(img).save(p)
        rows.append(
            {"path": str(p), "face_x": 3, "face_y": 5, "face_w": side, "face_h": side, "expression": c}
        )
        crops.append(img[5 : 5 + side, 3 : 3 + side])
    return pd.DataFrame(rows), crops


@pytest.mark.slow
def test_a_model_trained_off_its_default_size_predicts_as_the_trainer_evaluated(tmp_path):
    from tiny import tiny_config

    from fer_lib.training import Trainer, predict

    df, crops = _learnable_faces(tmp_path)
    torch.manual_seed(0)
    model = MultiTaskNet("tiny_cnn", {"expression": 4}, hidden=16, verbose=False)  # built at 32 px ...
    ds = FaceDataset(df, Preprocess(48, model.mean, model.std))  # ... trained at 48
    cfg = tiny_config(image_size=48, full_epochs=8, scheduler="none", amp=True)
    Trainer(model, cfg, device="cpu", out_dir=tmp_path / "run", progress=False).fit(ds, ds)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert from_checkpoint(ckpt).input_size == 48  # the trainer wrote what it trained with

    trained = build_model_from_checkpoint(ckpt)
    pred = predict(trained, make_loader(ds, batch_size=16), device="cpu", progress=False)
    y = df["expression"].to_numpy()
    acc_trainer = float((pred["expression_pred"] == y).mean())
    assert acc_trainer >= 0.75  # learned (chance 0.25)

    path = tmp_path / "run" / "last.pt"
    export_onnx(path, tmp_path / "m.onnx")
    for rec in (Recognizer(path), Recognizer(tmp_path / "m.onnx")):
        assert rec.image_size == 48
        raw = rec.raw(rec.preprocess.batch(crops))["expression"]
        np.testing.assert_allclose(raw, pred["expression_logits"], atol=1e-4)
        probs = rec.infer(crops)["expression_probs"]
        assert float((probs.argmax(1) == y).mean()) == acc_trainer
    # served at the backbone's default size instead (the bug this guards against), the outputs differ
    wrong = Recognizer(path)
    wrong.preprocess = wrong._backend.preprocess = wrong.preprocess.replace(input_size=32)
    assert (
        np.abs(wrong.raw(wrong.preprocess.batch(crops))["expression"] - pred["expression_logits"]).max()
        > 1e-2
    )


def test_combined_models_each_crop_the_detected_face_with_their_own_frame(tmp_path):
    path, arr = _image_file(tmp_path)
    torch.manual_seed(0)
    files, wanted = [], []
    for name, task, margin in (
        ("attr", {"gender": 2}, 0.0),
        ("expr", {"expression": 8}, (0.25, 0.1, 0.25, 0.2)),
    ):
        model = MultiTaskNet("tiny_cnn", task, verbose=False, input_size=32)
        model.preprocess = model.preprocess.replace(margin=margin)
        files.append(save_checkpoint(tmp_path / f"{name}.pt", model))
        wanted.append(torch.from_numpy(model.preprocess.normalise(model.preprocess.face(arr, BOX)[None]))[0])
    assert not torch.equal(wanted[0], wanted[1])  # the two frames differ
    rec = Recognizer(files, detector=_OneBox(), fold_bn=False, channels_last=False)
    seen = [_capture(b.model.backbone) for b in rec._backends]
    (face,) = rec.predict(path)
    assert face.gender is not None and face.expression is not None
    for got, want in zip(seen, wanted):
        assert torch.equal(got[-1][0], want)
