"""Torch side of the data flow: a manifest -> ``(image, labels, mask)`` items and seeded loaders.

``FaceDataset`` opens each image with PIL, applies the EXIF orientation, converts any mode to RGB,
crops the manifest's face box (tight unless ``margin`` > 0; the whole image where the box is NaN),
resizes with PIL bilinear to ``image_size`` and normalises with ``mean``/``std``. Face boxes are
read in the orientation the image is displayed in (after EXIF transposition). With ``align="eyes"``
(paper B) a row with eye centres (``EYE_COLUMNS``, from AffectNet's landmarks) is first rotated so that
its eyes are level (:func:`fer_lib.faces.level_eyes`), the box moving with it.
Bad and huge files follow the policy of :mod:`fer_lib.datasets.images`: one ``ImageError`` naming
the file and what to do; images over ``max_pixels`` are refused; JPEGs over 16.7 M pixels are
decoded at 1/2..1/8 scale when the face still gets at least ``image_size`` pixels.
Labels that a row lacks are 0 with mask False, so one batch can mix datasets with different labels.
"""

from __future__ import annotations

import copy
import math
import random
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from fer_lib.datasets.affectnet import EYE_COLUMNS
from fer_lib.datasets.images import DEFAULT_MAX_PIXELS, ImageError, read_image, to_rgb
from fer_lib.faces import level_eyes
from fer_lib.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from fer_lib.tasks import label_keys

LABEL_KEYS: tuple[str, ...] = label_keys()  # every head's label columns (fer_lib.tasks)
__all__ = [
    "ALIGN_MODES",
    "AUGMENT_MODES",
    "FaceDataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageError",
    "LABEL_KEYS",
    "identity_index",
    "load_rgb",
    "make_loader",
    "seed_worker",
    "to_rgb",
]
AUGMENT_MODES = ("none", "light", "full", "flip_rotate30")
ALIGN_MODES = ("box", "eyes")
FLOAT_LABELS = frozenset({"age", "valence", "arousal"})
DEFAULT_CACHE_BYTES = (
    1 << 30
)  # 1 GiB of decoded faces: UTKFace (7,780) at 112 px is 0.3 GB, FER2013 at 96 px 0.8 GB


def identity_index(manifest: pd.DataFrame, splits: Sequence[str] | None = None) -> dict[str, int]:
    """Identity name -> class index over the sorted non-empty identities (of ``splits`` if given)."""
    df = manifest if splits is None else manifest[manifest["split"].isin(list(splits))]
    names = sorted({str(i) for i in df["identity"].fillna("") if str(i)})
    return {name: k for k, name in enumerate(names)}


def load_rgb(path: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image file as upright 8-bit RGB (see :func:`fer_lib.datasets.images.to_rgb`).

    Raises :class:`~fer_lib.datasets.images.ImageError` (an OSError) naming the file, the reason
    and what to do, for missing, empty, non-image, truncated and too-large files.
    """
    return read_image(path, max_pixels)[0]


class _Augment:
    """Small, label-preserving changes: rotation, RandomResizedCrop-like zoom, horizontal flip.

    Draws from torch's random state, so ``make_loader``'s seeded generator and worker seeding make
    an epoch reproducible.
    """

    def __init__(
        self,
        image_size: int,
        max_rotation: float = 10.0,
        scale: tuple[float, float] = (0.8, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: float = 0.5,
    ):
        self.image_size = image_size
        self.max_rotation = max_rotation
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.flip = flip
        self.area = 1.0  # the share of the face's area that the last zoom crop kept

    def _uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(()))

    def _window(self, width: int, height: int) -> tuple[int, int, int, int]:
        area = width * height
        for _ in range(10):
            target = area * self._uniform(*self.scale)
            aspect = math.exp(self._uniform(*self.log_ratio))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left = int(torch.randint(0, width - w + 1, ()))
                top = int(torch.randint(0, height - h + 1, ()))
                self.area = w * h / area
                return left, top, left + w, top + h
        self.area = 1.0
        return 0, 0, width, height

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.max_rotation:
            image = image.rotate(
                self._uniform(-self.max_rotation, self.max_rotation), resample=Image.BILINEAR
            )
        image = image.crop(self._window(*image.size))
        image = image.resize((self.image_size, self.image_size), Image.BILINEAR)
        if float(torch.rand(())) < self.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image


class _LightAugment:
    """Flip, shift (edge padding) and optional random erasing on an ``S x S x 3`` uint8 array; draws
    from torch's random state like :class:`_Augment`."""

    def __init__(self, image_size: int, shift: int = 4, erase: float = 0.0):
        self.image_size, self.shift, self.erase = int(image_size), int(shift), float(erase)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if float(torch.rand(())) < 0.5:
            img = img[:, ::-1]
        if self.shift:
            s, n = self.shift, self.image_size
            dx, dy = (int(v) for v in torch.randint(-s, s + 1, (2,)))
            img = np.pad(img, ((s, s), (s, s), (0, 0)), mode="edge")[s + dy : s + dy + n, s + dx : s + dx + n]
        if self.erase and float(torch.rand(())) < self.erase:
            side = self.image_size // 4
            x0, y0 = (int(v) for v in torch.randint(0, self.image_size - side + 1, (2,)))
            img = img.copy()
            img[y0 : y0 + side, x0 : x0 + side] = 128
        return img


class _FlipRotate:
    """Paper B's training augmentation on the ``S x S x 3`` uint8 face: a horizontal flip with probability
    ``flip``, then a rotation by an angle uniform in ``[-max_rotation, max_rotation]`` degrees about the
    centre (PIL bilinear; uncovered corners black, as torchvision's ``RandomRotation``). Nothing else: no
    zoom, no shift. Draws from torch's random state like :class:`_Augment`."""

    def __init__(self, max_rotation: float = 30.0, flip: float = 0.5):
        self.max_rotation, self.flip = float(max_rotation), float(flip)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if float(torch.rand(())) < self.flip:
            img = img[:, ::-1]
        angle = self.max_rotation * (2.0 * float(torch.rand(())) - 1.0)
        image = Image.fromarray(np.ascontiguousarray(img))
        return np.asarray(image.rotate(angle, resample=Image.BILINEAR))


class _Photometric:
    """Colour that cannot stand in for a label: with probability ``grey`` the face becomes its luminance
    (ITU-R 601, in all three channels), else brightness, contrast and saturation are each scaled by a
    factor uniform in ``[1 - jitter, 1 + jitter]`` (in that order, as torchvision's ColorJitter without
    hue). Works on the ``S x S x 3`` uint8 face; draws from torch's random state like :class:`_Augment`."""

    LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

    def __init__(self, grey: float = 0.0, jitter: float = 0.0):
        if not (0.0 <= grey <= 1.0 and 0.0 <= jitter < 1.0):
            raise ValueError(f"grey must be in [0, 1] and jitter in [0, 1), got grey={grey}, jitter={jitter}")
        self.grey, self.jitter = float(grey), float(jitter)

    def _factor(self) -> float:
        return 1.0 + self.jitter * (2.0 * float(torch.rand(())) - 1.0)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        x = np.asarray(img, dtype=np.float32)
        if float(torch.rand(())) < self.grey:
            y = x @ self.LUMA
            return np.repeat(np.clip(np.rint(y), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
        if self.jitter > 0:
            x = x * self._factor()
            mean = float((x @ self.LUMA).mean())
            x = (x - mean) * self._factor() + mean
            y = (x @ self.LUMA)[..., None]
            x = (x - y) * self._factor() + y
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class _Degrade:
    """With probability ``p``: shrink an ``S x S`` face to a random side in ``[lo, S]`` and enlarge it back
    (PIL bilinear both ways), so sharp and blurry faces of the same label look alike to the model."""

    def __init__(self, image_size: int, p: float, lo: int):
        if not 0 < p <= 1 or not 1 <= lo <= image_size:
            raise ValueError(
                f"degrade needs 0 < p <= 1 and 1 <= degrade_min <= {image_size}, got p={p}, degrade_min={lo}"
            )
        self.image_size, self.p, self.lo = int(image_size), float(p), int(lo)

    def __call__(self, image: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
        if float(torch.rand(())) >= self.p:
            return image
        side = int(torch.randint(self.lo, self.image_size + 1, ()))
        img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        n = self.image_size
        return img.resize((side, side), Image.BILINEAR).resize((n, n), Image.BILINEAR)


class FaceDataset(Dataset):
    """Manifest rows -> ``(image [3, S, S] float32, labels dict, mask dict)``.

    Args:
        manifest: DataFrame with the shared schema (``fer_lib.datasets.MANIFEST_COLUMNS``).
        image_size: output side S, or a whole :class:`fer_lib.preprocess.Preprocess` (then ``mean``,
            ``std`` and ``margin`` are taken from it). Crop, resize and normalisation are that
            object's, the same as in prediction, video features and ONNX export.
        mean, std: per-channel normalisation (on values scaled to [0, 1]).
        augment: one of :data:`AUGMENT_MODES`: ``"full"``: random rotation (+-10 deg), zoom crop
            (area ``zoom_min``-1) and horizontal flip; ``"light"``: flip and a shift of up to ``shift`` pixels
            on the S x S array (plus a random-erasing patch with probability ``erase``), cheap enough
            for 48 px faces on a CPU; ``"flip_rotate30"``: paper B's horizontal flip and rotation by up to
            +-30 deg on the S x S face; ``"none"``: paper A's resize-only default.
        zoom_min: the smallest share of the face's area that ``"full"``'s zoom crop keeps (0 < zoom_min
            <= 1; 1: no zoom). Lower values show the model tighter framings than the dataset's own, as
            other collections' crops (FER2013, CK+) are.
        zoom_skip, zoom_skip_below: labels (of :data:`LABEL_KEYS`) masked on the zoom crops that keep
            less than ``zoom_skip_below`` of the face's area, so a low ``zoom_min`` shows the tighter
            framings to the other heads only (e.g. ``race``: ethnicity, which reads hair and skin, trained on
            the framings of ``zoom_min=0.8`` alone).
        identity_index: identity name -> class index; None: identity labels are all masked.
        margin: fraction of the face box added on each side before cropping (0: tight).
        degrade: probability that a face is shrunk to a random side between ``degrade_min`` and S
            pixels and enlarged back (training only): collections mix resolutions (UTKFace chips of 64
            and 200 px), and a model should not learn resolution as a shortcut for a label.
        grey / jitter: photometric augmentation (training only): the share of faces turned grey, and
            the strength of the brightness / contrast / saturation jitter of the others, so that colour
            is not a shortcut either (:class:`_Photometric`).
        max_pixels: images with more pixels raise ``ImageError`` (decompression-bomb guard;
            None: only Pillow's own limit).
        cache_bytes: keep up to this many bytes of decoded, cropped and resized faces (uint8) in
            memory, so epochs after the first skip JPEG decoding (0: no cache). The cached face is
            exactly what an uncached read produces, so results do not depend on it. Each DataLoader
            worker keeps its own cache.
        align: one of :data:`ALIGN_MODES`: ``"box"`` crops the face box as it is; ``"eyes"`` (paper B)
            first levels the eyes of rows that have eye centres (``EYE_COLUMNS``) and a face box. Rows
            without them are cropped by the box alone; their number is ``unaligned`` (and a warning).
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        image_size: int | Preprocess,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: str = "none",
        zoom_min: float = 0.8,
        zoom_skip: Sequence[str] = (),
        zoom_skip_below: float = 0.8,
        identity_index: dict[str, int] | None = None,
        margin: float = 0.0,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        shift: int = 4,
        erase: float = 0.0,
        degrade: float = 0.0,
        degrade_min: int = 32,
        align: str = "box",
        grey: float = 0.0,
        jitter: float = 0.0,
    ):
        if "path" not in manifest.columns:
            raise ValueError("FaceDataset needs a manifest with a 'path' column (see fer_lib.datasets)")
        if not isinstance(image_size, Preprocess):
            image_size = Preprocess(int(image_size), tuple(mean), tuple(std), margin)
        self.preprocess = image_size
        self.image_size = self.preprocess.input_size
        if augment not in AUGMENT_MODES:
            raise ValueError(f"augment must be one of {AUGMENT_MODES}, got {augment!r}")
        if align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {ALIGN_MODES}, got {align!r}")
        if not 0 < zoom_min <= 1:
            raise ValueError(f"zoom_min must be in (0, 1], got {zoom_min}")
        self.augment = _Augment(self.image_size, scale=(zoom_min, 1.0)) if augment == "full" else None
        unknown = sorted(set(zoom_skip) - set(LABEL_KEYS))
        if unknown:
            raise ValueError(f"zoom_skip: unknown labels {unknown}; the labels are {', '.join(LABEL_KEYS)}")
        if not 0 < zoom_skip_below <= 1:
            raise ValueError(f"zoom_skip_below must be in (0, 1], got {zoom_skip_below}")
        self.zoom_skip, self.zoom_skip_below = tuple(zoom_skip), float(zoom_skip_below)
        self._light_args = (int(shift), float(erase))
        self.light, self.flip_rotate = self._face_augment(augment)
        self.degrade = _Degrade(self.image_size, degrade, degrade_min) if degrade > 0 else None
        self.photometric = _Photometric(grey, jitter) if grey > 0 or jitter > 0 else None
        self.identity_index = identity_index
        self.max_pixels = max_pixels
        self.manifest = manifest  # the trainer counts classes from it without reading images
        self.paths = manifest["path"].astype(str).to_numpy()
        n = len(manifest)
        self.boxes = np.stack(
            [self._column(manifest, c, n) for c in ("face_x", "face_y", "face_w", "face_h")], 1
        )
        self.values, self.present = self._labels(manifest, n)
        self.align = align
        self.eyes, self.levelled = self._eyes(manifest, n, align == "eyes")
        self.unaligned = int(n - self.levelled.sum()) if align == "eyes" else 0
        if self.unaligned:
            warnings.warn(
                f"FaceDataset(align='eyes'): {self.unaligned:,} of {n:,} rows have no eye centres "
                f"({', '.join(EYE_COLUMNS)}) or no face box; they are cropped by the face box without "
                "levelling the eyes",
                stacklevel=2,
            )
        self.cache_bytes = int(cache_bytes or 0)
        self._cache: dict[int, np.ndarray] = {}
        self._cached = 0

    @staticmethod
    def _column(manifest: pd.DataFrame, name: str, n: int) -> np.ndarray:
        if name not in manifest.columns:
            return np.full(n, np.nan)
        return pd.to_numeric(manifest[name], errors="coerce").to_numpy(dtype=np.float64)

    def _eyes(self, manifest: pd.DataFrame, n: int, align: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(n, 4)`` eye centres (left x, y, right x, y) and which rows are levelled (``align`` only: two
        distinct finite eye centres and a usable face box)."""
        eyes = np.stack([self._column(manifest, c, n) for c in EYE_COLUMNS], 1).reshape(n, 4)
        box_ok = np.isfinite(self.boxes).all(1) & (self.boxes[:, 2] > 0) & (self.boxes[:, 3] > 0)
        ok = np.isfinite(eyes).all(1) & (eyes[:, :2] != eyes[:, 2:]).any(1) & box_ok
        return eyes, ok & align

    def _face_augment(self, mode: str) -> tuple[_LightAugment | None, _FlipRotate | None]:
        """The augmentations that work on the cached S x S face: ``light``'s and ``flip_rotate30``'s."""
        light = _LightAugment(self.image_size, *self._light_args) if mode == "light" else None
        return light, (_FlipRotate(30.0) if mode == "flip_rotate30" else None)

    def _labels(self, manifest: pd.DataFrame, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        values, present = {}, {}
        for key in LABEL_KEYS:
            if key == "identity":
                names = (
                    manifest["identity"].fillna("").astype(str)
                    if "identity" in manifest
                    else pd.Series([""] * n)
                )
                index = self.identity_index or {}
                v = np.array([index.get(name, -1) for name in names], dtype=np.int64)
                ok = v >= 0
            else:
                v = self._column(manifest, key, n)
                ok = np.isfinite(v)
                if key not in FLOAT_LABELS:
                    v = np.where(ok, np.rint(np.nan_to_num(v)), 0).astype(np.int64)
            values[key] = np.where(ok, v, 0).astype(np.float32 if key in FLOAT_LABELS else np.int64)
            present[key] = ok
        return values, present

    def __len__(self) -> int:
        return len(self.paths)

    def load_face(self, i: int) -> Image.Image:
        """The face region of row ``i`` as RGB (whole image when the box is missing), before resizing.

        Large JPEGs may come back at a reduced scale, never smaller than ``image_size`` (x1.25 with
        augmentation, whose zoom crops and rotation need a little more).
        """
        x, y, w, h = self.boxes[i]
        has_box = bool(np.isfinite([x, y, w, h]).all() and w > 0 and h > 0)
        need = self.image_size * (1.25 if self.augment is not None else 1.0)
        image, scale = read_image(self.paths[i], self.max_pixels, (w, h) if has_box else None, need)
        if has_box:
            box = np.array([x, y, x + w, y + h]) / scale
            if self.levelled[i]:
                eyes = self.eyes[i] / scale
                image, box = level_eyes(image, eyes[:2], eyes[2:], box)
            try:
                image = image.crop(self.preprocess.window(box, image.size))
            except ValueError as exc:
                raise ValueError(
                    f"{self.paths[i]} (manifest row {i}): {exc}. What to do: fix the box "
                    "(face_x, face_y, face_w, face_h in displayed pixels) or set it to NaN "
                    "to use the whole image"
                ) from exc
        return image

    def _shrink(self, image: Image.Image) -> Image.Image | np.ndarray:
        """The face at the size the next step needs: S x S, or (with augmentation, whose zoom crop and
        rotation want a little more) a shorter side of ceil(1.25 S), aspect kept."""
        if self.augment is None:
            return self.preprocess.resize_face(image)
        image = self.preprocess.limit(image)
        side = math.ceil(1.25 * self.image_size)
        w, h = image.size
        if min(w, h) > side:
            k = side / min(w, h)
            image = image.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BILINEAR)
        return image

    def with_augment(
        self, mode: str, degrade: float = 0.0, degrade_min: int = 32, grey: float = 0.0, jitter: float = 0.0
    ) -> FaceDataset:
        """A shallow copy with augmentation ``"light"``, ``"flip_rotate30"`` or ``"none"`` (and ``degrade``,
        the photometric ``grey`` / ``jitter``);
        the decoded-face cache is shared, so train and eval views decode each face once. (``"full"`` caches
        larger faces: build a new dataset for it.)"""
        modes = ("none", "light", "flip_rotate30")
        if mode not in modes or self.augment is not None:
            raise ValueError(
                f"with_augment switches between {', '.join(map(repr, modes))} on a dataset built without "
                f"'full' augmentation, got {mode!r}"
            )
        out = copy.copy(self)
        out.light, out.flip_rotate = self._face_augment(mode)
        out.degrade = _Degrade(self.image_size, degrade, degrade_min) if degrade > 0 else None
        out.photometric = _Photometric(grey, jitter) if grey > 0 or jitter > 0 else None
        return out

    def face_array(self, i: int) -> np.ndarray:
        """Row ``i``'s face as the ``uint8`` array that augmentation / normalisation start from
        (from the in-memory cache after the first read)."""
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        arr = np.asarray(self._shrink(self.load_face(i)), dtype=np.uint8)
        if self._cached + arr.nbytes <= self.cache_bytes:
            arr.setflags(write=False)
            self._cache[i] = arr
            self._cached += arr.nbytes
        return arr

    def __getitem__(self, i: int):
        image = self.face_array(i)
        tight = False
        if self.augment is not None:
            image = self.augment(Image.fromarray(image))
            tight = self.augment.area < self.zoom_skip_below
        elif self.light is not None:
            image = self.light(image)
        elif self.flip_rotate is not None:
            image = self.flip_rotate(image)
        if self.photometric is not None:
            image = self.photometric(np.asarray(image))
        if self.degrade is not None:
            image = self.degrade(image)
        labels = {k: torch.tensor(self.values[k][i]) for k in LABEL_KEYS}
        mask = {
            k: torch.tensor(bool(self.present[k][i]) and not (tight and k in self.zoom_skip))
            for k in LABEL_KEYS
        }
        return self.preprocess.tensor(image), labels, mask


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - third-party code draws from the legacy global state
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose shuffling and worker randomness follow ``seed`` (same seed, same batches)."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
