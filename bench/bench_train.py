"""Training throughput: one full Trainer step (forward, loss, backward, optimiser) under each CPU setting.

Default mode (``--steps``): for each backbone at the size the profiles train it, ``Trainer.train_step``
(masked multi-task loss on the age / gender / race heads, AdamW) on batches already in memory runs as

- ``fp32 NCHW``: eager float32, contiguous NCHW (the baseline);
- ``channels_last``: model and batch in channels_last;
- ``bf16 NCHW`` / ``bf16 channels_last``: CPU autocast to bfloat16, float32 master weights;
- ``trainer default``: what ``Trainer`` picks for ``TrainConfig()`` settings on this device
  (``fer_lib.training.trainer.training_amp``), i.e. the choice this benchmark justifies;
- ``1 thread``: the baseline with ``torch.set_num_threads(1)`` (2 by default);
- ``compile``: ``torch.compile`` of the trainer default (``--compile``; its compile time, the first
  steps, is reported separately, with the number of steps it needs to pay back).

Variants are interleaved (A B C ... A B C ...) for ``--repeats`` rounds and the fastest round of each is
kept, so drift of the shared machine's load hits them alike; ratios are against the baseline of the same
run. FLOPs per step come from ``torch.utils.flop_counter.FlopCounterMode`` over one float32 step; the
ceiling is a float32 2048^3 matmul measured in the same run (as bench_inference does).

``--loader``: the earlier measurement of the real JPEG loader (UTKFace of ``$FER_DATA_ROOT``) against the
same step on tensors in memory (``train.md``). ``--memory``: see ``bench_memory_run``.

    .venv/bin/python bench/bench_train.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_inference import matmul_ceiling  # noqa: E402 - one measurement of the ceiling for both tables

from fer_lib.config import TrainConfig, get_paths, get_profile  # noqa: E402
from fer_lib.models import MultiTaskNet  # noqa: E402
from fer_lib.reporting import write_benchmark  # noqa: E402
from fer_lib.training import Trainer  # noqa: E402
from fer_lib.training.trainer import cpu_bf16_native, release_memory  # noqa: E402

TASKS = {"age": 100, "gender": 1, "race": 5}
#: backbone -> input size of the profiles (default: lite0 112 px on UTKFace; fer_cnn_s 64 px identity)
SIZES = {"efficientnet_lite0": 112, "mobilenetv2_100": 112, "fer_cnn_s": 64}


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024


def load_text() -> str:
    return "load average {:.1f} / {:.1f} / {:.1f} (1 / 5 / 15 min)".format(*os.getloadavg())


def synthetic_batches(n: int, batch: int, size: int, seed: int = 0) -> list:
    """``n`` FaceDataset-format batches (image, labels, mask) of random images and labels."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(batch, 3, size, size, generator=g)
        lab = {
            "age": torch.randint(1, 90, (batch,), generator=g).float(),
            "gender": torch.randint(0, 2, (batch,), generator=g),
            "race": torch.randint(0, 5, (batch,), generator=g),
        }
        out.append((x, lab, {k: torch.ones(batch, dtype=torch.bool) for k in lab}))
    return out


def make_trainer(model: torch.nn.Module, cfg: TrainConfig, dataset=None, amp: bool | None = None) -> Trainer:
    """A Trainer ready for ``train_step`` on the all-layer stage (``amp`` forces bf16 autocast on / off)."""
    tr = Trainer(copy.deepcopy(model), cfg, device="cpu", progress=False, class_weight_tasks=())
    if amp is not None:
        tr.amp = amp
    tr.loss_fn = tr._make_loss(dataset)
    tr._setup_stage(tr._stages()[-1], steps_per_epoch=1000)
    tr.global_step = 0
    return tr


def step_flops(trainer: Trainer, batch) -> float:
    """FLOPs of one training step: 3 x the forward pass's (FlopCounterMode, 2 per multiply-add; backward =
    2 x forward). The counter's own backward count is not used: it counts a grouped (depthwise)
    convolution's backward as a dense one (efficientnet_lite0 at 112 px, batch 32: 282 GFLOP against a
    6.8 GFLOP forward; fer_cnn_s, plain convolutions: 12.4 against 6.3, i.e. the 2x rule)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        trainer.model(batch[0])
    return 3.0 * float(counter.get_total_flops())


@contextlib.contextmanager
def threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def time_steps(trainer: Trainer, batches: list, steps: int, n_threads: int) -> float:
    """Seconds per step over ``steps`` steps (after one untimed step)."""
    with threads(n_threads):
        trainer.train_step(batches[0])
        t0 = time.perf_counter()
        for i in range(steps):
            trainer.train_step(batches[(i + 1) % len(batches)])
        return (time.perf_counter() - t0) / steps


#: OpenMP settings timed in separate processes (libgomp reads them once, when torch loads it)
ENVS = {"spin": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}}


def steps_child(args) -> dict:
    """One interleaved round of every in-process variant of every backbone (in this process's OpenMP
    setting): seconds per step, FLOPs per step, the matmul ceiling, compile time."""
    torch.set_num_threads(args.threads)
    out = {"ceiling": matmul_ceiling(), "models": {}}
    for backbone in args.backbones:
        size = args.size or SIZES.get(backbone, 112)
        torch.manual_seed(0)
        model = MultiTaskNet(backbone, TASKS, verbose=False)
        batches = synthetic_batches(3, args.batch, size)
        base_cfg = dict(
            backbone=backbone,
            image_size=size,
            batch_size=args.batch,
            head_epochs=0,
            full_epochs=1,
            scheduler="none",
            optimizer="adamw",
            class_weights=False,
        )

        def trainer(amp: bool, cl: bool, _m=model, _c=base_cfg) -> Trainer:
            return make_trainer(_m, TrainConfig(**_c, amp=amp, channels_last=cl), amp=amp)

        variants = {
            "fp32 NCHW": (trainer(False, False), args.threads),
            "channels_last": (trainer(False, True), args.threads),
            "bf16 NCHW": (trainer(True, False), args.threads),
            "bf16 channels_last": (trainer(True, True), args.threads),
            "fp32 NCHW, 1 thread": (trainer(False, False), 1),
            "channels_last, 1 thread": (trainer(False, True), 1),
        }
        rec = {"size": size, "flops": step_flops(trainer(False, False), batches[0]), "sec": {}}
        if args.compile:
            tr = trainer(False, True)
            tr.ddp_model = torch.compile(tr.model)
            t0 = time.perf_counter()
            with threads(args.threads):
                tr.train_step(batches[0])
                tr.train_step(batches[1])
            rec["compile_first2_s"] = time.perf_counter() - t0
            variants["channels_last, torch.compile"] = (tr, args.threads)
        for name, (tr, nt) in variants.items():
            rec["sec"][name] = time_steps(tr, batches, args.steps, nt)
            print(
                f"  {backbone}: {name}: {args.batch / rec['sec'][name]:.1f} img/s ({load_text()})", flush=True
            )
        out["models"][backbone] = rec
    return out


def steps_main(args) -> int:
    """Runs ``steps_child`` in a fresh process per (round, OpenMP setting), interleaved, and tabulates."""
    import json
    import subprocess

    print(
        f"torch {torch.__version__}, {args.threads} threads, native bf16: {cpu_bf16_native()}; {load_text()}",
        flush=True,
    )
    child_args = [a for a in args.argv if a != "--quick"] + [
        "--child",
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--no-compile",
    ]
    runs: dict[str, list[dict]] = {e: [] for e in ENVS}
    loads = []
    for r in range(args.repeats):
        for env_name, extra in ENVS.items():
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | extra
            cargs = list(child_args)
            if args.compile and r == 0 and env_name == "passive":
                cargs[cargs.index("--no-compile")] = "--compile"
            print(f"round {r + 1}, OpenMP {env_name}:", flush=True)
            proc = subprocess.run([sys.executable, __file__, *cargs], env=env, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            print(
                "\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith("RESULT ")), flush=True
            )
            if proc.returncode or not lines:
                raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-3000:]}")
            runs[env_name].append(json.loads(lines[-1][len("RESULT ") :]))
            loads.append(os.getloadavg()[0])
    ceiling = max(run["ceiling"] for rs in runs.values() for run in rs)
    rows = []
    for backbone in args.backbones:
        best: dict[tuple[str, str], float] = {}
        compile_s = None
        for env_name, rs in runs.items():
            for run in rs:
                rec = run["models"][backbone]
                for name, sec in rec["sec"].items():
                    best[(env_name, name)] = min(best.get((env_name, name), float("inf")), sec)
                if "compile_first2_s" in rec:
                    compile_s = rec["compile_first2_s"]
        rec = runs["spin"][0]["models"][backbone]
        flops, size = rec["flops"], rec["size"]
        base = best[("spin", "fp32 NCHW")]
        for (env_name, name), sec in best.items():
            row = {
                "backbone": backbone,
                "size": size,
                "batch": args.batch,
                "openmp_wait": env_name,
                "variant": name,
                "img_per_s": round(args.batch / sec, 1),
                "ms_per_step": round(1000 * sec, 1),
                "speedup_vs_baseline": round(base / sec, 2),
                "gflop_per_step": round(flops / 1e9, 2),
                "fraction_of_ceiling": round(flops / sec / ceiling, 3),
                "compile_s": float("nan"),
                "payback_steps": float("nan"),
            }
            if "compile" in name and compile_s is not None:
                eager = best[(env_name, "channels_last")]
                row["compile_s"] = round(compile_s - 2 * eager, 1)
                gain = eager - sec
                row["payback_steps"] = round(row["compile_s"] / gain) if gain > 0 else float("inf")
            rows.append(row)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False), flush=True)
    cmd = ".venv/bin/python bench/bench_train.py " + " ".join(args.argv)
    head = (
        f"# Training step throughput on the CPU: float32 NCHW vs channels_last, bf16 autocast, threads, "
        f"OpenMP waiting, torch.compile\n\nCommand: `{cmd.strip()}`. One `Trainer.train_step` (forward, "
        f"masked multi-task loss on age / gender / race, backward, AdamW, float32 master weights) on batches "
        f"of {args.batch} random images already in memory, {args.threads} torch threads unless stated, torch "
        f"{torch.__version__}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, native "
        f"bf16 {cpu_bf16_native()}. Each round runs every variant, interleaved, in a fresh process per OpenMP "
        f"setting (openmp_wait: spin = libgomp's default busy-waiting, passive = OMP_WAIT_POLICY=PASSIVE; "
        f"libgomp reads it only at start-up); best of {args.repeats} round(s) of {args.steps} steps. "
        f"Baseline (speedup 1) = fp32 NCHW, 2 threads, spin (torch's defaults), best of the same rounds. "
        f"Ceiling: the best float32 2048x2048 matmul of the run, {ceiling / 1e9:.1f} GFLOP/s; gflop_per_step "
        f"= 3 x the forward FLOPs of FlopCounterMode (backward = 2 x forward; the counter over-counts "
        f"depthwise-convolution backward, see step_flops); fraction_of_ceiling = FLOPs per "
        f"step / seconds per step / ceiling. Inter-op threads do not matter here: eager training runs no "
        f"inter-op parallel work. compile_s = first two compiled steps minus two eager channels_last steps "
        f"(round 1, passive); payback_steps = compile_s / time saved per step.\n\nMachine load (1 min) after "
        f"each child: {', '.join(f'{x:.1f}' for x in loads)}; at the end {load_text()} (a shared 2-core "
        "machine: only ratios within this run mean something).\n\n"
    )
    print(f"wrote {write_benchmark(table, args.name, head, folder=args.out)} and .csv")
    return 0


# ------------------------------------------------------------------------------------------- memory
class RssSampler:
    """Samples the resident set size of this process and its children every ``period`` seconds."""

    def __init__(self, period: float = 1.0):
        import psutil

        self.proc, self.period = psutil.Process(), period
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.perf_counter()

    def rss_mb(self) -> float:
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            with contextlib.suppress(Exception):
                total += child.memory_info().rss
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self.t0, self.rss_mb()))
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def memory_run(args) -> dict:
    """One run (``args.trim[0]``, ``args.minutes[0]``) with RSS sampled every second."""
    from fer_lib.stages import pretrain

    torch.set_num_threads(args.threads)
    trim, mins = args.trim[0], args.minutes[0]
    overrides = {
        "pretrain_attributes.max_train_seconds": mins * 60,
        "pretrain_attributes.trim_memory": trim,
        "pretrain_attributes.full_epochs": 1000,
    }
    if args.real_limit:
        overrides["data.real_limit"] = args.real_limit
    prof = get_profile(args.profile, overrides)
    print(f"memory run: profile {args.profile}, trim_memory={trim}, {mins} min; {load_text()}", flush=True)
    epochs_at: list[float] = []
    trim_s: list[float] = []
    with RssSampler() as sampler:
        orig_hist = Trainer._write_history

        def mark(self, _orig=orig_hist, _ends=epochs_at, _t0=sampler.t0):  # epoch ends, sampler clock
            _ends.append(time.perf_counter() - _t0)
            return _orig(self)

        Trainer._write_history = mark
        try:
            res = pretrain.train_attributes(prof, progress=False)
        finally:
            Trainer._write_history = orig_hist
        t0 = time.perf_counter()
        release_memory()
        trim_s.append(time.perf_counter() - t0)
    hist = res.history
    t = [x[0] for x in sampler.samples]
    rss = [x[1] for x in sampler.samples]
    first_end = epochs_at[0] if epochs_at else t[-1]
    after = [r for tt, r in zip(t, rss) if tt >= first_end]
    return {
        "trim_memory": trim,
        "minutes": mins,
        "epochs": len(hist),
        "train_seconds": round(float(res.train_seconds), 1),
        "img_per_s": round(
            float(hist["steps"].sum())
            * prof.pretrain_attributes.batch_size
            / float(hist["epoch_seconds"].sum()),
            1,
        ),
        "malloc_trim_ms": round(1000 * trim_s[0], 1),
        "peak_rss_mb": round(max(rss), 0),
        "rss_end_epoch1_mb": round(after[0], 0) if after else float("nan"),
        "peak_after_epoch1_mb": round(max(after), 0) if after else float("nan"),
        "growth_after_epoch1_mb": round(max(after) - after[0], 0) if after else float("nan"),
        "rss_end_mb": round(rss[-1], 0),
        "load_end": round(os.getloadavg()[0], 1),
        "_t": t,
        "_rss": rss,
        "_ends": epochs_at,
    }


def memory_main(args) -> int:
    """Default-profile attribute-stage runs on UTKFace (``fer_lib.stages.pretrain.train_attributes``)
    for ``--minutes``, each in its own process, with ``trim_memory`` on or off (``--trim``); a figure."""
    import matplotlib

    matplotlib.use("Agg")
    import json
    import subprocess

    import matplotlib.pyplot as plt

    results = []
    minutes = list(args.minutes) * len(args.trim) if len(args.minutes) == 1 else list(args.minutes)
    for trim, mins in zip(args.trim, minutes):  # a fresh process per run: RSS does not carry over
        cargs = [a for a in args.argv if a != "--quick"] + [
            "--memory-child",
            "--trim",
            str(trim),
            "--minutes",
            str(mins),
        ]
        proc = subprocess.run([sys.executable, __file__, *cargs], capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            raise RuntimeError(f"memory run failed ({proc.returncode}): {proc.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT ") :]))
        print({k: v for k, v in results[-1].items() if not k.startswith("_")}, flush=True)
    prof = get_profile(args.profile, {"data.real_limit": args.real_limit} if args.real_limit else None)
    fig, ax = plt.subplots(figsize=(8, 4))
    for r in results:
        ax.plot([x / 60 for x in r["_t"]], r["_rss"], label=f"trim_memory={r['trim_memory']}")
        for e in r["_ends"]:
            ax.axvline(e / 60, color="grey", lw=0.3)
    ax.axhline(4096, color="red", ls="--", lw=0.8, label="4 GB bar")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS, process + workers (MB)")
    ax.set_title(f"{args.profile} profile, attribute stage on UTKFace (grey: epoch ends)")
    ax.legend()
    out = Path(args.out) if args.out else get_paths().results / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{args.name}.png", dpi=100, bbox_inches="tight")
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in results])
    cmd = "FER_DATA_ROOT=... .venv/bin/python bench/bench_train.py " + " ".join(args.argv)
    head = (
        f"# Memory of a training run: peak RSS over time, malloc_trim at epoch ends on / off\n\n"
        f"Command: `{cmd.strip()}`. `fer_lib.stages.pretrain.train_attributes` of the {args.profile} profile "
        f"(UTKFace, at most {prof.data.real_limit or 'all'} rows per split, {prof.pretrain_attributes.backbone} at {prof.pretrain_attributes.image_size} px, batch "
        f"{prof.pretrain_attributes.batch_size}, decoded-face cache on) for the stated minutes of "
        f"training (the run stops at the first step past them), RSS of the process and its loader workers sampled every second (figure "
        f"`{args.name}.png`); allocator settings from the environment: MALLOC_MMAP_MAX_="
        f"{os.environ.get('MALLOC_MMAP_MAX_', 'unset')}, MALLOC_TRIM_THRESHOLD_="
        f"{os.environ.get('MALLOC_TRIM_THRESHOLD_', 'unset')}. img_per_s = training images / epoch seconds "
        f"(validation excluded). growth_after_epoch1 = peak after the first epoch end minus the RSS there; "
        f"malloc_trim_ms = one malloc_trim(0) after the run. Each run in a fresh process.\n\n"
        f"Machine load at the end: {load_text()}.\n\n"
    )
    print(f"wrote {write_benchmark(table, args.name, head, folder=out)}, .csv and .png")
    return 0


# ------------------------------------------------------------------------------------------- loader
def loader_main(args) -> int:
    """The real JPEG loader (first epoch, later epochs with the decoded-face cache) vs in-memory steps."""
    from fer_lib.data import FaceDataset, make_loader
    from fer_lib.datasets.sources import load_for_profile

    torch.set_num_threads(args.threads)
    prof = get_profile("default", {"data.real_limit": 4096})
    df, _, src = load_for_profile("utkface", prof, progress=False)
    df = df[df.split == "train"].reset_index(drop=True)
    print(
        f"UTKFace ({src.kind}, {src.root}): {len(df)} training images; torch threads {args.threads}",
        flush=True,
    )

    def timed(trainer, batches, steps, warmup=2):
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

    rows = []
    for backbone in args.backbones:
        size = args.size or SIZES.get(backbone, 112)
        ds = FaceDataset(df, image_size=size)
        torch.manual_seed(0)
        cfg = TrainConfig(
            backbone=backbone,
            image_size=size,
            batch_size=args.batch,
            head_epochs=0,
            full_epochs=1,
            scheduler="none",
            class_weights=False,
        )
        trainer = make_trainer(MultiTaskNet(backbone, TASKS, verbose=False), cfg, ds)
        mem = list(make_loader(torch.utils.data.Subset(ds, range(min(len(ds), args.batch * 2))), args.batch))
        base = timed(trainer, cycle(mem), args.steps)
        row = {
            "backbone": backbone,
            "size": size,
            "batch": args.batch,
            "in_memory_img_s": round(args.batch / base, 1),
        }
        for w in args.workers:
            loader = make_loader(
                FaceDataset(df, image_size=size, cache_bytes=0),
                args.batch,
                shuffle=True,
                num_workers=w,
                seed=0,
            )
            sec = timed(trainer, cycle(loader), args.steps)
            row[f"epoch1_w{w}_img_s"] = round(args.batch / sec, 1)
            row[f"epoch1_w{w}_overhead_pct"] = round(100 * (sec / base - 1), 1)
        warm = FaceDataset(df.iloc[: args.batch * (args.steps + 2)].reset_index(drop=True), image_size=size)
        for i in range(len(warm)):
            warm.face_array(i)
        sec = timed(trainer, cycle(make_loader(warm, args.batch, shuffle=True, seed=0)), args.steps)
        row["cached_w0_img_s"] = round(args.batch / sec, 1)
        row["cached_w0_overhead_pct"] = round(100 * (sec / base - 1), 1)
        row["meets_15pct"] = row["cached_w0_overhead_pct"] <= 15.0
        row["peak_rss_mb"] = round(peak_rss_mb(), 0)
        rows.append(row)
        print(row, flush=True)
    write_benchmark(
        pd.DataFrame(rows),
        args.name,
        f"# Training throughput: real JPEG loader vs in-memory step ({src.kind} UTKFace, batch {args.batch}, "
        f"{args.threads} threads)\n\n",
        f"\nOverhead = loader step time / in-memory step time - 1, both measured in this run on the Trainer's "
        f"own step (its default settings on this device); epoch1 decodes every JPEG, cached = later epochs "
        f"(FaceDataset's decoded-face cache warm); wN = N DataLoader workers. The target (<= 15 %) is judged on "
        f"the later epochs. {load_text()} at the end. Command: "
        f"`FER_DATA_ROOT=/path/to/datasets python bench/bench_train.py --loader`.\n",
        folder=args.out,
    )
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--loader", action="store_true", help="real JPEG loader vs in-memory steps (train.md)")
    mode.add_argument(
        "--memory", action="store_true", help="RSS over a real training run (train_memory.md/.png)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="a few minutes: batch 32, 2 steps, 2 rounds, no compile"
    )
    ap.add_argument("--backbones", nargs="+", default=list(SIZES))
    ap.add_argument(
        "--size", type=int, default=None, help="input side for every backbone (default: the profiles')"
    )
    ap.add_argument("--batch", type=int, default=64, help="images per step (default 64, the profiles')")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round (default 4)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds; the fastest is kept (default 3)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time torch.compile (default on, off with --quick)",
    )
    ap.add_argument("--workers", nargs="+", type=int, default=[0, 1], help="--loader: DataLoader workers")
    ap.add_argument(
        "--minutes",
        type=float,
        nargs="+",
        default=[20.0],
        help="--memory: training minutes, one for every run or one per --trim value (default 20)",
    )
    ap.add_argument(
        "--trim",
        nargs="+",
        type=lambda s: s.lower() in ("1", "true", "on", "yes"),
        default=[True],
        help="--memory: trim_memory settings to run, e.g. --trim on off (default on)",
    )
    ap.add_argument("--profile", default="default", help="--memory: profile of the run (default 'default')")
    ap.add_argument(
        "--real-limit",
        type=int,
        default=None,
        help="--memory: rows per UTKFace split (shorter epochs, so that several fit; default: all)",
    )
    ap.add_argument(
        "--name", default=None, help="table name under --out (default train_step / train / train_memory)"
    )
    ap.add_argument("--out", default=None, help="folder for the tables (default <results>/benchmarks)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = argv
    if args.child or args.memory_child:
        import json

        print(
            "RESULT " + json.dumps(memory_run(args) if args.memory_child else steps_child(args)), flush=True
        )
        return 0
    if args.quick:
        args.batch, args.steps, args.repeats = 32, 2, 2
        args.minutes = [min(m, 3.0) for m in args.minutes]
    if args.compile is None:
        args.compile = not args.quick
    if args.loader:
        args.name = args.name or "train"
        return loader_main(args)
    if args.memory:
        args.name = args.name or "train_memory"
        return memory_main(args)
    args.name = args.name or ("train_step_quick" if args.quick else "train_step")
    return steps_main(args)


if __name__ == "__main__":
    sys.exit(main())
