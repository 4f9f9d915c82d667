"""Figures shared by the notebooks: training curves, confusion matrices, label graphs, per-group metrics,
class balance, sample grids, and the published-vs-reproduced headline of notebook 05.

Each function returns a matplotlib Figure; ``fer_lib.reporting.save_figure`` writes it as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
    matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .metrics import metric_spec  # noqa: E402


def plot_history(history: pd.DataFrame, metrics: Sequence[str] | None = None, title: str = "") -> plt.Figure:
    """Loss and metric curves per epoch from a trainer's history (columns ``epoch`` + numeric ones)."""
    x = history["epoch"] if "epoch" in history else np.arange(len(history))
    cols = (
        list(metrics)
        if metrics
        else [
            c
            for c in history.columns
            if c != "epoch"
            and pd.api.types.is_numeric_dtype(history[c])
            and not c.endswith(("seconds", "lr", "stage"))
        ]
    )
    losses = [c for c in cols if "loss" in c]
    others = [c for c in cols if c not in losses]
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(11 if others else 6, 3.6), squeeze=False)
    for c in losses:
        axes[0, 0].plot(x, history[c], marker="o", label=c)
    axes[0, 0].set(xlabel="epoch", ylabel="loss", title="losses")
    axes[0, 0].legend(fontsize=7)
    if others:
        for c in others:
            axes[0, 1].plot(x, history[c], marker="o", label=c)
        axes[0, 1].set(xlabel="epoch", title="validation metrics")
        axes[0, 1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(
    cm: np.ndarray, labels: Sequence[str], normalize: bool = True, title: str = ""
) -> plt.Figure:
    """Confusion matrix heatmap (rows = true class); row-normalised by default, counts annotated."""
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.55 * n))
    sns.heatmap(
        shown,
        ax=ax,
        cmap="Blues",
        vmin=0,
        vmax=1 if normalize else None,
        annot=True,
        fmt=".2f" if normalize else ".0f",
        annot_kws={"fontsize": 7},
        xticklabels=list(labels),
        yticklabels=list(labels),
        cbar_kws={"fraction": 0.046},
    )
    ax.set(xlabel="predicted", ylabel="true", title=title)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    fig.tight_layout()
    return fig


def plot_adjacency(
    adj, labels: Sequence[str] | None = None, which: str = "a_hat", title: str | None = None
) -> plt.Figure:
    """Heatmap of one matrix of a label graph (a :class:`fer_lib.models.emotion_gcn.LabelGraph`: ``corr``,
    ``binary``, ``reweighted`` or ``a_hat``) or of any square matrix, node names on both axes and every
    value in its cell; a diverging colour map centred on 0 where values are signed."""
    if hasattr(adj, "names") and hasattr(adj, which):
        labels = labels or adj.names
        title = title or f"{which} (tau={adj.tau:g}, p={adj.p:g})"
        adj = getattr(adj, which)
    mat = np.asarray(adj, dtype=float)
    n = mat.shape[0]
    labels = list(labels) if labels is not None else [str(i) for i in range(n)]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for a {n}x{n} matrix")
    lim = float(np.nanmax(np.abs(mat))) or 1.0
    signed = bool(np.nanmin(mat) < 0)
    fig, ax = plt.subplots(figsize=(0.75 * n + 2.5, 0.75 * n + 1.5))
    sns.heatmap(
        mat,
        ax=ax,
        cmap="RdBu_r" if signed else "Blues",
        vmin=-lim if signed else 0.0,
        vmax=lim,
        annot=True,
        fmt=".2f",
        annot_kws={"fontsize": 8},
        xticklabels=labels,
        yticklabels=labels,
        cbar_kws={"fraction": 0.046},
    )
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_group_metrics(
    table: pd.DataFrame,
    metrics: Sequence[str],
    x: str = "ethnicity",
    hue: str = "gender",
    floors: dict[str, float] | None = None,
    title: str = "",
) -> plt.Figure:
    """One bar panel per metric of a per-group table (e.g. ethnicity x gender), with an optional
    horizontal line per metric (``floors``: a target no group should fall below)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sns.barplot(data=table, x=x, y=m, hue=hue, ax=ax)
        if floors and m in floors:
            ax.axhline(floors[m], color="black", lw=1, ls="--")
        ax.set(ylim=(0, 1) if table[m].max() <= 1 else None, xlabel="", title=m)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_class_balance(counts: pd.DataFrame, title: str = "") -> plt.Figure:
    """Bar chart of a ``class x split`` count table (e.g. ``pd.crosstab(df.label, df.split)``)."""
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(counts) + 2), 3.2))
    counts.plot.bar(ax=ax)
    ax.set(ylabel="images", title=title)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def plot_image_grid(
    images: Sequence[np.ndarray], captions: Sequence[str] | None = None, ncols: int = 8, title: str = ""
) -> plt.Figure:
    """A grid of RGB (or grey) uint8 images with optional captions."""
    n = max(len(images), 1)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.5 * ncols, 1.7 * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            img = images[k]
            ax.imshow(img, cmap="gray" if np.ndim(img) == 2 else None)
            if captions is not None:
                ax.set_title(str(captions[k]), fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curve(
    x: Sequence[float], ys: dict[str, Sequence[float]], xlabel: str, ylabel: str, title: str = ""
) -> plt.Figure:
    """Several named series against one x (e.g. accuracy vs frame stride: reproduced and published)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, y in ys.items():
        ax.plot(x, y, marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


HEADLINE_COLORS = {"published": "#4c72b0", "reproduced": "#dd8452"}


def _headline_axis_label(unit: str, direction: str) -> str:
    what = {"%": "accuracy (%)", "years": "mean absolute error (years)"}.get(unit, unit or "score")
    return f"{what}, {'higher' if direction == 'max' else 'lower'} is better"


def plot_headline(headline: pd.DataFrame, title: str = "Published vs reproduced, per task") -> plt.Figure:
    """Notebook 05's headline figure: per task (one row of ``report.headline_table``), the best
    published number beside the reproduced one, as horizontal bars.

    One panel per unit and direction (accuracies in %, age MAE in years: lower is better there), so no
    axis mixes scales. A reproduced value counts only when it comes from the real dataset: a task
    reproduced only on its synthetic stand-in, or not run, gets no reproduced bar but a grey note
    in its place. Each panel's ``patches`` are its bars (published first, then reproduced).
    """
    df = headline.reset_index(drop=True)
    if df.empty:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no published numbers to show", ha="center", va="center")
        return fig
    direction = [metric_spec(m).direction for m in df["metric"]]
    groups = list(dict.fromkeys(zip(df["unit"], direction)))
    sizes = [sum(1 for key in zip(df["unit"], direction) if key == g) for g in groups]
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(8.5, 0.62 * len(df) + 1.1 * len(groups) + 0.6),
        gridspec_kw={"height_ratios": sizes},
        squeeze=False,
    )
    for ax, (unit, way) in zip(axes[:, 0], groups):
        sel = df[[key == (unit, way) for key in zip(df["unit"], direction)]].reset_index(drop=True)
        y = np.arange(len(sel))
        real = sel["reproduced"].notna() & (sel["reproduced_on"] == sel["dataset"])
        pub = sel["published_best"].astype(float)
        rep = sel["reproduced"].where(real).astype(float)
        fmt = "{:.1f}" if unit == "%" else "{:.2f}"
        ax.barh(y - 0.2, pub, height=0.38, color=HEADLINE_COLORS["published"], label="published")
        ax.barh(
            y[real] + 0.2, rep[real], height=0.38, color=HEADLINE_COLORS["reproduced"], label="reproduced"
        )
        top = float(np.nanmax([pub.max(), rep.max() if real.any() else 0.0]))
        for k in range(len(sel)):
            ax.text(pub[k], y[k] - 0.2, " " + fmt.format(pub[k]), va="center", fontsize=8)
            if real[k]:
                ax.text(rep[k], y[k] + 0.2, " " + fmt.format(rep[k]), va="center", fontsize=8)
            else:
                synthetic = pd.notna(sel["reproduced"][k])
                note = "synthetic stand-in only (not comparable)" if synthetic else "not run here"
                ax.text(0.01 * top, y[k] + 0.2, note, va="center", fontsize=8, color="0.4", style="italic")
        labels = [f"{r.task}\n{r.published_by}, {r.split}" for r in sel.itertuples(index=False)]
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_ylim(len(sel) - 0.45, -0.55)
        ax.set_xlim(0, top * 1.15)
        ax.set_xlabel(_headline_axis_label(unit, way), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in HEADLINE_COLORS.values()]
    labels = ["published (best per task)", "reproduced here (real data)"]
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, 0.962))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.945))
    return fig
