"""How a face becomes a network input: the one face pipeline of the project.

Training (:class:`fer_lib.data.FaceDataset`), prediction (:class:`fer_lib.serving.Recognizer`), video
features (:class:`fer_lib.video.features.TorchFeatureExtractor`) and ONNX export all go through one
:class:`Preprocess`, in the spirit of timm's single ``create_transform``::

    crop (box + margin, rounded to whole pixels, clipped)  ->  RGB uint8
    -> shrink to at most max_side px (when set)              ->  JPEG round trip (when set)
    -> grey (when the model was trained on grey)
    -> resize to input_size x input_size (PIL bilinear)     ->  contrast (when set: each face's luma
    mean / std set to one value)                           ->  normalise ((x - 255 mean) / (255 std))

A model carries its ``Preprocess`` (``MultiTaskNet.preprocess``); the trainer sets it to what the
training data went through and every checkpoint stores it (``model_config["preprocess"]``), so a model
trained at 96 px is served at 96 px whatever its backbone's default size is.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RESIZE = "pil-bilinear"  # paper A's public code and its loaders resize with PIL bilinear
# BGR input is a known pitfall of reproductions of paper A; "grey" is for models trained on grey faces
# (FER2013): colour photos are turned grey the same way before they reach such a model.
COLOURS = ("rgb", "grey")
# "standardise": each face's brightness and contrast set to one value before the mean / std normalisation
# (its luma mean and standard deviation become CONTRAST_TARGET, colour ratios kept), so a dark, flat
# photo and a contrast-enhanced dataset crop reach the network alike.
CONTRASTS = ("none", "standardise")
CONTRAST_TARGET: tuple[float, float] = (127.5, 64.0)  # luma mean, luma standard deviation (0-255 scale)
CONTRAST_MIN_STD = 4.0  # a flat face's contrast is raised at most 16x (64 / 4), noise is not blown up
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's "L"


Margin = float | tuple[float, float, float, float]


def margin_sides(margin: Margin) -> tuple[float, float, float, float]:
    """``(left, top, right, bottom)`` of a margin: one number for every side, or four (in that order)."""
    sides = (margin,) * 4 if np.ndim(margin) == 0 else tuple(np.asarray(margin, np.float64).reshape(-1))
    if len(sides) != 4 or not all(math.isfinite(float(v)) for v in sides):
        raise ValueError(f"a margin is one number or four (left, top, right, bottom), got {margin!r}")
    return tuple(float(v) for v in sides)  # type: ignore[return-value]


def crop_window(box, image_size: tuple[int, int], margin: Margin = 0.0) -> tuple[int, int, int, int]:
    """Integer window ``(left, top, right, bottom)`` of a box plus margin, clipped to ``(W, H)``.

    ``margin`` adds that fraction of the box width on the left and on the right, and of its height
    on the top and the bottom (0.1 makes the box 20 % larger in each direction); four numbers give
    the left, top, right and bottom sides their own fraction (negative ones move a side inwards).
    Coordinates are rounded to the nearest pixel. ValueError when the box is missing a coordinate or
    nothing is left.
    """
    width, height = image_size
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)[:4])
    if not all(map(math.isfinite, (x1, y1, x2, y2))):
        raise ValueError(f"face box {box!r} has a missing coordinate")
    left_m, top_m, right_m, bottom_m = margin_sides(margin)
    bw, bh = x2 - x1, y2 - y1
    x1, x2 = x1 - left_m * bw, x2 + right_m * bw
    y1, y2 = y1 - top_m * bh, y2 + bottom_m * bh
    left, top = max(0, int(round(x1))), max(0, int(round(y1)))
    right, bottom = min(width, int(round(x2))), min(height, int(round(y2)))
    if right <= left or bottom <= top:
        raise ValueError(
            f"face box {np.round([x1, y1, x2, y2], 1).tolist()} lies outside the "
            f"{width}x{height} image (or is empty)"
        )
    return left, top, right, bottom


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


@dataclass(frozen=True)
class Preprocess:
    """Crop rule, input size and normalisation of a model (see the module docstring).

    Args:
        input_size: side S of the square network input.
        mean, std: per-channel normalisation of values scaled to [0, 1].
        margin: fraction of the face box added on each side before cropping (0: tight, paper A), or
            four fractions (left, top, right, bottom): the frame of a dataset whose images are the
            faces, measured around the detector's box (:func:`fer_lib.faces.measure_framing`), so that
            a detected face is cropped as the training faces were framed.
        colour: ``"rgb"``, or ``"grey"`` (luma, ITU-R 601, repeated on the 3 channels) for a model trained
            on grey faces, so that colour photos reach it as its training faces did.
        resize: resampling of the crop (only ``"pil-bilinear"``).
        contrast: ``"none"``, or ``"standardise"``: every face's luma mean and standard deviation are set
            to :data:`CONTRAST_TARGET` (the same shift and scale on the three channels) before the
            normalisation, in training and serving alike, so the source's exposure and contrast (a
            contrast-enhanced dataset, a dim photo) do not reach the network.
        max_side: when set, a face whose longer side exceeds it is first shrunk to it (aspect kept):
            every face then carries no more detail than the lowest-resolution faces of the training
            data (UTKFace mixes 64 and 200 px chips; FER2013 is 48 px), whatever its source, so
            sharpness cannot stand in for a label and a sharp photo at serving time looks like the
            training faces.
        jpeg_quality: when set, every face, after that shrink, is stored as a JPEG of this quality (PIL,
            4:2:0) and read back. Shrinking alone leaves the compression: UTKFace's 64 px part was saved
            as 64 px JPEGs of quality 75, whose 8 x 8 blocks span an eighth of the face, while its 200 px
            part shrunk to 64 px is smooth; and 94 % of its children are in the 200 px part, so without
            this a smooth face is a cue to "child".
    """

    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    margin: Margin = 0.0
    colour: str = "rgb"
    resize: str = RESIZE
    max_side: int | None = None
    contrast: str = "none"
    jpeg_quality: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "input_size", int(self.input_size))
        if self.max_side is not None:
            object.__setattr__(self, "max_side", int(self.max_side))
            if self.max_side < 8:
                raise ValueError(f"Preprocess max_side must be >= 8 px (or None), got {self.max_side}")
        if self.jpeg_quality is not None:
            object.__setattr__(self, "jpeg_quality", int(self.jpeg_quality))
            if not 1 <= self.jpeg_quality <= 95:
                raise ValueError(f"Preprocess jpeg_quality must be 1-95 (or None), got {self.jpeg_quality}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        sides = margin_sides(self.margin)
        object.__setattr__(self, "margin", sides[0] if len(set(sides)) == 1 else sides)
        if self.input_size < 1 or len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"Preprocess needs input_size >= 1 and 3 means / stds, got {self}")
        if self.contrast not in CONTRASTS:
            raise ValueError(f"Preprocess contrast must be one of {CONTRASTS}, got {self.contrast!r}")
        if self.colour not in COLOURS or self.resize != RESIZE:
            raise ValueError(
                f"unsupported preprocessing colour={self.colour!r} resize={self.resize!r}; "
                f"fer_lib feeds {' or '.join(COLOURS)} faces resized with {RESIZE!r}"
            )

    # --------------------------------------------------------------------------------- plain values
    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocess:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown preprocessing key(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> Preprocess:
        return dataclasses.replace(self, **changes)

    @property
    def key(self) -> str:
        """A string naming the preprocessing, for cache keys."""
        m = (
            ",".join(f"{v:g}" for v in margin_sides(self.margin))
            if isinstance(self.margin, tuple)
            else f"{self.margin:g}"
        )
        key = f"{self.input_size}|{self.mean}|{self.std}|margin={m}|{self.resize}|{self.colour}"
        key += f"|max_side={self.max_side}" if self.max_side else ""
        key += f"|jpeg={self.jpeg_quality}" if self.jpeg_quality else ""
        return key + (f"|contrast={self.contrast}" if self.contrast != "none" else "")

    # ----------------------------------------------------------------------------------- the steps
    def window(self, box, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The crop window of ``box`` (``[x1, y1, x2, y2, ...]``) in an image of ``(W, H)``."""
        return crop_window(box, image_size, self.margin)

    def crop(self, image, box) -> np.ndarray:
        """The face of ``box`` as an RGB ``uint8`` array (any size); ``box=None``: the whole image."""
        arr = to_rgb_array(image)
        if box is None:
            return arr
        left, top, right, bottom = self.window(box, (arr.shape[1], arr.shape[0]))
        return arr[top:bottom, left:right]

    def limit(self, face):
        """``face`` (PIL image or RGB array) shrunk so that its longer side is at most ``max_side``
        (PIL bilinear, aspect kept; unchanged when it is smaller or ``max_side`` is None), then, with
        ``jpeg_quality``, stored as such a JPEG and read back (RGB). Same type out."""
        if self.max_side is None and self.jpeg_quality is None:  # most models: nothing to do, per face
            return face
        is_pil = isinstance(face, Image.Image)
        w, h = face.size if is_pil else (face.shape[1], face.shape[0])
        shrink = self.max_side is not None and max(w, h) > self.max_side
        if not shrink and self.jpeg_quality is None:
            return face
        img = face if is_pil else Image.fromarray(to_rgb_array(face))
        if shrink:
            k = self.max_side / max(w, h)
            img = img.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BILINEAR)
        if self.jpeg_quality is not None:
            buf = io.BytesIO()
            img.convert("RGB").save(buf, "JPEG", quality=self.jpeg_quality)
            img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        return img if is_pil else np.asarray(img)

    def resize_face(self, face) -> np.ndarray:
        """A face (RGB array or PIL image, any size) limited to ``max_side``, in the model's colour mode,
        resized to ``S x S`` (``uint8``)."""
        s = self.input_size
        face = self.limit(face)
        if self.colour == "grey":
            face = self.to_grey(face)
        img = face if isinstance(face, Image.Image) else Image.fromarray(to_rgb_array(face))
        img = img.convert("RGB")
        if img.size != (s, s):
            img = img.resize((s, s), Image.BILINEAR)
        return np.asarray(img)

    @staticmethod
    def to_grey(face) -> np.ndarray:
        """RGB -> luma (PIL's ITU-R 601-2) repeated on 3 channels; grey faces come back unchanged."""
        img = face if isinstance(face, Image.Image) else Image.fromarray(to_rgb_array(face))
        return np.asarray(img.convert("L").convert("RGB"))

    def face(self, image, box=None) -> np.ndarray:
        """Crop and resize: the ``uint8`` ``S x S x 3`` face that :meth:`normalise` starts from."""
        return self.resize_face(self.crop(image, box))

    def batch(self, faces: Sequence) -> np.ndarray:
        """Faces (already cropped, any size) -> one ``uint8`` ``[N, S, S, 3]`` array."""
        s = self.input_size
        out = np.empty((len(faces), s, s, 3), np.uint8)
        for i, f in enumerate(faces):
            out[i] = self.resize_face(f)
        return out

    def _scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        # (pixel - 255 mean) * 1 / (255 std) in float32: one formula, so every path gives the same bits.
        mean = np.asarray(self.mean, np.float32) * np.float32(255.0)
        inv_std = np.float32(1.0) / (np.asarray(self.std, np.float32) * np.float32(255.0))
        return mean, inv_std

    def normalise(self, faces_u8: np.ndarray) -> np.ndarray:
        """``uint8`` ``[..., S, S, 3]`` -> normalised float32 ``[..., 3, S, S]`` (numpy)."""
        mean, inv_std = self._scale_shift()
        x = np.asarray(faces_u8, np.float32)
        if self.contrast == "standardise":
            luma = x @ np.asarray(LUMA, np.float32)
            mu = luma.mean(axis=(-2, -1), keepdims=True)[..., None]
            sd = np.maximum(luma.std(axis=(-2, -1), keepdims=True)[..., None], np.float32(CONTRAST_MIN_STD))
            x = (x - mu) * (np.float32(CONTRAST_TARGET[1]) / sd) + np.float32(CONTRAST_TARGET[0])
        x = (x - mean) * inv_std
        return np.ascontiguousarray(np.moveaxis(x, -1, -3))

    def normalise_torch(self, faces_u8, device=None):
        """``uint8`` NHWC (numpy or tensor) -> normalised float32 NCHW tensor on ``device``.

        The result is a view of the NHWC buffer, i.e. already in ``channels_last`` memory format.
        """
        import torch

        mean, inv_std = (torch.from_numpy(v).to(device).view(1, 1, 1, 3) for v in self._scale_shift())
        x = torch.as_tensor(faces_u8).to(device).float()
        if self.contrast == "standardise":
            luma = x @ torch.tensor(LUMA, dtype=torch.float32, device=x.device)
            mu = luma.mean(dim=(-2, -1), keepdim=True)[..., None]
            sd = luma.std(dim=(-2, -1), keepdim=True, correction=0)[..., None].clamp_min(CONTRAST_MIN_STD)
            x = (x - mu) * (CONTRAST_TARGET[1] / sd) + CONTRAST_TARGET[0]
        return ((x - mean) * inv_std).permute(0, 3, 1, 2)

    def tensor(self, face) -> Any:
        """One ``S x S`` uint8 face -> a normalised ``[3, S, S]`` float32 tensor (what datasets return)."""
        import torch

        s = self.input_size
        if not (isinstance(face, np.ndarray) and face.shape == (s, s, 3) and face.dtype == np.uint8):
            face = self.resize_face(face)  # S x S uint8 faces are network inputs already (datasets' cache)
        elif self.colour == "grey":
            face = self.to_grey(face)  # idempotent on grey faces (PIL's luma of r = g = b is r)
        return torch.from_numpy(self.normalise(face))


def for_model(model) -> Preprocess:
    """The :class:`Preprocess` of a model: its ``preprocess`` attribute, else one built from its
    ``input_size`` / ``mean`` / ``std`` (any network that follows timm's conventions)."""
    pre = getattr(model, "preprocess", None)
    if isinstance(pre, Preprocess):
        return pre
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = getattr(model, "input_size", None) or (cfg.get("input_size") or (3, 224, 224))[-1]
    return Preprocess(
        int(size),
        tuple(getattr(model, "mean", None) or cfg.get("mean") or IMAGENET_MEAN),
        tuple(getattr(model, "std", None) or cfg.get("std") or IMAGENET_STD),
    )


def from_checkpoint(ckpt: dict) -> Preprocess:
    """The preprocessing a checkpoint was trained with.

    Checkpoints store it under ``model_config["preprocess"]``. Older ones only had the backbone's
    default ``input_size`` there; the size they were trained at is ``config["train"]["image_size"]``.
    """
    cfg = ckpt.get("model_config") or {}
    if cfg.get("preprocess"):
        return Preprocess.from_dict(cfg["preprocess"])
    train = (ckpt.get("config") or {}).get("train") or {}
    size = train.get("image_size") or cfg.get("input_size")
    if not size:
        raise ValueError("checkpoint records no input size (no model_config.preprocess, no train.image_size)")
    return Preprocess(
        int(size), tuple(cfg.get("mean") or IMAGENET_MEAN), tuple(cfg.get("std") or IMAGENET_STD)
    )
