"""Statistics pooling of per-frame face features into one video descriptor (paper A, docs/papers.md).

- AFEW (one face per frame): over the frames with a face, ``concat(mean, std, min, max)`` -> ``4*D``.
- VGAF (groups): per frame ``concat(mean, std)`` over the faces of that frame (the std of a single
  face is 0), then per video ``concat(mean, std)`` over those frame vectors -> ``4*D``, laid out as
  ``[mean_t(mean_f), mean_t(std_f), std_t(mean_f), std_t(std_f)]``.

Standard deviations are population ones (``ddof=0``, numpy's default, as in the public code).
A video without any face has no descriptor: both functions return ``None`` and the caller counts it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
