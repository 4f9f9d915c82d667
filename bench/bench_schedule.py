"""A time-budgeted attribute run with and without ``TrainConfig.fit_schedule_to_budget``, same run.

Trains the default profile's UTKFace attribute stage (ImageNet efficientnet_lite0, 112 px) twice on the
real UTKFace under FER_DATA_ROOT with the same seed, data and ``max_train_seconds``: once with the cosine
spanning the nominal epochs (the budget cuts it at a high learning rate), once with the cosine fitted to
the budget. Each arm runs in a fresh process and results folder, one after the other (the machine must
otherwise be quiet: the budget is wall time). Reports the balanced-test and last-validation metrics and
the learning rate the run ended at. Writes ``<results>/benchmarks/schedule_budget.{md,csv}``.

    FER_DATA_ROOT=../shared/datasets python bench/bench_schedule.py --budget 600 --seeds 2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _arms import emit, run_arms, seeded_arms  # noqa: E402

from fer_lib.config import get_paths  # noqa: E402
from fer_lib.provenance import git_commit  # noqa: E402
from fer_lib.reporting import to_markdown, write_benchmark  # noqa: E402


def arm(fit: bool, seed: int, budget: float) -> dict:
    """One training run (in this process): the stage's test metrics and its history's last row."""
    from fer_lib import config
    from fer_lib.models import load_checkpoint
    from fer_lib.stages import pretrain as stage
    from fer_lib.training.optim import CosineToZero

    overrides = {
        "seed": seed,
        "pretrain_attributes.max_train_seconds": budget,
        "pretrain_attributes.fit_schedule_to_budget": fit,
    }
    cfg = config.get_profile("default", overrides)
    paths = config.get_paths(cfg)
    config.seed_everything(cfg.seed)
    res = stage.train_attributes(cfg, paths, progress=False)
    test = stage.attribute_metrics(stage.predict_test(res, cfg))
    last = res.history.iloc[-1]
    sched = load_checkpoint(Path(res.checkpoint).with_name("last.pt"))["scheduler"]
    total = sched["lr_lambdas"][0]["total"]
    factor = CosineToZero(total)(sched["last_epoch"])
    return {
        "fit_schedule_to_budget": fit,
        "seed": seed,
        "budget_s": budget,
        "train_seconds": round(float(res.train_seconds), 1),
        "ended_in_stage": str(last["stage"]),
        "stage_steps": int(sched["last_epoch"]),
        "cosine_steps": int(total),
        "final_lr_factor": round(factor, 3),
        **{f"test_{k}": round(float(v), 4) for k, v in test.items()},
        **{k: round(float(last[k]), 4) for k in last.index if str(k).startswith("val_")},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=600.0, help="max_train_seconds of each arm (default 600)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per arm: 42, 43, ... (default 2)")
    ap.add_argument(
        "--out", default=None, help="folder for schedule_budget.md/.csv (default <results>/benchmarks)"
    )
    ap.add_argument("--arm", nargs=2, default=None, help=argparse.SUPPRESS)  # child: on|off seed
    args = ap.parse_args(argv)
    if args.arm:
        emit(arm(args.arm[0] == "on", int(args.arm[1]), args.budget))
        return 0
    if not os.environ.get("FER_DATA_ROOT"):  # `make bench` runs every script: skip, do not fail
        print("bench_schedule: skipped, FER_DATA_ROOT is unset (it trains on the real UTKFace under it)")
        return 0
    arms = seeded_arms(("off", "on"), args.seeds, ["--budget", str(args.budget)])
    rows, loads = run_arms(__file__, arms, "fer_schedule_")
    table = pd.DataFrame(rows).drop(columns="arm")
    scores = [c for c in table.columns if c.startswith(("test_", "val_"))]
    means = table.groupby("fit_schedule_to_budget")[scores].mean().T
    head = (
        "# Cosine schedule fitted to the time budget vs spanning the nominal epochs\n\n"
        f"Command: `FER_DATA_ROOT=... python bench/bench_schedule.py --budget {args.budget:g} --seeds "
        f"{args.seeds}` at commit "
        f"`{git_commit()}`. Default profile's UTKFace attribute stage (ImageNet efficientnet_lite0, 112 px, "
        "batch 64, 1 head-only epoch then all layers, 12 nominal all-layer epochs), real UTKFace, the same seed "
        "and data in both arms per seed (42, 43, ...), each arm in a fresh process, one after the other; load average (1 min) after "
        f"each arm: {', '.join(f'{v:.1f}' for v in loads)}. test_* = the balanced 2,000-face test list; val_* = "
        "the last validation; ended_in_stage = the stage the budget stopped (head-only or all layers); stage_steps / cosine_steps = "
        "the steps that stage ran / the length its cosine ended with; "
        "final_lr_factor = the learning rate it stopped at, as a fraction of the peak. The choice is made on "
        "the validation columns' means over seeds.\n\n"
        f"Means over seeds (columns: fit_schedule_to_budget):\n\n{to_markdown(means.round(4).reset_index())}"
        "\n\nEvery run:\n\n"
    )
    write_benchmark(
        table,
        "schedule_budget",
        head,
        folder=Path(args.out) if args.out else get_paths().results / "benchmarks",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
