"""Dataset loaders: one module per distributed format, all returning the same manifest schema.

``load(name, root, **kwargs)`` dispatches to ``fer_lib.datasets.<name>.load_manifest`` and returns
``(manifest, report)``: a DataFrame with ``MANIFEST_COLUMNS`` (plus extras such as ``video``,
``frame``, ``group_label``, ``label_raw``) and a ``ValidationReport`` of what was kept, dropped or
changed and why.
"""

from __future__ import annotations

import importlib
import os

import pandas as pd

from ._common import (
    MANIFEST_COLUMNS,
    SPLITS,
    ValidationReport,
    apply_limit,
    carve_val,
    finalize_manifest,
    validate_images,
)
from .images import DEFAULT_MAX_PIXELS, ImageError, check_image, read_image

# name -> module below fer_lib.datasets (imported on first use).
REGISTRY: dict[str, str] = {
    "utkface": "utkface",
    "fer2013": "fer2013",
    "affectnet": "affectnet",
    "afew": "afew",
    "vgaf": "vgaf",
    "affwild2": "affwild2",
    "vggface2": "vggface2",
    "ckplus48": "ckplus48",
}
#: Datasets that are only ever evaluated on (never trained, tuned or selected on): no synthetic
#: stand-in, left out of DATASET_NAMES, their rows refused by :func:`check_trainable`.
EVALUATION_ONLY: tuple[str, ...] = ("ckplus48",)
#: The datasets the stages prepare and learn from (each has a synthetic stand-in).
DATASET_NAMES: tuple[str, ...] = tuple(n for n in REGISTRY if n not in EVALUATION_ONLY)
VIDEO_DATASETS: tuple[str, ...] = ("afew", "vgaf")


def get_loader(name: str):
    """The ``load_manifest`` function of a registered dataset."""
    key = str(name).strip().lower()
    if key not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(REGISTRY)}")
    return importlib.import_module(f"{__name__}.{REGISTRY[key]}").load_manifest


def check_trainable(manifest: pd.DataFrame, what: str = "a training set") -> None:
    """ValueError where ``manifest`` holds rows of an :data:`EVALUATION_ONLY` dataset (its ``source``):
    such a dataset is never trained, tuned or selected on."""
    if "source" not in manifest.columns:
        return
    found = sorted(set(manifest["source"].astype(str)) & set(EVALUATION_ONLY))
    if found:
        raise ValueError(
            f"{what} holds rows of {', '.join(found)}, an evaluation-only dataset: never train, tune or "
            "select on it. Train on FER2013 (or another dataset of DATASET_NAMES) and evaluate on it"
        )


def load(name: str, root: str | os.PathLike, **kwargs) -> tuple[pd.DataFrame, ValidationReport]:
    """``(manifest, report)`` of dataset ``name`` found at ``root``; kwargs go to its loader."""
    return get_loader(name)(root, **kwargs)


__all__ = [
    "DATASET_NAMES",
    "DEFAULT_MAX_PIXELS",
    "EVALUATION_ONLY",
    "ImageError",
    "MANIFEST_COLUMNS",
    "REGISTRY",
    "SPLITS",
    "VIDEO_DATASETS",
    "ValidationReport",
    "apply_limit",
    "carve_val",
    "check_image",
    "check_trainable",
    "finalize_manifest",
    "get_loader",
    "load",
    "read_image",
    "validate_images",
]
