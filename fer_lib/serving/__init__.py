"""Serving: predictions from a trained checkpoint or an exported ONNX file, one job per module.

* :mod:`.recognizer`: :class:`Recognizer` (faces -> expressions, valence-arousal, attributes) and
  :class:`FacePrediction`;
* :mod:`.backends`: the torch (BatchNorm folded) and onnxruntime backends a Recognizer runs on;
* :mod:`.default_model`: which checkpoint is served when none is given (the run's, else the published);
* :mod:`.predict`: ``python -m fer_lib predict`` over images, videos and folders (:func:`predict_path`);
* :mod:`.overlay`: boxes and captions drawn on images (:func:`draw_overlay`);
* :mod:`.half_precision`: the float16 copies a published run commits.

Serving never imports the trainer; ONNX files come from :mod:`fer_lib.export`.
"""

from .default_model import NoCheckpointError, default_checkpoint, published_models
from .overlay import draw_overlay
from .predict import PredictSummary, predict_path
from .recognizer import CPU_BATCH, FacePrediction, Recognizer

__all__ = [
    "CPU_BATCH",
    "FacePrediction",
    "NoCheckpointError",
    "PredictSummary",
    "Recognizer",
    "default_checkpoint",
    "draw_overlay",
    "predict_path",
    "published_models",
]
