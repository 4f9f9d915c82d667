"""Untrusted files (issue 9 item 4) and a kill while a checkpoint is written (item 2)."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from fer_lib.models import MultiTaskNet, create_backbone, load_checkpoint, read_state_dict, save_checkpoint


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: proof of code execution if the marker appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def malicious(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    # sanity: the payload really does run when the file is unpickled the unsafe way
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_malicious_pickle_never_runs_on_the_default_paths(malicious):
    path, marker = malicious
    with pytest.raises(ValueError, match="weights-only"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        read_state_dict(path)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        create_backbone("tiny_cnn", pretrained_file=path)
    assert not marker.exists()


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    torch.manual_seed(0)
    model = MultiTaskNet("tiny_cnn", {"expression": 8}, verbose=False)
    target = tmp_path / "best.pt"
    save_checkpoint(target, model, metrics={"accuracy": 0.5})
    before = target.read_bytes()
    pid = os.fork()
    if pid == 0:  # child: a torch.save that dies half-way through writing the new checkpoint
        real_save = torch.save

        def dying_save(obj, fh, *a, **k):
            real_save(obj, fh, *a, **k)
            fh.truncate(fh.tell() // 2)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = dying_save
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        save_checkpoint(target, model, metrics={"accuracy": 0.9})
        os._exit(0)  # never reached
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert target.read_bytes() == before
    assert load_checkpoint(target)["metrics"]["accuracy"] == 0.5
    # a SIGKILL cannot clean up: at most a hidden temporary sibling remains, never a damaged best.pt
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "best.pt"]
    assert all(n.startswith(".best.pt.") and n.endswith(".tmp") for n in leftovers)
