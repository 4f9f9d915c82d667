"""Streaming video decoding with PyAV: every frame, every n-th frame, or a fixed frame rate.

Frames are decoded one at a time and handed out as RGB ``uint8`` arrays; nothing holds the whole
video in memory. Any container and codec that ffmpeg reads works (AFEW's ``.avi``, VGAF's ``.mp4``,
``.mkv``, ...). Unreadable, truncated or stream-less files raise :class:`VideoDecodeError` naming the
file and saying what to do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

#: A decoded stream may end this many frames (or this fraction of the header count, whichever is
#: larger) before the container header says it should, before it counts as truncated: real encoders
#: and muxers are often off by a frame or two.
TRUNCATION_TOLERANCE_FRAMES = 2
TRUNCATION_TOLERANCE_FRACTION = 0.02


class VideoDecodeError(ValueError):
    """A video file that cannot be (fully) decoded; ``path`` names the file."""

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says about the first video stream (counts may be estimates)."""

    path: str
    width: int
    height: int
    fps: float | None  # average frame rate, None when the container does not say
    n_frames: int | None  # frame count from the header, None when unknown (e.g. mkv)
    duration: float | None  # seconds, None when unknown
    codec: str
    container: str


def _open(path: str | os.PathLike):
    """``av.open`` with errors that name the file and say what to do."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: video file not found; check the manifest's path column "
            "(paths must be absolute or relative to the working directory)"
        )
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(
            path,
            f"not a readable video ({exc.__class__.__name__}: {exc.strerror}); "
            "the file is truncated or not a video: re-download or re-encode it, "
            "or remove it from the manifest",
        ) from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "has no video stream (audio only?); remove it from the manifest")
    return container


def _fps(stream) -> float | None:
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    return float(rate) if rate else None


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Header information of the first video stream of ``path`` (no frame is decoded)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        return VideoInfo(
            path=str(path),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=_fps(stream),
            n_frames=int(stream.frames) or None,
            duration=duration,
            codec=stream.codec_context.name,
            container=container.format.name,
        )
    finally:
        container.close()


def _frame_time(frame, index: int, fps: float | None, time_base: Fraction | None) -> float:
    """Presentation time of a decoded frame in seconds (falls back to index / fps)."""
    if frame.pts is not None and time_base is not None:
        return float(frame.pts * time_base)
    return index / (fps or 25.0)


def _check_complete(
    path,
    stream,
    n_decoded: int,
    last_time: float | None,
    start_time: float | None,
    fps: float | None,
    container_duration: float | None,
) -> None:
    """Raise when the stream ended well before the header's frame count or duration."""
    expected = int(stream.frames or 0)
    tol = max(TRUNCATION_TOLERANCE_FRAMES, math.ceil(TRUNCATION_TOLERANCE_FRACTION * expected))
    if expected > 0 and n_decoded < expected - tol:
        raise VideoDecodeError(
            path,
            f"looks truncated: the header says {expected} frames but decoding "
            f"stopped after {n_decoded}; re-download or re-encode it "
            "(or pass check_complete=False to use the decodable frames)",
        )
    if expected == 0 and container_duration and fps and last_time is not None and start_time is not None:
        missing = container_duration - (last_time - start_time + 1.0 / fps)
        if missing * fps > tol and missing > TRUNCATION_TOLERANCE_FRACTION * container_duration:
            raise VideoDecodeError(
                path,
                f"looks truncated: the header says {container_duration:.2f} s but "
                f"decoding stopped at {last_time - start_time:.2f} s; re-download "
                "or re-encode it (or pass check_complete=False)",
            )


def iter_frames(
    path: str | os.PathLike,
    stride: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    check_complete: bool = True,
    threads: bool = True,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, rgb)`` for the sampled frames of ``path``, streaming.

    ``frame_index`` counts decoded frames from 0 in presentation order, so it is the same whatever
    the sampling. Sampling: ``stride=n`` keeps frames 0, n, 2n, ...; ``fps=r`` resamples to at most
    ``r`` frames per second by keeping the first frame of each ``1/r`` s slot (frames are never
    duplicated, so ``r`` above the source rate keeps every frame); both may be combined (fps first,
    then every ``stride``-th of the kept frames). ``max_frames`` stops after that many yielded frames.
    ``rgb`` is an ``HxWx3 uint8`` RGB array. A file that ends well before its header's frame count
    or duration raises :class:`VideoDecodeError` at the end (``check_complete=False`` accepts it).
    """
    import av

    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"  # ffmpeg frame/slice threading; releases the GIL while decoding
        src_fps, time_base = _fps(stream), stream.time_base
        cont_duration = container.duration / 1_000_000 if container.duration else None
        n_decoded = n_kept = n_yielded = 0
        last_slot, start_time, last_time = -1, None, None
        try:
            for index, frame in enumerate(container.decode(stream)):
                n_decoded = index + 1
                t = _frame_time(frame, index, src_fps, time_base)
                start_time = t if start_time is None else start_time
                last_time = t
                if fps is not None:
                    slot = math.floor((t - start_time) * fps + 1e-6)
                    if slot <= last_slot:
                        continue
                    last_slot = slot
                n_kept += 1
                if (n_kept - 1) % stride:
                    continue
                yield index, frame.to_ndarray(format="rgb24")
                n_yielded += 1
                if max_frames is not None and n_yielded >= max_frames:
                    return
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(
                path,
                f"decoding failed after {n_decoded} frames ({exc.__class__.__name__}: "
                f"{exc.strerror}); the file is truncated or corrupt: re-download or "
                "re-encode it, or remove it from the manifest",
            ) from exc
        if n_decoded == 0:
            raise VideoDecodeError(
                path, "contains no decodable frame; re-encode it or remove it from the manifest"
            )
        if check_complete:
            _check_complete(path, stream, n_decoded, last_time, start_time, src_fps, cont_duration)
    finally:
        container.close()
