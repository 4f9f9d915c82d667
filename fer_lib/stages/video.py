"""Stage 04: video emotion recognition as in paper A, on AFEW- and VGAF-format data.

Protocol (paper A, docs/papers.md): every frame is decoded, MTCNN finds the faces (AFEW: the
largest face of at least ``cfg.video.min_face_afew`` px, or the most probable with
``video.afew_face=score``; VGAF: every face of at least ``cfg.video.min_face_vgaf`` px; MTCNN's
thresholds ``video.mtcnn_thresholds``), each tight crop (VGAF faces aligned on their five landmarks with
``video.align_vgaf``) goes through the fine-tuned expression network, and
its penultimate-layer feature (and its expression scores) are kept. A video becomes one descriptor by
statistics pooling (AFEW: ``concat(mean, std, min, max)`` over the frames with a face; VGAF: per frame
mean + std over the faces, then mean + std over the frames), which an L2-normalised LinearSVC
(RBF SVC, random forest as options; ``C`` fixed by ``video.C`` / ``video.C_vgaf`` or by cross-validation
on the training videos only) classifies.
Videos where no face is found have no descriptor: "faces-only" accuracy leaves them out, "complete"
accuracy counts them as wrong.

The steps, in notebook order:

    ckpt = find_checkpoint(paths, cfg.video.checkpoint, cfg.video.source)  # auto: 02_expression_va, else
    ext = make_extractor(ckpt, cfg)                      # 02_expression; TorchFeatureExtractor of it
    afew = video_set("afew", cfg, paths, ext)            # load, extract once at stride 1 (cached)
    detection_table([afew, vgaf]); accuracy_table(afew, cfg); stride_study(afew, cfg)
    detect_every_study(afew, cfg, ext)                   # MTCNN on every k-th frame only

This module is the report: it orchestrates :mod:`fer_lib.video` and builds the tables and metrics rows.
Which frames and faces are used is the profile's :class:`fer_lib.video.Sampling`
(``Sampling.from_config(cfg.video, name)``). Per-face features are extracted **once**, at stride 1,
through :class:`fer_lib.video.FeatureCache` (``results/cache/video``); every other stride is obtained by
subsampling them (:func:`fer_lib.video.study.subsample`, which explains why that equals decoding at the
stride). ``cfg.video.max_frames`` breaks the equality, so the stride study warns when it is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import labels as L
from ..config import Paths, Profile, get_paths, repo_root, resolve_device
from ..paths import EXPRESSION_SERVED
from ..published import STRIDE_STUDY
from ..video import (
    CLASSIFIERS,
    FeatureCache,
    Sampling,
    TorchFeatureExtractor,
    VideoFeatures,
    evaluate_videos,
    extract_dataset,
    make_video_classifier,
    pooled_matrix,
)
from ..video.pooling import PAPER_POOLING, POOLINGS
from ..video.study import agreement, detected_fraction, subsample

#: Checkpoints notebook 04 looks for under the run folder's ``checkpoints/`` with ``video.source=auto``,
#: first match wins.
CHECKPOINT_CANDIDATES = EXPRESSION_SERVED
AUTO_SOURCE = "auto"
PAPER_CLASSIFIER = "linear_svc"  # with PAPER_POOLING ("stat", fer_lib.video.pooling): paper A's protocol
#: Name of the split the metrics use: the AFEW / VGAF ``Val`` folder (the loaders' ``test`` split) is
#: the set paper A reports on, and ``fer_lib.published`` calls it ``val``.
METRIC_SPLIT = "val"
TRAIN_SPLIT, TEST_SPLIT = "train", "test"
PUBLISHED_STRIDE_LABEL = "published (B0, AFEW val)"


# ------------------------------------------------------------------------------------- checkpoint
def find_checkpoint(
    paths: Paths | None = None, checkpoint: str | Path | None = None, source: str = AUTO_SOURCE
) -> Path:
    """The expression checkpoint to extract features with.

    ``checkpoint`` (the notebook parameter or ``--set video.checkpoint=PATH``) wins when given and
    must exist. Otherwise ``source`` (``video.source``) decides: ``auto``: the run folder's
    ``checkpoints/02_expression_va/best.pt``, else ``02_expression/best.pt`` (neither: one
    FileNotFoundError saying what to run first); a stage folder name (``02_expression``, the 8-class model
    paper A took its video features from): that folder's ``best.pt``, whose absence is an error naming the
    folder and the notebook that writes it.
    """
    if checkpoint:
        p = Path(checkpoint).expanduser()
        if not p.is_file():
            raise FileNotFoundError(
                f"checkpoint {p} (given as checkpoint= / video.checkpoint) does not exist"
            )
        return p
    paths = paths or get_paths()
    if source != AUTO_SOURCE:
        return _source_checkpoint(paths, source)
    tried = [paths.checkpoints / name / "best.pt" for name in CHECKPOINT_CANDIDATES]
    for p in tried:
        if p.is_file():
            return p
    raise FileNotFoundError(
        "notebook 04 needs a fine-tuned expression checkpoint and found none ("
        + ", ".join(str(p) for p in tried)
        + "). Train it first with `python -m fer_lib finetune` "
        "(notebook 02, same profile and FER_RESULTS_DIR), or pass a path: notebook parameter "
        'checkpoint="/path/best.pt" or `python -m fer_lib video --set video.checkpoint=/path/best.pt`.'
    )


def _source_checkpoint(paths: Paths, source: str) -> Path:
    """``checkpoints/<source>/best.pt`` of the run, or an error naming the notebook that writes it."""
    if not source or Path(source).name != source or source in (".", ".."):
        raise ValueError(
            f"video.source={source!r}: choose {AUTO_SOURCE} or a stage folder of the run's checkpoints/, "
            f"e.g. {', '.join(CHECKPOINT_CANDIDATES)} (a checkpoint path goes to video.checkpoint)"
        )
    p = paths.checkpoints / source / "best.pt"
    if p.is_file():
        return p
    prefix = source.split("_", 1)[0]  # a stage folder is named after its notebook's NN_ prefix
    found = sorted((repo_root() / "notebooks").glob(f"{prefix}_*.ipynb")) if prefix.isdigit() else []
    writer = f"notebook {found[0].name}" if found else "the notebook of that stage"
    raise FileNotFoundError(
        f"video.source={source!r} needs {p}, which does not exist: the stage folder {source} is written "
        f"by {writer}; run it first (same profile and FER_RESULTS_DIR), or set video.source={AUTO_SOURCE}"
    )


def checkpoint_name(path: str | Path) -> str:
    """``.../02_expression_va/best.pt`` -> ``02_expression_va`` (the model name in metrics.csv)."""
    p = Path(path)
    return p.parent.name if p.stem in ("best", "last") and p.parent.name else p.stem


def make_extractor(checkpoint: str | Path, cfg: Profile, device: Any = None) -> TorchFeatureExtractor:
    """Penultimate-layer features + expression softmax of a fer_lib checkpoint, batched.

    Preprocessing: the checkpoint's own (crop rule, input size, mean/std it was trained with). The
    extractor's ``class_names`` are the checkpoint's expression label order.
    """
    from ..models import build_model_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model = build_model_from_checkpoint(ckpt)
    device = resolve_device(cfg.device) if device is None else device
    ext = TorchFeatureExtractor(
        model, batch_size=max(cfg.video.batch_size, 1), device=device, head="expression"
    )
    n = model.tasks.get("expression", 0)
    ext.class_names = list((ckpt.get("label_orders") or {}).get("expression") or L.EXPRESSIONS_8[:n])
    ext.name = checkpoint_name(checkpoint)
    return ext


def svm_C(mode: str, cfg: Profile) -> float | None:
    """The classifier's fixed ``C`` of a mode (None: cross-validated over ``video.C_grid``): VGAF takes
    ``video.C_vgaf`` where it is set (paper A: AFEW 1.1, VGAF 0.5), else ``video.C`` as AFEW does."""
    if mode == "vgaf" and cfg.video.C_vgaf is not None:
        return cfg.video.C_vgaf
    return cfg.video.C


# -------------------------------------------------------------------------------------- video sets
@dataclass
class VideoSet:
    """One dataset's videos with their stride-1 per-face features (one VideoFeatures per video)."""

    name: str  # afew | vgaf (the mode as well)
    dataset: str  # name in metrics.csv: afew | synthetic_afew | vgaf | synthetic_vgaf
    real: bool
    manifest: pd.DataFrame  # rows of the train and test splits, in feature order
    y: np.ndarray  # class index per video (AFEW: canonical expression index)
    labels: list[int]  # class indices in display order
    class_names: list[str]  # names of ``labels``
    features: list[VideoFeatures]
    stats: pd.DataFrame  # extract_dataset's per-video stats
    sampling: Sampling  # the frames and faces ``features`` were extracted with (stride 1)
    extract_seconds: float
    score_names: list[str] = field(default_factory=list)  # expression order of the extractor's scores

    @property
    def min_face_size(self) -> int:
        return self.sampling.min_face

    @property
    def train(self) -> np.ndarray:
        return (self.manifest["split"] == TRAIN_SPLIT).to_numpy()

    @property
    def test(self) -> np.ndarray:
        return (self.manifest["split"] == TEST_SPLIT).to_numpy()


def label_space(name: str) -> tuple[str, list[int], list[str]]:
    """(manifest label column, class indices in display order, their names) of a video dataset."""
    if name == "afew":
        return "expression", [L.expression_index(n) for n in L.AFEW_ORDER], list(L.AFEW_ORDER)
    if name == "vgaf":
        return "group_label", list(range(len(L.VGAF_CLASSES))), list(L.VGAF_CLASSES)
    raise ValueError(f"video datasets are 'afew' and 'vgaf', got {name!r}")


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Set torch's CPU thread count for the block (None: leave it), then restore it."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def extract_features(
    manifest: pd.DataFrame,
    sampling: Sampling,
    extractor,
    cfg: Profile,
    paths: Paths | None = None,
    detector=None,
    device: Any = None,
    progress: bool = True,
) -> tuple[list[VideoFeatures], pd.DataFrame, float]:
    """Per-face features of every video in ``manifest`` under ``sampling``, through the feature cache.

    :func:`fer_lib.video.extract_dataset`: batched detection and extraction, decoding overlapped, one
    cache file per video keyed by checkpoint + sampling (``results/cache/video``; none with
    ``video.cache=False``). ``detector=None``: the sampling's MTCNN, built only on the first cache miss.
    ``cfg.video`` gives what changes speed only (batch size, prefetch, the cache's file identity) and
    ``cfg.video.threads`` (when set) limits torch's CPU threads meanwhile.
    Returns (features per row, per-video stats, seconds).
    """
    paths = paths or get_paths()
    v = cfg.video
    device = resolve_device(cfg.device) if device is None else device
    cache = FeatureCache(paths.results / "cache" / "video") if v.cache else None
    t0 = time.perf_counter()
    with torch_threads(v.threads), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*videos have no face.*")  # counted in the tables instead
        feats, stats = extract_dataset(
            manifest,
            extractor,
            sampling,
            detector=detector,
            cache=cache,
            batch_size=v.batch_size,
            prefetch=v.prefetch,
            device=device,
            file_id=v.file_id,
            progress=progress,
        )
    return feats, stats, time.perf_counter() - t0


def video_set(
    name: str,
    cfg: Profile,
    paths: Paths | None = None,
    extractor=None,
    detector=None,
    device: Any = None,
    progress: bool = True,
) -> VideoSet:
    """Load the profile's AFEW / VGAF data (real under FER_DATA_ROOT, else synthetic) and extract it."""
    from ..datasets.sources import load_for_profile

    col, labels, names = label_space(name)
    sampling = Sampling.from_config(cfg.video, name).replace(stride=1)  # other strides: subsampled
    paths = paths or get_paths()
    if extractor is None:
        extractor = make_extractor(
            find_checkpoint(paths, cfg.video.checkpoint, cfg.video.source), cfg, device
        )
    df, _, src = load_for_profile(name, cfg, paths, progress=progress)
    df = df[df["split"].isin([TRAIN_SPLIT, TEST_SPLIT]) & df[col].notna()].reset_index(drop=True)
    if not ((df["split"] == TRAIN_SPLIT).any() and (df["split"] == TEST_SPLIT).any()):
        raise ValueError(
            f"{name} at {src.root} needs labelled videos in both Train and Val; "
            f"found splits {df['split'].value_counts().to_dict()}"
        )
    feats, stats, secs = extract_features(df, sampling, extractor, cfg, paths, detector, device, progress)
    return VideoSet(
        name=name,
        dataset=name if src.real else f"synthetic_{name}",
        real=src.real,
        manifest=df,
        y=df[col].astype(int).to_numpy(),
        labels=labels,
        class_names=names,
        features=feats,
        stats=stats,
        sampling=sampling,
        extract_seconds=secs,
        score_names=list(getattr(extractor, "class_names", []) or []),
    )


def pooled_at(vs: VideoSet, pooling: str = PAPER_POOLING, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(X, has_face)`` of the set's videos subsampled at ``stride`` (:func:`fer_lib.video.pooled_matrix`)."""
    return pooled_matrix([subsample(vf, stride) for vf in vs.features], pooling)


# ---------------------------------------------------------------------------------- classification
def classify(
    vs: VideoSet,
    cfg: Profile,
    pooling: str = PAPER_POOLING,
    classifier: str | None = None,
    stride: int | None = None,
) -> dict[str, Any]:
    """Fit on the training videos, score the test (Val) videos: :func:`fer_lib.video.evaluate_videos`."""
    classifier = classifier or cfg.video.classifier
    stride = cfg.video.stride if stride is None else stride
    X, has_face = pooled_at(vs, pooling, stride)
    tr, te = vs.train, vs.test
    if not has_face[tr].any():
        raise ValueError(
            f"{vs.name}: no training video has a face at stride {stride} "
            f"(min face size {vs.min_face_size}); nothing to fit"
        )
    pipe = make_video_classifier(
        classifier, C=svm_C(vs.name, cfg), C_grid=cfg.video.C_grid, seed=cfg.seed, cv=cfg.video.cv_folds
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*")  # tiny smoke folds
        res = evaluate_videos(pipe, X[tr], vs.y[tr], X[te], vs.y[te], has_face[te], labels=vs.labels)
    res.update(pooling=pooling, classifier=classifier, stride=stride)
    return res


def score_baseline(vs: VideoSet, stride: int = 1) -> dict[str, Any] | None:
    """No training: mean of the per-frame expression probabilities, argmax over the dataset's classes.

    Only where every class of the dataset is an expression the checkpoint predicts (AFEW's 7 classes
    are the canonical 7; VGAF's group valence is not): None otherwise.
    """
    if vs.name != "afew" or not vs.score_names:
        return None
    try:
        canon = [L.canonical_expression(n) for n in vs.score_names]
        cols = [canon.index(L.EXPRESSIONS_8[c]) for c in vs.labels]
    except ValueError:
        return None
    y_te = vs.y[vs.test]
    pred = np.full(len(y_te), -1)
    test_feats = [vf for vf, t in zip(vs.features, vs.test) if t]
    for k, vf in enumerate(test_feats):
        vf = subsample(vf, stride)
        if not vf.has_face or vf.scores.ndim != 2 or vf.scores.shape[1] <= max(cols):
            continue
        # AFEW mode keeps one face per frame, so the face rows are the frames with a face
        pred[k] = vs.labels[int(np.argmax(vf.scores[:, cols].mean(0)))]
    has = pred >= 0
    correct = int((pred[has] == y_te[has]).sum())
    return {
        "accuracy_faces_only": correct / has.sum() if has.any() else float("nan"),
        "accuracy_complete": correct / len(y_te) if len(y_te) else float("nan"),
        "n_test": int(len(y_te)),
        "n_test_with_face": int(has.sum()),
        "n_test_no_face": int((~has).sum()),
    }


def accuracy_table(
    vs: VideoSet, cfg: Profile, poolings: Iterable[str] = POOLINGS, classifiers: Iterable[str] = CLASSIFIERS
) -> tuple[pd.DataFrame, dict]:
    """Accuracy (faces-only and complete) of every pooling x classifier; returns (table, results).

    ``results[(pooling, classifier)]`` is :func:`classify`'s dict (confusion matrix, predictions...).
    AFEW also gets the no-training baseline of :func:`score_baseline` (when its classes match).
    """
    rows, results = [], {}
    for pooling in poolings:
        for clf in classifiers:
            r = classify(vs, cfg, pooling, clf)
            results[(pooling, clf)] = r
            rows.append(
                {
                    "dataset": vs.dataset,
                    "pooling": pooling,
                    "classifier": clf,
                    "paper_protocol": pooling == PAPER_POOLING and clf == PAPER_CLASSIFIER,
                    "C": r["C"],
                    "accuracy": r["accuracy_faces_only"],
                    "accuracy_complete": r["accuracy_complete"],
                    "n_train": r["n_train"],
                    "n_train_no_face": r["n_train_no_face"],
                    "n_test": r["n_test"],
                    "n_test_no_face": r["n_test_no_face"],
                    "stride": r["stride"],
                }
            )
    base = score_baseline(vs, cfg.video.stride)
    if base is not None:
        rows.append(
            {
                "dataset": vs.dataset,
                "pooling": "frame scores (mean probability)",
                "classifier": "argmax (no training)",
                "paper_protocol": False,
                "C": np.nan,
                "accuracy": base["accuracy_faces_only"],
                "accuracy_complete": base["accuracy_complete"],
                "n_train": 0,
                "n_train_no_face": 0,
                "n_test": base["n_test"],
                "n_test_no_face": base["n_test_no_face"],
                "stride": cfg.video.stride,
            }
        )
    return pd.DataFrame(rows), results


def detection_table(sets: Sequence[VideoSet]) -> pd.DataFrame:
    """Per dataset and split: videos, face-less videos, frames, frames with a face, detection rate."""
    rows = []
    for vs in sets:
        for split, mask in ((TRAIN_SPLIT, vs.train), (TEST_SPLIT + " (Val)", vs.test)):
            st = vs.stats[mask]
            frames, with_face = int(st["n_frames"].sum()), int(st["n_frames_with_face"].sum())
            rows.append(
                {
                    "dataset": vs.dataset,
                    "split": split,
                    "min_face_size": vs.min_face_size,
                    "videos": int(len(st)),
                    "videos_no_face": int((~st["has_face"]).sum()),
                    "decode_errors": int((st["error"] != "").sum()),
                    "frames": frames,
                    "frames_with_face": with_face,
                    "face_detection_rate": with_face / frames if frames else float("nan"),
                    "faces": int(st["n_faces"].sum()),
                    "faces_per_frame_with_face": st["n_faces"].sum() / with_face
                    if with_face
                    else float("nan"),
                    "videos_from_cache": int(st["cached"].sum()),
                }
            )
    return pd.DataFrame(rows)


def detection_rate(vs: VideoSet) -> float:
    """Frames with a kept face / frames examined, over all videos of the set."""
    frames = int(vs.stats["n_frames"].sum())
    return int(vs.stats["n_frames_with_face"].sum()) / frames if frames else float("nan")


# ------------------------------------------------------------------------------------ stride study
def stride_study(
    vs: VideoSet,
    cfg: Profile,
    strides: Iterable[int] | None = None,
    pooling: str = PAPER_POOLING,
    classifier: str = PAPER_CLASSIFIER,
) -> pd.DataFrame:
    """Paper A's frame-stride study: accuracy when only every ``s``-th frame is used (train and test).

    Frames come from subsampling the cached stride-1 features (:func:`subsample`), which equals
    decoding at stride ``s`` (see the module docstring). ``published_percent``: paper A's EfficientNet-B0
    AFEW validation accuracy at that stride (``fer_lib.published.STRIDE_STUDY``), where it has one.
    """
    if vs.sampling.max_frames is not None:
        warnings.warn(
            "video.max_frames is set: subsampling a capped stride-1 extraction covers fewer frames "
            "than decoding at that stride would; the stride study assumes max_frames=None",
            stacklevel=2,
        )
    rows = []
    for s in strides or cfg.video.strides:
        r = classify(vs, cfg, pooling, classifier, stride=int(s))
        frames = [subsample(vf, int(s)).n_frames for vf in vs.features]
        rows.append(
            {
                "dataset": vs.dataset,
                "stride": int(s),
                "frames_per_video": float(np.mean(frames)),
                "accuracy": r["accuracy_faces_only"],
                "accuracy_complete": r["accuracy_complete"],
                "n_test_no_face": r["n_test_no_face"],
                "C": r["C"],
                "published_percent": STRIDE_STUDY.get(int(s), np.nan),
            }
        )
    return pd.DataFrame(rows)


def detect_every_study(
    vs: VideoSet,
    cfg: Profile,
    extractor,
    paths: Paths | None = None,
    every: Iterable[int] | None = None,
    detector=None,
    device: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Accuracy when MTCNN runs only on every k-th frame (boxes interpolated between), beside detection
    on every frame: the speed-up of ``video.detect_every`` against what it costs.

    Unlike a stride, this changes the crops, so every k is extracted again (through the feature cache;
    ``vs`` already holds ``cfg.video.detect_every``'s features). Per k: ``detected_fraction`` = frames
    MTCNN saw / frames examined, the paper-protocol accuracy (faces-only and complete), ``mean_iou`` of
    each frame's box with the box of detection on every frame, ``frames_face_changed`` = frames with a face
    in one and not the other, ``median_rel_diff_pooled`` = median over videos of |pooled - pooled(k=1)| /
    |pooled(k=1)|, and ``extract_seconds`` (``cached`` says when the features came from the cache).
    """
    paths = paths or get_paths()
    ks = sorted({1, *(int(k) for k in (every or cfg.video.detect_every_study))})
    if ks[0] < 1:
        raise ValueError(f"detect_every values must be >= 1, got {ks}")
    runs: dict[int, VideoSet] = {}
    for k in ks:
        if k == vs.sampling.detect_every:
            runs[k] = vs
            continue
        sampling = vs.sampling.replace(detect_every=k)
        feats, stats, secs = extract_features(
            vs.manifest, sampling, extractor, cfg, paths, detector, device, progress
        )
        runs[k] = dataclasses.replace(
            vs, features=feats, stats=stats, sampling=sampling, extract_seconds=secs
        )
    rows = []
    for k, run in runs.items():
        r = classify(run, cfg, PAPER_POOLING, PAPER_CLASSIFIER)
        rows.append(
            {
                "dataset": vs.dataset,
                "detect_every": k,
                "detected_fraction": detected_fraction(run.features, k),
                "accuracy": r["accuracy_faces_only"],
                "accuracy_complete": r["accuracy_complete"],
                "n_test_no_face": r["n_test_no_face"],
                **agreement(run.features, runs[1].features),
                "extract_seconds": round(run.extract_seconds, 1),
                "cached": bool(run.stats["cached"].all()),
            }
        )
    return pd.DataFrame(rows)


def plot_stride_study(table: pd.DataFrame, title: str = ""):
    """Reproduced accuracy (%) against stride beside the published curve."""
    from .. import plots

    ys = {
        f"reproduced ({table['dataset'].iloc[0]})": (table["accuracy"] * 100).tolist(),
        PUBLISHED_STRIDE_LABEL: table["published_percent"].tolist(),
    }
    return plots.plot_curve(
        table["stride"].tolist(),
        ys,
        xlabel="frame stride",
        ylabel="accuracy (%)",
        title=title or "accuracy vs frame stride",
    )


def plot_confusion(result: dict[str, Any], class_names: Sequence[str], title: str = ""):
    """Row-normalised confusion matrix (faces-only test videos) of one classification result."""
    from .. import plots

    return plots.plot_confusion(result["confusion_matrix"], list(class_names), normalize=True, title=title)


# ---------------------------------------------------------------------------------------- metrics
def headline(table: pd.DataFrame) -> pd.Series:
    """The paper-protocol row (STAT pooling + LinearSVC) of an accuracy table."""
    row = table[table["paper_protocol"]]
    if row.empty:
        raise ValueError(
            "the accuracy table has no paper-protocol row (pooling 'stat', classifier 'linear_svc')"
        )
    return row.iloc[0]


def metrics_for(
    vs: VideoSet,
    table: pd.DataFrame,
    strides: pd.DataFrame | None = None,
    detect_every: pd.DataFrame | None = None,
) -> dict[str, float]:
    """Metric name -> value (fractions) as recorded in metrics.csv; names match fer_lib.published."""
    h = headline(table)
    out = {
        "accuracy": float(h["accuracy"]),
        "accuracy_complete": float(h["accuracy_complete"]),
        "face_detection_rate": float(detection_rate(vs)),
    }
    if strides is not None:
        out.update({f"accuracy_stride{int(r.stride)}": float(r.accuracy) for r in strides.itertuples()})
    if detect_every is not None:
        out.update(
            {
                f"accuracy_detect_every{int(r.detect_every)}": float(r.accuracy)
                for r in detect_every.itertuples()
            }
        )
    return out


def record(
    vs: VideoSet,
    table: pd.DataFrame,
    cfg: Profile,
    model: str,
    strides: pd.DataFrame | None = None,
    seconds: float | None = None,
    path=None,
    detect_every: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Write the set's metrics (stage 'video', split 'val') into metrics.csv; returns the rows."""
    from .. import reporting

    return reporting.record_metrics(
        "video",
        vs.dataset,
        METRIC_SPLIT,
        model,
        metrics_for(vs, table, strides, detect_every),
        profile=cfg.name,
        seed=cfg.seed,
        train_seconds=seconds,
        path=path,
    )
