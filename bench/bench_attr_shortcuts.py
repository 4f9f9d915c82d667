"""Which training choices take colour, expression and framing away as shortcuts of the attribute model?

Trains the default profile's UTKFace attribute stage (ImageNet efficientnet_lite0, 112 px, faces shrunk
to 64 px) on the real UTKFace under FER_DATA_ROOT, once per arm and seed (42, 43, ...) with the same data
and ``max_train_seconds``, each arm in a fresh process and results folder, one after the other. The arms:
``profile`` (the profile as it is) and every ``--variant NAME KEY=VALUE ...``, whose KEYs are fields of
``pretrain_attributes`` (``grey``, ``jitter``, ``contrast``, ``zoom_min``, ``balance_expressions``, ...).

Each arm is measured on UTKFace validation (the choice is made there) and the balanced test, each seen as
:data:`fer_lib.stages.pretrain.INPUT_VIEWS` says (colour, greyscale, tighter central crops, stored as UTKFace's
64 px part stores its faces: age MAE, gender,
ethnicity, adults given an age under 16, faces changing gender; worst test recalls), on CK+48 (evaluation
only: the share of adults given an age under 16 and the median predicted age) and on the astronaut photo
shipped with scikit-image (colour vs greyscale, through the detector). ``--last`` also measures each run's
``last.pt`` (its weights when training ended) as the treatment ``<arm> last.pt``: beside an arm whose
``best.pt`` differs from them by construction (``ema_decay``: the moving average), a comparison within
the same training runs, free of the scatter between runs. Writes ``<results>/benchmarks/<--name>.{md,csv}``.

    FER_DATA_ROOT=../shared/datasets python bench/bench_attr_shortcuts.py --budget 360 --seeds 2 \
        --variant zoom_0.4 zoom_min=0.4 --name attribute_framing
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

from fer_lib.config import get_paths, parse_overrides  # noqa: E402
from fer_lib.provenance import git_commit  # noqa: E402
from fer_lib.reporting import to_markdown, write_benchmark  # noqa: E402


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


def arm(name: str, seed: int, budget: float, changes: dict[str, str], last: bool = False) -> dict:
    """One training run (in this process) and its measurements (``last``: its last.pt's too, as the
    ``"last"`` entry)."""
    from fer_lib import config
    from fer_lib.stages import pretrain as stage

    overrides = {"seed": seed, "pretrain_attributes.max_train_seconds": budget}
    overrides.update({f"pretrain_attributes.{k}": v for k, v in changes.items()})
    cfg = config.get_profile("default", overrides)
    paths = config.get_paths(cfg)
    config.seed_everything(cfg.seed)
    res = stage.train_attributes(cfg, paths, progress=False)
    row = {"seed": seed, "train_seconds": round(float(res.train_seconds), 1)}
    row["epochs"] = int(res.history["epoch"].max())
    out = {**row, **measure(res.checkpoint, cfg, paths)}
    if last:  # its own male threshold, chosen on validation as the stage chooses best.pt's
        from fer_lib.models import build_model_from_checkpoint

        final = Path(res.checkpoint).with_name("last_weights.pt")
        shutil.copy(Path(res.checkpoint).with_name("last.pt"), final)
        model = build_model_from_checkpoint(final)
        val = stage._dataset(res.manifest.query("split == 'val'"), model, cfg.pretrain_attributes)
        stage.threshold_on_val(model, final, val, cfg)
        out["last"] = {**row, **measure(final, cfg, paths)}
    return out


def measure(checkpoint: Path, cfg, paths) -> dict:
    """An attribute checkpoint on UTKFace validation and test in every input view, the worst test recalls,
    CK+48's adults (evaluation only) and the astronaut: the columns of the tables."""
    from fer_lib.stages import pretrain as stage

    row = {}
    for split in ("val", "test"):  # val chooses; test is reported
        gap = stage.input_gap(checkpoint, cfg, paths, split=split).set_index("input")
        for view in gap.index:
            key = f"{split}_{view.replace(' ', '_')}"
            row[f"{key}_age_mae"] = round(float(gap.loc[view, "age_mae"]), 3)
            row[f"{key}_gender"] = round(float(gap.loc[view, "gender_accuracy"]), 4)
            row[f"{key}_race"] = round(float(gap.loc[view, "race_accuracy"]), 4)
            row[f"{key}_adults_under_16"] = round(float(gap.loc[view, "adults_under_16"]), 4)
        row[f"{split}_gender_changed_in_grey"] = round(float(gap.loc["grey", "gender_changed_share"]), 4)
    df, _ = stage.utkface_splits(cfg, paths, progress=False)
    test = df[df["split"] == "test"].reset_index(drop=True)
    pred = stage.attribute_predictions(checkpoint, test["path"])
    test_metrics = stage.attribute_metrics(
        pred.assign(age=test["age"], gender=test["gender"], race=test["race"])
    )
    row.update({f"test_{k}": round(float(v), 4) for k, v in test_metrics.items() if "min_recall" in k})
    faces = stage.ckplus_faces(checkpoint, cfg, paths)  # None (a printed reason) without CK+48
    if faces is not None:
        ck = stage.by_expression(faces, "ckplus48")
        row["ckplus_share_age_under_16"] = round(float((faces["age_pred"] < stage.CHILD_AGE).mean()), 4)
        row["ckplus_median_age_of_medians"] = round(float(ck["age_pred_median"].median()), 1)
    return {**row, **astronaut(checkpoint)}


def split_last(row: dict) -> list[dict]:
    """An arm's row, and its ``last.pt`` measurements (``--last``) as a row of the treatment
    ``"<arm> last.pt"`` (the arm's ``name/seed`` keeps its seed)."""
    row = dict(row)
    last = row.pop("last", None)
    if last is None:
        return [row]
    name, seed = row["arm"].split("/")
    return [row, {"arm": f"{name} last.pt/{seed}", **last}]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=600.0, help="max_train_seconds of each arm (default 600)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per arm: 42, 43, ... (default 2)")
    ap.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "KEY=VALUE"),
        help="an arm beside the profile: its name and the pretrain_attributes fields it changes (repeatable)",
    )
    ap.add_argument(
        "--last",
        action="store_true",
        help="also measure each run's last.pt, as the treatment '<arm> last.pt'",
    )
    ap.add_argument(
        "--no-profile", action="store_true", help="run the variants only (with --last: their own baseline)"
    )
    ap.add_argument("--name", default="attribute_shortcuts", help="the tables' file name (no suffix)")
    ap.add_argument("--out", default=None, help="folder for the tables (default <results>/benchmarks)")
    ap.add_argument("--arm", nargs=2, default=None, help=argparse.SUPPRESS)  # child: name seed
    args = ap.parse_args(argv)
    variants = {v[0]: parse_overrides(v[1:]) for v in args.variant}
    if "profile" in variants:
        raise SystemExit(
            "bench_attr_shortcuts: 'profile' names the profile as it is; give the variant another name"
        )
    if args.arm:
        emit(arm(args.arm[0], int(args.arm[1]), args.budget, variants.get(args.arm[0], {}), args.last))
        return 0
    if not os.environ.get("FER_DATA_ROOT"):  # `make bench` runs every script: skip, do not fail
        print("bench_attr_shortcuts: skipped, FER_DATA_ROOT is unset (it trains on the real UTKFace)")
        return 0
    if not variants:  # as `make bench` runs it: there is no default question to ask
        print("bench_attr_shortcuts: skipped, no --variant NAME KEY=VALUE ... to compare with the profile")
        return 0
    commit = git_commit()
    common = ["--budget", str(args.budget)] + (["--last"] if args.last else [])
    common += [x for v in args.variant for x in ("--variant", *v)]
    names = tuple(variants) if args.no_profile else ("profile", *variants)
    arms = seeded_arms(names, args.seeds, common)
    rows, loads = run_arms(__file__, arms, "fer_attr_")
    rows = [r for row in rows for r in split_last(row)]
    table = pd.DataFrame(rows)
    table.insert(0, "treatment", table.pop("arm").str.split("/").str[0])
    scores = [c for c in table.columns if c.startswith(("val_", "test_", "ckplus_"))]
    means = table.groupby("treatment", sort=False)[scores].mean().T
    described = "; ".join(
        f"`{k}`: {', '.join(f'{a}={b}' for a, b in v.items())}" for k, v in variants.items()
    )
    flags = " ".join(f"--variant {' '.join(v)}" for v in args.variant)
    flags += " --last" * args.last + " --no-profile" * args.no_profile
    arms_said = ("the variants" if args.no_profile else "`profile` as it is, and the variants") + (
        " (with each run's last.pt measured as `<arm> last.pt`)" if args.last else ""
    )
    head = (
        "# Attribute model: colour, expression and framing as shortcuts\n\n"
        f"Command: `FER_DATA_ROOT=... python bench/bench_attr_shortcuts.py --budget {args.budget:g} --seeds "
        f"{args.seeds} {flags} --name {args.name}` at commit `{commit}`. The default profile's UTKFace "
        "attribute stage (ImageNet efficientnet_lite0, 112 px, faces shrunk to 64 px) on the real UTKFace: "
        f"{arms_said} ({described}) of `pretrain_attributes`. The same data and time "
        "budget in every arm, each in a fresh process, one after the other; load average (1 min) after each "
        f"arm: {', '.join(f'{v:.1f}' for v in loads)}. val_* = the validation faces carved from UTKFace's "
        "training split (the choice is made on them), test_* = the balanced 2,000-face test (reported), each "
        "in colour, in greyscale (luminance only) and as the central 80 % and 65 % of each side (tighter "
        "framings, as other collections' crops); ckplus_* = CK+48's adults (evaluation only: the "
        "face-weighted share given an age under 16, and the median over expressions of the median predicted "
        "age); astronaut = the scikit-image photo (about 41 years old when taken) through the detector.\n\n"
        f"Means over seeds:\n\n{to_markdown(means.round(4).reset_index())}\n\nEvery run:\n\n"
    )
    write_benchmark(
        table,
        args.name,
        head,
        folder=Path(args.out) if args.out else get_paths().results / "benchmarks",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
