"""Video-level classifiers on pooled descriptors (scikit-learn Pipelines) and their evaluation.

Paper A: L2-normalise the pooled descriptor, then LinearSVC (AFEW: C = 1.1), an RBF SVC or a random
forest. When ``C`` is not given it is chosen by stratified cross-validation on the training videos
only (a ``GridSearchCV`` step inside the pipeline), never on the videos that are reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import BaseCrossValidator, GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer
from sklearn.svm import SVC, LinearSVC

CLASSIFIERS = ("linear_svc", "rbf_svc", "random_forest")
DEFAULT_C_GRID = (0.1, 0.3, 1.1, 3.0, 10.0)


class AdaptiveStratifiedKFold(BaseCrossValidator):
    """Stratified k-fold with ``k = min(n_splits, smallest class count)`` (at least 2), decided from
    ``y`` at split time, so small training sets (smoke profile) still cross-validate."""

    def __init__(self, n_splits: int = 5, seed: int = 0):
        self.n_splits = n_splits
        self.seed = seed

    def _k(self, y) -> int:
        if y is None:
            return self.n_splits
        _, counts = np.unique(np.asarray(y), return_counts=True)
        return int(max(2, min(self.n_splits, counts.min())))

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self._k(y)

    def split(self, X, y=None, groups=None):
        yield from StratifiedKFold(self._k(y), shuffle=True, random_state=self.seed).split(X, y)

    def _iter_test_indices(self, X=None, y=None, groups=None):  # pragma: no cover - split() overrides
        raise NotImplementedError


def _base(kind: str, C: float, seed: int, n_estimators: int) -> BaseEstimator:
    if kind == "linear_svc":
        return LinearSVC(C=C, random_state=seed, max_iter=20000)
    if kind == "rbf_svc":
        return SVC(C=C, kernel="rbf", gamma="scale", random_state=seed)
    if kind == "random_forest":
        return RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1)
    raise ValueError(f"classifier kind must be one of {CLASSIFIERS}, got {kind!r}")


def make_video_classifier(
    kind: str = "linear_svc",
    C: float | None = None,
    C_grid: Sequence[float] = DEFAULT_C_GRID,
    seed: int = 0,
    cv: int = 5,
    n_estimators: int = 300,
) -> Pipeline:
    """``Normalizer(l2)`` + the classifier. With ``C=None`` (SVMs) the last step is a ``GridSearchCV``
    over ``C_grid`` with stratified ``cv``-fold CV on the data given to ``fit`` (the training videos);
    the chosen value is ``pipe[-1].best_params_["C"]``. Random forests take no ``C``."""
    if kind == "random_forest" or C is not None:
        clf = _base(kind, 1.0 if C is None else float(C), seed, n_estimators)
    else:
        if not C_grid:
            raise ValueError("C_grid is empty; give C or at least one candidate value")
        clf = GridSearchCV(
            _base(kind, 1.0, seed, n_estimators),
            {"C": [float(c) for c in C_grid]},
            cv=AdaptiveStratifiedKFold(cv, seed),
            scoring="accuracy",
            refit=True,
        )
    return Pipeline([("l2", Normalizer(norm="l2")), ("clf", clf)])


def chosen_C(pipeline: Pipeline) -> float | None:
    """The ``C`` a fitted pipeline uses (cross-validated or fixed); None for a random forest."""
    clf = pipeline[-1]
    if isinstance(clf, GridSearchCV):
        return float(clf.best_params_["C"])
    return float(clf.C) if hasattr(clf, "C") else None


def evaluate_videos(
    pipeline: Pipeline,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test_all: np.ndarray,
    has_face_mask: np.ndarray,
    labels: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Fit on the training videos, predict the test videos, and score them two ways.

    ``X_test`` has a row per test video (rows of face-less videos are ignored, NaN is fine) or only
    the rows of the videos with a face; ``y_test_all`` and ``has_face_mask`` cover every test video.
    Training rows with NaN (videos without a face) are dropped and counted. Returns:
    ``accuracy_faces_only`` (over the test videos with a face), ``accuracy_complete`` (face-less test
    videos count as wrong), counts, ``confusion_matrix`` (faces-only, rows = true, in ``labels``
    order), ``predictions`` (per test video, -1 / None where no face), ``C`` and the fitted ``pipeline``.
    """
    X_train, y_train = np.asarray(X_train, np.float64), np.asarray(y_train)
    y_all, mask = np.asarray(y_test_all), np.asarray(has_face_mask, bool)
    if len(y_all) != len(mask):
        raise ValueError(f"y_test_all has {len(y_all)} videos but has_face_mask {len(mask)}")
    X_test = np.asarray(X_test, np.float64)
    if len(X_test) == len(y_all):
        X_test = X_test[mask]
    elif len(X_test) != int(mask.sum()):
        raise ValueError(
            f"X_test has {len(X_test)} rows; expected one per test video ({len(y_all)}) or one "
            f"per test video with a face ({int(mask.sum())})"
        )
    if np.isnan(X_test).any():
        raise ValueError("X_test has NaN rows for videos marked as having a face; check has_face_mask")
    keep = ~np.isnan(X_train).any(axis=1)
    if not keep.any():
        raise ValueError("no training video has a face; nothing to fit")
    pipeline.fit(X_train[keep], y_train[keep])
    labels = list(labels) if labels is not None else sorted(set(y_train[keep].tolist()) | set(y_all.tolist()))
    pred = pipeline.predict(X_test) if len(X_test) else np.zeros(0, y_all.dtype)
    y_face = y_all[mask]
    correct = int((pred == y_face).sum())
    n_all, n_face = len(y_all), int(mask.sum())
    from sklearn.metrics import confusion_matrix

    pred_all = np.full(n_all, -1 if np.issubdtype(y_all.dtype, np.number) else None, dtype=object)
    pred_all[mask] = pred
    return {
        "accuracy_faces_only": correct / n_face if n_face else float("nan"),
        "accuracy_complete": correct / n_all if n_all else float("nan"),
        "n_train": int(keep.sum()),
        "n_train_no_face": int((~keep).sum()),
        "n_test": n_all,
        "n_test_with_face": n_face,
        "n_test_no_face": n_all - n_face,
        "confusion_matrix": confusion_matrix(y_face, pred, labels=labels)
        if n_face
        else np.zeros((len(labels), len(labels)), np.int64),
        "labels": labels,
        "predictions": pred_all,
        "C": chosen_C(pipeline),
        "pipeline": pipeline,
    }
