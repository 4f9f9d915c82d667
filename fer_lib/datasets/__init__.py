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
}
DATASET_NAMES: tuple[str, ...] = tuple(REGISTRY)
VIDEO_DATASETS: tuple[str, ...] = ("afew", "vgaf")


def get_loader(name: str):
    """The ``load_manifest`` function of a registered dataset."""
    key = str(name).strip().lower()
    if key not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(DATASET_NAMES)}")
    return importlib.import_module(f"{__name__}.{REGISTRY[key]}").load_manifest


def load(name: str, root: str | os.PathLike, **kwargs) -> tuple[pd.DataFrame, ValidationReport]:
    """``(manifest, report)`` of dataset ``name`` found at ``root``; kwargs go to its loader."""
    return get_loader(name)(root, **kwargs)


__all__ = [
    "DATASET_NAMES",
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "MANIFEST_COLUMNS",
    "REGISTRY",
    "SPLITS",
    "VIDEO_DATASETS",
    "ValidationReport",
    "apply_limit",
    "carve_val",
    "check_image",
    "finalize_manifest",
    "get_loader",
    "load",
    "read_image",
    "validate_images",
]
