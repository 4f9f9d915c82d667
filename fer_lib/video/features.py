"""Per-frame face features of one video: decode -> detect -> select -> tight crop -> CNN features.

Detection and feature extraction are injected objects (duck-typed, see :class:`FaceDetectorLike`
and :class:`FeatureExtractor`), so the pipeline is testable with fakes and works with any detector
or network. The defaults (``detector=None``) build ``fer_lib.faces.FaceDetector`` lazily.

Throughput: a background thread decodes frames into batches and feeds a bounded queue (``prefetch``
batches deep), so detection and feature extraction of batch k run while batch k+1 decodes (PyAV
releases the GIL while decoding, torch while computing). At most ``prefetch + 2`` batches of frames
exist at any time (with ``detect_every=k``, plus at most k - 1 frames waiting for the next detection),
and of each frame only the small per-face feature/score/box arrays are kept, so memory stays bounded
for videos of any length.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..faces import DEFAULT_THRESHOLDS, align_five_points, interpolate_boxes, select_faces
from ..preprocess import Preprocess, for_model
from .decode import iter_frames
from .pooling import pool_afew, pool_vgaf

MODES = ("afew", "vgaf")
#: Paper A's minimum face sizes (pixels): AFEW one face >= 32, VGAF every face >= 64.
DEFAULT_MIN_FACE = {"afew": 32, "vgaf": 64}
TIGHT = Preprocess(1)  # the crop rule of paper A (no margin); the size is the extractor's business
#: Side of faces aligned on five landmarks when the extractor names no input size (paper A's VGAF: 224).
ALIGN_SIZE = 224


# ------------------------------------------------------------------------------------------ protocols
@runtime_checkable
class FaceDetectorLike(Protocol):
    """What the pipeline needs from a detector (``fer_lib.faces.FaceDetector`` is one). Aligned faces
    (``align=True``) also need ``detect_batch(frames, landmarks=True)``: one ``(boxes (k, 5), points
    (k, 5, 2))`` pair per frame, MTCNN's five landmarks."""

    def detect_batch(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """One ``(k, 5)`` array ``[x1, y1, x2, y2, prob]`` per RGB ``uint8`` frame."""
        ...


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the pipeline needs from a feature network.

    ``key`` identifies the checkpoint and the preprocessing; it is part of the feature-cache key, so
    two extractors with the same key must produce the same features.
    """

    key: str

    def features(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """RGB ``uint8`` crops -> (features ``[N, D]`` float32, class scores ``[N, C]`` float32)."""
        ...


# ------------------------------------------------------------------------------------- torch extractor
class TorchFeatureExtractor:
    """Batched CNN features (and softmax scores) of face crops for any ``nn.Module``.

    Features: ``model.forward_features(x)``; a 4-D output (timm's unpooled map) is pooled with
    ``model.forward_head(x, pre_logits=True)`` where the model has it, else by global average.
    Scores (softmax of logits), first match wins: ``scores_fn(features)``; a ``model.heads`` dict with
    ``head``; a timm classifier (``model.get_classifier()``, when it is not the identity); a model
    whose ``forward(x)`` returns a dict with ``head`` (one extra forward pass per batch); else no
    scores (``[N, 0]``). Pass ``scores_fn=False`` to skip scores.

    Preprocessing: the model's :class:`fer_lib.preprocess.Preprocess` (the one it was trained with,
    from its checkpoint) unless ``preprocess`` is given. ``key`` defaults to a hash of the weights and
    the preprocessing.
    """

    def __init__(
        self,
        model,
        preprocess: Preprocess | None = None,
        batch_size: int = 32,
        device: Any = "cpu",
        channels_last: bool = True,
        scores_fn: Callable | bool | None = None,
        head: str = "expression",
        key: str | None = None,
    ):
        import torch

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.preprocess = preprocess if preprocess is not None else for_model(model)
        self.batch_size = int(batch_size)
        self.head = head
        self._scores_fn = scores_fn
        self.key = key or self._default_key()

    @property
    def image_size(self) -> int:
        return self.preprocess.input_size

    def _default_key(self) -> str:
        h = hashlib.sha1()
        for name, t in self.model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        h.update(f"{type(self.model).__name__}|{self.preprocess.key}|{self.head}".encode())
        return f"{type(self.model).__name__}-{self.image_size}-{h.hexdigest()[:16]}"

    def to_input(self, crops: Sequence[np.ndarray]):
        """Crops -> normalised float tensor ``[B, 3, S, S]`` on the device."""
        import torch

        x = self.preprocess.normalise_torch(self.preprocess.batch(crops), self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def _pooled(self, x):
        f = self.model.forward_features(x)
        if f.ndim > 2:
            f = (
                self.model.forward_head(f, pre_logits=True)
                if hasattr(self.model, "forward_head")
                else f.flatten(2).mean(-1)
            )
        return f

    def _logits(self, x, feats):
        import torch

        fn = self._scores_fn
        if fn is False:
            return None
        if callable(fn):
            return fn(feats)
        heads = getattr(self.model, "heads", None)
        if isinstance(heads, torch.nn.ModuleDict) and self.head in heads:
            forward_heads = getattr(self.model, "forward_heads", None)  # fer_lib.models.MultiTaskNet
            return forward_heads(feats)[self.head] if callable(forward_heads) else heads[self.head](feats)
        get_cls = getattr(self.model, "get_classifier", None)
        if callable(get_cls):  # timm: a classifier unless it was built with num_classes=0
            cls = get_cls()
            if isinstance(cls, torch.nn.Module) and not isinstance(cls, torch.nn.Identity):
                return cls(feats)
            return None
        out = self.model(x)  # last resort: a forward returning {head: logits}
        if not isinstance(out, dict):
            self._scores_fn = False  # this model has no scores; do not pay for the forward again
            return None
        return out.get(self.head)

    def features(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Features ``[N, D]`` and softmax scores ``[N, C]`` (float32) of ``crops``, in batches."""
        import torch

        feats, scores = [], []
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                x = self.to_input(crops[i : i + self.batch_size])
                f = self._pooled(x)
                logits = self._logits(x, f)
                feats.append(f.float().cpu().numpy())
                p = (
                    torch.softmax(logits.float(), dim=1).cpu().numpy()
                    if logits is not None
                    else np.zeros((len(f), 0), np.float32)
                )
                scores.append(p)
        if not feats:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate(feats).astype(np.float32), np.concatenate(scores).astype(np.float32)


# -------------------------------------------------------------------------------- faces in one frame
#: Paper A's face selection per mode: AFEW the largest face of a frame, VGAF every face.
SELECTION = {"afew": "largest", "vgaf": "all"}
#: The selections a mode allows (:func:`fer_lib.faces.select_faces`): AFEW keeps one face per frame, the
#: largest (paper A's wording) or the most probable (its code); VGAF keeps every face.
SELECTIONS = {"afew": ("largest", "score"), "vgaf": ("all",)}


def selection(mode: str, select: str | None = None) -> str:
    """The face selection of ``mode``: ``select``, checked against :data:`SELECTIONS`, or the default."""
    if select is None:
        return SELECTION[mode]
    if select not in SELECTIONS[mode]:
        raise ValueError(f"{mode} face selection {select!r}; choose one of {', '.join(SELECTIONS[mode])}")
    return select


# ----------------------------------------------------------------------------------- video features
@dataclass
class VideoFeatures:
    """Per-face results of one video (flat arrays, one row per kept face).

    ``sampled`` holds the index of every frame that was examined; ``face_frame[i]`` is the frame of
    face ``i``; ``boxes[i]`` its ``[x1, y1, x2, y2, prob]``; ``features[i]`` / ``scores[i]`` its CNN
    outputs. ``error`` is set (and everything empty) when the file could not be decoded.
    """

    path: str
    mode: str
    sampled: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    face_frame: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    error: str = ""

    @property
    def n_frames(self) -> int:
        """Frames examined (after stride / fps sampling)."""
        return int(len(self.sampled))

    @property
    def n_faces(self) -> int:
        return int(len(self.face_frame))

    @property
    def n_frames_with_face(self) -> int:
        return int(len(np.unique(self.face_frame)))

    @property
    def has_face(self) -> bool:
        return self.n_faces > 0

    def per_frame(self) -> list[np.ndarray]:
        """Features grouped by frame, one ``[k_t, D]`` array per frame with a face, in frame order."""
        if not self.n_faces:
            return []
        order = np.argsort(self.face_frame, kind="stable")
        ff, feats = self.face_frame[order], self.features[order]
        cuts = np.flatnonzero(np.diff(ff)) + 1
        return np.split(feats, cuts)

    def pooled(self) -> np.ndarray | None:
        """The video descriptor of :mod:`fer_lib.video.pooling` for this mode (None without a face)."""
        if self.mode == "afew":
            return pool_afew(
                np.stack([f[0] for f in self.per_frame()])
                if self.n_faces
                else np.zeros((0, self.features.shape[1]), np.float32)
            )
        return pool_vgaf(self.per_frame())

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> VideoFeatures:
        kw = {f.name: arrays[f.name] for f in dataclasses.fields(cls)}
        for name in ("path", "mode", "error"):
            kw[name] = str(np.asarray(kw[name]).item())
        return cls(**kw)


def default_detector(min_face_size: int, device: Any = "cpu", thresholds: Sequence[float] | None = None):
    """``fer_lib.faces.FaceDetector(min_face_size=..., thresholds=...)``, imported only when needed."""
    from fer_lib.faces import FaceDetector

    return FaceDetector(min_face_size=min_face_size, device=device, thresholds=thresholds)


def detector_key(detector, min_face_size: int, thresholds: Sequence[float] | None = None) -> str:
    """A string naming a detector and its settings for cache keys: ``detector.key`` where it has one,
    else its class and (when the class defines one) its ``repr``, which should show the settings.
    ``detector=None`` names the :func:`default_detector` of ``min_face_size`` and ``thresholds``."""
    if detector is None:
        key = f"fer_lib.faces.FaceDetector(min_face_size={min_face_size})"
        if thresholds is not None and tuple(map(float, thresholds)) != DEFAULT_THRESHOLDS:
            key = key[:-1] + f", thresholds={[float(t) for t in thresholds]})"  # default: the old key
        return key
    key = getattr(detector, "key", None)
    if key:
        return str(key)
    name = f"{type(detector).__module__}.{type(detector).__qualname__}"
    if type(detector).__repr__ is not object.__repr__:  # a repr that shows the settings (FaceDetector)
        return f"{name}:{detector!r}"
    return name


# ------------------------------------------------------------------------------ background decoding
_DONE = object()


def prefetch_batches(
    frames: Iterable[tuple[int, np.ndarray]], batch_size: int, depth: int = 2
) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    """Group ``(index, frame)`` pairs into batches produced by a background thread.

    The thread fills a queue of at most ``depth`` batches (so decoding runs ahead by at most that
    much); an exception in the thread is re-raised here; closing the generator early stops the thread.
    ``depth=0`` decodes in the calling thread (no overlap).
    """
    if depth <= 0:
        yield from _batched(frames, batch_size)
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for batch in _batched(frames, batch_size):
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer and re-raised there
            put(exc)
        finally:
            close = getattr(frames, "close", None)
            if callable(close):
                close()

    thread = threading.Thread(target=work, name="video-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _batched(frames: Iterable[tuple[int, np.ndarray]], batch_size: int):
    idx, imgs = [], []
    for i, f in frames:
        idx.append(i)
        imgs.append(f)
        if len(imgs) == batch_size:
            yield idx, imgs
            idx, imgs = [], []
    if imgs:
        yield idx, imgs


def faces_in_batch(
    frames: list[np.ndarray],
    indices: list[int],
    detections: list[np.ndarray],
    mode: str,
    min_face_size: float,
    preprocess: Preprocess | None = None,
    select: str | None = None,
    align_size: int | None = None,
) -> tuple[list[np.ndarray], list[int], list[np.ndarray]]:
    """Select faces in each frame (:func:`fer_lib.faces.select_faces` with ``select``, by default the
    mode's :data:`SELECTION`) and crop them with the extractor's crop rule (``preprocess``; tight when
    None), or, with ``align_size``, align them on their five landmarks to that side
    (:func:`fer_lib.faces.align_five_points`; detections are then ``(k, 15)`` rows, see
    :func:`detect_rows`): (crops, frame index per crop, box ``[x1, y1, x2, y2, prob]`` per crop)."""
    if len(detections) != len(frames):
        raise ValueError(f"the detector returned {len(detections)} results for {len(frames)} frames")
    pre = preprocess if preprocess is not None else TIGHT
    rule = selection(mode, select)
    crops, where, boxes = [], [], []
    for frame, index, det in zip(frames, indices, detections):
        rows = select_faces(det, rule, min_size=min_face_size)
        if align_size is not None and len(rows) and rows.shape[1] < 15:
            raise ValueError(
                "aligned faces need the detector's five landmarks: rows of 15 columns (detect_rows)"
            )
        for row in rows:
            try:
                crops.append(
                    pre.crop(frame, row)
                    if align_size is None
                    else align_five_points(frame, row[5:15].reshape(5, 2), align_size)
                )
            except ValueError:  # a box (or landmarks) outside the frame
                continue
            where.append(index)
            boxes.append(row[:5])
    return crops, where, boxes


def detect_rows(
    detector: FaceDetectorLike, frames: list[np.ndarray], landmarks: bool = False
) -> list[np.ndarray]:
    """One float32 array of detections per frame: ``(k, 5)`` rows ``[x1, y1, x2, y2, prob]``, or with
    ``landmarks`` ``(k, 15)`` rows that add the five landmarks ``x, y`` (``detect_batch(..., landmarks=True)``)."""
    if not frames:
        return []
    if not landmarks:
        return [np.asarray(d, np.float32).reshape(-1, 5) for d in detector.detect_batch(frames)]
    out = []
    for boxes, points in detector.detect_batch(frames, landmarks=True):
        b = np.asarray(boxes, np.float32).reshape(-1, 5)
        out.append(np.concatenate([b, np.asarray(points, np.float32).reshape(len(b), 10)], axis=1))
    return out


def align_size(extractor) -> int:
    """Side of aligned faces: the extractor's input size (its ``preprocess``), else :data:`ALIGN_SIZE`."""
    pre = getattr(extractor, "preprocess", None)
    return pre.input_size if isinstance(pre, Preprocess) else ALIGN_SIZE


def keyframe_detections(
    detector: FaceDetectorLike,
    batches: Iterable[tuple[list[int], list[np.ndarray]]],
    every: int = 1,
    landmarks: bool = False,
) -> Iterator[tuple[list[int], list[np.ndarray], list[np.ndarray]]]:
    """``(indices, frames, detections)`` for a stream of frame batches, detecting only on keyframes.

    Keyframes are the sampled positions ``0, every, 2 * every, ...`` and the stream's last frame; each
    batch's keyframes go through ``detector.detect_batch`` at once. A frame between two keyframes gets
    their boxes interpolated by frame index (:func:`fer_lib.faces.interpolate_boxes`), so frames after a
    batch's last keyframe wait (at most ``every - 1`` of them) for the next batch's first detection.
    ``every=1`` detects every frame and yields the batches unchanged. ``landmarks``: detections are
    :func:`detect_rows`' ``(k, 15)`` rows, and the landmarks are interpolated with the boxes.
    """
    waiting: list[tuple[int, np.ndarray]] = []  # frames since the last keyframe
    last: tuple[int, np.ndarray] | None = None  # (frame index, boxes) of the last keyframe
    position = 0

    def settle(index: int, boxes: np.ndarray) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
        """The waiting frames (interpolated towards this keyframe), then the keyframe itself."""
        nonlocal waiting, last
        out_i, out_f, out_d = [], [], []
        for i, frame in waiting:
            out_i.append(i)
            out_f.append(frame)
            out_d.append(interpolate_boxes(last[1], boxes, (i - last[0]) / (index - last[0])))
        waiting, last = [], (index, boxes)
        return out_i, out_f, out_d

    for indices, frames in batches:
        keys = [j for j in range(len(frames)) if (position + j) % every == 0]
        found = dict(zip(keys, detect_rows(detector, [frames[j] for j in keys], landmarks)))
        position += len(frames)
        out_i, out_f, out_d = [], [], []
        for j, (index, frame) in enumerate(zip(indices, frames)):
            if j not in found:
                waiting.append((index, frame))
                continue
            boxes = found[j]
            for acc, part in zip((out_i, out_f, out_d), settle(index, boxes)):
                acc.extend(part)
            out_i.append(index)
            out_f.append(frame)
            out_d.append(boxes)
        if out_i:
            yield out_i, out_f, out_d
    if waiting:  # the stream ended between keyframes: its last frame becomes one
        index, frame = waiting.pop()
        boxes = detect_rows(detector, [frame], landmarks)[0]
        out_i, out_f, out_d = settle(index, boxes)
        yield out_i + [index], out_f + [frame], out_d + [boxes]


def extract_video_features(
    path: str | os.PathLike,
    detector: FaceDetectorLike | None,
    extractor: FeatureExtractor,
    mode: str = "afew",
    stride: int = 1,
    fps: float | None = None,
    min_face_size: int | None = None,
    batch_size: int = 32,
    max_frames: int | None = None,
    prefetch: int = 2,
    device: Any = "cpu",
    detect_every: int = 1,
    select: str | None = None,
    align: bool = False,
) -> VideoFeatures:
    """Decode ``path`` (sampled by ``stride`` / ``fps``), detect, select and crop faces, extract features.

    ``mode`` "afew" keeps the largest face per frame, "vgaf" every face; ``min_face_size`` defaults to
    paper A's 32 / 64 px. ``batch_size`` frames go through the detector at once, and their crops
    through ``extractor.features`` at once; ``prefetch`` batches are decoded ahead in a background
    thread (0: no thread). ``detector=None`` builds ``fer_lib.faces.FaceDetector`` on ``device``.
    ``detect_every=k`` runs the detector only on every k-th sampled frame (the first and the last
    included) and crops the frames in between with boxes interpolated between the two detections around
    them (:func:`keyframe_detections`). ``select`` overrides the mode's face selection (AFEW: ``"score"``
    keeps the most probable face instead of the largest; see :data:`SELECTIONS`). ``align=True`` crops
    each face aligned on the detector's five landmarks at the extractor's input size (:func:`align_size`)
    instead of its box. Decoding errors raise :class:`~fer_lib.video.decode.VideoDecodeError` naming the file.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    min_face = DEFAULT_MIN_FACE[mode] if min_face_size is None else min_face_size
    rule = selection(mode, select)
    size = align_size(extractor) if align else None
    if detector is None:
        detector = default_detector(min_face, device)
    every = max(1, int(detect_every))
    sampled, face_frame, boxes, feats, scores = [], [], [], [], []
    frames = iter_frames(path, stride=stride, fps=fps, max_frames=max_frames)
    # closing(): an exception below must stop the decode thread now, not when the traceback dies.
    with contextlib.closing(prefetch_batches(frames, batch_size, prefetch)) as batches:
        for indices, batch, dets in keyframe_detections(detector, batches, every, landmarks=align):
            sampled.extend(indices)
            crops, where, bxs = faces_in_batch(
                batch, indices, dets, mode, min_face, getattr(extractor, "preprocess", None), rule, size
            )
            if crops:
                f, s = extractor.features(crops)
                feats.append(np.asarray(f, np.float32))
                scores.append(np.asarray(s, np.float32))
                face_frame.extend(where)
                boxes.extend(bxs)
    return VideoFeatures(
        path=str(path),
        mode=mode,
        sampled=np.asarray(sampled, np.int64),
        face_frame=np.asarray(face_frame, np.int64),
        boxes=np.asarray(boxes, np.float32).reshape(-1, 5),
        features=np.concatenate(feats) if feats else np.zeros((0, 0), np.float32),
        scores=np.concatenate(scores) if scores else np.zeros((0, 0), np.float32),
    )
