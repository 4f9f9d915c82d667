"""Predictions for people who just want them: ``Recognizer(checkpoint).predict(image)``.

    rec = Recognizer("runs/default/checkpoints/02_expression_va/best.pt")   # or "model.onnx"
    faces = rec.predict("photo.jpg")           # path, PIL image or RGB array
    faces[0].expression, faces[0].expression_probs, faces[0].valence, faces[0].age
    rec.predict_batch([img1, img2])             # faces of many images in one batched forward
    rec.predict_faces([crop1, crop2])           # already-cropped faces (RGB arrays), no detection
    Recognizer(ckpt, crops=True).predict(img)   # the whole image is one face (FER2013, CK+ crops)

Pipeline: MTCNN (:class:`fer_lib.faces.FaceDetector`, offline weights) -> every face with detection
probability >= ``min_prob`` (:func:`fer_lib.faces.select_faces`) -> the model's own
:class:`fer_lib.preprocess.Preprocess`, read from its checkpoint (the crop rule, input size and
normalisation it was trained with) -> one batched forward of every crop. With ``crops=True`` there is
no detection: each image is one face, its box the whole image.

Fast path: the crops are resized into one ``uint8`` NHWC array; normalisation is one vectorised
operation on the whole batch, whose NCHW view of the NHWC buffer is already ``channels_last`` (the
layout the model is converted to), under ``torch.inference_mode``; no per-face tensor transforms.
BatchNorm layers are folded into the convolutions at load (checked against the unfolded outputs), and
faces go through the network in passes of :data:`CPU_BATCH` on a CPU (cache-sized).
``backend="onnx"`` runs a file written by :func:`fer_lib.export.export_onnx` with onnxruntime instead
(:mod:`fer_lib.serving.backends`). Any model kind a checkpoint holds is served (paper A's MultiTaskNet,
paper B's Emotion-GCN: expression + valence/arousal).

Per face (heads the checkpoint has, else None): ``box`` ``(x1, y1, x2, y2)`` and ``det_prob`` (None in
crops mode); ``expression`` (argmax name) and ``expression_probs`` (canonical order of
:data:`fer_lib.labels.EXPRESSIONS_8`, sums to 1); ``valence`` / ``arousal``; ``age`` (years, read out
as the checkpoint's ``age_mode`` says: paper A's top-2 expected value or the bins' median); ``gender``
(male where p(male) >= the model's threshold: paper A's 0.6, or the one its stage chose on validation
data) and ``p_female``; ``ethnicity`` and ``ethnicity_probs`` (UTKFace's five classes). Which fields a
head fills, how its outputs read and its CSV columns come from the task
registry (:mod:`fer_lib.tasks`); the heads are listed in the order of their fields here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import VideoConfig
from ..datasets.images import load_image  # noqa: F401 - re-exported (predict, callers of the serving API)
from ..faces import crop_faces
from ..tasks import Readout, TaskSpec, all_tasks
from .backends import OnnxBackend, make_backend, run_passes
from .default_model import default_checkpoint

#: Faces per forward pass on a CPU (bench/bench_inference.py: 8 faces per pass beat 32 per face).
CPU_BATCH = 8


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
        """A flat dict (one CSV row): box, det_prob, expression, expr_<name>..., valence, ... (each
        head's fields; a dict of class probabilities spreads over ``<column prefix><class>`` columns)."""
        box = self.box if self.box is not None else (None,) * 4
        row: dict[str, Any] = dict(zip(("x1", "y1", "x2", "y2"), box))
        row["det_prob"] = self.det_prob
        for spec in served_tasks():
            for name in spec.fields:
                value = getattr(self, name)
                if isinstance(value, dict):
                    row.update({f"{spec.column_prefix}{k}": v for k, v in value.items()})
                else:
                    row[name] = value
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


_FIELDS = tuple(f.name for f in dataclasses.fields(FacePrediction))


def served_tasks(heads: Iterable[str] | None = None) -> list[TaskSpec]:
    """The registry's served heads (those in ``heads``, if given) in the order of their fields in
    :class:`FacePrediction`: the order of decoded arrays, CSV rows and columns."""
    specs = [s for s in all_tasks() if s.fields and (heads is None or s.key in heads)]
    missing = {s.key: [f for f in s.fields if f not in _FIELDS] for s in specs}
    missing = {k: v for k, v in missing.items() if v}
    if missing:
        raise ValueError(f"head(s) serve field(s) FacePrediction does not declare: {missing}; add them to it")
    return sorted(specs, key=lambda s: _FIELDS.index(s.fields[0]))


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
        min_face_size: smallest face (pixels) MTCNN looks for (default ``VideoConfig.min_face_predict``).
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
        crops: every input image is one already-cropped face (dataset crops such as FER2013's 48 x 48 or
            CK+): no detection, the whole image is the face box, ``det_prob`` stays None.
    """

    def __init__(
        self,
        checkpoint=None,
        device: str = "cpu",
        backend: str | None = None,
        *,
        min_face_size: int = VideoConfig.min_face_predict,
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
        crops: bool = False,
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
            make_backend(c, backend, device, threads, channels_last, precision, fold_bn, rows)
            for c in sources
        ]
        self._backend = b = self._backends[0]
        self.backend_name = backend or ("onnx" if isinstance(b, OnnxBackend) else "torch")
        self.tasks, self.label_orders = {}, {}
        for other in self._backends:
            shared = set(self.tasks) & set(other.tasks)
            if shared:
                raise ValueError(f"{other.source} has head(s) {sorted(shared)} that an earlier model has too")
            self.tasks.update(other.tasks)
            self.label_orders.update(other.label_orders)
        owner = {t: o for o in self._backends for t in o.tasks}
        self.age_mode = owner["age"].age_mode if "age" in owner else b.age_mode
        # p(male) from which a face is called male: the gender model's own
        self.male_threshold = owner["gender"].male_threshold if "gender" in owner else b.male_threshold
        self.preprocess = b.preprocess  # the (first) model's own: crop rule, input size, mean/std
        self.source = " + ".join(str(o.source) for o in self._backends)
        self.min_face_size = int(min_face_size)
        self.min_prob, self.largest_only = float(min_prob), largest_only
        self.crops = bool(crops)
        if self.crops and detector is not None:
            raise ValueError("crops=True runs no detector (each image is one face); pass detector or crops")
        self._detector = detector
        self._readouts = self._make_readouts()
        self.overlap = bool(overlap)
        self._pool = None  # one preprocessing thread, started on first use

    def __repr__(self) -> str:
        return (
            f"Recognizer({self.source!r}, backend={self.backend_name!r}, heads={list(self.tasks)}, "
            f"image_size={self.image_size}{', crops' if self.crops else ''})"
        )

    @property
    def image_size(self) -> int:
        return self.preprocess.input_size

    # ------------------------------------------------------------------------------------ labels
    def _make_readouts(self) -> dict[str, Readout]:
        """Per served head: class names and the column mapping into the canonical order (from the
        stored label order), the age mode and the male threshold."""
        return {
            spec.key: spec.readout(
                self.tasks[spec.key], self.label_orders.get(spec.key), self.age_mode, self.male_threshold
            )
            for spec in served_tasks(self.tasks)
        }

    def label_names(self, task: str) -> list[str]:
        """Class names of a served head's columns (canonical order where the registry maps it, else the
        model's stored order); [] for a head the model lacks."""
        readout = self._readouts.get(task)
        return list(readout.names) if readout is not None else []

    @property
    def expression_names(self) -> list[str]:
        return self.label_names("expression")

    @property
    def ethnicity_names(self) -> list[str]:
        return self.label_names("race")

    @property
    def detector(self):
        if self._detector is None:
            from ..faces import FaceDetector

            self._detector = FaceDetector(min_face_size=self.min_face_size, device=self.device)
        return self._detector

    # ---------------------------------------------------------------------------------- the core

    def raw(self, batch_u8: np.ndarray, backend=None) -> dict[str, np.ndarray]:
        """Head outputs (logits / regressions) for a preprocessed ``uint8`` batch, in chunks: of
        ``backend``, else of every model (combined models must then share one preprocessing)."""
        bs, out = self.batch_size, {}
        for b in [backend] if backend is not None else self._backends:
            out.update(run_passes(b, (batch_u8[i : i + bs] for i in range(0, len(batch_u8), bs))))
        return out

    def decode(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Head outputs -> ``expression_probs`` (canonical), ``valence``, ``arousal``, ``age``,
        ``p_female``, ``ethnicity_probs`` (only for the heads present; each head's registry decoder)."""
        out: dict[str, np.ndarray] = {}
        for spec in served_tasks(raw):
            out.update(spec.decoder.serve(spec, raw[spec.key], self._readouts[spec.key]))
        return out

    def infer(self, crops: Sequence, per_model: Sequence[Sequence] | None = None) -> dict[str, np.ndarray]:
        """Decoded arrays (see :meth:`decode`) for already-cropped faces, in passes of ``batch_size``;
        ``per_model``: each model's own crops of the same faces (its crop rule), in place of ``crops``."""
        per_model = per_model if per_model is not None else [crops] * len(self._backends)
        if len(per_model[0]) == 0:
            return {}
        raw: dict[str, np.ndarray] = {}
        for b, own in zip(self._backends, per_model):  # each model through its own preprocessing
            raw.update(run_passes(b, self._passes(own, b.preprocess)))
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
        heads = served_tasks(self.tasks)  # dec holds every head's arrays (infer decodes them all)
        faces = []
        for i in range(n):
            f = FacePrediction()
            for spec in heads:
                for name, value in spec.decoder.face(spec, dec, i, self._readouts[spec.key]).items():
                    setattr(f, name, value)
            faces.append(f)
        return faces

    def predict_faces(self, crops: Sequence) -> list[FacePrediction]:
        """Predictions for already-cropped faces (RGB arrays or PIL images), batched; no detection."""
        return self._to_faces(self.infer(crops), len(crops))

    # ------------------------------------------------------------------------------ with detection
    def _crops(self, arr: np.ndarray, boxes: np.ndarray) -> tuple[list[tuple], list[np.ndarray]]:
        """The kept faces of one image, each as one crop per model (each model's own crop rule: a model
        trained on a crop dataset frames the detector's box as that dataset framed its faces)."""

        def crop(image, row):
            return tuple(b.preprocess.crop(image, row) for b in self._backends)

        select = "largest" if self.largest_only else "all"
        return crop_faces(arr, boxes, crop, select, min_prob=self.min_prob)

    def predict_arrays(
        self, arrays: Sequence[np.ndarray], detections: Sequence[np.ndarray] | None = None
    ) -> list[list[FacePrediction]]:
        """Faces of RGB ``uint8`` arrays; ``detections`` skips the detector (one ``(k, 5)`` per array).
        In crops mode each array is one face, its box the whole array."""
        if self.crops:
            if detections is not None:
                raise ValueError("crops=True takes no detections: each image is one face")
            faces = self.predict_faces(list(arrays))  # each model crops nothing: the box is the image
            for f, arr in zip(faces, arrays):
                f.box = (0.0, 0.0, float(arr.shape[1]), float(arr.shape[0]))
            return [[f] for f in faces]
        if detections is None:
            detections = self.detector.detect_batch(list(arrays)) if len(arrays) else []
        crops, where, boxes = [], [], []
        for i, (arr, det) in enumerate(zip(arrays, detections)):
            c, b = self._crops(arr, det)
            crops += c
            boxes += b
            where += [i] * len(c)
        per_model = [[c[k] for c in crops] for k in range(len(self._backends))]
        faces = self._to_faces(self.infer(crops, per_model), len(crops))
        out: list[list[FacePrediction]] = [[] for _ in arrays]
        for f, i, b in zip(faces, where, boxes):
            f.box = tuple(float(v) for v in b[:4])
            f.det_prob = float(b[4])
            out[i].append(f)
        return out

    def predict(self, image) -> list[FacePrediction]:
        """Every face in one image (path, PIL image or RGB array), most probable detection first (crops
        mode: the image as one face)."""
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

        from ..video import iter_frames, prefetch_batches

        frames = iter_frames(path, stride=stride, max_frames=max_frames)
        with contextlib.closing(prefetch_batches(frames, batch_frames, prefetch)) as batches:
            for indices, batch in batches:
                yield from zip(indices, batch, self.predict_arrays(batch))
