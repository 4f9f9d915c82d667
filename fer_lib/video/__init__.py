"""Video emotion recognition (paper A): decode, sample, detect, extract, pool, classify.

    frames   = iter_frames(path, stride=1)                          # streaming PyAV decode
    vf       = extract_video_features(path, detector, extractor)    # per-face features of one video
    X, has_face, stats = extract_dataset(manifest, extractor, cache=FeatureCache(root))
    result   = evaluate_videos(make_video_classifier(), X_tr, y_tr, X_te, y_te, has_face_te)

Modules: :mod:`.decode` (PyAV), :mod:`.features` (detector/extractor protocols, batched and
overlapped extraction), :mod:`.pooling` (STAT pooling), :mod:`.classify` (sklearn pipelines),
:mod:`.cache` (per-video feature cache, dataset loop).
"""

from .cache import FeatureCache, cache_key, extract_dataset, file_identity
from .classify import (
    CLASSIFIERS,
    AdaptiveStratifiedKFold,
    chosen_C,
    evaluate_videos,
    make_video_classifier,
)
from .decode import VideoDecodeError, VideoInfo, iter_frames, video_info
from .features import (
    DEFAULT_MIN_FACE,
    MODES,
    SELECTION,
    FaceDetectorLike,
    FeatureExtractor,
    TorchFeatureExtractor,
    VideoFeatures,
    default_detector,
    extract_video_features,
    faces_in_batch,
    prefetch_batches,
)
from .pooling import pool_afew, pool_vgaf

__all__ = [
    "CLASSIFIERS",
    "DEFAULT_MIN_FACE",
    "MODES",
    "AdaptiveStratifiedKFold",
    "FaceDetectorLike",
    "FeatureCache",
    "FeatureExtractor",
    "TorchFeatureExtractor",
    "VideoDecodeError",
    "VideoFeatures",
    "VideoInfo",
    "cache_key",
    "chosen_C",
    "default_detector",
    "evaluate_videos",
    "extract_dataset",
    "extract_video_features",
    "file_identity",
    "iter_frames",
    "make_video_classifier",
    "pool_afew",
    "pool_vgaf",
    "prefetch_batches",
    "SELECTION",
    "faces_in_batch",
    "video_info",
]
