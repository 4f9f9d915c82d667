"""UTKFace: labels in the file name ``[age]_[gender]_[race]_[date&time].jpg.chip.jpg``.

Layout: ``root/images/*.jpg`` or ``root/*.jpg``; optional ``root/balanced_test_2000.txt`` listing
the file names of the test split (one per line). Without that list the test split is chosen by a
hash of the file name. A 'val' fraction is carved out of 'train' (never out of 'test').
Malformed names (a field missing, not a number, age outside 0..116, gender not 0/1, race not
0..4) are reported and skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from fer_lib.labels import ETHNICITIES

from ._common import (
    ValidationReport,
    carve_val,
    finish,
    hash_split,
    inside_root,
    layout_error,
    list_files,
    require_dir,
)

NAME = "utkface"
EXPECTED = "UTKFace chips named age_gender_race_datetime.jpg.chip.jpg in root/images/ or directly in root"
TEST_LIST = "balanced_test_2000.txt"
MAX_AGE = 116


_NUMBER = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also accepts '²', which int() rejects


def format_name(age: int, gender: int, race: int, taken: str) -> str:
    """The UTKFace chip name ``age_gender_race_taken.jpg.chip.jpg`` (``taken``: yyyymmddHHMMSSfff)."""
    return f"{int(age)}_{int(gender)}_{int(race)}_{taken}.jpg.chip.jpg"


def parse_fields(name: str) -> tuple[int, int, int, str] | str:
    """``(age, gender, race, taken)`` from a UTKFace file name, or a string saying what is wrong.

    Never raises for any text. ``taken`` (the date-time field) only identifies the photo and is
    returned as written, unchecked.
    """
    stem = str(name)
    for suffix in (".chip.jpg", ".jpg"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    fields = stem.split("_")
    if len(fields) != 4:
        return f"expected 4 fields age_gender_race_datetime, found {len(fields)}"
    names = ("age", "gender", "race")
    values = []
    for fname, text in zip(names, fields[:3]):
        if not _NUMBER.fullmatch(text):
            return f"{fname} field {text[:20]!r} is not a number"
        values.append(int(text))
    age, gender, race = values
    if not 0 <= age <= MAX_AGE:
        return f"age {age} outside 0..{MAX_AGE}"
    if gender not in (0, 1):
        return f"gender {gender} is not 0 (male) or 1 (female)"
    if not 0 <= race < len(ETHNICITIES):
        return f"race {race} outside 0..{len(ETHNICITIES) - 1}"
    return age, gender, race, fields[3]


def parse_name(name: str) -> tuple[int, int, int] | str:
    """``(age, gender, race)`` from a UTKFace file name, or a string saying what is wrong with it."""
    parsed = parse_fields(name)
    return parsed if isinstance(parsed, str) else parsed[:3]


def _image_dir(root: Path) -> Path:
    images = root / "images"
    return images if images.is_dir() else root


def _read_test_list(root: Path, folder: Path, report: ValidationReport) -> set[str] | None:
    for candidate in (root / TEST_LIST, folder / TEST_LIST):
        if candidate.is_file():
            names = set()
            for line in candidate.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if not line:
                    continue
                if inside_root(root, line) is None:
                    report.ignore(f"{candidate.name}: {line}", "test list entry escapes the root")
                    continue
                names.add(os.path.basename(line))
            report.note(f"test split from {candidate.name} ({len(names):,} names)")
            return names
    return None


def load_manifest(
    root: str | os.PathLike,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Manifest of a UTKFace folder.

    Args:
        root: folder holding ``images/`` (or the chips directly) and optionally the test list.
        val_fraction: share of the training files moved to 'val' (hash of the name, deterministic).
        test_fraction: share of files in 'test' when there is no ``balanced_test_2000.txt``.
        seed: changes which files the hash splits choose.
        limit: at most this many rows per split (deterministic), e.g. the smoke profile's real_limit.
    """
    root = require_dir(root, NAME, EXPECTED)
    folder = _image_dir(root)
    files = [p for p in list_files(folder) if p.name.lower().endswith(".jpg")]
    if not files:
        raise layout_error(root, NAME, EXPECTED)
    report = ValidationReport(NAME, str(root))
    rows = []
    for p in files:
        parsed = parse_name(p.name)
        if isinstance(parsed, str):
            report.drop(p, "malformed file name", parsed)
            continue
        age, gender, race = parsed
        rows.append({"path": str(p), "age": age, "gender": gender, "race": race, "file": p.name})
    df = pd.DataFrame(rows, columns=["path", "age", "gender", "race", "file"])
    test_names = _read_test_list(root, folder, report)
    if test_names is None:
        df["split"] = hash_split(df["file"], test_fraction, seed)
        report.note(f"no {TEST_LIST}: test split = {test_fraction:.0%} of files by a hash of the name")
    else:
        df["split"] = ["test" if f in test_names else "train" for f in df["file"]]
        present = {p.name for p in files}
        for missing in sorted(test_names - present):
            report.ignore(missing, "listed in the test list but not found")
    df = carve_val(df, val_fraction, seed, key="file")
    return finish(df.drop(columns="file"), report, NAME, limit, seed)
