"""Evaluation: run a model over a loader (predictions, labels, masks, optional loss) and the metrics of
every head from those predictions."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import metrics as M
from ..models.checkpoint import unwrap
from ..models.heads import (
    MALE_THRESHOLD,
    gender_prob_female,
    predict_age,
    predict_gender,
)
from ..progress import tqdm
from .losses import LABEL_KEYS, MultiTaskLoss


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
            feat = net.forward_features(x)
            out = net.forward_heads(feat)
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
            if task == "age":
                add("age_pred", predict_age(o, net.age_mode if hasattr(net, "age_mode") else None))
            elif task == "gender":
                add("gender_prob_female", gender_prob_female(o))
                add("gender_pred", predict_gender(o, male_threshold))
            elif task == "va":
                add("valence_pred", o[:, 0])
                add("arousal_pred", o[:, 1])
            else:
                add(f"{task}_pred", o.argmax(-1))
        if lab is not None:
            for k in LABEL_KEYS:
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

    Keys: ``<head>_logits`` (raw head outputs; heads with more than 1000 outputs are left out),
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
    """Metrics of every head that has labelled samples in ``pred`` (see :func:`evaluate`)."""
    out: dict[str, float] = {}
    for task in tasks:
        if task == "va":
            for dim in ("valence", "arousal"):
                if f"mask_{dim}" in pred and pred[f"mask_{dim}"].sum() >= 2:
                    m = pred[f"mask_{dim}"]
                    out[f"{dim}_ccc"] = float(M.ccc(pred[f"label_{dim}"][m], pred[f"{dim}_pred"][m]))
            if "valence_ccc" in out and "arousal_ccc" in out:
                out["va_ccc"] = (out["valence_ccc"] + out["arousal_ccc"]) / 2
            continue
        if f"mask_{task}" not in pred or not pred[f"mask_{task}"].any():
            continue
        m = pred[f"mask_{task}"]
        y, p = pred[f"label_{task}"][m], pred[f"{task}_pred"][m]
        if task == "age":
            out["age_mae"] = M.age_mae(y, p)
            out["age_cs5"] = M.cumulative_score(y, p, 5)
        elif task == "gender":
            out["gender_accuracy"] = M.accuracy(y, p)
        else:
            out[f"{task}_accuracy"] = M.accuracy(y, p)
            out[f"{task}_macro_f1"] = M.macro_f1(y, p)
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
