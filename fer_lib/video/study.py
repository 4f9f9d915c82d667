"""Comparing samplings of the same videos: notebook 04's stride and detect_every studies.

Stride: per-face features are extracted once at stride 1, and every other stride is obtained by
:func:`subsample`. That equals decoding at that stride because decoding numbers frames the same way
whatever the stride, and the detector and the feature network see one frame / one crop at a time
(their outputs do not depend on the other frames of a batch; up to float rounding of batched
convolutions on some back-ends). A frame cap (``Sampling.max_frames``) breaks the equality: a capped
direct decode at stride ``s`` reaches ``s`` times further into the video.

detect_every: detection on keyframes changes the crops, so each k is extracted; :func:`agreement`
measures how far its boxes and descriptors move from detection on every frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..faces import box_iou
from .features import VideoFeatures
from .pooling import pool


def subsample(vf: VideoFeatures, stride: int) -> VideoFeatures:
    """The features decoding at ``stride`` would have given: every ``stride``-th examined frame of a
    stride-1 extraction (``vf.sampled[::stride]``) and the faces found in those frames."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if stride == 1:
        return vf
    keep = vf.sampled[::stride]
    m = np.isin(vf.face_frame, keep)
    return VideoFeatures(
        path=vf.path,
        mode=vf.mode,
        sampled=keep,
        face_frame=vf.face_frame[m],
        boxes=vf.boxes[m],
        features=vf.features[m],
        scores=vf.scores[m],
        error=vf.error,
    )


def keyframes(n_frames: int, every: int) -> int:
    """Frames the detector sees in a video of ``n_frames`` with ``detect_every=every``: positions 0,
    every, ... and the last frame (see :func:`fer_lib.video.features.keyframe_detections`)."""
    if n_frames <= 0:
        return 0
    return len(range(0, n_frames, every)) + int((n_frames - 1) % every != 0)


def detected_fraction(feats: Sequence[VideoFeatures], every: int) -> float:
    """Frames the detector saw / frames examined, over ``feats`` extracted with ``detect_every=every``."""
    frames = sum(vf.n_frames for vf in feats)
    return sum(keyframes(vf.n_frames, every) for vf in feats) / max(frames, 1)


def first_boxes(vf: VideoFeatures) -> dict[int, np.ndarray]:
    """Frame index -> its first kept face box."""
    out: dict[int, np.ndarray] = {}
    for f, b in zip(vf.face_frame, vf.boxes):
        out.setdefault(int(f), b)
    return out


def frame_ious(vf: VideoFeatures, ref: VideoFeatures) -> np.ndarray:
    """IoU of the first face box of every frame with a face in both ``vf`` and ``ref``, in frame order."""
    mine, theirs = first_boxes(vf), first_boxes(ref)
    return np.asarray([float(box_iou(mine[f], theirs[f])[0, 0]) for f in sorted(set(mine) & set(theirs))])


def agreement(feats: Sequence[VideoFeatures], ref: Sequence[VideoFeatures]) -> dict[str, float | int]:
    """How far the videos ``feats`` are from the same videos ``ref`` (e.g. detection on every frame):
    ``mean_iou`` of each frame's first box with ref's, ``frames_face_changed`` = frames with a face in
    one and not the other, ``median_rel_diff_pooled`` = median over videos of
    ``|pooled - pooled_ref| / |pooled_ref|`` (paper A's pooling)."""
    if len(feats) != len(ref):
        raise ValueError(f"agreement compares the same videos: {len(feats)} against {len(ref)}")
    ious: list[float] = []
    changed, rel = 0, []
    for vf, vf_ref in zip(feats, ref):
        changed += len(set(first_boxes(vf)) ^ set(first_boxes(vf_ref)))
        ious.extend(frame_ious(vf, vf_ref))
        p, p_ref = pool(vf), pool(vf_ref)
        if p is not None and p_ref is not None and np.linalg.norm(p_ref) > 0:
            rel.append(float(np.linalg.norm(p - p_ref) / np.linalg.norm(p_ref)))
    return {
        "mean_iou": float(np.mean(ious)) if ious else float("nan"),
        "frames_face_changed": changed,
        "median_rel_diff_pooled": float(np.median(rel)) if rel else float("nan"),
    }
