"""Checkpoints: ``state_dict`` + plain config + label orders + metrics (+ resume state), atomic writes.

A checkpoint is a dict of plain Python values and tensors only, so it loads with
``torch.load(weights_only=True)`` (no pickled classes, no code run on load) and survives timm
upgrades, unlike whole pickled models::

    {"format": "fer_lib.checkpoint/1", "model_config": {...}, "state_dict": {...}, "config": {...},
     "label_orders": {"expression": [...], ...}, "metrics": {...},
     "optimizer": ..., "scheduler": ..., "epoch": int, "step": int, "rng": {...}, "extra": {...},
     "metrics_model": str}

``metrics_model`` is the ``model`` name of the checkpoint's rows in ``metrics.csv``, set when a stage
records them (:func:`fer_lib.reporting.record_metrics` with ``checkpoint=``; absent until then).

``model_config["kind"]`` names the model class (:data:`DEFAULT_KIND` ``"multitask"``, a
:class:`MultiTaskNet`, also for checkpoints written before kinds were stored; ``"emotion_gcn"``, paper B's
:class:`~fer_lib.models.emotion_gcn.GCNNet`). ``build_model_from_checkpoint`` asks the builder
registered for that kind (:func:`register_model_kind`, like timm's model registry) to rebuild the model
with its preprocessing and weights, so everything that serves checkpoints (``Recognizer``, ``predict``,
``export``, the video features) serves every kind; ``init_from_checkpoint`` initialises a model of another head layout from it (e.g. an attribute
checkpoint initialises an expression model): tensors whose shape differs are dropped with a warning,
like timm does for classifiers.
"""

from __future__ import annotations

import dataclasses
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import atomic_torch_save
from ..preprocess import from_checkpoint as preprocess_from_checkpoint
from ..tasks import default_label_orders
from .heads import MultiTaskNet
from .weights import LoadReport, load_matching

FORMAT = "fer_lib.checkpoint/1"
#: The kind of a model config that names none (MultiTaskNet's, and every checkpoint older than kinds).
DEFAULT_KIND = "multitask"

#: ``builder(ckpt, **overrides) -> nn.Module``: the model of a loaded checkpoint dict, weights loaded
#: (strict), ``preprocess`` set; ``overrides`` replace constructor arguments (builders may refuse them).
ModelBuilder = Callable[..., nn.Module]
_BUILDERS: dict[str, ModelBuilder] = {}


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def to_plain(obj: Any, where: str = "checkpoint") -> Any:
    """Convert to types ``torch.load(weights_only=True)`` accepts; TypeError names what does not fit."""
    if obj is None or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)  # also str subclasses such as torch.__version__
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.device | torch.dtype):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain(dataclasses.asdict(obj), where)
    if isinstance(obj, dict):
        return {to_plain(k, where): to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(out) if isinstance(obj, tuple) else out
    raise TypeError(
        f"{where}: a {type(obj).__name__} cannot be stored in a weights_only checkpoint; "
        "convert it to plain values (numbers, strings, lists, dicts, tensors)"
    )


# ------------------------------------------------------------------------------------ RNG states
def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU + CUDA) RNG states as plain values."""
    np_state = np.random.get_state()  # noqa: NPY002 - the global state is what third-party code uses
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    legacy = (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    np.random.set_state(legacy)  # noqa: NPY002 - the global state is what third-party code uses
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------- save
def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: dict | None = None,
    label_orders: dict | None = None,
    metrics: dict | None = None,
    *,
    optimizer: Any = None,
    scheduler: Any = None,
    epoch: int | None = None,
    step: int | None = None,
    rng: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (see the module docstring for its content); returns ``path``.

    ``optimizer`` / ``scheduler`` are objects with ``state_dict()`` (or already their state dicts);
    ``rng`` is :func:`rng_state` (pass it for an exactly resumable checkpoint).
    """
    net = unwrap(model)
    model_config = {"kind": DEFAULT_KIND, **net.config()} if hasattr(net, "config") else None
    metrics = {
        k: (float(v) if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else v)
        for k, v in (metrics or {}).items()
    }
    ckpt = {
        "format": FORMAT,
        "model_config": model_config,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "config": config or {},
        "label_orders": {
            k: list(v) if isinstance(v, (list, tuple)) else v for k, v in (label_orders or {}).items()
        },
        "metrics": metrics,
        "optimizer": optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer,
        "scheduler": scheduler.state_dict() if hasattr(scheduler, "state_dict") else scheduler,
        "epoch": epoch,
        "step": step,
        "rng": rng,
        "extra": extra or {},
        "versions": {"torch": torch.__version__},
    }
    return atomic_torch_save(to_plain(ckpt), path)


def update_checkpoint(path: str | Path, **fields: Any) -> Path:
    """Set top-level ``fields`` of a saved checkpoint (e.g. ``metrics_model``), rewriting it atomically."""
    ckpt = load_checkpoint(path)
    ckpt.update(to_plain(fields))
    return atomic_torch_save(ckpt, path)


# ----------------------------------------------------------------------------------------- load
def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a fer_lib checkpoint with ``torch.load(weights_only=True)``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; train the stage that writes it first "
            "(or point to the run folder's checkpoints/, e.g. runs/default/checkpoints)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with advice
        raise ValueError(
            f"{path} cannot be read as a weights-only fer_lib checkpoint ({type(exc).__name__}). A whole "
            "pickled model (e.g. a public HSEmotion .pt) loads only through "
            "fer_lib.models.read_state_dict(path, trust_pickle=True), if you trust its source"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a fer_lib checkpoint (no format={FORMAT!r} entry); for a bare "
            "state dict use fer_lib.models.read_state_dict / init_from_checkpoint"
        )
    return ckpt


def _as_ckpt(ckpt_or_path: dict | str | Path) -> dict[str, Any]:
    return ckpt_or_path if isinstance(ckpt_or_path, dict) else load_checkpoint(ckpt_or_path)


# ----------------------------------------------------------------------------------- model kinds
def register_model_kind(kind: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder(ckpt, **overrides) -> nn.Module`` for checkpoints whose
    ``model_config["kind"]`` is ``kind`` (replacing an earlier builder of that kind)."""

    def deco(builder: ModelBuilder) -> ModelBuilder:
        _BUILDERS[kind] = builder
        return builder

    return deco


def list_model_kinds() -> list[str]:
    """The model kinds that :func:`build_model_from_checkpoint` can rebuild."""
    return sorted(_BUILDERS)


def model_kind(ckpt: dict[str, Any]) -> str:
    """``model_config["kind"]`` of a loaded checkpoint, :data:`DEFAULT_KIND` where it names none."""
    return str((ckpt.get("model_config") or {}).get("kind") or DEFAULT_KIND)


def build_model_from_checkpoint(ckpt_or_path: dict | str | Path, **overrides: Any) -> nn.Module:
    """Rebuild the stored model (any registered kind) with its preprocessing and load its weights (strict)."""
    ckpt = _as_ckpt(ckpt_or_path)
    where = str(ckpt_or_path) if not isinstance(ckpt_or_path, dict) else "checkpoint"
    if not ckpt.get("model_config"):
        raise ValueError(f"{where} has no model_config; it was not saved from a fer_lib model")
    kind = model_kind(ckpt)
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise ValueError(
            f"{where} holds a model of kind {kind!r}, which no builder is registered for; known kinds: "
            f"{', '.join(list_model_kinds())} (register one with fer_lib.models.register_model_kind)"
        )
    return builder(ckpt, **overrides)


@register_model_kind(DEFAULT_KIND)
def multitask_from_checkpoint(ckpt: dict[str, Any], **overrides: Any) -> MultiTaskNet:
    """The :class:`MultiTaskNet` of a checkpoint (``overrides``: constructor arguments to change)."""
    cfg = ckpt["model_config"]
    keys = (
        "backbone",
        "tasks",
        "hidden",
        "dropout",
        "age_mode",
        "male_threshold",
        "pool",
        "head_on",
        "grey_heads",
        "mirror",
    )
    kwargs = {k: cfg[k] for k in keys if k in cfg}
    kwargs.update(overrides)
    model = MultiTaskNet(**kwargs, verbose=False)
    model.preprocess = preprocess_from_checkpoint(ckpt)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model


def load_model(checkpoint: nn.Module | dict | str | Path) -> tuple[nn.Module, dict[str, list], str]:
    """A ready model for serving: ``(model in eval mode on the CPU, label orders, source name)``.

    ``checkpoint`` is a path, a loaded checkpoint dict (any registered kind) or a model (used as it is,
    unwrapped). Label orders are the checkpoint's, else the canonical ones of the model's heads.
    """
    if isinstance(checkpoint, nn.Module):
        model, orders, source = unwrap(checkpoint), None, type(checkpoint).__name__
    else:
        ckpt = _as_ckpt(checkpoint)
        model, orders = build_model_from_checkpoint(ckpt), ckpt.get("label_orders")
        source = str(checkpoint) if not isinstance(checkpoint, dict) else "<checkpoint>"
    if not hasattr(model, "tasks") or not hasattr(model, "preprocess"):
        raise TypeError(
            f"{source}: a fer_lib model is needed (a MultiTaskNet or GCNNet, with .tasks and .preprocess)"
        )
    orders = {k: list(v) for k, v in (orders or default_label_orders(model.tasks)).items()}
    return model.eval(), orders, source


def load_state_dict_adapted(
    model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "<state dict>"
) -> LoadReport:
    """Load what fits: same-name same-shape tensors; warn about tensors dropped for their shape.

    Heads present in the model but not in the state dict keep their initialisation (``missing``);
    heads only in the state dict are ignored (``unexpected``).
    """
    net = unwrap(model)
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    report = load_matching(net, state, source)
    if report.mismatched:
        warnings.warn(
            f"{source}: dropped {len(report.mismatched)} tensor(s) whose shape differs from the "
            f"model (re-initialised): {', '.join(report.mismatched)}",
            stacklevel=2,
        )
    return report


def init_from_checkpoint(model: nn.Module, ckpt_or_path: dict | str | Path) -> LoadReport:
    """Initialise ``model`` from a checkpoint of possibly other heads (see :func:`load_state_dict_adapted`)."""
    ckpt = _as_ckpt(ckpt_or_path)
    source = str(ckpt_or_path) if not isinstance(ckpt_or_path, dict) else "<checkpoint>"
    cfg = ckpt.get("model_config") or {}
    net = unwrap(model)
    if cfg.get("backbone") and getattr(net, "backbone_name", cfg["backbone"]) != cfg["backbone"]:
        raise ValueError(
            f"{source} holds backbone {cfg['backbone']!r} but the model uses "
            f"{net.backbone_name!r}; build the model with the checkpoint's backbone"
        )
    return load_state_dict_adapted(model, ckpt["state_dict"], source)
