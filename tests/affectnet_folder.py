"""A small AffectNet-format folder written by the stage tests: the class is the position of a bright
square (8 classes on a 4 x 2 grid), valence / arousal are the red / blue level, so a tiny CNN learns
both in seconds. ``draw_va(k, rng)`` chooses how valence / arousal relate to the class."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from PIL import Image


def face(k: int, v: float, a: float, rng: np.random.Generator, side: int = 32) -> np.ndarray:
    img = np.empty((side, side, 3), np.float32)
    img[..., 0], img[..., 1], img[..., 2] = 128 + 100 * v, 90, 128 + 100 * a
    img += rng.normal(0, 8, img.shape)
    r, c = divmod(k, 4)  # 8 classes: a 4 x 2 grid of square positions
    img[4 + 14 * r : 4 + 14 * r + 10, 1 + 8 * c : 1 + 8 * c + 7] = 250
    return np.clip(img, 0, 255).astype(np.uint8)


def write_affectnet(
    root,
    n_train: int,
    n_val: int,
    draw_va: Callable[[int, np.random.Generator], np.ndarray],
    seed: int = 0,
    side: int = 32,
) -> None:
    """``root/affectnet`` with training.csv / validation.csv and the images, read by the real loader."""
    rng = np.random.default_rng(seed)
    base = root / "affectnet"
    (base / "Manually_Annotated_Images" / "1").mkdir(parents=True)
    for name, n in (("training.csv", n_train), ("validation.csv", n_val)):
        rows = []
        for i in range(n):
            k = i % 8
            v, a = draw_va(k, rng)
            rel = f"1/{name[:3]}_{i:04d}.png"
            Image.fromarray(face(k, v, a, rng, side)).save(base / "Manually_Annotated_Images" / rel)
            rows.append(
                {
                    "subDirectory_filePath": rel,
                    "face_x": 0,
                    "face_y": 0,
                    "face_width": side,
                    "face_height": side,
                    "facial_landmarks": "",
                    "expression": k,
                    "valence": round(v, 4),
                    "arousal": round(a, 4),
                }
            )
        pd.DataFrame(rows).to_csv(base / name, index=False)
