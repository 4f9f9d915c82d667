"""ONNX export of a fer_lib checkpoint, checked against PyTorch.

    python -m fer_lib export runs/default/checkpoints/02_expression_va/best.pt --out model.onnx

The graph takes ``input`` ``[batch, 3, S, S]`` (float32, normalised with the model's mean/std; batch
is dynamic) and has one output per head, named after it (``expression``, ``va``, ``age``, ``gender``,
``race``, ...), with the raw head outputs of :class:`fer_lib.models.MultiTaskNet`. The model's head
sizes, label orders, preprocessing (:class:`fer_lib.preprocess.Preprocess`: crop rule, input size,
mean/std) and age read-out are stored as JSON in the ONNX ``metadata_props`` (key ``fer_lib``), so
:class:`fer_lib.inference.Recognizer` (``backend="onnx"``) and ``python -m fer_lib predict --checkpoint
model.onnx`` produce the same columns as with the checkpoint.

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
    return preprocess.face(_astronaut(), ASTRONAUT_FACE_BOX)[None]


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
    """Write ``checkpoint`` (path, checkpoint dict or MultiTaskNet) as ONNX to ``out``; see the module doc.

    ``image_size`` exports for another input size than the model was trained at (default: its own).
    """
    import onnx
    import torch

    from .io import atomic_write_bytes
    from .models import load_model

    model, orders, source = load_model(checkpoint)
    model = model.cpu().float().eval()
    pre = model.preprocess if not image_size else model.preprocess.replace(input_size=int(image_size))
    size = pre.input_size
    heads, names = _heads_module(model)
    meta = {
        "format": "fer_lib.onnx/2",
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


def half_precision_checkpoint(
    checkpoint: str | os.PathLike, out: str | os.PathLike, tol: float = 1e-3, n_faces: int = 32
) -> dict:
    """A smaller copy of a fer_lib checkpoint for publishing: weights stored in float16 (loaded back into
    float32), nothing but what serving needs (model config, label orders, metrics, run config).

    Kept only where the decoded outputs of ``predict`` (probabilities, valence / arousal, age / 100) stay
    within ``tol`` of the float32 model's on ``n_faces`` faces (the astronaut's face, shifted and
    mirrored). Tried in order: every float tensor in float16; ``"mixed"``: float16 for the large
    convolution / linear weights, float32 for the sensitive rest (1-D tensors such as BatchNorm and
    biases, tensors under 5,000 values such as depthwise kernels, the task heads); float32. Returns
    ``{"dtype", "max_abs_diff", "mb"}``.
    """
    from .inference import Recognizer
    from .io import atomic_torch_save
    from .models import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    keep = ("format", "model_config", "label_orders", "metrics", "metrics_model", "config", "versions")
    slim = {k: ckpt[k] for k in keep if k in ckpt}
    out = Path(out)
    reference = Recognizer(checkpoint, fold_bn=False)
    face = reference.preprocess.crop(_astronaut(), ASTRONAUT_FACE_BOX)
    rng = np.random.default_rng(0)
    crops = []
    for i in range(n_faces):
        dy, dx = (int(v) for v in rng.integers(-8, 9, 2))
        c = np.roll(face, (dy, dx), axis=(0, 1))
        crops.append(c[:, ::-1] if i % 2 else c)
    full = reference.infer(crops)

    def sensitive(name: str, t) -> bool:
        return t.ndim <= 1 or t.numel() < 5000 or name.startswith(("heads.", "attribute_trunk."))

    rules = {"float16": lambda k, t: False, "mixed": sensitive}
    for dtype, keep32 in rules.items():
        sd = {
            k: v.half() if v.is_floating_point() and not keep32(k, v) else v
            for k, v in ckpt["state_dict"].items()
        }
        atomic_torch_save({**slim, "state_dict": sd}, out)
        small = Recognizer(out, fold_bn=False).infer(crops)
        diff = max(float(np.max(np.abs((full[k] - small[k]) / (100.0 if k == "age" else 1.0)))) for k in full)
        if diff <= tol:
            return {"dtype": dtype, "max_abs_diff": diff, "mb": out.stat().st_size / 2**20}
    atomic_torch_save({**slim, "state_dict": ckpt["state_dict"]}, out)
    return {"dtype": "float32", "max_abs_diff": 0.0, "mb": out.stat().st_size / 2**20}


def _astronaut() -> np.ndarray:
    """scikit-image's astronaut (512 x 512 RGB), or smooth gradients where scikit-image is absent."""
    try:
        from skimage import data

        return data.astronaut()
    except ImportError:  # pragma: no cover - scikit-image is a dev dependency
        yy, xx = np.mgrid[0:512, 0:512]
        return np.stack([xx // 2, yy // 2, (xx + yy) // 4], -1).clip(0, 255).astype(np.uint8)
