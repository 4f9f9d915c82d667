"""``python -m fer_lib predict``: every face of an image, a video or a folder of them, one CSV row per face.

:func:`predict_path` runs a :class:`~fer_lib.serving.recognizer.Recognizer` over the media
(:func:`list_media`: images and videos by suffix, recursively), writes the CSV atomically (columns:
:func:`columns`, the heads of the model) and optional overlays (:func:`~fer_lib.serving.overlay.draw_overlay`;
videos re-encoded by :class:`VideoWriter`), and returns a :class:`PredictSummary` of what it did,
including unreadable files skipped and a hint to use ``--crops`` when small images show no face.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..datasets._common import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .overlay import draw_overlay
from .recognizer import FacePrediction, Recognizer, load_image, served_tasks

#: Images under this many pixels (shorter side) that show no face get the ``--crops`` hint: dataset face
#: crops are 48-64 px (FER2013, CK+48, UTKFace's small chips), photos rarely; MTCNN missed the face in
#: 13 % of 150 FER2013 test crops at 48 px (and in a tight 48 px crop of the astronaut's face).
SMALL_IMAGE_SIDE = 100


@dataclass
class PredictSummary:
    """What :func:`predict_path` did."""

    out: Path | None = None
    images: int = 0
    videos: int = 0
    frames: int = 0
    faces: int = 0
    without_face: int = 0  # images / frames in which no face was kept
    small_without_face: int = 0  # images under SMALL_IMAGE_SIDE px without a face: crops, perhaps
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
        if self.small_without_face:
            text += (
                f"\n  {self.small_without_face} image(s) without a face are under {SMALL_IMAGE_SIDE} px: if "
                "they are already-cropped faces (FER2013's 48 x 48, CK+), run with --crops (Recognizer("
                "crops=True)): each image is then one face, no detection"
            )
        for f, why in self.skipped[:10]:
            text += f"\n  skipped {f}: {why}"
        if len(self.skipped) > 10:
            text += f"\n  ... and {len(self.skipped) - 10} more"
        return text


def columns(rec: Recognizer, video: bool = False) -> list[str]:
    """CSV columns of :func:`predict_path` for the heads of ``rec`` (each served head's registry columns,
    in the order of :class:`FacePrediction`'s fields)."""
    cols = ["file"] + (["frame"] if video else []) + ["face", "x1", "y1", "x2", "y2", "det_prob"]
    for spec in served_tasks(rec.tasks):
        cols += spec.decoder.columns(spec, rec.label_names(spec.key))
    return cols


def list_media(folder: str | os.PathLike) -> list[Path]:
    """Image and video files under ``folder`` (recursively, by suffix, sorted)."""
    suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _bar(iterable=None, total=None, desc="", progress=True):
    from ..progress import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="it", disable=not progress or None, leave=False)


class VideoWriter:
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
    from ..video import video_info

    info = video_info(path)
    total = -(-info.n_frames // stride) if info.n_frames else None
    if max_frames:
        total = min(total or max_frames, max_frames)
    writer = VideoWriter(overlay, (info.fps or 25.0) / stride) if overlay is not None else None
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

    from ..datasets.images import ImageError
    from ..io import atomic_to_csv
    from ..video import VideoDecodeError

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
            summary.small_without_face += not faces and min(arr.shape[:2]) < SMALL_IMAGE_SIDE
            rows += _rows(name_of(f), faces)  # images of a mixed folder: empty frame
            target = overlay_for(f, video=False)
            if target is not None:
                from ..io import atomic_open

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
