"""Evaluation metrics: classification, age, valence/arousal (CCC) and the ABAW challenge scores.

Everything here works on 1-D label / prediction arrays (numpy or anything ``np.asarray`` accepts),
except :func:`ccc_loss`, which is the differentiable torch version used as a training loss.

Conventions:

* class metrics take integer labels; ``labels=None`` means "the classes seen in y_true or y_pred"
  (scikit-learn's rule); pass ``labels=range(n)`` to score a fixed label space, where a class that
  never occurs gets an F1 / recall of 0;
* CCC uses population statistics (ddof=0) over the whole set, per dimension, as the ABAW evaluation
  code does: ``2 cov(x, y) / (var x + var y + (mean x - mean y)^2)``. It is NaN when both vectors
  are constant (0 / 0).

The vocabulary of metric names (what ``results/metrics.csv``, the published table and the trainer's
``select_metric`` may say) is declared once at the end of this module: :data:`METRICS` and
:func:`metric_spec` give each name its direction (higher or lower is better) and unit. A head's names
come from its quantities in the task registry (:mod:`fer_lib.tasks`); :data:`SCORES` says how each
head quantity is computed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from . import tasks as task_registry
from .labels import EXPRESSIONS_8

__all__ = [
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "f1_per_class",
    "per_class_recall",
    "confusion_matrix",
    "age_mae",
    "cumulative_score",
    "share_interval",
    "ccc",
    "ccc_loss",
    "abaw_expr_score_2020",
    "abaw_expr_score",
    "abaw_va_score",
    "MetricSpec",
    "METRICS",
    "Score",
    "SCORES",
    "metric_spec",
    "recall_name",
    "score",
]


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}; they must match one to one")
    if t.size == 0:
        raise ValueError("cannot score an empty set of predictions")
    return t, p


def _labels(t: np.ndarray, p: np.ndarray, labels: Sequence[int] | None) -> np.ndarray:
    if labels is None:
        return np.union1d(np.unique(t), np.unique(p))
    return np.asarray(list(labels))


def confusion_matrix(
    y_true, y_pred, labels: Sequence[int] | None = None, normalize: str | None = None
) -> np.ndarray:
    """Counts ``C[i, j]`` of samples with true class ``labels[i]`` predicted as ``labels[j]``.

    ``normalize``: None (counts), ``"true"`` (rows sum to 1), ``"pred"`` (columns) or ``"all"``.
    Samples whose true or predicted label is outside ``labels`` are not counted.
    """
    t, p = _pair(y_true, y_pred)
    lab = _labels(t, p, labels)
    index = {v: i for i, v in enumerate(lab.tolist())}
    ti = np.array([index.get(v, -1) for v in t.tolist()])
    pi = np.array([index.get(v, -1) for v in p.tolist()])
    keep = (ti >= 0) & (pi >= 0)
    k = len(lab)
    cm = np.bincount(ti[keep] * k + pi[keep], minlength=k * k).reshape(k, k).astype(np.int64)
    if normalize is None:
        return cm
    with np.errstate(invalid="ignore", divide="ignore"):
        if normalize == "true":
            out = cm / cm.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            out = cm / cm.sum(axis=0, keepdims=True)
        elif normalize == "all":
            out = cm / cm.sum()
        else:
            raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")
    return np.nan_to_num(out)


def accuracy(y_true, y_pred) -> float:
    """Fraction of exact matches."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def per_class_recall(y_true, y_pred, labels: Sequence[int] | None = None) -> np.ndarray:
    """Recall of each class in ``labels`` order (0 for a class with no true sample)."""
    cm = confusion_matrix(y_true, y_pred, labels)
    support = cm.sum(axis=1)
    return np.divide(np.diag(cm), support, out=np.zeros(len(cm)), where=support > 0)


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's definition)."""
    t, p = _pair(y_true, y_pred)
    present = np.unique(t)
    return float(np.mean(per_class_recall(t, p, present)))


def f1_per_class(y_true, y_pred, labels: Sequence[int] | None = None) -> np.ndarray:
    """F1 of each class in ``labels`` order (0 where precision and recall are both undefined)."""
    cm = confusion_matrix(y_true, y_pred, labels).astype(float)
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # (tp + fp) + (tp + fn)
    return np.divide(2 * tp, denom, out=np.zeros(len(cm)), where=denom > 0)


def macro_f1(y_true, y_pred, labels: Sequence[int] | None = None) -> float:
    """Unweighted mean of the per-class F1 scores."""
    return float(np.mean(f1_per_class(y_true, y_pred, labels)))


def age_mae(age_true, age_pred) -> float:
    """Mean absolute error in years."""
    t, p = _pair(age_true, age_pred)
    return float(np.mean(np.abs(t.astype(float) - p.astype(float))))


def cumulative_score(age_true, age_pred, level: float = 5.0) -> float:
    """CS@L: fraction of samples with an absolute age error of at most ``level`` years."""
    t, p = _pair(age_true, age_pred)
    return float(np.mean(np.abs(t.astype(float) - p.astype(float)) <= level))


def share_interval(
    hits, groups, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the share of ``hits`` (0/1 per sample) when the samples come in
    ``groups`` (e.g. the people of a face collection, several photos each): whole groups are drawn with
    replacement, so that a few people with many photos widen the interval as they should. One group per
    sample gives the ordinary bootstrap."""
    h, g = _pair(hits, groups)
    _, index = np.unique(g, return_inverse=True)
    hit_sum = np.bincount(index, weights=h.astype(float))
    size = np.bincount(index).astype(float)
    draw = np.random.default_rng(seed).integers(0, size.size, (n_boot, size.size))
    shares = hit_sum[draw].sum(1) / size[draw].sum(1)
    alpha = (1 - level) / 2
    low, high = np.quantile(shares, [alpha, 1 - alpha])
    return float(low), float(high)


def ccc(y_true, y_pred) -> float | np.ndarray:
    """Concordance correlation coefficient over the whole set.

    1-D inputs give a float; 2-D inputs ``[N, D]`` give one CCC per column (e.g. valence, arousal).
    """
    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if t.shape != p.shape:
        raise ValueError(f"ccc: y_true has shape {t.shape} but y_pred has {p.shape}")
    if t.shape[0] == 0:
        raise ValueError("ccc: cannot score an empty set")
    mt, mp = t.mean(axis=0), p.mean(axis=0)
    vt, vp = t.var(axis=0), p.var(axis=0)
    cov = ((t - mt) * (p - mp)).mean(axis=0)
    denom = vt + vp + (mt - mp) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 2 * cov / denom
    return float(out) if np.ndim(out) == 0 else out


def ccc_loss(pred, target, mask=None):
    """Differentiable ``mean_d (1 - CCC_d)`` over the batch (torch tensors ``[B]`` or ``[B, D]``).

    ``mask`` (bool, same shape) selects the samples that carry a label, per dimension; a dimension
    with fewer than two labelled samples contributes an exact zero (with zero gradient), so a batch
    without valence/arousal labels leaves the head untouched. For ``D = 2`` (valence, arousal) this is
    paper A's ``(1 - CCC_v) / 2 + (1 - CCC_a) / 2``.
    """
    import torch

    if pred.shape != target.shape:
        raise ValueError(f"ccc_loss: pred has shape {tuple(pred.shape)} but target has {tuple(target.shape)}")
    if pred.dim() == 1:
        pred, target = pred[:, None], target[:, None]
        mask = None if mask is None else mask[:, None]
    pred, target = pred.float(), target.float()
    m = torch.ones_like(pred) if mask is None else mask.to(pred.dtype)
    n = m.sum(dim=0)
    safe_n = n.clamp(min=1.0)
    target = torch.where(m > 0, target, torch.zeros_like(target))
    mp = (pred * m).sum(0) / safe_n
    mt = (target * m).sum(0) / safe_n
    dp, dt = (pred - mp) * m, (target - mt) * m
    vp, vt = (dp**2).sum(0) / safe_n, (dt**2).sum(0) / safe_n
    cov = (dp * dt).sum(0) / safe_n
    value = 2 * cov / (vp + vt + (mp - mt) ** 2 + 1e-8)
    valid = n >= 2
    per_dim = torch.where(valid, 1.0 - value, torch.zeros_like(value))
    return per_dim.mean()


def abaw_expr_score_2020(y_true, y_pred, labels: Sequence[int] | None = None) -> float:
    """ABAW 2020 expression score: ``0.67 * macro-F1 + 0.33 * accuracy``."""
    return 0.67 * macro_f1(y_true, y_pred, labels) + 0.33 * accuracy(y_true, y_pred)


def abaw_expr_score(y_true, y_pred, labels: Sequence[int] | None = None) -> float:
    """Later ABAW expression score: the mean F1 over the classes."""
    return macro_f1(y_true, y_pred, labels)


def abaw_va_score(va_true, va_pred) -> float:
    """ABAW valence-arousal score: mean of CCC_valence and CCC_arousal (arrays ``[N, 2]``)."""
    values = np.atleast_1d(ccc(va_true, va_pred))
    return float(np.mean(values))


# =================================================================================== metric vocabulary
@dataclass(frozen=True)
class MetricSpec:
    """What a metric name means: which way is better, its unit and one line of description."""

    direction: str  # "max" (higher is better) or "min"
    unit: str  # "fraction" (stored 0..1, published in %), "years", "ms", "MB" or "" (a score)
    description: str


def recall_name(expression: str) -> str:
    """Metric name of one expression class's recall (canonical name): ``recall_anger``, ``recall_sad``."""
    return f"recall_{expression.lower()}"


# Each quantity once; names are `<task>_<quantity>` for one head of a multi-task model and
# `<quantity>[_<variant>]` for a dataset's own label (e.g. FER2013's expression, VGGFace2's identity).
QUANTITIES = {
    "accuracy": MetricSpec("max", "fraction", "share of exact matches"),
    "macro_f1": MetricSpec("max", "fraction", "unweighted mean of the per-class F1"),
    "mae": MetricSpec("min", "years", "mean absolute error"),
    "cs5": MetricSpec("max", "fraction", "share of absolute errors of at most 5 years"),
    "ccc": MetricSpec("max", "", "concordance correlation coefficient"),
    "recall": MetricSpec("max", "fraction", "share of one class's faces predicted as that class"),
}


@dataclass(frozen=True)
class Score:
    """How a head quantity is computed from the labelled samples' (labels, predictions)."""

    fn: Callable[..., float]
    min_samples: int = 1  # fewer labelled samples: not scored (CCC of one sample is 0 / 0)


SCORES = {
    "accuracy": Score(accuracy),
    "macro_f1": Score(macro_f1),
    "mae": Score(age_mae),
    "cs5": Score(partial(cumulative_score, level=5)),
    "ccc": Score(ccc, min_samples=2),
}


def score(quantity: str, y_true, y_pred) -> float:
    """A head quantity (:data:`SCORES`) of the labelled samples, e.g. ``score("mae", age, age_pred)``."""
    return float(SCORES[quantity].fn(y_true, y_pred))


def _head_quantities() -> dict[str, tuple[str, ...]]:
    """``{label column or head: quantities}`` of the registry's heads (names ``<that>_<quantity>``)."""
    out = {}
    for spec in task_registry.all_tasks():
        unknown = set(spec.quantities) - set(SCORES)
        if unknown:
            raise ValueError(
                f"task {spec.key!r} is scored with {sorted(unknown)}; head quantities are {', '.join(SCORES)}"
            )
        for key in spec.label_keys + ((spec.key,) if len(spec.label_keys) > 1 else ()):
            out[key] = spec.quantities
    return out


# The quantities each head is scored with (the trainer's validation metrics and the stages' records),
# by label column, and by head for a head of several columns (va: the mean).
HEAD_QUANTITIES = _head_quantities()
# Dataset-level variants of a quantity ("" = the plain quantity).
VARIANTS = {
    "accuracy": {
        "": "",
        "8cls": "over the 8 expressions",
        "7cls": "over 7 expressions (Contempt dropped)",
        "complete": "over every test video, those without a face counted as wrong",
        "predict": "through predict (detection on the enlarged image, the model's crop), no face = wrong",
        "predict_found": "through predict, over the images where a face was found",
        "crops_found": "the same found faces fed as the dataset's crops (predict_found's reference)",
    },
    "macro_f1": {"": "", "8cls": "over the 8 expressions", "7cls": "over 7 expressions (Contempt dropped)"},
    # per expression class (recall_name), e.g. the per-class recall of a cross-dataset check (CK+48)
    "recall": {recall_name(n).removeprefix("recall_"): f"({n})" for n in EXPRESSIONS_8},
}
_OTHERS = {
    "loss": MetricSpec("min", "", "the training objective on the validation set"),
    "face_detection_rate": MetricSpec("max", "fraction", "share of video frames with a face kept"),
    "expression_abaw2020": MetricSpec(
        "max", "", "ABAW 2020 expression score: 0.67 x macro F1 + 0.33 x accuracy"
    ),
    "face_found": MetricSpec(
        "max", "fraction", "share of test images in which predict's detector found a face"
    ),
    "race_min_recall": MetricSpec(
        "max", "fraction", "recall of the worst-recognised ethnicity (a balanced test's weakest group)"
    ),
    "gender_min_recall": MetricSpec("max", "fraction", "recall of the worst-recognised gender"),
    "latency_ms": MetricSpec("min", "ms", "inference time of one face"),
    "size_mb": MetricSpec("min", "MB", "size of the model file"),
}
# Notebook 04's studies record one accuracy per setting N: `accuracy_stride<N>` (every N-th frame used),
# `accuracy_detect_every<N>` (every frame used, MTCNN on every N-th).
_STUDIES = {
    "stride": "video accuracy using every {}-th frame",
    "detect_every": "video accuracy with faces detected on every {}-th frame",
}
_STUDY = re.compile(rf"accuracy_({'|'.join(_STUDIES)})([1-9][0-9]*)")


def _head_metrics(head_quantities: dict[str, tuple[str, ...]]) -> dict[str, MetricSpec]:
    out = {}
    for task, quantities in head_quantities.items():
        for q in quantities:
            spec = QUANTITIES[q]
            out[f"{task}_{q}"] = MetricSpec(spec.direction, spec.unit, f"{task}: {spec.description}")
    return out


def _declare() -> dict[str, MetricSpec]:
    out = dict(_OTHERS)
    out.update(_head_metrics(HEAD_QUANTITIES))
    for q, variants in VARIANTS.items():
        spec = QUANTITIES[q]
        for v, what in variants.items():
            out[f"{q}_{v}" if v else q] = MetricSpec(
                spec.direction, spec.unit, f"{spec.description} {what}".strip()
            )
    return out


METRICS: dict[str, MetricSpec] = _declare()


def metric_spec(name: str) -> MetricSpec:
    """The declared meaning of a metric name; a ValueError listing the known names for any other."""
    if name in METRICS:
        return METRICS[name]
    heads = _head_metrics(_head_quantities())  # a head registered after this module was imported
    if name in heads:
        return heads[name]
    m = _STUDY.fullmatch(name)
    if m:
        spec = QUANTITIES["accuracy"]
        return MetricSpec(spec.direction, spec.unit, _STUDIES[m.group(1)].format(m.group(2)))
    known = ", ".join([*sorted(METRICS), *(f"accuracy_{k}<N>" for k in _STUDIES)])
    raise ValueError(
        f"unknown metric name {name!r}; the known metric names (fer_lib.metrics.METRICS) are: {known}"
    )
