"""Overlays: a photo or video frame with each face's box and caption drawn on it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from .recognizer import FacePrediction


def draw_overlay(image: np.ndarray | Image.Image, faces: Sequence[FacePrediction]) -> Image.Image:
    """A copy of ``image`` with each face's box and caption drawn on it."""
    from PIL import ImageDraw, ImageFont

    img = (
        (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image)))
        .convert("RGB")
        .copy()
    )
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 200))
    try:
        font = ImageFont.load_default(size=max(10, min(img.size) // 40))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for f in faces:
        if f.box is None:
            continue
        x1, y1, x2, y2 = f.box
        draw.rectangle([x1, y1, x2, y2], outline=(255, 64, 64), width=width)
        text = f.label()
        if text:
            tb = draw.textbbox((x1, y1), text, font=font)
            th = tb[3] - tb[1]
            ty = y1 - th - 2 * width if y1 - th - 2 * width >= 0 else y2 + width
            draw.rectangle(
                [x1, ty, x1 + (tb[2] - tb[0]) + 2 * width, ty + th + 2 * width], fill=(255, 64, 64)
            )
            draw.text((x1 + width, ty + width - (tb[1] - y1)), text, fill=(255, 255, 255), font=font)
    return img
