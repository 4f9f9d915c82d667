"""ONNX export of a fer_lib checkpoint, checked against PyTorch.

    python -m fer_lib export results/checkpoints/02_expression_va/best.pt --out model.onnx

The graph takes ``input`` ``[batch, 3, S, S]`` (float32, normalised with the model's mean/std; batch
is dynamic) and has one output per head, named after it (``expression``, ``va``, ``age``, ``gender``,
``race``, ...), with the raw head outputs of :class:`fer_lib.models.MultiTaskNet`. The model's head
sizes, label orders, input size, mean/std and age read-out are stored as JSON in the ONNX
``metadata_props`` (key ``fer_lib``), so :class:`fer_lib.inference.Recognizer` (``backend="onnx"``)
and ``python -m fer_lib predict --checkpoint model.onnx`` produce the same columns as with the
checkpoint.

After writing, the file is run with onnxruntime on a random batch and on a real face (scikit-image's
astronaut, cropped and preprocessed as ``predict`` does; smooth gradients where scikit-image is
absent) and compared with PyTorch: the largest absolute difference over every output is reported and
must stay below ``tol`` (1e-4), else the export fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .inference import ONNX_META_KEY

DEFAULT_OPSET = 17
PARITY_TOL = 1e-4


@dataclass
class ExportReport:
    path: Path
    outputs: list[str]
    image_size: int
    max_abs_diff: dict[str, float] = field(default_factory=dict)   # per input kind: random / real

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values()) if self.max_abs_diff else float("nan")

    def __str__(self) -> str:
        diffs = ", ".join(f"{k} input {v:.2e}" for k, v in self.max_abs_diff.items())
        return (f"wrote {self.path} (outputs {', '.join(self.outputs)}; input [batch, 3, {self.image_size}, "
                f"{self.image_size}]); max abs diff vs PyTorch: {diffs}")


def _heads_module(model):
    import torch

    names = list(model.tasks)

    class Heads(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x)
            return tuple(out[k] for k in names)

    return Heads(model).eval(), names


def real_face_batch(image_size: int) -> np.ndarray:
    """A real face as a ``uint8`` ``[1, S, S, 3]`` batch: the astronaut's face (box found by MTCNN once,
    hard-coded here so no detector runs), or smooth gradients where scikit-image is absent."""
    from PIL import Image

    try:
        from skimage import data

        face = data.astronaut()[62:172, 181:268]
    except ImportError:  # pragma: no cover - scikit-image is a dev dependency
        yy, xx = np.mgrid[0:128, 0:128]
        face = np.stack([xx * 2, yy * 2, (xx + yy)], -1).clip(0, 255).astype(np.uint8)  # smooth gradients
    return np.asarray(Image.fromarray(face).resize((image_size, image_size), Image.BILINEAR))[None]


def _normalise(batch_u8: np.ndarray, mean, std) -> np.ndarray:
    x = (batch_u8.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def export_onnx(checkpoint, out: str | os.PathLike, image_size: int | None = None, opset: int = DEFAULT_OPSET,
                check: bool = True, tol: float = PARITY_TOL, seed: int = 0) -> ExportReport:
    """Write ``checkpoint`` (path, checkpoint dict or MultiTaskNet) as ONNX to ``out``; see the module doc."""
    import onnx
    import torch

    from .io import atomic_write_bytes
    from .models import build_model_from_checkpoint, load_checkpoint, unwrap
    from .training import default_label_orders

    if isinstance(checkpoint, torch.nn.Module):
        model, orders, source = unwrap(checkpoint), None, type(checkpoint).__name__
    else:
        ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        model, orders = build_model_from_checkpoint(ckpt), ckpt.get("label_orders")
        source = str(checkpoint) if not isinstance(checkpoint, dict) else "<checkpoint>"
    model = model.cpu().float().eval()
    size = int(image_size or model.input_size)
    heads, names = _heads_module(model)
    orders = {k: list(v) for k, v in (orders or default_label_orders(model.tasks)).items()}
    meta = {"format": "fer_lib.onnx/1", "tasks": dict(model.tasks), "label_orders": orders,
            "image_size": size, "mean": list(model.mean), "std": list(model.std),
            "age_mode": getattr(model, "age_mode", "bins"), "backbone": getattr(model, "backbone_name", None),
            "source": source, "torch": torch.__version__}

    out = Path(out)
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(2, 3, size, size, generator=gen)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.is_dir() else None) as tmp:
        raw = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")  # legacy-exporter deprecation, tracer notes on head shapes
            # The TorchScript exporter: dynamic batch via dynamic_axes, no onnxscript dependency.
            torch.onnx.export(heads, (example,), str(raw), dynamo=False, input_names=["input"],
                              output_names=names, opset_version=opset, do_constant_folding=True,
                              dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}})
        proto = onnx.load(str(raw))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta)
    proto.producer_name = "fer_lib"
    onnx.checker.check_model(proto)
    atomic_write_bytes(out, proto.SerializeToString())
    report = ExportReport(path=out, outputs=names, image_size=size)
    if check:
        report.max_abs_diff = parity(model, out, size, seed=seed)
        if not report.worst < tol:
            raise ValueError(f"{out}: ONNX outputs differ from PyTorch by up to {report.worst:.3g} (> {tol:g}): "
                             f"{report.max_abs_diff}; the export is not trustworthy")
    return report


def parity(model, onnx_path: str | os.PathLike, image_size: int, seed: int = 0, batch: int = 5) -> dict[str, float]:
    """Largest absolute difference between onnxruntime and PyTorch over every output, for a random
    batch of ``batch`` images (also checks the dynamic batch axis) and for a real face."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(seed)
    inputs = {"random": rng.standard_normal((batch, 3, image_size, image_size)).astype(np.float32),
              "real": _normalise(real_face_batch(image_size), model.mean, model.std)}
    diffs = {}
    model = model.eval()
    for kind, x in inputs.items():
        with torch.inference_mode():
            ref = model(torch.from_numpy(x))
        got = dict(zip(names, sess.run(names, {"input": x})))
        diffs[kind] = max(float(np.abs(got[k] - ref[k].numpy()).max()) for k in names)
    return diffs
