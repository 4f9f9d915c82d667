"""How should an attribute model's 100 age bins be read out? The same weights, every readout.

For each attribute checkpoint given (a fer_lib checkpoint with an age head in bins), each age readout of
:data:`fer_lib.tasks.AGE_MODES` that reads bins (``bins``: paper A's top-2 expected value; ``median``: the
bins' median) is measured as ``bench_attr_shortcuts.py`` measures a trained arm: UTKFace validation (the
choice is made there) and the balanced test, each in colour, greyscale and tighter central crops; CK+48's
adults (evaluation only); the astronaut photo. Only the readout differs between the rows of one checkpoint,
so the table separates the readout from the training. Writes ``<results>/benchmarks/<--name>.{md,csv}``.

    FER_DATA_ROOT=../shared/datasets python bench/bench_age_readout.py results/models/attributes.pt
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_attr_shortcuts import measure  # noqa: E402

from fer_lib.config import get_paths, get_profile  # noqa: E402
from fer_lib.io import atomic_torch_save  # noqa: E402
from fer_lib.models import load_checkpoint  # noqa: E402
from fer_lib.provenance import git_commit  # noqa: E402
from fer_lib.reporting import to_markdown, write_benchmark  # noqa: E402

#: The readouts of a bins head, paper A's first.
READOUTS = ("bins", "median")


def with_readout(checkpoint: Path, mode: str, folder: Path) -> Path:
    """A copy of ``checkpoint`` in ``folder`` whose stored age readout is ``mode`` (weights unchanged)."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt["model_config"].get("age_mode", "bins") == "regression":
        raise SystemExit(f"bench_age_readout: {checkpoint} has a regression age head, not bins")
    ckpt["model_config"]["age_mode"] = mode
    out = folder / f"{mode}.pt"
    atomic_torch_save(ckpt, out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="*", type=Path, help="attribute checkpoints (age head in bins)")
    ap.add_argument("--name", default="age_readout", help="the tables' file name (no suffix)")
    ap.add_argument("--out", default=None, help="folder for the tables (default <results>/benchmarks)")
    args = ap.parse_args(argv)
    if not os.environ.get("FER_DATA_ROOT"):  # `make bench` runs every script: skip, do not fail
        print("bench_age_readout: skipped, FER_DATA_ROOT is unset (it measures on the real UTKFace)")
        return 0
    if not args.checkpoints:  # as `make bench` runs it: no model to read
        print("bench_age_readout: skipped, no attribute checkpoint given")
        return 0
    missing = [str(p) for p in args.checkpoints if not p.is_file()]
    if missing:
        raise SystemExit(f"bench_age_readout: no such checkpoint: {', '.join(missing)}")
    commit = git_commit()
    cfg = get_profile("default")
    paths = get_paths(cfg)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer_readout_") as tmp:
        for checkpoint in args.checkpoints:
            for mode in READOUTS:
                row = {"checkpoint": str(checkpoint), "readout": mode}
                row.update(measure(with_readout(checkpoint, mode, Path(tmp)), cfg, paths))
                rows.append(row)
                print(f"{checkpoint} {mode}: {row}", flush=True)
    table = pd.DataFrame(rows)
    scores = [c for c in table.columns if c.startswith(("val_", "test_", "ckplus_"))]
    means = table.groupby("readout", sort=False)[scores].mean().T
    names = " ".join(str(p) for p in args.checkpoints)
    head = (
        "# Attribute model: the age readout\n\n"
        f"Command: `FER_DATA_ROOT=... python bench/bench_age_readout.py {names} --name {args.name}` at commit "
        f"`{commit}`. Each checkpoint's own weights, read out as paper A's top-2 expected value (`bins`) and "
        "as the median of the 100 one-year bins (`median`). val_* = the validation faces carved from "
        "UTKFace's training split (the choice is made on them), test_* = the balanced 2,000-face test "
        "(reported), each in colour, in greyscale and as the central 80 % and 65 % of each side; ckplus_* = "
        "CK+48's adults (evaluation only: the face-weighted share given an age under 16, and the median over "
        "expressions of the median predicted age); astronaut = the scikit-image photo (about 41 years old "
        "when taken) through the detector.\n\n"
        f"Means over checkpoints:\n\n{to_markdown(means.round(4).reset_index())}\n\nEvery checkpoint:\n\n"
    )
    write_benchmark(
        table, args.name, head, folder=Path(args.out) if args.out else get_paths().results / "benchmarks"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
