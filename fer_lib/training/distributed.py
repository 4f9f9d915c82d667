"""Data order and multi-device set-up: the seeded, resumable, shardable epoch order and DDP under torchrun."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..datasets import check_trainable


# ======================================================================================== data order
class EpochSampler(Sampler[int]):
    """Indices in an order that depends only on ``(seed, epoch)``, sharded over ranks, with a skip.

    Shuffled with a generator seeded from ``(seed, epoch)`` (never from the global RNG), padded by
    repetition to a multiple of ``world_size`` (as DistributedSampler) and split ``rank::world_size``.
    ``set_epoch(epoch, skip)`` drops the first ``skip`` indices of this rank (resume inside an epoch).
    With ``weights`` (one non-negative number per sample) an epoch is instead ``n`` draws with
    replacement, sample ``i`` drawn with probability ``weights[i] / sum(weights)``, from the same
    generator: every epoch a new draw, so that down-weighted samples are seen less often, not never.
    """

    def __init__(
        self,
        n: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, int(seed), rank, world_size
        self.epoch, self.skip = 0, 0
        self.weights = None
        if weights is not None:
            w = torch.as_tensor(weights, dtype=torch.float64)
            if w.shape != (n,) or not torch.isfinite(w).all() or (w < 0).any() or (n and w.sum() <= 0):
                raise ValueError(
                    f"sample weights must be {n} finite non-negative numbers, not all zero "
                    f"(got shape {tuple(w.shape)})"
                )
            if not shuffle:
                raise ValueError("sample weights draw a random epoch: they need shuffle=True")
            self.weights = w

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + self.epoch)
            if self.weights is not None and self.n:
                idx = torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist()
            else:
                idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        per_rank = math.ceil(self.n / self.world) if self.n else 0
        idx += idx[: per_rank * self.world - self.n]
        return idx[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.skip :])

    def __len__(self) -> int:
        return max(0, (math.ceil(self.n / self.world) if self.n else 0) - self.skip)


def loader_parts(data: Dataset | DataLoader, batch_size: int, num_workers: int) -> dict[str, Any]:
    if isinstance(data, DataLoader):
        return {
            "dataset": data.dataset,
            "batch_size": data.batch_size or batch_size,
            "num_workers": data.num_workers,
            "collate_fn": data.collate_fn,
        }
    return {"dataset": data, "batch_size": batch_size, "num_workers": num_workers, "collate_fn": None}


def check_not_test(dataset: Dataset, allow: bool) -> None:
    """Model selection never sees the reported test split (unless ``allow``) nor an evaluation-only
    dataset (CK+48: never, whatever ``allow`` says)."""
    manifest = getattr(dataset, "manifest", None)
    if isinstance(manifest, pd.DataFrame):
        check_trainable(manifest, "the validation loader")
    if allow or not isinstance(manifest, pd.DataFrame) or "split" not in manifest.columns:
        return
    if (manifest["split"].astype(str) == "test").any():
        raise ValueError(
            "the validation loader holds 'test' rows: model selection must not see the reported "
            "test split. Pass the 'val' split (or allow_test_selection=True if you know why)"
        )


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
