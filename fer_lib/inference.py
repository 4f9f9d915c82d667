"""Predictions for people who just want them: ``Recognizer(checkpoint).predict(image)``.

    rec = Recognizer("runs/default/checkpoints/02_expression_va/best.pt")   # or "model.onnx"
    faces = rec.predict("photo.jpg")           # path, PIL image or RGB array
    faces[0].expression, faces[0].expression_probs, faces[0].valence, faces[0].age
    rec.predict_batch([img1, img2])             # faces of many images in one batched forward
    rec.predict_faces([crop1, crop2])           # already-cropped faces (RGB arrays), no detection

Pipeline: MTCNN (:class:`fer_lib.faces.FaceDetector`, offline weights) -> every face with detection
probability >= ``min_prob`` (:func:`fer_lib.faces.select_faces`) -> the model's own
:class:`fer_lib.preprocess.Preprocess`, read from its checkpoint (the crop rule, input size and
normalisation it was trained with) -> one batched forward of every crop.

Fast path: the crops are resized into one ``uint8`` NHWC array; normalisation is one vectorised
operation on the whole batch, whose NCHW view of the NHWC buffer is already ``channels_last`` (the
layout the model is converted to), under ``torch.inference_mode``; no per-face tensor transforms.
BatchNorm layers are folded into the convolutions at load (checked against the unfolded outputs), and
faces go through the network in passes of :data:`CPU_BATCH` on a CPU (cache-sized).
``backend="onnx"`` runs a file written by :func:`fer_lib.export.export_onnx` with onnxruntime instead;
its head names, label orders and preprocessing are read from the ONNX metadata, so both backends give
the same columns.

Per face (heads the checkpoint has, else None): ``box`` ``(x1, y1, x2, y2)`` and ``det_prob``;
``expression`` (argmax name) and ``expression_probs`` (canonical order of
:data:`fer_lib.labels.EXPRESSIONS_8`, sums to 1); ``valence`` / ``arousal``; ``age`` (years, paper A's
top-2 read-out); ``gender`` (male where p(male) >= the model's threshold: paper A's 0.6, or the one its stage
chose on validation data) and ``p_female``; ``ethnicity`` and
``ethnicity_probs`` (UTKFace's five classes).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import labels as label_spaces
from .faces import select_faces
from .labels import MALE_THRESHOLD
from .preprocess import to_rgb_array

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
)
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
#: Checkpoints tried, in order, when none is given (relative to ``get_paths().checkpoints``).
DEFAULT_CHECKPOINTS = ("02_expression_va/best.pt", "02_expression/best.pt")
#: What a published run commits under results/models/ (see fer_lib.stages.report.publish_models).
PUBLISHED_MODELS = ("expression.pt", "attributes.pt")
#: Faces per forward pass on a CPU (bench/bench_inference.py: 8 faces per pass beat 32 per face).
CPU_BATCH = 8


class NoCheckpointError(FileNotFoundError):
    """No checkpoint was given and none of the default ones exists."""


def published_models(folder: str | os.PathLike | None = None) -> list[Path]:
    """The models a published run committed (``results/models/``: :data:`PUBLISHED_MODELS` that exist)."""
    if folder is None:
        from .config import PUBLISHED_DIR, repo_root

        folder = repo_root() / PUBLISHED_DIR / "models"
    return [Path(folder) / name for name in PUBLISHED_MODELS if (Path(folder) / name).is_file()]


def default_checkpoint(
    checkpoints_dir: str | os.PathLike | None = None, published: str | os.PathLike | None = None
) -> Path | list[Path]:
    """The expression model of notebook 02 (with valence-arousal where it exists) in the run folder;
    without one, the published run's models (``results/models/``: expression + attributes, committed
    with the repository), with a note on stderr saying so."""
    if checkpoints_dir is None:
        from .config import get_paths

        checkpoints_dir = get_paths().checkpoints
    root = Path(checkpoints_dir)
    for rel in DEFAULT_CHECKPOINTS:
        if (root / rel).is_file():
            return root / rel
    models = published_models(published)
    if models:
        print(
            f"[fer_lib] no local checkpoint under {root}: using the published models "
            f"{' + '.join(str(m) for m in models)} (model cards beside them)",
            file=sys.stderr,
        )
        return models
    raise NoCheckpointError(
        f"no checkpoint given and none found at {', '.join(str(root / r) for r in DEFAULT_CHECKPOINTS)} "
        "(nor published models under results/models/); train one with `python -m fer_lib finetune` "
        "(after `python -m fer_lib prepare`), or pass --checkpoint PATH (a fer_lib .pt, an ONNX file "
        "from `python -m fer_lib export`, or a converted HSEmotion model from `python -m fer_lib "
        "import-hsemotion`)"
    )


# ------------------------------------------------------------------------------------------- results
@dataclass
class FacePrediction:
    """What the model says about one face (fields of heads the model lacks stay None / empty)."""

    box: tuple[float, float, float, float] | None = None
    det_prob: float | None = None
    expression: str | None = None
    expression_probs: dict[str, float] = field(default_factory=dict)
    valence: float | None = None
    arousal: float | None = None
    age: float | None = None
    gender: str | None = None
    p_female: float | None = None
    ethnicity: str | None = None
    ethnicity_probs: dict[str, float] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """A flat dict (one CSV row): box, det_prob, expression, expr_<name>..., valence, ..."""
        box = self.box if self.box is not None else (None,) * 4
        row: dict[str, Any] = dict(zip(("x1", "y1", "x2", "y2"), box))
        row["det_prob"] = self.det_prob
        row["expression"] = self.expression
        row.update({f"expr_{k}": v for k, v in self.expression_probs.items()})
        row.update(
            valence=self.valence,
            arousal=self.arousal,
            age=self.age,
            gender=self.gender,
            p_female=self.p_female,
            ethnicity=self.ethnicity,
        )
        row.update({f"eth_{k}": v for k, v in self.ethnicity_probs.items()})
        return row

    def label(self) -> str:
        """A short caption for overlays, e.g. ``Happy 0.91 | V+0.42 A-0.10 | 34y F``."""
        parts = []
        if self.expression is not None:
            parts.append(f"{self.expression} {self.expression_probs[self.expression]:.2f}")
        if self.valence is not None:
            parts.append(f"V{self.valence:+.2f} A{self.arousal:+.2f}")
        attrs = []
        if self.age is not None:
            attrs.append(f"{self.age:.0f}y")
        if self.gender is not None:
            attrs.append(self.gender[0])
        if self.ethnicity is not None:
            attrs.append(self.ethnicity)
        if attrs:
            parts.append(" ".join(attrs))
        return " | ".join(parts)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def load_image(image) -> np.ndarray:
    """An RGB ``uint8`` array from a path (fer_lib's image-reading policy), a PIL image or an array."""
    if isinstance(image, (str, os.PathLike)):
        from .datasets.images import read_image

        img, _ = read_image(image)
        return np.asarray(img)
    return to_rgb_array(image)


# ------------------------------------------------------------------------------------------ backends
def fold_batchnorm(model) -> int:
    """Fold every eval-mode BatchNorm that directly follows a Conv2d (registration order) into the conv.

    The conv gets ``weight * gamma / sqrt(var + eps)`` and the matching bias; the BatchNorm is replaced
    by what it did after normalising (timm's ``BatchNormAct2d``: its dropout and activation; a plain
    ``BatchNorm2d``: nothing). Modifies ``model`` in place; returns the number of folded pairs. The
    caller must check the outputs (:func:`_folded_copy` does): registration order is assumed to be
    data-flow order, which holds for timm's CNNs but is not guaranteed for any module.
    """
    import torch
    from torch import nn

    n = 0
    for parent in list(model.modules()):
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if type(conv) is not nn.Conv2d or not isinstance(bn, nn.BatchNorm2d) or bn.training:
                continue
            if bn.running_var is None or conv.out_channels != bn.num_features:
                continue
            with torch.no_grad():
                scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)
                if bn.affine:
                    scale = bn.weight * scale
                shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
                fused = nn.Conv2d(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    conv.stride,
                    conv.padding,
                    conv.dilation,
                    conv.groups,
                    bias=True,
                    padding_mode=conv.padding_mode,
                ).to(conv.weight.device)
                fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                fused.bias.copy_((conv.bias if conv.bias is not None else 0.0) * scale + shift)
            after = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
            parent._modules[a] = fused.eval()
            parent._modules[b] = (
                nn.Sequential(*after).eval() if type(bn) is not nn.BatchNorm2d else nn.Identity()
            )
            n += 1
    return n


def _folded_copy(model, image_size: int, tol: float = 1e-4):
    """A BatchNorm-folded copy of an eval-mode model when it reproduces the model's outputs (relative
    difference <= ``tol`` on random input), else None."""
    import copy

    import torch

    folded = copy.deepcopy(model).eval()
    if fold_batchnorm(folded) == 0:
        return None
    device = next(model.parameters()).device
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        ref, out = model(x), folded(x)
    ref = ref if isinstance(ref, dict) else {"out": ref}
    out = out if isinstance(out, dict) else {"out": out}
    for k in ref:
        scale = max(1.0, float(ref[k].abs().max()))
        if float((ref[k] - out[k]).abs().max()) > tol * scale:
            return None
    return folded


class _TorchBackend:
    def __init__(
        self,
        checkpoint,
        device: str,
        channels_last: bool,
        precision: str,
        fold_bn: bool = True,
        compile_rows: int = 0,
    ):
        import copy

        import torch

        from .models import load_model

        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        model, self.label_orders, self.source = load_model(checkpoint)
        if isinstance(checkpoint, torch.nn.Module):  # a copy: the caller's model is left as it is
            model = copy.deepcopy(model)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocess = model.preprocess
        self.folded = False
        if fold_bn:
            folded = _folded_copy(self.model, self.preprocess.input_size)
            if folded is not None:
                self.model, self.folded = folded, True
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.precision = precision
        self.tasks = dict(model.tasks)
        self.age_mode = getattr(model, "age_mode", "bins")
        self.male_threshold = float(getattr(model, "male_threshold", MALE_THRESHOLD))
        # torch.compile (inductor, weights frozen into the graph) for passes of exactly compile_rows faces:
        # shorter passes are padded, so the graph is compiled once, at the first pass.
        self.compile_rows = int(compile_rows)
        self.compiled = torch.compile(self.model) if self.compile_rows else None

    def __call__(self, batch_u8: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        n = len(batch_u8)
        if self.compiled is not None:
            if n > self.compile_rows:
                raise ValueError(f"a pass of {n} faces; this model was compiled for {self.compile_rows}")
            pad = np.zeros((self.compile_rows - n, *batch_u8.shape[1:]), batch_u8.dtype)
            batch_u8 = np.concatenate([batch_u8, pad]) if len(pad) else batch_u8
        with torch.inference_mode():
            x = self.preprocess.normalise_torch(batch_u8, self.device)  # NHWC buffer = channels_last
            if not self.channels_last:
                x = x.contiguous()
            if self.compiled is not None:
                from torch._inductor import config as inductor_config

                with inductor_config.patch(freezing=True):
                    out = self._forward(self.compiled, x)
            else:
                out = self._forward(self.model, x)
            return {k: v[:n].float().cpu().numpy() for k, v in out.items()}

    def _forward(self, model, x):
        import torch

        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return model(x)
        return model(x)


class _OnnxBackend:
    def __init__(self, path, device: str, threads: int | None):
        import onnxruntime as ort

        from .export import read_metadata

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"ONNX model {path} does not exist; write one with "
                "`python -m fer_lib export CHECKPOINT --out model.onnx`"
            )
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        info = read_metadata(self.session, path)
        self.tasks = {k: int(v) for k, v in info["tasks"].items()}
        self.age_mode = info.get("age_mode", "bins")
        self.male_threshold = float(info.get("male_threshold", MALE_THRESHOLD))
        self.preprocess = info["preprocess"]
        self.label_orders = {k: list(v) for k, v in info["label_orders"].items()}
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.source = str(path)

    def __call__(self, batch_u8: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {self.input_name: self.preprocess.normalise(batch_u8)})
        return dict(zip(self.output_names, outs))


def _make_backend(checkpoint, backend, device, threads, channels_last, precision, fold_bn, compile_rows=0):
    """The torch or onnxruntime backend of one model; ``backend`` None picks by the file suffix."""
    is_onnx_file = isinstance(checkpoint, (str, os.PathLike)) and Path(checkpoint).suffix.lower() == ".onnx"
    backend = backend or ("onnx" if is_onnx_file else "torch")
    if backend not in ("torch", "onnx"):
        raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    if backend == "onnx":
        if compile_rows:
            raise ValueError("compile=True is for the torch backend (onnxruntime optimises the graph itself)")
        return (
            _OnnxBackend(checkpoint, device, threads)
            if is_onnx_file
            else _onnx_from_checkpoint(checkpoint, device, threads)
        )
    return _TorchBackend(checkpoint, device, channels_last, precision, fold_bn, compile_rows)


def _onnx_from_checkpoint(checkpoint, device: str, threads: int | None) -> _OnnxBackend:
    """Export a checkpoint (or MultiTaskNet) to a temporary ONNX file (parity-checked) and load it."""
    import tempfile

    from .export import export_onnx

    with tempfile.TemporaryDirectory(prefix="fer_lib_onnx_") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(checkpoint, path)
        backend = _OnnxBackend(path, device, threads)  # the session holds the model in memory
    backend.source = (
        f"{checkpoint if isinstance(checkpoint, (str, os.PathLike)) else type(checkpoint).__name__}"
        " (exported to ONNX on load)"
    )
    return backend


def _run_passes(backend, batches: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """``backend``'s outputs over ``uint8`` batches, concatenated per head."""
    outs: dict[str, list[np.ndarray]] = {}
    for batch_u8 in batches:
        for k, v in backend(batch_u8).items():
            outs.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in outs.items()}


# ---------------------------------------------------------------------------------------- recognizer
class Recognizer:
    """Faces -> expressions, valence-arousal and attributes with a fer_lib checkpoint or ONNX model.

    Args:
        checkpoint: a fer_lib checkpoint (``.pt``, loaded weights-only), an ONNX file from
            ``python -m fer_lib export``, a loaded checkpoint dict or a ``MultiTaskNet``; or a list of
            them with different heads (e.g. an expression model and an attribute model), each fed
            through its own preprocessing and their heads merged; None takes :func:`default_checkpoint`.
        device: torch device (``"cpu"``, ``"cuda"``), also used by the face detector.
        backend: ``"torch"`` or ``"onnx"``; None picks by the file suffix (``.onnx`` -> onnx). ``"onnx"``
            with a ``.pt`` checkpoint exports it to ONNX on load (a few seconds, parity-checked) and
            runs it with onnxruntime: the fastest CPU path (bench/bench_inference.py).
        min_face_size: smallest face (pixels) MTCNN looks for.
        min_prob: faces with a lower detection probability are dropped.
        largest_only: keep only the largest face of each image.
        batch_size: crops per forward pass (default :data:`CPU_BATCH` on CPU, 64 on a GPU): on a CPU,
            more faces per pass cost more time per face once the activations leave the cache.
        threads: torch (process-wide) / onnxruntime intra-op threads; None leaves the defaults.
        precision: ``"fp32"`` or ``"bf16"`` (torch CPU autocast; see bench/bench_inference.py for how
            far it moves the probabilities).
        fold_bn: fold BatchNorm into the preceding convolutions (torch backend; kept only when the
            folded model reproduces the original's outputs, checked at load).
        detector: any object with ``detect_batch(frames) -> [(k, 5) boxes]`` (default: MTCNN).
        overlap: resize the next pass's crops in a background thread while the current pass runs
            (more faces than ``batch_size`` only; the outputs are the same bits either way).
        compile: ``torch.compile`` the model (inductor, weights frozen into the graph), for passes of
            ``batch_size`` faces, shorter ones padded. The first pass compiles (10-30 s on a 2-core CPU);
            then an efficientnet_b0 forward takes about 0.6x the eager time (bench/bench_inference.py).
            For folders and videos, not for one image. Outputs match eager within float rounding.
    """

    def __init__(
        self,
        checkpoint=None,
        device: str = "cpu",
        backend: str | None = None,
        *,
        min_face_size: int = 20,
        min_prob: float = 0.9,
        largest_only: bool = False,
        batch_size: int | None = None,
        threads: int | None = None,
        channels_last: bool = True,
        precision: str = "fp32",
        fold_bn: bool = True,
        detector=None,
        overlap: bool = True,
        compile: bool = False,
    ):
        if checkpoint is None:
            checkpoint = default_checkpoint()
        sources = list(checkpoint) if isinstance(checkpoint, (list, tuple)) else [checkpoint]
        if not sources:
            raise ValueError("Recognizer needs at least one checkpoint")
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.device = device
        if batch_size is None:
            batch_size = CPU_BATCH if str(device).startswith("cpu") else 64
        self.batch_size = max(1, int(batch_size))
        rows = self.batch_size if compile else 0
        self._backends = [
            _make_backend(c, backend, device, threads, channels_last, precision, fold_bn, rows)
            for c in sources
        ]
        self._backend = b = self._backends[0]
        self.backend_name = backend or ("onnx" if isinstance(b, _OnnxBackend) else "torch")
        self.tasks, self.label_orders = {}, {}
        for other in self._backends:
            shared = set(self.tasks) & set(other.tasks)
            if shared:
                raise ValueError(f"{other.source} has head(s) {sorted(shared)} that an earlier model has too")
            if other.preprocess.margin != b.preprocess.margin:
                raise ValueError(
                    f"{other.source} crops faces with margin {other.preprocess.margin}, {b.source} with "
                    f"{b.preprocess.margin}: combined models must share the crop rule"
                )
            self.tasks.update(other.tasks)
            self.label_orders.update(other.label_orders)
        owner = {t: o for o in self._backends for t in o.tasks}
        self.age_mode = owner["age"].age_mode if "age" in owner else b.age_mode
        # p(male) from which a face is called male: the gender model's own
        self.male_threshold = owner["gender"].male_threshold if "gender" in owner else b.male_threshold
        self.preprocess = b.preprocess  # the (first) model's own: crop rule, input size, mean/std
        self.source = " + ".join(str(o.source) for o in self._backends)
        self.min_face_size, self.min_prob, self.largest_only = (
            int(min_face_size),
            float(min_prob),
            largest_only,
        )
        self._detector = detector
        self._expr_perm = self._expression_permutation()
        self.overlap = bool(overlap)
        self._pool = None  # one preprocessing thread, started on first use

    def __repr__(self) -> str:
        return (
            f"Recognizer({self.source!r}, backend={self.backend_name!r}, heads={list(self.tasks)}, "
            f"image_size={self.image_size})"
        )

    @property
    def image_size(self) -> int:
        return self.preprocess.input_size

    # ------------------------------------------------------------------------------------ labels
    def _expression_permutation(self) -> np.ndarray | None:
        """Column permutation bringing the expression head into canonical order (None: already is)."""
        n = self.tasks.get("expression")
        if not n:
            return None
        order = self.label_orders.get("expression") or list(label_spaces.EXPRESSIONS_8[:n])
        if len(order) != n:
            raise ValueError(f"expression label order {order} does not match the head's {n} outputs")
        mapping = label_spaces.mapping_to_canonical(order, n)
        return None if np.array_equal(mapping, np.arange(n)) else mapping

    @property
    def expression_names(self) -> list[str]:
        n = self.tasks.get("expression", 0)
        return list(label_spaces.EXPRESSIONS_8[:n]) if n else []

    @property
    def ethnicity_names(self) -> list[str]:
        n = self.tasks.get("race", 0)
        return list(self.label_orders.get("race") or label_spaces.ETHNICITIES[:n]) if n else []

    @property
    def detector(self):
        if self._detector is None:
            from .faces import FaceDetector

            self._detector = FaceDetector(min_face_size=self.min_face_size, device=self.device)
        return self._detector

    # ---------------------------------------------------------------------------------- the core

    def raw(self, batch_u8: np.ndarray, backend=None) -> dict[str, np.ndarray]:
        """Head outputs (logits / regressions) for a preprocessed ``uint8`` batch, in chunks: of
        ``backend``, else of every model (combined models must then share one preprocessing)."""
        bs, out = self.batch_size, {}
        for b in [backend] if backend is not None else self._backends:
            out.update(_run_passes(b, (batch_u8[i : i + bs] for i in range(0, len(batch_u8), bs))))
        return out

    def decode(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Head outputs -> ``expression_probs`` (canonical), ``valence``, ``arousal``, ``age``,
        ``p_female``, ``ethnicity_probs`` (only for the heads present)."""
        import torch

        from .models.heads import gender_prob_female, predict_age

        out: dict[str, np.ndarray] = {}
        if "expression" in raw:
            p = _softmax(raw["expression"])
            if self._expr_perm is not None:
                p = label_spaces.reorder_columns(p, self.label_orders["expression"])
            out["expression_probs"] = p
        if "va" in raw:
            out["valence"], out["arousal"] = raw["va"][:, 0], raw["va"][:, 1]
        if "age" in raw:
            out["age"] = predict_age(torch.from_numpy(np.asarray(raw["age"])), self.age_mode).numpy()
        if "gender" in raw:
            out["p_female"] = gender_prob_female(torch.from_numpy(np.asarray(raw["gender"]))).numpy()
        if "race" in raw:
            out["ethnicity_probs"] = _softmax(raw["race"])
        return out

    def infer(self, crops: Sequence) -> dict[str, np.ndarray]:
        """Decoded arrays (see :meth:`decode`) for already-cropped faces, in passes of ``batch_size``."""
        if len(crops) == 0:
            return {}
        raw: dict[str, np.ndarray] = {}
        for b in self._backends:  # each model through its own preprocessing
            raw.update(_run_passes(b, self._passes(crops, b.preprocess)))
        return self.decode(raw)

    def _passes(self, crops: Sequence, pre) -> Iterator[np.ndarray]:
        """The crops as ``uint8`` network batches of ``batch_size``. With ``overlap``, batch k + 1 is
        resized in a background thread while the caller runs batch k (PIL's resize and torch /
        onnxruntime release the GIL)."""
        bs = self.batch_size
        chunks = [crops[i : i + bs] for i in range(0, len(crops), bs)]
        if not self.overlap or len(chunks) == 1:
            yield from (pre.batch(c) for c in chunks)
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="fer-preprocess")
        pending = self._pool.submit(pre.batch, chunks[0])
        for j in range(len(chunks)):
            batch_u8 = pending.result()
            if j + 1 < len(chunks):
                pending = self._pool.submit(pre.batch, chunks[j + 1])
            yield batch_u8

    def _to_faces(self, dec: dict[str, np.ndarray], n: int) -> list[FacePrediction]:
        names, eth = self.expression_names, self.ethnicity_names
        faces = []
        for i in range(n):
            f = FacePrediction()
            if "expression_probs" in dec:
                p = dec["expression_probs"][i]
                f.expression_probs = {k: float(v) for k, v in zip(names, p)}
                f.expression = names[int(np.argmax(p))]
            if "valence" in dec:
                f.valence, f.arousal = float(dec["valence"][i]), float(dec["arousal"][i])
            if "age" in dec:
                f.age = float(dec["age"][i])
            if "p_female" in dec:
                f.p_female = float(dec["p_female"][i])
                f.gender = "Male" if 1.0 - f.p_female >= self.male_threshold else "Female"
            if "ethnicity_probs" in dec:
                p = dec["ethnicity_probs"][i]
                f.ethnicity_probs = {k: float(v) for k, v in zip(eth, p)}
                f.ethnicity = eth[int(np.argmax(p))]
            faces.append(f)
        return faces

    def predict_faces(self, crops: Sequence) -> list[FacePrediction]:
        """Predictions for already-cropped faces (RGB arrays or PIL images), batched; no detection."""
        return self._to_faces(self.infer(crops), len(crops))

    # ------------------------------------------------------------------------------ with detection
    def _crops(self, arr: np.ndarray, boxes: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        selected = select_faces(boxes, "largest" if self.largest_only else "all", min_prob=self.min_prob)
        crops, kept = [], []
        for box in selected:
            try:
                crops.append(self.preprocess.crop(arr, box))
            except ValueError:  # a box outside the image
                continue
            kept.append(box)
        return crops, kept

    def predict_arrays(
        self, arrays: Sequence[np.ndarray], detections: Sequence[np.ndarray] | None = None
    ) -> list[list[FacePrediction]]:
        """Faces of RGB ``uint8`` arrays; ``detections`` skips the detector (one ``(k, 5)`` per array)."""
        if detections is None:
            detections = self.detector.detect_batch(list(arrays)) if len(arrays) else []
        crops, where, boxes = [], [], []
        for i, (arr, det) in enumerate(zip(arrays, detections)):
            c, b = self._crops(arr, det)
            crops += c
            boxes += b
            where += [i] * len(c)
        faces = self.predict_faces(crops)
        out: list[list[FacePrediction]] = [[] for _ in arrays]
        for f, i, b in zip(faces, where, boxes):
            f.box = tuple(float(v) for v in b[:4])
            f.det_prob = float(b[4])
            out[i].append(f)
        return out

    def predict(self, image) -> list[FacePrediction]:
        """Every face in one image (path, PIL image or RGB array), most probable detection first."""
        return self.predict_arrays([load_image(image)])[0]

    def predict_batch(self, images: Sequence) -> list[list[FacePrediction]]:
        """Faces of many images: detection in batches (by image size), one batched forward of all crops."""
        return self.predict_arrays([load_image(im) for im in images])

    def predict_video(
        self, path, stride: int = 1, batch_frames: int = 16, max_frames: int | None = None, prefetch: int = 2
    ) -> Iterator[tuple[int, np.ndarray, list[FacePrediction]]]:
        """``(frame_index, rgb_frame, faces)`` for every ``stride``-th frame, streaming; frames are
        decoded in a background thread while the previous batch is detected and classified."""
        import contextlib

        from .video import iter_frames, prefetch_batches

        frames = iter_frames(path, stride=stride, max_frames=max_frames)
        with contextlib.closing(prefetch_batches(frames, batch_frames, prefetch)) as batches:
            for indices, batch in batches:
                yield from zip(indices, batch, self.predict_arrays(batch))


# --------------------------------------------------------------------------------------------- overlay
def draw_overlay(image: np.ndarray | Image.Image, faces: Sequence[FacePrediction]) -> Image.Image:
    """A copy of ``image`` with each face's box and caption drawn on it."""
    from PIL import ImageDraw, ImageFont

    img = (
        (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image)))
        .convert("RGB")
        .copy()
    )
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 200))
    try:
        font = ImageFont.load_default(size=max(10, min(img.size) // 40))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for f in faces:
        if f.box is None:
            continue
        x1, y1, x2, y2 = f.box
        draw.rectangle([x1, y1, x2, y2], outline=(255, 64, 64), width=width)
        text = f.label()
        if text:
            tb = draw.textbbox((x1, y1), text, font=font)
            th = tb[3] - tb[1]
            ty = y1 - th - 2 * width if y1 - th - 2 * width >= 0 else y2 + width
            draw.rectangle(
                [x1, ty, x1 + (tb[2] - tb[0]) + 2 * width, ty + th + 2 * width], fill=(255, 64, 64)
            )
            draw.text((x1 + width, ty + width - (tb[1] - y1)), text, fill=(255, 255, 255), font=font)
    return img


# ------------------------------------------------------------------------------- files, folders, videos
@dataclass
class PredictSummary:
    """What :func:`predict_path` did."""

    out: Path | None = None
    images: int = 0
    videos: int = 0
    frames: int = 0
    faces: int = 0
    without_face: int = 0  # images / frames in which no face was kept
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) of unreadable files
    overlays: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{self.faces} face(s)"]
        if self.images:
            parts.append(f"{self.images} image(s)")
        if self.videos:
            parts.append(f"{self.videos} video(s), {self.frames} frame(s) examined")
        parts.append(f"{self.without_face} image(s)/frame(s) without a face")
        parts.append(f"{len(self.skipped)} unreadable file(s) skipped")
        text = ", ".join(parts) + (f"; wrote {self.out}" if self.out else "")
        for f, why in self.skipped[:10]:
            text += f"\n  skipped {f}: {why}"
        if len(self.skipped) > 10:
            text += f"\n  ... and {len(self.skipped) - 10} more"
        return text


def columns(rec: Recognizer, video: bool = False) -> list[str]:
    """CSV columns of :func:`predict_path` for the heads of ``rec``."""
    cols = ["file"] + (["frame"] if video else []) + ["face", "x1", "y1", "x2", "y2", "det_prob"]
    if "expression" in rec.tasks:
        cols += ["expression"] + [f"expr_{n}" for n in rec.expression_names]
    if "va" in rec.tasks:
        cols += ["valence", "arousal"]
    if "age" in rec.tasks:
        cols += ["age"]
    if "gender" in rec.tasks:
        cols += ["gender", "p_female"]
    if "race" in rec.tasks:
        cols += ["ethnicity"] + [f"eth_{n}" for n in rec.ethnicity_names]
    return cols


def list_media(folder: str | os.PathLike) -> list[Path]:
    """Image and video files under ``folder`` (recursively, by suffix, sorted)."""
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _bar(iterable=None, total=None, desc="", progress=True):
    from .progress import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="it", disable=not progress or None, leave=False)


class _VideoWriter:
    """Annotated frames -> H.264 (mpeg4 where libx264 is missing) via PyAV, opened on the first frame."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self.container, self.stream = Path(path), fps, None, None

    def write(self, image: Image.Image) -> None:
        import av

        arr = np.asarray(image)
        arr = arr[: arr.shape[0] // 2 * 2, : arr.shape[1] // 2 * 2]  # yuv420p needs even sides
        if self.container is None:
            from fractions import Fraction

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(self.path), "w")
            rate = Fraction(self.fps).limit_denominator(1000)
            try:
                self.stream = self.container.add_stream("libx264", rate=rate)
            except Exception:  # noqa: BLE001 - codec not built into this ffmpeg
                self.stream = self.container.add_stream("mpeg4", rate=rate)
            self.stream.width, self.stream.height, self.stream.pix_fmt = arr.shape[1], arr.shape[0], "yuv420p"
        for packet in self.stream.encode(
            av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
        ):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()


def _rows(file: str, faces: list[FacePrediction], frame: int | None = None) -> list[dict]:
    rows = []
    for j, f in enumerate(faces):
        row = {"file": file, **({"frame": frame} if frame is not None else {}), "face": j}
        row.update(f.to_row())
        rows.append(row)
    return rows


def _predict_video(
    rec: Recognizer,
    path: Path,
    name: str,
    summary: PredictSummary,
    rows: list,
    overlay: Path | None,
    stride: int,
    max_frames: int | None,
    progress: bool,
) -> None:
    from .video import video_info

    info = video_info(path)
    total = -(-info.n_frames // stride) if info.n_frames else None
    if max_frames:
        total = min(total or max_frames, max_frames)
    writer = _VideoWriter(overlay, (info.fps or 25.0) / stride) if overlay is not None else None
    try:
        for index, frame, faces in _bar(
            rec.predict_video(path, stride=stride, max_frames=max_frames),
            total=total,
            desc=Path(name).name,
            progress=progress,
        ):
            summary.frames += 1
            summary.faces += len(faces)
            summary.without_face += not faces
            rows += _rows(name, faces, frame=index)
            if writer is not None:
                writer.write(draw_overlay(frame, faces))
    finally:
        if writer is not None:
            writer.close()
            summary.overlays.append(overlay)
    summary.videos += 1


def predict_path(
    rec: Recognizer,
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    overlay: str | os.PathLike | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    progress: bool = True,
    files_per_batch: int = 8,
) -> tuple[Any, PredictSummary]:
    """Predict every face of an image, a video or a folder of them (recursively); one row per face.

    Returns ``(DataFrame, summary)`` and writes the CSV to ``out`` (atomically) when given. Unreadable
    files inside a folder are skipped and listed in the summary; a single unreadable file raises.
    ``overlay``: an annotated image / video for a single file, a folder mirroring the input for a
    folder. Videos get a ``frame`` column (decoded frame index; every ``stride``-th frame is used).
    """
    import pandas as pd

    from .datasets.images import ImageError
    from .io import atomic_to_csv
    from .video import VideoDecodeError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected an image, a video or a folder)")
    is_dir = path.is_dir()
    files = list_media(path) if is_dir else [path]
    if is_dir and not files:
        raise FileNotFoundError(
            f"{path} holds no image or video file ({', '.join(sorted(IMAGE_SUFFIXES))}, "
            f"{', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    summary, rows = PredictSummary(), []
    has_video = any(f.suffix.lower() in VIDEO_SUFFIXES for f in files)
    overlay = Path(overlay) if overlay is not None else None

    def overlay_for(f: Path, video: bool) -> Path | None:
        if overlay is None:
            return None
        if not is_dir:
            return overlay
        rel = f.relative_to(path)
        return overlay / (rel.with_suffix(".mp4") if video else rel)

    def name_of(f: Path) -> str:
        return str(f.relative_to(path)) if is_dir else str(f)

    images = [f for f in files if f.suffix.lower() not in VIDEO_SUFFIXES]
    videos = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
    bar = _bar(total=len(images), desc="images", progress=progress and is_dir) if images else None
    for start in range(0, len(images), files_per_batch):
        chunk, arrays = [], []
        for f in images[start : start + files_per_batch]:
            try:
                arrays.append(load_image(f))
                chunk.append(f)
            except (ImageError, OSError, ValueError) as exc:
                if not is_dir:
                    raise
                summary.skipped.append(
                    (name_of(f), getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}")
                )
        for f, arr, faces in zip(chunk, arrays, rec.predict_arrays(arrays)):
            summary.images += 1
            summary.faces += len(faces)
            summary.without_face += not faces
            rows += _rows(name_of(f), faces)  # images of a mixed folder: empty frame
            target = overlay_for(f, video=False)
            if target is not None:
                from .io import atomic_open

                with atomic_open(target, "wb") as fh:
                    draw_overlay(arr, faces).save(
                        fh, format=Image.registered_extensions().get(target.suffix.lower(), "PNG")
                    )
                summary.overlays.append(target)
        if bar is not None:
            bar.update(len(images[start : start + files_per_batch]))
    if bar is not None:
        bar.close()
    for f in videos:
        try:
            _predict_video(
                rec, f, name_of(f), summary, rows, overlay_for(f, video=True), stride, max_frames, progress
            )
        except (VideoDecodeError, OSError) as exc:
            if not is_dir:
                raise
            summary.skipped.append((name_of(f), f"{type(exc).__name__}: {exc}"))
    df = pd.DataFrame(rows, columns=columns(rec, video=has_video))
    if out is not None:
        summary.out = atomic_to_csv(df, out)
    return df, summary
