"""Does photometric augmentation take colour and expression away as shortcuts of the attribute model?

Trains the default profile's UTKFace attribute stage (ImageNet efficientnet_lite0, 112 px, faces shrunk
to 64 px) on the real UTKFace under FER_DATA_ROOT, once per arm with the same seed, data and
``max_train_seconds``, each arm in a fresh process and results folder, one after the other:

* ``baseline``: the profile as it is;
* ``photometric``: ``grey`` of the training faces turned grey, the others' brightness / contrast /
  saturation jittered by ``jitter`` (``--set`` style values below).

Each arm is measured on the balanced UTKFace test in colour and in greyscale (age MAE, gender, ethnicity,
worst recalls), on CK+48 (evaluation only: the share of adults given an age under 16 and the median
predicted age) and on the astronaut photo shipped with scikit-image (colour vs greyscale, through the
detector). Writes ``<results>/benchmarks/attribute_shortcuts.{md,csv}``.

    FER_DATA_ROOT=../shared/datasets python bench/bench_attr_shortcuts.py --budget 600 --grey 0.3 --jitter 0.3
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _arms import emit, run_arms  # noqa: E402

from fer_lib.config import get_paths  # noqa: E402
from fer_lib.provenance import git_commit  # noqa: E402
from fer_lib.reporting import write_benchmark  # noqa: E402


def astronaut(checkpoint: Path) -> dict:
    """Age and gender of the astronaut (about 41 when photographed) in colour and in greyscale."""
    import numpy as np
    from PIL import Image
    from skimage import data

    from fer_lib.serving import Recognizer

    rec = Recognizer(checkpoint, largest_only=True)
    img = data.astronaut()
    grey = np.asarray(Image.fromarray(img).convert("L").convert("RGB"))
    out = {}
    for name, x in (("colour", img), ("grey", grey)):
        faces = rec.predict(x)
        out[f"astronaut_{name}"] = f"{faces[0].age:.1f} {faces[0].gender}" if faces else "no face"
    return out


def arm(grey: float, jitter: float, budget: float) -> dict:
    """One training run (in this process) and its measurements."""
    from fer_lib import config
    from fer_lib.stages import pretrain as stage

    overrides = {
        "pretrain_attributes.max_train_seconds": budget,
        "pretrain_attributes.grey": grey,
        "pretrain_attributes.jitter": jitter,
    }
    cfg = config.get_profile("default", overrides)
    paths = config.get_paths(cfg)
    config.seed_everything(cfg.seed)
    res = stage.train_attributes(cfg, paths, progress=False)
    test = stage.attribute_metrics(stage.predict_test(res, cfg))
    colour = stage.colour_gap(res.checkpoint, cfg, paths).set_index("input")
    confound = stage.expression_confound(res.checkpoint, None, cfg, paths)
    ck = confound[confound["data"].str.startswith("ckplus48")]
    weights = ck["faces"] / ck["faces"].sum()
    return {
        "grey": grey,
        "jitter": jitter,
        "train_seconds": round(float(res.train_seconds), 1),
        "epochs": int(res.history["epoch"].max()),
        **{f"test_{k}": round(float(v), 4) for k, v in test.items()},
        "grey_age_mae": round(float(colour.loc["grey", "age_mae"]), 3),
        "grey_gender_accuracy": round(float(colour.loc["grey", "gender_accuracy"]), 4),
        "grey_race_accuracy": round(float(colour.loc["grey", "race_accuracy"]), 4),
        "gender_changed_in_grey": round(float(colour.loc["grey", "gender_changed_share"]), 4),
        "ckplus_share_age_under_16": round(float((ck["share_age_under_16"] * weights).sum()), 4),
        "ckplus_median_age_of_medians": round(float(ck["age_pred_median"].median()), 1),
        **astronaut(res.checkpoint),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=600.0, help="max_train_seconds of each arm (default 600)")
    ap.add_argument("--grey", type=float, default=0.3, help="share of training faces turned grey")
    ap.add_argument("--jitter", type=float, default=0.3, help="brightness / contrast / saturation jitter")
    ap.add_argument("--out", default=None, help="folder for the tables (default <results>/benchmarks)")
    ap.add_argument("--arm", nargs=2, type=float, default=None, help=argparse.SUPPRESS)  # child: grey jitter
    args = ap.parse_args(argv)
    if args.arm:
        emit(arm(args.arm[0], args.arm[1], args.budget))
        return 0
    if not os.environ.get("FER_DATA_ROOT"):  # `make bench` runs every script: skip, do not fail
        print("bench_attr_shortcuts: skipped, FER_DATA_ROOT is unset (it trains on the real UTKFace)")
        return 0
    commit = git_commit()
    arms = {
        "baseline": ["--arm", "0", "0", "--budget", str(args.budget)],
        "photometric": ["--arm", str(args.grey), str(args.jitter), "--budget", str(args.budget)],
    }
    rows, loads = run_arms(__file__, arms, "fer_attr_")
    table = pd.DataFrame(rows)
    head = (
        "# Attribute model: colour and expression as shortcuts, with and without photometric augmentation\n\n"
        f"Command: `FER_DATA_ROOT=... python bench/bench_attr_shortcuts.py --budget {args.budget:g} --grey "
        f"{args.grey:g} --jitter {args.jitter:g}` at commit `{commit}`. The default profile's UTKFace attribute "
        "stage (ImageNet efficientnet_lite0, 112 px, faces shrunk to 64 px) on the real UTKFace, the same seed, "
        "data and time budget in both arms, each in a fresh process, one after the other; load average (1 min) "
        f"after each arm: {', '.join(f'{v:.1f}' for v in loads)}. test_* = the balanced 2,000-face test in "
        "colour; grey_* = the same faces in greyscale; ckplus_* = CK+48's adults (evaluation only: the "
        "face-weighted share given an age under 16, and the median over expressions of the median predicted "
        "age); astronaut = the scikit-image photo (about 41 years old when taken) through the detector. One "
        "seed per arm: differences of a point or two are within run-to-run noise.\n\n"
    )
    write_benchmark(
        table,
        "attribute_shortcuts",
        head,
        folder=Path(args.out) if args.out else get_paths().results / "benchmarks",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
