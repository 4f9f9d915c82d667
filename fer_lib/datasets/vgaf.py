"""VGAF (EmotiW group-level emotion): ``root/{Train,Val}/`` videos plus one label file per split.

Label file: ``Train_labels.txt`` / ``Val_labels.txt`` (or ``.csv``), in ``root`` or in the split
folder; lines ``Vid_name Label`` separated by spaces, tabs or a comma; an optional header line.
Label is 1 Positive, 2 Neutral, 3 Negative or the class name. Video names may carry the file
extension or not; videos are looked up anywhere below the split folder.
Rows: one per labelled video with ``group_label`` = index in ``labels.VGAF_CLASSES`` (expression
stays NaN), ``video`` = stem; Train -> 'train', Val -> 'test' (the reported set).
Reported: unknown labels, labelled videos without a file, videos without a label, duplicates.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from fer_lib.labels import VGAF_CLASSES

from ._common import (
    VIDEO_SUFFIXES,
    ValidationReport,
    carve_val,
    finish,
    inside_root,
    layout_error,
    require_dir,
)

NAME = "vgaf"
EXPECTED = (
    "folders Train/ and Val/ holding the videos, and label files Train_labels.txt / Val_labels.txt "
    "(lines 'Vid_name Label', label 1 Positive / 2 Neutral / 3 Negative) in root or the split folder"
)
SPLIT_FOLDERS = {"train": "train", "val": "test", "validation": "test"}
LABEL_EXTENSIONS = (".txt", ".csv")
_HEADER_WORDS = {"label", "labels", "class", "emotion", "vid_name", "video", "name", "file"}


def parse_label(text: str) -> int | None:
    """Index in ``VGAF_CLASSES`` of a label written as 1/2/3 or as a class name; None if unknown."""
    t = text.strip()
    if t.isdigit() and 1 <= int(t) <= len(VGAF_CLASSES):
        return int(t) - 1
    names = [c.lower() for c in VGAF_CLASSES]
    return names.index(t.lower()) if t.lower() in names else None


def find_label_file(root: Path, split_dir: Path) -> Path | None:
    """``<Split>_labels.txt|csv`` in the split folder or in root (name case-insensitive)."""
    wanted = {f"{split_dir.name.lower()}_labels{ext}" for ext in LABEL_EXTENSIONS}
    for folder in (split_dir, root):
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.name.lower() in wanted:
                return p
    return None


def read_label_file(path: Path, report: ValidationReport) -> list[tuple[str, str, str]]:
    """``(where, video name, label text)`` per data line; malformed lines are reported."""
    out = []
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [f for f in re.split(r"[,\s]+", line.strip()) if f]
        where = f"{path.name} line {i}"
        if i == 1 and (fields[0].lower() in _HEADER_WORDS or fields[-1].lower() in _HEADER_WORDS):
            continue
        if len(fields) != 2:
            report.drop(where, "malformed label line", line.strip()[:80])
            continue
        out.append((where, fields[0], fields[1]))
    return out


def _index_videos(split_dir: Path, report: ValidationReport) -> dict[str, Path]:
    """Video files below the split folder, reachable by file name and by stem."""
    index: dict[str, Path] = {}
    for p in sorted(split_dir.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in VIDEO_SUFFIXES or p.name.startswith("."):
            continue
        for key in (p.name, p.stem):
            if key in index and index[key] != p:
                report.ignore(p, "duplicate video name", f"also {index[key]}")
            index.setdefault(key, p)
    return index


def _load_split(root: Path, split_dir: Path, split: str, report: ValidationReport) -> list[dict]:
    label_file = find_label_file(root, split_dir)
    if label_file is None:
        report.note(f"{split_dir.name}: no {split_dir.name}_labels.txt/.csv found; split skipped")
        return []
    videos = _index_videos(split_dir, report)
    rows, used = [], set()
    for where, name, label_text in read_label_file(label_file, report):
        label = parse_label(label_text)
        if label is None:
            report.drop(where, "unknown label", f"{name}: {label_text!r} (expected 1/2/3 or a class name)")
            continue
        if inside_root(split_dir, name) is None:
            report.drop(where, "path escapes the dataset root", name)
            continue
        path = videos.get(name) or videos.get(Path(name).stem)
        if path is None:
            report.drop(where, "labelled video not found", name)
            continue
        if path in used:
            report.drop(where, "duplicate label line", name)
            continue
        used.add(path)
        rows.append(
            {
                "path": str(path),
                "split": split,
                "group_label": label,
                "video": path.stem,
                "label_raw": label_text,
            }
        )
    for path in sorted(set(videos.values()) - used):
        report.ignore(path, "video without a label")
    return rows


def load_manifest(
    root: str | os.PathLike, val_fraction: float = 0.0, seed: int = 0, limit: int | None = None
) -> tuple[pd.DataFrame, ValidationReport]:
    """Manifest of VGAF videos (one row per labelled video; see the module docstring).

    Args:
        root: folder holding Train/ and Val/ (and possibly the label files).
        val_fraction: share of Train videos (per class) moved to 'val'.
        seed: seed of that choice and of ``limit``.
        limit: at most this many videos per split.
    """
    root = require_dir(root, NAME, EXPECTED)
    report = ValidationReport(NAME, str(root))
    split_dirs = {
        p: SPLIT_FOLDERS[p.name.lower()]
        for p in sorted(root.iterdir())
        if p.is_dir() and p.name.lower() in SPLIT_FOLDERS
    }
    if not split_dirs:
        raise layout_error(root, NAME, EXPECTED)
    rows = []
    for split_dir, split in split_dirs.items():
        rows.extend(_load_split(root, split_dir, split, report))
    if not rows and not any(find_label_file(root, d) for d in split_dirs):
        raise layout_error(root, NAME, EXPECTED)
    df = pd.DataFrame(rows, columns=["path", "split", "group_label", "video", "label_raw"])
    df["group_label"] = df["group_label"].astype("int64")
    df = carve_val(df, val_fraction, seed, by="group_label")
    return finish(df, report, NAME, limit, seed)
