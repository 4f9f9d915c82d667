"""Face detection (MTCNN, offline) and face selection."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fer_lib import config, faces


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def detector():
    return faces.FaceDetector(min_face_size=40)


def test_mtcnn_loads_offline_and_finds_the_astronaut(no_network, astronaut):
    det = faces.FaceDetector(min_face_size=40)
    boxes, points = det.detect(Image.fromarray(astronaut), landmarks=True)
    assert boxes.shape == (1, 5) and boxes.dtype == np.float32
    x1, y1, x2, y2, p = boxes[0]
    assert p > 0.99
    assert 150 < x1 < 220 and 40 < y1 < 100 and 240 < x2 < 300 and 150 < y2 < 210  # her face, upper middle
    face = faces.Preprocess(1).crop(astronaut, boxes[0])
    assert abs(face.shape[1] - (x2 - x1)) <= 1 and abs(face.shape[0] - (y2 - y1)) <= 1
    assert points.shape == (1, 5, 2)
    (lx, ly), (rx, ry) = points[0, 0], points[0, 1]
    assert x1 < lx < rx < x2 and y1 < ly < y2 and abs(ly - ry) < 10  # eyes inside the box, nearly level


def test_batch_detection_equals_single(detector, astronaut):
    small = np.asarray(Image.fromarray(astronaut).resize((160, 160), Image.BILINEAR))
    other = np.asarray(Image.fromarray(astronaut[:300, 100:400]).resize((150, 150), Image.BILINEAR))
    frames = [small, other, small[:, ::-1].copy(), small, np.zeros((100, 100, 3), np.uint8)]
    batch = detector.detect_batch(frames, batch_size=2)
    assert [len(b) for b in batch] == [1, 1, 1, 1, 0]
    assert len(batch) == len(frames)
    for frame, got in zip(frames, batch):
        want = detector.detect(frame)
        assert got.shape == want.shape
        assert np.allclose(got, want, atol=1e-3)
    assert batch[-1].shape == (0, 5)  # blank frame: no face
    with_points = detector.detect_batch(frames[:2], landmarks=True)
    assert with_points[0][1].shape == (1, 5, 2)
    assert np.allclose(detector.detect(Image.fromarray(frames[1])), batch[1], atol=1e-3)  # PIL input


def test_tiny_image_returns_no_faces(detector):
    assert detector.detect(np.zeros((20, 30, 3), np.uint8)).shape == (0, 5)
    assert [b.shape for b in detector.detect_batch([np.zeros((20, 30, 3), np.uint8)])] == [(0, 5)]


def test_select_faces():
    boxes = np.array([[0, 0, 10, 10, 0.99], [5, 5, 45, 35, 0.90], [0, 0, 20, 20, 0.95]], np.float32)
    assert np.array_equal(faces.select_faces(boxes, "largest"), boxes[[1]])
    assert np.array_equal(faces.select_faces(boxes, "all"), boxes)
    assert faces.select_faces(np.zeros((0, 5)), "largest").shape == (0, 5)
    with pytest.raises(ValueError):
        faces.select_faces(boxes, "biggest")
    # predict's probability threshold and the video stage's minimum size (longer side) are the same filter
    assert np.array_equal(faces.select_faces(boxes, "all", min_prob=0.95), boxes[[0, 2]])
    assert np.array_equal(faces.select_faces(boxes, "largest", min_prob=0.95), boxes[[2]])
    assert np.array_equal(faces.select_faces(boxes, "all", min_size=20), boxes[[1, 2]])
    assert faces.select_faces(None).shape == (0, 5)


def test_crop_faces_selects_crops_and_skips_faces_outside_the_image():
    image = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    rows = np.array(
        [
            [2, 3, 22, 33, 0.99] + [1.0] * 10,  # kept: 20 x 30, landmarks carried along
            [70, 0, 90, 20, 0.98] + [2.0] * 10,  # outside the image: skipped
            [0, 0, 8, 8, 0.97] + [3.0] * 10,  # too small for min_size=10
            [30, 5, 55, 30, 0.5] + [4.0] * 10,  # kept unless min_prob is above 0.5
        ],
        np.float32,
    )
    crops, kept = faces.crop_faces(image, rows, min_size=10)
    assert [c.shape for c in crops] == [(30, 20, 3), (25, 25, 3)]  # the tight box by default
    np.testing.assert_array_equal(crops[0], image[3:33, 2:22])
    np.testing.assert_array_equal(np.stack(kept), rows[[0, 3]])  # whole rows, in detection order
    assert len(faces.crop_faces(image, rows, min_size=10, min_prob=0.9)[0]) == 1
    crops, kept = faces.crop_faces(image, rows, select="largest")  # selection before cropping
    assert len(crops) == 1 and kept[0][0] == 30
    seen = []

    def crop(img, row):  # any crop rule: predict's Preprocess.crop, the video stage's alignment
        seen.append(row[5])
        if row[5] == 4.0:
            raise ValueError("landmarks outside the image")
        return img[:2, :2]

    crops, kept = faces.crop_faces(image, rows, crop, min_size=10)  # this rule crops outside boxes too
    assert seen == [1.0, 2.0, 4.0] and [c.shape for c in crops] == [(2, 2, 3)] * 2
    np.testing.assert_array_equal(np.stack(kept), rows[[0, 1]])  # the row whose crop failed is skipped
    assert faces.crop_faces(image, None) == ([], [])
    assert faces.FaceDetector.__init__.__defaults__[0] == config.VideoConfig.min_face_predict == 20


def _tilt(point, pivot, degrees):
    """Where PIL's ``rotate(degrees, center=pivot)`` takes ``point`` (counter-clockwise on screen)."""
    t = np.radians(degrees)
    dx, dy = point[0] - pivot[0], point[1] - pivot[1]
    return (pivot[0] + np.cos(t) * dx + np.sin(t) * dy, pivot[1] - np.sin(t) * dx + np.cos(t) * dy)


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


@pytest.mark.parametrize("tilt", [20.0, -33.0])
def test_level_eyes_makes_the_eye_line_horizontal_and_keeps_the_face_in_the_box(tilt):
    # an upright face (a 60x80 skin rectangle, red left eye, blue right eye) tilted about a point off the face
    up = np.full((200, 200, 3), 50, np.uint8)
    up[60:140, 70:130] = (200, 180, 160)
    up[84:93, 81:90], up[84:93, 111:120] = (255, 0, 0), (0, 0, 255)
    pivot = (60.0, 150.0)
    tilted = Image.fromarray(up).rotate(tilt, resample=Image.BILINEAR, center=pivot)
    left, right, centre = (_tilt(p, pivot, tilt) for p in ((85, 88), (115, 88), (100, 100)))
    box = (centre[0] - 30, centre[1] - 40, centre[0] + 30, centre[1] + 40)  # the tilted face's box, upright
    assert abs(faces.eye_angle(left, right) + tilt) < 1e-6  # PIL's counter-clockwise tilt lifts the right eye

    level, out_box = faces.level_eyes(tilted, left, right, box)
    assert isinstance(level, Image.Image) and level.size == tilted.size
    arr = np.asarray(level).astype(int)
    red = (arr[..., 0] > 150) & (arr[..., 1] < 90) & (arr[..., 2] < 90)
    blue = (arr[..., 2] > 150) & (arr[..., 0] < 90) & (arr[..., 1] < 90)
    (rx, ry), (bx, by) = _centroid(red), _centroid(blue)
    assert rx < bx and abs(np.degrees(np.arctan2(by - ry, bx - rx))) < 1.0
    # same box size, centred on the levelled face (the unrotated box would be several pixels off)
    assert out_box[2] - out_box[0] == pytest.approx(60) and out_box[3] - out_box[1] == pytest.approx(80)
    fx, fy = _centroid((arr[..., 0] > 120) | (arr[..., 2] > 120))  # skin and eyes
    assert abs((out_box[0] + out_box[2]) / 2 - fx) < 1.0 and abs((out_box[1] + out_box[3]) / 2 - fy) < 1.0
    crop = arr[int(out_box[1]) + 2 : int(out_box[3]) - 2, int(out_box[0]) + 2 : int(out_box[2]) - 2]
    assert ((crop[..., 0] > 120) | (crop[..., 2] > 120)).mean() > 0.97  # all face, no background

    as_array, same_box = faces.level_eyes(np.asarray(tilted), left, right, box)
    assert isinstance(as_array, np.ndarray) and np.array_equal(as_array, arr)
    assert np.allclose(same_box, out_box)
    with pytest.raises(ValueError, match="distinct"):
        faces.level_eyes(tilted, left, left, box)


def test_select_faces_score_keeps_the_most_probable_face_and_extra_columns():
    # the larger face is the less probable one: "largest" and "score" (paper A's code) disagree
    big = [10, 10, 90, 90, 0.80] + [1.0] * 10
    small = [100, 10, 140, 50, 0.99] + [2.0] * 10  # rows with landmarks after the box keep them
    rows = np.array([big, small], np.float32)
    np.testing.assert_array_equal(faces.select_faces(rows, "largest"), rows[[0]])
    np.testing.assert_array_equal(faces.select_faces(rows, "score"), rows[[1]])
    assert faces.select_faces(rows, "all").shape == (2, 15)
    assert faces.select_faces(rows, "score", min_size=60).tolist() == rows[[0]].tolist()  # size filter first
    tie = np.array([[0, 0, 10, 10, 0.9], [0, 0, 50, 50, 0.9]], np.float32)
    np.testing.assert_array_equal(faces.select_faces(tie, "score"), tie[[0]])  # the first of equals
    with pytest.raises(ValueError, match="choose one of largest, score, all"):
        faces.select_faces(rows, "best")


def test_detector_thresholds_default_and_checked():
    assert faces.FaceDetector(min_face_size=40).thresholds == list(faces.DEFAULT_THRESHOLDS)
    det = faces.FaceDetector(min_face_size=40, thresholds=(0.6, 0.7, 0.9))
    assert det.mtcnn.thresholds == [0.6, 0.7, 0.9] and "0.9" in repr(det)
    with pytest.raises(ValueError, match="3 thresholds"):
        faces.FaceDetector(thresholds=(0.6, 0.7))


def _rotation(degrees):
    t = np.radians(degrees)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def test_similarity_transform_recovers_a_known_similarity():
    template = faces.FIVE_POINT_TEMPLATE
    points = 1.7 * template @ _rotation(25).T + [300.0, 150.0]  # a rotated, scaled, shifted copy
    m = faces.similarity_transform(points, template)
    np.testing.assert_allclose(points @ m[:, :2].T + m[:, 2], template, atol=1e-9)
    np.testing.assert_allclose(m[:, :2], _rotation(-25) / 1.7, atol=1e-12)
    mirrored = template * [-1, 1]  # a reflection is no similarity: the fit stays a rotation (det > 0)
    assert np.linalg.det(faces.similarity_transform(mirrored, template)[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        faces.similarity_transform(np.ones((5, 2)), template)


@pytest.mark.parametrize("scale, size", [(0.6, 224), (1.0, 112), (2.5, 96)])
def test_align_five_points_puts_the_landmarks_on_the_template(scale, size):
    """Dots drawn at a rotated, scaled copy of the template land on the template (scaled to ``size``)
    within a pixel, whether the face is shrunk (scale > size / 112) or enlarged."""
    from scipy import ndimage

    target = faces.FIVE_POINT_TEMPLATE * size / faces.FIVE_POINT_SIDE
    points = scale * target @ _rotation(-35).T + [260.0, 40.0]
    yy, xx = np.mgrid[:480, :640]
    sigma = 1.5 * scale
    blobs = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) for x, y in points)
    image = np.repeat((255 * blobs).clip(0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    out = faces.align_five_points(image, points, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    lab, n = ndimage.label(out[:, :, 0] > 60)
    assert n == 5
    found = np.array(ndimage.center_of_mass(out[:, :, 0].astype(float), lab, range(1, 6)))[:, ::-1]
    nearest = np.linalg.norm(found[:, None] - target[None], axis=2)
    assert sorted(nearest.argmin(1).tolist()) == [0, 1, 2, 3, 4]  # one dot on each template point
    assert nearest.min(1).max() < 1.0
    with pytest.raises(ValueError, match="outside"):
        faces.align_five_points(image, points + 5000, size)


def test_aligning_a_rotated_face_equals_aligning_the_face(detector, astronaut):
    """MTCNN's landmarks on a face turned by 20 degrees align it onto (nearly) the same picture as the upright
    face; the tight box crops of the two differ several times more."""
    boxes, points = detector.detect(astronaut, landmarks=True)
    turned = np.asarray(
        Image.fromarray(astronaut).rotate(20, resample=Image.BILINEAR, center=tuple(points[0].mean(0)))
    )
    tboxes, tpoints = detector.detect(turned, landmarks=True)
    assert len(tboxes) == 1
    inner = slice(16, 96)  # the face; the aligned corners show background that the rotation moved
    upright = faces.align_five_points(astronaut, points[0], 112).astype(float)[inner, inner]
    aligned = faces.align_five_points(turned, tpoints[0], 112).astype(float)[inner, inner]
    aligned_diff = np.abs(upright - aligned).mean()
    box = faces.Preprocess(112)
    box_diff = np.abs(box.face(astronaut, boxes[0]) - box.face(turned, tboxes[0]).astype(float))[
        inner, inner
    ].mean()
    assert aligned_diff < 12 and box_diff > 3 * aligned_diff
    assert np.corrcoef(upright.ravel(), aligned.ravel())[0, 1] > 0.95


class _FrameDetector:
    """Finds the face at ``face`` (x1, y1, x2, y2 in the dataset image's pixels) in every photo that
    faces.as_photo makes of a 48 px image, except in every ``miss``-th one."""

    def __init__(self, face, miss: int = 0):
        self.face, self.miss, self.calls = np.asarray(face, np.float32), miss, 0
        _, self.k, self.border = faces.as_photo(np.zeros((48, 48, 3), np.uint8), pad=faces.FRAMING_PAD)

    def detect_batch(self, frames):
        out = []
        for frame in frames:
            self.calls += 1
            assert self.border > 0 and frame.shape[0] == 48 * self.k + 2 * self.border  # enlarged, bordered
            hit = not (self.miss and self.calls % self.miss == 0)
            box = np.append(self.face * self.k + self.border, 0.99)[None]
            out.append(box if hit else faces.EMPTY_BOXES.copy())
        return out


def test_measure_framing_recovers_a_known_frame_around_the_box():
    images = [np.full((48, 48, 3), 100, np.uint8)] * 6
    got = faces.measure_framing(images, _FrameDetector([8, 6, 40, 46]))
    # the image reaches 8 px (of a 32 px wide box) left and right of it, 6 above and 2 below (of 40)
    assert got.margin == (0.25, 0.15, 0.25, 0.05) and got.found == 1.0 and got.faces == 6
    box_past_edges = faces.measure_framing(images, _FrameDetector([-4, 0, 52, 56]))
    assert box_past_edges.margin == pytest.approx((-4 / 56, 0.0, -4 / 56, -8 / 56), abs=1e-3)
    # too few faces found: no frame is claimed, predict crops the box as it is
    half = faces.measure_framing(images, _FrameDetector([8, 6, 40, 46], miss=2), min_found=0.6)
    assert half.margin == 0.0 and half.found == 0.5
    assert faces.measure_framing([], _FrameDetector([8, 6, 40, 46])).margin == 0.0


def test_measure_framing_with_mtcnn_finds_the_margin_a_crop_was_cut_with(detector, astronaut):
    x1, y1, x2, y2, _ = detector.detect(astronaut)[0]
    w, h = x2 - x1, y2 - y1
    # crops of her face with 30 % of the box on the left / right, 10 % above, 20 % below
    crop = astronaut[int(y1 - 0.1 * h) : int(y2 + 0.2 * h), int(x1 - 0.3 * w) : int(x2 + 0.3 * w)]
    small = np.asarray(Image.fromarray(crop).resize((64, 64), Image.BILINEAR))  # a dataset's small chip
    got = faces.measure_framing([crop, small])
    assert got.found == 1.0
    assert got.margin == pytest.approx((0.3, 0.1, 0.3, 0.2), abs=0.07)
