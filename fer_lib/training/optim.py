"""Optimisers and schedules of the trainer: SAM around a base optimizer (paper A), frozen-BatchNorm
statistics for SAM's second pass, Adam / AdamW / SGD and cosine / step / no schedule per step."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


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
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
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


#: Optimisers by name: ``(params, lr, weight_decay, momentum) -> optimizer``.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr, wd, momentum: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd, momentum: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, wd, momentum: torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=wd
    ),
}


def choose(table: dict, name: str, what: str):
    """``table[name]``, or a ValueError that lists the names to choose from."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(table)}")
    return table[name]


def build_optimizer(
    params, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """One of :data:`OPTIMIZERS` (``adam`` | ``adamw`` | ``sgd`` with momentum) over ``params``."""
    return choose(OPTIMIZERS, name.lower(), "optimizer")(params, lr, weight_decay, momentum)


class CosineToZero:
    """LR factor ``0.5 (1 + cos(pi t / total))`` at step t, 0 from ``total`` on. ``total`` may be changed
    during training (the trainer fits it to a time budget); LambdaLR's state_dict keeps it."""

    def __init__(self, total: int):
        self.total = max(1, int(total))

    def __call__(self, step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / self.total)))


#: Per-step schedulers by name: ``(optimizer, total_steps, steps_per_epoch, step_size, gamma) -> scheduler``
#: (None: a constant learning rate).
SCHEDULERS: dict[str, Callable[..., Any]] = {
    "cosine": lambda opt, total, per_epoch, step_size, gamma: torch.optim.lr_scheduler.LambdaLR(
        opt, CosineToZero(total)
    ),
    "step": lambda opt, total, per_epoch, step_size, gamma: torch.optim.lr_scheduler.StepLR(
        opt, step_size=max(1, step_size * per_epoch), gamma=gamma
    ),
    "none": lambda *args: None,
}


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    steps_per_epoch: int,
    step_size: int = 10,
    gamma: float = 0.1,
):
    """Per-step scheduler from :data:`SCHEDULERS`: ``cosine`` (to 0 over the stage, :class:`CosineToZero`),
    ``step`` (x gamma every step_size epochs), ``none``."""
    make = choose(SCHEDULERS, (name or "none").lower(), "scheduler")
    return make(optimizer, total_steps, steps_per_epoch, step_size, gamma)
