"""Stage 05: the published numbers of both papers beside the numbers this run reproduced.

Published numbers come from :mod:`fer_lib.published` (one table, a source on every row); reproduced
numbers are read from ``results/metrics.csv``, where every stage records what it computed. Nothing
is typed in here: a published row with no reproduced counterpart says why (the dataset was not
available, or only its synthetic stand-in was), instead of leaving a silent blank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import reporting
from ..config import Paths, get_paths
from ..metrics import metric_spec
from ..published import published_table

# Published rows about the phone or the file, not about a dataset: nothing here reproduces them.
NOT_REPRODUCIBLE_DATASETS = ("device",)
COMPARISON_COLUMNS = [
    "paper",
    "model",
    "dataset",
    "split",
    "metric",
    "published",
    "unit",
    "source",
    "reproduced",
    "reproduced_on",
    "reproduced_model",
    "reproduced_split",
    "profile",
    "status",
]


def _as_unit(value: float, unit: str) -> float:
    """Reproduced metrics are stored as fractions; published accuracies are in %."""
    return float(value) * 100.0 if unit == "%" else float(value)


def _candidates(metrics: pd.DataFrame, dataset: str, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows on the real dataset, rows on its synthetic stand-in) recording ``metric``."""
    rows = metrics[metrics["metric"] == metric]
    return rows[rows["dataset"] == dataset], rows[rows["dataset"] == f"synthetic_{dataset}"]


def _best(rows: pd.DataFrame, metric: str, column: str = "value") -> pd.Series:
    """The row with the best ``column`` value, in the direction declared for ``metric``."""
    values = pd.to_numeric(rows[column], errors="coerce")
    return rows.loc[values.idxmin() if metric_spec(metric).direction == "min" else values.idxmax()]


def comparison_table(
    metrics: pd.DataFrame,
    published: pd.DataFrame | None = None,
    profile: str | None = None,
    real_available: dict[str, bool] | None = None,
) -> pd.DataFrame:
    """One row per published number with the reproduced number beside it (or the reason there is none).

    ``metrics``: rows of ``metrics.csv`` (restricted to ``profile`` when given); ``real_available``:
    dataset -> whether its real copy was found (only used to word the status).
    """
    published = published_table() if published is None else published
    if profile is not None and len(metrics):
        metrics = metrics[metrics["profile"] == profile]
    real_available = real_available or {}
    out = []
    for r in published.itertuples(index=False):
        row = {
            "paper": r.paper,
            "model": r.model,
            "dataset": r.dataset,
            "split": r.split,
            "metric": r.metric,
            "published": r.value,
            "unit": r.unit,
            "source": r.source,
            "reproduced": np.nan,
            "reproduced_on": "",
            "reproduced_model": "",
            "reproduced_split": "",
            "profile": "",
        }
        if r.dataset in NOT_REPRODUCIBLE_DATASETS:
            row["status"] = "not reproducible here (measured on the authors' device / file)"
            out.append(row)
            continue
        real, synthetic = _candidates(metrics, r.dataset, r.metric)
        if len(real):
            best = _best(real, r.metric)
            on, status = r.dataset, "reproduced on the real dataset"
            if str(best["split"]) != str(r.split):
                status += f" (split {best['split']}, published on {r.split})"
        elif len(synthetic):
            best = _best(synthetic, r.metric)
            on = f"synthetic_{r.dataset}"
            status = (
                f"{r.dataset} not available here: synthetic stand-in (exercises the same code; not "
                "comparable)"
            )
        else:
            missing = "not found under FER_DATA_ROOT" if not real_available.get(r.dataset) else "not run"
            row["status"] = f"not reproduced: {r.dataset} {missing}"
            out.append(row)
            continue
        row.update(
            reproduced=_as_unit(best["value"], r.unit),
            reproduced_on=on,
            reproduced_model=str(best["model"]),
            reproduced_split=str(best["split"]),
            profile=str(best["profile"]),
            status=status,
        )
        out.append(row)
    return pd.DataFrame(out, columns=COMPARISON_COLUMNS)


def headline_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """The comparison folded to one row per (dataset, split, metric): the best published number (its
    model and source, and how many published models report the metric) beside the reproduced one."""
    rows = comparison[~comparison["dataset"].isin(NOT_REPRODUCIBLE_DATASETS)]
    out = []
    for (dataset, split, metric), g in rows.groupby(["dataset", "split", "metric"], sort=False):
        best = _best(g, metric, "published")
        out.append(
            {
                "dataset": dataset,
                "split": split,
                "metric": metric,
                "unit": best["unit"],
                "published_best": best["published"],
                "published_model": best["model"],
                "published_models": len(g),
                "source": best["source"],
                "reproduced": best["reproduced"],
                "reproduced_on": best["reproduced_on"],
                "reproduced_model": best["reproduced_model"],
                "status": best["status"],
            }
        )
    return pd.DataFrame(out)


def reproduced_table(metrics: pd.DataFrame, profile: str | None = None) -> pd.DataFrame:
    """Everything this run recorded: ``stage, dataset, split, model`` x metric, with training time."""
    if profile is not None and len(metrics):
        metrics = metrics[metrics["profile"] == profile]
    if metrics.empty:
        return pd.DataFrame(columns=["stage", "dataset", "split", "model", "train_seconds"])
    keys = ["stage", "dataset", "split", "model"]
    wide = metrics.pivot_table(index=keys, columns="metric", values="value", aggfunc="last")
    secs = metrics.groupby(keys)["train_seconds"].max()
    wide.insert(0, "train_seconds", secs)
    return wide.reset_index().rename_axis(columns=None)


def real_data_table(metrics: pd.DataFrame, profile: str | None = None) -> pd.DataFrame:
    """The real-data bars of the issues: value, target and whether it was met."""
    targets = [
        ("utkface", "balanced_test_2000", "gender_accuracy", 0.88),
        ("utkface", "balanced_test_2000", "age_mae", 6.5),
        ("utkface", "balanced_test_2000", "race_accuracy", 0.75),
        ("fer2013", "test", "accuracy", 0.65),
    ]
    if profile is not None and len(metrics):
        metrics = metrics[metrics["profile"] == profile]
    rows = []
    for dataset, split, metric, target in targets:
        op = "<=" if metric_spec(metric).direction == "min" else ">="
        sel = metrics[
            (metrics["dataset"] == dataset) & (metrics["split"] == split) & (metrics["metric"] == metric)
        ]
        for r in sel.itertuples(index=False):
            v = float(r.value)
            met = v <= target if op == "<=" else v >= target
            rows.append(
                {
                    "dataset": dataset,
                    "split": split,
                    "metric": metric,
                    "model": r.model,
                    "value": v,
                    "target": f"{op} {target}",
                    "met": bool(met),
                    "train_seconds": r.train_seconds,
                    "profile": r.profile,
                }
            )
        if sel.empty:
            rows.append(
                {
                    "dataset": dataset,
                    "split": split,
                    "metric": metric,
                    "model": "",
                    "value": np.nan,
                    "target": f"{op} {target}",
                    "met": False,
                    "train_seconds": np.nan,
                    "profile": "not run (needs FER_DATA_ROOT with this dataset)",
                }
            )
    return pd.DataFrame(rows)


FIGURE_GROUPS = {
    "training curves": "*history*",
    "confusion matrices": "*confusion*",
    "label graph (adjacency)": "*adjacency*",
    "frame-stride study": "*stride*",
}


def figures(paths: Paths | None = None) -> dict[str, list[Path]]:
    """The figures the earlier notebooks saved, grouped for the report (empty groups kept)."""
    paths = paths or get_paths()
    return {
        group: sorted(paths.figures.glob(pattern)) if paths.figures.exists() else []
        for group, pattern in FIGURE_GROUPS.items()
    }


def run_times(paths: Paths | None = None) -> pd.DataFrame:
    """Wall time of each notebook of the latest chain runs (``results/run_times.csv``)."""
    paths = paths or get_paths()
    f = paths.results / "run_times.csv"
    if not f.exists():
        return pd.DataFrame(columns=["notebook", "profile", "seconds", "finished"])
    return pd.read_csv(f)


def write_all(cfg, paths: Paths | None = None) -> dict[str, pd.DataFrame]:
    """Build and write the three tables of notebook 05; returns them."""
    paths = paths or get_paths()
    metrics = reporting.load_metrics(paths.metrics_csv)
    real = {
        name: paths.real(name) is not None
        for name in ("utkface", "fer2013", "affectnet", "afew", "vgaf", "vggface2", "affwild2")
    }
    comparison = comparison_table(metrics, profile=cfg.name, real_available=real)
    tables = {
        "05_headline": headline_table(comparison),
        "05_published_vs_reproduced": comparison,
        "05_reproduced": reproduced_table(metrics, profile=cfg.name),
        "05_real_data_bars": real_data_table(metrics, profile=cfg.name),
    }
    titles = {
        "05_headline": "Best published number per dataset and metric beside the reproduced one",
        "05_published_vs_reproduced": "Published numbers (with sources) beside the reproduced ones",
        "05_reproduced": f"Every metric recorded under the {cfg.name} profile",
        "05_real_data_bars": "Real-data bars (targets of the issues)",
    }
    for name, df in tables.items():
        reporting.write_table(df, name, paths, title=titles[name])
    return tables
