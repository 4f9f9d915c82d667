"""Masked multi-task loss and paper A's class weights: every sample trains only the heads it has labels
for; a batch without a task's label gives that head an exact zero loss and gradient.

Each head's loss is the entry of :data:`LOSSES` its registry spec names (``TaskSpec.loss``,
:mod:`fer_lib.tasks`); which heads have class counts follows from the spec too."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .. import metrics as M
from ..progress import tqdm
from ..tasks import AGE_SCALE, TaskSpec, all_tasks, get_task, label_keys

#: The registry's label columns and argmax-classified heads when this module was imported (gender is
#: a classification too: TaskSpec.n_classes says which heads have classes).
LABEL_KEYS = label_keys()
CLASS_TASKS = tuple(s.key for s in all_tasks() if s.decode == "argmax")


# ===================================================================================== class weights
def class_weights(counts: Sequence[float]) -> np.ndarray:
    """Paper A's class weights: ``1 / count`` normalised so the largest class has weight 1.0.

    ``[100, 50, 10] -> [1, 2, 10]``. A class with no training sample gets weight 0 (it never occurs
    in the loss).
    """
    c = np.asarray(counts, dtype=float)
    if c.ndim != 1 or (c < 0).any():
        raise ValueError(f"class counts must be a 1-D array of non-negative numbers, got {counts!r}")
    w = np.zeros_like(c)
    present = c > 0
    if not present.any():
        raise ValueError("every class count is zero: no labelled sample to weight")
    w[present] = c[present].max() / c[present]
    return w


def _counts_from_manifest(manifest: pd.DataFrame, spec: TaskSpec, n: int, dataset: Dataset) -> np.ndarray:
    task = spec.key
    col = manifest[spec.label_keys[0]]
    if spec.indexed_by is not None:  # labels are names, mapped to classes by the dataset
        index = getattr(dataset, spec.indexed_by, None)
        if index is None:
            raise ValueError(f"counting {task} classes needs the dataset's {spec.indexed_by}")
        ids = col[col.astype(str) != ""].map(index)
        vals = ids.dropna().to_numpy(dtype=np.int64)
    else:
        vals = col.dropna().to_numpy(dtype=float).round().astype(np.int64)
    bad = (vals < 0) | (vals >= n)
    if bad.any():
        raise ValueError(
            f"{bad.sum()} {task} label(s) outside 0..{n - 1} in the training manifest "
            f"(e.g. {vals[bad][:5].tolist()}); fix the manifest or the head size"
        )
    return np.bincount(vals, minlength=n)


def count_classes(dataset: Dataset, tasks: Mapping[str, int], progress: bool = True) -> dict[str, np.ndarray]:
    """Per-class counts of the labelled training samples for the classification heads in ``tasks``
    (those whose spec has classes: ``TaskSpec.n_classes``).

    Reads ``dataset.manifest`` (the FaceDataset keeps its manifest) when there is one; otherwise it
    iterates the dataset once (which loads every image: give counts explicitly for big datasets).
    """
    specs = {t: get_task(t) for t in tasks}
    size = {t: k for t, n in tasks.items() if (k := specs[t].n_classes(n)) is not None}
    col = {t: specs[t].label_keys[0] for t in size}
    manifest = getattr(dataset, "manifest", None)
    if isinstance(manifest, pd.DataFrame) and all(c in manifest.columns for c in col.values()):
        return {t: _counts_from_manifest(manifest, specs[t], size[t], dataset) for t in size}
    counts = {t: np.zeros(size[t], dtype=np.int64) for t in size}
    for i in tqdm(range(len(dataset)), desc="counting labels", disable=not progress, leave=False):
        _, lab, mask = dataset[i][:3]
        for t, c in col.items():
            if bool(mask[c]):
                counts[t][int(lab[c])] += 1
    return counts


# ============================================================================================ losses
def _masked_mean(
    values: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``sum(values) / sum(weight)`` over the masked samples (``values`` already carry the weights, as
    torch's weighted cross-entropy does); an exact 0 with zero gradient when no sample is masked in."""
    w = mask.to(values.dtype) if weight is None else mask.to(values.dtype) * weight
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / w.sum().clamp(min=torch.finfo(values.dtype).tiny)


class MultiTaskLoss(nn.Module):
    """Masked sum of per-head losses, ``sum_t task_weight_t * loss_t``; head ``t``'s loss is
    ``LOSSES[get_task(t).loss]``.

    ``forward(outputs, labels, mask)`` -> ``(total, parts, counts)``: ``parts[t]`` is the detached loss
    of head ``t`` and ``counts[t]`` its number of labelled samples in the batch.
    """

    def __init__(
        self,
        tasks: Mapping[str, int],
        task_weights: Mapping[str, float] | None = None,
        class_weights: Mapping[str, Sequence[float]] | None = None,
        label_smoothing: float = 0.0,
        age_mode: str = "bins",
        age_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        self.tasks = dict(tasks)
        self.specs = {t: get_task(t) for t in self.tasks}
        for t, spec in self.specs.items():
            if spec.loss not in LOSSES:
                raise ValueError(f"head {t!r} names loss {spec.loss!r}; choose one of {', '.join(LOSSES)}")
        unknown = set(task_weights or {}) - set(self.tasks)
        if unknown:
            raise ValueError(f"task_weights names head(s) {sorted(unknown)} the model does not have")
        self.task_weights = {t: float((task_weights or {}).get(t, 1.0)) for t in self.tasks}
        self.label_smoothing, self.age_mode = float(label_smoothing), age_mode
        if not age_sigma >= 0:
            raise ValueError(f"age_sigma must be >= 0 years, got {age_sigma!r}")
        self.age_sigma = float(age_sigma)
        for t, w in (class_weights or {}).items():
            self.register_buffer(f"cw_{t}", torch.as_tensor(np.asarray(w, dtype=np.float32)))

    def _cw(self, task: str) -> torch.Tensor | None:
        return getattr(self, f"cw_{task}", None)

    def _classification(
        self, task: str, logits: torch.Tensor, y: torch.Tensor, m: torch.Tensor
    ) -> torch.Tensor:
        y = torch.where(m, y.long(), torch.zeros_like(y, dtype=torch.long))
        cw = self._cw(task)
        per = F.cross_entropy(
            logits.float(), y, weight=cw, reduction="none", label_smoothing=self.label_smoothing
        )
        # with reduction="none" torch already multiplies each loss by w[y]; normalise by the same weights
        return _masked_mean(per, m, None if cw is None else cw[y])

    def _task_loss(
        self, task: str, out: torch.Tensor, labels: Mapping, mask: Mapping
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, number of labelled samples) of one head; both tensors (no device sync here)."""
        spec = self.specs.get(task) or get_task(task)
        return LOSSES[spec.loss](self, spec, out, labels, mask)

    def forward(
        self,
        outputs: Mapping[str, torch.Tensor],
        labels: Mapping[str, torch.Tensor],
        mask: Mapping[str, torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, float], dict[str, int]]:
        total, losses, ns = None, [], []
        for task, out in outputs.items():
            loss, n = self._task_loss(task, out, labels, mask)
            losses.append(loss.detach().float())
            ns.append(n.float())
            term = self.task_weights[task] * loss
            total = term if total is None else total + term
        values = torch.stack(losses + ns).tolist()  # one device sync for all the logging values
        k = len(losses)
        parts = dict(zip(outputs, values[:k]))
        counts = {t: int(v) for t, v in zip(outputs, values[k:])}
        return total, parts, counts


# ================================================================================== loss per head
# Each takes (the MultiTaskLoss, the head's spec, its output, labels, mask) and returns (loss, number
# of labelled samples), both tensors.
LossFn = Callable[
    [MultiTaskLoss, TaskSpec, torch.Tensor, Mapping, Mapping], tuple[torch.Tensor, torch.Tensor]
]


def cross_entropy_loss(fn: MultiTaskLoss, spec: TaskSpec, out: torch.Tensor, labels: Mapping, mask: Mapping):
    """Cross-entropy with the head's class weights and the label smoothing."""
    key = spec.label_keys[0]
    m = mask[key].bool()
    return fn._classification(spec.key, out, labels[key], m), m.sum()


def age_target(age: torch.Tensor, bins: int, sigma: float) -> torch.Tensor:
    """``[B, bins]`` training distribution over the one-year bins: a Gaussian of ``sigma`` years around
    each age, cut to the bins and renormalised (label distribution learning, Gao et al. 2017); with
    ``sigma`` 0, one-hot on the rounded age."""
    if sigma <= 0:
        return F.one_hot(age.round().clamp(0, bins - 1).long(), bins).float()
    k = torch.arange(bins, device=age.device, dtype=torch.float32)
    logp = -0.5 * ((k - age.float()[:, None]) / sigma) ** 2
    return torch.softmax(logp, dim=-1)


def age_loss(fn: MultiTaskLoss, spec: TaskSpec, out: torch.Tensor, labels: Mapping, mask: Mapping):
    """Age bins: cross-entropy against :func:`age_target` (the rounded age's bin, or with
    ``MultiTaskLoss.age_sigma`` a Gaussian around the age; no weights, no smoothing); regression
    (``age_mode="regression"`` or a single output): L1 on ``age / AGE_SCALE``."""
    key = spec.label_keys[0]
    m = mask[key].bool()
    n = m.sum()
    age = labels[key].float()
    if fn.age_mode == "regression" or out.dim() == 1:
        per = (out.float() - age / AGE_SCALE).abs()
        return _masked_mean(per, m), n
    age = torch.where(m, age, torch.zeros_like(age))  # unlabelled rows (NaN or -1) count for nothing
    target = age_target(age, out.shape[-1], fn.age_sigma)
    per = F.cross_entropy(out.float(), target, reduction="none")
    return _masked_mean(per, m), n


def binary_loss(fn: MultiTaskLoss, spec: TaskSpec, out: torch.Tensor, labels: Mapping, mask: Mapping):
    """One logit: BCE against the 0/1 label, weighted by the head's class weights; two: cross-entropy."""
    if out.dim() != 1:
        return cross_entropy_loss(fn, spec, out, labels, mask)
    key = spec.label_keys[0]
    m = mask[key].bool()
    n = m.sum()
    y = torch.where(m, labels[key].float(), torch.zeros_like(out, dtype=torch.float))
    per = F.binary_cross_entropy_with_logits(out.float(), y, reduction="none")
    cw = fn._cw(spec.key)
    if cw is None:
        return _masked_mean(per, m), n
    w = cw[y.long()]
    return _masked_mean(per * w, m, w), n


def ccc_loss(fn: MultiTaskLoss, spec: TaskSpec, out: torch.Tensor, labels: Mapping, mask: Mapping):
    """Mean over the label columns of ``1 - CCC`` (paper A's valence-arousal loss); the count is the
    samples with at least one label."""
    target = torch.stack([labels[k] for k in spec.label_keys], dim=1).float()
    m = torch.stack([mask[k] for k in spec.label_keys], dim=1).bool()
    return M.ccc_loss(out, target, m), m.any(dim=1).sum()


#: Loss by name (``TaskSpec.loss``).
LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy_loss,
    "age": age_loss,
    "binary": binary_loss,
    "ccc": ccc_loss,
}
