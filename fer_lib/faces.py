"""Face detection (MTCNN from facenet-pytorch) and face selection (crops: fer_lib.preprocess).

The MTCNN weights ship inside the facenet-pytorch wheel, so detection works offline. Boxes are
``[x1, y1, x2, y2, prob]`` in pixels of the input image, sorted by probability (highest first).
Crops are tight (no margin) by default, as in paper A's wording; ``margin`` adds a fraction of
the box size on every side (the public code's 20/40 px margins correspond to roughly 0.1-0.2).
:func:`measure_framing` measures the frame of a dataset whose images are the faces (FER2013,
UTKFace) around the detector's box, so that ``predict`` crops a detected face as the training
faces were framed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .config import VideoConfig
from .preprocess import Preprocess, crop_window, to_rgb_array  # noqa: F401 - re-exported

EMPTY_BOXES = np.zeros((0, 5), dtype=np.float32)
EMPTY_POINTS = np.zeros((0, 5, 2), dtype=np.float32)
#: facenet-pytorch's P-/R-/O-Net score thresholds (paper A's public code raises the last to 0.9).
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)
#: Face selections: ``largest`` area (paper A's AFEW wording), highest ``score`` (its code), ``all`` faces.
SELECT_MODES = ("largest", "score", "all")
TIGHT = Preprocess(1)  # the box itself, no margin (paper A's crop); only its crop() is used


class FaceDetector:
    """MTCNN face detector returning every face with its probability (and 5 landmarks on request).

    Args:
        min_face_size: smallest face side in pixels that the image pyramid looks for (default
            ``VideoConfig.min_face_predict``).
        device: torch device for the three networks.
        thresholds: the P-/R-/O-Net score thresholds (default :data:`DEFAULT_THRESHOLDS`).
        factor: scale step of the image pyramid.
    """

    def __init__(
        self,
        min_face_size: int = VideoConfig.min_face_predict,
        device: str = "cpu",
        thresholds: Sequence[float] | None = None,
        factor: float = 0.709,
    ):
        import torch
        from facenet_pytorch import MTCNN

        self.min_face_size = int(min_face_size)
        self.device = torch.device(device)
        self.thresholds = [float(t) for t in (DEFAULT_THRESHOLDS if thresholds is None else thresholds)]
        if len(self.thresholds) != 3:
            raise ValueError(f"MTCNN needs 3 thresholds (P-, R-, O-Net), got {self.thresholds}")
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
    the one with the largest area (paper A's AFEW wording), ``"score"`` the one with the highest
    probability (paper A's code; the first of equals), ``"all"`` every one (VGAF, predict).
    Returns a ``(k, 5)`` float32 array (k may be 0); rows with more columns (a detection's landmarks
    after its box, ``(k, 15)``) keep them."""
    if mode not in SELECT_MODES:
        raise ValueError(f"select_faces: unknown mode {mode!r}; choose one of {', '.join(SELECT_MODES)}")
    if boxes is None or np.size(boxes) == 0:
        return EMPTY_BOXES.copy()
    b = _rows(boxes)
    b = b[(b[:, 4] >= min_prob) & (face_sizes(b) >= min_size)]
    if mode != "all" and len(b) > 1:
        b = b[[int(np.argmax(box_area(b) if mode == "largest" else b[:, 4]))]]
    return b


def crop_faces(
    image: np.ndarray,
    detections: np.ndarray | None,
    crop: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    select: str = "all",
    min_size: float = 0.0,
    min_prob: float = 0.0,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The faces of one image that a consumer keeps, cropped: :func:`select_faces` (``select``,
    ``min_size``, ``min_prob``), then ``crop(image, row)`` of each kept row (default: the tight box,
    ``TIGHT.crop``; predict and video pass their model's ``Preprocess.crop`` or a five-point alignment).
    A face whose crop raises ValueError (its box or landmarks outside the image) is skipped. Returns
    ``(crops, rows)``: one RGB array per face and its detection row (``[x1, y1, x2, y2, prob]`` and any
    landmark columns), in detection order."""
    crop = TIGHT.crop if crop is None else crop
    crops, kept = [], []
    for row in select_faces(detections, select, min_size=min_size, min_prob=min_prob):
        try:
            crops.append(crop(image, row))
        except ValueError:  # a box (or landmarks) outside the image
            continue
        kept.append(row)
    return crops, kept


def _rows(detections) -> np.ndarray:
    """Detections as a float32 ``(k, width)`` array: ``[x1, y1, x2, y2, prob]`` and any columns after."""
    d = np.asarray(detections, dtype=np.float32)
    return d.reshape(-1, d.shape[-1] if d.ndim > 1 else 5)


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
    its corners and probability (and landmarks, in rows ``(k, 15)`` that carry them) move linearly. A face
    found by one of them only (it enters, leaves or is hidden in between) is left out rather than guessed,
    since a crop of whatever hides it would be a wrong face while a missing frame only drops out of the
    pooled statistics. Returns float32 rows of the inputs' width sorted by probability, as the detector's.
    """
    a, b = _rows(a), _rows(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"interpolate_boxes: rows of {a.shape[1]} and {b.shape[1]} columns")
    iou = box_iou(a, b)
    pairs, free_a, free_b = [], set(range(len(a))), set(range(len(b)))
    for i, j in zip(*np.unravel_index(np.argsort(-iou, axis=None, kind="stable"), iou.shape)):
        if iou[i, j] < min_iou:
            break
        if i in free_a and j in free_b:
            pairs.append((1 - t) * a[i] + t * b[j])
            free_a.discard(i)
            free_b.discard(j)
    out = np.asarray(pairs, dtype=np.float32).reshape(-1, a.shape[1])
    return out[np.argsort(-out[:, 4], kind="stable")]


# -------------------------------------------------------------------------------------- alignment
#: Where a similarity transform puts MTCNN's five landmarks (left eye, right eye, nose, left and right mouth
#: corners, image sides) in a ``FIVE_POINT_SIDE`` px square face: insightface's ArcFace reference points.
FIVE_POINT_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
FIVE_POINT_SIDE = 112


def similarity_transform(src, dst) -> np.ndarray:
    """The ``2 x 3`` matrix ``[s R | t]`` of the rotation, uniform scale and translation taking the points
    ``src`` (``n x 2``) closest to ``dst`` in least squares (Umeyama 1991; no reflection)."""
    src, dst = (np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in (src, dst))
    if len(src) != len(dst) or len(src) < 2:
        raise ValueError(
            f"similarity_transform needs two equal sets of >= 2 points, got {len(src)} and {len(dst)}"
        )
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if not np.isfinite(var_s) or var_s <= 0:
        raise ValueError(f"points {src.tolist()} are not finite or all coincide; no transform fits them")
    u, sv, vt = np.linalg.svd(d0.T @ s0 / len(src))
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ np.diag(d) @ vt
    scale = float((sv * d).sum() / var_s)
    return np.column_stack([scale * rot, mu_d - scale * rot @ mu_s])


def align_five_points(image, points5, size: int) -> np.ndarray:
    """The face of ``image`` warped so that its five landmarks ``points5`` (``5 x 2``, MTCNN's order, in
    pixels with pixel centres at whole numbers) land on :data:`FIVE_POINT_TEMPLATE` scaled to ``size``:
    an RGB ``uint8`` ``size x size`` array (PIL bilinear; what lies outside the image is black).

    Paper A aligned VGAF faces this way (to 224 px) instead of cropping the tight box. A face larger than
    ``size`` is first shrunk with PIL's antialiased resize, as :class:`~fer_lib.preprocess.Preprocess`
    shrinks box crops, so it does not alias. ValueError when the points are not finite or lie so far
    outside the image that nothing of it reaches the output.
    """
    arr, size = to_rgb_array(image), int(size)
    pts = np.asarray(points5, dtype=np.float64).reshape(5, 2)
    dst = FIVE_POINT_TEMPLATE * (size / FIVE_POINT_SIDE)
    m = similarity_transform(pts, dst)
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    # only the part of the image that the output square comes from (plus room for the filter) is warped
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    corners = inv[:, :2] @ np.array(
        [[-0.5, -0.5, size - 0.5, size - 0.5], [-0.5, size - 0.5, -0.5, size - 0.5]]
    )
    corners += inv[:, 2:]
    pad = 2.0 / min(scale, 1.0)
    left, top = (max(0, math.floor(v - pad)) for v in corners.min(1))
    right, bottom = (
        min(arr.shape[1], math.ceil(corners[0].max() + pad)),
        min(arr.shape[0], math.ceil(corners[1].max() + pad)),
    )
    if right <= left or bottom <= top:
        raise ValueError(
            f"five points {np.round(pts, 1).tolist()} lie outside the {arr.shape[1]}x{arr.shape[0]} image"
        )
    img, pts = Image.fromarray(arr[top:bottom, left:right]), pts - [left, top]
    if scale < 1:
        w, h = img.size
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        pts = (pts + 0.5) * [img.size[0] / w, img.size[1] / h] - 0.5  # pixel centres of the resized crop
    m = similarity_transform(pts, dst)  # the same fit, in the pixels of the (shrunk) crop
    # PIL maps every output pixel back into the input, in coordinates where pixel i spans [i, i + 1)
    a = np.linalg.inv(m[:, :2])
    c = -a @ m[:, 2] + 0.5 - a @ [0.5, 0.5]
    coeffs = (a[0, 0], a[0, 1], c[0], a[1, 0], a[1, 1], c[1])
    return np.asarray(img.transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR))


def eye_angle(left_eye, right_eye) -> float:
    """Angle in degrees of the line from the image-left eye to the image-right eye, clockwise on screen
    (image y grows downwards): 0 when the eyes are level, positive when the right one is lower."""
    (lx, ly), (rx, ry) = (np.asarray(p, dtype=np.float64).reshape(2) for p in (left_eye, right_eye))
    if not np.isfinite([lx, ly, rx, ry]).all() or (lx, ly) == (rx, ry):
        raise ValueError(f"eye centres {[lx, ly]} and {[rx, ry]} must be two distinct finite points")
    return math.degrees(math.atan2(ry - ly, rx - lx))


def level_eyes(image, left_eye, right_eye, box) -> tuple:
    """Paper B's alignment: ``image`` rotated about the eyes' midpoint so that the eye line is horizontal,
    and the face box moved with it.

    ``left_eye`` / ``right_eye`` are the ``(x, y)`` centres of the eyes on the image's left and right
    (iBUG points 36-41 and 42-47), in the same pixel coordinates as ``box`` (``[x1, y1, x2, y2, ...]``).
    The returned box has the same width and height, centred on where the rotation takes the box's centre
    (a rotated box, made axis-aligned again without growing). The image keeps its size and type (PIL image
    or RGB array); corners the rotation uncovers are black. Returns ``(image, box as a float64
    [x1, y1, x2, y2] array)``.
    """
    angle = eye_angle(left_eye, right_eye)
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)[:4])
    mx, my = (np.asarray(left_eye, np.float64).reshape(2) + np.asarray(right_eye, np.float64).reshape(2)) / 2
    # PIL turns the picture counter-clockwise on screen by `angle`: a point moves by the inverse of the tilt
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    dx, dy = (x1 + x2) / 2 - mx, (y1 + y2) / 2 - my
    cx, cy = mx + c * dx + s * dy, my - s * dx + c * dy
    hw, hh = (x2 - x1) / 2, (y2 - y1) / 2
    out_box = np.array([cx - hw, cy - hh, cx + hw, cy + hh])
    is_pil = isinstance(image, Image.Image)
    img = image if is_pil else Image.fromarray(to_rgb_array(image))
    if angle:
        img = img.rotate(angle, resample=Image.BILINEAR, center=(float(mx), float(my)))
    return (img if is_pil else np.asarray(img)), out_box


# -------------------------------------------------------------------------------- dataset framing
#: A dataset crop shown to the detector as a photo: enlarged so its shorter side is this many px (MTCNN
#: misses most 48 px faces).
PHOTO_SIDE = 192
#: measure_framing sets the photo in a grey border of this share of its side, so that a box reaching past
#: the image is measured whole (and a face that fills the image is found more often: 88 % of FER2013's
#: training faces against 85 %). Not for scoring: a window reaching into the border would crop grey.
FRAMING_PAD = 0.25


def as_photo(image, side: int = PHOTO_SIDE, pad: float = 0.0) -> tuple[np.ndarray, float, int]:
    """``image`` (a dataset's face crop) as the detector would meet it in a photo: enlarged (PIL bilinear)
    so its shorter side is at least ``side`` px, then (``pad`` > 0) a border of ``pad`` times its shorter
    side of mid grey. Returns ``(rgb array, scale, border)``: a box in the photo maps back to the image by
    ``(box - border) / scale``."""
    img = Image.fromarray(to_rgb_array(image))
    k = max(1.0, side / min(img.size))
    if k > 1:
        img = img.resize((round(img.size[0] * k), round(img.size[1] * k)), Image.BILINEAR)
    arr = np.asarray(img)
    border = int(round(pad * min(arr.shape[:2])))
    if border:
        arr = np.pad(arr, ((border, border), (border, border), (0, 0)), constant_values=128)
    return arr, k, border


@dataclass(frozen=True)
class Framing:
    """How a dataset frames its faces around the detector's box: ``margin`` (left, top, right, bottom, in
    box widths / heights; the :class:`~fer_lib.preprocess.Preprocess` margin that crops a detected face
    the same way), measured on ``faces`` images of which a share ``found`` had a face."""

    margin: tuple[float, float, float, float] | float
    found: float
    faces: int


def measure_framing(images: Sequence, detector=None, min_found: float = 0.5, batch_size: int = 32) -> Framing:
    """The median frame of ``images`` (each a whole face crop: a path, PIL image or array) around the box
    MTCNN finds in it (:func:`as_photo` with a :data:`FRAMING_PAD` border, the most probable face): the
    fraction of the box width that the image extends left and right of it, of its height above and below
    (negative: the box reaches past the image). ``margin`` is 0.0 (the box itself) when fewer than
    ``min_found`` of the images show a face, or when there are none."""
    from .datasets.images import load_image

    detector = detector if detector is not None else FaceDetector()
    found, sides = 0, []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        photos = [as_photo(load_image(im), pad=FRAMING_PAD) for im in chunk]
        for (arr, k, border), boxes in zip(photos, detector.detect_batch([p[0] for p in photos])):
            if len(boxes) == 0:
                continue
            found += 1
            x1, y1, x2, y2 = (np.asarray(boxes[0][:4], np.float64) - border) / k
            w, h = x2 - x1, y2 - y1
            width, height = (arr.shape[1] - 2 * border) / k, (arr.shape[0] - 2 * border) / k
            sides.append((x1 / w, y1 / h, (width - x2) / w, (height - y2) / h))
    share = found / len(images) if len(images) else 0.0
    if not sides or share < min_found:
        return Framing(0.0, share, len(images))
    margin = tuple(round(float(v), 3) for v in np.median(np.asarray(sides), axis=0))
    return Framing(margin, share, len(images))  # type: ignore[arg-type]
