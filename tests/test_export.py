"""ONNX export (issue 7 item 5): parity with PyTorch, dynamic batch, metadata, predict with onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fer_lib import cli
from fer_lib.export import ONNX_META_KEY, export_onnx
from fer_lib.models import MultiTaskNet, save_checkpoint
from fer_lib.serving import Recognizer

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
skimage_data = pytest.importorskip("skimage.data")


pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALL_HEADS = {"expression": 8, "va": 2, "age": 100, "gender": 1, "race": 5}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(1)
    tmp = tmp_path_factory.mktemp("onnx")
    ckpt = save_checkpoint(tmp / "model.pt", MultiTaskNet("tiny_cnn", ALL_HEADS, verbose=False))
    report = export_onnx(ckpt, tmp / "model.onnx")
    return ckpt, tmp / "model.onnx", report


def test_onnx_parity_names_and_metadata(exported):
    ckpt, path, report = exported
    assert report.outputs == list(ALL_HEADS)
    assert set(report.max_abs_diff) == {"random", "real"} and report.worst < 1e-4
    proto = onnx.load(str(path))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}[ONNX_META_KEY])
    assert (
        meta["tasks"] == ALL_HEADS
        and meta["preprocess"]["input_size"] == 32
        and meta["preprocess"]["margin"] == 0
    )
    assert meta["label_orders"]["expression"][0] == "Neutral"
    # dynamic batch: any batch size runs and matches PyTorch
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = Recognizer(ckpt)._backend.model.float()
    x = np.random.default_rng(3).standard_normal((7, 3, 32, 32)).astype(np.float32)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))
    with torch.inference_mode():
        ref = model(torch.from_numpy(x))
    assert got["gender"].shape == (7,) and got["age"].shape == (7, 100)
    for k in ALL_HEADS:
        assert np.abs(got[k] - ref[k].numpy()).max() < 1e-4, k


def test_parity_is_asserted(exported, tmp_path):
    ckpt, _, _ = exported
    with pytest.raises(ValueError, match="differ from PyTorch"):
        export_onnx(ckpt, tmp_path / "m.onnx", tol=-1.0)  # no difference is below a negative tolerance


def test_predict_with_onnx_matches_torch(exported, tmp_path, no_network, capsys):
    ckpt, path, _ = exported
    img = tmp_path / "astronaut.jpg"
    Image.fromarray(skimage_data.astronaut()).save(img)
    outs = {}
    for name, model in (("torch", ckpt), ("onnx", path)):
        out = tmp_path / f"{name}.csv"
        assert (
            cli.main(["predict", str(img), "--checkpoint", str(model), "--out", str(out), "--no-progress"])
            == 0
        )
        outs[name] = pd.read_csv(out)
    assert "backend='onnx'" in capsys.readouterr().err
    a, b = outs["torch"], outs["onnx"]
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 1
    num = [c for c in a.columns if a[c].dtype.kind == "f"]
    assert np.abs(a[num].to_numpy() - b[num].to_numpy()).max() < 1e-4
    assert (
        a[["expression", "gender", "ethnicity"]].to_numpy()
        == b[["expression", "gender", "ethnicity"]].to_numpy()
    ).all()


@pytest.mark.slow
def test_export_cli_timm_backbone(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "mnv2.pt", MultiTaskNet("mobilenetv2_050", {"expression": 8, "va": 2}, verbose=False)
    )
    out = tmp_path / "mnv2.onnx"
    assert cli.main(["export", str(ckpt), "--out", str(out), "--image-size", "96"]) == 0
    text = capsys.readouterr().out
    assert "max abs diff vs PyTorch" in text and "[batch, 3, 96, 96]" in text
    rec = Recognizer(out)
    assert rec.backend_name == "onnx" and rec.image_size == 96
    crops = [skimage_data.astronaut()[62:172, 181:268]] * 3
    torch_rec = Recognizer(ckpt)
    torch_rec.preprocess = torch_rec._backend.preprocess = rec.preprocess  # the exported input size
    p_onnx, p_torch = rec.infer(crops), torch_rec.infer(crops)
    assert np.abs(p_onnx["expression_probs"] - p_torch["expression_probs"]).max() < 1e-4
    assert np.abs(p_onnx["valence"] - p_torch["valence"]).max() < 1e-4


def test_onnx_backend_from_a_pt_checkpoint_exports_on_load(exported):
    ckpt, _, _ = exported
    rec = Recognizer(ckpt, backend="onnx")
    assert rec.backend_name == "onnx" and "exported to ONNX" in rec.source
    crops = [skimage_data.astronaut()[62:172, 181:268], skimage_data.astronaut()[:100, :150]]
    a, b = rec.infer(crops), Recognizer(ckpt).infer(crops)
    assert a.keys() == b.keys()
    for k in a:
        assert np.abs(a[k] - b[k]).max() < 1e-4, k


def test_the_stored_age_readout_is_served_by_torch_and_onnx(tmp_path):
    """A checkpoint's age_mode travels with it: Recognizer (PyTorch and ONNX) reads ages as it says."""
    from fer_lib.models import predict_age

    torch.manual_seed(2)
    net = MultiTaskNet("tiny_cnn", {"age": 100, "gender": 1}, age_mode="median", verbose=False)
    with torch.no_grad():
        net.heads["age"].bias.copy_(torch.randn(100) * 3)  # an uneven distribution: readouts differ
    ckpt = save_checkpoint(tmp_path / "median.pt", net)
    export_onnx(ckpt, tmp_path / "median.onnx")
    crops = [skimage_data.astronaut()[62:172, 181:268], skimage_data.astronaut()[:100, :150]]
    rec = Recognizer(ckpt)
    logits = torch.from_numpy(rec.raw(rec.preprocess.batch(crops))["age"])
    want = predict_age(logits, "median").numpy()
    assert not np.allclose(want, predict_age(logits, "bins").numpy())
    for served in (rec, Recognizer(tmp_path / "median.onnx")):
        assert served.age_mode == "median"
        np.testing.assert_array_equal(served.infer(crops)["age"], want)


def test_a_model_reading_grey_and_mirrored_views_exports_with_a_dynamic_batch(tmp_path):
    """The eval-time views (grey heads, mirror) run in one batch inside the graph: ONNX keeps its batch
    dimension dynamic and matches PyTorch at another batch size than the export's."""
    torch.manual_seed(3)
    net = MultiTaskNet(
        "tiny_cnn",
        {"age": 100, "gender": 1, "race": 5},
        grey_heads=("age", "gender"),
        mirror=True,
        verbose=False,
    )
    ckpt = save_checkpoint(tmp_path / "views.pt", net)
    assert export_onnx(ckpt, tmp_path / "views.onnx").worst < 1e-4
    sess = ort.InferenceSession(str(tmp_path / "views.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(4).standard_normal((5, 3, 32, 32)).astype(np.float32)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))
    with torch.inference_mode():
        ref = net.eval()(torch.from_numpy(x))
        mirrored = net(torch.from_numpy(x[..., ::-1].copy()))
    for k in ref:
        assert got[k].shape[0] == 5 and np.abs(got[k] - ref[k].numpy()).max() < 1e-4, k
        assert np.abs(mirrored[k].numpy() - got[k]).max() < 1e-4, k  # the mirror image: the same answers
