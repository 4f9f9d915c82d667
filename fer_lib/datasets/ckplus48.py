"""CK+48: ``root/<class>/<subject>_<sequence>_<frame>.png``, an evaluation-only set.

The common 48x48 grey face-crop release of CK+ (extended Cohn-Kanade): the last frames of posed
sequences, one folder per class (``labels.CKPLUS_FOLDERS``: anger, contempt, disgust, fear, happy,
sadness, surprise; no neutral). The subject id is the first field of the file name (``S010`` in
``S010_004_00000017.png``; the ``identity`` column), the sequence the first two (``sequence``).

Evaluation only: it checks FER2013 expression models across datasets and is never trained, tuned or
selected on. Every row is split ``'test'``, so the stages, which train on ``'train'`` rows and select on
``'val'`` ones (the trainer refuses ``'test'`` rows for selection), find nothing to learn from; the
registry keeps it out of ``DATASET_NAMES`` (no synthetic stand-in, not prepared for training), and
:func:`fer_lib.datasets.check_trainable` (for a training entry point) refuses its rows. The protocol
(:data:`SCORED`): contempt rows stay in the manifest (label Contempt, ``scored`` False) and are not
scored; the other 6 classes are scored on a model's 7-way argmax, a Neutral prediction counting as wrong.
"""

from __future__ import annotations

import os
import re

import pandas as pd

from fer_lib.labels import CKPLUS_FOLDERS, EXPRESSIONS_7, EXPRESSIONS_8

from ._common import (
    IMAGE_SUFFIXES,
    ValidationReport,
    finish,
    layout_error,
    list_files,
    require_dir,
)

NAME = "ckplus48"
EXPECTED = (
    "one folder per class (anger, contempt, disgust, fear, happy, sadness, surprise) holding "
    "<subject>_<sequence>_<frame>.png face crops (e.g. anger/S010_004_00000017.png)"
)
#: Classes the protocol does not score: FER2013 models have no Contempt output.
UNSCORED: tuple[str, ...] = ("Contempt",)
#: Classes the protocol scores, in canonical order (Happy, Sad, Surprise, Fear, Disgust, Anger).
SCORED: tuple[str, ...] = tuple(
    c for c in EXPRESSIONS_7 if c in CKPLUS_FOLDERS.values() and c not in UNSCORED
)
# subject (letters + digits), sequence, frame: S010_004_00000017
_NAME = re.compile(r"([A-Za-z]+[0-9]+)_([0-9]+)_([0-9]+)")


def load_manifest(
    root: str | os.PathLike, limit: int | None = None, seed: int = 0
) -> tuple[pd.DataFrame, ValidationReport]:
    """Manifest of the CK+48 class folders: every row split 'test'.

    Columns beyond the shared schema: ``sequence`` (subject_sequence), ``label_raw`` (the folder name)
    and ``scored`` (False for the classes of :data:`UNSCORED`). Files outside class folders and
    non-image files are ignored, unknown class folders and malformed file names dropped, all reported.

    Args:
        root: the folder holding the class folders.
        limit: at most this many rows (chosen by a hash of the path).
        seed: seed of that choice.
    """
    root = require_dir(root, NAME, EXPECTED)
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if not any(p.name.lower() in CKPLUS_FOLDERS for p in folders):
        raise layout_error(root, NAME, EXPECTED)
    report = ValidationReport(NAME, str(root))
    for f in list_files(root):
        report.ignore(f, "file outside a class folder")
    rows = []
    for folder in folders:
        canon = CKPLUS_FOLDERS.get(folder.name.lower())
        files = list_files(folder)
        if canon is None:
            for f in files:
                report.drop(f, "unknown class folder", folder.name)
            continue
        for f in files:
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                report.ignore(f, "not an image file")
                continue
            m = _NAME.fullmatch(f.stem)
            if m is None:
                report.drop(
                    f, "malformed file name", "expected <subject>_<sequence>_<frame>, e.g. S010_004_00000017"
                )
                continue
            subject, sequence, _ = m.groups()
            rows.append(
                (
                    str(f),
                    "test",
                    subject,
                    f"{subject}_{sequence}",
                    float(EXPRESSIONS_8.index(canon)),
                    folder.name,
                )
            )
    df = pd.DataFrame(rows, columns=["path", "split", "identity", "sequence", "expression", "label_raw"])
    df["scored"] = ~df["expression"].isin([float(EXPRESSIONS_8.index(c)) for c in UNSCORED])
    df, report = finish(df, report, NAME, limit, seed)
    unscored = int((~df["scored"].astype(bool)).sum())
    if unscored:
        report.note(
            f"{unscored:,} {'/'.join(UNSCORED).lower()} rows kept with scored=False: the protocol does not "
            "score them (FER2013 models have no such class)"
        )
    report.note("evaluation only: every row is split 'test'; never train, tune or select on it")
    return df, report
