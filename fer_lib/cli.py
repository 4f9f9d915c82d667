"""``python -m fer_lib``: the stage commands, the end-to-end runner and the inference tools.

Each stage command executes that stage's notebook headless with papermill (so a cluster job and a
notebook session run the same code) and writes the executed copy under runs/<profile>/notebooks/
(results/notebooks/ with --publish). --publish is refused, before anything runs, when tracked files
have uncommitted changes; --allow-dirty publishes anyway (the metrics rows then say clean=False).
``predict`` (faces in an image / folder / video -> CSV, overlays), ``export`` (ONNX) and
``import-hsemotion`` (public HSEmotion checkpoints -> fer_lib checkpoints) run directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import config
from .provenance import DirtyTreeError
from .runner import STAGES, ChainFailed, list_notebooks, run_chain

TOOLS = ("predict", "export", "import-hsemotion")

_STAGE_HELP = {
    "prepare": "build / locate datasets, validation report, face crops (notebook 00)",
    "pretrain": "multi-task pre-training: identity + age / gender / ethnicity (notebook 01)",
    "finetune": "expression fine-tuning, 8 / 7 classes and valence-arousal (notebook 02)",
    "gcn": "paper B's label-graph GCN head (notebook 03)",
    "video": "per-frame features, statistics pooling, video classifiers (notebook 04)",
    "report": "reproduced vs published tables and figures (notebook 05)",
    "demo": "the best model of the run on a public-domain photo and a synthetic video (notebook 06)",
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        choices=config.PROFILE_NAMES,
        default=None,
        help="smoke | default | paper (default: $FER_PROFILE or default)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a profile value, e.g. --set finetune.full_epochs=2 (repeatable)",
    )
    p.add_argument("--data-root", default=None, help="folder of real datasets (default: $FER_DATA_ROOT)")
    p.add_argument("--kernel", default=None, help="Jupyter kernel (default: fer-lib when installed)")
    p.add_argument(
        "--publish",
        action="store_true",
        default=None,
        help="write the published results/ (default: the git-ignored runs/<profile>/, or $FER_RESULTS_DIR); "
        "refused while tracked files have uncommitted changes",
    )
    p.add_argument(
        "--allow-dirty",
        action="store_true",
        help="publish even with uncommitted changes to tracked files (exploration only: the metrics "
        "rows record clean=False)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fer_lib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for stage, nb in STAGES.items():
        p = sub.add_parser(
            stage, help=_STAGE_HELP[stage], description=f"{_STAGE_HELP[stage]}; runs {nb}.ipynb"
        )
        _common(p)
    p = sub.add_parser("reproduce", help="run every notebook in order (stops at the first failure)")
    _common(p)
    p.add_argument(
        "--from",
        dest="start_from",
        default=None,
        metavar="NOTEBOOK",
        help="resume the chain at this notebook (name, stem, NN prefix or stage)",
    )
    p.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK", help="run only these notebooks")
    p = sub.add_parser(
        "profile", help="print a profile with overrides applied, then its chain of stages and their starts"
    )
    _common(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    sub.add_parser("notebooks", help="list the notebooks of the chain in order")
    _tool_parsers(sub)
    return parser


def _tool_parsers(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="expressions / VA / attributes of every face in an image, folder or video",
        description="Detect faces (MTCNN), crop them tightly and run a fer_lib checkpoint or ONNX "
        "model on them; one CSV row per face.",
    )
    p.add_argument("path", help="an image, a video, or a folder of them (searched recursively)")
    p.add_argument(
        "--checkpoint",
        default=None,
        nargs="+",
        help="fer_lib .pt or .onnx, or several with different heads (e.g. an expression and an "
        "attribute model); default: the run folder's checkpoints/02_expression_va/best.pt, else "
        "02_expression/best.pt (run folder: runs/$FER_PROFILE or runs/default, results/ with "
        "FER_PUBLISH=1), else the published models under results/models/",
    )
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    p.add_argument(
        "--overlay",
        default=None,
        metavar="OUT",
        help="write an annotated image / video (a folder of them for a folder input)",
    )
    p.add_argument("--stride", type=int, default=1, help="videos: use every N-th frame (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="videos: stop after this many used frames")
    p.add_argument("--backend", choices=["torch", "onnx"], default=None, help="default: by the file suffix")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="face crops per forward pass (default: the library's measured choice per device)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the library's)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model: 10-30 s once, then faster passes (folders and videos)",
    )
    p.add_argument(
        "--min-face-size",
        type=int,
        default=config.VideoConfig.min_face_predict,
        help="smallest face side in pixels (MTCNN; default video.min_face_predict)",
    )
    p.add_argument("--min-prob", type=float, default=0.9, help="drop detections below this probability")
    p.add_argument("--largest", action="store_true", help="keep only the largest face of each image / frame")
    p.add_argument(
        "--crops",
        action="store_true",
        help="each image is one already-cropped face (e.g. FER2013 48x48, CK+): no detection",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX (checked against PyTorch)",
        description="ONNX with a dynamic batch axis, one output per head, label orders in the "
        "metadata; fails when onnxruntime and PyTorch differ by >= 1e-4.",
    )
    p.add_argument(
        "checkpoint", help="a fer_lib checkpoint (.pt) of any model kind (MultiTaskNet, Emotion-GCN)"
    )
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--image-size", type=int, default=None, help="input side (default: the model's)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")

    p = sub.add_parser(
        "import-hsemotion",
        help="convert a public HSEmotion .pt (pickled timm model) to a fer_lib checkpoint",
        description="HSEmotion files are whole pickled models: loading one runs code from the "
        "file, so --trust is required. Rows are reordered from the alphabetical "
        "HSEmotion order to fer_lib's canonical order; _mtl models get a VA head.",
    )
    p.add_argument("file", help="the HSEmotion .pt file (e.g. enet_b0_8_va_mtl.pt)")
    p.add_argument("--out", required=True, help="the fer_lib checkpoint to write")
    p.add_argument(
        "--trust",
        action="store_true",
        help="I trust this file's source: allow unpickling it (it can execute code)",
    )
    p.add_argument(
        "--arch", default=None, help="timm architecture when the file does not say (efficientnet_b0)"
    )
    p.add_argument(
        "--classes",
        type=int,
        choices=[7, 8],
        default=None,
        help="expression classes (default: from the output count; 9/10 outputs = 7/8 + VA)",
    )


def paths_from_here(overrides: dict[str, str]) -> dict[str, str]:
    """Override values that name an existing file or folder relative to the current directory (a path
    with a folder or a suffix, e.g. ``video.checkpoint=results/models/expression.pt``), made absolute:
    the notebooks run with ``notebooks/`` as their directory, where the relative path means nothing."""
    out = {}
    for key, value in overrides.items():
        p = Path(value).expanduser()
        named_like_a_path = len(p.parts) > 1 or bool(p.suffix)
        out[key] = str(p.resolve()) if named_like_a_path and not p.is_absolute() and p.exists() else value
    return out


def run_tool(args: argparse.Namespace) -> int:
    """The non-notebook commands: predict, export, import-hsemotion."""
    if args.command == "predict":
        from .serving import Recognizer, predict_path

        rec = Recognizer(
            args.checkpoint[0] if args.checkpoint and len(args.checkpoint) == 1 else args.checkpoint,
            device=args.device,
            backend=args.backend,
            min_face_size=args.min_face_size,
            min_prob=args.min_prob,
            largest_only=args.largest,
            batch_size=args.batch_size,
            threads=args.threads,
            compile=args.compile,
            crops=args.crops,
        )
        print(f"[fer_lib] {rec}", file=sys.stderr)
        _, summary = predict_path(
            rec,
            args.path,
            out=args.out,
            overlay=args.overlay,
            stride=max(1, args.stride),
            max_frames=args.max_frames,
            progress=not args.no_progress,
        )
        print(f"[fer_lib] {summary}")
        for o in summary.overlays[:3]:
            print(f"[fer_lib] overlay: {o}")
        return 0
    if args.command == "export":
        from .export import export_onnx

        report = export_onnx(
            args.checkpoint, args.out, image_size=args.image_size, opset=args.opset, check=not args.no_check
        )
        print(f"[fer_lib] {report}")
        return 0
    if args.command == "import-hsemotion":
        from .interop import import_hsemotion

        report = import_hsemotion(
            args.file, args.out, trust=args.trust, arch=args.arch, n_classes=args.classes
        )
        print(f"[fer_lib] {report}")
        return 0
    raise ValueError(f"unknown command {args.command!r}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in TOOLS:
        try:
            return run_tool(args)
        except PermissionError as exc:  # interop.UntrustedPickleError
            print(f"error: {exc}", file=sys.stderr)
            return 3
        except (ValueError, KeyError, FileNotFoundError, TypeError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        overrides = paths_from_here(config.parse_overrides(getattr(args, "overrides", None)))
        if args.command == "notebooks":
            for nb in list_notebooks():
                print(nb.name)
            return 0
        if args.command == "profile":
            from .chain import format_plan, with_stand_ins

            prof = config.get_profile(args.profile, overrides)
            prof = with_stand_ins(prof, config.get_paths(prof, data_root=args.data_root))
            print(prof.to_json() if args.json else prof.summary() + "\n\n" + format_plan(prof))
            return 0
        if args.command == "reproduce":
            start, only = args.start_from, args.only
        else:
            start, only = None, [args.command]
        results = run_chain(
            args.profile,
            overrides,
            data_root=args.data_root,
            start_from=start,
            only=only,
            kernel=args.kernel,
            publish=getattr(args, "publish", None),
            allow_dirty=getattr(args, "allow_dirty", False),
        )
    except DirtyTreeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ChainFailed as exc:
        print(f"\n[fer_lib] FAILED in {exc.notebook.name}: {type(exc.cause).__name__}", file=sys.stderr)
        print(f"[fer_lib] the executed copy with the error is: {exc.output}", file=sys.stderr)
        print(
            f"[fer_lib] fix it, then resume with: python -m fer_lib reproduce --from {exc.notebook.stem}",
            file=sys.stderr,
        )
        return 1
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = sum(r.seconds for r in results)
    print(f"[fer_lib] {len(results)} notebook(s) ran in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
