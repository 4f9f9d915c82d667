"""AffectNet: ``root/training.csv`` and ``root/validation.csv`` as distributed.

Columns: subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
expression, valence, arousal. The image is ``root/<subDirectory_filePath>`` (or under
``root/Manually_Annotated_Images/``). Expression 0..7 is already the canonical order
(``labels.AFFECTNET_ORDER``); 8 None, 9 Uncertain, 10 No-Face leave the emotion task.

Decisions (every one is counted in the report):
- expression 8/9/10 or an unreadable expression -> expression NaN; the row stays only if its
  valence and arousal are valid (it still trains the VA head), otherwise it is dropped;
- valence/arousal -2 (no face) or outside [-1, 1] -> NaN;
- an invalid face box (not a finite number, x/y < 0, width/height <= 0) -> NaN box (the whole
  image is used);
- a path escaping the root or a missing image file (``check_files=True``) -> row dropped;
- ``facial_landmarks`` (68 iBUG points ``x1;y1;...;x68;y68``) -> the two eye centres ``eye_left_x``,
  ``eye_left_y`` (mean of points 36-41, 0-based: the eye on the image's left) and ``eye_right_x``,
  ``eye_right_y`` (points 42-47), for paper B's eye levelling; an empty landmark string (AffectNet's
  No-Face rows) -> NaN eye centres, counted in a note; a malformed one (not 136 numbers, or the two
  eyes on one point) -> NaN eye centres, reported per row. Such rows are cropped by the face box alone.
Splits: training.csv -> 'train' with a stratified ``val_fraction`` moved to 'val' for model
selection; validation.csv -> 'test' (the set the paper reports on).
The official validation.csv has no header line; a header-less csv with 9 columns is read in the
documented column order.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from fer_lib.labels import AFFECTNET_ORDER

from ._common import (
    CLEARED,
    ValidationReport,
    carve_val,
    check_exists,
    finish,
    inside_root,
    layout_error,
    require_dir,
)

NAME = "affectnet"
COLUMNS = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
EXPECTED = "training.csv and/or validation.csv (AffectNet annotation files) with the images below root"
CSV_SPLITS = {"training.csv": "train", "validation.csv": "test"}
IMAGE_BASES = ("", "Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images")
EXCLUDED = {8: "None", 9: "Uncertain", 10: "No-Face"}
EYE_COLUMNS = ("eye_left_x", "eye_left_y", "eye_right_x", "eye_right_y")
N_LANDMARKS = 68
EYE_POINTS = (range(36, 42), range(42, 48))  # iBUG 68-point order, 0-based: image-left eye, image-right eye


def _read(csv: Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` of strings; a file that is not a readable csv raises one error naming it."""
    try:
        return pd.read_csv(csv, dtype=str, keep_default_na=False, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{csv}: not a readable csv ({type(exc).__name__}: {exc}). What to do: check that "
            "it is the AffectNet annotation file (UTF-8 text, 9 comma-separated columns; quote "
            "paths that contain commas)"
        ) from exc


def _is_data_line(fields) -> bool:
    """Whether a header-less csv's first line looks like data: expression, valence, arousal are numbers."""
    try:
        [float(str(fields[i]).strip()) for i in (6, 7, 8)]
    except (ValueError, IndexError):
        return False
    return True


def read_csv(csv: Path) -> pd.DataFrame:
    """The annotation table with string values; one clear error for a missing column.

    A csv whose first line is not the header but data (9 columns, numeric expression/valence/arousal,
    as in the official validation.csv) is read in the documented column order.
    """
    table = _read(csv)
    table.columns = [str(c).strip() for c in table.columns]
    if (
        COLUMNS[0] not in table.columns
        and len(table.columns) == len(COLUMNS)
        and _is_data_line(_read(csv, header=None, nrows=1).iloc[0].tolist())
    ):
        table = _read(csv, header=None, names=list(COLUMNS))
        table.attrs["headerless"] = True
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{csv}: missing column(s) {', '.join(missing)}; an AffectNet csv needs "
            f"{', '.join(COLUMNS)} (found {', '.join(map(str, table.columns))}). What to do: "
            "fix the header line (or remove it: a header-less file is read in that order)"
        )
    return table


def _pick_image_base(root: Path, rel_paths: pd.Series) -> Path:
    """The folder under which most of a sample of the csv's paths exist (paths that would leave
    the root are never looked at)."""
    sample = rel_paths.iloc[:: max(1, len(rel_paths) // 50)].head(50)
    best, best_hits = root, -1
    for base in IMAGE_BASES:
        folder = root / base if base else root
        inside = [inside_root(root, os.path.join(base, r)) for r in sample if r]
        hits = sum(p.is_file() for p in inside if p is not None)
        if hits > best_hits:
            best, best_hits = folder, hits
    return best


def _numbers(table: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(table[col].str.strip(), errors="coerce").to_numpy(dtype=np.float64)


def eye_centres(landmarks: pd.Series) -> np.ndarray:
    """``(n, 4)`` eye centres ``[left_x, left_y, right_x, right_y]`` from 68-point landmark strings; a row
    that is not 136 ``;``-separated numbers, or whose eye points are not finite or coincide, is NaN."""
    out = np.full((len(landmarks), 4), np.nan)
    lo, hi = 2 * EYE_POINTS[0][0], 2 * (EYE_POINTS[1][-1] + 1)  # only the eye fields are parsed (287k rows)
    for i, text in enumerate(landmarks):
        fields = str(text).split(";")
        if len(fields) != 2 * N_LANDMARKS:
            continue
        try:
            pts = np.array(fields[lo:hi], dtype=np.float64).reshape(2, -1, 2)
        except ValueError:
            continue
        eyes = pts.mean(axis=1).reshape(-1)
        if np.isfinite(eyes).all() and (eyes[:2] != eyes[2:]).any():
            out[i] = eyes
    return out


def _clean_va(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Valence or arousal with -2 (no face) and missing/out-of-range values set to NaN, plus both masks."""
    no_face = np.isclose(values, -2.0)
    bad = ~no_face & (np.isnan(values) | (values < -1) | (values > 1))
    return np.where(no_face | bad, np.nan, values), no_face, bad


def _report_va(
    name: str,
    values: np.ndarray,
    no_face: np.ndarray,
    bad: np.ndarray,
    where: pd.Series,
    keep: np.ndarray,
    report: ValidationReport,
) -> None:
    report.add_many(where[no_face & keep], f"{name} -2 (no face)", action=CLEARED)
    report.add_many(
        where[bad & keep],
        f"{name} missing or outside [-1, 1]",
        [f"{name}={v}" for v in values[bad & keep]],
        action=CLEARED,
    )


def _parse_table(
    table: pd.DataFrame,
    csv: Path,
    root: Path,
    split: str,
    check_files: bool,
    keep_landmarks: bool,
    report: ValidationReport,
) -> pd.DataFrame:
    """One csv -> manifest rows (before the val carve)."""
    header_lines = 0 if table.attrs.get("headerless") else 1
    where = pd.Series([f"{csv.name} row {i + 1 + header_lines}" for i in range(len(table))])
    rel = table["subDirectory_filePath"].str.strip()
    base = _pick_image_base(root, rel)
    full = [inside_root(root, os.path.join(os.path.relpath(base, root), r)) if r else None for r in rel]
    keep = np.ones(len(table), dtype=bool)

    empty = (rel == "").to_numpy()
    report.add_many(where[empty], "empty image path")
    escapes = np.array([f is None for f in full]) & ~empty
    report.add_many(where[escapes], "path escapes the dataset root", rel[escapes])
    keep &= ~(empty | escapes)
    paths = pd.Series([str(f) if f is not None else "" for f in full])
    if check_files:
        exists = check_exists(paths.where(keep, ""))
        missing = keep & ~exists
        report.add_many(paths[missing], "missing image file", where[missing])
        keep &= exists

    expr = _numbers(table, "expression")
    raw_v, raw_a = _numbers(table, "valence"), _numbers(table, "arousal")
    valence, v_no_face, v_bad = _clean_va(raw_v)
    arousal, a_no_face, a_bad = _clean_va(raw_a)
    va_ok = ~np.isnan(valence) & ~np.isnan(arousal)
    valid_expr = np.isin(expr, np.arange(len(AFFECTNET_ORDER)))
    for code, label in EXCLUDED.items():
        hit = (expr == code) & keep
        report.add_many(
            where[hit & va_ok], f"expression {code} ({label}) excluded from the emotion task", action=CLEARED
        )
        report.add_many(where[hit & ~va_ok], f"expression {code} ({label}) and no valid valence/arousal")
    unknown = ~valid_expr & ~np.isin(expr, list(EXCLUDED)) & keep
    report.add_many(
        where[unknown & va_ok], "invalid expression", table["expression"][unknown & va_ok], action=CLEARED
    )
    report.add_many(
        where[unknown & ~va_ok],
        "invalid expression and no valid valence/arousal",
        table["expression"][unknown & ~va_ok],
    )
    keep &= valid_expr | va_ok
    _report_va("valence", raw_v, v_no_face, v_bad, where, keep, report)
    _report_va("arousal", raw_a, a_no_face, a_bad, where, keep, report)

    box = np.stack([_numbers(table, c) for c in ("face_x", "face_y", "face_width", "face_height")], 1)
    bad_box = (
        ~np.isfinite(box).all(1) | (box[:, 2] <= 0) | (box[:, 3] <= 0) | (box[:, :2] < 0).any(1)
    ) & keep
    report.add_many(where[bad_box], "invalid face box (whole image used)", action=CLEARED)
    box[bad_box] = np.nan

    eyes = eye_centres(table["facial_landmarks"])
    no_eyes = np.isnan(eyes).any(axis=1) & keep
    empty = (table["facial_landmarks"].str.strip() == "").to_numpy()
    if (no_eyes & empty).any():
        report.note(
            f"{csv.name}: {int((no_eyes & empty).sum()):,} kept rows have no facial landmarks (no eye "
            "centres: align='eyes' crops them by the face box alone)"
        )
    malformed = no_eyes & ~empty
    fields = table["facial_landmarks"].str.count(";") + 1
    report.add_many(
        where[malformed],
        "facial landmarks malformed (no eye centres)",
        [f"{n} values" for n in fields[malformed]],
        action=CLEARED,
    )

    df = pd.DataFrame(
        {
            "path": paths,
            "split": split,
            "expression": np.where(valid_expr, expr, np.nan),
            "valence": valence,
            "arousal": arousal,
            "face_x": box[:, 0],
            "face_y": box[:, 1],
            "face_w": box[:, 2],
            "face_h": box[:, 3],
            "label_raw": expr,
            **{c: eyes[:, k] for k, c in enumerate(EYE_COLUMNS)},
        }
    )
    if keep_landmarks:
        df["landmarks"] = table["facial_landmarks"].to_numpy()
    return df[keep].reset_index(drop=True)


def load_manifest(
    root: str | os.PathLike,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
    limit: int | None = None,
    keep_landmarks: bool = False,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Manifest of AffectNet (see the module docstring for every decision).

    Args:
        root: folder holding training.csv / validation.csv and the images.
        val_fraction: share of training.csv rows (per expression) moved to 'val'.
        seed: seed of the val choice and of ``limit``.
        check_files: drop (and report) rows whose image file does not exist.
        limit: at most this many rows per split.
        keep_landmarks: keep the raw 68-point landmark string as column ``landmarks``.
    """
    root = require_dir(root, NAME, EXPECTED)
    csvs = {name: root / name for name in CSV_SPLITS if (root / name).is_file()}
    if not csvs:
        raise layout_error(root, NAME, EXPECTED)
    report = ValidationReport(NAME, str(root))
    parts = []
    for name, split in CSV_SPLITS.items():
        if name not in csvs:
            report.note(f"{name} not found: no '{split}' split")
            continue
        table = read_csv(csvs[name])
        if table.attrs.get("headerless"):
            report.note(f"{name} has no header line; read in the documented column order")
        parts.append(_parse_table(table, csvs[name], root, split, check_files, keep_landmarks, report))
    df = pd.concat(parts, ignore_index=True)
    df = carve_val(df, val_fraction, seed, by="expression")
    return finish(df, report, NAME, limit, seed)
