"""Per-face features of one video: decode -> detect -> select -> crop -> CNN features.

Which frames and faces are used is one :class:`~fer_lib.video.sampling.Sampling`; the result is one
:class:`VideoFeatures` per video. Detection and feature extraction are injected objects (duck-typed,
see :class:`FaceDetectorLike` and :class:`FeatureExtractor`), so the pipeline is testable with fakes
and works with any detector or network. ``detector=None`` builds the sampling's MTCNN
(:func:`~fer_lib.video.sampling.default_detector`).

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

from ..faces import TIGHT, align_five_points, crop_faces, interpolate_boxes
from ..preprocess import Preprocess, for_model
from .sampling import Sampling, align_side, default_detector


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


# ----------------------------------------------------------------------------------- video features
@dataclass
class VideoFeatures:
    """Per-face results of one video (flat arrays, one row per kept face): what extraction returns and
    the cache stores; :mod:`fer_lib.video.pooling` turns it into a descriptor, :mod:`fer_lib.video.study`
    subsamples and compares it.

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

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> VideoFeatures:
        kw = {f.name: arrays[f.name] for f in dataclasses.fields(cls)}
        for name in ("path", "mode", "error"):
            kw[name] = str(np.asarray(kw[name]).item())
        return cls(**kw)


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
    sampling: Sampling,
    preprocess: Preprocess | None = None,
) -> tuple[list[np.ndarray], list[int], list[np.ndarray]]:
    """The sampling's faces of each frame (:func:`fer_lib.faces.crop_faces`: its selection and minimum
    face size), cropped with the extractor's crop rule (``preprocess``; tight when None), or with
    ``sampling.align`` aligned on their five landmarks (:func:`fer_lib.faces.align_five_points`) to the
    extractor's input size (:func:`~fer_lib.video.sampling.align_side`; detections are then ``(k, 15)``
    rows, see :func:`detect_rows`): (crops, frame index per crop, box ``[x1, y1, x2, y2, prob]`` per crop)."""
    if len(detections) != len(frames):
        raise ValueError(f"the detector returned {len(detections)} results for {len(frames)} frames")
    if sampling.align:
        side = align_side(preprocess)

        def crop(frame, row):
            return align_five_points(frame, row[5:15].reshape(5, 2), side)

    else:
        crop = (preprocess if preprocess is not None else TIGHT).crop
    crops, where, boxes = [], [], []
    for frame, index, det in zip(frames, indices, detections):
        if sampling.align and np.size(det) and np.shape(det)[-1] < 15:
            raise ValueError(
                "aligned faces need the detector's five landmarks: rows of 15 columns (detect_rows)"
            )
        c, rows = crop_faces(frame, det, crop, sampling.select, min_size=sampling.min_face)
        crops += c
        where += [index] * len(c)
        boxes += [row[:5] for row in rows]
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


def keyframe_detections(
    detector: FaceDetectorLike,
    batches: Iterable[tuple[list[int], list[np.ndarray]]],
    sampling: Sampling,
) -> Iterator[tuple[list[int], list[np.ndarray], list[np.ndarray]]]:
    """``(indices, frames, detections)`` for a stream of frame batches, detecting only on keyframes.

    Keyframes are the sampled positions ``0, every, 2 * every, ...`` (``every = sampling.detect_every``)
    and the stream's last frame; each
    batch's keyframes go through ``detector.detect_batch`` at once. A frame between two keyframes gets
    their boxes interpolated by frame index (:func:`fer_lib.faces.interpolate_boxes`), so frames after a
    batch's last keyframe wait (at most ``every - 1`` of them) for the next batch's first detection.
    ``every=1`` detects every frame and yields the batches unchanged. With ``sampling.align`` detections
    are :func:`detect_rows`' ``(k, 15)`` rows, and the landmarks are interpolated with the boxes.
    """
    every, landmarks = sampling.detect_every, sampling.align
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
    sampling: Sampling | None = None,
    batch_size: int = 32,
    prefetch: int = 2,
    device: Any = "cpu",
) -> VideoFeatures:
    """Decode the sampled frames of ``path``, detect, select and crop faces, extract their features.

    ``sampling`` decides the frames and faces (None: ``Sampling()``, paper A's AFEW defaults;
    :class:`~fer_lib.video.sampling.Sampling`: mode and face
    selection, stride / fps / max_frames, minimum face size, ``detect_every=k``: the detector only on
    every k-th sampled frame, the first and the last included, boxes interpolated in between
    (:func:`keyframe_detections`); ``align``: faces aligned on the detector's five landmarks at the
    extractor's input size instead of box crops). The rest changes speed, not results: ``batch_size``
    frames go through the detector at once, and their crops through ``extractor.features`` at once;
    ``prefetch`` batches are decoded ahead in a background thread (0: no thread); ``detector=None``
    builds the sampling's MTCNN on ``device``. Decoding errors raise
    :class:`~fer_lib.video.decode.VideoDecodeError` naming the file.
    """
    sampling = Sampling() if sampling is None else sampling
    if detector is None:
        detector = default_detector(sampling, device)
    preprocess = getattr(extractor, "preprocess", None)
    sampled, face_frame, boxes, feats, scores = [], [], [], [], []
    # closing(): an exception below must stop the decode thread now, not when the traceback dies.
    with contextlib.closing(prefetch_batches(sampling.frames(path), batch_size, prefetch)) as batches:
        for indices, batch, dets in keyframe_detections(detector, batches, sampling):
            sampled.extend(indices)
            crops, where, bxs = faces_in_batch(batch, indices, dets, sampling, preprocess)
            if crops:
                f, s = extractor.features(crops)
                feats.append(np.asarray(f, np.float32))
                scores.append(np.asarray(s, np.float32))
                face_frame.extend(where)
                boxes.extend(bxs)
    return VideoFeatures(
        path=str(path),
        mode=sampling.mode,
        sampled=np.asarray(sampled, np.int64),
        face_frame=np.asarray(face_frame, np.int64),
        boxes=np.asarray(boxes, np.float32).reshape(-1, 5),
        features=np.concatenate(feats) if feats else np.zeros((0, 0), np.float32),
        scores=np.concatenate(scores) if scores else np.zeros((0, 0), np.float32),
    )
