"""Video emotion recognition (paper A): sample, decode, detect, extract, pool, classify.

    s        = Sampling.from_config(cfg.video, "afew")              # which frames and faces (one value)
    vf       = extract_video_features(path, detector, extractor, s) # per-face features of one video
    feats, stats = extract_dataset(manifest, extractor, s, cache=FeatureCache(root))
    X, has_face  = pooled_matrix(feats)                             # paper A's STAT pooling
    result   = evaluate_videos(make_video_classifier(), X_tr, y_tr, X_te, y_te, has_face_te)

Modules: :mod:`.sampling` (the Sampling value and the cache key), :mod:`.decode` (PyAV),
:mod:`.features` (detector/extractor protocols, batched and overlapped extraction of one video),
:mod:`.cache` (per-video feature cache, dataset loop), :mod:`.pooling` (video descriptors),
:mod:`.study` (subsampling and comparing samplings), :mod:`.classify` (sklearn pipelines),
:mod:`.fakes` (stand-in detector and extractor).
"""

from .cache import FeatureCache, extract_dataset
from .classify import (
    CLASSIFIERS,
    AdaptiveStratifiedKFold,
    chosen_C,
    evaluate_videos,
    make_video_classifier,
)
from .decode import VideoDecodeError, VideoInfo, iter_frames, video_info
from .features import (
    FaceDetectorLike,
    FeatureExtractor,
    TorchFeatureExtractor,
    VideoFeatures,
    extract_video_features,
    faces_in_batch,
    prefetch_batches,
)
from .pooling import POOLINGS, pool, pool_afew, pool_vgaf, pooled_matrix
from .sampling import MODES, SELECTION, SELECTIONS, Sampling, default_detector, file_identity
from .study import agreement, frame_ious, keyframes, subsample

__all__ = [
    "CLASSIFIERS",
    "MODES",
    "POOLINGS",
    "SELECTION",
    "SELECTIONS",
    "AdaptiveStratifiedKFold",
    "FaceDetectorLike",
    "FeatureCache",
    "FeatureExtractor",
    "Sampling",
    "TorchFeatureExtractor",
    "VideoDecodeError",
    "VideoFeatures",
    "VideoInfo",
    "agreement",
    "chosen_C",
    "default_detector",
    "evaluate_videos",
    "extract_dataset",
    "extract_video_features",
    "faces_in_batch",
    "file_identity",
    "frame_ious",
    "iter_frames",
    "keyframes",
    "make_video_classifier",
    "pool",
    "pool_afew",
    "pool_vgaf",
    "pooled_matrix",
    "prefetch_batches",
    "subsample",
    "video_info",
]
