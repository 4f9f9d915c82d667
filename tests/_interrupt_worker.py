"""Child process of tests/test_interruption.py: a small real training run that can be SIGKILLed.

usage: python _interrupt_worker.py OUT_DIR {straight|resume} [SLOW_SECONDS_PER_STEP]
Writes OUT_DIR/final.pt (the model's state_dict) when training finishes.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from tiny import tiny_config
from torch.utils.data import Dataset

from fer_lib.config import seed_everything
from fer_lib.models import MultiTaskNet
from fer_lib.training import Trainer

torch.set_num_threads(1)


class Blobs(Dataset):
    """16x16 images whose expression is the quadrant of a bright square."""

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        self.y = rng.integers(0, 4, n)
        self.x = torch.zeros(n, 3, 32, 32)
        for i, q in enumerate(self.y):
            y0, x0 = (q // 2) * 16 + 4, (q % 2) * 16 + 4
            self.x[i, :, y0 : y0 + 8, x0 : x0 + 8] = 1.0
        self.x += 0.1 * torch.from_numpy(rng.standard_normal(self.x.shape).astype(np.float32))

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], {"expression": torch.tensor(int(self.y[i]))}, {"expression": torch.tensor(True)}


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    slow = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    cfg = tiny_config(batch_size=8, head_epochs=1, full_epochs=2, save_every_steps=2)
    seed_everything(0)
    model = MultiTaskNet("tiny_cnn", {"expression": 4}, hidden=16)
    trainer = Trainer(model, cfg, out_dir=out, progress=False, seed=0)
    if slow:
        step = trainer.train_step

        def slow_step(batch):
            time.sleep(slow)
            return step(batch)

        trainer.train_step = slow_step
    trainer.fit(Blobs(64, 1), Blobs(16, 2), resume=(mode == "resume"))
    torch.save(model.state_dict(), out / "final.pt")


if __name__ == "__main__":
    main()
