"""How should an attribute model be read out? The same weights, every readout.

For each attribute checkpoint given (a fer_lib checkpoint with an age head in bins), each readout is
measured as ``bench_attr_shortcuts.py`` measures a trained arm: UTKFace validation (the choice is made
there) and the balanced test, each seen as :data:`fer_lib.stages.pretrain.INPUT_VIEWS` says; CK+48's adults
(evaluation only); the astronaut photo. Only the readout differs between the rows of one checkpoint, so
the table separates the readout from the training. By default the age readouts of
:data:`fer_lib.tasks.AGE_MODES` that read bins (``bins``: paper A's top-2 expected value; ``median``: the
bins' median); ``--readout NAME KEY=VALUE ...`` names others, as changes to the checkpoint's model config
(``age_mode``; ``grey_heads``: the heads read from the greyscale view; ``mirror``: every head read as
the mean over the face and its mirror image). A readout that changes how gender is read (``grey_heads``,
``mirror``) gets its male threshold chosen again on validation, as the stage chooses it. Writes
``<results>/benchmarks/<--name>.{md,csv}``.

    FER_DATA_ROOT=../shared/datasets python bench/bench_age_readout.py results/models/attributes.pt
    FER_DATA_ROOT=... python bench/bench_age_readout.py A.pt B.pt --readout as_stored \\
        --readout grey grey_heads=age,gender --name attribute_grey_heads
    FER_DATA_ROOT=... python bench/bench_age_readout.py A.pt B.pt C.pt --readout as_stored \
        --readout mirror mirror=true --name attribute_mirror
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

from fer_lib.config import get_paths, get_profile, parse_overrides  # noqa: E402
from fer_lib.io import atomic_torch_save  # noqa: E402
from fer_lib.models import build_model_from_checkpoint, load_checkpoint  # noqa: E402
from fer_lib.provenance import git_commit  # noqa: E402
from fer_lib.reporting import to_markdown, write_benchmark  # noqa: E402

#: The readouts of a bins head, paper A's first: name -> the model config they change.
READOUTS = {"bins": {"age_mode": "bins"}, "median": {"age_mode": "median"}}
#: What a readout may change in a checkpoint's model config.
READOUT_KEYS = ("age_mode", "grey_heads", "mirror")


def readout_changes(items: list[str]) -> dict:
    """``["age_mode=median", "grey_heads=age,gender", "mirror=true"]`` -> model config changes (SystemExit
    on others)."""
    changes = parse_overrides(items)
    unknown = set(changes) - set(READOUT_KEYS)
    if unknown:
        raise SystemExit(
            f"bench_age_readout: a readout changes {', '.join(READOUT_KEYS)}, not {sorted(unknown)}"
        )
    if "grey_heads" in changes:
        changes["grey_heads"] = [h.strip() for h in changes["grey_heads"].split(",") if h.strip()]
    if "mirror" in changes:
        value = str(changes["mirror"]).lower()
        if value not in ("true", "false"):
            raise SystemExit(f"bench_age_readout: mirror is true or false, not {changes['mirror']!r}")
        changes["mirror"] = value == "true"
    return changes


def gender_readout(model_config: dict) -> tuple[list[str], bool]:
    """What decides a gender head's output beside its weights: the grey heads and the mirror."""
    return list(model_config.get("grey_heads") or []), bool(model_config.get("mirror"))


def with_readout(checkpoint: Path, name: str, changes: dict, folder: Path, cfg, paths) -> Path:
    """A copy of ``checkpoint`` in ``folder`` (as ``<name>.pt``) whose model config has ``changes`` (the
    weights unchanged); where the grey heads or the mirror change for a gender head, its male threshold is
    chosen again on UTKFace validation (``cfg`` / ``paths``), as the stage chooses it for the readout it
    trains with."""
    ckpt = load_checkpoint(checkpoint)
    mc = ckpt["model_config"]
    if mc.get("age_mode", "bins") == "regression":
        raise SystemExit(f"bench_age_readout: {checkpoint} has a regression age head, not bins")
    before = gender_readout(mc)
    mc.update(changes)
    out = folder / f"{name}.pt"
    atomic_torch_save(ckpt, out)
    if "gender" in mc["tasks"] and gender_readout(mc) != before:
        from fer_lib.stages import pretrain as stage

        model = build_model_from_checkpoint(out).eval()
        df, _ = stage.utkface_splits(cfg, paths, progress=False)
        val = stage._dataset(df[df["split"] == "val"].reset_index(drop=True), model, cfg.pretrain_attributes)
        stage.threshold_on_val(model, out, val, cfg)
    return out


def readout_rows(checkpoints: list[Path], readouts: dict, measure_one, cfg, paths) -> list[dict]:
    """One row per checkpoint and readout: ``measure_one(copy)`` of the checkpoint's copy read out that way
    (:func:`with_readout`, in a temporary folder), after its ``checkpoint`` and ``readout`` names."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer_readout_") as tmp:
        for checkpoint in checkpoints:
            for name, changes in readouts.items():
                copy = with_readout(checkpoint, name, changes, Path(tmp), cfg, paths)
                row = {"checkpoint": str(checkpoint), "readout": name, **measure_one(copy)}
                rows.append(row)
                print(f"{checkpoint} {name}: {row}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="*", type=Path, help="attribute checkpoints (age head in bins)")
    ap.add_argument(
        "--readout",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "KEY=VALUE"),
        help="a readout: its name and the model config it changes (age_mode, grey_heads, mirror; repeatable; "
        "none: as the checkpoint is); default: bins and median",
    )
    ap.add_argument("--name", default="age_readout", help="the tables' file name (no suffix)")
    ap.add_argument("--out", default=None, help="folder for the tables (default <results>/benchmarks)")
    args = ap.parse_args(argv)
    if not os.environ.get("FER_DATA_ROOT"):  # `make bench` runs every script: skip, do not fail
        print("bench_age_readout: skipped, FER_DATA_ROOT is unset (it measures on the real UTKFace)")
        return 0
    if not args.checkpoints:  # as `make bench` runs it: no model to read
        print("bench_age_readout: skipped, no attribute checkpoint given")
        return 0
    readouts = {r[0]: readout_changes(r[1:]) for r in args.readout} or READOUTS
    missing = [str(p) for p in args.checkpoints if not p.is_file()]
    if missing:
        raise SystemExit(f"bench_age_readout: no such checkpoint: {', '.join(missing)}")
    commit = git_commit()
    cfg = get_profile("default")
    paths = get_paths(cfg)

    def measure_one(copy: Path) -> dict:
        threshold = load_checkpoint(copy)["model_config"].get("male_threshold")
        return {"male_threshold": threshold, **measure(copy, cfg, paths)}

    table = pd.DataFrame(readout_rows(args.checkpoints, readouts, measure_one, cfg, paths))
    scores = [c for c in table.columns if c.startswith(("val_", "test_", "ckplus_"))]
    means = table.groupby("readout", sort=False)[scores].mean().T
    names = " ".join(str(p) for p in args.checkpoints)
    flags = "".join(f" --readout {' '.join(r)}" for r in args.readout)
    said = "; ".join(
        f"`{k}`: "
        + (", ".join(f"{a}={','.join(b) if isinstance(b, list) else b}" for a, b in v.items()) or "as stored")
        for k, v in readouts.items()
    )
    head = (
        "# Attribute model: the readout\n\n"
        f"Command: `FER_DATA_ROOT=... python bench/bench_age_readout.py {names}{flags} --name {args.name}` at "
        f"commit `{commit}`. Each checkpoint's own weights, read out each way ({said}; `age_mode` bins is "
        "paper A's top-2 expected value, median the median of the 100 one-year bins; `grey_heads` the heads "
        "read from each face's greyscale view; `mirror` every head read as the mean over the face and its "
        "mirror image; a readout that changes how gender is read has its male threshold chosen again on "
        "validation). "
        "val_* = the validation faces carved from "
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
