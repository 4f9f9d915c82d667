"""Which photometric treatment makes the FER2013 expression model hold up on faces from elsewhere?

The FER2013 copy here was contrast-enhanced by its publisher; photos and other datasets are not. Trains
the default profile's FER2013 model (``fer2013_finetune``: efficientnet_lite0 at 96 px started from an
attribute checkpoint, ``--start``, by default the published ``results/models/attributes.pt``) on the
real FER2013 under FER_DATA_ROOT, once per arm and seed with the same data and ``max_train_seconds``,
each in a fresh process and results folder, one after the other:

* ``baseline``: the profile as it is;
* ``standardise``: ``contrast=standardise`` (each face's brightness and contrast set to one value inside
  ``Preprocess``, in training and at predict time alike);
* ``jitter``: photometric augmentation (brightness / contrast jitter of ``--jitter``) instead.

Each arm is scored on FER2013's validation split (the selection set: the choice is made on it), as it is
and under a photometric shift (each face's contrast scaled by a factor in [0.5, 1] and its brightness
moved by up to +-40 grey levels, fixed per face: faces that were not contrast-enhanced as this copy of
FER2013 was), and on the test split and CK+48 (evaluation only, never a reason to choose: accuracy and
the lowest class recall under the 6-class crop protocol). Writes
``<results>/benchmarks/fer_photometric.{md,csv}``.

    FER_DATA_ROOT=../shared/datasets python bench/bench_fer_photometric.py --budget 300 --seeds 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _arms import emit, run_arms, seeded_arms  # noqa: E402

from fer_lib.config import get_paths  # noqa: E402
from fer_lib.provenance import git_commit  # noqa: E402
from fer_lib.reporting import to_markdown, write_benchmark  # noqa: E402

ARMS = {"baseline": {}, "standardise": {"contrast": "standardise"}, "jitter": {"jitter": None}}


def shifted(face, rng):
    """``face`` (uint8) with its contrast scaled by a factor in [0.5, 1] about its mean and its brightness
    moved by up to +-40 grey levels (one draw of ``rng``)."""
    import numpy as np

    x = np.asarray(face, np.float32)
    c, b = rng.uniform(0.5, 1.0), rng.uniform(-40.0, 40.0)
    return np.clip((x - x.mean()) * c + x.mean() + b, 0, 255).round().astype(np.uint8)


def shifted_accuracy(checkpoint: Path, rows) -> float:
    """Accuracy of ``checkpoint`` on ``rows`` (faces fed as crops, the serving path) under :func:`shifted`,
    the same draw per face for every arm."""
    import numpy as np

    from fer_lib.datasets.images import read_image
    from fer_lib.serving import Recognizer
    from fer_lib.tasks import get_task

    rng = np.random.default_rng(0)
    faces = [shifted(read_image(p)[0], rng) for p in rows["path"]]
    said = [f.expression for f in Recognizer(checkpoint, crops=True).predict_faces(faces)]
    classes = get_task("expression").classes
    return float(np.mean([s == classes[int(y)] for s, y in zip(said, rows["expression"])]))


def arm(name: str, seed: int, budget: float, jitter: float, start: Path) -> dict:
    """One FER2013 model (in this process, its own results folder) and its scores."""
    from fer_lib import config
    from fer_lib.paths import ATTRIBUTES
    from fer_lib.stages import expression as stage

    changes = {k: (jitter if v is None else v) for k, v in ARMS[name].items()}
    overrides = {"seed": seed, "fer2013_finetune.max_train_seconds": budget}
    overrides.update({f"fer2013_finetune.{k}": v for k, v in changes.items()})
    cfg = config.get_profile("default", overrides)
    paths = config.get_paths(cfg)
    paths.checkpoint(ATTRIBUTES).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(start, paths.checkpoint(ATTRIBUTES))  # the chain's start, as stage 01 would leave it
    data = stage.fer2013_manifest(cfg, paths, progress=False)
    run = stage.fer2013_model(cfg, "finetune", paths, progress=False, data=data)
    best = run.history.loc[run.history["val_expression_accuracy"].idxmax()]
    val = data[0][data[0]["split"] == "val"]
    ck = stage.ckplus_manifest(cfg, paths)
    ckm = stage.ckplus_metrics(stage.ckplus_predictions(run, ck[0])) if ck is not None else {}
    recalls = {k: v for k, v in ckm.items() if k.startswith("recall_")}
    return {
        "seed": seed,
        **changes,
        "train_seconds": round(float(run.train_seconds), 1),
        "epochs": int(run.history["epoch"].max()),
        "fer2013_val": round(float(best["val_expression_accuracy"]), 4),
        "fer2013_val_shifted": round(shifted_accuracy(run.checkpoint, val), 4),
        "fer2013_test": round(float(run.metrics["accuracy"]), 4),
        "ckplus48": round(float(ckm.get("accuracy", float("nan"))), 4),
        "ckplus48_min_recall": round(min(recalls.values()), 3) if recalls else float("nan"),
        "ckplus48_worst_class": min(recalls, key=recalls.get).removeprefix("recall_") if recalls else "",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=300.0, help="max_train_seconds of each arm (default 300)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per arm: 42, 43, ... (default 2)")
    ap.add_argument("--jitter", type=float, default=0.3, help="the jitter arm's strength (default 0.3)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="arms to run")
    ap.add_argument("--start", default=str(REPO / "results" / "models" / "attributes.pt"))
    ap.add_argument("--out", default=None, help="folder for the tables (default <results>/benchmarks)")
    ap.add_argument("--arm", nargs=2, default=None, help=argparse.SUPPRESS)  # child: name seed
    args = ap.parse_args(argv)
    if args.arm:
        emit(arm(args.arm[0], int(args.arm[1]), args.budget, args.jitter, Path(args.start)))
        return 0
    if not os.environ.get("FER_DATA_ROOT"):  # `make bench` runs every script: skip, do not fail
        print("bench_fer_photometric: skipped, FER_DATA_ROOT is unset (it trains on the real FER2013)")
        return 0
    commit = git_commit()
    common = ["--budget", str(args.budget), "--jitter", str(args.jitter), "--start", args.start]
    arms = seeded_arms(args.arms, args.seeds, common)
    rows, loads = run_arms(__file__, arms, "fer_photometric_")
    table = pd.DataFrame(rows)
    table.insert(0, "treatment", table.pop("arm").str.split("/").str[0])
    scores = ["fer2013_val", "fer2013_val_shifted", "fer2013_test", "ckplus48"]
    means = table.groupby("treatment", sort=False)[scores].mean()
    head = (
        "# FER2013 expression model: contrast normalisation against photometric augmentation\n\n"
        f"Command: `FER_DATA_ROOT=... python bench/bench_fer_photometric.py --budget {args.budget:g} --seeds "
        f"{args.seeds} --jitter {args.jitter:g} --arms {' '.join(args.arms)}` at commit `{commit}`. The default profile's FER2013 model "
        "(efficientnet_lite0, 96 px, grey faces, started from the published attribute model), the same data "
        "and time budget in every arm, each in a fresh process, one after the other; load average (1 min) after "
        f"each arm: {', '.join(f'{v:.1f}' for v in loads)}. fer2013_val is the selection split (the choice is "
        "made on it), fer2013_val_shifted the same faces with their contrast scaled by 0.5-1 and brightness "
        "moved by up to 40 grey levels (one fixed draw per face); fer2013_test and ckplus48 (evaluation only: accuracy and the lowest recall of the 6 "
        "scored classes, faces fed as crops) are reported, never chosen on.\n\n"
        f"Means over seeds:\n\n{to_markdown(means.round(4).reset_index())}\n\nEvery run:\n\n"
    )
    write_benchmark(
        table,
        "fer_photometric",
        head,
        folder=Path(args.out) if args.out else get_paths().results / "benchmarks",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
