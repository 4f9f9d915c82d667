"""Per-video feature cache and the dataset-level loop (decode once, classify many times).

One ``.npz`` per video under ``root``, named ``<video stem>-<key>.npz``. The key is
:meth:`Sampling.key <fer_lib.video.sampling.Sampling.key>`: it hashes everything that changes the
features (the extractor's ``key``: checkpoint + preprocessing; the sampling: mode, face selection,
stride, fps, frame limit, minimum face size, detection on keyframes only, alignment; the detector's
settings, MTCNN's thresholds among them; and the video file's identity: its resolved path + size +
mtime, or a hash of its bytes with ``file_id="content"``). Changing any of them gives a new key, so a
stale entry is never read; re-running with another classifier or pooling reads the cached features
without decoding. Writes are atomic (``fer_lib.io.atomic_open``).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import atomic_open
from .decode import VideoDecodeError
from .features import FaceDetectorLike, FeatureExtractor, VideoFeatures, extract_video_features
from .sampling import Sampling, default_detector

#: Columns of :func:`extract_dataset`'s per-video stats.
STATS_COLUMNS = (
    "path",
    "n_frames",
    "n_frames_with_face",
    "n_faces",
    "has_face",
    "cached",
    "seconds",
    "error",
    "cache_key",
)


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
    sampling: Sampling | None = None,
    detector: FaceDetectorLike | None = None,
    cache: FeatureCache | str | os.PathLike | None = None,
    batch_size: int = 32,
    prefetch: int = 2,
    device: Any = "cpu",
    on_error: str = "report",
    file_id: str = "stat",
    path_col: str = "path",
    progress: bool = True,
) -> tuple[list[VideoFeatures], pd.DataFrame]:
    """Per-face features of every video in ``manifest_rows`` (a manifest DataFrame, dicts or paths).

    Returns ``(features, stats)``: one :class:`~fer_lib.video.features.VideoFeatures` per video in row
    order (pool them with :func:`fer_lib.video.pooling.pooled_matrix`) and one stats row per video (path,
    n_frames, n_frames_with_face, n_faces, has_face, cached, seconds, error, cache_key: the entry's key,
    empty without a cache). ``sampling`` decides the frames and faces (None: ``Sampling()``)
    (:func:`~fer_lib.video.features.extract_video_features`); ``detector=None`` builds its MTCNN on the
    first cache miss. Unreadable videos raise with ``on_error="raise"``; with ``"report"`` (default) they
    are recorded in ``stats.error`` and count as videos without a face. Counts of both go to a warning.
    """
    sampling = Sampling() if sampling is None else sampling
    if on_error not in ("report", "raise"):
        raise ValueError(f"on_error must be 'report' or 'raise', got {on_error!r}")
    from ..progress import tqdm

    paths = _paths_of(manifest_rows, path_col)
    if cache is not None and not isinstance(cache, FeatureCache):
        cache = FeatureCache(cache)
    running = None  # the detector that runs: ``detector``, or the sampling's MTCNN built on the first miss
    feats: list[VideoFeatures] = []
    rows = []
    bar = tqdm(paths, desc=f"video features ({sampling.mode})", unit="video", disable=not progress)
    n_no_face = n_err = 0
    for path in bar:
        t0 = time.perf_counter()
        vf, cached, key = None, False, ""
        try:
            if cache is not None:  # keyed by the detector as given (None: the sampling's MTCNN)
                key = sampling.key(path, extractor, detector, file_id)
                vf = cache.get(path, key)
            cached = vf is not None
            if vf is None:
                if running is None:  # built once, on the first miss
                    running = detector if detector is not None else default_detector(sampling, device)
                vf = extract_video_features(path, running, extractor, sampling, batch_size, prefetch)
                if cache is not None:
                    cache.put(path, key, vf)
        except (VideoDecodeError, FileNotFoundError) as exc:
            if on_error == "raise":
                raise
            vf = VideoFeatures(path=path, mode=sampling.mode, error=str(exc))
        feats.append(vf)
        n_no_face += not vf.has_face and not vf.error
        n_err += bool(vf.error)
        rows.append(
            {
                "path": path,
                "n_frames": vf.n_frames,
                "n_frames_with_face": vf.n_frames_with_face,
                "n_faces": vf.n_faces,
                "has_face": vf.has_face,
                "cached": cached,
                "seconds": round(time.perf_counter() - t0, 3),
                "error": vf.error,
                "cache_key": key,
            }
        )
        bar.set_postfix(no_face=n_no_face, errors=n_err)
    if n_no_face or n_err:
        warnings.warn(
            f"{n_no_face} of {len(paths)} videos have no face of >= {sampling.min_face} px and {n_err} "
            "could not be decoded (see stats.error); pooled, they have NaN rows and has_face=False",
            stacklevel=2,
        )
    return feats, pd.DataFrame(rows, columns=list(STATS_COLUMNS))
