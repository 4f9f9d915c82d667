"""Face detection (MTCNN, offline), tight crops with optional margin, eye levelling, face selection."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fer_lib import faces


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
    face = faces.crop(astronaut, boxes[0])
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


def test_crop_tight_margin_clip_and_resize():
    img = np.arange(100 * 80 * 3, dtype=np.int64).reshape(100, 80, 3).astype(np.uint8)
    box = [10, 20, 50, 60, 0.9]
    out = faces.crop(img, box)
    assert out.shape == (40, 40, 3) and np.array_equal(out, img[20:60, 10:50])
    out = faces.crop(img, box, margin=0.25)  # 10 px on every side
    assert np.array_equal(out, img[10:70, 0:60])
    out = faces.crop(img, [-30, -30, 20, 20])  # clipped to the image
    assert np.array_equal(out, img[0:20, 0:20])
    assert faces.crop(img, box, size=16).shape == (16, 16, 3)
    assert faces.crop(img, box, size=(24, 12)).shape == (12, 24, 3)
    with pytest.raises(ValueError, match="outside"):
        faces.crop(img, [200, 200, 220, 220])


def test_select_faces():
    boxes = np.array([[0, 0, 10, 10, 0.99], [5, 5, 45, 35, 0.90], [0, 0, 20, 20, 0.95]], np.float32)
    assert np.array_equal(faces.select_faces(boxes, "largest"), boxes[[1]])
    assert np.array_equal(faces.select_faces(boxes, "all"), boxes)
    assert faces.select_faces(np.zeros((0, 5)), "largest").shape == (0, 5)
    with pytest.raises(ValueError):
        faces.select_faces(boxes, "biggest")


def _centroid(arr, colour):
    ys, xs = np.nonzero(np.abs(arr.astype(int) - colour).sum(2) < 60)
    return xs.mean(), ys.mean()


def test_align_levels_the_eyes():
    img = Image.new("RGB", (200, 200), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    left, right = (70, 80), (130, 104)  # right eye 24 px lower: about 22 degrees of roll
    draw.ellipse([left[0] - 5, left[1] - 5, left[0] + 5, left[1] + 5], fill=(255, 0, 0))
    draw.ellipse([right[0] - 5, right[1] - 5, right[0] + 5, right[1] + 5], fill=(0, 0, 255))
    pts = np.array([left, right, (95, 120), (80, 145), (115, 155)], float)
    assert faces.eye_angle(pts) == pytest.approx(np.degrees(np.arctan2(24, 60)))
    moved = faces.rotate_points(pts, (pts[0] + pts[1]) / 2, faces.eye_angle(pts))
    assert moved[0, 1] == pytest.approx(moved[1, 1])
    out = faces.align(img, pts, box=[40, 40, 170, 180])
    assert out.shape == (140, 130, 3)
    (lx, ly), (rx, ry) = _centroid(out, (255, 0, 0)), _centroid(out, (0, 0, 255))
    assert abs(ly - ry) < 1.0 and rx - lx == pytest.approx(np.hypot(60, 24), abs=1.5)
    assert faces.align(img, pts, size=64).shape == (64, 64, 3)
