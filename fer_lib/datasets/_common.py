"""Helpers shared by the dataset loaders: manifest schema, validation report, splits, path safety.

Every loader returns ``(manifest, report)``. The manifest follows one schema (``MANIFEST_COLUMNS``);
the report counts the rows kept and every row that was dropped or had a value cleared, with the
file and the reason, so that nothing disappears silently.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .images import DEFAULT_MAX_PIXELS, check_image

# A list (not a tuple) so that ``df[MANIFEST_COLUMNS]`` selects columns in pandas.
MANIFEST_COLUMNS: list[str] = [
    "path",
    "split",
    "identity",
    "age",
    "gender",
    "race",
    "expression",
    "valence",
    "arousal",
    "face_x",
    "face_y",
    "face_w",
    "face_h",
    "source",
]
SPLITS: tuple[str, ...] = ("train", "val", "test")
_STR_COLUMNS = ("path", "split", "identity", "source")
#: File kinds by lower-case suffix, for the dataset loaders and ``predict``'s folder walk alike (video:
#: any container ffmpeg reads).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")

DROPPED = "dropped"
CLEARED = "value cleared"
IGNORED = "ignored"


# ------------------------------------------------------------------------------------------ report
@dataclass
class ValidationReport:
    """What a loader kept and what it dropped or changed, and why.

    ``issues`` holds one entry per affected file: (file, reason, detail, action) where action is
    ``"dropped"`` (row not in the manifest), ``"value cleared"`` (row kept, one value set to NaN)
    or ``"ignored"`` (something found on disk or in a list that did not become a row).
    """

    dataset: str
    root: str
    kept: int = 0
    kept_by_split: dict[str, int] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)  # (action, reason) -> n
    notes: list[str] = field(default_factory=list)
    _chunks: list[pd.DataFrame] = field(default_factory=list, repr=False)
    _rows: list[tuple[str, str, str, str]] = field(default_factory=list, repr=False)

    # -- recording
    def add(self, file: str | os.PathLike, reason: str, detail: str = "", action: str = DROPPED) -> None:
        """Record one affected file."""
        self._rows.append((str(file), reason, detail, action))
        self.counts[(action, reason)] += 1

    def drop(self, file: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.add(file, reason, detail, DROPPED)

    def clear(self, file: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.add(file, reason, detail, CLEARED)

    def ignore(self, file: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.add(file, reason, detail, IGNORED)

    def add_many(
        self, files: Iterable, reason: str, detail: str | Iterable[str] = "", action: str = DROPPED
    ) -> None:
        """Record many files with one reason (vectorised; used for large CSVs)."""
        files = [str(f) for f in files]
        if not files:
            return
        details = [detail] * len(files) if isinstance(detail, str) else [str(d) for d in detail]
        self._chunks.append(
            pd.DataFrame({"file": files, "reason": reason, "detail": details, "action": action})
        )
        self.counts[(action, reason)] += len(files)

    def note(self, text: str) -> None:
        """A remark about the dataset as a whole (e.g. a split file that was not found)."""
        self.notes.append(text)

    def set_kept(self, manifest: pd.DataFrame) -> None:
        self.kept = len(manifest)
        self.kept_by_split = {s: int(n) for s, n in manifest["split"].value_counts().items()}

    def merge(self, other: ValidationReport) -> None:
        """Fold another report's issues and notes into this one (kept counts are not summed)."""
        self._rows.extend(other._rows)
        self._chunks.extend(other._chunks)
        self.counts.update(other.counts)
        self.notes.extend(other.notes)

    # -- reading
    def by_reason(self, action: str | None = DROPPED) -> dict[str, int]:
        """Counts per reason for one action (None: all actions)."""
        out: Counter = Counter()
        for (act, reason), n in self.counts.items():
            if action is None or act == action:
                out[reason] += n
        return dict(out)

    @property
    def dropped(self) -> dict[str, int]:
        """Rows dropped, by reason."""
        return self.by_reason(DROPPED)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def n_cleared(self) -> int:
        return sum(self.by_reason(CLEARED).values())

    def to_frame(self) -> pd.DataFrame:
        """One row per affected file: file, reason, detail, action."""
        parts = list(self._chunks)
        if self._rows:
            parts.append(pd.DataFrame(self._rows, columns=["file", "reason", "detail", "action"]))
        if not parts:
            return pd.DataFrame(columns=["file", "reason", "detail", "action"])
        return pd.concat(parts, ignore_index=True)

    def summary_frame(self) -> pd.DataFrame:
        """Counts per (action, reason), largest first."""
        rows = [{"action": a, "reason": r, "count": n} for (a, r), n in self.counts.items()]
        df = pd.DataFrame(rows, columns=["action", "reason", "count"])
        return df.sort_values(["action", "count"], ascending=[True, False], ignore_index=True)

    def __str__(self) -> str:
        splits = ", ".join(f"{s} {self.kept_by_split[s]:,}" for s in SPLITS if s in self.kept_by_split)
        lines = [
            f"{self.dataset} at {self.root}: kept {self.kept:,} rows ({splits or 'none'}); "
            f"dropped {self.n_dropped:,}; values cleared {self.n_cleared:,}"
        ]
        for (action, reason), n in sorted(self.counts.items(), key=lambda kv: (kv[0][0], -kv[1])):
            lines.append(f"  {action:>13}: {n:>8,}  {reason}")
        for text in self.notes:
            lines.append(f"  note: {text}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:  # pragma: no cover - notebook display
        return "<pre>" + str(self).replace("&", "&amp;").replace("<", "&lt;") + "</pre>"


# ----------------------------------------------------------------------------------------- manifest
def finalize_manifest(df: pd.DataFrame | list[dict], source: str) -> pd.DataFrame:
    """Give rows the shared schema: every column present, typed, schema columns first, extras after."""
    df = pd.DataFrame(df) if not isinstance(df, pd.DataFrame) else df.copy()
    for col in MANIFEST_COLUMNS:
        if col not in df.columns:
            df[col] = "" if col in _STR_COLUMNS else np.nan
    df["source"] = source
    for col in _STR_COLUMNS:
        df[col] = df[col].fillna("").astype(str)
    for col in MANIFEST_COLUMNS:
        if col not in _STR_COLUMNS:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    extras = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    return df[list(MANIFEST_COLUMNS) + extras].reset_index(drop=True)


def finish(
    df: pd.DataFrame, report: ValidationReport, source: str, limit: int | None = None, seed: int = 0
) -> tuple[pd.DataFrame, ValidationReport]:
    """Apply the schema and the per-split limit, fill the report's kept counts, warn if empty."""
    df = finalize_manifest(df, source)
    if limit is not None:
        before = len(df)
        df = apply_limit(df, limit, seed)
        if len(df) < before:
            report.note(f"limit={limit} rows per split kept {len(df):,} of {before:,} rows")
    report.set_kept(df)
    if len(df) == 0:
        warnings.warn(
            f"{source}: no usable rows under {report.root}; see the validation report", stacklevel=3
        )
    return df, report


# ------------------------------------------------------------------------------------------- splits
def stable_hash(key: str, seed: int = 0) -> float:
    """A number in [0, 1) that depends only on ``key`` and ``seed`` (not on PYTHONHASHSEED)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _hash_keys(keys: Iterable[str], seed: int) -> np.ndarray:
    return np.fromiter((stable_hash(k, seed) for k in keys), dtype=np.float64)


def location_free(paths: pd.Series) -> pd.Series:
    """Paths relative to their common folder, so that a hash of them does not depend on where the
    dataset lives (the same dataset copied elsewhere gets the same splits and subsets)."""
    values = paths.astype(str)
    if values.empty:
        return values
    try:
        common = os.path.commonpath(list(values))
    except ValueError:  # mixed absolute / relative paths: nothing common to strip
        return values
    if not common or common in values.values:  # a single file: keep its name
        common = os.path.dirname(common)
    n = len(common.rstrip(os.sep)) + 1 if common else 0
    return values.str.slice(n)


def hash_split(keys: Iterable[str], test_fraction: float, seed: int = 0) -> np.ndarray:
    """'test' for about ``test_fraction`` of the keys, 'train' for the rest; depends only on each key."""
    h = _hash_keys(keys, seed + 7919)
    return np.where(h < test_fraction, "test", "train")


def carve_val(
    df: pd.DataFrame,
    fraction: float,
    seed: int = 0,
    by: str | Sequence[str] | None = None,
    key: str = "path",
    balanced: bool = False,
) -> pd.DataFrame:
    """Move ``round(fraction * n)`` of the 'train' rows (per group of ``by``) to 'val'.

    ``balanced``: every group of ``by`` gives the same number of rows instead, ``fraction`` of the
    train rows over the number of groups (at most half of a group), so that val weighs the groups
    equally, as a balanced test does. Rows are ranked by a hash of ``key``, so the choice is
    deterministic, independent of the row order, and never touches 'test' rows.
    """
    if not fraction or fraction <= 0 or df.empty:
        return df
    if fraction >= 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    df = df.copy()
    train = df.index[df["split"] == "train"]
    if len(train) == 0:
        return df
    keys = df.loc[train, key].astype(str)
    keys = location_free(keys) if key == "path" else keys
    sub = pd.DataFrame({"h": _hash_keys(keys, seed + 104729)}, index=train)
    if by is None:
        groups = pd.Series("", index=train)
    elif isinstance(by, str):
        groups = df.loc[train, by].astype(str)  # rows without a value (NaN) stay out of val
    else:
        groups = pd.Series(["|".join(map(str, r)) for r in df.loc[train, list(by)].itertuples(False)], train)
    per_group = round(fraction * len(train) / max(1, groups.nunique()))
    chosen = []
    for _, g in sub.groupby(groups.values, sort=False):
        n_val = min(per_group, len(g) // 2) if balanced else int(round(fraction * len(g)))
        if n_val:
            chosen.extend(g.sort_values("h").index[:n_val])
    df.loc[chosen, "split"] = "val"
    return df


def apply_limit(df: pd.DataFrame, limit: int | None, seed: int = 0) -> pd.DataFrame:
    """At most ``limit`` rows per split, chosen by a hash of the path (deterministic); order kept."""
    if limit is None or df.empty:
        return df
    if limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    h = pd.Series(
        _hash_keys(location_free(df["path"]) + "#" + df.index.astype(str), seed + 15485863), index=df.index
    )
    keep = []
    for _, idx in df.groupby("split", sort=False).groups.items():
        keep.extend(h.loc[idx].sort_values().index[:limit])
    return df.loc[sorted(keep)].reset_index(drop=True)


# --------------------------------------------------------------------------------------- paths
def require_dir(root: str | os.PathLike, dataset: str, expected: str) -> Path:
    """``root`` as an absolute Path; FileNotFoundError naming root and the expected layout otherwise."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{dataset}: root folder {str(path)!r} does not exist or is not a folder; expected {expected}"
        )
    return Path(os.path.abspath(path))


def layout_error(root: Path, dataset: str, expected: str, found: str = "") -> FileNotFoundError:
    """The one error a loader raises when a root lacks the dataset's layout."""
    listing = found or ", ".join(sorted(p.name for p in root.iterdir())[:12]) or "nothing"
    return FileNotFoundError(
        f"{dataset}: {str(root)!r} does not look like this dataset; expected {expected}. "
        f"Found there: {listing}. Point the loader at the dataset's root folder."
    )


def inside_root(root: Path, relative: str) -> Path | None:
    """``root / relative`` as an absolute normalised path, or None if it escapes ``root``.

    The check is lexical (``..`` and absolute paths are resolved against ``root``); symbolic links
    placed inside the dataset by its owner are trusted.
    """
    rel = str(relative).strip().replace("\\", "/")
    if not rel:
        return None
    full = os.path.normpath(os.path.join(str(root), rel))
    root_s = os.path.normpath(str(root))
    if full != root_s and not full.startswith(root_s.rstrip(os.sep) + os.sep):
        return None
    return Path(full)


def find_child(parent: Path, *names: str) -> Path | None:
    """The first child folder of ``parent`` whose name matches one of ``names`` (case-insensitive)."""
    if not parent.is_dir():
        return None
    children = {p.name.lower(): p for p in parent.iterdir() if p.is_dir()}
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None


def list_files(folder: Path) -> list[Path]:
    """Files (not hidden, not folders) directly inside ``folder``, sorted by name."""
    with os.scandir(folder) as it:
        return sorted(Path(e.path) for e in it if not e.name.startswith(".") and e.is_file())


def check_exists(paths: pd.Series) -> np.ndarray:
    """Boolean array: does each path exist as a file? Lists each folder once (fast on big sets)."""
    cache: dict[str, set[str]] = {}
    out = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths.astype(str)):
        folder, name = os.path.split(p)
        if folder not in cache:
            try:
                with os.scandir(folder) as it:
                    cache[folder] = {e.name for e in it if e.is_file()}
            except OSError:
                cache[folder] = set()
        out[i] = name in cache[folder]
    return out


# ---------------------------------------------------------------------------------- image checking
def validate_images(
    manifest: pd.DataFrame,
    report: ValidationReport | None = None,
    progress: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> pd.DataFrame:
    """Decode every image of the manifest; drop unusable ones and count them per reason.

    Reasons (``fer_lib.datasets.images``): missing file, empty file, not an image file, truncated or
    corrupt image, image too large (more than ``max_pixels``; None: only Pillow's
    limit), unsupported colour mode. Each file is decoded completely (JPEGs
    at 1/8 scale, which still reads all their data), so truncated files are found, and the size
    policy is the one ``FaceDataset`` applies. Slow on large sets (one decode per file), hence
    optional. Rows whose path is not an image (videos) are left alone. Returns the manifest
    without the dropped rows; ``report`` (if given) gets one entry per bad file and its kept counts.
    """
    from ..progress import tqdm

    paths = manifest["path"].astype(str)
    is_image = paths.str.lower().str.endswith(IMAGE_SUFFIXES)
    bad: dict[str, tuple[str, str]] = {}
    for p in tqdm(paths[is_image].unique(), desc="checking images", disable=not progress, leave=False):
        problem = check_image(p, max_pixels)
        if problem is not None:
            bad[p] = (problem.reason, problem.detail)
    if report is not None:
        for p, (reason, detail) in bad.items():
            report.drop(p, reason, detail)
    out = manifest[~paths.isin(bad)].reset_index(drop=True)
    if report is not None:
        report.set_kept(out)
    return out
