"""Does the Emotion-GCN's valence/arousal need ``gcn.va_scale`` under paper B's optimiser?

Trains, on the default profile's synthetic AffectNet (2,400 training rows) and from the same start, the
linear valence/arousal head and the Emotion-GCN with the profile's ``va_scale`` and with paper B's
unscaled rows (``va_scale=1``), once under the profile's own GCN recipe (AdamW, cosine, one head-only
epoch) and once under paper B's optimiser (SGD 1e-3, momentum 0.9, weight decay 1e-3, x0.1 every 10
epochs, every layer from the start) for the same number of epochs. The baseline of each optimiser is
its linear head: the table gives each GCN's CCC gap to it (``fer_lib.stages.gcn.va_scale_study``).
Writes ``<results>/benchmarks/gcn_va_scale.{md,csv}``.

    python bench/bench_gcn_va.py                    # fresh run folder: the backbone starts from ImageNet
    python bench/bench_gcn_va.py --set gcn_train.full_epochs=3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fer_lib import config  # noqa: E402
from fer_lib.provenance import git_commit  # noqa: E402
from fer_lib.reporting import write_benchmark  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="profile override")
    ap.add_argument(
        "--out", default=None, help="folder for gcn_va_scale.md/.csv (default <results>/benchmarks)"
    )
    args = ap.parse_args(argv)
    from fer_lib.stages import gcn as stage

    out = Path(args.out) if args.out else config.get_paths(args.profile).results / "benchmarks"
    overrides = config.parse_overrides(args.set)
    commit = git_commit()  # the code this run imports (read before training: the tree may change meanwhile)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fer_gcn_va_") as tmp:
        os.environ["FER_RESULTS_DIR"] = f"{tmp}/results"  # a fresh run: no 02 checkpoint, ImageNet start
        os.environ.pop("FER_DATA_ROOT", None)  # the synthetic AffectNet with its known label dependency
        cfg = config.get_profile(args.profile, overrides)
        paths = config.get_paths(cfg)
        config.seed_everything(cfg.seed)
        table = stage.va_scale_study(cfg, paths, progress=False)
    minutes = (time.perf_counter() - t0) / 60
    tc = cfg.gcn_train
    head = (
        "# Emotion-GCN valence/arousal: va_scale under the profile's optimiser and under paper B's\n\n"
        f"Command: `python bench/bench_gcn_va.py{''.join(f' --set {s}' for s in args.set)}` at commit "
        f"`{commit}` ({minutes:.0f} min, load average {os.getloadavg()[0]:.1f} at the end). Profile "
        f"`{cfg.name}`: synthetic AffectNet ({cfg.data.n_affectnet_train} training rows; valence and arousal "
        f"follow the expression), {tc.backbone} at {tc.image_size} px from ImageNet, batch {tc.batch_size}, "
        f"seed {cfg.seed}, one run per row. `profile` = the profile's gcn_train recipe ({tc.optimizer}, "
        f"{tc.scheduler}, {tc.head_epochs} head-only + {tc.full_epochs} epochs); `paper_b` = paper B's SGD "
        "recipe for the same number of epochs. valence_gap / arousal_gap: CCC minus the linear head's of the "
        "same optimiser (report split). *_pred_std vs *_label_std: the spread of the outputs against the "
        "labels'.\n\n"
    )
    write_benchmark(table.round(4), "gcn_va_scale", head, folder=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
