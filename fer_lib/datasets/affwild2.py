"""Aff-Wild2 (ABAW 2020/2021 layout): per-video annotation text files and cropped-aligned frames.

Annotations in ``root/annotations/`` (or ``root``):
- ``EXPR_Set/{Train_Set,Validation_Set}/<video>.txt``: a header line, then one integer per frame
  in ``AFFWILD2_ORDER`` (0 Neutral .. 6 Surprise); -1 = invalid frame;
- ``VA_Set/{Train_Set,Validation_Set}/<video>.txt``: header ``valence,arousal``, then ``v,a`` per
  frame; -5 or values outside [-1, 1] are invalid.
Frames: ``root/cropped_aligned/<video>/<frame:05d>.jpg`` with 1-based frame numbers (line k after
the header is frame k). One row per (video, frame) with an expression and/or VA; the two sets are
merged on (split, video, frame). Train_Set -> 'train', Validation_Set -> 'test'.
Invalid values are dropped with counts. The EXPR and VA counts are per annotation *line*: a frame
whose EXPR line is -1 but whose VA line is valid stays a row (with expression NaN); a VA line with
only one valid value keeps it and clears the other. Frames without an image are dropped
(``check_files=True``). To keep the report small on 2M-frame sets, the report holds one entry per
(file, reason) with the number of frames in its detail; the counts are frame counts.
:func:`both_labels` keeps the frames carrying both an expression and valence/arousal (paper B's
training set).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from fer_lib.labels import AFFWILD2_ORDER, EXPRESSIONS_8, canonical_expression

from ._common import (
    CLEARED,
    DROPPED,
    ValidationReport,
    carve_val,
    check_exists,
    find_child,
    finish,
    inside_root,
    layout_error,
    require_dir,
)

NAME = "affwild2"
# Aff-Wild2's own expression order (the EXPR_Set files' header and values).
EXPECTED = (
    "annotations/EXPR_Set and/or annotations/VA_Set (or the same directly in root), each with "
    "Train_Set/ and Validation_Set/ of <video>.txt files, and frames in cropped_aligned/<video>/"
)
SET_FOLDERS = {
    "EXPR": ("EXPR_Set", "EXPR_Classification_Challenge"),
    "VA": ("VA_Set", "VA_Estimation_Challenge"),
}
SPLIT_FOLDERS = {"train_set": "train", "validation_set": "test"}
FRAMES_DIR = "cropped_aligned"
_NEWLINE = re.compile(r"\r\n|\r|\n")


def _order_from_header(header: str, report: ValidationReport, where: str) -> tuple[str, ...]:
    """The class order written in an EXPR file's header when it names 7 expressions, else the default."""
    names = [n.strip() for n in header.split(",") if n.strip()]
    try:
        canon = [canonical_expression(n) for n in names]
    except ValueError:
        return AFFWILD2_ORDER
    if len(canon) == len(AFFWILD2_ORDER) and len(set(canon)) == len(canon):
        if [canonical_expression(n) for n in AFFWILD2_ORDER] != canon:
            report.note(f"{where}: header lists the classes in a different order; the header's order is used")
        return tuple(names)
    return AFFWILD2_ORDER


def _count(report: ValidationReport, path: Path, reason: str, n: int, action: str = DROPPED) -> None:
    """One issue entry per file with the frame count in the detail; counts add up to frames."""
    if n:
        report.add(path, reason, f"{n} frames", action=action)
        report.counts[(action, reason)] += n - 1


def read_lines(path: Path, report: ValidationReport) -> list[str]:
    """The lines of an annotation file: split only at ``\\n``, ``\\r\\n`` or ``\\r`` (so that line k
    stays frame k even if a line holds a form feed or a Unicode separator), a leading BOM removed,
    bytes that are not UTF-8 replaced by U+FFFD (those lines then count as invalid; noted)."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    if "\ufffd" in text:
        report.note(f"{path}: bytes that are not UTF-8 text were replaced (those lines are invalid)")
    lines = _NEWLINE.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_expr_file(path: Path, report: ValidationReport) -> pd.DataFrame:
    """Frames (1-based) with a valid canonical expression from one EXPR_Set file."""
    lines = read_lines(path, report)
    if not lines:
        report.drop(path, "empty annotation file")
        return pd.DataFrame(columns=["frame", "expression"])
    order = _order_from_header(lines[0], report, path.name)
    mapping = np.array([EXPRESSIONS_8.index(canonical_expression(n)) for n in order], dtype=np.float64)
    raw = pd.to_numeric(pd.Series(lines[1:], dtype=str).str.strip(), errors="coerce").to_numpy(np.float64)
    frames = np.arange(1, len(raw) + 1)
    invalid = raw == -1
    ok = np.isin(raw, np.arange(len(order)))
    bad = ~ok & ~invalid
    _count(report, path, "EXPR line -1 (invalid frame)", int(invalid.sum()))
    _count(report, path, "EXPR line not in 0..6", int(bad.sum()))
    return pd.DataFrame({"frame": frames[ok], "expression": mapping[raw[ok].astype(int)]})


def read_va_file(path: Path, report: ValidationReport) -> pd.DataFrame:
    """Frames (1-based) with at least one valid value from one VA_Set file; invalid values -> NaN."""
    lines = read_lines(path, report)[1:]
    parts = pd.Series(lines, dtype=str).str.split(",", n=1, expand=True) if lines else None
    if parts is None or parts.shape[1] < 2:
        parts = pd.DataFrame({0: pd.Series(lines, dtype=str), 1: ""})
    v = pd.to_numeric(parts[0].str.strip(), errors="coerce").to_numpy(np.float64)
    a = pd.to_numeric(parts[1].fillna("").str.strip(), errors="coerce").to_numpy(np.float64)
    bad_v = np.isnan(v) | (v < -1) | (v > 1)
    bad_a = np.isnan(a) | (a < -1) | (a > 1)
    both = bad_v & bad_a
    _count(report, path, "VA line invalid (-5 or outside [-1, 1])", int(both.sum()))
    _count(report, path, "VA line: valence invalid (arousal kept)", int((bad_v & ~bad_a).sum()), CLEARED)
    _count(report, path, "VA line: arousal invalid (valence kept)", int((bad_a & ~bad_v).sum()), CLEARED)
    frames = np.arange(1, len(lines) + 1)
    keep = ~both
    return pd.DataFrame(
        {
            "frame": frames[keep],
            "valence": np.where(bad_v, np.nan, v)[keep],
            "arousal": np.where(bad_a, np.nan, a)[keep],
        }
    )


def _annotation_root(root: Path) -> Path | None:
    for candidate in (root / "annotations", root / "Annotations", root):
        if candidate.is_dir() and any(find_child(candidate, *names) for names in SET_FOLDERS.values()):
            return candidate
    return None


def _read_set(ann: Path, kind: str, root: Path, report: ValidationReport) -> pd.DataFrame:
    """All files of one annotation set as rows (split, video, frame, values)."""
    set_dir = find_child(ann, *SET_FOLDERS[kind])
    columns = ["split", "video", "frame"] + (["expression"] if kind == "EXPR" else ["valence", "arousal"])
    if set_dir is None:
        report.note(f"{'/'.join(SET_FOLDERS[kind][:1])} not found: no {kind} labels")
        return pd.DataFrame(columns=columns)
    parts = []
    for split_dir in sorted(p for p in set_dir.iterdir() if p.is_dir()):
        split = SPLIT_FOLDERS.get(split_dir.name.lower())
        if split is None:
            report.note(f"{set_dir.name}/{split_dir.name} ignored (expected Train_Set / Validation_Set)")
            continue
        for f in sorted(split_dir.glob("*.txt")):
            if inside_root(root / FRAMES_DIR, f.stem) is None:
                report.drop(f, "video name escapes the frames folder")
                continue
            table = read_expr_file(f, report) if kind == "EXPR" else read_va_file(f, report)
            table.insert(0, "video", f.stem)
            table.insert(0, "split", split)
            parts.append(table)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _report_split_conflicts(expr: pd.DataFrame, va: pd.DataFrame, report: ValidationReport) -> None:
    if expr.empty or va.empty:
        return
    e = expr.groupby("video")["split"].first()
    v = va.groupby("video")["split"].first()
    both = e.index.intersection(v.index)
    for video in both[(e[both] != v[both]).to_numpy()]:
        report.note(f"video {video} is in {e[video]} in EXPR_Set but in {v[video]} in VA_Set")


def load_manifest(
    root: str | os.PathLike,
    check_files: bool = True,
    val_fraction: float = 0.0,
    seed: int = 0,
    limit: int | None = None,
    frames_dir: str = FRAMES_DIR,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Manifest of Aff-Wild2 frames (one row per annotated frame; see the module docstring).

    Args:
        root: dataset folder (holding annotations/ and cropped_aligned/).
        check_files: drop (and report) frames whose image is missing.
        val_fraction: share of training *videos* moved to 'val' (all frames of a video move together).
        seed: seed of that choice and of ``limit``.
        limit: at most this many frames per split.
        frames_dir: folder of the per-video frame folders, relative to root.
    """
    root = require_dir(root, NAME, EXPECTED)
    ann = _annotation_root(root)
    if ann is None:
        raise layout_error(root, NAME, EXPECTED)
    report = ValidationReport(NAME, str(root))
    expr = _read_set(ann, "EXPR", root, report)
    va = _read_set(ann, "VA", root, report)
    _report_split_conflicts(expr, va, report)
    df = pd.merge(expr, va, on=["split", "video", "frame"], how="outer", sort=True)
    frames = root / frames_dir
    df["path"] = [os.path.join(frames, v, f"{int(n):05d}.jpg") for v, n in zip(df["video"], df["frame"])]
    if check_files and len(df):
        exists = check_exists(df["path"])
        missing = df.loc[~exists]
        for video, g in missing.groupby("video"):
            _count(report, frames / str(video), "frame image missing", len(g))
        df = df.loc[exists]
    df = df.astype({"frame": "int64"})
    if val_fraction:
        videos = df[df["split"] == "train"].drop_duplicates("video")[["video", "split"]]
        videos = carve_val(videos, val_fraction, seed, key="video")
        val_videos = set(videos.loc[videos["split"] == "val", "video"])
        df.loc[(df["split"] == "train") & df["video"].isin(val_videos), "split"] = "val"
    return finish(df, report, NAME, limit, seed)


def both_labels(df: pd.DataFrame, report: ValidationReport | None = None) -> pd.DataFrame:
    """The rows with a valid expression (an integer class of ``EXPRESSIONS_8``) *and* valid valence and
    arousal (finite, within [-1, 1]): paper B trained its Aff-Wild2 model only on such frames. Raw
    invalid codes (expression -1, VA -5) count as missing like NaN. The index is reset; with ``report``
    the numbers kept and left out (and why) are noted in it.
    """
    expr = pd.to_numeric(df["expression"], errors="coerce").to_numpy(np.float64)
    va = np.stack(
        [pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64) for c in ("valence", "arousal")]
    )
    has_expr = np.isin(expr, np.arange(len(EXPRESSIONS_8)))
    has_va = (np.abs(np.nan_to_num(va, nan=np.inf)) <= 1).all(axis=0)
    keep = has_expr & has_va
    if report is not None:
        report.note(
            f"both_labels kept {int(keep.sum()):,} of {len(df):,} frames (left out: "
            f"{int((~has_expr).sum()):,} without a valid expression, "
            f"{int((has_expr & ~has_va).sum()):,} with one but without valid valence/arousal)"
        )
    return df.loc[keep].reset_index(drop=True)
