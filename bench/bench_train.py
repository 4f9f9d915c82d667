"""Training throughput: the real data loader vs the same step on tensors already in memory.

For each backbone x image size, the Trainer's own optimisation step (``Trainer.train_step``: forward,
masked multi-task loss on the age / gender / race heads, backward, Adam) runs

- in memory: on batches decoded once before timing (the arithmetic alone, the baseline), and
- with the loader, first epoch: ``FaceDataset`` + ``DataLoader`` reading the UTKFace JPEGs of
  ``$FER_DATA_ROOT`` (decode + crop + resize + normalise each step), with 0 and 1 workers;
- with the loader, later epochs: the same with FaceDataset's in-memory cache of decoded faces warm
  (what every epoch after the first costs),

in the same process, and prints images per second and the loader's overhead over the in-memory step
(target: <= 15 %). Peak RSS (this process + loader workers) is reported. Without real data it falls back
to the synthetic UTKFace-format chips (same JPEG path). Writes ``<results>/benchmarks/train.{md,csv}``.

    FER_DATA_ROOT=/path/to/datasets python bench/bench_train.py [--steps 8 --batch 32]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_lib.config import TrainConfig, get_profile  # noqa: E402
from fer_lib.data import FaceDataset, make_loader  # noqa: E402
from fer_lib.datasets.sources import load_for_profile  # noqa: E402
from fer_lib.models import MultiTaskNet  # noqa: E402
from fer_lib.reporting import write_benchmark  # noqa: E402
from fer_lib.training import Trainer  # noqa: E402

TASKS = {"age": 100, "gender": 1, "race": 5}


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024


def make_trainer(backbone: str, size: int, batch: int, dataset) -> Trainer:
    torch.manual_seed(0)
    model = MultiTaskNet(backbone, TASKS, verbose=False)
    cfg = TrainConfig(backbone=backbone, image_size=size, batch_size=batch, head_epochs=0, full_epochs=1,
                      scheduler="none", amp=False)
    tr = Trainer(model, cfg, device="cpu", progress=False, class_weight_tasks=())
    tr.loss_fn = tr._make_loss(dataset)
    tr._setup_stage(tr._stages()[-1], steps_per_epoch=1000)
    return tr


def timed_steps(trainer: Trainer, batches, steps: int, warmup: int = 2) -> float:
    """Seconds per step over ``steps`` steps after ``warmup`` (the data source is part of the timing)."""
    it = iter(batches)
    for _ in range(warmup):
        trainer.train_step(next(it))
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(it))
    return (time.perf_counter() - t0) / steps


def cycle(loader):
    while True:
        yield from loader


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["mobilenetv2_100", "efficientnet_b0"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[112, 224])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--workers", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    prof = get_profile("default", {"data.real_limit": 4096})
    df, _, src = load_for_profile("utkface", prof, progress=False)
    df = df[df.split == "train"].reset_index(drop=True)
    print(f"UTKFace ({src.kind}, {src.root}): {len(df)} training images; torch threads {args.threads}", flush=True)
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            ds = FaceDataset(df, image_size=size)
            trainer = make_trainer(backbone, size, args.batch, ds)
            n_mem = min(len(ds), args.batch * 2)
            mem_batches = list(make_loader(torch.utils.data.Subset(ds, range(n_mem)), args.batch))
            base = timed_steps(trainer, cycle(mem_batches), args.steps)
            row = {"backbone": backbone, "size": size, "batch": args.batch,
                   "in_memory_img_s": round(args.batch / base, 1)}
            for w in args.workers:
                cold = FaceDataset(df, image_size=size, cache_bytes=0)
                loader = make_loader(cold, args.batch, shuffle=True, num_workers=w, seed=0)
                sec = timed_steps(trainer, cycle(loader), args.steps)
                row[f"epoch1_w{w}_img_s"] = round(args.batch / sec, 1)
                row[f"epoch1_w{w}_overhead_pct"] = round(100 * (sec / base - 1), 1)
                del loader
            n_used = args.batch * (args.steps + 2)
            warm = FaceDataset(df.iloc[:n_used].reset_index(drop=True), image_size=size)
            for i in range(len(warm)):
                warm.face_array(i)
            sec = timed_steps(trainer, cycle(make_loader(warm, args.batch, shuffle=True, seed=0)), args.steps)
            row["cached_w0_img_s"] = round(args.batch / sec, 1)
            row["cached_w0_overhead_pct"] = round(100 * (sec / base - 1), 1)
            row["meets_15pct"] = row["cached_w0_overhead_pct"] <= 15.0
            row["peak_rss_mb"] = round(peak_rss_mb(), 0)
            rows.append(row)
            print(row, flush=True)
    out = pd.DataFrame(rows)
    load = os.getloadavg()[0]
    write_benchmark(
        out, "train",
        f"# Training throughput: real JPEG loader vs in-memory step ({src.kind} UTKFace, batch {args.batch}, "
        f"{args.threads} threads)\n\n",
        f"\nOverhead = loader step time / in-memory step time - 1, both measured in this run on the "
        f"Trainer's own step; epoch1 decodes every JPEG, cached = later epochs (FaceDataset's decoded-face "
        f"cache warm); wN = N DataLoader workers. The target (<= 15 %) is judged on the later epochs. Load average at the end: {load:.1f}. Command: "
        f"`FER_DATA_ROOT=/path/to/datasets python bench/bench_train.py`.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
