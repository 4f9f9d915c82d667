"""fer_lib.video: decoding, face selection, pooling, classifiers, cache, end to end (fakes only)."""

from __future__ import annotations

import dataclasses
import math
import threading

import av
import numpy as np
import pytest
import torch

from fer_lib.config import VideoConfig, get_profile
from fer_lib.faces import box_iou, interpolate_boxes
from fer_lib.preprocess import Preprocess
from fer_lib.video import (
    FeatureCache,
    FeatureExtractor,
    Sampling,
    TorchFeatureExtractor,
    VideoDecodeError,
    VideoFeatures,
    evaluate_videos,
    extract_dataset,
    extract_video_features,
    faces_in_batch,
    iter_frames,
    make_video_classifier,
    pool,
    pool_afew,
    pool_vgaf,
    pooled_matrix,
    prefetch_batches,
    video_info,
)
from fer_lib.video.classify import chosen_C
from fer_lib.video.fakes import ColourBlobDetector as SquareDetector
from fer_lib.video.fakes import MeanColourExtractor

CODECS = {"mp4": "libx264", "avi": "mpeg4", "mkv": "ffv1"}
GREY = 110
STEP = 8  # frame i is encoded as intensity i * STEP of the left half of the frame


# ----------------------------------------------------------------------------------------- helpers
def write_video(path, frames, fps=25):
    """Encode RGB uint8 frames with PyAV (codec from the extension)."""
    codec = CODECS[path.suffix.lstrip(".")]
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = w, h
        s.pix_fmt = "yuv420p" if codec != "ffv1" else "yuv444p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def indexed_frames(n, w=64, h=48):
    """Frames whose left half has intensity i*STEP: the index survives lossy coding."""
    out = []
    for i in range(n):
        f = np.full((h, w, 3), GREY, np.uint8)
        f[:, : w // 2] = i * STEP
        out.append(f)
    return out


def decoded_index(frame):
    return int(round(float(frame[4:-4, 4 : frame.shape[1] // 2 - 4].mean()) / STEP))


COLOURS = {0: (230, 30, 30), 1: (30, 230, 30), 2: (30, 30, 230)}


def square_frames(n, colour, size=24, w=96, h=72, every=1, squares=1, rng=None):
    """Grey frames with ``squares`` coloured squares moving; frames where i % every != 0 have none."""
    rng = rng or np.random.default_rng(0)
    out = []
    for i in range(n):
        f = np.full((h, w, 3), GREY, np.uint8)
        f += rng.integers(0, 12, size=f.shape, dtype=np.uint8)
        if colour is not None and i % every == 0:
            for q in range(squares):
                x = (4 + 2 * i + q * (size + 8)) % (w - size)
                y = 6 + q * 4
                f[y : y + size, x : x + size] = colour
        out.append(f)
    return out


# ----------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("ext", ["mp4", "avi", "mkv"])
def test_decode_every_frame_in_order(tmp_path, ext):
    path = write_video(tmp_path / f"v.{ext}", indexed_frames(30))
    got = list(iter_frames(path))
    assert [i for i, _ in got] == list(range(30))
    assert [decoded_index(f) for _, f in got] == list(range(30))
    assert got[0][1].shape == (48, 64, 3) and got[0][1].dtype == np.uint8
    info = video_info(path)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(25.0)
    assert info.n_frames in (30, None)  # mkv headers carry no frame count


@pytest.mark.parametrize("ext", ["mp4", "avi"])
def test_decode_stride_fps_and_max_frames(tmp_path, ext):
    path = write_video(tmp_path / f"v.{ext}", indexed_frames(30), fps=25)
    for stride in (2, 3, 7):
        got = list(iter_frames(path, stride=stride))
        assert [i for i, _ in got] == list(range(0, 30, stride))
        assert [decoded_index(f) for _, f in got] == list(range(0, 30, stride))
    # 25 -> 5 fps keeps every 5th frame; 25 -> 10 fps keeps the first frame of each 0.1 s slot
    assert [i for i, _ in iter_frames(path, fps=5)] == [0, 5, 10, 15, 20, 25]
    assert [i for i, _ in iter_frames(path, fps=10)] == [math.ceil(k * 2.5) for k in range(12)]
    assert [i for i, _ in iter_frames(path, fps=100)] == list(range(30))  # never duplicates frames
    assert [i for i, _ in iter_frames(path, fps=5, stride=2)] == [0, 10, 20]
    assert [i for i, _ in iter_frames(path, stride=2, max_frames=4)] == [0, 2, 4, 6]


def test_truncated_and_garbage_files_name_the_file(tmp_path):
    avi = write_video(tmp_path / "clip.avi", indexed_frames(30))
    cut = tmp_path / "cut.avi"
    cut.write_bytes(avi.read_bytes()[: int(avi.stat().st_size * 0.9)])
    with pytest.raises(VideoDecodeError, match=r"cut\.avi.*truncated.*header says 30 frames"):
        list(iter_frames(cut))
    assert len(list(iter_frames(cut, check_complete=False))) < 30  # the decodable part is usable
    mkv = write_video(tmp_path / "clip.mkv", indexed_frames(30))  # no frame count: checked by duration
    cut_mkv = tmp_path / "cut.mkv"
    cut_mkv.write_bytes(mkv.read_bytes()[: int(mkv.stat().st_size * 0.7)])
    with pytest.raises(VideoDecodeError, match=r"cut\.mkv.*truncated.*header says 1\.20 s"):
        list(iter_frames(cut_mkv))
    mp4 = write_video(tmp_path / "clip.mp4", indexed_frames(30))
    cut_mp4 = tmp_path / "cut.mp4"
    cut_mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    with pytest.raises(VideoDecodeError, match=r"cut\.mp4.*not a readable video"):
        next(iter_frames(cut_mp4))
    junk = tmp_path / "junk.avi"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match="junk.avi"):
        video_info(junk)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        next(iter_frames(tmp_path / "missing.mp4"))


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(VideoDecodeError, match=r"sound\.wav.*no video stream"):
        next(iter_frames(path))


def test_prefetch_batches_order_errors_and_early_stop():
    before = threading.active_count()
    items = [(i, np.full((2, 2, 3), i, np.uint8)) for i in range(10)]
    batches = list(prefetch_batches(iter(items), 4, depth=2))
    assert [b[0] for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [int(f[0, 0, 0]) for f in batches[1][1]] == [4, 5, 6, 7]

    def failing():
        yield 0, items[0][1]
        raise VideoDecodeError("x.avi", "boom")

    with pytest.raises(VideoDecodeError, match="x.avi: boom"):
        list(prefetch_batches(failing(), 1, depth=2))
    gen = prefetch_batches(((i, items[0][1]) for i in range(10_000)), 2, depth=1)
    next(gen)
    gen.close()  # stops and joins the decode thread
    assert threading.active_count() == before


# ----------------------------------------------------------------------------------------- faces
def test_select_faces_afew_largest_vgaf_all_with_min_size():
    boxes = np.array(
        [[0, 0, 40, 40, 0.9], [10, 10, 110, 90, 0.99], [5, 5, 25, 25, 0.95], [0, 0, 70, 20, 0.9]], np.float32
    )  # sizes (longer side) 40, 100, 20, 70
    frames = [np.zeros((200, 200, 3), np.uint8)]
    _, _, afew = faces_in_batch(frames, [0], [boxes], Sampling("afew", min_face=32))
    np.testing.assert_array_equal(afew, boxes[[1]])
    _, _, vgaf = faces_in_batch(frames, [0], [boxes], Sampling("vgaf", min_face=64))
    np.testing.assert_array_equal(vgaf, boxes[[1, 3]])
    assert faces_in_batch(frames, [0], [np.zeros((0, 5))], Sampling("afew", min_face=32))[0] == []
    assert faces_in_batch(frames, [0], [boxes], Sampling("afew", min_face=200))[0] == []
    frame = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    # the crop rule of training and predict: rounded to whole pixels, clipped; outside boxes dropped
    crops, where, kept = faces_in_batch(
        [frame],
        [7],
        [np.array([[-5.0, 2.2, 10.0, 30.0, 0.9], [40.0, 0, 50, 10, 0.9]])],
        Sampling("vgaf", min_face=0),
    )
    assert len(crops) == 1 and where == [7] and kept[0][0] == -5.0
    np.testing.assert_array_equal(crops[0], frame[2:20, 0:10])


# ----------------------------------------------------------------------------------------- pooling
def test_pool_afew_hand_computed():
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(pool_afew(x), [2, 4, 1, 2, 1, 2, 3, 6])
    rng = np.random.default_rng(1)
    y = rng.normal(size=(7, 5))
    np.testing.assert_allclose(pool_afew(y), np.r_[y.mean(0), y.std(0), y.min(0), y.max(0)], rtol=1e-6)
    assert pool_afew(np.zeros((0, 5))) is None


def test_pool_vgaf_hand_computed():
    frames = [
        np.array([[0.0, 0.0], [2.0, 4.0]]),  # mean [1, 2], std [1, 2]
        np.array([[3.0, 3.0]]),  # one face: mean [3, 3], std [0, 0]
        np.zeros((0, 2)),
    ]  # no face: skipped
    # frame vectors [1,2,1,2] and [3,3,0,0] -> mean [2,2.5,.5,1], std [1,.5,.5,1]
    np.testing.assert_allclose(pool_vgaf(frames), [2, 2.5, 0.5, 1, 1, 0.5, 0.5, 1])
    assert pool_vgaf([np.zeros((0, 2))]) is None
    assert pool_vgaf([]) is None


def _video(mode, face_frame, features, n_frames):
    n = len(face_frame)
    return VideoFeatures(
        path=f"{mode}.avi",
        mode=mode,
        sampled=np.arange(n_frames),
        face_frame=np.asarray(face_frame, np.int64),
        boxes=np.zeros((n, 5), np.float32),
        features=np.asarray(features, np.float32),
        scores=np.zeros((n, 0), np.float32),
    )


def test_pool_afew_video_is_exactly_mean_std_min_max_over_its_frames():
    # frames 0 and 2 have a face, frame 1 none; min and max come from different frames per dimension
    vf = _video("afew", [0, 2], [[1.0, 6.0], [3.0, 2.0]], n_frames=3)
    np.testing.assert_array_equal(pool(vf), np.array([2, 4, 1, 2, 1, 2, 3, 6], np.float32))
    np.testing.assert_array_equal(pool(vf, "mean_std"), np.array([2, 4, 1, 2], np.float32))
    np.testing.assert_array_equal(pool(vf, "mean"), np.array([2, 4], np.float32))
    assert pool(vf).dtype == np.float32


def test_pool_vgaf_video_pools_faces_per_frame_then_frames():
    # 2 frames x 2 faces, rows interleaved by frame: frame 0 faces [0, 4], [2, 0]; frame 1 [4, 4], [6, 8]
    vf = _video("vgaf", [0, 1, 0, 1], [[0.0, 4.0], [4.0, 4.0], [2.0, 0.0], [6.0, 8.0]], n_frames=2)
    # per frame concat(mean, std) over faces: [1, 2, 1, 2] and [5, 6, 1, 2]
    # per video concat(mean, std) over frames: [3, 4, 1, 2] and [2, 2, 0, 0]
    np.testing.assert_array_equal(pool(vf), np.array([3, 4, 1, 2, 2, 2, 0, 0], np.float32))
    # the simpler poolings take each frame's mean face: [1, 2] and [5, 6]
    np.testing.assert_array_equal(pool(vf, "mean"), np.array([3, 4], np.float32))
    np.testing.assert_array_equal(pool(vf, "mean_std"), np.array([3, 4, 2, 2], np.float32))
    X, has_face = pooled_matrix([vf, _video("vgaf", [], np.zeros((0, 2)), n_frames=2)])
    assert has_face.tolist() == [True, False] and np.isnan(X[1]).all()
    np.testing.assert_array_equal(X[0], pool(vf))


# ----------------------------------------------------------------------------------------- sampling
#: Keys of the default samplings as they were before Sampling existed (fer_lib.video.cache.cache_key):
#: existing feature caches stay valid only while these stay the same.
PINNED_KEYS = {
    "afew default": "2f1b5e361183909a38a2a1e2",
    "vgaf default": "5a2e8cc5bbf286f12de98cc7",
    "afew score": "7b59845388c694c3312ce737",
    "vgaf aligned 224": "9b47bb3b0da1d451887f0cfd",
    "afew detect_every 3": "8d8f41571ac1b80ba95dc4eb",
    "afew thresholds 0.9": "af1dcf6cdd6b457312ce2cbe",
    "afew stride 2 fps 5 max 10 min 20": "967d3199c29010a9abd044ac",
    "afew min 16 blob detector": "373cd563d321842720e6b4ab",
}


@pytest.fixture
def pinned_clip(tmp_path):
    """A file named by its content (file_id="content"), so its cache keys do not depend on the machine."""
    p = tmp_path / "clip.avi"
    p.write_bytes(b"pinned bytes of a clip")
    return p


def test_sampling_keys_of_existing_caches_stay_the_same(pinned_clip):
    ext = MeanColourExtractor()  # key "mean-colour-v1"

    def key(s, detector=None):
        return s.key(pinned_clip, ext, detector, file_id="content")

    assert key(Sampling()) == PINNED_KEYS["afew default"]
    assert key(Sampling.from_config(VideoConfig(), "afew")) == PINNED_KEYS["afew default"]
    assert key(Sampling.from_config(VideoConfig(), "vgaf")) == PINNED_KEYS["vgaf default"]
    assert key(Sampling(select="score")) == PINNED_KEYS["afew score"]
    assert key(Sampling("vgaf", align=True)) == PINNED_KEYS["vgaf aligned 224"]
    assert key(Sampling(detect_every=3)) == PINNED_KEYS["afew detect_every 3"]
    assert key(Sampling(thresholds=(0.6, 0.7, 0.9))) == PINNED_KEYS["afew thresholds 0.9"]
    assert (
        key(Sampling(stride=2, fps=5, max_frames=10, min_face=20))
        == PINNED_KEYS["afew stride 2 fps 5 max 10 min 20"]
    )
    assert key(Sampling(min_face=16), SquareDetector()) == PINNED_KEYS["afew min 16 blob detector"]


#: One change per Sampling field, each of which changes the features (so the key).
FIELD_CHANGES = {
    "mode": dict(mode="vgaf", min_face=32),
    "select": dict(select="score"),
    "stride": dict(stride=2),
    "fps": dict(fps=10.0),
    "max_frames": dict(max_frames=50),
    "min_face": dict(min_face=40),
    "detect_every": dict(detect_every=2),
    "thresholds": dict(thresholds=(0.6, 0.7, 0.9)),
    "align": dict(align=True),
}


def test_every_sampling_field_changes_the_key_and_speed_settings_do_not(pinned_clip):
    assert set(FIELD_CHANGES) == {f.name for f in dataclasses.fields(Sampling)}  # a new field gets a row
    ext = MeanColourExtractor()
    base = Sampling().key(pinned_clip, ext)
    keys = {name: Sampling(**change).key(pinned_clip, ext) for name, change in FIELD_CHANGES.items()}
    assert base not in keys.values() and len(set(keys.values())) == len(keys)
    # the video file, the extractor and the detector are part of it too
    assert Sampling().key(pinned_clip, MeanColourExtractor("other")) != base
    assert Sampling().key(pinned_clip, ext, SquareDetector()) != base
    assert Sampling().key(pinned_clip, ext, file_id="content") != base  # stat vs content identity
    # what changes speed only (batch size, prefetch, threads, device, cache, classifier) is not in Sampling
    fast = VideoConfig(batch_size=7, prefetch=0, threads=3, cache=False, classifier="rbf_svc", C=2.0)
    for name in ("afew", "vgaf"):
        s = Sampling.from_config(fast, name)
        assert s == Sampling.from_config(VideoConfig(), name)
        assert s.key(pinned_clip, ext) == Sampling.from_config(VideoConfig(), name).key(pinned_clip, ext)


def test_sampling_from_config_per_dataset():
    afew, vgaf = Sampling.from_config(VideoConfig(), "afew"), Sampling.from_config(VideoConfig(), "vgaf")
    assert afew == Sampling() and (afew.select, afew.min_face, afew.align) == ("largest", 32, False)
    assert (vgaf.mode, vgaf.select, vgaf.min_face, vgaf.align) == ("vgaf", "all", 64, False)
    assert afew.thresholds == vgaf.thresholds == (0.6, 0.7, 0.7) and afew.stride == 1
    paper = VideoConfig(
        stride=2,
        fps=10.0,
        max_frames=99,
        min_face_afew=20,
        min_face_vgaf=40,
        mtcnn_thresholds=(0.6, 0.7, 0.9),
        afew_face="score",
        align_vgaf=True,
        detect_every=3,
    )
    a, g = Sampling.from_config(paper, "afew"), Sampling.from_config(paper, "vgaf")
    assert a == Sampling("afew", "score", 2, 10.0, 99, 20, 3, (0.6, 0.7, 0.9), align=False)  # align: VGAF's
    assert g == Sampling("vgaf", "all", 2, 10.0, 99, 40, 3, (0.6, 0.7, 0.9), align=True)
    smoke = get_profile("smoke").video
    assert Sampling.from_config(smoke, "afew").min_face == smoke.min_face_afew == 20
    assert Sampling.from_config(smoke, "vgaf").min_face == smoke.min_face_vgaf
    with pytest.raises(ValueError, match="video.afew_face='biggest'; choose one of largest, score"):
        Sampling.from_config(VideoConfig(afew_face="biggest"), "afew")
    with pytest.raises(ValueError, match="afew and vgaf"):
        Sampling.from_config(VideoConfig(), "affectnet")


def test_sampling_resolves_defaults_and_rejects_bad_values():
    assert Sampling("vgaf") == Sampling("vgaf", "all", min_face=VideoConfig.min_face_vgaf)
    assert Sampling(fps=5).fps == 5.0 and isinstance(Sampling(fps=5).fps, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Sampling().stride = 2
    for bad in (dict(mode="fer"), dict(stride=0), dict(detect_every=0), dict(fps=0), dict(max_frames=0)):
        with pytest.raises(ValueError):
            Sampling(**bad)
    with pytest.raises(ValueError, match="3 thresholds"):
        Sampling(thresholds=(0.6, 0.7))


# ----------------------------------------------------------------------------------------- classifier
def _blobs(n_per_class, dim=40, seed=0, sep=3.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim)) * sep
    X = np.concatenate([c + rng.normal(size=(n_per_class, dim)) for c in centres])
    return X, np.repeat(np.arange(3), n_per_class)


@pytest.mark.parametrize("kind", ["linear_svc", "rbf_svc", "random_forest"])
def test_classifier_learns_separable_pooled_features(kind):
    X, y = _blobs(40, seed=0)
    Xt, yt = _blobs(20, seed=0)[0] + 0.0, _blobs(20, seed=0)[1]
    Xt = Xt + np.random.default_rng(5).normal(scale=0.5, size=Xt.shape)
    pipe = make_video_classifier(kind, C=None, C_grid=(0.01, 1.1, 10.0), seed=0, cv=3)
    res = evaluate_videos(pipe, X, y, Xt, yt, np.ones(len(yt), bool))
    assert res["accuracy_faces_only"] > 0.9  # chance is 1/3
    assert res["accuracy_complete"] == res["accuracy_faces_only"]
    assert res["confusion_matrix"].sum() == len(yt)
    if kind != "random_forest":
        assert res["C"] in (0.01, 1.1, 10.0)
    assert pipe[0].norm == "l2"


def test_fixed_C_and_no_face_accounting():
    X = np.array([[1.0, 0.1], [1.0, 0.2], [0.1, 1.0], [0.2, 1.0]])
    y = np.array([0, 0, 1, 1])
    pipe = make_video_classifier("linear_svc", C=1.1)
    # five test videos: #2 has no face; #4 lies on the class-0 side but is labelled 1 -> wrong
    X_test = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan], [1.0, 0.1], [1.0, 0.05]])
    y_test = np.array([0, 1, 1, 0, 1])
    has_face = np.array([True, True, False, True, True])
    res = evaluate_videos(pipe, np.r_[X, [[np.nan, np.nan]]], np.r_[y, 0], X_test, y_test, has_face)
    assert chosen_C(res["pipeline"]) == 1.1
    assert res["n_train"] == 4 and res["n_train_no_face"] == 1
    assert res["n_test_no_face"] == 1 and res["n_test_with_face"] == 4
    assert res["accuracy_faces_only"] == pytest.approx(3 / 4)
    assert res["accuracy_complete"] == pytest.approx(3 / 5)
    np.testing.assert_array_equal(res["confusion_matrix"], [[2, 0], [1, 1]])
    assert list(res["predictions"]) == [0, 1, -1, 0, 0]
    # the same with X_test given only for the videos with a face
    res2 = evaluate_videos(pipe, X, y, X_test[has_face], y_test, has_face)
    assert res2["accuracy_complete"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="expected one per test video"):
        evaluate_videos(pipe, X, y, X_test[:2], y_test, has_face)


# ----------------------------------------------------------------------------------------- extraction
def test_extract_video_features_afew_and_vgaf(tmp_path):
    frames = square_frames(10, COLOURS[0], every=2, squares=2)  # faces on frames 0, 2, 4, 6, 8
    path = write_video(tmp_path / "two.mp4", frames)
    det, ext = SquareDetector(), MeanColourExtractor()
    vf = extract_video_features(path, det, ext, Sampling("afew", min_face=16), batch_size=4)
    assert vf.n_frames == 10 and list(vf.sampled) == list(range(10))
    assert list(vf.face_frame) == [0, 2, 4, 6, 8] and vf.n_frames_with_face == 5
    assert det.calls == 3 and ext.calls == 3  # batches of 4 frames: 4 + 4 + 2
    np.testing.assert_allclose(vf.features.mean(0), np.array(COLOURS[0]) / 255, atol=0.06)
    np.testing.assert_allclose(vf.scores.sum(1), 1.0, rtol=1e-5)
    assert pool(vf).shape == (12,)
    vg = extract_video_features(
        path, SquareDetector(), ext, Sampling("vgaf", stride=2, min_face=16), batch_size=4
    )
    assert list(vg.face_frame) == [0, 0, 2, 2, 4, 4, 6, 6, 8, 8]
    assert [len(f) for f in vg.per_frame()] == [2] * 5
    assert pool(vg).shape == (12,)
    big = extract_video_features(path, SquareDetector(), ext, Sampling("vgaf"))  # default 64 px: none
    assert big.n_faces == 0 and pool(big) is None and big.n_frames == 10


def test_overlapped_and_plain_extraction_agree(tmp_path):
    path = write_video(tmp_path / "a.avi", square_frames(12, COLOURS[1], every=3))
    a = extract_video_features(
        path, SquareDetector(), MeanColourExtractor(), Sampling(min_face=16), prefetch=2, batch_size=5
    )
    b = extract_video_features(
        path, SquareDetector(), MeanColourExtractor(), Sampling(min_face=16), prefetch=0, batch_size=1
    )
    np.testing.assert_array_equal(a.face_frame, [0, 3, 6, 9])
    np.testing.assert_allclose(pool(a), pool(b), atol=1e-6)


def test_detect_every_k_interpolates_boxes_across_batches(tmp_path):
    frames = square_frames(11, COLOURS[0])  # one square on every frame, moving 2 px a frame
    path = write_video(tmp_path / "between.mp4", frames)
    full_det, det = SquareDetector(), SquareDetector()
    full = extract_video_features(path, full_det, MeanColourExtractor(), Sampling(min_face=16), batch_size=4)
    vf = extract_video_features(
        path, det, MeanColourExtractor(), Sampling(min_face=16, detect_every=3), batch_size=4
    )
    assert full_det.frames == 11 and det.frames == 5  # frames 0, 3, 6, 9 and the last one, 10
    assert list(vf.face_frame) == list(range(11)) and list(vf.sampled) == list(range(11))
    by_frame = dict(zip(vf.face_frame, vf.boxes))
    ref = dict(zip(full.face_frame, full.boxes))
    for i in (0, 3, 6, 9, 10):
        np.testing.assert_array_equal(by_frame[i], ref[i])  # keyframes: the detection itself
    np.testing.assert_allclose(
        by_frame[4][:4], (2 * ref[3][:4] + ref[6][:4]) / 3, atol=1e-4
    )  # 1/3 of the way,
    for i in (1, 2, 4, 5, 7, 8):  # across batch boundaries (frames 4 and 8 start batches) ...
        np.testing.assert_allclose(by_frame[i][:4], ref[i][:4], atol=1.01)  # ... on the moving square
        assert np.abs(by_frame[i][:4] - ref[3 * (i // 3)][:4]).max() >= 1.5  # not the last detection's box
    np.testing.assert_allclose(pool(vf), pool(full), atol=0.02)
    same = extract_video_features(
        path, SquareDetector(), MeanColourExtractor(), Sampling(min_face=16, detect_every=1), batch_size=4
    )
    np.testing.assert_array_equal(same.boxes, full.boxes)


def test_a_face_found_by_one_keyframe_only_is_not_guessed_in_between(tmp_path):
    path = write_video(
        tmp_path / "gone.mp4", square_frames(9, COLOURS[1], every=4)
    )  # faces on frames 0, 4, 8
    vf = extract_video_features(
        path, SquareDetector(), MeanColourExtractor(), Sampling(min_face=16, detect_every=2), batch_size=3
    )
    # keyframes 0, 2, 4, 6, 8 find faces on 0, 4, 8 only: frames 1, 3, 5, 7 lie between a keyframe with
    # the face and one without it, so they get none, as a detection on them would have found
    assert list(vf.face_frame) == [0, 4, 8]


def test_interpolate_boxes_matches_faces_by_overlap():
    a = np.array([[0, 0, 10, 10, 0.9], [50, 50, 70, 70, 0.8]], np.float32)
    b = np.array([[54, 50, 74, 70, 0.6], [100, 0, 110, 10, 0.99]], np.float32)  # face 2 moved, a new one
    two = np.array([[52, 52, 72, 72, 0.95], [2, 0, 12, 10, 0.7]], np.float32)  # both moved, in another order
    np.testing.assert_allclose(  # each face moves to its match, sorted by probability
        interpolate_boxes(a, two, 0.5), [[51, 51, 71, 71, 0.875], [1, 0, 11, 10, 0.8]], atol=1e-6
    )
    for t in (0.25, 0.75):  # the matched face moves; the one found only in a / only in b is left out
        np.testing.assert_allclose(
            interpolate_boxes(a, b, t), [[50 + 4 * t, 50, 70 + 4 * t, 70, 0.8 - 0.2 * t]]
        )
    assert interpolate_boxes(a, np.zeros((0, 5)), 0.2).shape == (0, 5)
    np.testing.assert_allclose(box_iou(a, b), [[0, 0], [16 * 20 / (2 * 400 - 320), 0]])


def test_decode_error_inside_extraction_names_file(tmp_path):
    good = write_video(tmp_path / "g.avi", square_frames(30, COLOURS[0]))
    bad = tmp_path / "bad.avi"
    bad.write_bytes(good.read_bytes()[: int(good.stat().st_size * 0.8)])
    with pytest.raises(VideoDecodeError, match="bad.avi"):
        extract_video_features(
            bad, SquareDetector(), MeanColourExtractor(), Sampling(min_face=16), batch_size=4
        )


# ----------------------------------------------------------------------------------------- cache
def test_cache_hit_and_invalidation(tmp_path):
    paths = [write_video(tmp_path / f"v{i}.mp4", square_frames(8, COLOURS[i])) for i in range(2)]
    cache = FeatureCache(tmp_path / "cache")
    ext = MeanColourExtractor("ckpt-A")
    s16 = Sampling(min_face=16)
    kw = dict(detector=SquareDetector(), batch_size=4, cache=cache, progress=False)
    f1, st1 = extract_dataset(paths, ext, s16, **kw)
    X1, has1 = pooled_matrix(f1)
    assert ext.calls == 4 and not st1.cached.any() and has1.all() and st1.has_face.all()
    f2, st2 = extract_dataset(paths, ext, s16, **kw)
    assert ext.calls == 4 and st2.cached.all()  # second run: no decoding, no extractor call
    np.testing.assert_array_equal(X1, pooled_matrix(f2)[0])
    ext_b = MeanColourExtractor("ckpt-B")  # changed checkpoint key -> recompute
    extract_dataset(paths, ext_b, s16, **kw)
    assert ext_b.calls == 4
    _, st3 = extract_dataset(paths, ext, s16.replace(min_face=20), **kw)  # changed setting
    assert not st3.cached.any() and ext.calls == 8
    _, st4 = extract_dataset(paths, ext, s16.replace(stride=2), **kw)  # changed stride
    assert not st4.cached.any() and ext.calls == 8 + 2
    _, st6 = extract_dataset(paths, ext, s16.replace(detect_every=2), **kw)  # detection every 2nd frame
    assert not st6.cached.any() and ext.calls == 10 + 6  # + each video's last frame, a keyframe of its own
    assert extract_dataset(paths, ext, s16.replace(detect_every=2), **kw)[1].cached.all()
    # speed settings are not part of the key: another batch size and prefetch depth read the same entries
    st7 = extract_dataset(paths, ext, s16, **{**kw, "batch_size": 3}, prefetch=0)[1]
    assert st7.cached.all() and ext.calls == 16 and st7.cache_key.tolist() == st1.cache_key.tolist()
    # an unreadable cache entry is recomputed, not fatal
    for f in (tmp_path / "cache").glob("v0-*.npz"):
        f.write_bytes(b"broken")
    with pytest.warns(UserWarning, match="unreadable"):
        f5, _ = extract_dataset(paths[:1], ext, s16, **kw)
    np.testing.assert_allclose(pooled_matrix(f5)[0][0], X1[0])
    assert isinstance(ext, FeatureExtractor)


def test_extract_dataset_counts_faceless_and_broken_videos(tmp_path):
    ok = write_video(tmp_path / "ok.mp4", square_frames(6, COLOURS[2]))
    empty = write_video(tmp_path / "empty.mp4", square_frames(6, None))
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video at all" * 50)
    with pytest.warns(UserWarning, match="1 of 3 videos have no face .* and 1 could not be decoded"):
        feats, stats = extract_dataset(
            [{"path": str(ok)}, {"path": str(empty)}, {"path": str(junk)}],
            MeanColourExtractor(),
            Sampling(min_face=16),
            detector=SquareDetector(),
            progress=False,
        )
    X, has_face = pooled_matrix(feats)
    assert stats.has_face.tolist() == [True, False, False] and feats[2].error == stats.error[2]
    assert list(has_face) == [True, False, False]
    assert np.isfinite(X[0]).all() and np.isnan(X[1:]).all() and X.shape == (3, 12)
    assert "junk.avi" in stats.error[2] and stats.error[1] == ""
    assert list(stats.n_frames_with_face) == [6, 0, 0]
    with pytest.raises(VideoDecodeError, match="junk.avi"):
        extract_dataset(
            [junk], MeanColourExtractor(), detector=SquareDetector(), on_error="raise", progress=False
        )


def test_video_features_round_trip_through_cache(tmp_path):
    vf = VideoFeatures(
        path="/x/y.avi",
        mode="vgaf",
        sampled=np.arange(3),
        face_frame=np.array([0, 0, 2]),
        boxes=np.ones((3, 5), np.float32),
        features=np.arange(6, dtype=np.float32).reshape(3, 2),
        scores=np.ones((3, 2), np.float32),
    )
    cache = FeatureCache(tmp_path)
    cache.put("/x/y.avi", "k1", vf)
    back = cache.get("/x/y.avi", "k1")
    assert back.path == "/x/y.avi" and back.mode == "vgaf" and back.error == ""
    np.testing.assert_array_equal(back.features, vf.features)
    np.testing.assert_allclose(pool(back), pool(vf))
    assert cache.get("/x/y.avi", "k2") is None


# ----------------------------------------------------------------------------------------- torch
class TinyNet(torch.nn.Module):
    """forward_features -> [B, 8]; heads['expression'] -> 3 logits; forward returns a dict."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.heads = torch.nn.ModuleDict({"expression": torch.nn.Linear(8, 3)})

    def forward_features(self, x):
        return self.conv(x).mean((2, 3))

    def forward(self, x):
        return {"expression": self.heads["expression"](self.forward_features(x))}


def test_torch_feature_extractor_batches_and_key():
    torch.manual_seed(0)
    net = TinyNet()
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (20 + i, 17 + 2 * i, 3), dtype=np.uint8) for i in range(5)]
    ext = TorchFeatureExtractor(net, Preprocess(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), batch_size=2)
    f, s = ext.features(crops)
    assert f.shape == (5, 8) and s.shape == (5, 3) and f.dtype == np.float32
    np.testing.assert_allclose(s.sum(1), 1.0, rtol=1e-5)
    f1, s1 = TorchFeatureExtractor(
        net, Preprocess(16, (0.5,) * 3, (0.25,) * 3), batch_size=8, channels_last=False
    ).features(crops)
    np.testing.assert_allclose(f, f1, atol=1e-5)
    # scores by the dict-returning forward and by an explicit scores_fn agree with heads[...]
    with torch.inference_mode():
        x = ext.to_input(crops)
        expect = torch.softmax(net(x)["expression"], 1).numpy()
    np.testing.assert_allclose(s, expect, atol=1e-5)
    ext_fn = TorchFeatureExtractor(
        net, Preprocess(16, (0.5,) * 3, (0.25,) * 3), scores_fn=lambda z: -z[:, :2]
    )
    assert ext_fn.features(crops)[1].shape == (5, 2)
    # the key follows weights and preprocessing
    assert ext.key == TorchFeatureExtractor(net, Preprocess(16, (0.5,) * 3, (0.25,) * 3)).key
    assert ext.key != TorchFeatureExtractor(net, Preprocess(24, (0.5,) * 3, (0.25,) * 3)).key
    with torch.no_grad():
        net.conv.bias += 1.0
    assert ext.key != TorchFeatureExtractor(net, Preprocess(16, (0.5,) * 3, (0.25,) * 3)).key


def test_torch_feature_extractor_with_timm_model():
    import timm

    model = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=7)
    ext = TorchFeatureExtractor(
        model, Preprocess(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), batch_size=4
    )
    crops = [np.full((30, 24, 3), v, np.uint8) for v in (0, 120, 255)]
    f, s = ext.features(crops)
    assert f.shape == (3, model.num_features) and s.shape == (3, 7)
    np.testing.assert_allclose(s.sum(1), 1.0, rtol=1e-5)
    with torch.inference_mode():  # the pooled pre-logits feature, not the unpooled map
        expect = model.forward_head(model.forward_features(ext.to_input(crops)), pre_logits=True)
    np.testing.assert_allclose(f, expect.numpy(), atol=1e-5)
    model.reset_classifier(0)
    f0, s0 = TorchFeatureExtractor(model, Preprocess(32, (0.5,) * 3, (0.5,) * 3)).features(crops)
    assert f0.shape == (3, model.num_features) and s0.shape == (3, 0)


class FeaturesOnly(torch.nn.Module):
    """No heads, a forward returning a tensor: no scores, and the forward is tried only once."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.forward_calls = 0

    def forward_features(self, x):
        return self.lin(x.mean((2, 3)))

    def forward(self, x):
        self.forward_calls += 1
        return self.forward_features(x)


def test_torch_feature_extractor_without_scores():
    net = FeaturesOnly()
    ext = TorchFeatureExtractor(net, Preprocess(8, (0.5,) * 3, (0.5,) * 3), batch_size=2)
    f, s = ext.features([np.zeros((9, 9, 3), np.uint8)] * 5)
    assert f.shape == (5, 4) and s.shape == (5, 0) and net.forward_calls == 1


def test_detector_key_shows_settings():
    class Det:
        def __init__(self, m):
            self.m = m

        def __repr__(self):
            return f"Det(min_face_size={self.m})"

        def detect_batch(self, frames):
            return [np.zeros((0, 5))] * len(frames)

    s32 = Sampling(min_face=32)
    assert s32.detector_key(Det(32)) != s32.detector_key(Det(40))
    assert "min_face_size=40" in Sampling(min_face=40).detector_key()
    assert s32.detector_key(SquareDetector()) == SquareDetector.key


# ----------------------------------------------------------------------------------------- end to end
def test_end_to_end_video_classification(tmp_path):
    """Three classes, class = square colour (with noise); one test video has no face at all."""
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 5), ("test", 3)):
        for cls, base in COLOURS.items():
            for k in range(n):
                colour = tuple(int(np.clip(c + rng.integers(-40, 41), 0, 255)) for c in base)
                ext = "avi" if k % 2 else "mp4"
                p = write_video(
                    tmp_path / f"{split}_{cls}_{k}.{ext}", square_frames(10, colour, every=1 + k % 3, rng=rng)
                )
                rows.append({"path": str(p), "split": split, "label": cls})
    p = write_video(tmp_path / "test_noface.mp4", square_frames(10, None))
    rows.append({"path": str(p), "split": "test", "label": 0})
    import pandas as pd

    man = pd.DataFrame(rows)
    with pytest.warns(UserWarning, match="1 of 25 videos have no face"):
        feats, stats = extract_dataset(
            man,
            MeanColourExtractor(),
            Sampling(min_face=16),
            detector=SquareDetector(),
            batch_size=8,
            cache=tmp_path / "cache",
            progress=False,
        )
    X, has_face = pooled_matrix(feats)
    tr, te = (man.split == "train").to_numpy(), (man.split == "test").to_numpy()
    res = evaluate_videos(
        make_video_classifier("linear_svc", C=None, C_grid=(1.0, 100.0), cv=3),
        X[tr],
        man.label[tr].to_numpy(),
        X[te],
        man.label[te].to_numpy(),
        has_face[te],
    )
    assert res["n_test_no_face"] == 1 and res["n_test"] == 10
    assert res["accuracy_faces_only"] >= 0.85  # chance is 1/3
    assert res["accuracy_complete"] == pytest.approx(res["accuracy_faces_only"] * 9 / 10)


# ------------------------------------------------------------------ paper A's options: faces, alignment
class FixedFaces:
    """Two faces in every frame at fixed places: a large one of probability 0.8 and a small one of 0.99."""

    BOXES = np.array([[4, 4, 44, 44, 0.8], [60, 10, 84, 34, 0.99]], np.float32)
    key = "fixed-faces"

    def detect_batch(self, frames):
        return [self.BOXES.copy() for _ in frames]

    @classmethod
    def frame_with_faces(cls, big=(230, 30, 30), small=(30, 30, 230)):
        f = np.full((72, 96, 3), GREY, np.uint8)
        f[4:44, 4:44], f[10:34, 60:84] = big, small
        return f


class CropRecorder(MeanColourExtractor):
    """Mean colour features; keeps the shape of every crop it is given (and a ``preprocess`` if asked)."""

    def __init__(self, key="crop-recorder", preprocess=None):
        super().__init__(key)
        self.shapes = []
        if preprocess is not None:
            self.preprocess = preprocess

    def features(self, crops):
        self.shapes += [c.shape for c in crops]
        return super().features(crops)


def test_afew_score_keeps_the_most_probable_face_largest_the_largest(tmp_path):
    frame = FixedFaces.frame_with_faces()
    det = FixedFaces.BOXES
    _, _, largest = faces_in_batch([frame], [0], [det], Sampling("afew", min_face=16))
    _, _, score = faces_in_batch([frame], [0], [det], Sampling("afew", "score", min_face=16))
    np.testing.assert_array_equal(largest, det[[0]])
    np.testing.assert_array_equal(score, det[[1]])
    with pytest.raises(ValueError, match="choose one of largest, score"):
        Sampling("afew", "all")
    with pytest.raises(ValueError, match="choose one of all"):
        Sampling("vgaf", "score")
    path = write_video(tmp_path / "two.avi", [frame] * 4)
    afew = Sampling("afew", min_face=16)
    red = extract_video_features(path, FixedFaces(), MeanColourExtractor(), afew, batch_size=2)
    blue = extract_video_features(
        path, FixedFaces(), MeanColourExtractor(), afew.replace(select="score"), batch_size=2
    )
    assert red.n_faces == blue.n_faces == 4  # one face per frame either way
    np.testing.assert_allclose(red.features.mean(0), np.array([230, 30, 30]) / 255, atol=0.05)
    np.testing.assert_allclose(blue.features.mean(0), np.array([30, 30, 230]) / 255, atol=0.05)
    np.testing.assert_array_equal(blue.boxes, np.repeat(FixedFaces.BOXES[[1]], 4, axis=0))


def test_aligned_faces_take_the_extractors_size_and_landmarks_follow_keyframes(tmp_path):
    frames = square_frames(7, COLOURS[2], squares=2)
    path = write_video(tmp_path / "g.avi", frames)
    vgaf = Sampling("vgaf", min_face=16)
    box = extract_video_features(path, SquareDetector(), MeanColourExtractor(), vgaf, batch_size=3)
    plain = CropRecorder()
    aligned = extract_video_features(
        path, SquareDetector(), plain, vgaf.replace(align=True, detect_every=3), batch_size=3
    )
    assert set(plain.shapes) == {(224, 224, 3)}  # no input size known: paper A's 224
    sized = CropRecorder(preprocess=Preprocess(48))
    extract_video_features(path, SquareDetector(), sized, vgaf.replace(align=True), batch_size=3)
    assert set(sized.shapes) == {(48, 48, 3)}  # the model's input size
    # the fake landmarks sit where the template puts them in the box, so alignment frames the square
    # as the box does (frames 1, 2, 4, 5 with interpolated landmarks too)
    assert aligned.n_faces == box.n_faces == 14
    np.testing.assert_allclose(aligned.boxes, box.boxes, atol=0.01)
    np.testing.assert_allclose(aligned.features, box.features, atol=0.03)
    np.testing.assert_allclose(aligned.features.mean(0), np.array(COLOURS[2]) / 255, atol=0.05)
    with pytest.raises(ValueError, match="five landmarks"):
        faces_in_batch([frames[0]], [0], [FixedFaces.BOXES], vgaf.replace(align=True), Preprocess(64))


def test_interpolated_detections_carry_landmarks_along():
    a = np.array([[0, 0, 20, 20, 0.9] + list(range(10))], np.float32)
    b = a + np.array([4, 4, 4, 4, 0] + [2] * 10, np.float32)
    mid = interpolate_boxes(a, b, 0.5)
    assert mid.shape == (1, 15)
    np.testing.assert_allclose(mid[0, 5:], np.arange(10) + 1.0)
    with pytest.raises(ValueError, match="columns"):
        interpolate_boxes(a, b[:, :5], 0.5)


def test_thresholds_selection_and_alignment_are_part_of_the_cache_key(tmp_path, monkeypatch):
    from fer_lib.video import cache as cache_mod

    old = "fer_lib.faces.FaceDetector(min_face_size=32)"  # the key before thresholds were an option
    assert Sampling().detector_key() == Sampling(thresholds=(0.6, 0.7, 0.7)).detector_key() == old
    assert "thresholds=[0.6, 0.7, 0.9]" in Sampling(thresholds=(0.6, 0.7, 0.9)).detector_key()
    p = write_video(tmp_path / "k.avi", square_frames(3, COLOURS[0]))
    ext = MeanColourExtractor("ext")
    base = Sampling().key(p, ext)
    assert Sampling(select="largest").key(p, ext) == base  # the default keeps its name
    assert Sampling(select="score").key(p, ext) != base
    assert Sampling(thresholds=(0.6, 0.7, 0.9)).key(p, ext) != base
    vg = Sampling("vgaf", min_face=32)
    aligned = vg.replace(align=True)
    sized = CropRecorder("ext", preprocess=Preprocess(112))  # aligned at the extractor's 112 px, not 224
    assert len({vg.key(p, ext), aligned.key(p, ext), aligned.key(p, sized)}) == 3

    built = []  # the thresholds reach the detector extract_dataset builds

    def fake_default_detector(sampling, device="cpu"):
        built.append(sampling.thresholds)
        return SquareDetector()

    monkeypatch.setattr(cache_mod, "default_detector", fake_default_detector)
    ext = MeanColourExtractor()
    kw = dict(cache=FeatureCache(tmp_path / "cache"), progress=False)

    def run(sampling):
        return extract_dataset([p], ext, sampling, **kw)[1]

    s16 = Sampling(min_face=16)
    paper = s16.replace(thresholds=(0.6, 0.7, 0.9))
    p2 = write_video(tmp_path / "k2.avi", square_frames(3, COLOURS[1]))
    two = extract_dataset([p, p2], ext, paper, cache=FeatureCache(tmp_path / "other"), progress=False)[1]
    # every video keyed by the detector as given (None: the sampling's MTCNN), not by the one built
    assert two.cache_key.tolist() == [paper.key(q, ext) for q in (p, p2)] and built == [(0.6, 0.7, 0.9)]
    ext.calls, built[:] = 0, []
    assert not run(paper).cached.any() and built == [(0.6, 0.7, 0.9)]
    assert run(paper).cached.all()
    assert not run(s16).cached.any() and built[-1] == (0.6, 0.7, 0.7)  # other thresholds: extracted again
    assert run(s16.replace(thresholds=(0.6, 0.7, 0.7))).cached.all()  # the default, spelt out: the same entry
    assert not run(s16.replace(select="score")).cached.any() and run(s16.replace(select="score")).cached.all()
    vgaf = Sampling("vgaf", min_face=16)
    stats = run(vgaf)
    assert not run(vgaf.replace(align=True)).cached.any() and run(vgaf.replace(align=True)).cached.all()
    assert stats.cache_key[0] != run(vgaf.replace(align=True)).cache_key[0]
    assert ext.calls == 5  # one extraction per new setting (0.9, default, score, vgaf, vgaf aligned)
