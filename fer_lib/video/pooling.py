"""Pooling per-face features of a video into one descriptor (paper A's STAT pooling and two simpler ones).

- ``stat`` (paper A, docs/papers.md): AFEW (one face per frame): over the frames with a face,
  ``concat(mean, std, min, max)`` -> ``4*D``. VGAF (groups): per frame ``concat(mean, std)`` over the
  faces of that frame (the std of a single face is 0), then per video ``concat(mean, std)`` over those
  frame vectors -> ``4*D``, laid out as ``[mean_t(mean_f), mean_t(std_f), std_t(mean_f), std_t(std_f)]``.
- ``mean_std`` / ``mean``: ``concat(mean, std)`` / ``mean`` over the frames of one vector per frame (AFEW
  its face, VGAF the mean over its faces).

Standard deviations are population ones (``ddof=0``, numpy's default, as in the public code).
A video without any face has no descriptor: the functions return ``None`` and the caller counts it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .features import VideoFeatures

#: Poolings compared in notebook 04's accuracy tables; ``stat`` is paper A's (the one the metrics report).
POOLINGS = ("stat", "mean_std", "mean")
PAPER_POOLING = "stat"
POOLING_HELP = {
    "stat": "paper A: AFEW concat(mean,std,min,max) over frames; VGAF mean+std over faces, then over frames",
    "mean_std": "concat(mean, std) over frames of the per-frame vector (VGAF: mean over the frame's faces)",
    "mean": "mean over frames of the per-frame vector (VGAF: mean over the frame's faces)",
}


def pool_afew(frame_feats: np.ndarray) -> np.ndarray | None:
    """``[F, D]`` features of the frames with a face -> ``[4D]`` float32, or None when ``F == 0``."""
    x = np.asarray(frame_feats, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"pool_afew expects a [frames, dim] array, got shape {x.shape}")
    if len(x) == 0:
        return None
    return np.concatenate([x.mean(0), x.std(0), x.min(0), x.max(0)]).astype(np.float32)


def pool_vgaf(per_frame: Sequence[np.ndarray]) -> np.ndarray | None:
    """List of ``[k_t, D]`` face features per frame -> ``[4D]`` float32; frames with ``k_t == 0`` are
    skipped; None when no frame has a face."""
    frames = []
    for t, faces in enumerate(per_frame):
        f = np.asarray(faces, dtype=np.float64)
        if f.ndim != 2:
            raise ValueError(f"pool_vgaf: frame {t} must be a [faces, dim] array, got shape {f.shape}")
        if len(f):
            frames.append(np.concatenate([f.mean(0), f.std(0)]))
    if not frames:
        return None
    x = np.stack(frames)
    return np.concatenate([x.mean(0), x.std(0)]).astype(np.float32)


def frame_vectors(vf: VideoFeatures) -> np.ndarray:
    """One vector per frame with a face: AFEW the (only) selected face, VGAF the mean over the faces."""
    per = vf.per_frame()
    if not per:
        return np.zeros((0, vf.features.shape[1] if vf.features.ndim == 2 else 0), np.float64)
    rows = [f[0] if vf.mode == "afew" else np.asarray(f, np.float64).mean(0) for f in per]
    return np.stack(rows).astype(np.float64)


def pool(vf: VideoFeatures, pooling: str = PAPER_POOLING) -> np.ndarray | None:
    """Descriptor of one video under ``pooling`` (see :data:`POOLING_HELP`); None when it has no face."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling == "stat" and vf.mode != "afew":
        return pool_vgaf(vf.per_frame())
    x = frame_vectors(vf)
    if not len(x):
        return None
    if pooling == "stat":
        return pool_afew(x)
    if pooling == "mean":
        return x.mean(0).astype(np.float32)
    return np.concatenate([x.mean(0), x.std(0)]).astype(np.float32)


def pooled_matrix(
    feats: Sequence[VideoFeatures], pooling: str = PAPER_POOLING
) -> tuple[np.ndarray, np.ndarray]:
    """``(X, has_face)``: ``X [n_videos, d]`` float32, one descriptor per video in order, NaN rows for the
    videos without a face (or unreadable ones), and the mask of the rows that have one."""
    vecs = [pool(vf, pooling) for vf in feats]
    dims = {len(p) for p in vecs if p is not None}
    if len(dims) > 1:
        raise ValueError(
            f"pooled descriptors have different lengths {sorted(dims)}; the extractor changed "
            "its feature size between videos"
        )
    X = np.full((len(vecs), dims.pop() if dims else 0), np.nan, np.float32)
    for i, p in enumerate(vecs):
        if p is not None:
            X[i] = p
    return X, np.array([p is not None for p in vecs], bool)
