"""Recognizer and ``python -m fer_lib predict`` (issue 7 item 3): images, folders, videos, overlays; every
model kind a checkpoint holds (MultiTaskNet, Emotion-GCN) and the crops mode."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fer_lib import cli, labels
from fer_lib.models import MultiTaskNet, load_checkpoint, save_checkpoint
from fer_lib.serving import NoCheckpointError, Recognizer, default_checkpoint, predict_path

skimage_data = pytest.importorskip("skimage.data")


pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALL_HEADS = {"expression": 8, "va": 2, "age": 100, "gender": 1, "race": 5}
# MTCNN's box of the astronaut's face in skimage.data.astronaut() (512 x 512).
ASTRONAUT_BOX = (181.0, 62.0, 268.0, 172.0)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = MultiTaskNet("tiny_cnn", ALL_HEADS, verbose=False)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model)
    return path


@pytest.fixture(scope="module")
def rec(ckpt):
    return Recognizer(ckpt)


@pytest.fixture(scope="module")
def astronaut_jpg(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "astronaut.jpg"
    Image.fromarray(skimage_data.astronaut()).save(path, quality=95)
    return path


def _expr_cols(df):
    return [c for c in df.columns if c.startswith("expr_")]


def test_predict_cli_astronaut_one_face(ckpt, astronaut_jpg, tmp_path, no_network, capsys):
    out, overlay = tmp_path / "preds.csv", tmp_path / "overlay.png"
    rc = cli.main(
        [
            "predict",
            str(astronaut_jpg),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(out),
            "--overlay",
            str(overlay),
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    df = pd.read_csv(out)
    assert len(df) == 1
    row = df.iloc[0]
    assert _expr_cols(df) == [f"expr_{n}" for n in labels.EXPRESSIONS_8]
    assert row[_expr_cols(df)].sum() == pytest.approx(1.0, abs=1e-5)
    assert row["expression"] == labels.EXPRESSIONS_8[int(np.argmax(row[_expr_cols(df)].to_numpy()))]
    assert np.allclose(row[["x1", "y1", "x2", "y2"]].to_numpy(float), ASTRONAUT_BOX, atol=8)
    assert row["det_prob"] > 0.99
    assert {"valence", "arousal", "age", "gender", "p_female", "ethnicity"} <= set(df.columns)
    assert row["gender"] in ("Male", "Female") and 0 <= row["age"] <= 99
    assert row[[f"eth_{n}" for n in labels.ETHNICITIES]].sum() == pytest.approx(1.0, abs=1e-5)
    with Image.open(overlay) as im:
        assert im.size == (512, 512)
    assert "1 face(s)" in capsys.readouterr().out


def test_predict_api_batch_and_inputs_agree(rec, astronaut_jpg):
    arr = np.asarray(Image.open(astronaut_jpg).convert("RGB"))
    by_path = rec.predict(astronaut_jpg)
    by_pil = rec.predict(Image.open(astronaut_jpg))
    batch = rec.predict_batch([arr, arr[:, ::-1].copy(), np.zeros((64, 64, 3), np.uint8)])
    assert len(by_path) == len(by_pil) == 1 and [len(b) for b in batch] == [1, 1, 0]
    assert by_path[0].expression_probs == pytest.approx(batch[0][0].expression_probs, abs=1e-6)
    assert by_pil[0].box == pytest.approx(by_path[0].box)
    # the mirrored image's face box is the mirror of the original's (within MTCNN's jitter)
    x1, _, x2, _ = batch[1][0].box
    assert abs((512 - x2) - by_path[0].box[0]) < 8 and abs((512 - x1) - by_path[0].box[2]) < 8


def test_fast_path_equals_the_reference_per_face_path(rec):
    """predict_faces (batched numpy preprocessing, channels_last) == one face at a time with
    PIL resize + ToTensor + Normalize in NCHW float32 (the HSEmotion package's way)."""
    from torchvision import transforms

    rng = np.random.default_rng(0)
    img = skimage_data.astronaut()
    crops = [
        img[y : y + h, x : x + w] for x, y, w, h in rng.integers([0, 0, 40, 40], [300, 300, 200, 200], (6, 4))
    ]
    fast = rec.infer(crops)
    tf = transforms.Compose(
        [
            transforms.Resize((rec.image_size, rec.image_size)),
            transforms.ToTensor(),
            transforms.Normalize(rec.preprocess.mean, rec.preprocess.std),
        ]
    )
    model = rec._backend.model
    ref = []
    with torch.no_grad():
        for c in crops:
            x = tf(Image.fromarray(c)).unsqueeze(0).contiguous()
            ref.append(torch.softmax(model(x)["expression"], 1)[0].numpy())
    assert np.abs(fast["expression_probs"] - np.stack(ref)).max() < 1e-5
    assert fast["expression_probs"].sum(1) == pytest.approx(np.ones(6), abs=1e-5)


def astronaut_crops(n: int, seed: int) -> list[np.ndarray]:
    """``n`` crops of 40-200 px at random places of scikit-image's astronaut."""
    rng = np.random.default_rng(seed)
    img = skimage_data.astronaut()
    return [
        img[y : y + h, x : x + w] for x, y, w, h in rng.integers([0, 0, 40, 40], [300, 300, 200, 200], (n, 4))
    ]


def test_overlapped_preprocessing_gives_the_same_bits(ckpt):
    """Resizing pass k+1 in a thread while pass k runs changes nothing in the outputs (20 faces, passes of 8)."""
    crops = astronaut_crops(20, seed=1)
    on, off = Recognizer(ckpt, batch_size=8), Recognizer(ckpt, batch_size=8, overlap=False)
    a, b = on.infer(crops), off.infer(crops)
    assert on._pool is not None and off._pool is None  # the threaded path really ran
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert a["expression_probs"].shape == (20, 8)


@pytest.mark.slow
def test_compiled_model_matches_eager_and_compiles_once(ckpt):
    """compile=True: 20 faces in passes of 8 (the last padded) and then 3 faces give eager's outputs
    without compiling a second graph for the shorter passes."""
    crops = astronaut_crops(20, seed=2)
    eager, compiled = Recognizer(ckpt, batch_size=8), Recognizer(ckpt, batch_size=8, compile=True)
    from torch._dynamo.utils import counters

    a = eager.infer(crops)
    graphs = counters["stats"]["unique_graphs"]
    b = compiled.infer(crops)  # compiles at the first pass
    assert counters["stats"]["unique_graphs"] > graphs  # really compiled, not an eager fallback
    with torch._dynamo.config.patch(error_on_recompile=True):
        c = compiled.infer(crops[:3])
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=1e-4, err_msg=k)
        np.testing.assert_allclose(c[k], a[k][:3], atol=1e-4, err_msg=k)
    with pytest.raises(ValueError, match="torch backend"):
        Recognizer(ckpt, backend="onnx", compile=True)


def test_foreign_expression_order_is_reordered_to_canonical(ckpt):
    ck = load_checkpoint(ckpt)
    canonical = Recognizer(ck)
    ck2 = {**ck, "label_orders": {**ck["label_orders"], "expression": list(labels.HSEMOTION_ORDER_8)}}
    foreign = Recognizer(ck2)
    crops = [skimage_data.astronaut()[62:172, 181:268]]
    p_can = canonical.infer(crops)["expression_probs"]
    p_for = foreign.infer(crops)["expression_probs"]
    # the head's column i means HSEMOTION_ORDER_8[i]: it must land in that name's canonical column
    m = labels.mapping_to_canonical(labels.HSEMOTION_ORDER_8)
    assert np.allclose(p_for[0, m], p_can[0])
    assert not np.allclose(p_for, p_can)


def test_folder_with_broken_files_counts_them(rec, tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    img = skimage_data.astronaut()
    Image.fromarray(img).save(root / "a.jpg")
    Image.fromarray(img[:, ::-1]).save(root / "sub" / "b.png")
    (root / "broken.jpg").write_text("<html>not an image</html>")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("ignored: not an image suffix")
    df, summary = predict_path(rec, root, out=tmp_path / "p.csv", overlay=tmp_path / "ov", progress=False)
    assert summary.images == 2 and summary.faces == 2
    assert sorted(f for f, _ in summary.skipped) == ["broken.jpg", "empty.png"]
    assert sorted(df["file"]) == ["a.jpg", "sub/b.png"]
    assert (tmp_path / "ov" / "sub" / "b.png").is_file()
    assert "2 unreadable file(s) skipped" in str(summary)
    assert pd.read_csv(tmp_path / "p.csv").shape == df.shape


def _write_clip(path, n=6, size=256):
    import av

    face = Image.fromarray(skimage_data.astronaut()).resize((size, size), Image.BILINEAR)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = size, size, "yuv420p"
        for i in range(n):
            frame = np.asarray(face.rotate(2 * i))
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_predict_video_rows_have_frame_index(ckpt, tmp_path, capsys):
    from fer_lib.video import iter_frames

    clip = _write_clip(tmp_path / "clip.mp4")
    out, overlay = tmp_path / "v.csv", tmp_path / "v_overlay.mp4"
    rc = cli.main(
        [
            "predict",
            str(clip),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(out),
            "--stride",
            "2",
            "--overlay",
            str(overlay),
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    df = pd.read_csv(out)
    assert list(df["frame"]) == [0, 2, 4] and list(df["face"]) == [0, 0, 0]
    assert df[_expr_cols(df)].sum(axis=1).to_numpy() == pytest.approx(np.ones(3), abs=1e-5)
    assert len(list(iter_frames(overlay))) == 3


def test_missing_default_checkpoint_names_the_command(tmp_results, tmp_path, capsys, monkeypatch):
    # as on a clone without the published models (results/models/; their fallback: test_published_models)
    monkeypatch.setattr("fer_lib.serving.default_model.PUBLISHED_MODELS", ())
    with pytest.raises(NoCheckpointError, match="python -m fer_lib finetune"):
        default_checkpoint()
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    assert cli.main(["predict", str(img), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "02_expression_va/best.pt" in err
    # with a checkpoint where notebook 02 writes it, it is found
    ck = tmp_results / "checkpoints" / "02_expression" / "best.pt"
    save_checkpoint(ck, MultiTaskNet("tiny_cnn", {"expression": 8}, verbose=False))
    assert default_checkpoint() == ck


def test_single_bad_image_is_a_clear_error(ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)  # a JPEG signature, then garbage
    assert cli.main(["predict", str(bad), "--checkpoint", str(ckpt), "--out", str(tmp_path / "p.csv")]) == 2
    assert "bad.jpg" in capsys.readouterr().err


def test_import_fer_lib_stays_light():
    code = (
        "import sys, fer_lib; assert 'torch' not in sys.modules, 'torch imported'; "
        "fer_lib.Recognizer; assert 'torch' not in sys.modules; print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def test_batchnorm_folding_keeps_outputs_and_leaves_the_callers_model_alone():
    import timm

    from fer_lib.interop import convert_timm_model
    from fer_lib.serving.backends import fold_batchnorm

    torch.manual_seed(0)
    net, _ = convert_timm_model(timm.create_model("mobilenetv2_050", num_classes=10).eval())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rec = Recognizer(net)
    assert rec._backend.folded
    assert net.state_dict().keys() == before.keys()  # the caller's model is untouched
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    unfolded = Recognizer(net, fold_bn=False)
    assert not unfolded._backend.folded
    crops = [skimage_data.astronaut()[62:172, 181:268], skimage_data.astronaut()[200:400, 100:250]]
    a, b = rec.infer(crops), unfolded.infer(crops)
    for k in a:
        assert np.abs(a[k] - b[k]).max() < 1e-5 * max(1.0, np.abs(b[k]).max()), k
    assert fold_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4).eval())) == 1
    assert (
        fold_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))) == 0
    )  # training


def test_the_male_threshold_travels_with_the_model_to_predict_and_onnx(tmp_path):
    from fer_lib.export import export_onnx
    from fer_lib.models import build_model_from_checkpoint

    torch.manual_seed(0)
    model = MultiTaskNet("tiny_cnn", {"gender": 1}, verbose=False, male_threshold=0.42)
    path = save_checkpoint(tmp_path / "g.pt", model)
    assert build_model_from_checkpoint(path).male_threshold == 0.42
    export_onnx(path, tmp_path / "g.onnx")
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(32)]
    for rec in (Recognizer(path), Recognizer(tmp_path / "g.onnx")):
        assert rec.male_threshold == 0.42
        faces = rec.predict_faces(crops)
        p_male = np.array([1 - f.p_female for f in faces])
        assert [f.gender for f in faces] == ["Male" if p >= 0.42 else "Female" for p in p_male]
    # a checkpoint without one (older files) keeps paper A's 0.6
    assert (
        Recognizer(
            save_checkpoint(tmp_path / "old.pt", MultiTaskNet("tiny_cnn", {"gender": 1}, verbose=False))
        ).male_threshold
        == 0.6
    )


# --------------------------------------------------------------------------------------- model kinds
def _tiny_gcn_checkpoint(folder):
    """A tiny Emotion-GCN (tiny_cnn backbone, a label graph of random labels) saved as notebook 03 does."""
    from fer_lib.config import GCNConfig
    from fer_lib.models import emotion_gcn as EG

    rng = np.random.default_rng(0)
    e = rng.integers(0, 7, 200)
    va = np.clip(rng.normal(0, 0.5, (200, 2)) + 0.3 * (e[:, None] % 3 - 1), -1, 1)
    graph = EG.label_adjacency(dict(expression=e, valence=va[:, 0], arousal=va[:, 1]))
    torch.manual_seed(0)
    net = EG.GCNNet("tiny_cnn", graph, GCNConfig(hidden=16), input_size=32).eval()
    with torch.no_grad():  # spread the untrained outputs (else ~1e-3) so that a wrong crop or order shows
        net.gcn.layers[-1].weight.mul_(300.0)
    return save_checkpoint(folder / "03_gcn" / "best.pt", net, {"train": {"image_size": 32}})


@pytest.fixture(scope="module")
def gcn_ckpt(tmp_path_factory):
    return _tiny_gcn_checkpoint(tmp_path_factory.mktemp("gcn"))


def test_checkpoints_name_their_model_kind_and_unknown_kinds_list_the_known(ckpt, gcn_ckpt):
    from fer_lib.models import GCNNet, build_model_from_checkpoint, list_model_kinds, model_kind

    assert {"multitask", "emotion_gcn"} <= set(list_model_kinds())
    assert model_kind(load_checkpoint(ckpt)) == "multitask" == load_checkpoint(ckpt)["model_config"]["kind"]
    assert model_kind(load_checkpoint(gcn_ckpt)) == "emotion_gcn"
    assert isinstance(build_model_from_checkpoint(gcn_ckpt), GCNNet)
    old = load_checkpoint(ckpt)  # written before kinds were stored: a MultiTaskNet
    old["model_config"].pop("kind")
    assert isinstance(build_model_from_checkpoint(old), MultiTaskNet)
    odd = {**old, "model_config": {**old["model_config"], "kind": "vit_gcn"}}
    with pytest.raises(ValueError, match="'vit_gcn'.*emotion_gcn, multitask"):
        build_model_from_checkpoint(odd)


def _direct_forward(ckpt_path, image, box):
    """Softmax of the expression logits and the valence / arousal of the rebuilt model (no folding, NCHW)
    on the face of ``box``, preprocessed as the checkpoint says."""
    from fer_lib.models import build_model_from_checkpoint

    model = build_model_from_checkpoint(ckpt_path).eval()
    x = torch.from_numpy(model.preprocess.normalise(model.preprocess.face(image, box)[None]))
    with torch.no_grad():
        out = model(x)
    return torch.softmax(out["expression"], 1)[0].numpy(), out["va"][0].numpy()


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predict_serves_an_emotion_gcn_checkpoint(gcn_ckpt, astronaut_jpg, tmp_path, backend, capsys):
    out = tmp_path / "gcn.csv"
    args = ["predict", str(astronaut_jpg), "--checkpoint", str(gcn_ckpt), "--out", str(out), "--no-progress"]
    assert cli.main([*args, "--backend", backend]) == 0, capsys.readouterr().err
    df = pd.read_csv(out)
    names = list(labels.EXPRESSIONS_7)
    assert list(df.columns) == [
        "file", "face", "x1", "y1", "x2", "y2", "det_prob", "expression",
        *[f"expr_{n}" for n in names], "valence", "arousal",
    ]  # fmt: skip
    assert len(df) == 1
    row = df.iloc[0]
    photo = np.asarray(Image.open(astronaut_jpg).convert("RGB"))  # the decoded JPEG predict saw
    probs, va = _direct_forward(gcn_ckpt, photo, row[["x1", "y1", "x2", "y2"]].to_numpy(float))
    np.testing.assert_allclose(row[[f"expr_{n}" for n in names]].to_numpy(float), probs, atol=1e-5)
    np.testing.assert_allclose(row[["valence", "arousal"]].to_numpy(float), va, atol=1e-4)
    assert row["expression"] == names[int(np.argmax(probs))]


def test_an_emotion_gcn_exports_to_onnx_with_its_heads(gcn_ckpt, tmp_path):
    from fer_lib.export import export_onnx, read_metadata

    report = export_onnx(gcn_ckpt, tmp_path / "gcn.onnx")
    assert report.outputs == ["expression", "va"] and report.worst < 1e-4
    onnx_rec = Recognizer(tmp_path / "gcn.onnx")
    assert read_metadata(onnx_rec._backend.session)["kind"] == "emotion_gcn"
    assert onnx_rec.tasks == {"expression": 7, "va": 2}
    assert onnx_rec.expression_names == list(labels.EXPRESSIONS_7)


def test_the_video_features_come_from_an_emotion_gcn_too(gcn_ckpt):
    from fer_lib import config
    from fer_lib.stages.video import make_extractor

    ext = make_extractor(gcn_ckpt, config.get_profile("smoke"), device="cpu")
    assert ext.class_names == list(labels.EXPRESSIONS_7)


# ---------------------------------------------------------------------------------------- crops mode
@pytest.fixture(scope="module")
def face_crop_48(tmp_path_factory):
    """A tight 48 x 48 crop of the astronaut's face (the inner 80 % of MTCNN's box), like FER2013's: MTCNN
    finds no face in it."""
    x1, y1, x2, y2 = (int(v) for v in ASTRONAUT_BOX)
    dx, dy = (x2 - x1) // 10, (y2 - y1) // 10
    face = Image.fromarray(skimage_data.astronaut()[y1 + dy : y2 - dy, x1 + dx : x2 - dx]).resize((48, 48))
    path = tmp_path_factory.mktemp("crop") / "face48.png"
    face.save(path)
    return path


def test_crops_mode_takes_each_image_as_one_face(ckpt, face_crop_48, tmp_path, capsys):
    out = tmp_path / "crops.csv"
    args = ["predict", str(face_crop_48), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]
    assert cli.main(args) == 0
    said = capsys.readouterr().out
    assert "0 face(s)" in said and "--crops" in said  # no face found: the hint names the mode
    assert cli.main([*args, "--crops"]) == 0
    assert "--crops" not in capsys.readouterr().out
    df = pd.read_csv(out)
    assert len(df) == 1 and df.loc[0, ["x1", "y1", "x2", "y2"]].tolist() == [0, 0, 48, 48]
    assert df["det_prob"].isna().all()
    crop = np.asarray(Image.open(face_crop_48).convert("RGB"))
    direct = Recognizer(ckpt).predict_faces([crop])[0]
    np.testing.assert_allclose(
        df.loc[0, [f"expr_{n}" for n in labels.EXPRESSIONS_8]].to_numpy(float),
        [direct.expression_probs[n] for n in labels.EXPRESSIONS_8],
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="crops=True"):
        Recognizer(ckpt, crops=True, detector=object())
