"""Peak memory of video feature extraction vs video length: streaming keeps it flat.

Writes a short and a long 640x480 clip (default 1 and 20 minutes at 25 fps), extracts per-frame
features from each in a fresh subprocess (real PyAV decode, batched detect/crop/extract with the
background decode thread; a colour-blob detector and a mean-colour extractor stand in for MTCNN and
the CNN, so the run takes minutes, not hours) and compares the peak RSS (VmHWM) of the two runs.
Holding every frame would need ~27 GB for 20 minutes; streaming should need the same as for 1 minute
plus the small per-frame feature arrays.

    python bench/bench_memory.py [--short-min 1 --long-min 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from fer_lib.reporting import write_benchmark  # noqa: E402

FPS = 25
W, H = 640, 480


def write_clip(path: Path, seconds: float) -> None:
    """A moving saturated square over a fixed noisy background (MPEG-4; fast to encode)."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    background = (90 + rng.integers(0, 20, (H, W, 3))).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for i in range(int(seconds * FPS)):
            f = background.copy()
            x, y = int((W - 96) * (0.5 + 0.5 * np.sin(i / 20))), int((H - 96) * (0.5 + 0.5 * np.cos(i / 31)))
            f[y : y + 96, x : x + 96] = (220, 40, 40)
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(path: str) -> None:
    """Extract features of one video and print a JSON line with the peak RSS."""
    from fer_lib.video import extract_video_features
    from fer_lib.video.fakes import ColourBlobDetector, MeanColourExtractor

    before = peak_rss_mb()
    t0 = time.time()
    vf = extract_video_features(path, ColourBlobDetector(), MeanColourExtractor(), batch_size=32)
    print(
        json.dumps(
            {
                "frames": vf.n_frames,
                "frames_with_face": vf.n_frames_with_face,
                "seconds": time.time() - t0,
                "peak_rss_mb": peak_rss_mb(),
                "rss_before_mb": before,
            }
        )
    )


def measure(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short-min", type=float, default=1.0)
    ap.add_argument("--long-min", type=float, default=20.0)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, minutes in (("short", args.short_min), ("long", args.long_min)):
            path = Path(tmp) / f"{label}.mp4"
            t0 = time.time()
            write_clip(path, minutes * 60)
            print(
                f"wrote {minutes:g} min clip in {time.time() - t0:.0f} s ({path.stat().st_size / 1e6:.0f} MB)",
                flush=True,
            )
            r = measure(path)
            rows.append(
                {
                    "clip": label,
                    "minutes": minutes,
                    "frames": r["frames"],
                    "seconds": round(r["seconds"], 1),
                    "frames_per_s": round(r["frames"] / r["seconds"], 1),
                    "peak_rss_mb": round(r["peak_rss_mb"], 1),
                    "all_frames_in_memory_mb": round(r["frames"] * W * H * 3 / 2**20, 1),
                }
            )
            path.unlink()
    df = pd.DataFrame(rows)
    df["peak_ratio_vs_short"] = (df.peak_rss_mb / df.peak_rss_mb.iloc[0]).round(3)
    write_benchmark(
        df,
        "memory",
        f"# Video extraction memory vs length ({W}x{H}, {FPS} fps)\n\n",
        "\nPeak RSS of a fresh process per clip (VmHWM); the fake detector/extractor isolate the "
        "decode/batch/queue path. Command: `python bench/bench_memory.py`.\n",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
