"""End-to-end reproduction: wall time and peak memory of the notebook chain per profile.

Runs ``python -m fer_lib reproduce --profile P`` (what ``make reproduce`` runs) for each profile in a
fresh results + data folder, and reports the wall time, the peak RSS of the largest process of the
run (the papermill kernels are its children), and the wall time of each notebook (from the runner's
``run_times.csv``). Ratios are against the smoke profile measured in the same run, so a regression in
one stage shows up even on this noisy shared machine. Writes ``<results>/benchmarks/reproduce_<profiles>[_real].{md,csv}``.

    python bench/bench_reproduce.py [--profiles smoke default] [--data-root /path/to/datasets]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fer_lib.provenance import git_commit  # noqa: E402
from fer_lib.reporting import write_benchmark  # noqa: E402


def run_profile(profile: str, data_root: str | None, workdir: Path) -> dict:
    env = dict(
        os.environ,
        FER_RESULTS_DIR=str(workdir / "results"),
        FER_DATA_DIR=str(workdir / "data"),
        HF_HUB_OFFLINE="1",
        MALLOC_MMAP_MAX_="0",
        MALLOC_TRIM_THRESHOLD_="100000000000",
    )
    env.pop("FER_DATA_ROOT", None)
    if data_root:
        env["FER_DATA_ROOT"] = str(Path(data_root).resolve())
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "fer_lib", "reproduce", "--profile", profile],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(f"reproduce --profile {profile} failed (exit {proc.returncode})")
    times = pd.read_csv(workdir / "results" / "run_times.csv")
    return {
        "profile": profile,
        "real_data": bool(data_root),
        "seconds": round(seconds, 1),
        # ru_maxrss of children is the largest single descendant; only meaningful when it grew
        "peak_rss_mb": round(max(peak, before) / 1024, 0),
        **{f"{r.notebook[:2]}_s": r.seconds for r in times.itertuples()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=["smoke", "default"])
    ap.add_argument("--data-root", default=None, help="FER_DATA_ROOT for the runs (default: synthetic only)")
    args = ap.parse_args(argv)
    rows, commit = [], git_commit()
    for profile in args.profiles:
        with tempfile.TemporaryDirectory(prefix=f"reproduce_{profile}_") as tmp:
            print(f"== reproduce --profile {profile}", flush=True)
            rows.append(run_profile(profile, args.data_root, Path(tmp)))
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    df.insert(3, "ratio_vs_first", (df.seconds / df.seconds.iloc[0]).round(2))
    name = "reproduce_" + "_".join(args.profiles) + ("_real" if args.data_root else "")
    write_benchmark(
        df,
        name,
        f"# End-to-end reproduction ({'real + synthetic' if args.data_root else 'synthetic'} data)\n\n",
        f"\nWall time of `python -m fer_lib reproduce` per profile (NN_s: each notebook), peak RSS of the "
        f"largest process, ratio against the first profile of this run. Load average at the end: "
        f"{os.getloadavg()[0]:.1f}. Command: `python bench/bench_reproduce.py --profiles "
        f"{' '.join(args.profiles)}{' --data-root ' + args.data_root if args.data_root else ''}` at commit "
        f"`{commit}`.\n",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
