"""HSEmotion checkpoint import (issue 7 item 4): trust flag, conversion, import-convert-evaluate round trip.

The test files are made the way the public HSEmotion ``.pt`` files were: ``torch.save`` of a whole timm
model whose classifier was replaced (8 classes; 10 outputs = 8 + valence/arousal for ``_mtl``; 7 classes
without Contempt), with the classes in HSEmotion's alphabetical order.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from fer_lib import cli, labels
from fer_lib.interop import UntrustedPickleError, convert_timm_model, import_hsemotion
from fer_lib.models import load_checkpoint
from fer_lib.serving import Recognizer
from fer_lib.video import TorchFeatureExtractor

skimage_data = pytest.importorskip("skimage.data")


pytestmark = pytest.mark.usefixtures("one_torch_thread")
ARCH = "mobilenetv2_050"


def hsemotion_like(n_out: int, sequential: bool, seed: int = 0):
    torch.manual_seed(seed)
    m = timm.create_model(ARCH, pretrained=False)
    if sequential:  # the HSEmotion training notebooks: model.classifier = nn.Sequential(nn.Linear(...))
        m.classifier = torch.nn.Sequential(torch.nn.Linear(m.num_features, n_out))
    else:
        m.reset_classifier(n_out)
    with torch.no_grad():  # make the classes clearly different, so a wrong row order cannot pass
        m.get_classifier().weight.normal_(0, 0.5) if not sequential else m.classifier[0].weight.normal_(
            0, 0.5
        )
    return m.eval()


def faces(n: int = 5) -> list[np.ndarray]:
    img = skimage_data.astronaut()
    rng = np.random.default_rng(0)
    return [
        img[y : y + h, x : x + w]
        for x, y, w, h in rng.integers([100, 20, 60, 60], [250, 120, 180, 180], (n, 4))
    ]


def hsemotion_reference(model, crops, size: int):
    """The public hsemotion package's path: one face at a time, PIL resize + ToTensor + Normalize."""
    from torchvision import transforms

    tf = transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    out = []
    with torch.no_grad():
        for c in crops:
            out.append(model(tf(Image.fromarray(c)).unsqueeze(0))[0].numpy())
    return np.stack(out)


@pytest.mark.parametrize("n_out, sequential", [(8, False), (10, True), (7, True)])
def test_import_convert_evaluate_round_trip(n_out, sequential, tmp_path, capsys, no_network):
    original = hsemotion_like(n_out, sequential)
    src, dst = tmp_path / "enet_like.pt", tmp_path / "converted.pt"
    torch.save(original, src)
    assert cli.main(["import-hsemotion", str(src), "--out", str(dst), "--trust"]) == 0
    text = capsys.readouterr().out
    assert "max abs diff" in text and "reordered" in text

    ckpt = load_checkpoint(dst)  # weights-only: no pickle code
    n_expr = 7 if n_out in (7, 9) else 8
    assert ckpt["label_orders"]["expression"] == list(labels.EXPRESSIONS_8[:n_expr])
    assert ckpt["model_config"]["tasks"] == {"expression": n_expr, **({"va": 2} if n_out > 8 else {})}
    assert ckpt["extra"]["max_abs_diff_vs_original"] < 1e-4 * max(1.0, ckpt["extra"]["output_scale"])

    # evaluate: the converted model's predictions equal the original's, reordered to canonical
    crops = faces()
    rec = Recognizer(dst)
    ours = rec.infer(crops)
    logits = hsemotion_reference(original, crops, rec.image_size)
    order = labels.HSEMOTION_ORDER_8 if n_expr == 8 else labels.HSEMOTION_ORDER_7
    expected = labels.reorder_columns(torch.softmax(torch.from_numpy(logits[:, :n_expr]), 1).numpy(), order)
    assert np.abs(ours["expression_probs"] - expected).max() < 1e-5
    # ... which is not the same as leaving the rows in HSEmotion's order
    assert (
        np.abs(
            ours["expression_probs"] - torch.softmax(torch.from_numpy(logits[:, :n_expr]), 1).numpy()
        ).max()
        > 1e-3
    )
    original_pred = [order[i] for i in logits[:, :n_expr].argmax(1)]
    ours_pred = [labels.EXPRESSIONS_8[i] for i in ours["expression_probs"].argmax(1)]
    assert [
        labels.canonical_expression(p) for p in original_pred
    ] == ours_pred  # accuracy 1.0 vs the original
    if n_out > 8:
        assert np.abs(ours["valence"] - logits[:, n_expr]).max() < 1e-4
        assert np.abs(ours["arousal"] - logits[:, n_expr + 1]).max() < 1e-4

    # video features: the converted checkpoint gives the original network's penultimate features
    ext = TorchFeatureExtractor(rec._backend.model, rec.preprocess, channels_last=False)
    feats, _ = ext.features(crops)
    x = ext.to_input(crops)
    with torch.no_grad():
        ref_feats = original.forward_head(original.forward_features(x), pre_logits=True).numpy()
    assert np.abs(feats - ref_feats).max() < 1e-4


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: proof of code execution if the marker appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_import_refuses_without_trust_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "enet_b0_8_best_afew.pt"
    torch.save({"model": _Payload(marker)}, evil)
    with pytest.raises(UntrustedPickleError, match="--trust"):
        import_hsemotion(evil, tmp_path / "out.pt")
    assert cli.main(["import-hsemotion", str(evil), "--out", str(tmp_path / "out.pt")]) == 3
    err = capsys.readouterr().err
    assert "pickled" in err and "--trust" in err and "code" in err
    assert not marker.exists() and not (tmp_path / "out.pt").exists()
    # sanity: the payload does run when the file is unpickled the unsafe way
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_architecture_found_by_tensor_shapes_and_bad_layouts_refused():
    model = hsemotion_like(8, sequential=True)
    model.pretrained_cfg = {}  # an old pickle without timm's architecture name
    net, report = convert_timm_model(model)
    assert report.architecture == ARCH and report.max_abs_diff < 1e-4 * max(1.0, report.output_scale)
    with pytest.raises(ValueError, match="5 outputs"):
        convert_timm_model(hsemotion_like(5, sequential=False))
