"""Shared fixtures: isolated results/data folders, real-data location, no network."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests never write the published results/: a stray FER_PUBLISH=1 in the shell must not reach them.
os.environ.pop("FER_PUBLISH", None)
if os.environ.get("FER_HYPOTHESIS_DIR"):  # make test keeps hypothesis' example database under build/
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(os.environ["FER_HYPOTHESIS_DIR"])


def real_data_root() -> Path | None:
    root = os.environ.get("FER_DATA_ROOT")
    return Path(root) if root and Path(root).is_dir() else None


@pytest.fixture
def real_root() -> Path:
    """The folder of real datasets (FER_DATA_ROOT); skips with a reason where it is absent."""
    root = real_data_root()
    if root is None:
        pytest.skip("real datasets not available: set FER_DATA_ROOT to a folder of real datasets")
    return root


@pytest.fixture
def tmp_results(tmp_path, monkeypatch) -> Path:
    """Point FER_RESULTS_DIR and FER_DATA_DIR at a fresh temporary folder."""
    res = tmp_path / "results"
    monkeypatch.setenv("FER_RESULTS_DIR", str(res))
    monkeypatch.delenv("FER_PUBLISH", raising=False)
    monkeypatch.setenv("FER_DATA_DIR", str(tmp_path / "data"))
    return res


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a shared 2-core machine, two OpenMP threads can be 100x slower
    under load (oversubscription), and results do not depend on the thread count here."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def no_network(monkeypatch):
    """Block every socket connection that leaves the machine (loopback and unix sockets stay allowed)."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1") or "/" in host):
            return real_connect(self, address)
        raise OSError(f"network access blocked in tests (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield
