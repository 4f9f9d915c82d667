"""Where a stage's data comes from: the real dataset under FER_DATA_ROOT, else the synthetic default.

``load_for_profile("utkface", cfg)`` is the one call notebooks make: it finds ``$FER_DATA_ROOT/utkface``
when present (``prefer_real``), otherwise generates the synthetic set of the profile (once; later calls
reuse it) and loads either through the same loader, applying the profile's ``data.real_limit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import Paths, Profile, get_paths
from . import EVALUATION_ONLY, load
from ._common import ValidationReport, apply_limit


@dataclass
class DataSource:
    name: str
    root: Path
    real: bool

    @property
    def kind(self) -> str:
        return "real" if self.real else "synthetic"


def absent_real(name: str, paths: Paths) -> str:
    """Why a real-only dataset (one of ``EVALUATION_ONLY``: no synthetic stand-in) is not used here."""
    where = paths.real_root / name if paths.real_root is not None else f"FER_DATA_ROOT/{name}"
    return (
        f"{name} not found at {where}: it is a real, evaluation-only dataset with no synthetic "
        f"stand-in; set FER_DATA_ROOT to a folder holding {name}/ to evaluate on it"
    )


def locate(
    name: str, cfg: Profile, paths: Paths | None = None, prefer_real: bool = True, progress: bool = True
) -> DataSource:
    """The folder of dataset ``name`` for this profile, generating the synthetic one if needed (an
    ``EVALUATION_ONLY`` dataset has none: FileNotFoundError where its real folder is absent)."""
    paths = paths or get_paths()
    real = paths.real(name) if prefer_real else None
    if real is not None:
        return DataSource(name, real, True)
    if name in EVALUATION_ONLY:
        raise FileNotFoundError(absent_real(name, paths))
    from . import synthetic  # lazy: rendering code is only needed without real data

    root = paths.synthetic(cfg)
    written = synthetic.generate(
        root, cfg.data, seed=cfg.data.synthetic_seed, datasets=(name,), progress=progress
    )
    return DataSource(name, Path(written[name]), False)


def load_for_profile(
    name: str,
    cfg: Profile,
    paths: Paths | None = None,
    prefer_real: bool = True,
    progress: bool = True,
    **loader_kwargs,
) -> tuple[pd.DataFrame, ValidationReport, DataSource]:
    """``(manifest, report, source)`` of dataset ``name`` for the profile (real data capped by real_limit)."""
    src = locate(name, cfg, paths, prefer_real=prefer_real, progress=progress)
    df, report = load(name, src.root, **loader_kwargs)
    if src.real and cfg.data.real_limit:
        df = apply_limit(df, cfg.data.real_limit, seed=cfg.seed)
    return df, report, src
