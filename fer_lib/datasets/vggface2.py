"""VGGFace2: ``root/{train,test}/<identity>/*.jpg``; the identity is the folder name.

Paper A splits the training identities' images 90/10 per identity for face-ID pre-training: with
``val_fraction`` that share of each identity's train images becomes 'val' (deterministic). The
'test' folder holds other identities (VGGFace2's disjoint test identities).
Files outside identity folders and non-image files are reported.
"""

from __future__ import annotations

import os

import pandas as pd

from ._common import (
    IMAGE_SUFFIXES,
    ValidationReport,
    carve_val,
    finish,
    layout_error,
    list_files,
    require_dir,
)

NAME = "vggface2"
EXPECTED = "folders train/ and/or test/ holding one folder per identity (e.g. train/n000002/0001_01.jpg)"
SPLIT_FOLDERS = {"train": "train", "test": "test"}


def load_manifest(
    root: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0, limit: int | None = None
) -> tuple[pd.DataFrame, ValidationReport]:
    """Manifest of VGGFace2 identity folders.

    Args:
        root: folder holding train/ and/or test/.
        val_fraction: share of each train identity's images moved to 'val'.
        seed: seed of that choice and of ``limit``.
        limit: at most this many images per split.
    """
    root = require_dir(root, NAME, EXPECTED)
    split_dirs = {
        p: SPLIT_FOLDERS[p.name.lower()]
        for p in sorted(root.iterdir())
        if p.is_dir() and p.name.lower() in SPLIT_FOLDERS
    }
    if not split_dirs:
        raise layout_error(root, NAME, EXPECTED)
    report = ValidationReport(NAME, str(root))
    rows = []
    for split_dir, split in split_dirs.items():
        for entry in sorted(split_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                report.ignore(entry, "file outside an identity folder")
                continue
            for f in list_files(entry):
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    report.ignore(f, "not an image file")
                    continue
                rows.append((str(f), split, entry.name))
    df = pd.DataFrame(rows, columns=["path", "split", "identity"])
    df = carve_val(df, val_fraction, seed, by="identity")
    return finish(df, report, NAME, limit, seed)
