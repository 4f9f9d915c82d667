"""The Trainer under DistributedDataParallel: 2 CPU processes, gloo backend (as torchrun would start them)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

TASKS = {"expression": 4, "gender": 1, "va": 2}


class RandomFaces(Dataset):
    """16 random 32x32 images with (image, labels, mask) items; every rank builds the same one."""

    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 32, 32, generator=g)
        self.expr = torch.randint(0, 4, (n,), generator=g)
        self.gender = torch.randint(0, 2, (n,), generator=g)
        self.va = torch.rand(n, 2, generator=g) * 2 - 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        lab = {
            "expression": self.expr[i],
            "gender": self.gender[i],
            "valence": self.va[i, 0],
            "arousal": self.va[i, 1],
            "age": torch.tensor(0.0),
            "race": torch.tensor(0),
            "identity": torch.tensor(0),
        }
        mask = {k: torch.tensor(k not in ("age", "race", "identity")) for k in lab}
        return self.x[i], lab, mask


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    from tiny import tiny_config

    from fer_lib.config import seed_everything
    from fer_lib.models import MultiTaskNet
    from fer_lib.training import Trainer, cleanup_distributed

    seed_everything(0)
    model = MultiTaskNet("tiny_cnn", TASKS, hidden=16)
    # 16 samples, 2 ranks, batch 8: one optimisation step per epoch; head-only epoch then full epoch
    cfg = tiny_config(batch_size=8, head_epochs=1, lr_head=1e-2, lr_full=1e-2, sam=True)
    trainer = Trainer(model, cfg, device="cpu", out_dir=Path(root) / f"rank{rank}", progress=False)
    trainer.fit(RandomFaces(), RandomFaces(8))
    torch.save({k: v.detach().clone() for k, v in model.named_parameters()}, Path(root) / f"params{rank}.pt")
    cleanup_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_stay_in_sync_and_only_rank0_writes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    p0 = torch.load(tmp_path / "params0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "params1.pt", weights_only=True)
    assert p0.keys() == p1.keys()
    assert all(torch.equal(p0[k], p1[k]) for k in p0), "ranks diverged: gradients were not averaged"
    # the weights moved away from the (shared) initialisation in both stages
    torch.manual_seed(0)
    from fer_lib.models import MultiTaskNet

    init = dict(MultiTaskNet("tiny_cnn", TASKS, hidden=16).named_parameters())
    assert not torch.equal(init["heads.expression.weight"], p0["heads.expression.weight"])
    assert not torch.equal(init["backbone.features.0.weight"], p0["backbone.features.0.weight"])
    written = sorted(p.name for p in (tmp_path / "rank0").iterdir())
    assert written == ["best.pt", "history.csv", "last.pt"]
    assert not (tmp_path / "rank1").exists()
