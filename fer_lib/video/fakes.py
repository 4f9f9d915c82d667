"""Tiny stand-ins for a face detector and a feature network (tests, benchmarks, smoke runs).

They follow the same duck-typed interfaces as the real ones (``detect_batch`` / ``features`` +
``key``), so code driven by them runs the real decode -> select -> crop -> pool path.
"""

from __future__ import annotations

import numpy as np

from ..faces import FIVE_POINT_SIDE, FIVE_POINT_TEMPLATE


class ColourBlobDetector:
    """Every strongly coloured blob (channel spread > ``spread``) is a 'face' with probability 1.
    With ``landmarks=True`` each also gets five landmarks: the aligned template's points placed in its box
    (so aligning it frames the blob as a face template frames a face). Counts its calls and the frames
    it has seen."""

    key = "colour-blob-detector-v1"

    def __init__(self, spread: int = 100):
        self.spread = spread
        self.calls = 0
        self.frames = 0

    def detect_batch(self, frames: list[np.ndarray], landmarks: bool = False) -> list:
        from scipy import ndimage

        self.calls += 1
        self.frames += len(frames)
        out = []
        for f in frames:
            sat = f.max(-1).astype(np.int16) - f.min(-1).astype(np.int16) > self.spread
            lab, n = ndimage.label(sat)
            boxes = (
                [[sl[1].start, sl[0].start, sl[1].stop, sl[0].stop, 1.0] for sl in ndimage.find_objects(lab)]
                if n
                else []
            )
            out.append(np.asarray(boxes, np.float32).reshape(-1, 5))
        if landmarks:
            unit = FIVE_POINT_TEMPLATE / FIVE_POINT_SIDE
            return [
                (b, (b[:, None, :2] + unit[None] * (b[:, None, 2:4] - b[:, None, :2])).astype(np.float32))
                for b in out
            ]
        return out


class MeanColourExtractor:
    """Features = mean RGB / 255 of each crop (3-d); scores = their softmax. Counts its calls."""

    def __init__(self, key: str = "mean-colour-v1"):
        self.key = key
        self.calls = 0

    def features(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        if not crops:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
        f = np.stack([c.reshape(-1, 3).mean(0) / 255.0 for c in crops]).astype(np.float32)
        e = np.exp(f)
        return f, (e / e.sum(1, keepdims=True)).astype(np.float32)
