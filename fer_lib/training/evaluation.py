"""Evaluation: run a model over a loader (predictions, labels, masks, optional loss) and the metrics of
every head from those predictions. Each head's outputs read through its registry spec's decoder and it
is scored with its spec's quantities (:mod:`fer_lib.tasks`)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import metrics as M
from ..labels import MALE_THRESHOLD
from ..models.checkpoint import unwrap
from ..progress import tqdm
from ..tasks import get_task, label_keys
from .losses import MultiTaskLoss


# ======================================================================================== evaluation
def unpack_batch(batch: Any) -> tuple[torch.Tensor, dict | None, dict | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    if isinstance(batch, (list, tuple)):
        if len(batch) >= 3 and isinstance(batch[1], Mapping):
            return batch[0], batch[1], batch[2]
        return batch[0], None, None
    raise TypeError(f"a batch must be images or (images, labels, mask), got {type(batch).__name__}")


def autocast_if(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def amp_supported(device: torch.device) -> bool:
    """bf16 autocast is used on CUDA devices that support it, never on CPU."""
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@torch.no_grad()
def run_eval(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    loss_fn: MultiTaskLoss | None = None,
    features: bool = False,
    male_threshold: float | None = None,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = False,
    max_logits: int = 1000,
) -> tuple[dict[str, np.ndarray], float]:
    net = unwrap(model)
    if male_threshold is None:  # the model's own (chosen on validation data where a stage did), else 0.6
        male_threshold = getattr(net, "male_threshold", MALE_THRESHOLD)
    was_training = net.training
    net.eval()
    age_mode = net.age_mode if hasattr(net, "age_mode") else None
    keys = label_keys()
    chunks: dict[str, list[np.ndarray]] = {}
    loss_sum, n_seen = 0.0, 0

    def add(key: str, value: torch.Tensor) -> None:
        chunks.setdefault(key, []).append(
            value.detach().float().cpu().numpy()
            if value.is_floating_point()
            else value.detach().cpu().numpy()
        )

    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        x, lab, mask = unpack_batch(batch)
        x = x.to(device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_if(device, amp):
            out = net(x)  # what serving reads (a MultiTaskNet's grey heads, from the grey view)
            feat = net.forward_features(x) if features else None
        if loss_fn is not None and lab is not None:
            lab_d = {k: v.to(device) for k, v in lab.items()}
            mask_d = {k: v.to(device) for k, v in mask.items()}
            loss, _, _ = loss_fn(out, lab_d, mask_d)
            loss_sum += float(loss) * len(x)
            n_seen += len(x)
        if features:
            add("features", feat)
        for task, o in out.items():
            if o.shape[-1] <= max_logits or o.dim() == 1:
                add(f"{task}_logits", o)
            spec = get_task(task)
            for key, value in spec.decoder.predictions(spec, o, age_mode, male_threshold).items():
                add(key, value)
        if lab is not None:
            for k in keys:
                if k in lab:
                    add(f"label_{k}", lab[k])
                    add(f"mask_{k}", mask[k].bool())
    net.train(was_training)
    pred = {k: np.concatenate(v) for k, v in chunks.items()}
    return pred, (loss_sum / n_seen if n_seen else float("nan"))


def predict(
    model: nn.Module,
    loader: DataLoader,
    device: str | torch.device | None = None,
    features: bool = False,
    male_threshold: float | None = None,
    progress: bool = True,
    amp: bool = False,
) -> dict[str, np.ndarray]:
    """Run the model over a loader; numpy arrays in loader order.

    Keys (each head's decoder, :mod:`fer_lib.tasks`): ``<head>_logits`` (raw head outputs; heads with
    more than 1000 outputs are left out),
    ``<class head>_pred`` (argmax), ``age_pred`` (years), ``gender_prob_female`` and ``gender_pred``
    (0 male / 1 female, male where p(male) >= ``male_threshold``, by default the model's own),
    ``valence_pred`` / ``arousal_pred``,
    ``features`` (pooled feature, if asked), and ``label_<key>`` / ``mask_<key>`` when the loader
    yields ``(image, labels, mask)``.
    """
    dev = torch.device(device) if device is not None else next(unwrap(model).parameters()).device
    pred, _ = run_eval(
        model,
        loader,
        dev,
        features=features,
        male_threshold=male_threshold,
        amp=amp and amp_supported(dev),
        progress=progress,
    )
    return pred


def metrics_from_predictions(pred: Mapping[str, np.ndarray], tasks: Mapping[str, int]) -> dict[str, float]:
    """Metrics of every head that has labelled samples in ``pred`` (see :func:`evaluate`): for each label
    column with enough labelled samples, ``<column>_<quantity>`` over the head's quantities; a head with
    several columns (va) also gets ``<head>_<quantity>``, their mean, once every column has it."""
    out: dict[str, float] = {}
    for task in tasks:
        spec = get_task(task)
        need = max(M.SCORES[q].min_samples for q in spec.quantities)
        for key in spec.label_keys:
            m = pred.get(f"mask_{key}")
            if m is None or m.sum() < need:
                continue
            y, p = pred[f"label_{key}"][m], pred[f"{key}_pred"][m]
            for q in spec.quantities:
                out[f"{key}_{q}"] = M.score(q, y, p)
        if len(spec.label_keys) > 1:
            for q in spec.quantities:
                parts = [out.get(f"{key}_{q}") for key in spec.label_keys]
                if all(v is not None for v in parts):
                    out[f"{task}_{q}"] = sum(parts) / len(parts)
    return out


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    tasks: Mapping[str, int] | None = None,
    device: str | torch.device | None = None,
    male_threshold: float | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Metrics over the labelled samples of each head.

    ``<class head>_accuracy`` / ``<class head>_macro_f1`` (identity, race, expression), ``age_mae`` and
    ``age_cs5`` (years), ``gender_accuracy`` (at the model's male threshold), ``valence_ccc``,
    ``arousal_ccc``, ``va_ccc`` (mean).
    """
    tasks = tasks or unwrap(model).tasks
    pred = predict(model, loader, device, male_threshold=male_threshold, progress=progress)
    return metrics_from_predictions(pred, tasks)
