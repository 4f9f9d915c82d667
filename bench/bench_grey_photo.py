"""How far do a greyscale copy of a photo, and pixel noise of one grey level, move predict's answers?

For each attribute checkpoint given and each readout (``--readout NAME KEY=VALUE ...`` as in
``bench_age_readout.py``: ``age_mode``, ``grey_heads``, ``mirror``; none: as stored), the UTKFace validation
faces (``--split test``: the balanced test) are shown as photos (:func:`fer_lib.faces.as_photo`), each in
colour and as its greyscale copy (PIL's luma), and go through ``Recognizer.predict``'s path (MTCNN, the
model's own crop):

- ``found_colour`` / ``found_grey``: the share of photos in which MTCNN finds a face, in colour and in
  greyscale (the latter is MTCNN run on the luma; it does not depend on the model);
- ``box_iou_median``: how well the two boxes of one face overlap;
- ``photo_age_diff`` / ``photo_gender_changed``: the mean absolute age difference between a photo and its
  greyscale copy, and the share of faces whose gender changes, as ``predict`` serves them;
- ``same_box_age_diff`` / ``same_box_gender_changed``: the same with the colour photo cropped in the
  greyscale photo's box, so that only the grey levels differ (with age and gender read from the
  greyscale view, only their rounding);
- ``noise_age_diff`` / ``noise_gender_changed``: the colour crops against the same crops with every pixel
  moved by -1, 0 or +1 grey level at random (seeded): what the model makes of changes nobody sees;
- ``age_mae`` / ``gender``: the colour photos' scores over the faces found (the model's male threshold).

Writes ``<results>/benchmarks/<--name>.{md,csv}``.

    FER_DATA_ROOT=../shared/datasets python bench/bench_grey_photo.py results/models/attributes.pt \\
        --readout as_stored --readout mirror mirror=true --name grey_photo
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_age_readout import readout_changes, readout_rows  # noqa: E402

from fer_lib.config import get_paths, get_profile  # noqa: E402
from fer_lib.provenance import git_commit  # noqa: E402
from fer_lib.reporting import write_benchmark  # noqa: E402


def photos_of(split: str, cfg, paths) -> tuple[pd.DataFrame, list[np.ndarray], list[np.ndarray]]:
    """The UTKFace ``split`` faces, and each shown as a colour photo and as its greyscale copy."""
    from PIL import Image

    from fer_lib.datasets.images import load_image
    from fer_lib.faces import as_photo
    from fer_lib.stages import pretrain as stage

    df, _ = stage.utkface_splits(cfg, paths, progress=False)
    faces = df[df["split"] == split].reset_index(drop=True)
    colour = [as_photo(load_image(p))[0] for p in faces["path"]]
    grey = [np.asarray(Image.fromarray(a).convert("L").convert("RGB")) for a in colour]
    return faces, colour, grey


def largest(faces: list) -> object | None:
    """The largest face of one photo's predictions, None without one."""
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None


def noisy(crops: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Each crop with every pixel moved by -1, 0 or +1 grey level at random (clipped to 0..255)."""
    rng = np.random.default_rng(seed)
    return [
        np.clip(c.astype(np.int16) + rng.integers(-1, 2, c.shape), 0, 255).astype(np.uint8) for c in crops
    ]


def measure(checkpoint: Path, faces: pd.DataFrame, colour, grey, det_colour, det_grey) -> dict:
    """One checkpoint's row (see the module docstring) from the photos and both detections."""
    from fer_lib.faces import box_iou
    from fer_lib.serving import Recognizer

    rec = Recognizer(checkpoint, largest_only=True)
    as_served = [largest(f) for f in rec.predict_arrays(colour, det_colour)]
    greyscale = [largest(f) for f in rec.predict_arrays(grey, det_grey)]
    same_box = [largest(f) for f in rec.predict_arrays(colour, det_grey)]
    both = [i for i, (a, b) in enumerate(zip(as_served, greyscale)) if a is not None and b is not None]
    same = [i for i, (a, b) in enumerate(zip(same_box, greyscale)) if a is not None and b is not None]
    found = [i for i, a in enumerate(as_served) if a is not None]

    def diff(x: list, y: list, rows: list[int]) -> tuple[float, float]:
        age = np.mean([abs(x[i].age - y[i].age) for i in rows])
        return round(float(age), 3), round(float(np.mean([x[i].gender != y[i].gender for i in rows])), 4)

    crops = [rec.preprocess.crop(colour[i], np.asarray(as_served[i].box)) for i in found]
    plain, moved = rec.predict_faces(crops), rec.predict_faces(noisy(crops))
    boxes = [box_iou(np.asarray([as_served[i].box]), np.asarray([greyscale[i].box]))[0, 0] for i in both]
    row = {
        "found_colour": round(len(found) / len(colour), 4),
        "found_grey": round(float(np.mean([g is not None for g in greyscale])), 4),
        "box_iou_median": round(float(np.median(boxes)), 3),
    }
    row["photo_age_diff"], row["photo_gender_changed"] = diff(as_served, greyscale, both)
    row["same_box_age_diff"], row["same_box_gender_changed"] = diff(same_box, greyscale, same)
    row["noise_age_diff"], row["noise_gender_changed"] = diff(plain, moved, list(range(len(plain))))
    truth = faces.iloc[found]
    row["age_mae"] = round(
        float(np.mean(np.abs([as_served[i].age for i in found] - truth["age"].to_numpy()))), 3
    )
    female = np.array([as_served[i].gender == "Female" for i in found])
    row["gender"] = round(float((female == truth["gender"].to_numpy().astype(bool)).mean()), 4)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="*", type=Path, help="attribute checkpoints")
    ap.add_argument(
        "--readout",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "KEY=VALUE"),
        help="a readout: its name and the model config it changes (age_mode, grey_heads, mirror; "
        "repeatable; none: as the checkpoint is); default: as stored",
    )
    ap.add_argument("--split", default="val", choices=("val", "test"), help="UTKFace faces (default val)")
    ap.add_argument("--name", default="grey_photo", help="the tables' file name (no suffix)")
    ap.add_argument("--out", default=None, help="folder for the tables (default <results>/benchmarks)")
    args = ap.parse_args(argv)
    if not os.environ.get("FER_DATA_ROOT"):  # `make bench` runs every script: skip, do not fail
        print("bench_grey_photo: skipped, FER_DATA_ROOT is unset (it measures on the real UTKFace)")
        return 0
    if not args.checkpoints:  # as `make bench` runs it: no model to read
        print("bench_grey_photo: skipped, no attribute checkpoint given")
        return 0
    missing = [str(p) for p in args.checkpoints if not p.is_file()]
    if missing:
        raise SystemExit(f"bench_grey_photo: no such checkpoint: {', '.join(missing)}")
    readouts = {r[0]: readout_changes(r[1:]) for r in args.readout} or {"as_stored": {}}
    from fer_lib.faces import FaceDetector

    commit = git_commit()
    cfg = get_profile("default")
    paths = get_paths(cfg)
    faces, colour, grey = photos_of(args.split, cfg, paths)
    detector = FaceDetector()
    det_colour, det_grey = detector.detect_batch(colour), detector.detect_batch(grey)
    table = pd.DataFrame(
        readout_rows(
            args.checkpoints,
            readouts,
            lambda copy: measure(copy, faces, colour, grey, det_colour, det_grey),
            cfg,
            paths,
        )
    )
    names = " ".join(str(p) for p in args.checkpoints)
    flags = "".join(f" --readout {' '.join(r)}" for r in args.readout)
    head = (
        "# Attribute model: a photo against its greyscale copy, and against one grey level of noise\n\n"
        f"Command: `FER_DATA_ROOT=... python bench/bench_grey_photo.py {names}{flags} --split {args.split} "
        f"--name {args.name}` at commit `{commit}`. The {len(faces):,} UTKFace {args.split} faces shown as "
        "photos, each in colour and as its greyscale copy, through predict's path (MTCNN, the model's own "
        "crop). found_* = faces MTCNN finds in colour / in greyscale; box_iou_median = the overlap of one "
        "face's two boxes; photo_* = a photo against its greyscale copy as predict serves them (mean "
        "absolute age difference, share changing gender); same_box_* = the same with the colour photo "
        "cropped in the greyscale photo's box (only the grey levels differ); noise_* = the colour crops "
        "against the same crops with every pixel moved by -1, 0 or +1 grey level; age_mae / gender = the "
        "colour photos' scores over the faces found.\n\n"
    )
    write_benchmark(
        table, args.name, head, "\n", folder=Path(args.out) if args.out else paths.results / "benchmarks"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
