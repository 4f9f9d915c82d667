"""Memory of a long run over time: run a command and sample the RSS of its whole process tree.

The notebook chain runs each notebook in a papermill kernel (a child process), so the peak RSS of the
runner alone says nothing; this samples every process of the tree. It reads the runner's own lines
(``[fer_lib] running 01_...``) to know which notebook is running, and writes:

- ``<out>.csv``: one row per sample (seconds, notebook, RSS of the tree and of its largest process, MB);
- ``<out>.md``: per notebook the peak, the RSS a third of the way in and at its end (growth after the
  first third is what a leak would show), the machine load at the end;
- ``<out>.png``: RSS over time with the notebook boundaries.

    python bench/rss_watch.py --out results/benchmarks/reproduce_memory -- \\
        python -m fer_lib reproduce --profile default --publish
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fer_lib.reporting import to_markdown  # noqa: E402

RUNNING = re.compile(r"\[fer_lib\] running (\S+?)\.ipynb")


def tree_rss_mb(root: psutil.Process) -> tuple[float, float]:
    """(summed RSS of ``root`` and its descendants, RSS of the largest of them), in MB."""
    sizes = []
    for p in [root, *root.children(recursive=True)]:
        try:
            sizes.append(p.memory_info().rss / 2**20)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return (sum(sizes), max(sizes)) if sizes else (0.0, 0.0)


def summary(samples: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for nb, g in samples.groupby("notebook", sort=False):
        third = g.iloc[len(g) // 3]
        rows.append(
            {
                "notebook": nb,
                "seconds": round(g.t.iloc[-1] - g.t.iloc[0], 1),
                "peak_tree_mb": round(g.rss_tree_mb.max()),
                "peak_largest_mb": round(g.rss_max_mb.max()),
                "at_third_mb": round(third.rss_tree_mb),
                "end_mb": round(g.rss_tree_mb.iloc[-1]),
                "growth_after_third_mb": round(g.rss_tree_mb.iloc[len(g) // 3 :].max() - third.rss_tree_mb),
            }
        )
    return pd.DataFrame(rows)


def plot(samples: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(samples.t / 60, samples.rss_tree_mb / 1024, label="process tree")
    ax.plot(samples.t / 60, samples.rss_max_mb / 1024, label="largest process", alpha=0.7)
    for nb, g in samples.groupby("notebook", sort=False):
        ax.axvline(g.t.iloc[0] / 60, color="grey", lw=0.5)
        ax.text(g.t.iloc[0] / 60, ax.get_ylim()[1] * 0.02, nb[:2], fontsize=8)
    ax.axhline(4, color="red", lw=0.8, ls="--", label="4 GB bar")
    ax.set(xlabel="minutes", ylabel="RSS (GB)", title="RSS of the run over time")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="path prefix of the .csv / .md / .png written")
    ap.add_argument("--period", type=float, default=2.0, help="seconds between samples (default 2)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command to run after --")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    root, t0, state, rows = psutil.Process(proc.pid), time.time(), {"nb": "start"}, []

    def sample() -> None:
        while proc.poll() is None:
            tree, largest = tree_rss_mb(root)
            rows.append(
                {
                    "t": round(time.time() - t0, 1),
                    "notebook": state["nb"],
                    "rss_tree_mb": tree,
                    "rss_max_mb": largest,
                }
            )
            time.sleep(args.period)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in proc.stdout:  # the run's output passes through, and names the notebook running
        sys.stdout.write(line)
        sys.stdout.flush()
        m = RUNNING.search(line)
        if m:
            state["nb"] = m.group(1)
    rc = proc.wait()
    sampler.join(timeout=args.period + 1)
    samples = pd.DataFrame(rows)
    samples.to_csv(out.with_suffix(".csv"), index=False)
    table = summary(samples)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    md = [
        "# RSS of a run over time (process tree, sampled)",
        "",
        f"Command: `{' '.join(cmd)}` (exit code {rc}); sampled every {args.period:g} s with "
        f"`python bench/rss_watch.py`. Allocator settings from the environment: "
        f"MALLOC_MMAP_MAX_={os.environ.get('MALLOC_MMAP_MAX_', 'unset')}, "
        f"MALLOC_TRIM_THRESHOLD_={os.environ.get('MALLOC_TRIM_THRESHOLD_', 'unset')}. growth_after_third_mb: "
        "the notebook's peak after the first third of its samples minus the RSS at that point "
        f"(a leak grows it). Load average at the end: {load}. Figure: `{out.with_suffix('.png').name}`.",
        "",
        to_markdown(table),
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(md))
    plot(samples, out.with_suffix(".png"))
    print(table.to_string(index=False))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
