"""Reading image files safely: one policy for bad, odd and huge images, shared by the loaders.

Policy (used by ``fer_lib.data.FaceDataset`` and ``fer_lib.datasets.validate_images``):

- Unusable files raise one :class:`ImageError` (an ``OSError``) whose message names the file, the
  reason and what to do; ``validate_images`` instead drops such rows and counts them per reason.
  Reasons: ``missing file``, ``empty file`` (0 bytes), ``not an image file`` (no known image
  signature: a text or HTML file named .jpg), ``truncated or corrupt image`` (a known signature but
  the data cannot be decoded, e.g. the first half of a JPEG), ``image too large``,
  ``unsupported colour mode``.
- Size guard: an image with more than ``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`,
  150 M, e.g. 12,000 x 12,500) is refused before any pixel is decoded. Pillow's own
  decompression-bomb *warning* (above ~89 M pixels) is silenced because this check replaces it;
  Pillow's *error* (above 2 x ``PIL.Image.MAX_IMAGE_PIXELS``, ~179 M) still applies and is reported
  as ``image too large`` too (raise ``PIL.Image.MAX_IMAGE_PIXELS`` as well to open such files).
  ``max_pixels=None`` keeps only Pillow's limit.
- Memory: a JPEG with more than :data:`REDUCE_ABOVE_PIXELS` pixels (16.7 M, 4096 x 4096) whose
  needed region stays at least ``min_side`` pixels after reduction is decoded at 1/2, 1/4 or 1/8
  scale (``Image.draft``; the DCT does the downscaling): a 10,000 x 10,000 JPEG read for a 64 px
  face raised the peak RSS by 13 MiB in 0.1 s, against 764 MiB in 5.4 s for a full decode.
  Other formats are decoded in full and then reduced with ``Image.reduce``.
  Smaller images are always decoded in full, so ordinary datasets see exactly the same pixels.
- Colour: every mode becomes 8-bit RGB (see :func:`to_rgb`); the EXIF orientation is applied, so
  images and face boxes are in the orientation in which the image is displayed.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS: int = 150_000_000
REDUCE_ABOVE_PIXELS: int = 4096 * 4096

MISSING = "missing file"
EMPTY = "empty file"
NOT_IMAGE = "not an image file"
CORRUPT = "truncated or corrupt image"
TOO_LARGE = "image too large"
BAD_MODE = "unsupported colour mode"

_HINTS = {
    MISSING: "check the dataset root (FER_DATA_ROOT) or rebuild the manifest",
    EMPTY: "the file has 0 bytes: copy or extract it again",
    NOT_IMAGE: "the file is not in an image format Pillow reads (a text or HTML page saved as an image?): "
    "replace it",
    CORRUPT: "the file ends early or is damaged (an interrupted copy or download?): copy it again",
    TOO_LARGE: "if the file is genuine, pass a larger max_pixels (FaceDataset / validate_images; beyond "
    "Pillow's limit also raise PIL.Image.MAX_IMAGE_PIXELS)",
    BAD_MODE: "convert the file to RGB",
}
# Leading bytes of the formats the loaders accept; a file starting like this that fails to decode
# is corrupt, anything else is not an image at all.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageError(OSError):
    """An image file that cannot be used. ``path``, ``reason`` (one of the module's reasons), ``detail``."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path, self.reason, self.detail = str(path), reason, detail
        why = f"{reason} ({detail})" if detail else reason
        super().__init__(
            f"cannot read image {self.path}: {why}. What to do: {_HINTS.get(reason, 'replace it')}, "
            "or run fer_lib.datasets.validate_images(manifest, report) to drop unusable files"
        )


# -------------------------------------------------------------------------------------------- colour
def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as upright 8-bit RGB.

    - EXIF orientation applied (``ImageOps.exif_transpose``);
    - grey ``L``/``1`` -> the same value in all three channels; palette ``P`` -> its colours;
      ``CMYK`` -> RGB by Pillow's conversion (Adobe-inverted JPEGs are handled when read);
    - 16-bit grey (``I;16*``) -> value / 257 (65535 -> 255); 32-bit ``I`` and float ``F`` have no
      declared range: ``F`` in [0, 1] is scaled by 255, ``I``/``F`` above 255 are scaled so that
      65535 (or the image maximum, if larger) -> 255, otherwise kept as 0..255;
    - alpha (``RGBA``, ``LA``, ``PA``, ``P`` with transparency) is composited onto black, i.e.
      colour x alpha / 255 (a transparent background becomes black).
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT:
        arr = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    elif image.mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = float(np.nanmax(arr)) if arr.size else 0.0
        if image.mode == "F" and top <= 1.0:
            arr = arr * 255.0
        elif top > 255:
            arr = arr / max(65535.0, top) * 255.0
        image = Image.fromarray(np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


# ------------------------------------------------------------------------------------------ reading
def _signature_known(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(16)
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _open(path: str, max_pixels: int | None) -> Image.Image:
    """Open (not decode) ``path``; ImageError for missing, empty, non-image and too-large files."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ImageError(path, MISSING, exc.strerror or type(exc).__name__) from exc
    if size == 0:
        raise ImageError(path, EMPTY, "0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ImageError(
            path, TOO_LARGE, f"more than Pillow's decompression-bomb limit of {limit:,} pixels: {exc}"
        ) from exc
    except UnidentifiedImageError as exc:
        reason = CORRUPT if _signature_known(path) else NOT_IMAGE
        raise ImageError(path, reason, "Pillow cannot identify it") from exc
    except OSError as exc:
        raise ImageError(path, CORRUPT, f"{type(exc).__name__}: {exc}") from exc
    w, h = image.size
    if max_pixels is not None and w * h > max_pixels:
        image.close()
        raise ImageError(path, TOO_LARGE, f"{w}x{h} = {w * h:,} pixels, more than max_pixels={max_pixels:,}")
    return image


def reduction_for(
    image_size: tuple[int, int], region_size: tuple[float, float] | None, min_side: float | None
) -> int:
    """The largest of 1, 2, 4, 8 by which an image may shrink so that the region (default the whole
    image) keeps at least ``min_side`` pixels on its shorter side (1 for images under
    :data:`REDUCE_ABOVE_PIXELS` or without ``min_side``)."""
    w, h = image_size
    if not min_side or w * h <= REDUCE_ABOVE_PIXELS:
        return 1
    rw, rh = region_size if region_size is not None else (w, h)
    room = min(rw, rh) / float(min_side)
    if not math.isfinite(room):
        return 1
    return next((s for s in (8, 4, 2) if room >= s), 1)


def read_image(
    path: str | os.PathLike,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    region_size: tuple[float, float] | None = None,
    min_side: float | None = None,
) -> tuple[Image.Image, int]:
    """Decode ``path`` as upright 8-bit RGB under the module's policy; ``(image, scale)``.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels (None: only Pillow's limit).
        region_size: ``(w, h)`` in full-resolution pixels of the part the caller will use
            (None: the whole image).
        min_side: the caller needs that region at least this many pixels on its shorter side;
            a large image is then decoded at a reduced scale (see :func:`reduction_for`).

    Returns:
        The image and the reduction ``scale`` (1, 2, 4 or 8): a full-resolution coordinate divided
        by ``scale`` is the coordinate in the returned image.

    Raises:
        ImageError: naming the file, the reason and what to do.
    """
    path = str(path)
    with _open(path, max_pixels) as image:
        scale = reduction_for(image.size, region_size, min_side)
        try:
            if scale > 1 and image.format in ("JPEG", "MPO"):
                scale = _draft(image, scale)
            image.load()
        except Exception as exc:  # noqa: BLE001 - any decoder failure means a corrupt file
            raise ImageError(path, CORRUPT, f"{type(exc).__name__}: {exc}") from exc
        if scale > 1 and image.format not in ("JPEG", "MPO"):
            image = image.reduce(scale)
        try:
            return to_rgb(image), scale
        except (ValueError, OSError) as exc:
            raise ImageError(path, BAD_MODE, f"mode {image.mode}: {exc}") from exc


def _draft(image: Image.Image, scale: int) -> int:
    """Ask the JPEG decoder for 1/``scale`` size; the reduction it chose (1, 2, 4 or 8)."""
    full_w = image.size[0]
    image.draft(image.mode, (max(1, image.size[0] // scale), max(1, image.size[1] // scale)))
    new_w = image.size[0]
    return next((s for s in (8, 4, 2) if -(-full_w // s) == new_w), 1)


def check_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageError | None:
    """None if ``path`` decodes under the module's policy, else the :class:`ImageError` saying why.

    Decodes every file completely (JPEGs at 1/8 scale, which still reads all of the compressed
    data), so truncated files are caught, unlike ``Image.verify`` which does nothing for JPEG.
    """
    path = str(path)
    try:
        with _open(path, max_pixels) as image:
            try:
                if image.format in ("JPEG", "MPO"):
                    _draft(image, 8)
                image.load()
            except Exception as exc:  # noqa: BLE001 - any decoder failure means a corrupt file
                raise ImageError(path, CORRUPT, f"{type(exc).__name__}: {exc}") from exc
            try:
                to_rgb(image)
            except (ValueError, OSError) as exc:
                raise ImageError(path, BAD_MODE, f"mode {image.mode}: {exc}") from exc
    except ImageError as exc:
        return exc
    return None


def load_image(image) -> np.ndarray:
    """An RGB ``uint8`` array from a path (this module's reading policy), a PIL image or an array."""
    from ..preprocess import to_rgb_array

    if isinstance(image, (str, os.PathLike)):
        return np.asarray(read_image(image)[0])
    return to_rgb_array(image)
