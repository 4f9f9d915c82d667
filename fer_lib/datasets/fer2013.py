"""FER2013: Kaggle folder layout or the original ``fer2013.csv``.

Folder layout: ``root/{train,validation|val,test}/{angry,disgust,fear,happy,neutral,sad,surprise}/*.jpg``
(``validation``/``val`` -> split 'val'). Where there is no validation folder, ``val_fraction`` of
'train' (stratified by class, deterministic) becomes 'val'.

CSV layout: ``root/fer2013.csv`` (or ``root`` is the csv itself) with columns ``emotion``
(0 Angry .. 6 Neutral, ``labels.FER2013_ORDER``), ``pixels`` (2,304 space-separated grey values)
and ``Usage`` (Training / PublicTest / PrivateTest -> train / val / test). The pixel strings are
decoded once into PNG files under ``cache_dir`` (default ``<FER_DATA_DIR>/cache/fer2013-<key>``);
the cache is built in a temporary folder and renamed when complete, so an interrupted run never
leaves a half-written cache behind. Bad rows are reported and skipped.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from fer_lib.labels import EXPRESSIONS_8, FER2013_ORDER, canonical_expression

from ._common import (
    IMAGE_SUFFIXES,
    ValidationReport,
    carve_val,
    finish,
    layout_error,
    list_files,
    require_dir,
)

NAME = "fer2013"
EXPECTED = (
    "folders train/ and test/ (optionally validation/ or val/) with one sub-folder per class "
    "(angry, disgust, fear, happy, neutral, sad, surprise), or the original fer2013.csv"
)
CSV_NAME = "fer2013.csv"
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "validation": "val",
    "val": "val",
    "publictest": "val",
    "test": "test",
    "privatetest": "test",
}
USAGE_TO_SPLIT = {"training": "train", "publictest": "val", "privatetest": "test"}
SIDE = 48
_EMOTION = re.compile(r"[0-9]+")  # ASCII digits: str.isdigit() also accepts '²', which int() rejects


def class_index(folder_name: str) -> int:
    """Canonical expression index (``labels.EXPRESSIONS_8``) of a FER2013 class folder name."""
    return EXPRESSIONS_8.index(canonical_expression(folder_name))


def load_manifest(
    root: str | os.PathLike,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Manifest of FER2013 in the Kaggle folder layout or as the original csv.

    Args:
        root: dataset folder (or the csv file itself).
        val_fraction: share of 'train' moved to 'val' when the data has no validation split.
        seed: seed of that deterministic choice and of ``limit``.
        limit: at most this many rows per split.
        cache_dir: where the csv's images are decoded (csv layout only).
        progress: show a progress bar while decoding the csv.
    """
    path = Path(root).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        return _load_csv(path, path.parent, val_fraction, seed, limit, cache_dir, progress)
    root = require_dir(path, NAME, EXPECTED)
    split_dirs = {
        p: SPLIT_FOLDERS[p.name.lower()]
        for p in root.iterdir()
        if p.is_dir() and p.name.lower() in SPLIT_FOLDERS
    }
    if split_dirs:
        return _load_folders(root, split_dirs, val_fraction, seed, limit)
    if (root / CSV_NAME).is_file():
        return _load_csv(root / CSV_NAME, root, val_fraction, seed, limit, cache_dir, progress)
    raise layout_error(root, NAME, EXPECTED)


# ------------------------------------------------------------------------------------------- folders
def _load_folders(
    root: Path, split_dirs: dict[Path, str], val_fraction: float, seed: int, limit: int | None
) -> tuple[pd.DataFrame, ValidationReport]:
    report = ValidationReport(NAME, str(root))
    rows = []
    for split_dir, split in sorted(split_dirs.items()):
        for entry in sorted(split_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                report.ignore(entry, "file outside a class folder")
                continue
            try:
                label = class_index(entry.name)
            except ValueError:
                for f in list_files(entry):
                    report.drop(f, "unknown class folder", entry.name)
                continue
            for f in list_files(entry):
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    report.ignore(f, "not an image file")
                    continue
                rows.append((str(f), split, float(label), entry.name))
    df = pd.DataFrame(rows, columns=["path", "split", "expression", "label_raw"])
    if "val" not in split_dirs.values():
        df = carve_val(df, val_fraction, seed, by="expression")
        if val_fraction:
            report.note(f"no validation folder: {val_fraction:.0%} of train per class moved to 'val'")
    return finish(df, report, NAME, limit, seed)


# ----------------------------------------------------------------------------------------------- csv
def _default_cache(csv: Path) -> Path:
    from fer_lib.config import get_paths

    st = csv.stat()
    key = hashlib.sha1(f"{csv.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return get_paths().data / "cache" / f"fer2013-{key}"


def parse_pixels(text: object) -> np.ndarray | str:
    """48x48 uint8 image from a pixel string (2,304 integers 0..255 separated by white space), or a
    string saying what is wrong. Never raises for any text."""
    parts = str(text).split()
    if len(parts) != SIDE * SIDE:
        return f"{len(parts)} pixel values, expected {SIDE * SIDE}"
    try:
        values = np.array(parts, dtype=np.int64)
    except (ValueError, OverflowError):  # OverflowError: a number beyond int64
        return "pixel values are not all integers"
    if values.min() < 0 or values.max() > 255:
        return "pixel values outside 0..255"
    return values.astype(np.uint8).reshape(SIDE, SIDE)


def _load_csv(
    csv: Path,
    root: Path,
    val_fraction: float,
    seed: int,
    limit: int | None,
    cache_dir: str | os.PathLike | None,
    progress: bool,
) -> tuple[pd.DataFrame, ValidationReport]:
    from PIL import Image

    from ..progress import tqdm

    report = ValidationReport(NAME, str(csv))
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{csv}: not a readable csv ({type(exc).__name__}: {exc}). What to do: use the "
            "original fer2013.csv (UTF-8 text with columns emotion, pixels, Usage)"
        ) from exc
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("emotion", "pixels", "Usage") if c not in table.columns]
    if missing:
        raise ValueError(
            f"{csv}: missing column(s) {', '.join(missing)}; expected emotion, pixels, Usage "
            f"(found {', '.join(table.columns)}). What to do: fix the header line"
        )
    cache = Path(os.path.abspath(Path(cache_dir).expanduser())) if cache_dir else _default_cache(csv)
    complete = cache / ".complete"
    build = not complete.is_file()
    tmp = None
    if build:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    rows = []
    try:
        it = table.itertuples(index=True)
        for row in tqdm(
            it, total=len(table), desc="decoding fer2013.csv", disable=not (progress and build), leave=False
        ):
            where = f"{csv.name} row {row.Index + 2}"  # +2: header line and 1-based numbering
            split = USAGE_TO_SPLIT.get(str(row.Usage).strip().lower())
            emotion = str(row.emotion).strip()
            if split is None:
                report.drop(
                    where, "unknown Usage", f"{row.Usage!r} (expected Training/PublicTest/PrivateTest)"
                )
                continue
            if not _EMOTION.fullmatch(emotion) or int(emotion) >= len(FER2013_ORDER):
                report.drop(where, "invalid emotion", f"{emotion!r} (expected 0..6)")
                continue
            name = f"{split}/{row.Index:05d}.png"
            if build:
                image = parse_pixels(row.pixels)
                if isinstance(image, str):
                    report.drop(where, "invalid pixels", image)
                    continue
                (tmp / split).mkdir(exist_ok=True)
                Image.fromarray(image, mode="L").save(tmp / name)
            elif not (cache / name).is_file():
                report.drop(where, "invalid pixels", "not in the decoded cache")
                continue
            label = class_index(FER2013_ORDER[int(emotion)])
            rows.append((str(cache / name), split, float(label), int(emotion)))
        if build:
            (tmp / ".complete").write_text(f"{csv}\n", encoding="utf-8")
            try:
                os.replace(tmp, cache)
            except OSError:  # another process finished first (keep theirs) or a stale partial folder
                if complete.is_file():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    shutil.rmtree(cache, ignore_errors=True)
                    os.replace(tmp, cache)
            tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    report.note(f"images decoded from {csv.name} into {cache}")
    df = pd.DataFrame(rows, columns=["path", "split", "expression", "label_raw"])
    if "val" not in set(df["split"]):
        df = carve_val(df, val_fraction, seed, by="expression")
    return finish(df, report, NAME, limit, seed)
