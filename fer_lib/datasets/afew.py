"""AFEW (EmotiW): ``root/{Train,Val}/{Angry,Disgust,Fear,Happy,Neutral,Sad,Surprise}/*.avi`` (or .mp4).

One row per video: path, split ('train' for Train, 'test' for Val, the set the paper reports on),
canonical expression index, ``video`` = file stem. Unknown class folders, files that are not
videos and loose files are reported. The unlabelled ``Test`` folder of the challenge is ignored
(noted in the report).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from fer_lib.labels import EXPRESSIONS_8, canonical_expression

from ._common import (
    VIDEO_SUFFIXES,
    ValidationReport,
    carve_val,
    finish,
    layout_error,
    list_files,
    require_dir,
)

NAME = "afew"
EXPECTED = (
    "folders Train/ and Val/, each with class folders Angry, Disgust, Fear, Happy, Neutral, Sad, "
    "Surprise holding .avi/.mp4 videos"
)
SPLIT_FOLDERS = {"train": "train", "val": "test", "validation": "test"}
VIDEO_EXTENSIONS = (".avi", ".mp4")


def _split_dirs(root: Path, report: ValidationReport) -> dict[Path, str]:
    out = {}
    for p in sorted(root.iterdir()):
        if p.is_dir() and p.name.lower() in SPLIT_FOLDERS:
            out[p] = SPLIT_FOLDERS[p.name.lower()]
        elif p.is_dir() and p.name.lower() == "test":
            report.note(f"{p.name}/ ignored: the challenge test set has no labels")
    return out


def scan_class_folders(
    split_dir: Path, split: str, report: ValidationReport, extensions: tuple[str, ...] = VIDEO_EXTENSIONS
) -> list[dict]:
    """Rows for every video in the class folders of one split folder."""
    rows = []
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            report.ignore(entry, "file outside a class folder")
            continue
        try:
            label = EXPRESSIONS_8.index(canonical_expression(entry.name))
        except ValueError:
            for f in list_files(entry):
                report.drop(f, "unknown class folder", entry.name)
            continue
        for f in list_files(entry):
            if f.suffix.lower() not in extensions:
                why = (
                    "video format not supported" if f.suffix.lower() in VIDEO_SUFFIXES else "not a video file"
                )
                report.ignore(f, why, f.suffix)
                continue
            rows.append(
                {
                    "path": str(f),
                    "split": split,
                    "expression": float(label),
                    "video": f.stem,
                    "label_raw": entry.name,
                }
            )
    return rows


def load_manifest(
    root: str | os.PathLike, val_fraction: float = 0.0, seed: int = 0, limit: int | None = None
) -> tuple[pd.DataFrame, ValidationReport]:
    """Manifest of AFEW videos (one row per video).

    Args:
        root: folder holding Train/ and Val/.
        val_fraction: share of Train videos (per class) moved to 'val' (default none: the video
            classifier selects its parameters by cross-validation on 'train').
        seed: seed of that choice and of ``limit``.
        limit: at most this many videos per split.
    """
    root = require_dir(root, NAME, EXPECTED)
    report = ValidationReport(NAME, str(root))
    split_dirs = _split_dirs(root, report)
    if not split_dirs:
        raise layout_error(root, NAME, EXPECTED)
    rows = []
    for split_dir, split in split_dirs.items():
        rows.extend(scan_class_folders(split_dir, split, report))
    df = pd.DataFrame(rows, columns=["path", "split", "expression", "video", "label_raw"])
    df = carve_val(df, val_fraction, seed, by="expression")
    return finish(df, report, NAME, limit, seed)
