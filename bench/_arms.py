"""Benchmark arms that each train in a fresh process and results folder, one after the other, so that no
arm inherits another's memory, threads or caches; the child prints its result as one marked JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

MARK = "RESULT "


def emit(result: dict) -> None:
    """Print an arm's result for :func:`run_arms` (called in the child process)."""
    print(MARK + json.dumps(result), flush=True)


def run_arms(script: str, arms: dict[str, list[str]], prefix: str) -> tuple[list[dict], list[float]]:
    """Run ``python script *args`` per arm (name -> args) in a fresh process with its own results folder
    (the data folder shared); returns one row per arm (``arm`` + the child's result) and the 1-minute
    load average after each arm."""
    rows, loads = [], []
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        for name, args in arms.items():
            env = dict(
                os.environ,
                FER_RESULTS_DIR=f"{tmp}/{name}",
                FER_DATA_DIR=f"{tmp}/data",
                FER_PROGRESS="0",
                HF_HUB_OFFLINE="1",
            )
            cmd = [sys.executable, script, *args]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:  # the child's own traceback, not just its exit status
                raise RuntimeError(f"arm {name!r} failed ({' '.join(cmd)}):\n{done.stderr[-4000:]}")
            out = done.stdout
            line = next(line for line in out.splitlines() if line.startswith(MARK))
            rows.append({"arm": name, **json.loads(line[len(MARK) :])})
            loads.append(os.getloadavg()[0])
            print(f"{name}: {rows[-1]}", flush=True)
    return rows, loads


def seeded_arms(names, seeds: int, common: list[str]) -> dict[str, list[str]]:
    """Every arm once per seed (42, 43, ...), seeds outermost: ``"<name>/<seed>"`` -> the child's
    ``--arm <name> <seed>`` plus ``common``, for :func:`run_arms`."""
    return {
        f"{name}/{seed}": ["--arm", name, str(seed), *common]
        for seed in range(42, 42 + seeds)
        for name in names
    }
