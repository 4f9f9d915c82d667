"""Per-video feature cache and the dataset-level loop (decode once, classify many times).

One ``.npz`` per video under ``root``, named ``<video stem>-<key>.npz``. The key hashes everything
that changes the features: the extractor's ``key`` (checkpoint + preprocessing), the mode, stride,
fps, frame limit, minimum face size, the detector's settings (MTCNN's thresholds among them), the face
selection, five-point alignment, detection on keyframes only, and the video file's identity (its
resolved path + size + mtime, or a hash of its bytes with ``file_id="content"``). Changing any of
them gives a new key, so a stale entry is never read; re-running with another classifier reads the
cached features without decoding. Writes are atomic (``fer_lib.io.atomic_open``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import atomic_open
from .decode import VideoDecodeError
from .features import (
    DEFAULT_MIN_FACE,
    SELECTION,
    FaceDetectorLike,
    FeatureExtractor,
    VideoFeatures,
    align_size,
    default_detector,
    detector_key,
    extract_video_features,
    selection,
)

CACHE_VERSION = 1


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


def cache_key(
    path: str | os.PathLike,
    extractor_key: str,
    mode: str,
    stride: int,
    min_face_size: int,
    detector_settings: str,
    fps: float | None = None,
    max_frames: int | None = None,
    file_id: str = "stat",
    detect_every: int = 1,
    select: str | None = None,
    align: int | None = None,
) -> str:
    """Hex digest naming the features of ``path`` under these settings (``select``: the face selection,
    None for the mode's default; ``align``: the side of faces aligned on five landmarks, None for box crops).
    Settings at their defaults add nothing, so entries made before a setting existed keep their names."""
    parts = {
        "v": CACHE_VERSION,
        "file": file_identity(path, file_id),
        "extractor": str(extractor_key),
        "mode": mode,
        "stride": int(stride),
        "fps": fps,
        "max_frames": max_frames,
        "min_face_size": int(min_face_size),
        "detector": str(detector_settings),
    }
    if int(detect_every) != 1:  # entries made with detection on every frame keep their names
        parts["detect_every"] = [int(detect_every), "matched faces interpolated"]  # between keyframes
    if select is not None and select != SELECTION[mode]:
        parts["select"] = select
    if align is not None:
        parts["align"] = ["five_points", "insightface-arcface", int(align)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


class FeatureCache:
    """``get(path, key)`` / ``put(path, key, features)`` over one ``.npz`` file per video."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def file(self, path: str | os.PathLike, key: str) -> Path:
        return self.root / f"{Path(path).stem}-{key}.npz"

    def get(self, path: str | os.PathLike, key: str) -> VideoFeatures | None:
        """The cached features, or None (missing, or unreadable: a warning names the file)."""
        f = self.file(path, key)
        if not f.exists():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                return VideoFeatures.from_arrays({k: z[k] for k in z.files})
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is recomputed, not fatal
            warnings.warn(f"feature cache entry {f} is unreadable ({exc}); recomputing it", stacklevel=2)
            return None

    def put(self, path: str | os.PathLike, key: str, feats: VideoFeatures) -> Path:
        f = self.file(path, key)
        with atomic_open(f, "wb") as fh:
            np.savez(fh, **feats.to_arrays())
        return f


def _paths_of(manifest_rows: Any, path_col: str) -> list[str]:
    if isinstance(manifest_rows, pd.DataFrame):
        if path_col not in manifest_rows.columns:
            raise KeyError(f"manifest has no {path_col!r} column (columns: {list(manifest_rows.columns)})")
        return [str(p) for p in manifest_rows[path_col]]
    return [str(r[path_col]) if isinstance(r, dict) else str(r) for r in manifest_rows]


def extract_dataset(
    manifest_rows: pd.DataFrame | Iterable[Any],
    extractor: FeatureExtractor,
    detector: FaceDetectorLike | None = None,
    mode: str = "afew",
    stride: int = 1,
    fps: float | None = None,
    min_face_size: int | None = None,
    batch_size: int = 32,
    max_frames: int | None = None,
    cache: FeatureCache | str | os.PathLike | None = None,
    prefetch: int = 2,
    device: Any = "cpu",
    on_error: str = "report",
    file_id: str = "stat",
    path_col: str = "path",
    progress: bool = True,
    detect_every: int = 1,
    thresholds: Sequence[float] | None = None,
    select: str | None = None,
    align: bool = False,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Pooled descriptors of every video in ``manifest_rows`` (a manifest DataFrame, dicts or paths).

    Returns ``(X, has_face, stats)``: ``X`` is ``[n_videos, 4D]`` float32 in row order with NaN rows
    for videos without a face (or unreadable ones), ``has_face`` a bool mask, ``stats`` one row per
    video (path, n_frames, n_frames_with_face, n_faces, has_face, cached, seconds, error, cache_key:
    the entry's key, empty without a cache).
    Unreadable videos raise with ``on_error="raise"``; with ``"report"`` (default) they are recorded
    in ``stats.error`` and counted as videos without a face. Counts of both go to a warning.
    ``detect_every=k`` detects faces on every k-th sampled frame only (see
    :func:`~fer_lib.video.features.extract_video_features`), ``select`` overrides the mode's face
    selection and ``align=True`` aligns faces on five landmarks (ibid.); ``thresholds`` are MTCNN's when
    ``detector`` is None. All of them are part of the cache key.
    """
    if on_error not in ("report", "raise"):
        raise ValueError(f"on_error must be 'report' or 'raise', got {on_error!r}")
    from ..progress import tqdm

    paths = _paths_of(manifest_rows, path_col)
    min_face = DEFAULT_MIN_FACE[mode] if min_face_size is None else int(min_face_size)
    rule = selection(mode, select)
    size = align_size(extractor) if align else None
    if cache is not None and not isinstance(cache, FeatureCache):
        cache = FeatureCache(cache)
    det_key = detector_key(detector, min_face, thresholds)
    pooled: list[np.ndarray | None] = []
    rows = []
    bar = tqdm(paths, desc=f"video features ({mode})", unit="video", disable=not progress)
    n_no_face = n_err = 0
    for path in bar:
        t0 = time.perf_counter()
        vf, cached, key = None, False, None
        try:
            key = (
                cache_key(
                    path,
                    extractor.key,
                    mode,
                    stride,
                    min_face,
                    det_key,
                    fps,
                    max_frames,
                    file_id,
                    detect_every,
                    rule,
                    size,
                )
                if cache is not None
                else None
            )
            vf = cache.get(path, key) if cache is not None else None
            cached = vf is not None
            if vf is None:
                if detector is None:
                    detector = default_detector(min_face, device, thresholds)  # built once, on the first miss
                vf = extract_video_features(
                    path,
                    detector,
                    extractor,
                    mode=mode,
                    stride=stride,
                    fps=fps,
                    min_face_size=min_face,
                    batch_size=batch_size,
                    max_frames=max_frames,
                    prefetch=prefetch,
                    detect_every=detect_every,
                    select=rule,
                    align=align,
                )
                if cache is not None:
                    cache.put(path, key, vf)
        except (VideoDecodeError, FileNotFoundError) as exc:
            if on_error == "raise":
                raise
            vf = VideoFeatures(path=path, mode=mode, error=str(exc))
        p = vf.pooled()
        pooled.append(p)
        n_no_face += p is None and not vf.error
        n_err += bool(vf.error)
        rows.append(
            {
                "path": path,
                "n_frames": vf.n_frames,
                "n_frames_with_face": vf.n_frames_with_face,
                "n_faces": vf.n_faces,
                "has_face": p is not None,
                "cached": cached,
                "seconds": round(time.perf_counter() - t0, 3),
                "error": vf.error,
                "cache_key": key or "",
            }
        )
        bar.set_postfix(no_face=n_no_face, errors=n_err)
    stats = pd.DataFrame(
        rows,
        columns=[
            "path",
            "n_frames",
            "n_frames_with_face",
            "n_faces",
            "has_face",
            "cached",
            "seconds",
            "error",
            "cache_key",
        ],
    )
    dims = {len(p) for p in pooled if p is not None}
    if len(dims) > 1:
        raise ValueError(
            f"pooled descriptors have different lengths {sorted(dims)}; the extractor changed "
            "its feature size between videos"
        )
    dim = dims.pop() if dims else 0
    X = np.full((len(paths), dim), np.nan, np.float32)
    for i, p in enumerate(pooled):
        if p is not None:
            X[i] = p
    if n_no_face or n_err:
        warnings.warn(
            f"{n_no_face} of {len(paths)} videos have no face of >= {min_face} px and {n_err} could "
            "not be decoded (see stats.error); they have NaN rows in X and has_face=False",
            stacklevel=2,
        )
    return X, stats["has_face"].to_numpy(bool), stats
