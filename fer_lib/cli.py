"""``python -m fer_lib``: the stage commands and the end-to-end runner.

Each stage command executes that stage's notebook headless with papermill (so a cluster job and a
notebook session run the same code) and writes the executed copy under results/notebooks/.
"""

from __future__ import annotations

import argparse
import sys

from . import config
from .runner import STAGES, ChainFailed, list_notebooks, run_chain

_STAGE_HELP = {
    "prepare": "build / locate datasets, validation report, face crops (notebook 00)",
    "pretrain": "multi-task pre-training: identity + age / gender / ethnicity (notebook 01)",
    "finetune": "expression fine-tuning, 8 / 7 classes and valence-arousal (notebook 02)",
    "gcn": "paper B's label-graph GCN head (notebook 03)",
    "video": "per-frame features, statistics pooling, video classifiers (notebook 04)",
    "report": "reproduced vs published tables and figures (notebook 05)",
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=config.PROFILE_NAMES, default=None,
                   help="smoke | default | paper (default: $FER_PROFILE or default)")
    p.add_argument("--set", dest="overrides", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a profile value, e.g. --set finetune.full_epochs=2 (repeatable)")
    p.add_argument("--data-root", default=None, help="folder of real datasets (default: $FER_DATA_ROOT)")
    p.add_argument("--kernel", default=None, help="Jupyter kernel (default: fer-lib when installed)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fer_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for stage, nb in STAGES.items():
        p = sub.add_parser(stage, help=_STAGE_HELP[stage], description=f"{_STAGE_HELP[stage]}; runs {nb}.ipynb")
        _common(p)
    p = sub.add_parser("reproduce", help="run every notebook in order (stops at the first failure)")
    _common(p)
    p.add_argument("--from", dest="start_from", default=None, metavar="NOTEBOOK",
                   help="resume the chain at this notebook (name, stem, NN prefix or stage)")
    p.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK", help="run only these notebooks")
    p = sub.add_parser("profile", help="print a profile with overrides applied")
    _common(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    sub.add_parser("notebooks", help="list the notebooks of the chain in order")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = config.parse_overrides(getattr(args, "overrides", None))
        if args.command == "notebooks":
            for nb in list_notebooks():
                print(nb.name)
            return 0
        if args.command == "profile":
            prof = config.get_profile(args.profile, overrides)
            print(prof.to_json() if args.json else prof.summary())
            return 0
        if args.command == "reproduce":
            start, only = args.start_from, args.only
        else:
            start, only = None, [args.command]
        results = run_chain(args.profile, overrides, data_root=args.data_root, start_from=start, only=only,
                            kernel=args.kernel)
    except ChainFailed as exc:
        print(f"\n[fer_lib] FAILED in {exc.notebook.name}: {type(exc.cause).__name__}", file=sys.stderr)
        print(f"[fer_lib] the executed copy with the error is: {exc.output}", file=sys.stderr)
        print(f"[fer_lib] fix it, then resume with: python -m fer_lib reproduce --from {exc.notebook.stem}",
              file=sys.stderr)
        return 1
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = sum(r.seconds for r in results)
    print(f"[fer_lib] {len(results)} notebook(s) ran in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
