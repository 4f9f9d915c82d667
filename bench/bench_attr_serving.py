"""What the attribute model's readouts cost when served: one pass against the greyscale view and the mirror.

The published attribute model (``results/models/attributes.pt``, or a checkpoint given) reads age and
gender from each face's greyscale view (``grey_heads``) and every head as the mean over the face and its
mirror image (``mirror``): four backbone passes per face where paper A's readout makes one. The same
weights are served four ways, as copies whose model config differs only in those two settings: one pass
(neither), greyscale view only, mirror only, and as stored (both), through ``Recognizer.predict_faces``
(the user-facing call on face crops: batched uint8 preprocessing, BatchNorm folded, channels_last) with
PyTorch and with onnxruntime (``fer_lib.export.export_onnx`` of each copy). Faces per second over 64 real
crops (80-260 px around the astronaut's face) in calls of 1 and of 32 faces, best of interleaved rounds;
``vs_one_pass`` = that readout's faces/s over the one-pass readout's, same backend and batch, same run (a
shared machine: only ratios within a run mean something). ``max_diff_vs_torch``: the largest difference
of an onnxruntime answer (age in years, p(female), ethnicity probabilities) from PyTorch's for the same
readout (the export carries the readout).

    .venv/bin/python bench/bench_attr_serving.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_inference import face_crops, timed_run  # noqa: E402

from fer_lib.config import get_paths  # noqa: E402
from fer_lib.provenance import git_commit  # noqa: E402
from fer_lib.reporting import write_benchmark  # noqa: E402

#: The readouts served: name -> (grey_heads, mirror) of the model config.
READOUTS = {
    "one pass": ((), False),
    "greyscale view": (("age", "gender"), False),
    "mirror": ((), True),
    "greyscale view + mirror": (("age", "gender"), True),
}


def readout_copy(checkpoint: Path, grey_heads: tuple, mirror: bool, out: Path) -> Path:
    """``checkpoint`` with its model config's ``grey_heads`` and ``mirror`` set (weights unchanged)."""
    from fer_lib.io import atomic_torch_save
    from fer_lib.models import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    ckpt["model_config"].update(grey_heads=list(grey_heads), mirror=bool(mirror))
    atomic_torch_save(ckpt, out)
    return out


def answers(rec, crops) -> np.ndarray:
    """Each face's age, p(female) and ethnicity probabilities, as served."""
    return np.array(
        [[f.age, f.p_female, *f.ethnicity_probs.values()] for f in rec.predict_faces(crops)], dtype=float
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?", default=None, help="default: results/models/attributes.pt")
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default 2)")
    ap.add_argument("--faces", type=int, default=64, help="face crops per measurement (default 64)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="faces per call (default 1 32)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the fastest of each is kept")
    ap.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime path")
    ap.add_argument("--out", default=None, help="folder for attribute_serving.md/.csv")
    args = ap.parse_args(argv)

    import torch

    from fer_lib.export import export_onnx
    from fer_lib.serving import Recognizer
    from fer_lib.serving.default_model import published_models

    paths = get_paths()
    published = {p.name: p for p in published_models()}
    checkpoint = (
        Path(args.checkpoint) if args.checkpoint else published.get("attributes.pt", Path("attributes.pt"))
    )
    if not checkpoint.is_file():
        if args.checkpoint is None:
            print("bench_attr_serving: skipped, no published attribute model (results/models/attributes.pt)")
            return 0
        raise SystemExit(f"bench_attr_serving: no such checkpoint: {checkpoint}")
    torch.set_num_threads(args.threads)
    crops = face_crops(args.faces)
    fns, onnx_diff = {}, {}
    with tempfile.TemporaryDirectory(prefix="fer_attr_serving_") as tmp:
        for name, (grey, mirror) in READOUTS.items():
            copy = readout_copy(checkpoint, grey, mirror, Path(tmp) / f"{len(fns)}.pt")
            rec = Recognizer(copy, threads=args.threads)
            fns[(name, "torch")] = lambda c, r=rec: answers(r, c)
            if not args.no_onnx:
                onnx_path = Path(tmp) / f"{len(fns)}.onnx"
                export_onnx(copy, onnx_path)
                orec = Recognizer(onnx_path, threads=args.threads)
                fns[(name, "onnxruntime")] = lambda c, r=orec: answers(r, c)
                onnx_diff[name] = float(np.abs(answers(orec, crops) - answers(rec, crops)).max())
        for fn in fns.values():  # warm-up: first-call allocations, kernel selection
            for b in args.batches:
                fn(crops[:b])
        best: dict[tuple, float] = {}
        for r in range(args.repeats):
            for (name, backend), fn in fns.items():
                for b in args.batches:
                    secs, _ = timed_run(fn, crops, b)
                    print(
                        f"round {r + 1}: {name} {backend} batch {b}: {len(crops) / secs:.1f} faces/s",
                        flush=True,
                    )
                    best[(name, backend, b)] = min(secs, best.get((name, backend, b), float("inf")))
    rows = []
    for (name, backend, b), secs in best.items():
        base = best[("one pass", backend, b)]
        rows.append(
            {
                "readout": name,
                "backend": backend,
                "batch": b,
                "faces_per_s": round(len(crops) / secs, 1),
                "ms_per_face": round(1000 * secs / len(crops), 2),
                "vs_one_pass": round(base / secs, 2),
                "max_diff_vs_torch": float(onnx_diff[name]) if backend == "onnxruntime" else np.nan,
            }
        )
    table = pd.DataFrame(rows).sort_values(["backend", "batch"], kind="stable", ignore_index=True)
    print(table.to_string(index=False))
    cmd = ".venv/bin/python bench/bench_attr_serving.py " + " ".join(argv or sys.argv[1:])
    head = (
        "# The attribute model served: one pass against the greyscale view and the mirror\n\n"
        f"Command: `{cmd.strip()}` at commit `{git_commit()}`, checkpoint `{checkpoint.name}`. "
        f"{len(crops)} real face crops (80-260 px, astronaut photo), Recognizer.predict_faces, "
        f"{args.threads} torch / onnxruntime threads, torch {torch.__version__}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end (only ratios within this run mean something). Best of "
        f"{args.repeats} interleaved round(s). The same weights each time; only the model config's grey_heads "
        "and mirror differ. vs_one_pass = faces/s over the one-pass readout's (same backend and batch); "
        "max_diff_vs_torch = the largest onnxruntime difference from PyTorch's in age (years), p(female) or an "
        "ethnicity probability.\n\n"
    )
    out = Path(args.out) if args.out else paths.results / "benchmarks"
    print(f"wrote {write_benchmark(table, 'attribute_serving', head, folder=out)} and .csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
