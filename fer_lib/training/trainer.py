"""The :class:`Trainer`: paper A's head-only then full schedule, checkpoints, exact resume, time budget."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from .. import metrics as M
from ..config import TrainConfig, resolve_device
from ..datasets import check_trainable
from ..io import atomic_to_csv
from ..models.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, unwrap
from ..models.heads import (
    freeze_backbone,
)
from ..preprocess import Preprocess
from ..progress import tqdm
from ..tasks import default_label_orders
from .distributed import EpochSampler, check_not_test, loader_parts, setup_distributed
from .evaluation import amp_supported, autocast_if, metrics_from_predictions, run_eval, unpack_batch
from .losses import MultiTaskLoss, class_weights, count_classes
from .optim import SAM, CosineToZero, build_optimizer, build_scheduler, frozen_bn_stats

#: steps into a stage after which fit_schedule_to_budget makes its first estimate (then at every epoch end)
FIT_SCHEDULE_AFTER_STEPS = 20
#: ``TrainConfig.ema_decay``'s warm-up exponent (timm ModelEmaV3's ``warmup_power``; 3/4 is timm's value for
#: runs of thousands of steps): the average at step t spans about t^(3/4) recent steps, so it follows the
#: run's length (a time budget ends runs after very different step counts on a CPU and on a GPU)
EMA_WARMUP_POWER = 0.75
# TrainConfig fields a resumed run may change without changing the weights it ends with
_RESUME_NEUTRAL = ("max_train_seconds", "save_every_steps", "select_metric", "trim_memory")


# ================================================================================ device settings
@functools.lru_cache(maxsize=1)
def cpu_bf16_native() -> bool:
    """True where oneDNN computes bfloat16 natively on this CPU (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def training_amp(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether ``cfg.amp`` turns into bf16 autocast on ``device`` (float32 master weights either way).

    CUDA: where the GPU supports bf16. CPU: never; bench/bench_train.py measured bf16 autocast slower
    than float32 for every profile backbone on an AVX-512 BF16 CPU without AMX (the CPU branch of
    :meth:`Trainer._autocast` stays for that benchmark and for callers who set ``trainer.amp``).
    """
    return bool(cfg.amp) and device.type != "cpu" and amp_supported(device)


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def release_memory() -> bool:
    """Return the heap's free pages to the OS (glibc ``malloc_trim(0)``); False where there is no glibc.

    The Makefile's allocator settings (no mmap, trim threshold 100 GB) keep every freed page for
    speed, so without this the resident size only grows; the trainer calls it at every epoch end.
    """
    lib = _libc()
    return bool(lib.malloc_trim(0)) if lib is not None else False


# =========================================================================================== trainer
@dataclasses.dataclass
class _Stage:
    name: str  # "head" | "full"
    first_epoch: int
    epochs: int
    lr: float


class Trainer:
    """Train a :class:`~fer_lib.models.MultiTaskNet` for one stage of the pipeline.

    ``Trainer(model, cfg, device=..., out_dir=...).fit(train, val)`` trains ``model`` in place, returns
    the history DataFrame and
    writes (rank 0, when ``out_dir`` is set) ``history.csv``, ``last.pt`` (every epoch, every
    ``cfg.save_every_steps`` steps and when stopped by ``cfg.max_train_seconds``) and ``best.pt``
    (best ``cfg.select_metric`` on the validation loader), all atomically. ``sample_weights`` (one per
    training sample) make each epoch a weighted draw with replacement instead of a shuffle
    (:class:`~fer_lib.training.distributed.EpochSampler`). With ``cfg.ema_decay`` the validated and
    selected weights (``best.pt``, the history's ``val_*``) are the moving average (:attr:`eval_model`),
    ``last.pt`` holds the training weights and the average beside them (an exact resume), and ``model``
    ends with the average.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        *,
        device: str | torch.device = "auto",
        out_dir: str | Path | None = None,
        task_weights: Mapping[str, float] | None = None,
        class_counts: Mapping[str, Sequence[int]] | None = None,
        class_weight_tasks: Sequence[str] = ("expression",),
        seed: int = 0,
        label_orders: Mapping[str, Sequence] | None = None,
        run_config: Mapping | None = None,
        num_workers: int = 0,
        progress: bool = True,
        allow_test_selection: bool = False,
        sample_weights: Sequence[float] | None = None,
    ) -> None:
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
        self.sample_weights = None if sample_weights is None else [float(w) for w in sample_weights]
        self.label_orders = {
            **default_label_orders(self.tasks),
            **{k: list(v) for k, v in (label_orders or {}).items()},
        }
        self.run_config = dict(run_config or {})
        self.amp = training_amp(cfg, self.device)
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.loss_fn: MultiTaskLoss | None = None
        if not 0.0 <= float(cfg.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no moving average), got {cfg.ema_decay}")
        self.ema = None

    # ------------------------------------------------------------------------------ set-up pieces
    @property
    def eval_model(self) -> nn.Module:
        """The weights validated and selected: the moving average with ``cfg.ema_decay``, else ``model``."""
        return self.model if self.ema is None else self.ema.module

    def _make_ema(self):
        """A moving average starting at ``model``'s weights (None without ``cfg.ema_decay``)."""
        if not self.cfg.ema_decay:
            return None
        from timm.utils import ModelEmaV3

        return ModelEmaV3(
            self.model, decay=float(self.cfg.ema_decay), use_warmup=True, warmup_power=EMA_WARMUP_POWER
        )

    @property
    def select_mode(self) -> str:
        """ "min" or "max": the direction fer_lib.metrics declares for ``select_metric``."""
        return M.metric_spec(self.cfg.select_metric.removeprefix("val_")).direction

    def _stages(self) -> list[_Stage]:
        out, start = [], 0
        for name, epochs, lr in (
            ("head", self.cfg.head_epochs, self.cfg.lr_head),
            ("full", self.cfg.full_epochs, self.cfg.lr_full),
        ):
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
                    warnings.warn(
                        f"no labelled {t} sample in the training set: {t} is not class-weighted", stacklevel=3
                    )
                else:
                    weights[t] = class_weights(self.class_counts[t])
        return MultiTaskLoss(
            self.tasks,
            self.task_weights,
            weights,
            self.cfg.label_smoothing,
            self.model.age_mode,
            self.cfg.age_sigma,
        ).to(self.device)

    def _train_loader(self, data: Dataset | DataLoader) -> tuple[DataLoader, EpochSampler]:
        parts = loader_parts(data, self.cfg.batch_size, self.num_workers)
        manifest = getattr(parts["dataset"], "manifest", None)
        if isinstance(manifest, pd.DataFrame):
            check_trainable(manifest)  # an evaluation-only dataset (CK+48) is never trained on
        n = len(parts["dataset"])
        sampler = EpochSampler(
            n,
            shuffle=True,
            seed=self.seed,
            rank=self.rank,
            world_size=self.world,
            weights=self.sample_weights,
        )
        per_rank = len(sampler)
        if per_rank == 0:
            raise ValueError("the training set is empty")
        # drop a ragged last batch (BatchNorm cannot train on one sample) unless the set is tiny
        drop_last = per_rank >= parts["batch_size"]
        self._generator = torch.Generator()
        loader = DataLoader(
            sampler=sampler,
            drop_last=drop_last,
            generator=self._generator,
            pin_memory=self.device.type == "cuda",
            **parts,
        )
        return loader, sampler

    def _eval_loader(self, data: Dataset | DataLoader) -> DataLoader:
        parts = loader_parts(data, self.cfg.batch_size, self.num_workers)
        check_not_test(parts["dataset"], self.allow_test_selection)
        gen = torch.Generator()
        gen.manual_seed(self.seed)
        return DataLoader(
            sampler=SequentialSampler(parts["dataset"]),
            generator=gen,
            pin_memory=self.device.type == "cuda",
            **parts,
        )

    def _setup_stage(self, stage: _Stage, steps_per_epoch: int) -> None:
        freeze_backbone(self.model, stage.name == "head")
        params = [p for p in self.model.parameters() if p.requires_grad]
        c = self.cfg
        self.optimizer = build_optimizer(params, c.optimizer, stage.lr, c.weight_decay, c.momentum)
        self.sam = SAM(self.optimizer, c.sam_rho) if c.sam else None
        self.scheduler = build_scheduler(
            self.optimizer, c.scheduler, stage.epochs * steps_per_epoch, steps_per_epoch, c.step_size, c.gamma
        )
        self._stage_clock = (time.perf_counter(), self.global_step, stage.epochs * steps_per_epoch)
        self.ddp_model = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp_model = None
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DDP(self.model, device_ids=ids)
        self.stage = stage

    # ------------------------------------------------------------------------------------ one step
    def _autocast(self):
        if self.amp and self.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return autocast_if(self.device, self.amp)

    def _forward_backward(self, x: torch.Tensor, lab: dict, mask: dict) -> tuple[torch.Tensor, dict, dict]:
        with self._autocast():
            out = self.ddp_model(x)
        loss, parts, counts = self.loss_fn(out, lab, mask)
        loss.backward()
        return loss, parts, counts

    def _clip(self) -> None:
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], self.cfg.grad_clip
            )

    def train_step(self, batch: Any) -> tuple[float, dict[str, float], dict[str, int]]:
        """One optimisation step (two passes with SAM); returns (loss, per-head losses, label counts)."""
        x, lab, mask = unpack_batch(batch)
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
            raise FloatingPointError(
                f"training loss is not finite at step {self.global_step} "
                f"(per head: {parts}); lower the learning rate or check the labels"
            )
        if self.sam is not None:
            self.sam.first_step()
            self.optimizer.zero_grad(set_to_none=True)
            with frozen_bn_stats(self.model):
                self._forward_backward(x, lab, mask)
            self._clip()
            self.sam.second_step()
        else:
            self._clip()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        total = sum(self.loss_fn.task_weights[t] * v for t, v in parts.items())  # no extra device sync
        return total, parts, counts

    # ------------------------------------------------------------------------------- checkpoints
    def _config_dict(self) -> dict[str, Any]:
        return {
            "train": dataclasses.asdict(self.cfg),
            "seed": self.seed,
            "task_weights": self.task_weights,
            "class_counts": self.class_counts,
            "world_size": self.world,
            "run": self.run_config,
        }

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "stage": self.stage.name,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "train_seconds": self.train_seconds,
            "history": self.history,
            "running": self.running,
        }

    def _save_last(self, rng: dict, metrics: dict) -> None:
        if not (self.is_main and self.out_dir is not None):
            return
        metrics = {**metrics, "train_seconds": self.train_seconds}
        save_checkpoint(
            self.out_dir / "last.pt",
            self.model,
            self._config_dict(),
            self.label_orders,
            metrics,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            epoch=self.epoch,
            step=self.global_step,
            rng=rng,
            extra={
                "trainer": self._trainer_state(),
                **({"ema": self.ema.module.state_dict()} if self.ema is not None else {}),
            },
        )

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
        if self.ema is not None:  # a checkpoint without an average (ema_decay was 0) starts one here
            self.ema = self._make_ema()
            if "ema" in ckpt["extra"]:
                self.ema.module.load_state_dict(ckpt["extra"]["ema"])
        st = ckpt["extra"]["trainer"]
        self.epoch, self.step_in_epoch, self.global_step = st["epoch"], st["step_in_epoch"], st["global_step"]
        self.best_value, self.best_epoch = st["best_value"], st["best_epoch"]
        self.train_seconds, self.history, self.running = (
            st["train_seconds"],
            list(st["history"]),
            st["running"],
        )
        old = ckpt["config"].get("train", {})
        changed = {
            k: (old.get(k), v)
            for k, v in dataclasses.asdict(self.cfg).items()
            if old.get(k) != v and k not in _RESUME_NEUTRAL
        }
        if changed and self.is_main:
            warnings.warn(
                f"resuming {path} with a changed config {changed}: the result will differ from an "
                "uninterrupted run",
                stacklevel=3,
            )
        if self.is_main:
            print(
                f"resumed {path}: epoch {self.epoch}, step {self.step_in_epoch} of it, global step {self.global_step}"
            )
        return ckpt

    # -------------------------------------------------------------------------------------- fit
    def _budget_exceeded(self, started: float) -> bool:
        limit = self.cfg.max_train_seconds
        if limit is None:
            return False
        stop = torch.tensor(
            [1.0 if time.perf_counter() - started > limit else 0.0],
            device=self.device if self.device.type == "cuda" else "cpu",
        )
        if self.world > 1:
            import torch.distributed as dist

            dist.broadcast(stop, src=0)
        return bool(stop.item() > 0)

    def _fit_schedule(self, started: float) -> None:
        """``cfg.fit_schedule_to_budget``: end the last stage's cosine where ``max_train_seconds`` will stop
        it, at the seconds per step (validation included) measured since this stage (re)started; never
        longer than the stage's nominal epochs. Rank 0's estimate is used by every rank."""
        c = self.cfg
        cosine = getattr(self.scheduler, "lr_lambdas", [None])[0]
        if not (c.fit_schedule_to_budget and c.max_train_seconds and isinstance(cosine, CosineToZero)):
            return
        if self.stage.name != self._stages()[-1].name:
            return
        t0, step0, nominal = self._stage_clock
        now = time.perf_counter()
        measured = self.global_step - step0
        if measured <= 0 or now <= t0:
            return
        left = max(0.0, c.max_train_seconds - (now - started))
        done = self.scheduler.last_epoch  # steps of this stage, before a resume included
        steps_left = int(left * measured / (now - t0))
        fit = torch.tensor([float(min(nominal, done + max(1, steps_left)))])
        if self.world > 1:
            import torch.distributed as dist

            dist.broadcast(fit, src=0)
        cosine.total = int(fit.item())

    def _validate(self, val_loader: DataLoader | None) -> dict[str, float]:
        """Validation metrics (rank 0; other ranks wait), as ``val_<metric>`` plus ``val_loss``."""
        metrics: dict[str, float] = {}
        if val_loader is not None and self.is_main:
            pred, loss = run_eval(
                self.eval_model,
                val_loader,
                self.device,
                self.loss_fn,
                amp=self.amp,
                channels_last=self.cfg.channels_last,
                progress=self.progress,
            )
            metrics = {
                "val_loss": loss,
                **{f"val_{k}": v for k, v in metrics_from_predictions(pred, self.tasks).items()},
            }
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
            raise ValueError(
                f"select_metric {self.cfg.select_metric!r} is not among the validation metrics "
                f"{sorted(k[4:] for k in metrics)}"
            )
        value = metrics[key]
        if not (isinstance(value, float) and math.isfinite(value)):
            return
        better = self.best_value is None or (
            value < self.best_value if self.select_mode == "min" else value > self.best_value
        )
        if better:
            self.best_value, self.best_epoch = float(value), self.epoch
            if self.out_dir is not None:
                save_checkpoint(
                    self.out_dir / "best.pt",
                    self.eval_model,
                    self._config_dict(),
                    self.label_orders,
                    {**metrics, "epoch": self.epoch, "train_seconds": self.train_seconds},
                    epoch=self.epoch,
                    step=self.global_step,
                    extra={"selected_on": key, "mode": self.select_mode},
                )

    def _epoch_row(self, epoch_index: int, partial: bool, seconds: float, metrics: dict) -> dict[str, Any]:
        r = self.running
        row = {
            "epoch": epoch_index + 1,
            "stage": self.stage.name,
            "partial": partial,
            "steps": r["steps"],
            "global_step": self.global_step,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "train_loss": r["loss"] / max(1, r["steps"]),
        }
        for t in self.tasks:
            n = r["task_batches"].get(t, 0)
            row[f"train_{t}_loss"] = r["task_loss"].get(t, 0.0) / n if n else float("nan")
        row.update({"epoch_seconds": seconds, "train_seconds": self.train_seconds})
        row.update(metrics)
        return row

    def fit(
        self,
        train: Dataset | DataLoader,
        val: Dataset | DataLoader | None = None,
        resume: bool = False,
        max_epochs: int | None = None,
    ) -> pd.DataFrame:
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
        if isinstance(pre, Preprocess):  # checkpoints carry what the faces went through, for every consumer
            self.model.preprocess = pre
        steps_per_epoch = len(train_loader)
        if self.cfg.max_steps_per_epoch:  # a capped epoch (quick runs of full-size recipes)
            steps_per_epoch = min(steps_per_epoch, int(self.cfg.max_steps_per_epoch))
        stages = self._stages()
        total_epochs = stages[-1].first_epoch + stages[-1].epochs
        self.loss_fn = self._make_loss(train_loader.dataset)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_value, self.best_epoch, self.history, self.train_seconds = None, None, [], 0.0
        self.running = self._fresh_running()
        self.ema = self._make_ema()
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
                if (
                    ckpt is not None
                    and ckpt["extra"]["trainer"]["stage"] == stage.name
                    and (self.epoch > stage.first_epoch or self.step_in_epoch > 0)
                ):
                    self.optimizer.load_state_dict(ckpt["optimizer"])
                    if self.scheduler is not None and ckpt["scheduler"] is not None:
                        self.scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt is not None:
                set_rng_state(ckpt["rng"])
                ckpt = None
            stopped = self._run_epoch(
                train_loader, sampler, val_loader, steps_per_epoch, total_epochs, started
            )
        if self.is_main:
            print(
                f"trained {self.epoch}/{total_epochs} epochs ({self.global_step} steps) in "
                f"{self.train_seconds:.1f} s of training"
                + (" - stopped by max_train_seconds" if stopped else "")
            )
        if self.ema is not None:
            self.model.load_state_dict(self.ema.module.state_dict())
        return pd.DataFrame(self.history)

    @staticmethod
    def _fresh_running() -> dict[str, Any]:
        return {"loss": 0.0, "steps": 0, "task_loss": {}, "task_batches": {}, "seconds": 0.0}

    def _run_epoch(
        self,
        loader: DataLoader,
        sampler: EpochSampler,
        val_loader: DataLoader | None,
        steps_per_epoch: int,
        total_epochs: int,
        started: float,
    ) -> bool:
        """Train one epoch (or its rest after a resume); returns True when the time budget stopped it."""
        epoch, start = self.epoch, self.step_in_epoch
        sampler.set_epoch(epoch, skip=start * loader.batch_size)
        self._generator.manual_seed(self.seed * 1_000_003 + epoch)  # worker seeds depend on (seed, epoch)
        self.model.train()
        r = self.running
        bar = tqdm(
            total=steps_per_epoch,
            initial=start,
            desc=f"epoch {epoch + 1}/{total_epochs} [{self.stage.name}]",
            disable=not (self.progress and self.is_main),
            leave=False,
        )
        stopped = False
        t0 = time.perf_counter()
        for batch in loader:
            loss, parts, counts = self.train_step(batch)
            self.global_step += 1
            self.step_in_epoch += 1
            if self.ema is not None:
                self.ema.update(self.model, step=self.global_step)
            r["loss"] += loss
            r["steps"] += 1
            for t, v in parts.items():
                if counts[t] > 0:
                    r["task_loss"][t] = r["task_loss"].get(t, 0.0) + v
                    r["task_batches"][t] = r["task_batches"].get(t, 0) + 1
            bar.update(1)
            bar.set_postfix(
                {
                    "loss": f"{r['loss'] / r['steps']:.3f}",
                    **{t: f"{r['task_loss'][t] / r['task_batches'][t]:.3f}" for t in r["task_loss"]},
                }
            )
            if self.global_step - self._stage_clock[1] == FIT_SCHEDULE_AFTER_STEPS:
                self._fit_schedule(started)  # a first estimate, before the first validation
            done = self.step_in_epoch >= steps_per_epoch
            if done:
                break
            if self._budget_exceeded(started):
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
        rng_mid = rng_state() if partial else None  # a mid-epoch stop resumes right here
        metrics = self._validate(val_loader)
        row = self._epoch_row(epoch, partial, r["seconds"], metrics)
        self.history.append(row)
        if not partial:
            self.epoch, self.step_in_epoch = epoch + 1, 0
            self.running = self._fresh_running()
        self._select_best(metrics)
        self._fit_schedule(started)
        self._save_last(rng_mid if partial else rng_state(), metrics)
        self._write_history()
        if self.cfg.trim_memory:
            release_memory()
        if self.is_main and self.progress:
            shown = {
                k: round(v, 4)
                for k, v in row.items()
                if isinstance(v, float) and (k.startswith("val_") or k in ("train_loss", "train_seconds"))
            }
            print(
                f"epoch {epoch + 1}/{total_epochs} [{self.stage.name}]{' (partial)' if partial else ''}: {shown}"
            )
        if not stopped and self._budget_exceeded(started) and self.epoch < total_epochs:
            stopped = True
        return stopped
