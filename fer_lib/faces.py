"""Face detection (MTCNN from facenet-pytorch), tight crops, face selection.

The MTCNN weights ship inside the facenet-pytorch wheel, so detection works offline. Boxes are
``[x1, y1, x2, y2, prob]`` in pixels of the input image, sorted by probability (highest first).
Crops are tight (no margin) by default, as in paper A's wording; ``margin`` adds a fraction of
the box size on every side (the public code's 20/40 px margins correspond to roughly 0.1-0.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

EMPTY_BOXES = np.zeros((0, 5), dtype=np.float32)
EMPTY_POINTS = np.zeros((0, 5, 2), dtype=np.float32)


def to_rgb_array(image) -> np.ndarray:
    """An RGB uint8 HxWx3 array from a PIL image or an array (grey HxW, HxWx1, RGBA dropped to RGB)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image HxWx3, got an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


class FaceDetector:
    """MTCNN face detector returning every face with its probability (and 5 landmarks on request).

    Args:
        min_face_size: smallest face side in pixels that the image pyramid looks for.
        device: torch device for the three networks.
        thresholds: the P-/R-/O-Net score thresholds (default facenet's [0.6, 0.7, 0.7]).
        factor: scale step of the image pyramid.
    """

    def __init__(self, min_face_size: int = 20, device: str = "cpu", thresholds: Sequence[float] | None = None,
                 factor: float = 0.709):
        import torch
        from facenet_pytorch import MTCNN

        self.min_face_size = int(min_face_size)
        self.device = torch.device(device)
        self.thresholds = list(thresholds) if thresholds is not None else [0.6, 0.7, 0.7]
        self.mtcnn = MTCNN(min_face_size=self.min_face_size, thresholds=self.thresholds, factor=factor,
                           keep_all=True, select_largest=False, post_process=False, device=self.device)
        self.mtcnn.eval()

    def __repr__(self) -> str:
        return (f"FaceDetector(min_face_size={self.min_face_size}, device={str(self.device)!r}, "
                f"thresholds={self.thresholds})")

    @staticmethod
    def _pack(boxes, probs, points) -> tuple[np.ndarray, np.ndarray]:
        """facenet's per-image output -> ((k, 5) boxes sorted by probability, (k, 5, 2) landmarks)."""
        if boxes is None or len(boxes) == 0:
            return EMPTY_BOXES.copy(), EMPTY_POINTS.copy()
        out = np.column_stack([np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                               np.asarray(probs, dtype=np.float32).reshape(-1)])
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
                chunk = idx[start:start + batch_size]
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


def select_faces(boxes: np.ndarray, mode: str = "largest") -> np.ndarray:
    """``"largest"``: the one box with the largest area, shape (1, 5) or (0, 5); ``"all"``: every box."""
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.size == 0:
        return EMPTY_BOXES.copy()
    boxes = boxes.reshape(-1, boxes.shape[-1])
    if mode == "all":
        return boxes
    if mode == "largest":
        return boxes[[int(np.argmax(box_area(boxes)))]]
    raise ValueError(f"select_faces: unknown mode {mode!r}; use 'largest' or 'all'")


def crop_window(box, image_size: tuple[int, int], margin: float = 0.0) -> tuple[int, int, int, int]:
    """Integer window ``(left, top, right, bottom)`` of a box plus margin, clipped to ``(W, H)``.

    ``margin`` adds that fraction of the box width on the left and on the right, and of its height
    on the top and the bottom (0.1 makes the box 20 % larger in each direction).
    """
    width, height = image_size
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)[:4])
    if not all(map(math.isfinite, (x1, y1, x2, y2))):
        raise ValueError(f"face box {box!r} has a missing coordinate")
    bw, bh = x2 - x1, y2 - y1
    x1, x2 = x1 - margin * bw, x2 + margin * bw
    y1, y2 = y1 - margin * bh, y2 + margin * bh
    left, top = max(0, int(round(x1))), max(0, int(round(y1)))
    right, bottom = min(width, int(round(x2))), min(height, int(round(y2)))
    if right <= left or bottom <= top:
        raise ValueError(f"face box {np.round([x1, y1, x2, y2], 1).tolist()} lies outside the "
                         f"{width}x{height} image (or is empty)")
    return left, top, right, bottom


def _resize(arr: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    wh = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    return np.asarray(Image.fromarray(arr).resize(wh, Image.BILINEAR))


def crop(image, box, margin: float = 0.0, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Crop ``box`` ([x1, y1, x2, y2, ...]) from an image, tight unless ``margin`` > 0, clipped.

    ``size``: resize the crop to ``size`` x ``size`` (or ``(w, h)``) with PIL bilinear.
    """
    arr = np.asarray(image)
    left, top, right, bottom = crop_window(box, (arr.shape[1], arr.shape[0]), margin)
    out = np.ascontiguousarray(arr[top:bottom, left:right])
    return _resize(out, size) if size is not None else out
