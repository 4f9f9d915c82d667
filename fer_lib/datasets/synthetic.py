"""Synthetic embedded default: every dataset written in its exact distributed format.

``generate(root, data_cfg)`` renders procedural faces (``_render``) and writes, under ``root/<name>/``:

- ``utkface``: ``images/[age]_[gender]_[race]_[YYYYMMDDHHMMSSfff].jpg.chip.jpg`` aligned chips
  (``chip_size``). The last two files of the folder order have a *malformed* name, the race field
  missing (``[age]_[gender]_[date].jpg.chip.jpg``) as in the official release, so that a loader's
  report-and-skip path runs; they are flagged ``malformed`` in the ground truth.
- ``affectnet``: ``training.csv`` / ``validation.csv`` (subDirectory_filePath, face_x, face_y,
  face_width, face_height, facial_landmarks, expression, valence, arousal) and the images under
  ``Manually_Annotated_Images/<subdir>/<sha224>.jpg``; faces sit in larger frames, so the csv box
  matters. ``facial_landmarks`` holds 68 iBUG-order points as ``x1;y1;x2;y2;...`` (2 decimals) for
  every row with a face and is the empty string for the No-Face rows (expression 10). Besides the
  canonical rows (0-7, training imbalanced like AffectNet with Happy most and Contempt least
  frequent, validation balanced) there are a few rows of 8 None, 9 Uncertain and 10 No-Face
  (VA -2), and a few canonical rows with VA -2 (expression valid, VA missing). Valence/arousal
  follow the expression (its prototype times the intensity, plus noise), so the labels correlate as in
  AffectNet; ``DataConfig.affectnet_va = "independent"`` instead takes them from a second expression
  drawn independently of the label and blended into the face more weakly (no label dependency).
- ``vggface2``: ``{train,test}/n000001/0001_01.jpg``: identity folders; the test identities are
  distinct from the training ones (``max(2, n_identities // 8)`` of them), as in VGGFace2.
- ``fer2013``: ``{train,validation,test}/{angry,...,surprise}/<Usage>_<n>.jpg`` 48x48 grey.
- ``afew``: ``{Train,Val}/{Angry,...,Surprise}/<9 digits>.avi`` (MPEG-4 in AVI): one person whose
  expression rises and falls (Gaussian intensity envelope) with slight head motion. In about a third
  of the clips the face is hidden for a short run of frames by an object passing in front
  (``occluded`` in ``ground_truth_frames.csv``), so detection fails there on purpose.
- ``vgaf``: ``{Train,Val}/<name>.mp4`` with 2-4 people and ``{Train,Val}_labels.txt`` (header
  ``Vid_name Label``; names without extension; 1 Positive, 2 Neutral, 3 Negative). The group label
  is the strict-majority expression group of the members.
- ``affwild2``: ``annotations/EXPR_Set/{Train_Set,Validation_Set}/<video>.txt`` (Aff-Wild2 header
  and order, ``-1`` = invalid), ``annotations/VA_Set/...`` (``valence,arousal``; ``-5,-5`` =
  invalid) and ``cropped_aligned/<video>/<frame:05d>.jpg`` (1-based, 112x112). Frames with the
  face occluded are invalid in both; one more frame per video is invalid in EXPR only and another
  in VA only.

Each folder also gets ``ground_truth.csv`` (and ``ground_truth_frames.csv`` for videos): the labels
the generator used, for tests. A dataset is built in ``root/.<name>.partial`` and renamed into
place after its ``.complete.json`` marker (the config fields it depends on + seed + generator
version) is written; a complete folder with the same marker is skipped, a different marker is
regenerated, and a leftover partial folder from an interrupted run is removed.

Every item draws from its own random generator seeded by (seed, dataset, item keys), so outputs are
byte-identical for a seed and independent of which other datasets are generated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..io import atomic_to_csv, atomic_write_text
from ..labels import (
    AFEW_ORDER,
    AFFECTNET_ORDER,
    AFFWILD2_ORDER,
    EXPRESSIONS_8,
    FER2013_ORDER,
    VGAF_CLASSES,
    expression_index,
)
from ..progress import tqdm
from ._render import (
    Identity,
    Look,
    Nuisance,
    Person,
    action_units,
    make_background,
    render_chip,
    render_scene,
    valence_arousal,
)

GENERATOR_VERSION = 1
DATASETS: tuple[str, ...] = ("utkface", "affectnet", "vggface2", "fer2013", "afew", "vgaf", "affwild2")
MARKER = ".complete.json"
FPS = 25

# DataConfig fields each dataset depends on (a change of one of them regenerates that dataset only).
_FIELDS: dict[str, tuple[str, ...]] = {
    "utkface": ("n_utkface", "chip_size"),
    "affectnet": ("n_affectnet_train", "n_affectnet_val", "chip_size", "affectnet_va"),
    "vggface2": ("n_identities", "images_per_identity", "chip_size"),
    "fer2013": ("n_fer2013_per_class",),
    "afew": ("n_afew_per_class", "video_frames", "video_size"),
    "vgaf": ("n_vgaf_per_class", "video_frames", "video_size"),
    "affwild2": ("n_affwild2_videos", "affwild2_frames"),
}

# Fields written into a marker only when they differ from this default, so that folders generated
# before the field existed stay complete.
_OPTIONAL_FIELDS = {"affectnet_va": "expression"}
# AffectNet training-set class counts (Mollahosseini et al.), used for a tempered imbalance.
_AFFECTNET_COUNTS = {
    "Neutral": 74874,
    "Happy": 134415,
    "Sad": 25459,
    "Surprise": 14090,
    "Fear": 6378,
    "Disgust": 3803,
    "Anger": 24882,
    "Contempt": 3750,
}
# FER2013-like mild imbalance (Disgust rare, Happy frequent), per class and split.
_FER_FACTORS = {
    "Angry": 1.0,
    "Disgust": 0.5,
    "Fear": 1.0,
    "Happy": 1.3,
    "Sad": 1.1,
    "Surprise": 0.9,
    "Neutral": 1.1,
}
# Expression mix of "in the wild" photos that carry no expression label (UTKFace, VGGFace2).
_WILD_EXPR_P = np.array([0.45, 0.35, 0.05, 0.05, 0.02, 0.02, 0.04, 0.02])


# --------------------------------------------------------------------------------------- helpers
def _code(name: str) -> int:
    return zlib.crc32(name.encode())


def _rng(seed: int, name: str, *keys: int) -> np.random.Generator:
    """Independent generator for one item: seeded by (seed, dataset, keys)."""
    return np.random.default_rng([int(seed), _code(name), *[int(k) for k in keys]])


def _identity_seed(seed: int, name: str, *keys: int) -> int:
    text = "|".join(str(k) for k in (seed, name, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 2


def _save_jpg(path: Path, img: np.ndarray, quality: int = 90, grey: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img)
    if grey:
        im = im.convert("L")
    im.save(path, format="JPEG", quality=int(quality))


def _largest_remainder(total: int, weights: Iterable[float], minimum: int = 0) -> list[int]:
    """Split ``total`` into integer parts proportional to ``weights`` (each >= minimum if possible)."""
    w = np.asarray(list(weights), float)
    k = len(w)
    base = min(minimum, total // k)
    rest = total - base * k
    raw = w / w.sum() * rest
    parts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - parts), kind="stable")[: rest - parts.sum()]:
        parts[i] += 1
    return [int(p + base) for p in parts]


def _sample_wild_expression(rng: np.random.Generator) -> tuple[int, float]:
    e = int(rng.choice(8, p=_WILD_EXPR_P))
    return e, (float(rng.uniform(0.3, 1.0)) if e else 0.0)


def _adult_identity(seed: int, lo: float = 18, hi: float = 75) -> Identity:
    rs = np.random.default_rng([seed, 31])
    return Identity.sample(seed, age=float(rs.uniform(lo, hi)))


def _gt_row(
    ident: Identity, age: float, expression: int | None, intensity: float, va: tuple[float, float] | None
) -> dict:
    return {
        "identity": str(ident.seed),
        "age": float(age),
        "gender": ident.gender,
        "race": ident.race,
        "expression": np.nan if expression is None else int(expression),
        "intensity": float(intensity),
        "valence": np.nan if va is None else va[0],
        "arousal": np.nan if va is None else va[1],
    }


def _box_fields(box: tuple[float, float, float, float]) -> dict:
    return {
        "face_x": round(box[0], 2),
        "face_y": round(box[1], 2),
        "face_w": round(box[2], 2),
        "face_h": round(box[3], 2),
    }


def _bar(it, progress: bool, desc: str, total: int | None = None):
    return tqdm(it, desc=desc, total=total, disable=not progress, leave=False, mininterval=0.5)


# -------------------------------------------------------------------------------------------- video
def write_video(path: Path, frames: list[np.ndarray], fps: int = FPS, codec: str = "mpeg4") -> None:
    """Encode RGB uint8 frames (even width/height) with PyAV; the container follows the suffix.

    The file is decoded again afterwards and a frame-count mismatch raises RuntimeError.
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = int(w * h * fps * 0.8)
        stream.codec_context.thread_count = 1
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    n = count_video_frames(path)
    if n != len(frames):
        raise RuntimeError(
            f"{path}: wrote {len(frames)} frames but {n} decode back; check the PyAV/FFmpeg "
            f"build (codec {codec!r})"
        )


def count_video_frames(path: Path) -> int:
    """Number of frames that decode from a video file."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _envelope(t: np.ndarray, t0: float, width: float, peak: float) -> np.ndarray:
    """Expression intensity over normalised time: a Gaussian bump (rise then fall)."""
    return peak * np.exp(-0.5 * ((t - t0) / width) ** 2)


@dataclasses.dataclass
class _Track:
    """Smooth per-frame motion of one person in a clip."""

    cx: np.ndarray
    cy: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray

    @staticmethod
    def sample(
        rng: np.random.Generator, n: int, cx: float, cy: float, scale: float, roll_amp: float = 4.0
    ) -> _Track:
        t = np.linspace(0, 1, n)

        def wave(amp: float) -> np.ndarray:
            f, ph = rng.uniform(0.4, 1.2), rng.uniform(0, 2 * math.pi)
            return amp * np.sin(2 * math.pi * f * t + ph)

        y0, p0, r0 = rng.normal(0, 6), rng.normal(0, 3), rng.normal(0, roll_amp / 2)
        return _Track(
            cx=cx + wave(0.06 * scale),
            cy=cy + wave(0.04 * scale),
            yaw=y0 + wave(7),
            pitch=p0 + wave(3),
            roll=r0 + wave(roll_amp),
        )


def _video_look(
    ident: Identity, age: float, expr: int, intensity: float, track: _Track, f: int, blink: bool, gaze: float
) -> Look:
    return Look(
        age=age,
        expression=expr,
        intensity=intensity,
        aus=action_units(expr, intensity),
        yaw=float(track.yaw[f]),
        pitch=float(track.pitch[f]),
        roll=float(track.roll[f]),
        gaze=gaze,
        blink=1.0 if blink else 0.0,
    )


# ------------------------------------------------------------------------------------- job runner
@dataclasses.dataclass(frozen=True)
class _Ctx:
    """What every item writer needs; small and picklable so items can run in worker processes."""

    out: Path
    cfg: object
    seed: int


def _call(args):
    fn, ctx, job = args
    return fn(ctx, job)


def _run(ctx: _Ctx, fn: Callable, jobs: list, desc: str, pool, progress: bool) -> list:
    """``[fn(ctx, job) for job in jobs]``, on a process ``pool`` when one is given; results keep the
    job order and every item seeds its own generator, so the output does not depend on the pool."""
    tasks = [(fn, ctx, job) for job in jobs]
    if pool is None or len(jobs) < 4:
        return [_call(t) for t in _bar(tasks, progress, desc)]
    chunk = max(1, min(8, len(tasks) // 16))
    return list(_bar(pool.imap(_call, tasks, chunksize=chunk), progress, desc, total=len(tasks)))


# ---------------------------------------------------------------------------------------- UTKFace
def _utkface_item(ctx: _Ctx, job: tuple[int, bool]) -> dict:
    i, malformed = job
    seed, size = ctx.seed, ctx.cfg.chip_size
    rng = _rng(seed, "utkface", i)
    ident = Identity.sample(_identity_seed(seed, "utkface", i))
    age = int(np.clip(round(ident.base_age), 1, 99))
    expr, inten = _sample_wild_expression(rng)
    look = Look.sample(rng, age, expr, inten, pose=0.8, roll=0.25)
    img, info = render_chip(ident, look, size, rng, Nuisance.sample(rng, occlusion_p=0.05), "tight")
    stamp = datetime(2017, 1, 4, 9, 0, 0) + timedelta(milliseconds=i * 7_919_311 + int(rng.integers(0, 999)))
    fields = [str(age), str(ident.gender)] + ([] if malformed else [str(ident.race)])
    name = "_".join(fields + [stamp.strftime("%Y%m%d%H%M%S%f")[:17]]) + ".jpg.chip.jpg"
    _save_jpg(ctx.out / "images" / name, img, quality=92)
    row = {"file": f"images/{name}", "split": "", "malformed": malformed}
    row.update(_gt_row(ident, age, expr, inten, valence_arousal(expr, inten)))
    row.update(_box_fields(info.box))
    return row


def _write_utkface(ctx: _Ctx, pool, progress: bool) -> list[pd.DataFrame]:
    n = ctx.cfg.n_utkface
    n_bad = 2 if n >= 10 else 0
    jobs = [(i, i >= n - n_bad) for i in range(n)]
    return [pd.DataFrame(_run(ctx, _utkface_item, jobs, "utkface", pool, progress))]


# -------------------------------------------------------------------------------------- AffectNet
def _affectnet_rows(n: int, split: str, rng: np.random.Generator) -> list[tuple[int, bool]]:
    """(raw expression, va_missing) for every row of one csv, shuffled."""
    if split == "train":
        weights = [math.sqrt(_AFFECTNET_COUNTS[c]) for c in AFFECTNET_ORDER]
    else:
        weights = [1.0] * len(AFFECTNET_ORDER)
    counts = _largest_remainder(n, weights, minimum=2)
    rows = [(AFFECTNET_ORDER.index(c), False) for c, k in zip(AFFECTNET_ORDER, counts) for _ in range(k)]
    n_va_missing = max(1, round(0.01 * n))
    for j in rng.choice(len(rows), size=min(n_va_missing, len(rows)), replace=False):
        rows[j] = (rows[j][0], True)
    n_extra = max(1, round(0.015 * n))
    rows += [(raw, False) for raw in (8, 9, 10) for _ in range(n_extra)]
    order = rng.permutation(len(rows))
    return [rows[j] for j in order]


def _affectnet_item(ctx: _Ctx, job: tuple) -> tuple[dict, dict]:
    """One image: (csv line, ground-truth row)."""
    split, csv_name, i, gi, raw, va_missing = job
    seed, size = ctx.seed, ctx.cfg.chip_size
    rng = _rng(seed, "affectnet", split == "val", i)
    w = int(round(size * rng.uniform(1.2, 1.6)))
    h = int(round(size * rng.uniform(1.2, 1.6)))
    scale = min(w, h) * rng.uniform(0.25, 0.34)
    cx, cy = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.36, 0.52)
    ident = Identity.sample(_identity_seed(seed, "affectnet", split == "val", i))
    age = float(np.clip(round(ident.base_age), 1, 99))
    rel = f"{1 + gi // 250}/" + hashlib.sha224(f"{seed}:{split}:{i}".encode()).hexdigest() + ".jpg"
    nz = Nuisance.sample(rng, occlusion_p=0.06)
    if raw == 10:  # No-Face: a background only, with a box where a face could have been
        img = make_background(rng, w, h)
        box = (
            float(rng.uniform(0, w * 0.5)),
            float(rng.uniform(0, h * 0.5)),
            float(w * rng.uniform(0.2, 0.45)),
            float(h * rng.uniform(0.2, 0.45)),
        )
        landmarks, va_true, expr, inten = "", None, None, 0.0
        va_written = (-2.0, -2.0)
        who = {"identity": "", "age": np.nan, "gender": np.nan, "race": np.nan}
    else:
        if raw <= 7:
            expr, inten = raw, (float(rng.uniform(0.4, 1.0)) if raw else 0.0)
            look = Look.sample(rng, age, expr, inten, pose=1.2)
            va_true = valence_arousal(expr, inten, rng, noise=0.08)
            if getattr(ctx.cfg, "affectnet_va", "expression") == "independent":
                # VA of a second expression drawn independently of the label, shown as a weaker blend
                other, o_int = int(rng.integers(0, 8)), float(rng.uniform(0.4, 1.0))
                extra = action_units(other, 0.6 * o_int, rng)
                look.aus = {k: max(v, extra[k]) for k, v in look.aus.items()}
                va_true = valence_arousal(other, o_int, rng, noise=0.08)
        else:  # 8 None / 9 Uncertain: a blend of two expressions at low intensity
            a, b = rng.choice(8, size=2, replace=False)
            inten = float(rng.uniform(0.2, 0.5))
            look = Look.sample(rng, age, int(a), inten, pose=1.2)
            other = action_units(int(b), inten, rng)
            look.aus = {k: max(v, other[k]) for k, v in look.aus.items()}
            expr = None
            va_true = (float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.2, 0.6)))
        img, infos = render_scene([Person(ident, look, cx, cy, scale)], (w, h), rng, nuisance=nz)
        box = infos[0].box
        landmarks = ";".join(f"{v:.2f}" for v in infos[0].landmarks.ravel())
        va_written = (-2.0, -2.0) if va_missing else va_true
        who = {"identity": str(ident.seed), "age": age, "gender": ident.gender, "race": ident.race}
    _save_jpg(ctx.out / "Manually_Annotated_Images" / rel, img, quality=nz.jpeg_quality)
    bx, by = max(0, round(box[0])), max(0, round(box[1]))
    bw, bh = min(w - bx, round(box[2])), min(h - by, round(box[3]))
    line = {
        "subDirectory_filePath": rel,
        "face_x": bx,
        "face_y": by,
        "face_width": bw,
        "face_height": bh,
        "facial_landmarks": landmarks,
        "expression": raw,
        "valence": round(va_written[0], 6),
        "arousal": round(va_written[1], 6),
    }
    gt = {
        "file": f"Manually_Annotated_Images/{rel}",
        "split": split,
        "csv": csv_name,
        "expression_raw": raw,
        "expression": np.nan if expr is None else expr,
        "intensity": inten,
        "valence": np.nan if va_true is None else va_true[0],
        "arousal": np.nan if va_true is None else va_true[1],
        "va_missing": bool(va_missing),
        "face_x": bx,
        "face_y": by,
        "face_w": bw,
        "face_h": bh,
        "width": w,
        "height": h,
        **who,
    }
    return line, gt


def _write_affectnet(ctx: _Ctx, pool, progress: bool) -> list[pd.DataFrame]:
    jobs, gi = [], 0
    for split, csv_name, n in (
        ("train", "training.csv", ctx.cfg.n_affectnet_train),
        ("val", "validation.csv", ctx.cfg.n_affectnet_val),
    ):
        for i, (raw, va_missing) in enumerate(
            _affectnet_rows(n, split, _rng(ctx.seed, "affectnet-plan", split == "val"))
        ):
            jobs.append((split, csv_name, i, gi, raw, va_missing))
            gi += 1
    results = _run(ctx, _affectnet_item, jobs, "affectnet", pool, progress)
    for csv_name in ("training.csv", "validation.csv"):
        lines = [line for line, gt in results if gt["csv"] == csv_name]
        atomic_to_csv(pd.DataFrame(lines), ctx.out / csv_name)
    return [pd.DataFrame([gt for _, gt in results])]


# --------------------------------------------------------------------------------------- VGGFace2
def _vggface2_item(ctx: _Ctx, job: tuple[str, int]) -> list[dict]:
    """All images of one identity folder."""
    split, k = job
    folder = f"n{k + 1:06d}"
    ident = _adult_identity(_identity_seed(ctx.seed, "vggface2", k))
    rows = []
    for j in range(ctx.cfg.images_per_identity):
        rng = _rng(ctx.seed, "vggface2", k, j)
        age = float(np.clip(ident.base_age + rng.uniform(-4, 4), 16, 99))
        expr, inten = _sample_wild_expression(rng)
        look = Look.sample(rng, age, expr, inten, pose=1.6)
        nz = Nuisance.sample(rng, occlusion_p=0.05, strength=1.2)
        img, info = render_chip(ident, look, ctx.cfg.chip_size, rng, nz, "loose")
        name = f"{j + 1:04d}_01.jpg"
        _save_jpg(ctx.out / split / folder / name, img, quality=nz.jpeg_quality)
        row = {"file": f"{split}/{folder}/{name}", "split": split}
        row.update(_gt_row(ident, age, expr, inten, valence_arousal(expr, inten)))
        row["identity"] = folder
        row.update(_box_fields(info.box))
        rows.append(row)
    return rows


def _write_vggface2(ctx: _Ctx, pool, progress: bool) -> list[pd.DataFrame]:
    n_train = ctx.cfg.n_identities
    jobs = [("train", k) for k in range(n_train)] + [
        ("test", n_train + k) for k in range(max(2, n_train // 8))
    ]
    results = _run(ctx, _vggface2_item, jobs, "vggface2", pool, progress)
    return [pd.DataFrame([row for rows in results for row in rows])]


# ---------------------------------------------------------------------------------------- FER2013
_FER_USAGE = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}


def _fer2013_item(ctx: _Ctx, job: tuple) -> dict:
    s_i, split, c_i, cls, j = job
    rng = _rng(ctx.seed, "fer2013", s_i, c_i, j)
    ident = Identity.sample(_identity_seed(ctx.seed, "fer2013", s_i, c_i, j))
    age = float(np.clip(round(ident.base_age), 1, 99))
    expr = expression_index(cls)
    inten = float(rng.uniform(0.45, 1.0)) if expr else 0.0
    look = Look.sample(rng, age, expr, inten, pose=1.0)
    nz = Nuisance.sample(rng, occlusion_p=0.04, blur_scale=0.4)
    img, info = render_chip(ident, look, 48, rng, nz, "close")
    number = 10_000_000 + (s_i * 7 + c_i) * 100_000 + j
    rel = f"{split}/{cls.lower()}/{_FER_USAGE[split]}_{number}.jpg"
    _save_jpg(ctx.out / rel, img, quality=nz.jpeg_quality, grey=True)
    row = {"file": rel, "split": split, "label": cls}
    row.update(_gt_row(ident, age, expr, inten, valence_arousal(expr, inten)))
    row.update(_box_fields(info.box))
    return row


def _write_fer2013(ctx: _Ctx, pool, progress: bool) -> list[pd.DataFrame]:
    jobs = []
    for s_i, split in enumerate(_FER_USAGE):
        for c_i, cls in enumerate(FER2013_ORDER):
            k = max(2, round(ctx.cfg.n_fer2013_per_class * _FER_FACTORS[cls]))
            jobs += [(s_i, split, c_i, cls, j) for j in range(k)]
    return [pd.DataFrame(_run(ctx, _fer2013_item, jobs, "fer2013", pool, progress))]


# ------------------------------------------------------------------------------------------- AFEW
def _render_clip(
    seed: int, name: str, keys: tuple[int, ...], cfg, people: list[dict], occlude: bool
) -> tuple[list[np.ndarray], list[dict]]:
    """Frames of one clip; ``people`` entries: identity, age, expr, peak, t0, width, cx, cy, scale."""
    n = cfg.video_frames
    w, h = cfg.video_size
    rng = _rng(seed, name, *keys)
    bg = make_background(rng, w, h)
    nz = Nuisance.sample(rng, occlusion_p=0.0, strength=0.8)
    t = np.linspace(0, 1, n)
    for p in people:
        p["track"] = _Track.sample(rng, n, p["cx"], p["cy"], p["scale"])
        p["inten"] = _envelope(t, p["t0"], p["width"], p["peak"]) if p["expr"] else np.zeros(n)
        p["blinks"] = set(rng.choice(n, size=max(0, n // 40), replace=False).tolist())
        p["gaze"] = float(rng.normal(0, 0.15))
    occluded = np.zeros(n, bool)
    if occlude:
        k = max(1, round(0.12 * n))
        start = int(rng.integers(0, n - k + 1))
        occluded[start : start + k] = True
    frames, info_rows = [], []
    for f in range(n):
        fr = _rng(seed, name, *keys, 100_000 + f)
        persons = [
            Person(
                p["identity"],
                _video_look(
                    p["identity"],
                    p["age"],
                    p["expr"],
                    float(p["inten"][f]),
                    p["track"],
                    f,
                    f in p["blinks"],
                    p["gaze"],
                ),
                float(p["track"].cx[f]),
                float(p["track"].cy[f]),
                p["scale"],
            )
            for p in people
        ]
        fnz = dataclasses.replace(nz, occluder="full" if occluded[f] else None)
        img, infos = render_scene(persons, (w, h), fr, background=bg, nuisance=fnz)
        frames.append(img)
        for pi, (p, info) in enumerate(zip(people, infos)):
            inten = float(p["inten"][f])
            v, a = valence_arousal(p["expr"], inten)
            row = {
                "frame": f,
                "person": pi,
                "expression": p["expr"],
                "intensity": round(inten, 4),
                "valence": v,
                "arousal": a,
                "occluded": bool(occluded[f]) and pi == 0,
            }
            row.update(_box_fields(info.box))
            info_rows.append(row)
    return frames, info_rows


def _clip_person(
    rng: np.random.Generator, ident: Identity, expr: int, cx: float, cy: float, scale: float
) -> dict:
    return {
        "identity": ident,
        "age": float(np.clip(ident.base_age, 16, 99)),
        "expr": expr,
        "peak": float(rng.uniform(0.7, 1.0)),
        "t0": float(rng.uniform(0.35, 0.65)),
        "width": float(rng.uniform(0.14, 0.28)),
        "cx": cx,
        "cy": cy,
        "scale": scale,
    }


def afew_clip(seed: int, cfg, split_index: int, class_index: int, k: int):
    """Frames and labels of one AFEW-style clip: (frames, person dict, per-frame info rows)."""
    rng = _rng(seed, "afew-plan", split_index, class_index, k)
    w, h = cfg.video_size
    ident = _adult_identity(_identity_seed(seed, "afew", split_index, class_index, k))
    expr = expression_index(AFEW_ORDER[class_index])
    face_h = h * rng.uniform(0.26, 0.48)
    scale = face_h / 1.33
    cx, cy = w * rng.uniform(0.35, 0.65), min(h * rng.uniform(0.38, 0.5), h - 1.05 * scale)
    person = _clip_person(rng, ident, expr, cx, cy, scale)
    occlude = bool(rng.random() < 0.33)
    frames, info = _render_clip(seed, "afew", (split_index, class_index, k), cfg, [person], occlude)
    return frames, person, info


def _afew_item(ctx: _Ctx, job: tuple) -> tuple[dict, list[dict]]:
    vid, s_i, split, c_i, cls, k = job
    frames, person, info = afew_clip(ctx.seed, ctx.cfg, s_i, c_i, k)
    rel = f"{split}/{cls}/{1_000_000 + vid * 97 + s_i:09d}.avi"
    write_video(ctx.out / rel, frames)
    expr, ident = person["expr"], person["identity"]
    row = {
        "file": rel,
        "split": "train" if split == "Train" else "val",
        "label": cls,
        "clip_keys": f"{s_i}/{c_i}/{k}",
        "n_frames": len(frames),
        "n_occluded": sum(r["occluded"] for r in info),
        "peak_intensity": person["peak"],
    }
    row.update(_gt_row(ident, person["age"], expr, person["peak"], valence_arousal(expr, person["peak"])))
    return row, [{"file": rel, **r} for r in info]


def _write_afew(ctx: _Ctx, pool, progress: bool) -> list[pd.DataFrame]:
    combos = [
        (s_i, split, c_i, cls, k)
        for s_i, split in enumerate(("Train", "Val"))
        for c_i, cls in enumerate(AFEW_ORDER)
        for k in range(ctx.cfg.n_afew_per_class)
    ]
    jobs = [(vid, *c) for vid, c in enumerate(combos)]
    results = _run(ctx, _afew_item, jobs, "afew", pool, progress)
    return [pd.DataFrame([r for r, _ in results]), pd.DataFrame([f for _, fr in results for f in fr])]


# ------------------------------------------------------------------------------------------- VGAF
_GROUP_POOLS = {
    "Positive": (["Happy", "Surprise"], [0.8, 0.2]),
    "Negative": (["Anger", "Sad", "Fear", "Disgust"], [0.3, 0.35, 0.15, 0.2]),
    "Neutral": (["Neutral"], [1.0]),
}


def group_label(expressions: Iterable[int]) -> str | None:
    """VGAF class of a group: the expression group (Positive / Neutral / Negative) with a strict
    majority of the members, None if there is none."""
    expressions = list(expressions)
    for label, (pool, _) in _GROUP_POOLS.items():
        idx = {expression_index(c) for c in pool}
        if sum(e in idx for e in expressions) * 2 > len(expressions):
            return label
    return None


def _group_members(rng: np.random.Generator, label: str, n: int) -> list[int]:
    major = n // 2 + 1 + int(rng.integers(0, n - n // 2))
    pool, p = _GROUP_POOLS[label]
    minority = "Neutral" if label != "Neutral" else str(rng.choice(["Positive", "Negative"]))
    mpool, mp = _GROUP_POOLS[minority]
    exprs = [expression_index(str(rng.choice(pool, p=p))) for _ in range(major)]
    exprs += [expression_index(str(rng.choice(mpool, p=mp))) for _ in range(n - major)]
    return [exprs[j] for j in rng.permutation(n)]


def vgaf_clip(seed: int, cfg, split_index: int, class_index: int, k: int):
    """Frames and labels of one VGAF-style group clip: (frames, people dicts, per-frame info rows)."""
    w, h = cfg.video_size
    rng = _rng(seed, "vgaf-plan", split_index, class_index, k)
    cls = VGAF_CLASSES[class_index]
    n_people = int(rng.integers(2, 5))
    exprs = _group_members(rng, cls, n_people)
    people = []
    slot = w / n_people
    for m, expr in enumerate(exprs):
        ident = _adult_identity(_identity_seed(seed, "vgaf", split_index, class_index, k, m), 16, 70)
        face_h = h * rng.uniform(0.24, 0.34) * (1.0 if n_people < 4 else 0.85)
        scale = face_h / 1.33
        cx = slot * (m + 0.5) + rng.uniform(-0.12, 0.12) * slot
        cy = min(h * rng.uniform(0.34, 0.5), h - 1.05 * scale)
        people.append(_clip_person(rng, ident, expr, cx, cy, scale))
    people.sort(key=lambda p: p["scale"])  # far (smaller) people are drawn first
    frames, info = _render_clip(seed, "vgaf", (split_index, class_index, k), cfg, people, occlude=False)
    return frames, people, info


def _vgaf_item(ctx: _Ctx, job: tuple) -> tuple[dict, list[dict]]:
    vid, s_i, split, c_i, cls, k = job
    frames, people, info = vgaf_clip(ctx.seed, ctx.cfg, s_i, c_i, k)
    members = [p["expr"] for p in people]
    if group_label(members) != cls:  # the plan guarantees a strict majority; guard the invariant
        raise RuntimeError(f"vgaf clip {split}/{cls}/{k}: members {members} do not make a {cls} group")
    name = f"{100 + vid}_{k % 5 + 1}"
    rel = f"{split}/{name}.mp4"
    write_video(ctx.out / rel, frames)
    row = {
        "file": rel,
        "split": "train" if split == "Train" else "val",
        "name": name,
        "label": cls,
        "label_raw": VGAF_CLASSES.index(cls) + 1,
        "clip_keys": f"{s_i}/{c_i}/{k}",
        "n_people": len(people),
        "member_expressions": ";".join(EXPRESSIONS_8[e] for e in members),
        "n_frames": len(frames),
    }
    return row, [{"file": rel, **r} for r in info]


def _write_vgaf(ctx: _Ctx, pool, progress: bool) -> list[pd.DataFrame]:
    combos = [
        (s_i, split, c_i, cls, k)
        for s_i, split in enumerate(("Train", "Val"))
        for c_i, cls in enumerate(VGAF_CLASSES)
        for k in range(ctx.cfg.n_vgaf_per_class)
    ]
    jobs = [(vid, *c) for vid, c in enumerate(combos)]
    results = _run(ctx, _vgaf_item, jobs, "vgaf", pool, progress)
    for split in ("Train", "Val"):
        items = [(r["name"], r["label_raw"]) for r, _ in results if r["file"].startswith(f"{split}/")]
        text = "Vid_name Label\n" + "".join(f"{n} {lab}\n" for n, lab in items)
        atomic_write_text(ctx.out / f"{split}_labels.txt", text)
    return [pd.DataFrame([r for r, _ in results]), pd.DataFrame([f for _, fr in results for f in fr])]


# -------------------------------------------------------------------------------------- Aff-Wild2
def _affwild2_segments(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame canonical expression and intensity: segments that each rise and fall."""
    expr = np.zeros(n, int)
    inten = np.zeros(n)
    p = np.array([0.22, 0.1, 0.1, 0.09, 0.2, 0.15, 0.14])  # AFFWILD2_ORDER
    f = 0
    while f < n:
        length = int(rng.integers(max(4, n // 8), max(6, n // 3) + 1))
        e = expression_index(AFFWILD2_ORDER[int(rng.choice(7, p=p))])
        seg = np.arange(min(length, n - f))
        ramp = np.clip(np.minimum(seg + 1, len(seg) - seg) / max(1.0, len(seg) / 4), 0, 1)
        expr[f : f + len(seg)] = e
        inten[f : f + len(seg)] = ramp * rng.uniform(0.6, 1.0) if e else 0.0
        f += len(seg)
    return expr, inten


def _affwild2_item(ctx: _Ctx, job: tuple) -> tuple[dict, list[dict]]:
    """One video: frames, its EXPR and VA annotation files, ground truth."""
    vid, s_i, set_name, k = job
    seed, n = ctx.seed, ctx.cfg.affwild2_frames
    to_aw = {expression_index(c): i for i, c in enumerate(AFFWILD2_ORDER)}
    rng = _rng(seed, "affwild2-plan", s_i, k)
    ident = _adult_identity(_identity_seed(seed, "affwild2", s_i, k), 16, 75)
    age = float(np.clip(ident.base_age, 16, 99))
    video = f"{10 + vid}-30-{int(rng.choice([640, 1280]))}x{int(rng.choice([360, 480, 720]))}"
    expr, inten = _affwild2_segments(rng, n)
    occl = np.zeros(n, bool)
    if n >= 10:
        k_occ = max(1, n // 20)
        s0 = int(rng.integers(0, n - k_occ + 1))
        occl[s0 : s0 + k_occ] = True
    expr_only, va_only = (int(x) for x in rng.choice(np.flatnonzero(~occl), size=2, replace=False))
    bg = make_background(rng, 112, 112)
    track = _Track.sample(rng, n, 56.0, 56.0, 50.0, roll_amp=1.0)
    drift = rng.normal(0, 0.03, (n, 2)).cumsum(0) * 0.3
    gaze = float(rng.normal(0, 0.15))
    split = "train" if s_i == 0 else "val"
    expr_lines, va_lines, frames_gt = [",".join(AFFWILD2_ORDER)], ["valence,arousal"], []
    for f in range(n):
        fr = _rng(seed, "affwild2", s_i, k, f)
        e, it = int(expr[f]), float(inten[f])
        look = _video_look(ident, age, e, it, track, f, False, gaze)
        look.roll *= 0.3  # aligned crops: little roll left
        nz = Nuisance(light_strength=0.15, noise=2.0, occluder="full" if occl[f] else None, jpeg_quality=90)
        img, info = render_chip(ident, look, 112, fr, nz, "tight", background=bg)
        rel = f"cropped_aligned/{video}/{f + 1:05d}.jpg"
        _save_jpg(ctx.out / rel, img, quality=90)
        v, a = valence_arousal(e, it)
        v, a = float(np.clip(v + drift[f, 0], -1, 1)), float(np.clip(a + drift[f, 1], -1, 1))
        label = e if it >= 0.3 or e == 0 else 0
        expr_written = -1 if occl[f] or f == expr_only else to_aw[label]
        va_written = (-5, -5) if occl[f] or f == va_only else (round(v, 3), round(a, 3))
        expr_lines.append(str(expr_written))
        va_lines.append(f"{va_written[0]},{va_written[1]}")
        frames_gt.append(
            {
                "video": video,
                "split": split,
                "frame": f + 1,
                "file": rel,
                "expression": label,
                "expression_raw": expr_written,
                "intensity": round(it, 4),
                "valence": round(v, 3),
                "arousal": round(a, 3),
                "valence_raw": va_written[0],
                "arousal_raw": va_written[1],
                "occluded": bool(occl[f]),
                **_box_fields(info.box),
            }
        )
    for kind, lines in (("EXPR_Set", expr_lines), ("VA_Set", va_lines)):
        atomic_write_text(ctx.out / "annotations" / kind / set_name / f"{video}.txt", "\n".join(lines) + "\n")
    row = {"video": video, "split": split, "set": set_name, "n_frames": n}
    row.update(_gt_row(ident, age, None, 0.0, None))
    return row, frames_gt


def _write_affwild2(ctx: _Ctx, pool, progress: bool) -> list[pd.DataFrame]:
    m = ctx.cfg.n_affwild2_videos
    sets = [("Train_Set", m), ("Validation_Set", max(1, m // 2))]
    combos = [(s_i, name, k) for s_i, (name, count) in enumerate(sets) for k in range(count)]
    jobs = [(vid, *c) for vid, c in enumerate(combos)]
    results = _run(ctx, _affwild2_item, jobs, "affwild2", pool, progress)
    return [pd.DataFrame([r for r, _ in results]), pd.DataFrame([f for _, fr in results for f in fr])]


_WRITERS: dict[str, Callable] = {
    "utkface": _write_utkface,
    "affectnet": _write_affectnet,
    "vggface2": _write_vggface2,
    "fer2013": _write_fer2013,
    "afew": _write_afew,
    "vgaf": _write_vgaf,
    "affwild2": _write_affwild2,
}


# ------------------------------------------------------------------------------------ entry point
def marker_for(name: str, data_cfg, seed: int) -> dict:
    """The ``.complete.json`` content of a dataset: what its files depend on."""
    cfg = {f: getattr(data_cfg, f, _OPTIONAL_FIELDS.get(f)) for f in _FIELDS[name]}
    cfg = {f: v for f, v in cfg.items() if f not in _OPTIONAL_FIELDS or v != _OPTIONAL_FIELDS[f]}
    cfg = json.loads(json.dumps(cfg))  # tuples -> lists, as they read back
    return {"dataset": name, "seed": int(seed), "generator_version": GENERATOR_VERSION, "config": cfg}


def is_complete(folder: Path, marker: dict) -> bool:
    """True when ``folder`` holds a finished dataset generated with exactly ``marker``."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return False
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return {k: found.get(k) for k in marker} == marker


def generate(
    root,
    data_cfg,
    seed: int | None = None,
    datasets: Iterable[str] = DATASETS,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Path]:
    """Write the requested synthetic datasets under ``root/<name>/`` and return their folders.

    Sizes come from ``data_cfg`` (a ``fer_lib.config.DataConfig``); ``seed`` defaults to
    ``data_cfg.synthetic_seed``. Complete folders generated with the same relevant config and seed
    are kept as they are; anything else is regenerated. ``workers`` (default
    ``data_cfg.num_workers``, capped at the CPU count) renders items in that many processes; the
    files are the same for any number of workers.
    """
    root = Path(root)
    seed = int(data_cfg.synthetic_seed if seed is None else seed)
    workers = int(getattr(data_cfg, "num_workers", 0) if workers is None else workers)
    workers = max(0, min(workers, os.cpu_count() or 1))
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    unknown = [n for n in names if n not in _WRITERS]
    if unknown:
        raise ValueError(f"unknown synthetic dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
    w, h = data_cfg.video_size
    if {"afew", "vgaf"} & set(names) and (w % 2 or h % 2 or min(w, h) < 32):
        raise ValueError(
            f"DataConfig.video_size={data_cfg.video_size}: width and height must be even and "
            ">= 32 (the videos are encoded as yuv420p)"
        )
    root.mkdir(parents=True, exist_ok=True)
    out, todo = {}, []
    for name in names:
        final = root / name
        out[name] = final
        marker = marker_for(name, data_cfg, seed)
        if is_complete(final, marker):
            continue
        if final.exists() and not (final / MARKER).is_file():
            raise FileExistsError(
                f"{final} exists but has no {MARKER} marker, so it is not a synthetic dataset written by "
                "fer_lib; move it away or choose another root for the synthetic data"
            )
        todo.append((name, final, marker))
    if not todo:
        return out
    pool = _pool(workers) if workers > 1 else None
    try:
        for name, final, marker in todo:
            _generate_one(
                name, final, marker, _Ctx(root / f".{name}.partial", data_cfg, seed), pool, progress
            )
    finally:
        if pool is not None:
            pool.terminate()
    return out


def _pool(workers: int):
    """A process pool. POSIX forks (no re-import of ``__main__``, so scripts and ``python -m``
    entry points need no main guard; the workers only run numpy/PIL/PyAV code); elsewhere spawns."""
    import multiprocessing
    import warnings

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with warnings.catch_warnings():  # Python >= 3.12 warns about fork() in multi-threaded processes
        warnings.simplefilter("ignore", DeprecationWarning)
        return multiprocessing.get_context(method).Pool(workers)


def _generate_one(name: str, final: Path, marker: dict, ctx: _Ctx, pool, progress: bool) -> None:
    """Build one dataset in its staging folder, write ground truth and marker, rename into place."""
    staging = ctx.out
    if staging.exists():  # leftover of an interrupted run
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    t0 = time.perf_counter()
    tables = _WRITERS[name](ctx, pool, progress)
    atomic_to_csv(tables[0], staging / "ground_truth.csv")
    if len(tables) > 1:
        atomic_to_csv(tables[1], staging / "ground_truth_frames.csv")
    atomic_write_text(staging / MARKER, json.dumps(marker, indent=2, sort_keys=True) + "\n")
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    if progress:
        print(f"synthetic {name}: {len(tables[0])} items in {time.perf_counter() - t0:.1f} s -> {final}")


def ground_truth(folder, frames: bool = False) -> pd.DataFrame:
    """The labels the generator used for a dataset folder (per frame with ``frames=True``)."""
    path = Path(folder) / ("ground_truth_frames.csv" if frames else "ground_truth.csv")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: generate the dataset with fer_lib.datasets.synthetic.generate"
        )
    return pd.read_csv(path, keep_default_na=True, dtype={"identity": str})
