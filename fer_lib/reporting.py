"""One place for reproduced numbers, tables and figures.

Every stage records its headline metrics through :func:`record_metrics` into ``results/metrics.csv``
(one row per metric, named in the vocabulary of :data:`fer_lib.metrics.METRICS`). Re-running a stage
replaces its earlier rows with the same (stage, dataset, split, model, metric, profile) key. Tables
and README numbers are built from that file, never typed in. Each row names the commit that produced it
(``git_commit``, ``-dirty`` when tracked files had uncommitted changes) and says whether that tree was
``clean`` (True / False; empty outside a git checkout); rows written before the ``clean`` column existed
get it from their commit's ``-dirty`` suffix when loaded.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from . import io, provenance
from .config import Paths, get_paths
from .metrics import metric_spec

METRICS_COLUMNS = [
    "stage",
    "dataset",
    "split",
    "model",
    "metric",
    "value",
    "profile",
    "train_seconds",
    "seed",
    "git_commit",
    "clean",
    "timestamp",
]
METRICS_KEY = [
    "stage",
    "dataset",
    "split",
    "model",
    "metric",
    "profile",
    "seed",
]  # a run with another seed adds rows


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_metrics(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """All recorded metrics (an empty frame with the right columns when none were recorded)."""
    path = Path(path) if path else get_paths().metrics_csv
    if not path.exists():
        return pd.DataFrame(columns=METRICS_COLUMNS)
    df = pd.read_csv(
        path,
        keep_default_na=False,
        na_values={"value": [""], "train_seconds": [""]},
        dtype={"git_commit": str, "clean": str},
    )
    if "git_commit" in df:
        old = df["clean"] if "clean" in df else pd.Series("", index=df.index)
        df["clean"] = [_clean_value(c, g) for c, g in zip(old, df["git_commit"])]
        df = df[[c for c in METRICS_COLUMNS if c in df] + [c for c in df if c not in METRICS_COLUMNS]]
    return df


def _clean_value(recorded, commit) -> bool | str:
    """The ``clean`` cell of a row: as recorded, else from the commit's ``-dirty`` suffix; '' when unknown."""
    text = str(recorded).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    clean = provenance.is_clean(str(commit))
    return "" if clean is None else clean


def record_metrics(
    stage: str,
    dataset: str,
    split: str,
    model: str,
    metrics: Mapping[str, float],
    *,
    profile: str,
    seed: int,
    train_seconds: float | None = None,
    path: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Upsert one row per metric into ``metrics.csv`` (atomic, locked); returns the new rows.

    Every name must be declared in :data:`fer_lib.metrics.METRICS` (a ValueError lists the known ones).
    ``checkpoint``: the model these numbers are of, when it exists as a file; it is stamped with
    ``metrics_model=model``, so whoever ships it finds its rows by that name (not by rebuilding it).
    """
    if not metrics:
        raise ValueError("record_metrics needs at least one metric")
    for name in metrics:
        metric_spec(name)
    path = Path(path) if path else get_paths().metrics_csv
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    commit = provenance.git_commit()
    rows = pd.DataFrame(
        [
            {
                "stage": stage,
                "dataset": dataset,
                "split": split,
                "model": model,
                "metric": name,
                "value": float(value),
                "profile": profile,
                "train_seconds": None if train_seconds is None else round(float(train_seconds), 1),
                "seed": int(seed),
                "git_commit": commit,
                "clean": _clean_value("", commit),
                "timestamp": stamp,
            }
            for name, value in metrics.items()
        ],
        columns=METRICS_COLUMNS,
    )
    with _locked(path):
        old = load_metrics(path)
        if len(old):
            key_new = set(map(tuple, rows[METRICS_KEY].astype(str).values))
            keep = [tuple(r) not in key_new for r in old[METRICS_KEY].astype(str).values]
            old = old[keep]
        frames = [f for f in (old, rows) if len(f)]
        out = pd.concat(frames, ignore_index=True)[METRICS_COLUMNS]
        io.atomic_to_csv(out, path)
        _record_versions(path.parent / "versions.json")
    if checkpoint is not None and Path(checkpoint).is_file():
        from .models import update_checkpoint

        update_checkpoint(checkpoint, metrics_model=model)
    return rows


def drop_other_commits(profile: str, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Remove from ``metrics.csv`` the rows of ``profile`` recorded at another commit than the current one
    (atomic, locked); returns the removed rows. A full published run starts with it, so that its tables
    (notebook 05's bars among them) describe that run alone: a model whose name changed between runs
    would otherwise keep its old rows beside the new ones. Git keeps the published history."""
    path = Path(path) if path else get_paths().metrics_csv
    commit = provenance.git_commit()
    with _locked(path):
        df = load_metrics(path)
        stale = (df["profile"].astype(str) == profile) & (df["git_commit"].astype(str) != commit)
        if stale.any():
            io.atomic_to_csv(df[~stale], path)
    return df[stale]


def _record_versions(path: Path) -> None:
    """Package versions next to metrics.csv (rewritten only when they change)."""
    info = {"git_commit": provenance.git_commit(), "versions": provenance.versions()}
    try:
        if json.loads(path.read_text()) == info:
            return
    except (OSError, ValueError):
        pass
    io.atomic_write_text(path, json.dumps(info, indent=2, sort_keys=True) + "\n")


def to_markdown(df: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""

    def fmt(v):
        if isinstance(v, float):
            return "" if pd.isna(v) else floatfmt.format(v)
        return str(v).replace("|", "\\|").replace("\n", " ")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, name: str, paths: Paths | None = None, title: str | None = None) -> Path:
    """Write ``tables/<name>.csv`` and ``tables/<name>.md``; returns the CSV path."""
    paths = paths or get_paths()
    csv = io.atomic_to_csv(df, paths.tables / f"{name}.csv")
    head = f"# {title}\n\n" if title else ""
    io.atomic_write_text(paths.tables / f"{name}.md", head + to_markdown(df))
    return csv


def write_benchmark(
    df: pd.DataFrame, name: str, before: str = "", after: str = "", folder: str | os.PathLike | None = None
) -> Path:
    """A benchmark table as ``<folder>/<name>.csv`` and ``<name>.md`` (``before`` + the table +
    ``after``); ``folder`` defaults to ``results/benchmarks``. Prints the Markdown; returns its path."""
    folder = Path(folder) if folder else get_paths().results / "benchmarks"
    md = before + to_markdown(df) + after
    print(md)
    io.atomic_to_csv(df, folder / f"{name}.csv")
    return io.atomic_write_text(folder / f"{name}.md", md)


def save_figure(fig, name: str, paths: Paths | None = None) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` (atomic)."""
    paths = paths or get_paths()
    return io.atomic_savefig(fig, paths.figures / f"{name}.png")


#: Files at the top of the results folder that the index links when they exist.
INDEX_FILES = (
    ("metrics.csv", "every recorded metric, with the commit and whether its tree was clean"),
    ("run_times.csv", "wall time of each notebook of the latest runs"),
    ("versions.json", "package versions of the latest recorded metrics"),
)


def index_intro(readme: str | os.PathLike) -> str:
    """The hand-written paragraph(s) of an index: between its "Generated ..." line and the first ``##``."""
    try:
        lines = Path(readme).read_text().splitlines()
    except OSError:
        return ""
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("Generated ")), None)
    if start is None:
        return ""
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip()


def write_index(paths: Paths | None = None, extra: str | None = None) -> Path:
    """``results/README.md``: links to the metrics, every executed notebook, table, figure and benchmark.

    Only files that exist are listed, so every link resolves. ``extra`` is the hand-written text under
    the heading; None keeps the one of the current README (a run rewrites the index, not its intro),
    "" drops it.
    """
    paths = paths or get_paths()
    res = paths.results
    if extra is None:
        extra = index_intro(res / "README.md")

    def links(folder: Path, pattern: str) -> list[str]:
        files = sorted(f for f in folder.glob(pattern) if f.is_file()) if folder.is_dir() else []
        return [f"- [{f.relative_to(res)}]({f.relative_to(res)})" for f in files] or ["(none yet)"]

    top = [f"- [{name}]({name}): {what}" for name, what in INDEX_FILES if (res / name).is_file()]
    parts = [
        "# Results index",
        f"\nGenerated {time.strftime('%Y-%m-%d %H:%M:%S')} at commit `{provenance.git_commit()}`.\n",
        *([extra.strip(), ""] if extra and extra.strip() else []),
        "## Metrics\n",
        *(top or ["(none yet)"]),
        "\n## Executed notebooks\n",
        *links(res / "notebooks", "*.ipynb"),
        "\n## Tables\n",
        *links(paths.tables, "*.md"),
        "\n## Figures\n",
        *links(paths.figures, "*.png"),
        "\n## Models (with their cards)\n",
        *links(res / "models", "*.*"),
        "\n## Benchmarks\n",
        *links(res / "benchmarks", "*.md"),
    ]
    return io.atomic_write_text(res / "README.md", "\n".join(parts) + "\n")
