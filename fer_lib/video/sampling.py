"""Which frames and faces of a video feed its features: one :class:`Sampling` value, and its cache key.

A ``Sampling`` holds every setting that decides the per-face features of a video: the dataset's mode
and face selection (AFEW one face per frame, the largest or the most probable; VGAF every face), the
frame sampling (stride, fps, frame cap), the minimum face size, MTCNN's thresholds, detection on every
k-th frame only and five-point alignment. Decoding, detection, extraction and the feature cache take
it; :meth:`Sampling.key` is the one place a cache key is built. What changes only the speed (batch
sizes, prefetch depth, threads, device) is not part of it, nor of the key.

    s = Sampling.from_config(cfg.video, "afew")      # the profile's sampling of a dataset
    frames = s.frames(path)                          # (index, rgb) of the sampled frames
    key = s.key(path, extractor, detector)           # names the features in the cache
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import VideoConfig
from ..faces import DEFAULT_THRESHOLDS, FaceDetector
from ..preprocess import Preprocess
from .decode import iter_frames

MODES = ("afew", "vgaf")
#: Paper A's face selection per mode: AFEW the largest face of a frame, VGAF every face.
SELECTION = {"afew": "largest", "vgaf": "all"}
#: The selections a mode allows (:func:`fer_lib.faces.select_faces`): AFEW keeps one face per frame, the
#: largest (paper A's wording) or the most probable (its code); VGAF keeps every face.
SELECTIONS = {"afew": ("largest", "score"), "vgaf": ("all",)}
#: Side of faces aligned on five landmarks when the extractor names no input size (paper A's VGAF: 224).
ALIGN_SIZE = 224
CACHE_VERSION = 1


def min_face(video: VideoConfig, mode: str) -> int:
    """A mode's minimum face size (px, longer box side) in ``video``: AFEW's one face, VGAF's every face."""
    return int(video.min_face_afew if mode == "afew" else video.min_face_vgaf)


def align_side(preprocess: Preprocess | None) -> int:
    """Side of aligned faces: the extractor's input size (its ``preprocess``), else :data:`ALIGN_SIZE`."""
    return preprocess.input_size if isinstance(preprocess, Preprocess) else ALIGN_SIZE


def file_identity(path: str | os.PathLike, how: str = "stat") -> str:
    """``stat``: resolved path + size + mtime (cheap); ``content``: sha256 of the bytes (robust to copies)."""
    p = Path(path).resolve()
    if how == "stat":
        st = p.stat()
        return f"{p}|{st.st_size}|{st.st_mtime_ns}"
    if how == "content":
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return f"sha256:{h.hexdigest()}"
    raise ValueError(f"file_id must be 'stat' or 'content', got {how!r}")


@dataclass(frozen=True)
class Sampling:
    """Everything that decides which frames and faces of a video feed its features.

    ``mode``: ``afew`` (one face per frame) or ``vgaf`` (every face). ``select``: the face selection,
    checked against :data:`SELECTIONS` (None: the mode's :data:`SELECTION`). ``stride`` / ``fps`` /
    ``max_frames``: frame sampling (:func:`~fer_lib.video.decode.iter_frames`). ``min_face``: smallest face
    kept, px of its longer side (None: the mode's ``VideoConfig`` default). ``detect_every=k``: MTCNN on
    every k-th sampled frame, boxes interpolated between. ``thresholds``: MTCNN's P-/R-/O-Net thresholds
    (of the default detector). ``align``: faces aligned on their five landmarks instead of box crops.
    Defaults are resolved on construction, so equal settings make equal values.
    """

    mode: str = "afew"
    select: str | None = None
    stride: int = 1
    fps: float | None = None
    max_frames: int | None = None
    min_face: int | None = None
    detect_every: int = 1
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    align: bool = False

    def __post_init__(self):
        mode = self.mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        select = SELECTION[mode] if self.select is None else self.select
        if select not in SELECTIONS[mode]:
            raise ValueError(f"{mode} face selection {select!r}; choose one of {', '.join(SELECTIONS[mode])}")
        checks = {
            "stride": (self.stride, self.stride >= 1),
            "fps": (self.fps, self.fps is None or self.fps > 0),
            "max_frames": (self.max_frames, self.max_frames is None or self.max_frames >= 1),
            "min_face": (self.min_face, self.min_face is None or self.min_face >= 0),
            "detect_every": (self.detect_every, self.detect_every >= 1),
        }
        for name, (value, ok) in checks.items():
            if not ok:
                raise ValueError(f"Sampling.{name}={value!r} is out of range (see the Sampling docstring)")
        thresholds = tuple(float(t) for t in self.thresholds)
        if len(thresholds) != 3:
            raise ValueError(f"MTCNN needs 3 thresholds (P-, R-, O-Net), got {list(thresholds)}")
        resolved = {
            "select": select,
            "stride": int(self.stride),
            "fps": None if self.fps is None else float(self.fps),
            "max_frames": None if self.max_frames is None else int(self.max_frames),
            "min_face": min_face(VideoConfig(), mode) if self.min_face is None else int(self.min_face),
            "detect_every": int(self.detect_every),
            "thresholds": thresholds,
            "align": bool(self.align),
        }
        for name, value in resolved.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_config(cls, video: VideoConfig, dataset: str) -> Sampling:
        """The profile's sampling of ``dataset`` (afew | vgaf): AFEW one face per frame (``video.afew_face``)
        of at least ``video.min_face_afew`` px, VGAF every face of at least ``video.min_face_vgaf`` px
        (aligned on five landmarks with ``video.align_vgaf``); frames, thresholds and detect_every from
        ``video``."""
        if dataset not in MODES:
            raise ValueError(f"video datasets are {' and '.join(MODES)}, got {dataset!r}")
        afew = dataset == "afew"
        if afew and video.afew_face not in SELECTIONS["afew"]:
            raise ValueError(
                f"video.afew_face={video.afew_face!r}; choose one of {', '.join(SELECTIONS['afew'])}"
            )
        return cls(
            mode=dataset,
            select=video.afew_face if afew else None,
            stride=video.stride,
            fps=video.fps,
            max_frames=video.max_frames,
            min_face=min_face(video, dataset),
            detect_every=video.detect_every,
            thresholds=tuple(video.mtcnn_thresholds),
            align=bool(video.align_vgaf) and not afew,
        )

    def replace(self, **changes: Any) -> Sampling:
        """A copy with ``changes`` (``dataclasses.replace``; a new mode keeps this one's resolved faces)."""
        return dataclasses.replace(self, **changes)

    # --------------------------------------------------------------------------------- the frames
    def frames(
        self, path: str | os.PathLike, check_complete: bool = True
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(frame_index, rgb)`` of the sampled frames of ``path``, streaming (stride, fps, max_frames)."""
        return iter_frames(
            path, stride=self.stride, fps=self.fps, max_frames=self.max_frames, check_complete=check_complete
        )

    def align_size(self, extractor: Any) -> int | None:
        """Side of the aligned faces fed to ``extractor`` (its input size, else 224); None for box crops."""
        return align_side(getattr(extractor, "preprocess", None)) if self.align else None

    # ---------------------------------------------------------------------------- the cache key
    def detector_key(self, detector: Any = None) -> str:
        """A string naming a detector and its settings: ``detector.key`` where it has one, else its class
        and (when the class defines one) its ``repr``, which should show the settings. ``detector=None``
        names :func:`default_detector` of this sampling (its minimum face size and thresholds)."""
        if detector is None:
            key = f"fer_lib.faces.FaceDetector(min_face_size={self.min_face})"
            if self.thresholds != DEFAULT_THRESHOLDS:  # the default keeps the key it had before thresholds
                key = key[:-1] + f", thresholds={list(self.thresholds)})"
            return key
        key = getattr(detector, "key", None)
        if key:
            return str(key)
        name = f"{type(detector).__module__}.{type(detector).__qualname__}"
        if type(detector).__repr__ is not object.__repr__:  # a repr that shows the settings (FaceDetector)
            return f"{name}:{detector!r}"
        return name

    def key(
        self, path: str | os.PathLike, extractor: Any, detector: Any = None, file_id: str = "stat"
    ) -> str:
        """Hex digest naming the features of ``path`` under this sampling, ``extractor`` (its ``key``: the
        checkpoint and preprocessing) and ``detector`` (:meth:`detector_key`); the file by
        :func:`file_identity` (``file_id``). Settings at their defaults add nothing, so entries made
        before a setting existed keep their names."""
        parts: dict[str, Any] = {
            "v": CACHE_VERSION,
            "file": file_identity(path, file_id),
            "extractor": str(extractor.key),
            "mode": self.mode,
            "stride": self.stride,
            "fps": self.fps,
            "max_frames": self.max_frames,
            "min_face_size": self.min_face,
            "detector": self.detector_key(detector),
        }
        if self.detect_every != 1:  # boxes between keyframes: faces matched and interpolated
            parts["detect_every"] = [self.detect_every, "matched faces interpolated"]
        if self.select != SELECTION[self.mode]:
            parts["select"] = self.select
        if self.align:
            parts["align"] = ["five_points", "insightface-arcface", self.align_size(extractor)]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def default_detector(sampling: Sampling, device: Any = "cpu"):
    """MTCNN (``fer_lib.faces.FaceDetector``) with the sampling's minimum face size and thresholds."""
    return FaceDetector(min_face_size=sampling.min_face, device=device, thresholds=sampling.thresholds)
