"""Face detection (MTCNN from facenet-pytorch) and face selection (crops: fer_lib.preprocess).

The MTCNN weights ship inside the facenet-pytorch wheel, so detection works offline. Boxes are
``[x1, y1, x2, y2, prob]`` in pixels of the input image, sorted by probability (highest first).
Crops are tight (no margin) by default, as in paper A's wording; ``margin`` adds a fraction of
the box size on every side (the public code's 20/40 px margins correspond to roughly 0.1-0.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .preprocess import Preprocess, crop_window, to_rgb_array  # noqa: F401 - re-exported

EMPTY_BOXES = np.zeros((0, 5), dtype=np.float32)
EMPTY_POINTS = np.zeros((0, 5, 2), dtype=np.float32)


class FaceDetector:
    """MTCNN face detector returning every face with its probability (and 5 landmarks on request).

    Args:
        min_face_size: smallest face side in pixels that the image pyramid looks for.
        device: torch device for the three networks.
        thresholds: the P-/R-/O-Net score thresholds (default facenet's [0.6, 0.7, 0.7]).
        factor: scale step of the image pyramid.
    """

    def __init__(
        self,
        min_face_size: int = 20,
        device: str = "cpu",
        thresholds: Sequence[float] | None = None,
        factor: float = 0.709,
    ):
        import torch
        from facenet_pytorch import MTCNN

        self.min_face_size = int(min_face_size)
        self.device = torch.device(device)
        self.thresholds = list(thresholds) if thresholds is not None else [0.6, 0.7, 0.7]
        self.mtcnn = MTCNN(
            min_face_size=self.min_face_size,
            thresholds=self.thresholds,
            factor=factor,
            keep_all=True,
            select_largest=False,
            post_process=False,
            device=self.device,
        )
        self.mtcnn.eval()

    def __repr__(self) -> str:
        return (
            f"FaceDetector(min_face_size={self.min_face_size}, device={str(self.device)!r}, "
            f"thresholds={self.thresholds})"
        )

    @staticmethod
    def _pack(boxes, probs, points) -> tuple[np.ndarray, np.ndarray]:
        """facenet's per-image output -> ((k, 5) boxes sorted by probability, (k, 5, 2) landmarks)."""
        if boxes is None or len(boxes) == 0:
            return EMPTY_BOXES.copy(), EMPTY_POINTS.copy()
        out = np.column_stack(
            [
                np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                np.asarray(probs, dtype=np.float32).reshape(-1),
            ]
        )
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2)
        order = np.argsort(-out[:, 4], kind="stable")
        return out[order], pts[order]

    def _too_small(self, arr: np.ndarray) -> bool:
        # facenet's image pyramid is empty (and errors) when the image is smaller than the smallest face.
        return min(arr.shape[0], arr.shape[1]) < max(self.min_face_size, 12)

    def detect(self, image, landmarks: bool = False):
        """Faces in one RGB image: ``(k, 5)`` boxes, or ``(boxes, points (k, 5, 2))`` with landmarks.

        Landmark order: left eye, right eye, nose, left mouth corner, right mouth corner (image sides).
        """
        arr = to_rgb_array(image)
        if self._too_small(arr):
            boxes, points = EMPTY_BOXES.copy(), EMPTY_POINTS.copy()
        else:
            boxes, points = self._pack(*self.mtcnn.detect(arr, landmarks=True))
        return (boxes, points) if landmarks else boxes

    def detect_batch(self, frames: Sequence, landmarks: bool = False, batch_size: int = 16) -> list:
        """Faces in many images at once; frames of different sizes are grouped by size.

        Returns one entry per frame, in the input order, as :meth:`detect` would.
        """
        arrays = [to_rgb_array(f) for f in frames]
        results: list = [None] * len(arrays)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, arr in enumerate(arrays):
            groups.setdefault(arr.shape, []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), max(1, batch_size)):
                chunk = idx[start : start + batch_size]
                if self._too_small(arrays[chunk[0]]):
                    packed = [(EMPTY_BOXES.copy(), EMPTY_POINTS.copy()) for _ in chunk]
                else:
                    stack = np.stack([arrays[i] for i in chunk])
                    boxes, probs, points = self.mtcnn.detect(stack, landmarks=True)
                    packed = [self._pack(b, p, q) for b, p, q in zip(boxes, probs, points)]
                for i, (b, p) in zip(chunk, packed):
                    results[i] = (b, p) if landmarks else b
        return results


# ------------------------------------------------------------------------------------------ boxes
def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of each ``[x1, y1, x2, y2, ...]`` row (0 for inverted boxes)."""
    boxes = np.atleast_2d(np.asarray(boxes, dtype=np.float64))
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def face_sizes(boxes: np.ndarray) -> np.ndarray:
    """Size of each ``[x1, y1, x2, y2, ...]`` box: its longer side (MTCNN's square-window notion)."""
    b = np.atleast_2d(np.asarray(boxes, dtype=np.float64))
    return np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])


def select_faces(
    boxes: np.ndarray | None, mode: str = "all", min_size: float = 0.0, min_prob: float = 0.0
) -> np.ndarray:
    """The faces a consumer keeps, in detection order: boxes ``[x1, y1, x2, y2, prob]`` whose
    probability is >= ``min_prob`` and whose longer side is >= ``min_size``; then ``"largest"`` keeps
    the one with the largest area (paper A's AFEW rule), ``"all"`` every one (VGAF, predict).
    Returns a ``(k, 5)`` float32 array (k may be 0)."""
    if mode not in ("largest", "all"):
        raise ValueError(f"select_faces: unknown mode {mode!r}; use 'largest' or 'all'")
    if boxes is None or np.size(boxes) == 0:
        return EMPTY_BOXES.copy()
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
    b = b[(b[:, 4] >= min_prob) & (face_sizes(b) >= min_size)]
    if mode == "largest" and len(b) > 1:
        b = b[[int(np.argmax(box_area(b)))]]
    return b


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of ``[x1, y1, x2, y2, ...]`` boxes: an ``(len(a), len(b))`` array."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))[:, :4]
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))[:, :4]
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def interpolate_boxes(a: np.ndarray, b: np.ndarray, t: float, min_iou: float = 0.3) -> np.ndarray:
    """Face boxes a fraction ``t`` (0..1) of the way from detection ``a`` to detection ``b`` of a later frame.

    Only a face found by both (pairs matched greedily by IoU, at least ``min_iou``) is there in between:
    its corners and probability move linearly. A face found by one of them only (it enters, leaves or is
    hidden in between) is left out rather than guessed, since a crop of whatever hides it would be a wrong
    face while a missing frame only drops out of the pooled statistics. Returns ``(k, 5)`` float32 boxes
    sorted by probability, as the detector's.
    """
    a = np.asarray(a, dtype=np.float32).reshape(-1, 5)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 5)
    iou = box_iou(a, b)
    pairs, free_a, free_b = [], set(range(len(a))), set(range(len(b)))
    for i, j in zip(*np.unravel_index(np.argsort(-iou, axis=None, kind="stable"), iou.shape)):
        if iou[i, j] < min_iou:
            break
        if i in free_a and j in free_b:
            pairs.append((1 - t) * a[i] + t * b[j])
            free_a.discard(i)
            free_b.discard(j)
    out = np.asarray(pairs, dtype=np.float32).reshape(-1, 5)
    return out[np.argsort(-out[:, 4], kind="stable")]
