"""A training run killed with SIGKILL mid-epoch resumes from its last checkpoint to the same weights."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fer_lib.models import load_checkpoint

WORKER = Path(__file__).with_name("_interrupt_worker.py")


def _run(out: Path, mode: str, slow: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(out), mode, str(slow)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    straight = _run(tmp_path / "straight", "straight")
    killed_dir = tmp_path / "killed"
    victim = _run(killed_dir, "straight", slow=0.3)  # slowed down so the kill lands mid-epoch
    assert straight.wait(timeout=300) == 0, straight.stderr.read()

    # wait for a mid-epoch checkpoint of the second epoch (8 steps per epoch, saved every 2 steps)
    deadline = time.time() + 240
    state = None
    while time.time() < deadline:
        try:
            state = load_checkpoint(killed_dir / "last.pt")["extra"]["trainer"]
        except (FileNotFoundError, EOFError, RuntimeError, KeyError):
            state = None
        if state and state["global_step"] >= 10:
            break
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert state and 0 < state["step_in_epoch"] < 8, state
    assert not (killed_dir / "final.pt").exists()
    # the checkpoint left behind by the killed process is readable (atomic writes: no torn file)
    load_checkpoint(killed_dir / "last.pt")
    assert not list(killed_dir.glob(".*.tmp")) or all(
        p.stat().st_size >= 0 for p in killed_dir.glob(".*.tmp")
    )

    resumed = _run(killed_dir, "resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a = torch.load(tmp_path / "straight" / "final.pt", weights_only=True)
    b = torch.load(killed_dir / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist_a = (tmp_path / "straight" / "history.csv").read_text().splitlines()
    hist_b = (killed_dir / "history.csv").read_text().splitlines()
    assert len(hist_a) == len(hist_b) == 4  # header + 3 epochs, none duplicated by the restart
