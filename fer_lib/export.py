"""ONNX export of a fer_lib checkpoint, checked against PyTorch.

    python -m fer_lib export runs/default/checkpoints/02_expression_va/best.pt --out model.onnx

The graph takes ``input`` ``[batch, 3, S, S]`` (float32, normalised with the model's mean/std; batch
is dynamic) and has one output per head, named after it (``expression``, ``va``, ``age``, ``gender``,
``race``, ...), with the raw head outputs of the checkpoint's model, of any kind the checkpoint io
rebuilds (:class:`fer_lib.models.MultiTaskNet`; paper B's Emotion-GCN, whose label graph is constant
tensors that the tracer folds). The model's kind, head sizes, label orders, preprocessing
(:class:`fer_lib.preprocess.Preprocess`: crop rule, input size, mean/std) and age read-out are stored
as JSON in the ONNX ``metadata_props`` (key ``fer_lib``), so :class:`fer_lib.serving.Recognizer`
(``backend="onnx"``) and ``python -m fer_lib predict --checkpoint model.onnx`` produce the same columns
as with the checkpoint.

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

from .labels import MALE_THRESHOLD
from .preprocess import Preprocess

ONNX_META_KEY = "fer_lib"
DEFAULT_OPSET = 17
PARITY_TOL = 1e-4


@dataclass
class ExportReport:
    path: Path
    outputs: list[str]
    image_size: int
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # per input kind: random / real

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values()) if self.max_abs_diff else float("nan")

    def __str__(self) -> str:
        diffs = ", ".join(f"{k} input {v:.2e}" for k, v in self.max_abs_diff.items())
        return (
            f"wrote {self.path} (outputs {', '.join(self.outputs)}; input [batch, 3, {self.image_size}, "
            f"{self.image_size}]); max abs diff vs PyTorch: {diffs}"
        )


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


#: The astronaut's face in ``skimage.data.astronaut()`` (box found by MTCNN once, fixed here so no
#: detector runs during an export).
ASTRONAUT_FACE_BOX = (181, 62, 268, 172)


def real_face_batch(preprocess: Preprocess) -> np.ndarray:
    """A real face as a ``uint8`` ``[1, S, S, 3]`` batch, through the model's preprocessing: the
    astronaut's face, or smooth gradients where scikit-image is absent."""
    return preprocess.face(astronaut(), ASTRONAUT_FACE_BOX)[None]


def read_metadata(session, path: str | os.PathLike = "<onnx>") -> dict:
    """The fer_lib metadata of an ONNX file (from an onnxruntime session), ``preprocess`` as a
    :class:`Preprocess`; files written before it was stored have only ``image_size`` / ``mean`` / ``std``."""
    meta = session.get_modelmeta().custom_metadata_map
    if ONNX_META_KEY not in meta:
        raise ValueError(
            f"{path} has no fer_lib metadata; export it with `python -m fer_lib export` so its "
            "head names, label orders and preprocessing are known"
        )
    info = json.loads(meta[ONNX_META_KEY])
    pre = info.get("preprocess") or {
        "input_size": info["image_size"],
        "mean": info["mean"],
        "std": info["std"],
    }
    info["preprocess"] = Preprocess.from_dict(pre)
    return info


def export_onnx(
    checkpoint,
    out: str | os.PathLike,
    image_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tol: float = PARITY_TOL,
    seed: int = 0,
) -> ExportReport:
    """Write ``checkpoint`` (path, checkpoint dict or fer_lib model) as ONNX to ``out``; see the module doc.

    ``image_size`` exports for another input size than the model was trained at (default: its own).
    """
    import onnx
    import torch

    from .io import atomic_write_bytes
    from .models import DEFAULT_KIND, load_model

    model, orders, source = load_model(checkpoint)
    kind = (model.config() if hasattr(model, "config") else {}).get("kind", DEFAULT_KIND)
    model = model.cpu().float().eval()
    pre = model.preprocess if not image_size else model.preprocess.replace(input_size=int(image_size))
    size = pre.input_size
    heads, names = _heads_module(model)
    meta = {
        "format": "fer_lib.onnx/2",
        "kind": kind,
        "tasks": dict(model.tasks),
        "label_orders": orders,
        "preprocess": pre.to_dict(),
        "age_mode": getattr(model, "age_mode", "bins"),
        "male_threshold": float(getattr(model, "male_threshold", MALE_THRESHOLD)),
        "backbone": getattr(model, "backbone_name", None),
        "source": source,
        "torch": torch.__version__,
    }

    out = Path(out)
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(2, 3, size, size, generator=gen)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.is_dir() else None) as tmp:
        raw = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")  # legacy-exporter deprecation, tracer notes on head shapes
            # The TorchScript exporter: dynamic batch via dynamic_axes, no onnxscript dependency.
            try:
                torch.onnx.export(
                    heads,
                    (example,),
                    str(raw),
                    dynamo=False,
                    input_names=["input"],
                    output_names=names,
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                )
            except Exception as exc:  # noqa: BLE001 - re-raised with what to do
                raise ValueError(
                    f"{source}: the {kind!r} model cannot be exported to ONNX ({type(exc).__name__}: "
                    f"{(str(exc).splitlines() or [''])[0][:200]}); serve the checkpoint with the torch backend"
                ) from exc
        proto = onnx.load(str(raw))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta)
    proto.producer_name = "fer_lib"
    onnx.checker.check_model(proto)
    atomic_write_bytes(out, proto.SerializeToString())
    report = ExportReport(path=out, outputs=names, image_size=size)
    if check:
        report.max_abs_diff = parity(model, out, pre, seed=seed)
        if not report.worst < tol:
            raise ValueError(
                f"{out}: ONNX outputs differ from PyTorch by up to {report.worst:.3g} (> {tol:g}): "
                f"{report.max_abs_diff}; the export is not trustworthy"
            )
    return report


def parity(
    model, onnx_path: str | os.PathLike, preprocess: Preprocess, seed: int = 0, batch: int = 5
) -> dict[str, float]:
    """Largest absolute difference between onnxruntime and PyTorch over every output, for a random
    batch of ``batch`` images (also checks the dynamic batch axis) and for a real face."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(seed)
    size = preprocess.input_size
    inputs = {
        "random": rng.standard_normal((batch, 3, size, size)).astype(np.float32),
        "real": preprocess.normalise(real_face_batch(preprocess)),
    }
    diffs = {}
    model = model.eval()
    for kind, x in inputs.items():
        with torch.inference_mode():
            ref = model(torch.from_numpy(x))
        got = dict(zip(names, sess.run(names, {"input": x})))
        diffs[kind] = max(float(np.abs(got[k] - ref[k].numpy()).max()) for k in names)
    return diffs


def astronaut() -> np.ndarray:
    """scikit-image's astronaut (512 x 512 RGB), or smooth gradients where scikit-image is absent."""
    try:
        from skimage import data

        return data.astronaut()
    except ImportError:  # pragma: no cover - scikit-image is a dev dependency
        yy, xx = np.mgrid[0:512, 0:512]
        return np.stack([xx // 2, yy // 2, (xx + yy) // 4], -1).clip(0, 255).astype(np.uint8)
