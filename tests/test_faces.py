"""Face detection (MTCNN, offline) and face selection."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

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
