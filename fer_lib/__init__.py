"""fer_lib: lightweight multi-task face analysis (papers A and B) behind a series of notebooks."""

import os

# Before torch loads OpenMP: spinning worker threads made 2-thread training 3-8x slower on a shared
# 2-core machine (bench/bench_train.py); an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import config, labels, reporting
from .config import get_paths, get_profile

__version__ = "0.1.0"
__all__ = [
    "config",
    "labels",
    "reporting",
    "get_profile",
    "get_paths",
    "Recognizer",
    "FacePrediction",
    "default_checkpoint",
    "draw_overlay",
    "predict_path",
    "__version__",
]

_LAZY = dict.fromkeys(
    ("Recognizer", "FacePrediction", "default_checkpoint", "draw_overlay", "predict_path"), "serving"
)


def __getattr__(name: str):
    """``fer_lib.Recognizer`` imports torch / timm / facenet only when first used."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
