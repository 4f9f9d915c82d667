"""One trainer for every stage: face-ID pre-training, multi-task attributes, expression fine-tuning.

Read it top to bottom: losses -> SAM -> data order -> evaluation -> :class:`Trainer`.

* **Masked multi-task loss** (:class:`MultiTaskLoss`): every sample contributes only to the heads it
  has labels for (the ``mask`` dict of the data contract); a batch where a task has no label gives an
  exact zero loss and zero gradient to that head. Class-weighted cross-entropy with label smoothing,
  age CE over one-year bins (or L1 for regression), gender BCE on a single logit, and paper A's
  valence/arousal loss ``(1 - CCC_v) / 2 + (1 - CCC_a) / 2``.
* **Schedule** (paper A): ``head_epochs`` with the backbone frozen at ``lr_head``, then
  ``full_epochs`` with every layer at ``lr_full``; a fresh optimizer per stage; cosine / step / no
  scheduler stepped per optimisation step; optional SAM around the optimizer.
* **Exact resume**: the training order depends only on ``(seed, epoch)`` (:class:`EpochSampler`) and
  ``last.pt`` holds model, optimizer, scheduler, position (epoch, step) and RNG states, so a run
  stopped after an epoch (or a step, e.g. by ``max_train_seconds``) and resumed ends with the same
  weights as an uninterrupted run (bit-exact on CPU with ``num_workers=0``).
* **Multi-device**: under ``torchrun`` (``WORLD_SIZE > 1``) the same code runs DDP with a sharded
  sampler; only rank 0 evaluates, writes checkpoints / history and shows progress.
* Model selection uses the validation loader only (``best.pt`` by ``select_metric``); the test split
  is for reporting and is refused as a validation set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler

from . import metrics as M
from .config import TrainConfig, resolve_device
from .io import atomic_to_csv
from .labels import default_label_orders
from .models.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, unwrap
from .models.heads import (
    AGE_SCALE,
    MALE_THRESHOLD,
    freeze_backbone,
    gender_prob_female,
    predict_age,
    predict_gender,
)
from .preprocess import Preprocess
from .progress import tqdm

# TrainConfig fields a resumed run may change without changing the weights it ends with
_RESUME_NEUTRAL = ("max_train_seconds", "save_every_steps", "select_metric")
LABEL_KEYS = ("identity", "age", "gender", "race", "expression", "valence", "arousal")
CLASS_TASKS = ("identity", "race", "expression")   # + gender when it has 2 outputs


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


def _counts_from_manifest(manifest: pd.DataFrame, task: str, n: int, identity_index: Mapping | None) -> np.ndarray:
    col = manifest[task]
    if task == "identity":
        if identity_index is None:
            raise ValueError("counting identity classes needs the dataset's identity_index")
        ids = col[col.astype(str) != ""].map(identity_index)
        vals = ids.dropna().to_numpy(dtype=np.int64)
    else:
        vals = col.dropna().to_numpy(dtype=float).round().astype(np.int64)
    bad = (vals < 0) | (vals >= n)
    if bad.any():
        raise ValueError(f"{bad.sum()} {task} label(s) outside 0..{n - 1} in the training manifest "
                         f"(e.g. {vals[bad][:5].tolist()}); fix the manifest or the head size")
    return np.bincount(vals, minlength=n)


def count_classes(dataset: Dataset, tasks: Mapping[str, int], progress: bool = True) -> dict[str, np.ndarray]:
    """Per-class counts of the labelled training samples for the classification heads in ``tasks``.

    Reads ``dataset.manifest`` (the FaceDataset keeps its manifest) when there is one; otherwise it
    iterates the dataset once (which loads every image: give counts explicitly for big datasets).
    """
    wanted = {t: n for t, n in tasks.items() if t in CLASS_TASKS or (t == "gender" and n >= 1)}
    size = {t: (2 if t == "gender" else n) for t, n in wanted.items()}
    manifest = getattr(dataset, "manifest", None)
    if isinstance(manifest, pd.DataFrame) and all(t in manifest.columns for t in wanted):
        ident = getattr(dataset, "identity_index", None)
        return {t: _counts_from_manifest(manifest, t, size[t], ident) for t in wanted}
    counts = {t: np.zeros(size[t], dtype=np.int64) for t in wanted}
    for i in tqdm(range(len(dataset)), desc="counting labels", disable=not progress, leave=False):
        _, lab, mask = dataset[i][:3]
        for t in wanted:
            if bool(mask[t]):
                counts[t][int(lab[t])] += 1
    return counts


# ============================================================================================ losses
def _masked_mean(values: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``sum(values) / sum(weight)`` over the masked samples (``values`` already carry the weights, as
    torch's weighted cross-entropy does); an exact 0 with zero gradient when no sample is masked in."""
    w = mask.to(values.dtype) if weight is None else mask.to(values.dtype) * weight
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / w.sum().clamp(min=torch.finfo(values.dtype).tiny)


class MultiTaskLoss(nn.Module):
    """Masked sum of per-head losses, ``sum_t task_weight_t * loss_t``.

    ``forward(outputs, labels, mask)`` -> ``(total, parts, counts)``: ``parts[t]`` is the detached loss
    of head ``t`` and ``counts[t]`` its number of labelled samples in the batch.
    """

    def __init__(self, tasks: Mapping[str, int], task_weights: Mapping[str, float] | None = None,
                 class_weights: Mapping[str, Sequence[float]] | None = None, label_smoothing: float = 0.0,
                 age_mode: str = "bins") -> None:
        super().__init__()
        self.tasks = dict(tasks)
        unknown = set(task_weights or {}) - set(self.tasks)
        if unknown:
            raise ValueError(f"task_weights names head(s) {sorted(unknown)} the model does not have")
        self.task_weights = {t: float((task_weights or {}).get(t, 1.0)) for t in self.tasks}
        self.label_smoothing, self.age_mode = float(label_smoothing), age_mode
        for t, w in (class_weights or {}).items():
            self.register_buffer(f"cw_{t}", torch.as_tensor(np.asarray(w, dtype=np.float32)))

    def _cw(self, task: str) -> torch.Tensor | None:
        return getattr(self, f"cw_{task}", None)

    def _classification(self, task: str, logits: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        y = torch.where(m, y.long(), torch.zeros_like(y, dtype=torch.long))
        cw = self._cw(task)
        per = F.cross_entropy(logits.float(), y, weight=cw, reduction="none",
                              label_smoothing=self.label_smoothing)
        # with reduction="none" torch already multiplies each loss by w[y]; normalise by the same weights
        return _masked_mean(per, m, None if cw is None else cw[y])

    def _task_loss(self, task: str, out: torch.Tensor, labels: Mapping, mask: Mapping
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, number of labelled samples) of one head; both tensors (no device sync here)."""
        if task == "va":
            target = torch.stack([labels["valence"], labels["arousal"]], dim=1).float()
            m = torch.stack([mask["valence"], mask["arousal"]], dim=1).bool()
            return M.ccc_loss(out, target, m), m.any(dim=1).sum()
        m = mask[task].bool()
        n = m.sum()
        if task == "age":
            age = labels["age"].float()
            if self.age_mode == "regression" or out.dim() == 1:
                per = (out.float() - age / AGE_SCALE).abs()
                return _masked_mean(per, m), n
            bins = age.round().clamp(0, out.shape[-1] - 1).long()
            per = F.cross_entropy(out.float(), torch.where(m, bins, torch.zeros_like(bins)), reduction="none")
            return _masked_mean(per, m), n
        if task == "gender" and out.dim() == 1:
            y = torch.where(m, labels["gender"].float(), torch.zeros_like(out, dtype=torch.float))
            per = F.binary_cross_entropy_with_logits(out.float(), y, reduction="none")
            cw = self._cw("gender")
            if cw is None:
                return _masked_mean(per, m), n
            w = cw[y.long()]
            return _masked_mean(per * w, m, w), n
        return self._classification(task, out, labels[task], m), n

    def forward(self, outputs: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor],
                mask: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float], dict[str, int]]:
        total, losses, ns = None, [], []
        for task, out in outputs.items():
            loss, n = self._task_loss(task, out, labels, mask)
            losses.append(loss.detach().float())
            ns.append(n.float())
            term = self.task_weights[task] * loss
            total = term if total is None else total + term
        values = torch.stack(losses + ns).tolist()          # one device sync for all the logging values
        k = len(losses)
        parts = dict(zip(outputs, values[:k]))
        counts = {t: int(v) for t, v in zip(outputs, values[k:])}
        return total, parts, counts


# =============================================================================================== SAM
class SAM:
    """Sharpness-aware minimisation (Foret et al. 2021) around any torch optimizer.

    One step = two forward/backward passes: gradient ``g`` at ``w``; move to ``w + rho g / ||g||``;
    gradient there; come back to ``w`` and let the base optimizer step with that second gradient.
    Schedulers attach to ``sam.base``; ``state_dict`` is the base optimizer's.
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False) -> None:
        if rho <= 0:
            raise ValueError(f"SAM rho must be > 0, got {rho}")
        self.base, self.rho, self.adaptive = base, float(rho), adaptive
        self._eps: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def param_groups(self) -> list[dict]:
        return self.base.param_groups

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.base.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def first_step(self) -> None:
        """Climb to the worst nearby point ``w + e`` (uses the current gradients)."""
        params = self._params()
        if not params:
            return
        scaled = [(p.abs() * p.grad) if self.adaptive else p.grad for p in params]
        norm = torch.norm(torch.stack([s.norm(2) for s in scaled]), 2)
        scale = self.rho / (norm + 1e-12)
        self._eps = []
        for p, s in zip(params, scaled):
            e = (p.abs() * s if self.adaptive else s) * scale
            p.add_(e)
            self._eps.append((p, e))

    @torch.no_grad()
    def second_step(self) -> None:
        """Return to ``w`` and step the base optimizer with the gradient taken at ``w + e``."""
        for p, e in self._eps:
            p.sub_(e)
        self._eps = []
        self.base.step()

    def step(self, closure) -> torch.Tensor:
        """Full SAM step; ``closure()`` must zero nothing, run forward + backward and return the loss."""
        loss = closure()
        self.first_step()
        self.zero_grad()
        closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)


@contextlib.contextmanager
def _frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics unchanged inside (SAM's second pass must not update them twice)."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            saved.append((m, m.momentum))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in saved:
            m.momentum = mom


def build_optimizer(params, name: str, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """``adam`` | ``adamw`` | ``sgd`` (with momentum) over ``params``."""
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose adam, adamw or sgd")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int, steps_per_epoch: int,
                    step_size: int = 10, gamma: float = 0.1):
    """Per-step scheduler: ``cosine`` (to 0 over the stage), ``step`` (x gamma every step_size epochs), ``none``."""
    name = (name or "none").lower()
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, step_size * steps_per_epoch),
                                               gamma=gamma)
    if name == "none":
        return None
    raise ValueError(f"unknown scheduler {name!r}; choose cosine, step or none")


# ======================================================================================== data order
class EpochSampler(Sampler[int]):
    """Indices in an order that depends only on ``(seed, epoch)``, sharded over ranks, with a skip.

    Shuffled with a generator seeded from ``(seed, epoch)`` (never from the global RNG), padded by
    repetition to a multiple of ``world_size`` (as DistributedSampler) and split ``rank::world_size``.
    ``set_epoch(epoch, skip)`` drops the first ``skip`` indices of this rank (resume inside an epoch).
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, int(seed), rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        per_rank = math.ceil(self.n / self.world) if self.n else 0
        idx += idx[: per_rank * self.world - self.n]
        return idx[self.rank::self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.skip:])

    def __len__(self) -> int:
        return max(0, (math.ceil(self.n / self.world) if self.n else 0) - self.skip)


def _loader_parts(data: Dataset | DataLoader, batch_size: int, num_workers: int) -> dict[str, Any]:
    if isinstance(data, DataLoader):
        return {"dataset": data.dataset, "batch_size": data.batch_size or batch_size,
                "num_workers": data.num_workers, "collate_fn": data.collate_fn}
    return {"dataset": data, "batch_size": batch_size, "num_workers": num_workers, "collate_fn": None}


def _check_not_test(dataset: Dataset, allow: bool) -> None:
    manifest = getattr(dataset, "manifest", None)
    if allow or not isinstance(manifest, pd.DataFrame) or "split" not in manifest.columns:
        return
    if (manifest["split"].astype(str) == "test").any():
        raise ValueError("the validation loader holds 'test' rows: model selection must not see the reported "
                         "test split. Pass the 'val' split (or allow_test_selection=True if you know why)")


# ======================================================================================== evaluation
def _unpack(batch: Any) -> tuple[torch.Tensor, dict | None, dict | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    if isinstance(batch, (list, tuple)):
        if len(batch) >= 3 and isinstance(batch[1], Mapping):
            return batch[0], batch[1], batch[2]
        return batch[0], None, None
    raise TypeError(f"a batch must be images or (images, labels, mask), got {type(batch).__name__}")


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def amp_supported(device: torch.device) -> bool:
    """bf16 autocast is used on CUDA devices that support it, never on CPU."""
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@torch.no_grad()
def _run_eval(model: nn.Module, loader: DataLoader, device: torch.device, loss_fn: MultiTaskLoss | None = None,
              features: bool = False, male_threshold: float = MALE_THRESHOLD, amp: bool = False,
              channels_last: bool = False, progress: bool = False, max_logits: int = 1000
              ) -> tuple[dict[str, np.ndarray], float]:
    net = unwrap(model)
    was_training = net.training
    net.eval()
    chunks: dict[str, list[np.ndarray]] = {}
    loss_sum, n_seen = 0.0, 0

    def add(key: str, value: torch.Tensor) -> None:
        chunks.setdefault(key, []).append(value.detach().float().cpu().numpy()
                                          if value.is_floating_point() else value.detach().cpu().numpy())

    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        x, lab, mask = _unpack(batch)
        x = x.to(device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
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


def predict(model: nn.Module, loader: DataLoader, device: str | torch.device | None = None,
            features: bool = False, male_threshold: float = MALE_THRESHOLD, progress: bool = True,
            amp: bool = False) -> dict[str, np.ndarray]:
    """Run the model over a loader; numpy arrays in loader order.

    Keys: ``<head>_logits`` (raw head outputs; heads with more than 1000 outputs are left out),
    ``<class head>_pred`` (argmax), ``age_pred`` (years), ``gender_prob_female`` and ``gender_pred``
    (0 male / 1 female, male where p(male) >= male_threshold), ``valence_pred`` / ``arousal_pred``,
    ``features`` (pooled feature, if asked), and ``label_<key>`` / ``mask_<key>`` when the loader
    yields ``(image, labels, mask)``.
    """
    dev = torch.device(device) if device is not None else next(unwrap(model).parameters()).device
    pred, _ = _run_eval(model, loader, dev, features=features, male_threshold=male_threshold,
                        amp=amp and amp_supported(dev), progress=progress)
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


def evaluate(model: nn.Module, loader: DataLoader, tasks: Mapping[str, int] | None = None,
             device: str | torch.device | None = None, male_threshold: float = MALE_THRESHOLD,
             progress: bool = True) -> dict[str, float]:
    """Metrics over the labelled samples of each head.

    ``<class head>_accuracy`` / ``<class head>_macro_f1`` (identity, race, expression), ``age_mae`` and
    ``age_cs5`` (years), ``gender_accuracy`` (paper A's 0.6 threshold), ``valence_ccc``,
    ``arousal_ccc``, ``va_ccc`` (mean).
    """
    tasks = tasks or unwrap(model).tasks
    pred = predict(model, loader, device, male_threshold=male_threshold, progress=progress)
    return metrics_from_predictions(pred, tasks)


# ====================================================================================== distributed
def setup_distributed(device: torch.device | None = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``; initialises the process group from torchrun's env vars when
    ``WORLD_SIZE > 1`` (nccl on CUDA, gloo on CPU). ``(0, 1, 0)`` for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local


def cleanup_distributed() -> None:
    """Destroy the process group if one is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# =========================================================================================== trainer
@dataclasses.dataclass
class _Stage:
    name: str          # "head" | "full"
    first_epoch: int
    epochs: int
    lr: float


class Trainer:
    """Train a :class:`~fer_lib.models.MultiTaskNet` for one stage of the pipeline.

    ``Trainer(model, cfg, device=..., out_dir=...).fit(train, val)`` trains ``model`` in place, returns
    the history DataFrame and
    writes (rank 0, when ``out_dir`` is set) ``history.csv``, ``last.pt`` (every epoch, every
    ``cfg.save_every_steps`` steps and when stopped by ``cfg.max_train_seconds``) and ``best.pt``
    (best ``cfg.select_metric`` on the validation loader), all atomically.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, *, device: str | torch.device = "auto",
                 out_dir: str | Path | None = None, task_weights: Mapping[str, float] | None = None,
                 class_counts: Mapping[str, Sequence[int]] | None = None,
                 class_weight_tasks: Sequence[str] = ("expression",), seed: int = 0,
                 label_orders: Mapping[str, Sequence] | None = None, run_config: Mapping | None = None,
                 num_workers: int = 0, progress: bool = True, allow_test_selection: bool = False) -> None:
        self.cfg = cfg
        dev = resolve_device(device) if isinstance(device, str) else device
        self.rank, self.world, local = setup_distributed(dev)
        if self.world > 1 and dev.type == "cuda":
            dev = torch.device("cuda", local)
        self.device = dev
        self.is_main = self.rank == 0
        self.model = unwrap(model).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.tasks = dict(self.model.tasks)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.task_weights = dict(task_weights or {})
        self.class_counts = {t: list(map(int, c)) for t, c in (class_counts or {}).items()}
        self.class_weight_tasks = tuple(t for t in class_weight_tasks if t in self.tasks)
        self.seed, self.num_workers, self.progress = int(seed), num_workers, progress
        self.allow_test_selection = allow_test_selection
        self.label_orders = {**default_label_orders(self.tasks), **{k: list(v) for k, v in (label_orders or {}).items()}}
        self.run_config = dict(run_config or {})
        self.amp = bool(cfg.amp) and amp_supported(self.device)
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.loss_fn: MultiTaskLoss | None = None

    # ------------------------------------------------------------------------------ set-up pieces
    @property
    def select_mode(self) -> str:
        """"min" or "max": the direction fer_lib.metrics declares for ``select_metric``."""
        return M.metric_spec(self.cfg.select_metric.removeprefix("val_")).direction

    def _stages(self) -> list[_Stage]:
        out, start = [], 0
        for name, epochs, lr in (("head", self.cfg.head_epochs, self.cfg.lr_head),
                                 ("full", self.cfg.full_epochs, self.cfg.lr_full)):
            if epochs > 0:
                out.append(_Stage(name, start, int(epochs), float(lr)))
                start += int(epochs)
        if not out:
            raise ValueError("head_epochs + full_epochs is 0: nothing to train")
        return out

    def _make_loss(self, dataset: Dataset) -> MultiTaskLoss:
        weights = {}
        if self.cfg.class_weights and self.class_weight_tasks:
            missing = [t for t in self.class_weight_tasks if t not in self.class_counts]
            if missing:
                counted = count_classes(dataset, {t: self.tasks[t] for t in missing}, progress=self.is_main)
                self.class_counts.update({t: counted[t].tolist() for t in missing})
            for t in self.class_weight_tasks:
                if sum(self.class_counts[t]) == 0:
                    warnings.warn(f"no labelled {t} sample in the training set: {t} is not class-weighted",
                                  stacklevel=3)
                else:
                    weights[t] = class_weights(self.class_counts[t])
        return MultiTaskLoss(self.tasks, self.task_weights, weights, self.cfg.label_smoothing,
                             self.model.age_mode).to(self.device)

    def _train_loader(self, data: Dataset | DataLoader) -> tuple[DataLoader, EpochSampler]:
        parts = _loader_parts(data, self.cfg.batch_size, self.num_workers)
        n = len(parts["dataset"])
        sampler = EpochSampler(n, shuffle=True, seed=self.seed, rank=self.rank, world_size=self.world)
        per_rank = len(sampler)
        if per_rank == 0:
            raise ValueError("the training set is empty")
        # drop a ragged last batch (BatchNorm cannot train on one sample) unless the set is tiny
        drop_last = per_rank >= parts["batch_size"]
        self._generator = torch.Generator()
        loader = DataLoader(sampler=sampler, drop_last=drop_last, generator=self._generator,
                            pin_memory=self.device.type == "cuda", **parts)
        return loader, sampler

    def _eval_loader(self, data: Dataset | DataLoader) -> DataLoader:
        parts = _loader_parts(data, self.cfg.batch_size, self.num_workers)
        _check_not_test(parts["dataset"], self.allow_test_selection)
        gen = torch.Generator()
        gen.manual_seed(self.seed)
        return DataLoader(sampler=SequentialSampler(parts["dataset"]), generator=gen,
                          pin_memory=self.device.type == "cuda", **parts)

    def _setup_stage(self, stage: _Stage, steps_per_epoch: int) -> None:
        freeze_backbone(self.model, stage.name == "head")
        params = [p for p in self.model.parameters() if p.requires_grad]
        c = self.cfg
        self.optimizer = build_optimizer(params, c.optimizer, stage.lr, c.weight_decay, c.momentum)
        self.sam = SAM(self.optimizer, c.sam_rho) if c.sam else None
        self.scheduler = build_scheduler(self.optimizer, c.scheduler, stage.epochs * steps_per_epoch,
                                         steps_per_epoch, c.step_size, c.gamma)
        self.ddp_model = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp_model = None
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DDP(self.model, device_ids=ids)
        self.stage = stage

    # ------------------------------------------------------------------------------------ one step
    def _forward_backward(self, x: torch.Tensor, lab: dict, mask: dict) -> tuple[torch.Tensor, dict, dict]:
        with _autocast(self.device, self.amp):
            out = self.ddp_model(x)
        loss, parts, counts = self.loss_fn(out, lab, mask)
        loss.backward()
        return loss, parts, counts

    def _clip(self) -> None:
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.cfg.grad_clip)

    def train_step(self, batch: Any) -> tuple[float, dict[str, float], dict[str, int]]:
        """One optimisation step (two passes with SAM); returns (loss, per-head losses, label counts)."""
        x, lab, mask = _unpack(batch)
        if lab is None:
            raise ValueError("training batches must be (image, labels, mask) as produced by FaceDataset")
        x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lab = {k: v.to(self.device, non_blocking=True) for k, v in lab.items()}
        mask = {k: v.to(self.device, non_blocking=True).bool() for k, v in mask.items()}
        self.optimizer.zero_grad(set_to_none=True)
        loss, parts, counts = self._forward_backward(x, lab, mask)
        if not all(math.isfinite(v) for v in parts.values()):
            raise FloatingPointError(f"training loss is not finite at step {self.global_step} "
                                     f"(per head: {parts}); lower the learning rate or check the labels")
        if self.sam is not None:
            self.sam.first_step()
            self.optimizer.zero_grad(set_to_none=True)
            with _frozen_bn_stats(self.model):
                self._forward_backward(x, lab, mask)
            self._clip()
            self.sam.second_step()
        else:
            self._clip()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        total = sum(self.loss_fn.task_weights[t] * v for t, v in parts.items())   # no extra device sync
        return total, parts, counts

    # ------------------------------------------------------------------------------- checkpoints
    def _config_dict(self) -> dict[str, Any]:
        return {"train": dataclasses.asdict(self.cfg), "seed": self.seed, "task_weights": self.task_weights,
                "class_counts": self.class_counts, "world_size": self.world, "run": self.run_config}

    def _trainer_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "stage": self.stage.name, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "train_seconds": self.train_seconds, "history": self.history, "running": self.running}

    def _save_last(self, rng: dict, metrics: dict) -> None:
        if not (self.is_main and self.out_dir is not None):
            return
        metrics = {**metrics, "train_seconds": self.train_seconds}
        save_checkpoint(self.out_dir / "last.pt", self.model, self._config_dict(), self.label_orders, metrics,
                        optimizer=self.optimizer, scheduler=self.scheduler, epoch=self.epoch,
                        step=self.global_step, rng=rng, extra={"trainer": self._trainer_state()})

    def _write_history(self) -> None:
        if self.is_main and self.out_dir is not None:
            atomic_to_csv(pd.DataFrame(self.history), self.out_dir / "history.csv")

    def _resume(self) -> dict | None:
        path = None if self.out_dir is None else self.out_dir / "last.pt"
        if path is None or not path.is_file():
            if self.is_main:
                print(f"resume: no {path} yet, starting from scratch")
            return None
        ckpt = load_checkpoint(path, map_location="cpu")
        self.model.load_state_dict(ckpt["state_dict"])
        st = ckpt["extra"]["trainer"]
        self.epoch, self.step_in_epoch, self.global_step = st["epoch"], st["step_in_epoch"], st["global_step"]
        self.best_value, self.best_epoch = st["best_value"], st["best_epoch"]
        self.train_seconds, self.history, self.running = st["train_seconds"], list(st["history"]), st["running"]
        old = ckpt["config"].get("train", {})
        changed = {k: (old.get(k), v) for k, v in dataclasses.asdict(self.cfg).items()
                   if old.get(k) != v and k not in _RESUME_NEUTRAL}
        if changed and self.is_main:
            warnings.warn(f"resuming {path} with a changed config {changed}: the result will differ from an "
                          "uninterrupted run", stacklevel=3)
        if self.is_main:
            print(f"resumed {path}: epoch {self.epoch}, step {self.step_in_epoch} of it, global step {self.global_step}")
        return ckpt

    # -------------------------------------------------------------------------------------- fit
    def _budget_exceeded(self, started: float) -> bool:
        limit = self.cfg.max_train_seconds
        if limit is None:
            return False
        stop = torch.tensor([1.0 if time.perf_counter() - started > limit else 0.0],
                            device=self.device if self.device.type == "cuda" else "cpu")
        if self.world > 1:
            import torch.distributed as dist

            dist.broadcast(stop, src=0)
        return bool(stop.item() > 0)

    def _validate(self, val_loader: DataLoader | None) -> dict[str, float]:
        """Validation metrics (rank 0; other ranks wait), as ``val_<metric>`` plus ``val_loss``."""
        metrics: dict[str, float] = {}
        if val_loader is not None and self.is_main:
            pred, loss = _run_eval(self.model, val_loader, self.device, self.loss_fn, amp=self.amp,
                                   channels_last=self.cfg.channels_last, progress=self.progress)
            metrics = {"val_loss": loss, **{f"val_{k}": v for k, v in metrics_from_predictions(pred, self.tasks).items()}}
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        return metrics

    def _select_best(self, metrics: dict[str, float]) -> None:
        if not self.is_main or not metrics:
            return
        key = self.cfg.select_metric
        key = key if key.startswith("val_") else f"val_{key}"
        if key not in metrics:
            raise ValueError(f"select_metric {self.cfg.select_metric!r} is not among the validation metrics "
                             f"{sorted(k[4:] for k in metrics)}")
        value = metrics[key]
        if not (isinstance(value, float) and math.isfinite(value)):
            return
        better = (self.best_value is None or (value < self.best_value if self.select_mode == "min"
                                               else value > self.best_value))
        if better:
            self.best_value, self.best_epoch = float(value), self.epoch
            if self.out_dir is not None:
                save_checkpoint(self.out_dir / "best.pt", self.model, self._config_dict(), self.label_orders,
                                {**metrics, "epoch": self.epoch, "train_seconds": self.train_seconds},
                                epoch=self.epoch, step=self.global_step,
                                extra={"selected_on": key, "mode": self.select_mode})

    def _epoch_row(self, epoch_index: int, partial: bool, seconds: float, metrics: dict) -> dict[str, Any]:
        r = self.running
        row = {"epoch": epoch_index + 1, "stage": self.stage.name, "partial": partial,
               "steps": r["steps"], "global_step": self.global_step,
               "lr": float(self.optimizer.param_groups[0]["lr"]),
               "train_loss": r["loss"] / max(1, r["steps"])}
        for t in self.tasks:
            n = r["task_batches"].get(t, 0)
            row[f"train_{t}_loss"] = r["task_loss"].get(t, 0.0) / n if n else float("nan")
        row.update({"epoch_seconds": seconds, "train_seconds": self.train_seconds})
        row.update(metrics)
        return row

    def fit(self, train: Dataset | DataLoader, val: Dataset | DataLoader | None = None, resume: bool = False,
            max_epochs: int | None = None) -> pd.DataFrame:
        """Train through both stages; returns the history (one row per epoch run).

        ``resume=True`` continues from ``out_dir/last.pt`` when it exists. ``max_epochs`` stops this
        call after that many epochs in total (a deliberate interruption; resume continues).
        ``cfg.max_train_seconds`` counts the wall time of this call (training and validation); the
        step that crosses it is the last, then the model is validated and ``last.pt`` written.
        A ``DataLoader`` argument is rebuilt on its dataset, batch size, workers and collate function
        with an :class:`EpochSampler` (training) or in order (validation).
        """
        train_loader, sampler = self._train_loader(train)
        val_loader = self._eval_loader(val) if val is not None else None
        pre = getattr(train_loader.dataset, "preprocess", None)
        if isinstance(pre, Preprocess):   # checkpoints carry what the faces went through, for every consumer
            self.model.preprocess = pre
        steps_per_epoch = len(train_loader)
        stages = self._stages()
        total_epochs = stages[-1].first_epoch + stages[-1].epochs
        self.loss_fn = self._make_loss(train_loader.dataset)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_value, self.best_epoch, self.history, self.train_seconds = None, None, [], 0.0
        self.running = self._fresh_running()
        ckpt = self._resume() if resume else None
        if self.is_main and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        self.stage = None
        stopped = False
        while self.epoch < total_epochs and not stopped:
            if max_epochs is not None and self.epoch >= max_epochs:
                break
            stage = next(s for s in stages if s.first_epoch <= self.epoch < s.first_epoch + s.epochs)
            if self.stage is None or self.stage.name != stage.name:
                self._setup_stage(stage, steps_per_epoch)
                if ckpt is not None and ckpt["extra"]["trainer"]["stage"] == stage.name and (
                        self.epoch > stage.first_epoch or self.step_in_epoch > 0):
                    self.optimizer.load_state_dict(ckpt["optimizer"])
                    if self.scheduler is not None and ckpt["scheduler"] is not None:
                        self.scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt is not None:
                set_rng_state(ckpt["rng"])
                ckpt = None
            stopped = self._run_epoch(train_loader, sampler, val_loader, steps_per_epoch, total_epochs, started)
        if self.is_main:
            print(f"trained {self.epoch}/{total_epochs} epochs ({self.global_step} steps) in "
                  f"{self.train_seconds:.1f} s of training" + (" - stopped by max_train_seconds" if stopped else ""))
        return pd.DataFrame(self.history)

    @staticmethod
    def _fresh_running() -> dict[str, Any]:
        return {"loss": 0.0, "steps": 0, "task_loss": {}, "task_batches": {}, "seconds": 0.0}

    def _run_epoch(self, loader: DataLoader, sampler: EpochSampler, val_loader: DataLoader | None,
                   steps_per_epoch: int, total_epochs: int, started: float) -> bool:
        """Train one epoch (or its rest after a resume); returns True when the time budget stopped it."""
        epoch, start = self.epoch, self.step_in_epoch
        sampler.set_epoch(epoch, skip=start * loader.batch_size)
        self._generator.manual_seed(self.seed * 1_000_003 + epoch)   # worker seeds depend on (seed, epoch)
        self.model.train()
        r = self.running
        bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{total_epochs} [{self.stage.name}]",
                   disable=not (self.progress and self.is_main), leave=False)
        stopped = False
        t0 = time.perf_counter()
        for batch in loader:
            loss, parts, counts = self.train_step(batch)
            self.global_step += 1
            self.step_in_epoch += 1
            r["loss"] += loss
            r["steps"] += 1
            for t, v in parts.items():
                if counts[t] > 0:
                    r["task_loss"][t] = r["task_loss"].get(t, 0.0) + v
                    r["task_batches"][t] = r["task_batches"].get(t, 0) + 1
            bar.update(1)
            bar.set_postfix({"loss": f"{r['loss'] / r['steps']:.3f}",
                             **{t: f"{r['task_loss'][t] / r['task_batches'][t]:.3f}" for t in r["task_loss"]}})
            done = self.step_in_epoch >= steps_per_epoch
            if self._budget_exceeded(started) and not done:
                stopped = True
                break
            every = getattr(self.cfg, "save_every_steps", None)
            if every and self.global_step % every == 0 and not done:
                self.train_seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                self._save_last(rng_state(), {})
        bar.close()
        seconds = time.perf_counter() - t0
        self.train_seconds += seconds
        r["seconds"] += seconds
        partial = self.step_in_epoch < steps_per_epoch
        rng_mid = rng_state() if partial else None       # a mid-epoch stop resumes right here
        metrics = self._validate(val_loader)
        row = self._epoch_row(epoch, partial, r["seconds"], metrics)
        self.history.append(row)
        if not partial:
            self.epoch, self.step_in_epoch = epoch + 1, 0
            self.running = self._fresh_running()
        self._select_best(metrics)
        self._save_last(rng_mid if partial else rng_state(), metrics)
        self._write_history()
        if self.is_main and self.progress:
            shown = {k: round(v, 4) for k, v in row.items()
                     if isinstance(v, float) and (k.startswith("val_") or k in ("train_loss", "train_seconds"))}
            print(f"epoch {epoch + 1}/{total_epochs} [{self.stage.name}]{' (partial)' if partial else ''}: {shown}")
        if not stopped and self._budget_exceeded(started) and self.epoch < total_epochs:
            stopped = True
        return stopped
