"""Canonical label orders, declared once, with explicit mappings to every dataset and checkpoint.

The canonical expression order is AffectNet's numeric order (0 Neutral ... 7 Contempt). The 7-class
task is its prefix (Contempt is last), so an 8-class model is evaluated on 7 classes by dropping the
last column, and paper B's 7 expression nodes are ``EXPRESSIONS_7`` in the same order.
Every other order (FER2013, AFEW folders, the alphabetical HSEmotion checkpoints) maps onto it
through a dict of *names*, never through positions copied by hand. Which head uses which order (and
the orders stored in checkpoints) is the task registry's business: :mod:`fer_lib.tasks`.
"""

from __future__ import annotations

import numpy as np

EXPRESSIONS_8: tuple[str, ...] = (
    "Neutral",
    "Happy",
    "Sad",
    "Surprise",
    "Fear",
    "Disgust",
    "Anger",
    "Contempt",
)
EXPRESSIONS_7: tuple[str, ...] = EXPRESSIONS_8[:7]

# UTKFace race field order (0..4) and gender field (0 male, 1 female).
ETHNICITIES: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
GENDERS: tuple[str, ...] = ("Male", "Female")
# p(male) from which paper A calls a face male; a stage may choose another on validation data.
MALE_THRESHOLD = 0.6
# VGAF group-level valence classes.
VGAF_CLASSES: tuple[str, ...] = ("Positive", "Neutral", "Negative")
# Age head of paper A: 100 one-year bins, ages 0..99.
AGE_BINS = 100

# Dataset / checkpoint specific names -> canonical expression name.
_SYNONYMS = {
    "neutral": "Neutral",
    "happy": "Happy",
    "happiness": "Happy",
    "sad": "Sad",
    "sadness": "Sad",
    "surprise": "Surprise",
    "surprised": "Surprise",
    "fear": "Fear",
    "afraid": "Fear",
    "disgust": "Disgust",
    "disgusted": "Disgust",
    "anger": "Anger",
    "angry": "Anger",
    "contempt": "Contempt",
}

# Orders of foreign label spaces, as they are distributed.
AFFECTNET_ORDER = EXPRESSIONS_8  # 8 None, 9 Uncertain, 10 No-Face are excluded
FER2013_ORDER = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
AFEW_ORDER = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
# Aff-Wild2 EXPR_Set integer order (ABAW 2020/2021).
AFFWILD2_ORDER = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
HSEMOTION_ORDER_8 = ("Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise")
HSEMOTION_ORDER_7 = tuple(n for n in HSEMOTION_ORDER_8 if n != "Contempt")
# CK+48 (the common 48x48 release of CK+): class folder -> canonical name. No Neutral folder; Contempt is
# kept in manifests, and the cross-dataset protocol does not score it (FER2013 has no such class).
CKPLUS_FOLDERS = {
    "anger": "Anger",
    "contempt": "Contempt",
    "disgust": "Disgust",
    "fear": "Fear",
    "happy": "Happy",
    "sadness": "Sad",
    "surprise": "Surprise",
}


def canonical_expression(name: str) -> str:
    """Map a dataset's expression name (any case) to the canonical name; ValueError if unknown."""
    key = str(name).strip().lower()
    if key not in _SYNONYMS:
        raise ValueError(f"unknown expression name {name!r}; expected one of {sorted(set(_SYNONYMS))}")
    return _SYNONYMS[key]


def expression_index(name: str, n_classes: int = 8) -> int:
    """Canonical index of an expression name in the 8- or 7-class order."""
    order = EXPRESSIONS_8 if n_classes == 8 else EXPRESSIONS_7
    canon = canonical_expression(name)
    if canon not in order:
        raise ValueError(f"{canon} is not part of the {n_classes}-class task")
    return order.index(canon)


def mapping_to_canonical(foreign_order: tuple[str, ...] | list[str], n_classes: int = 8) -> np.ndarray:
    """Index array ``m`` with ``m[i]`` = canonical index of the foreign label ``i``."""
    return np.array([expression_index(n, n_classes) for n in foreign_order], dtype=np.int64)


def reorder_columns(scores: np.ndarray, foreign_order, n_classes: int | None = None) -> np.ndarray:
    """Reorder the last axis of ``scores`` (given in ``foreign_order``) into canonical order."""
    n = n_classes or len(foreign_order)
    m = mapping_to_canonical(foreign_order, n)
    out = np.empty_like(scores)
    out[..., m] = scores
    return out
