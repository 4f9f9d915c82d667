"""How much does framing cost a FER2013 expression model at predict time, and does the measured frame win
it back?

Scores one checkpoint (default: the published ``results/models/expression.pt``) on the real FER2013 test
split under FER_DATA_ROOT three ways: fed as the dataset's crops (the trainer's view), and through
``predict`` (MTCNN on each image enlarged to 192 px, then the model's crop) with two crop rules: the
detector's tight box (``margin`` 0) and FER2013's frame around that box, measured on its training images
(``fer_lib.faces.measure_framing``, as the FER2013 stage stores it). The like-for-like comparison is over
the faces the detector found. Writes ``<results>/benchmarks/framing.{md,csv}``.

    FER_DATA_ROOT=../shared/datasets python bench/bench_framing.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fer_lib import config  # noqa: E402
from fer_lib.provenance import git_commit  # noqa: E402
from fer_lib.reporting import write_benchmark  # noqa: E402


def with_margin(checkpoint: Path, margin, out: Path) -> Path:
    """``out``: a copy of ``checkpoint`` whose stored crop rule has ``margin``."""
    import torch

    from fer_lib.preprocess import from_checkpoint

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    ckpt["model_config"]["preprocess"] = from_checkpoint(ckpt).replace(margin=margin).to_dict()
    torch.save(ckpt, out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(REPO / "results" / "models" / "expression.pt"))
    ap.add_argument("--limit", type=int, default=None, help="test faces scored (default: all 3,589)")
    ap.add_argument("--out", default=None, help="folder for the tables (default <results>/benchmarks)")
    args = ap.parse_args(argv)
    if not os.environ.get("FER_DATA_ROOT"):  # `make bench` runs every script: skip, do not fail
        print("bench_framing: skipped, FER_DATA_ROOT is unset (it scores the real FER2013 test split)")
        return 0
    from fer_lib.stages.common import dataset_framing, served_accuracy
    from fer_lib.stages.expression import fer2013_manifest

    cfg = config.get_profile("default")
    paths = config.get_paths(cfg)
    df = fer2013_manifest(cfg, paths, progress=False)[0]
    test = df[df["split"] == "test"]
    test = test.sample(args.limit, random_state=0) if args.limit else test
    framing = dataset_framing(df, "fer2013", cfg, paths)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer_framing_") as tmp:
        rules = (("detector box (margin 0)", 0.0), ("FER2013's frame", framing.margin))
        for k, (name, margin) in enumerate(rules):
            t0 = time.perf_counter()
            got = served_accuracy(with_margin(Path(args.checkpoint), margin, Path(tmp) / f"rule{k}.pt"), test)
            rows.append(
                {
                    "crop rule": name,
                    "margin (left, top, right, bottom)": str(margin),
                    "face_found": round(got["face_found"], 4),
                    "predict, all faces": round(got["expression_accuracy"], 4),
                    "predict, faces found": round(got["expression_accuracy_found"], 4),
                    "crops, faces found": round(got["expression_accuracy_crops_found"], 4),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["framing gap (points)"] = (
        100 * (table["crops, faces found"] - table["predict, faces found"])
    ).round(1)
    head = (
        "# FER2013 through predict: the detector's box against FER2013's measured frame\n\n"
        f"Command: `FER_DATA_ROOT=... python bench/bench_framing.py` at commit `{git_commit()}`, checkpoint "
        f"`{Path(args.checkpoint).name}`, {len(test):,} FER2013 test faces. predict = MTCNN on the 48 px image "
        "enlarged to 192 px, the largest face, cropped by the rule in the row, then the model's own "
        "preprocessing; a face not found counts as wrong in `predict, all faces`. `crops, faces found` feeds "
        "the same found faces as the dataset's crops: the framing gap is what the crop rule alone costs. "
        f"FER2013's frame was measured on {framing.faces} training images (a face found in "
        f"{framing.found:.0%}).\n\n"
    )
    write_benchmark(
        table, "framing", head, folder=Path(args.out) if args.out else paths.results / "benchmarks"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
