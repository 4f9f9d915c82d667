"""Stage 04 (fer_lib.stages.video): checkpoint lookup, extractor, stride subsampling, pooling, tables,
an end-to-end run on AFEW- and VGAF-format folders, metrics rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from fer_lib import config, labels, published, reporting
from fer_lib.datasets.synthetic import write_video
from fer_lib.models import MultiTaskNet, save_checkpoint
from fer_lib.stages import video as stage
from fer_lib.video import POOLINGS, Sampling, VideoFeatures, extract_video_features, pool, pooled_matrix
from fer_lib.video.fakes import ColourBlobDetector, MeanColourExtractor
from fer_lib.video.study import keyframes, subsample

# Seven colours with distinct chromaticity (channel spread > 100, so the blob detector finds them).
COLOURS = [
    (230, 30, 30),
    (30, 230, 30),
    (30, 30, 230),
    (230, 230, 30),
    (230, 30, 230),
    (30, 230, 230),
    (230, 130, 30),
]
W, H, SIZE = 96, 72, 24


def square_frames(n, colour, squares=1, every=1, seed=0):
    """Grey noisy frames with ``squares`` coloured squares (the 'faces'); frames i % every != 0 have none."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        f = np.full((H, W, 3), 110, np.uint8) + rng.integers(0, 12, size=(H, W, 3), dtype=np.uint8)
        if colour is not None and i % every == 0:
            for q in range(squares):
                x = (2 + i + q * (SIZE + 10)) % (W - SIZE)
                f[6 + 3 * q : 6 + 3 * q + SIZE, x : x + SIZE] = colour
        out.append(f)
    return out


def jitter(colour, rng):
    return tuple(int(np.clip(c + rng.integers(-30, 31), 0, 255)) for c in colour)


def afew_folder(root, n_train=2, n_val=1, frames=8, no_face_video=True):
    """AFEW layout ``{Train,Val}/<class>/*.avi``; the class is the colour of the square."""
    rng = np.random.default_rng(1)
    for split, n in (("Train", n_train), ("Val", n_val)):
        for c, cls in enumerate(labels.AFEW_ORDER):
            for k in range(n):
                write_video(
                    root / split / cls / f"{c}{k:02d}{split[0]}.avi",
                    square_frames(frames, jitter(COLOURS[c], rng), every=1 + k % 2, seed=c * 10 + k),
                )
    if no_face_video:
        write_video(root / "Val" / "Happy" / "noface.avi", square_frames(frames, None))
    return root


def vgaf_folder(root, n_train=3, n_val=2, frames=8):
    """VGAF layout ``{Train,Val}/*.mp4`` + ``<Split>_labels.txt``; 2 squares of the class colour."""
    rng = np.random.default_rng(2)
    for split, n in (("Train", n_train), ("Val", n_val)):
        lines = ["Vid_name Label"]
        for c in range(3):
            for k in range(n):
                name = f"{split[0]}{c}_{k}"
                write_video(
                    root / split / f"{name}.mp4",
                    square_frames(frames, jitter(COLOURS[c], rng), squares=2, seed=100 + c * 10 + k),
                )
                lines.append(f"{name} {c + 1}")
        (root / f"{split}_labels.txt").write_text("\n".join(lines) + "\n")
    return root


def smoke_cfg(**over):
    return config.get_profile("smoke", {"video.min_face_afew": 16, "video.min_face_vgaf": 16, **over})


# ------------------------------------------------------------------------------------- checkpoint
def test_find_checkpoint_prefers_va_then_expression_then_explains(tmp_path):
    paths = config.Paths(repo=tmp_path, data=tmp_path / "data", results=tmp_path / "res", real_root=None)
    with pytest.raises(FileNotFoundError, match="python -m fer_lib finetune") as err:
        stage.find_checkpoint(paths)
    assert "video.checkpoint" in str(err.value) and "checkpoint=" in str(err.value)
    expr = paths.checkpoints / "02_expression" / "best.pt"
    expr.parent.mkdir(parents=True)
    expr.write_bytes(b"x")
    assert stage.find_checkpoint(paths) == expr
    va = paths.checkpoints / "02_expression_va" / "best.pt"
    va.parent.mkdir(parents=True)
    va.write_bytes(b"x")
    assert stage.find_checkpoint(paths) == va
    assert stage.find_checkpoint(paths, str(expr)) == expr  # an explicit path wins
    with pytest.raises(FileNotFoundError, match="does not exist"):
        stage.find_checkpoint(paths, tmp_path / "missing.pt")
    assert stage.checkpoint_name(va) == "02_expression_va" and stage.checkpoint_name(tmp_path / "m.pt") == "m"


def test_make_extractor_reads_size_and_label_order_from_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = MultiTaskNet("tiny_cnn", {"expression": 8, "va": 2}, verbose=False, input_size=40)  # default 32
    order = list(labels.EXPRESSIONS_8)
    path = save_checkpoint(
        tmp_path / "02_expression_va" / "best.pt", model, {"train": {"image_size": 40}}, {"expression": order}
    )
    cfg = config.get_profile("smoke", {"device": "cpu"})
    ext = stage.make_extractor(path, cfg)
    assert ext.image_size == 40 and ext.class_names == order and ext.name == "02_expression_va"
    crops = [np.full((30, 26, 3), v, np.uint8) for v in (20, 200, 90)]
    f, s = ext.features(crops)
    assert f.shape == (3, model.num_features) and s.shape == (3, 8)
    np.testing.assert_allclose(s.sum(1), 1, atol=1e-5)
    with torch.inference_mode():  # the features are the model's penultimate layer on the same input
        ref = model.eval().forward_features(ext.to_input(crops[:1])).numpy()
    np.testing.assert_allclose(f[:1], ref, rtol=1e-4, atol=1e-5)
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other.pt", MultiTaskNet("tiny_cnn", {"expression": 8}, verbose=False))
    assert stage.make_extractor(other, cfg).key != ext.key  # other weights, other cache key


# ------------------------------------------------------------------------------ stride subsampling
@pytest.mark.parametrize("mode,squares", [("afew", 1), ("vgaf", 2)])
@pytest.mark.parametrize("stride", [2, 3])
def test_subsampled_stride1_features_equal_extracting_at_that_stride(tmp_path, mode, squares, stride):
    path = tmp_path / "v.avi"
    write_video(path, square_frames(11, (230, 30, 30), squares=squares, every=2, seed=3))
    s1 = Sampling(mode, min_face=16)
    full = extract_video_features(path, ColourBlobDetector(), MeanColourExtractor(), s1, batch_size=4)
    direct = extract_video_features(
        path, ColourBlobDetector(), MeanColourExtractor(), s1.replace(stride=stride), batch_size=4
    )
    sub = subsample(full, stride)
    assert full.n_frames == 11 and sub.n_frames == direct.n_frames == len(range(0, 11, stride))
    for name in ("sampled", "face_frame", "boxes", "features", "scores"):
        np.testing.assert_array_equal(getattr(sub, name), getattr(direct, name), err_msg=name)
    for pooling in POOLINGS:
        np.testing.assert_array_equal(pool(sub, pooling), pool(direct, pooling))
    assert subsample(full, 1) is full
    with pytest.raises(ValueError):
        subsample(full, 0)


# ----------------------------------------------------------------------------------------- pooling
def test_poolings_hand_computed():
    a = VideoFeatures(
        path="a",
        mode="afew",
        sampled=np.arange(4),
        face_frame=np.array([0, 1, 3]),
        boxes=np.zeros((3, 5), np.float32),
        features=np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]], np.float32),
        scores=np.zeros((3, 0), np.float32),
    )
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
    np.testing.assert_allclose(pool(a, "mean"), x.mean(0))
    np.testing.assert_allclose(pool(a, "mean_std"), np.r_[x.mean(0), x.std(0)])
    np.testing.assert_allclose(pool(a, "stat"), np.r_[x.mean(0), x.std(0), x.min(0), x.max(0)])
    # VGAF: frame 0 has two faces, frame 2 one
    g = VideoFeatures(
        path="g",
        mode="vgaf",
        sampled=np.arange(3),
        face_frame=np.array([0, 0, 2]),
        boxes=np.zeros((3, 5), np.float32),
        features=np.array([[0.0, 4.0], [2.0, 0.0], [4.0, 4.0]], np.float32),
        scores=np.zeros((3, 0), np.float32),
    )
    per_frame = np.array([[1.0, 2.0], [4.0, 4.0]])  # mean over the faces of each frame
    np.testing.assert_allclose(pool(g, "mean"), per_frame.mean(0))
    np.testing.assert_allclose(pool(g, "mean_std"), np.r_[per_frame.mean(0), per_frame.std(0)])
    f = np.array([[1.0, 2.0, 1.0, 2.0], [4.0, 4.0, 0.0, 0.0]])  # per frame concat(mean, std) over faces
    np.testing.assert_allclose(pool(g, "stat"), np.r_[f.mean(0), f.std(0)])
    empty = VideoFeatures(path="e", mode="afew", sampled=np.arange(3))
    assert all(pool(empty, p) is None for p in POOLINGS)
    X, has = pooled_matrix([a, empty], "mean")
    assert has.tolist() == [True, False] and np.isnan(X[1]).all()
    with pytest.raises(ValueError, match="pooling"):
        pool(a, "median")


def test_score_baseline_maps_afew_classes_to_checkpoint_order():
    """Mean frame probability -> argmax over the AFEW classes, whatever the checkpoint's column order."""
    names = list(labels.HSEMOTION_ORDER_8)  # alphabetical, not canonical
    afew_labels = [labels.expression_index(n) for n in labels.AFEW_ORDER]

    def vf(canonical, n=3):
        s = np.full((n, 8), 0.01, np.float32)
        col = [labels.canonical_expression(n) for n in names].index(labels.EXPRESSIONS_8[canonical])
        s[:, col] = 0.9
        return VideoFeatures(
            path="p",
            mode="afew",
            sampled=np.arange(n),
            face_frame=np.arange(n),
            boxes=np.zeros((n, 5), np.float32),
            features=np.zeros((n, 2), np.float32),
            scores=s,
        )

    feats = [vf(1), vf(2), vf(6), vf(0), VideoFeatures(path="q", mode="afew", sampled=np.arange(3))]
    y = np.array([1, 2, 3, 0, 1])  # the third is wrong (Anger predicted, Surprise true), the last has no face
    vs = stage.VideoSet(
        name="afew",
        dataset="synthetic_afew",
        real=False,
        manifest=pd.DataFrame({"split": ["test"] * 5}),
        y=y,
        labels=afew_labels,
        class_names=list(labels.AFEW_ORDER),
        features=feats,
        stats=pd.DataFrame(),
        sampling=Sampling("afew", min_face=20),
        extract_seconds=0.0,
        score_names=names,
    )
    r = stage.score_baseline(vs)
    assert r["accuracy_faces_only"] == pytest.approx(3 / 4) and r["accuracy_complete"] == pytest.approx(3 / 5)
    vs.name = "vgaf"
    assert stage.score_baseline(vs) is None


# -------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize(
    "n, every, expected", [(8, 3, 4), (9, 3, 4), (7, 3, 3), (1, 5, 1), (0, 2, 0), (6, 1, 6)]
)
def test_keyframes_counts_every_kth_frame_and_the_last(n, every, expected):
    assert keyframes(n, every) == expected


@pytest.fixture
def fake_real_root(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    afew_folder(root / "afew")
    vgaf_folder(root / "vgaf")
    monkeypatch.setenv("FER_DATA_ROOT", str(root))
    monkeypatch.setenv("FER_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("FER_DATA_DIR", str(tmp_path / "data"))
    return root


def test_end_to_end_tables_metrics_and_cache(fake_real_root):
    cfg = smoke_cfg()
    paths = config.get_paths()
    ext, det = MeanColourExtractor(), ColourBlobDetector()
    afew = stage.video_set("afew", cfg, paths, ext, det, progress=False)
    vgaf = stage.video_set("vgaf", cfg, paths, ext, det, progress=False)
    assert afew.dataset == "afew" and afew.real and vgaf.dataset == "vgaf"
    assert afew.train.sum() == 14 and afew.test.sum() == 8 and vgaf.test.sum() == 6

    det_tab = stage.detection_table([afew, vgaf])
    assert list(det_tab.columns[:4]) == ["dataset", "split", "min_face_size", "videos"]
    assert det_tab.videos.tolist() == [14, 8, 9, 6] and det_tab.videos_no_face.tolist() == [0, 1, 0, 0]
    afew_train = det_tab.iloc[0]  # every other frame of the k=1 videos has no face: 7 * (8 + 4) of 7 * 16
    assert afew_train.frames == 14 * 8 and afew_train.frames_with_face == 7 * 12
    assert afew_train.face_detection_rate == pytest.approx(84 / 112)
    assert det_tab.iloc[2].faces_per_frame_with_face == pytest.approx(2.0)

    tab, results = stage.accuracy_table(afew, cfg)
    assert (
        len(tab) == 9 and tab.paper_protocol.sum() == 1
    )  # the fake extractor has no class names: no baseline
    assert {"pooling", "classifier", "C", "accuracy", "accuracy_complete", "n_test_no_face"} <= set(
        tab.columns
    )
    head = stage.headline(tab)
    assert head.pooling == "stat" and head.classifier == "linear_svc" and head.n_test_no_face == 1
    assert head.accuracy >= 0.85  # chance is 1/7
    assert head.accuracy_complete == pytest.approx(head.accuracy * 7 / 8)
    cm = results[("stat", "linear_svc")]["confusion_matrix"]
    assert cm.shape == (7, 7) and cm.sum() == 7
    vtab, _ = stage.accuracy_table(vgaf, cfg, classifiers=("linear_svc",))
    assert len(vtab) == 3 and stage.headline(vtab).accuracy >= 0.8  # chance 1/3

    strides = stage.stride_study(afew, cfg)
    assert strides.stride.tolist() == list(cfg.video.strides) == [1, 2, 4]
    assert strides.frames_per_video.tolist() == [8.0, 4.0, 2.0]
    assert strides.published_percent.tolist() == [published.STRIDE_STUDY[s] for s in (1, 2, 4)]
    assert strides.accuracy.iloc[0] == pytest.approx(head.accuracy)
    fig = stage.plot_stride_study(strides)
    assert [line.get_label() for line in fig.axes[0].lines][1] == stage.PUBLISHED_STRIDE_LABEL
    assert stage.plot_confusion(results[("stat", "linear_svc")], afew.class_names).axes

    frame_counter = ColourBlobDetector()
    every = stage.detect_every_study(afew, cfg, ext, paths, detector=frame_counter, progress=False)
    assert every.detect_every.tolist() == [1, 3] and list(cfg.video.detect_every_study) == [1, 3]
    assert frame_counter.frames == 22 * 4  # keyframes 0, 3, 6 and the last (7) of 22 videos of 8 frames
    assert every.detected_fraction.tolist() == [1.0, 0.5] and not every.cached.any()  # both extracted
    full, k3 = every.iloc[0], every.iloc[1]
    assert full.accuracy == pytest.approx(head.accuracy) and full.mean_iou == 1.0
    assert full.frames_face_changed == 0 and full.median_rel_diff_pooled == 0.0
    # the squares move 1 px a frame: interpolated boxes stay on them ...
    assert k3.mean_iou > 0.9 and k3.accuracy >= 0.85 and k3.median_rel_diff_pooled < 0.05
    # ... and in the 7 training videos with a face on even frames only (keyframes 0 and 6 find it, 3 and 7
    # do not), frames 2 and 4 lose theirs: between a keyframe with the face and one without, none is guessed
    assert k3.frames_face_changed == 7 * 2
    again = stage.detect_every_study(afew, cfg, ext, paths, detector=frame_counter, progress=False)
    assert again.cached.iloc[1] and frame_counter.frames == 22 * 4  # k = 3 from the cache
    pd.testing.assert_frame_equal(
        again.drop(columns=["cached", "extract_seconds"]), every.drop(columns=["cached", "extract_seconds"])
    )

    rows = stage.record(afew, tab, cfg, "fake", strides, seconds=1.0, detect_every=every)
    stage.record(vgaf, vtab, cfg, "fake")
    m = reporting.load_metrics(paths.metrics_csv)
    a = m[(m.dataset == "afew") & (m.stage == "video")]
    assert set(a.split) == {"val"} and set(a.model) == {"fake"} and len(rows) == len(a)
    assert a.set_index("metric").value["accuracy"] == pytest.approx(head.accuracy)
    pub = published.published_table()
    pub_afew = set(pub[(pub.dataset == "afew")].metric)
    assert {
        "accuracy",
        "accuracy_complete",
        "accuracy_stride1",
        "accuracy_stride2",
        "accuracy_stride4",
    } <= set(a.metric) & pub_afew  # the names the published table pairs with
    assert a.set_index("metric").value["accuracy_detect_every3"] == pytest.approx(k3.accuracy)
    assert set(m[m.dataset == "vgaf"].metric) == {"accuracy", "accuracy_complete", "face_detection_rate"}

    # second run: every video from the cache, nothing decoded or extracted again
    calls = ext.calls, det.calls
    again = stage.video_set("afew", cfg, paths, ext, det, progress=False)
    assert again.stats.cached.all() and (ext.calls, det.calls) == calls
    np.testing.assert_array_equal(pooled_matrix(again.features)[0], pooled_matrix(afew.features)[0])


def test_synthetic_fallback_names_the_dataset_synthetic(tmp_results, monkeypatch):
    """Without FER_DATA_ROOT the profile's synthetic videos are used and named synthetic_<name>."""
    monkeypatch.delenv("FER_DATA_ROOT", raising=False)
    cfg = smoke_cfg(**{"data.n_vgaf_per_class": 1, "data.video_frames": 4})
    vs = stage.video_set(
        "vgaf", cfg, config.get_paths(), MeanColourExtractor(), ColourBlobDetector(), progress=False
    )
    assert vs.dataset == "synthetic_vgaf" and not vs.real and len(vs.features) == 6
    assert all(vf.n_frames == 4 for vf in vs.features)
    assert vs.y[vs.train].tolist() == [0, 1, 2]


def test_torch_threads_is_restored():
    before = torch.get_num_threads()
    with stage.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with stage.torch_threads(None):
        assert torch.get_num_threads() == before


def test_make_extractor_loads_notebook_02_local_backbones(tmp_path):
    """A checkpoint of the local plain-conv backbone the default profile trains (fer_cnn_s) builds and extracts."""

    path = save_checkpoint(
        tmp_path / "best.pt",
        MultiTaskNet("fer_cnn_s", {"expression": 8}, verbose=False),
        {"train": {"image_size": 48}},
    )
    ext = stage.make_extractor(path, config.get_profile("smoke", {"device": "cpu"}))
    f, s = ext.features([np.zeros((50, 40, 3), np.uint8)])
    assert f.shape[0] == 1 and s.shape == (1, 8)


# ------------------------------------------------------------------------------ paper A's options
def test_find_checkpoint_source_names_a_stage_folder(tmp_path):
    paths = config.Paths(repo=tmp_path, data=tmp_path / "data", results=tmp_path / "res", real_root=None)
    for name in ("02_expression_va", "02_expression"):
        (paths.checkpoints / name).mkdir(parents=True)
        (paths.checkpoints / name / "best.pt").write_bytes(b"x")
    expr, va = (paths.checkpoints / n / "best.pt" for n in ("02_expression", "02_expression_va"))
    assert stage.find_checkpoint(paths) == va  # auto: the valence/arousal model first
    assert stage.find_checkpoint(paths, source="02_expression") == expr  # paper A's 8-class model
    assert stage.find_checkpoint(paths, None, "02_expression_va") == va
    assert stage.find_checkpoint(paths, str(va), "02_expression") == va  # an explicit path still wins
    with pytest.raises(FileNotFoundError, match="01_attributes") as err:
        stage.find_checkpoint(paths, source="01_attributes")
    assert "01_multitask_pretraining.ipynb" in str(err.value)  # the notebook that writes the folder
    with pytest.raises(ValueError, match="video.checkpoint"):
        stage.find_checkpoint(paths, source="runs/x/best.pt")


def test_face_selection_and_C_per_dataset():
    cfg = smoke_cfg()
    selection = {name: Sampling.from_config(cfg.video, name).select for name in ("afew", "vgaf")}
    assert selection == {"afew": "largest", "vgaf": "all"}
    score = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, afew_face="score"))
    assert Sampling.from_config(score.video, "afew").select == "score"
    bad = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, afew_face="biggest"))
    with pytest.raises(ValueError, match="choose one of largest, score"):
        Sampling.from_config(bad.video, "afew")
    with pytest.raises(ValueError, match="choose one of largest, score"):
        stage.video_set("afew", bad, extractor=MeanColourExtractor())


def _blob_set(name, n_per_class=6, seed=0):
    """A VideoSet of one-face-per-frame videos whose mean feature is its class's centre (3 classes)."""
    rng = np.random.default_rng(seed)
    feats, y, split = [], [], []
    for k in range(2 * n_per_class):
        for c in range(3):
            x = np.eye(3)[c] * 3 + rng.normal(0, 0.5, (4, 3))
            feats.append(
                VideoFeatures(
                    path=f"{name}{c}{k}",
                    mode=name,
                    sampled=np.arange(4),
                    face_frame=np.arange(4),
                    boxes=np.zeros((4, 5), np.float32),
                    features=x.astype(np.float32),
                    scores=np.zeros((4, 0), np.float32),
                )
            )
            y.append(c)
            split.append("train" if k < n_per_class else "test")
    return stage.VideoSet(
        name=name,
        dataset=name,
        real=False,
        manifest=pd.DataFrame({"split": split}),
        y=np.array(y),
        labels=[0, 1, 2],
        class_names=["a", "b", "c"],
        features=feats,
        stats=pd.DataFrame(),
        sampling=Sampling(name, min_face=16),
        extract_seconds=0.0,
    )


def test_C_vgaf_reaches_the_vgaf_classifier_only():
    afew, vgaf = _blob_set("afew"), _blob_set("vgaf")
    cfg = smoke_cfg(**{"video.C": 1.1, "video.C_vgaf": 0.5})
    assert stage.classify(afew, cfg)["C"] == 1.1 and stage.classify(vgaf, cfg)["C"] == 0.5
    clf = stage.classify(vgaf, cfg)["pipeline"][-1]
    assert clf.C == 0.5  # the fitted LinearSVC itself
    same = smoke_cfg(**{"video.C": 1.1})  # C_vgaf unset: VGAF follows C
    assert stage.classify(vgaf, same)["C"] == 1.1
    cv = smoke_cfg(**{"video.C_vgaf": 0.5, "video.C_grid": "3.0,10.0"})  # AFEW cross-validates, VGAF fixed
    assert stage.classify(afew, cv)["C"] in (3.0, 10.0) and stage.classify(vgaf, cv)["C"] == 0.5
    tab, _ = stage.accuracy_table(vgaf, cfg, classifiers=("linear_svc",))
    assert set(tab.C) == {0.5}


def test_thresholds_face_selection_and_alignment_reach_extraction_and_the_cache(fake_real_root, monkeypatch):
    from fer_lib.video import cache as cache_mod

    built = []

    def fake_default_detector(sampling, device="cpu"):
        built.append(sampling.thresholds)
        return ColourBlobDetector()  # no MTCNN in this test; it gives landmarks for alignment

    monkeypatch.setattr(cache_mod, "default_detector", fake_default_detector)
    paths, ext = config.get_paths(), MeanColourExtractor()
    default = stage.video_set("vgaf", smoke_cfg(), paths, ext, progress=False)
    assert built == [(0.6, 0.7, 0.7)] and not default.stats.cached.any()
    paper = smoke_cfg(**{"video.mtcnn_thresholds": "0.6,0.7,0.9"})
    vs = stage.video_set("vgaf", paper, paths, ext, progress=False)
    assert built[-1] == (0.6, 0.7, 0.9) and not vs.stats.cached.any()  # other thresholds: not reused
    assert stage.video_set("vgaf", paper, paths, ext, progress=False).stats.cached.all()
    aligned = smoke_cfg(**{"video.align_vgaf": True})
    al = stage.video_set("vgaf", aligned, paths, ext, progress=False)
    assert not al.stats.cached.any() and len(al.features) == len(default.features)
    assert sum(vf.n_faces for vf in al.features) == sum(vf.n_faces for vf in default.features)
    calls = ext.calls  # align_vgaf leaves AFEW's box crops (and their cache entries) alone
    stage.video_set("afew", smoke_cfg(), paths, ext, progress=False)
    assert ext.calls > calls
    calls = ext.calls
    assert stage.video_set("afew", aligned, paths, ext, progress=False).stats.cached.all()
    scored = stage.video_set("afew", smoke_cfg(**{"video.afew_face": "score"}), paths, ext, progress=False)
    assert not scored.stats.cached.any() and ext.calls > calls
