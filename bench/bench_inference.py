"""Per-face inference throughput: fer_lib's predict path vs the HSEmotion package's way, same run.

For each model (default efficientnet_b0 and mobilenetv2_100 at 224 px, random init: speed only) an
HSEmotion-style timm model with 10 outputs (8 expressions in alphabetical order + valence, arousal)
is converted with ``fer_lib.interop.convert_timm_model``, and these paths run over the same face crops
(real photo crops of different sizes, as a detector hands them over):

- reference: the public ``hsemotion`` package's ``predict_emotions``: one face at a time, PIL
  ``Resize`` + torchvision ``ToTensor`` + ``Normalize``, eager NCHW float32 forward (under
  ``torch.no_grad``, which the package does not even use), softmax over the 8 expression logits;
- fer_lib torch: ``Recognizer.predict_faces`` (one PIL resize per crop into a uint8 batch, one
  vectorised normalisation whose NCHW view is channels_last, ``inference_mode``, channels_last model);
- fer_lib onnxruntime: the same with the model exported by ``fer_lib.export.export_onnx``;
- ``..., no overlap``: the same with ``Recognizer(overlap=False)``: crops of the next pass are resized
  after the current pass instead of during it (a background thread; more faces than a pass only);
- fer_lib torch fp32, compiled: ``Recognizer(compile=True)``: ``torch.compile`` with inductor's freezing
  (weights folded into the graph), passes padded to the pass size; its compile time is reported apart;
- fer_lib torch bf16: CPU autocast to bfloat16 (timed only when its probabilities stay within
  ``--bf16-tol`` of the reference's).

Batch 1 = one face per call (latency); batch 32 = 32 faces per call (the reference still handles them
one at a time: that is how it works). Every fer_lib path's expression probabilities (canonical order)
are compared with the reference's (reordered): ``max_abs_diff_prob``. The machine's ceiling is a large
float32 matmul measured in the same run; each model's FLOPs per face come from
``torch.utils.flop_counter.FlopCounterMode``; ``fraction_of_ceiling`` = achieved FLOP/s / ceiling.

    flock /tmp/fer_heavy.lock .venv/bin/python bench/bench_inference.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_lib import labels  # noqa: E402
from fer_lib.config import get_paths  # noqa: E402
from fer_lib.reporting import write_benchmark  # noqa: E402


def face_crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` RGB crops of 80-260 px around the face of scikit-image's astronaut."""
    from skimage import data

    rng = np.random.default_rng(seed)
    img = data.astronaut()
    crops = []
    for _ in range(n):
        s = int(rng.integers(80, 260))
        x, y = int(rng.integers(0, 512 - s)), int(rng.integers(0, 512 - s))
        crops.append(np.ascontiguousarray(img[y : y + s, x : x + s]))
    return crops


class HSEmotionReference:
    """The hsemotion package's ``HSEmotionRecognizer.predict_emotions``, one face per call."""

    def __init__(self, model, img_size: int):
        from torchvision import transforms

        self.model = model.eval()
        self.tf = transforms.Compose(
            [
                transforms.Resize((img_size, img_size)),
                transforms.ToTensor(),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )

    def predict_emotions(self, face_img: np.ndarray) -> np.ndarray:
        import torch
        from PIL import Image

        img_tensor = self.tf(Image.fromarray(face_img))
        img_tensor.unsqueeze_(0)
        with torch.no_grad():
            scores = self.model(img_tensor)[0].numpy()
        x = scores[:-2]  # _mtl: the last two outputs are valence, arousal
        e_x = np.exp(x - np.max(x))
        return e_x / e_x.sum()  # alphabetical HSEmotion order

    def __call__(self, crops) -> np.ndarray:
        return np.stack([self.predict_emotions(c) for c in crops])


def calibrate_classifier(model, crops, size: int, spread: float = 2.0, seed: int = 0) -> None:
    """Give a random-init timm model's 10-way classifier logits that vary over these faces with a standard
    deviation of ``spread`` (a random-init EfficientNet's logits are ~1e-5 and its features nearly the same
    for every face, so every path's probabilities would be 1/8 and their agreement meaningless):
    ``W`` random, scaled so that ``W (f - mean f)`` has std ``spread``, and bias ``-W mean f``."""
    import torch
    from PIL import Image

    ref = HSEmotionReference(model, size)
    x = torch.stack([ref.tf(Image.fromarray(c)) for c in crops])
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        mean = feats.mean(0)
        cls = model.get_classifier()
        w = torch.randn(cls.weight.shape, generator=torch.Generator().manual_seed(seed))
        w *= spread / ((feats - mean) @ w.T).std().clamp_min(1e-12)
        cls.weight.copy_(w)
        cls.bias.copy_(-(w @ mean))


def matmul_ceiling(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 FLOP/s of an ``n x n`` matmul on the current torch threads."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def model_flops(model, size: int) -> float:
    """FLOPs of one forward pass of one face (``FlopCounterMode``: 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    return float(counter.get_total_flops())


def faces_probs(rec, crops) -> np.ndarray:
    """``Recognizer.predict_faces`` (the user-facing call) as an array of canonical-order probabilities."""
    names = rec.expression_names
    return np.array([[f.expression_probs[n] for n in names] for f in rec.predict_faces(crops)])


def timed_run(fn, crops, batch: int) -> tuple[float, np.ndarray]:
    """Seconds to push every crop through ``fn`` in calls of ``batch`` faces, and the probabilities."""
    out = []
    t0 = time.perf_counter()
    for i in range(0, len(crops), batch):
        out.append(fn(crops[i : i + batch]))
    return time.perf_counter() - t0, np.concatenate(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--models", nargs="+", default=["efficientnet_b0", "efficientnet_lite0", "mobilenetv2_100"]
    )
    ap.add_argument("--size", type=int, default=224, help="input side (default 224)")
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default 2)")
    ap.add_argument("--faces", type=int, default=64, help="face crops per measurement (default 64)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="faces per call (default 1 32)")
    ap.add_argument(
        "--pass-size",
        type=int,
        default=None,
        help="faces per forward pass inside fer_lib (default: fer_lib.serving.CPU_BATCH)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the fastest of each is kept")
    ap.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime path")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 path")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile path")
    ap.add_argument(
        "--bf16-tol",
        type=float,
        default=0.01,
        help="time bf16 only if its probabilities stay within this of the reference (default 0.01)",
    )
    ap.add_argument("--out", default=None, help="folder for inference.md/.csv (default <results>/benchmarks)")
    args = ap.parse_args(argv)

    import timm
    import torch

    from fer_lib.interop import convert_timm_model
    from fer_lib.serving import CPU_BATCH, Recognizer

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    ceiling = matmul_ceiling()
    print(f"ceiling: float32 2048^3 matmul {ceiling / 1e9:.1f} GFLOP/s")
    crops = face_crops(args.faces)
    rows, notes, compile_s = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            timm_model = timm.create_model(name, pretrained=False, num_classes=10).eval()
            calibrate_classifier(timm_model, crops[:16], args.size)
            net, _ = convert_timm_model(timm_model)
            net.preprocess = net.preprocess.replace(input_size=args.size)  # served at the benchmarked size
            flops = model_flops(net, args.size)
            print(f"{name}@{args.size}: {flops / 1e9:.3f} GFLOP per face")
            ref = HSEmotionReference(timm_model, args.size)
            paths = {"reference (HSEmotion-style)": lambda c, r=ref: r(c)}
            fast = Recognizer(net, threads=args.threads, batch_size=args.pass_size)
            paths["fer_lib torch fp32"] = lambda c, r=fast: faces_probs(r, c)
            serial = Recognizer(net, threads=args.threads, batch_size=args.pass_size, overlap=False)
            paths["fer_lib torch fp32, no overlap"] = lambda c, r=serial: faces_probs(r, c)
            if not args.no_compile:
                comp = Recognizer(net, threads=args.threads, batch_size=args.pass_size, compile=True)
                t0 = time.perf_counter()
                comp.infer(crops[: comp.batch_size])  # the first pass compiles
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                fast.infer(crops[: comp.batch_size])
                compile_s[name] = first - (time.perf_counter() - t0)
                print(f"  torch.compile: {compile_s[name]:.1f} s")
                paths["fer_lib torch fp32, compiled"] = lambda c, r=comp: faces_probs(r, c)
            if not args.no_onnx:
                from fer_lib.export import export_onnx

                onnx_path = Path(tmp) / f"{name}.onnx"
                rep = export_onnx(net, onnx_path)
                print(f"  onnx export: max abs diff vs PyTorch {rep.worst:.2e}")
                onnx_rec = Recognizer(onnx_path, threads=args.threads, batch_size=args.pass_size)
                paths["fer_lib onnxruntime"] = lambda c, r=onnx_rec: faces_probs(r, c)
                onnx_serial = Recognizer(
                    onnx_path, threads=args.threads, batch_size=args.pass_size, overlap=False
                )
                paths["fer_lib onnxruntime, no overlap"] = lambda c, r=onnx_serial: faces_probs(r, c)
            if not args.no_bf16:
                bf = Recognizer(net, threads=args.threads, batch_size=args.pass_size, precision="bf16")
                probe = np.abs(
                    bf.infer(crops[:16])["expression_probs"]
                    - labels.reorder_columns(ref(crops[:16]), labels.HSEMOTION_ORDER_8)
                ).max()
                if probe <= args.bf16_tol:
                    paths["fer_lib torch bf16"] = lambda c, r=bf: faces_probs(r, c)
                else:
                    notes.append(
                        f"{name}: bf16 not timed, its probabilities differ from the reference's by "
                        f"{probe:.3f} (> {args.bf16_tol:g})"
                    )
                    print("  " + notes[-1])
            for fn in paths.values():  # warm-up: first-call allocations, oneDNN / ORT kernel selection
                for b in args.batches:
                    fn(crops[:b])
            best: dict[tuple[str, int], tuple[float, np.ndarray]] = {}
            for r in range(args.repeats):
                for path, fn in paths.items():
                    for b in args.batches:
                        secs, probs = timed_run(fn, crops, b)
                        print(
                            f"  round {r + 1}: {path} batch {b}: {len(crops) / secs:.1f} faces/s "
                            f"(load {os.getloadavg()[0]:.1f})",
                            flush=True,
                        )
                        if (path, b) not in best or secs < best[(path, b)][0]:
                            best[(path, b)] = (secs, probs)
            ref_probs = None
            for b in args.batches:
                ref_secs, ref_raw = best[("reference (HSEmotion-style)", b)]
                ref_probs = labels.reorder_columns(ref_raw, labels.HSEMOTION_ORDER_8)
                for path in paths:
                    secs, probs = best[(path, b)]
                    if path.startswith("reference"):
                        probs = labels.reorder_columns(probs, labels.HSEMOTION_ORDER_8)
                    fps = len(crops) / secs
                    rows.append(
                        {
                            "model": f"{name}@{args.size}",
                            "path": path,
                            "batch": b,
                            "faces_per_s": round(fps, 1),
                            "ms_per_face": round(1000 * secs / len(crops), 2),
                            "speedup_vs_reference": round(ref_secs / secs, 2),
                            "gflop_per_face": round(flops / 1e9, 3),
                            "gflop_per_s": round(fps * flops / 1e9, 2),
                            "fraction_of_ceiling": round(fps * flops / ceiling, 3),
                            "max_abs_diff_prob": float(np.abs(probs - ref_probs).max()),
                            "compile_s": round(compile_s[name], 1) if path.endswith("compiled") else np.nan,
                        }
                    )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))

    out = Path(args.out) if args.out else get_paths().results / "benchmarks"
    cmd = ".venv/bin/python bench/bench_inference.py " + " ".join(argv or sys.argv[1:])
    head = (
        "# Per-face inference throughput: fer_lib predict path vs the HSEmotion package's way\n\n"
        f"Command: `{cmd.strip()}`. {len(crops)} real face crops (80-260 px, astronaut photo) per "
        f"measurement, input {args.size} px, random-init weights (speed only; the classifier is scaled so that logits vary over faces with std 2, as a trained model's do, so that agreement is a real test), {args.threads} torch / "
        f"onnxruntime threads, torch {torch.__version__}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"load average {os.getloadavg()[0]:.1f} at the end (a shared machine: "
        "only ratios within this run mean something). Best of "
        f"{args.repeats} interleaved round(s).\n\n"
        "reference = one face per call, PIL Resize + ToTensor + Normalize, eager NCHW float32 (the public "
        "hsemotion package's predict_emotions); fer_lib = Recognizer.predict_faces (batched "
        f"uint8 preprocessing, BatchNorm folded into the convolutions, channels_last, inference_mode, passes of "
        f"{args.pass_size or CPU_BATCH} faces, the next pass resized in a thread during the current one unless "
        f"'no overlap') with PyTorch, onnxruntime, or bf16 autocast; 'compiled' = Recognizer(compile=True): "
        "torch.compile (inductor, weights frozen into the graph) for passes of that size, shorter ones padded "
        "(so a batch of 1 costs a whole pass); compile_s = its first pass minus an eager pass (once per process). "
        "batch = faces per call (the reference handles a batch of 32 one face at a time). "
        f"Ceiling: float32 2048x2048 matmul, {ceiling / 1e9:.1f} GFLOP/s in this run; gflop_per_face from "
        "FlopCounterMode (2 FLOPs per multiply-add); fraction_of_ceiling = faces/s x FLOPs / ceiling. "
        "max_abs_diff_prob: largest difference of an expression probability from the reference's "
        "(reordered to the canonical order).\n\n"
    )
    if notes:
        head += "\n".join(f"- {n}" for n in notes) + "\n\n"
    print(f"wrote {write_benchmark(table, 'inference', head, folder=out)} and .csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
