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

from .. import plots, reporting
from ..config import Paths, get_paths
from ..datasets.ckplus48 import SCORED as CKPLUS_SCORED
from ..metrics import metric_spec, recall_name
from ..paths import ATTRIBUTES, FER2013_FINETUNE
from ..published import published_table
from ..tasks import AGE_MODES

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
    "reproduced_seconds",
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
            "reproduced_seconds": np.nan,
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
            reproduced_seconds=pd.to_numeric(best.get("train_seconds", np.nan), errors="coerce"),
            profile=str(best["profile"]),
            status=status,
        )
        out.append(row)
    return pd.DataFrame(out, columns=COMPARISON_COLUMNS)


# The tasks a reader looks for first, in the order the headline shows them: (dataset, metric) -> label.
HEADLINE_TASKS: dict[tuple[str, str], str] = {
    ("utkface", "age_mae"): "UTKFace age",
    ("utkface", "gender_accuracy"): "UTKFace gender",
    ("utkface", "race_accuracy"): "UTKFace ethnicity",
    ("fer2013", "accuracy"): "FER2013 expression",
    ("affectnet", "accuracy_8cls"): "AffectNet 8 expressions",
    ("affectnet", "accuracy_7cls"): "AffectNet 7 expressions",
    ("afew", "accuracy"): "AFEW video emotion",
    ("vgaf", "accuracy"): "VGAF group emotion",
}
# Who published a number (the ``paper`` column of the published table), in words.
PUBLISHERS = {"A": "paper A", "B": "paper B", "peer": "peer models"}
# How the published side was trained, per publisher: the papers give their full schedule on GPU; the
# peer models are off-the-shelf weights, run here on the same test images.
PUBLISHED_BUDGET = {
    "A": "the paper's full schedule on GPU",
    "B": "the paper's full schedule on GPU",
    "peer": "off-the-shelf weights trained by their authors",
}
# metrics.csv does not record the device; every run of this project so far trained on CPU (README).
TRAINED_ON = "CPU"
# What a reader needs first (the notebook shows these), then where each number comes from.
HEADLINE_SUMMARY = ["task", "published_by", "unit", "published_best", "reproduced", "differs"]
HEADLINE_COLUMNS = [
    *HEADLINE_SUMMARY,
    "published_model",
    "published_models",
    "source",
    "dataset",
    "split",
    "metric",
    "reproduced_on",
    "reproduced_model",
    "reproduced_split",
    "reproduced_seconds",
    "status",
]


def differs(row: pd.Series | dict, trained_on: str = TRAINED_ON) -> str:
    """What differs between a published number's setting and the reproduced one, in plain words:
    data, backbone and training budget, derived from one row of :func:`comparison_table`."""
    published_by = row.get("paper", "")
    published_model = row["model"]
    if not row["reproduced_on"]:
        found = "not found" not in str(row["status"])
        return "data: not run here" + ("" if found else f" ({row['dataset']} not found under FER_DATA_ROOT)")
    if row["reproduced_on"] != row["dataset"]:
        data = f"data: synthetic stand-in for {row['dataset']}, not comparable"
    elif row["reproduced_split"] != str(row["split"]):
        data = f"data: split {row['reproduced_split']} here, {row['split']} published"
    else:
        data = f"data: same split ({row['split']})"
    if row["reproduced_model"] == published_model:
        backbone = f"backbone: same ({published_model})"
    else:
        backbone = f"backbone: {row['reproduced_model']} here, {published_model} published"
    secs = pd.to_numeric(row.get("reproduced_seconds", np.nan), errors="coerce")
    if pd.isna(secs):
        here = "training time not recorded"
    else:
        here = f"{secs / 60:.0f} min on {trained_on}" if secs >= 60 else f"under a minute on {trained_on}"
    theirs = PUBLISHED_BUDGET.get(published_by, "the publisher's own schedule")
    budget = f"budget: {here} here vs {theirs}"
    return "; ".join([data, backbone, budget])


def headline_table(
    comparison: pd.DataFrame,
    tasks: dict[tuple[str, str], str] | None = None,
    trained_on: str = TRAINED_ON,
) -> pd.DataFrame:
    """The comparison folded to one row per (dataset, split, metric) of the headline ``tasks``
    (default :data:`HEADLINE_TASKS`, in that order): the best published number (its model, source,
    and how many published models report the metric) beside the reproduced one, and ``differs``: what
    differs between the two settings (see :func:`differs`)."""
    tasks = HEADLINE_TASKS if tasks is None else tasks
    rows = comparison[~comparison["dataset"].isin(NOT_REPRODUCIBLE_DATASETS)]
    order = {key: k for k, key in enumerate(tasks)}
    rows = rows[[(d, m) in order for d, m in zip(rows["dataset"], rows["metric"])]]
    out = []
    for (dataset, split, metric), g in rows.groupby(["dataset", "split", "metric"], sort=False):
        best = _best(g, metric, "published")
        out.append(
            {
                "task": tasks[(dataset, metric)],
                "unit": best["unit"],
                "published_best": best["published"],
                "reproduced": best["reproduced"],
                "differs": differs(best, trained_on),
                "published_by": PUBLISHERS.get(best["paper"], best["paper"]),
                "published_model": best["model"],
                "published_models": len(g),
                "source": best["source"],
                "dataset": dataset,
                "split": split,
                "metric": metric,
                "reproduced_on": best["reproduced_on"],
                "reproduced_model": best["reproduced_model"],
                "reproduced_split": best["reproduced_split"],
                "reproduced_seconds": best["reproduced_seconds"],
                "status": best["status"],
                "_order": order[(dataset, metric)],
            }
        )
    if not out:
        return pd.DataFrame(columns=HEADLINE_COLUMNS)
    df = pd.DataFrame(out).sort_values("_order", kind="stable")
    return df[HEADLINE_COLUMNS].reset_index(drop=True)


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


#: The real-data bars of the issues: (dataset, split, metric, target). The direction is the metric's
#: (fer_lib.metrics). A target ``(other_metric, offset)`` is relative to the same model's (and seed's)
#: value of ``other_metric``: the predict path's accuracy within 5 points of the trainer's evaluation.
REAL_DATA_BARS: list[tuple[str, str, str, float | tuple[str, float]]] = [
    ("utkface", "balanced_test_2000", "age_mae", 5.0),
    ("utkface", "balanced_test_2000", "gender_accuracy", 0.90),
    ("utkface", "balanced_test_2000", "race_accuracy", 0.80),
    ("utkface", "balanced_test_2000", "race_min_recall", 0.60),
    ("utkface", "balanced_test_2000", "gender_min_recall", 0.85),
    ("fer2013", "test", "accuracy", 0.68),
    ("fer2013", "test", "accuracy_predict", ("accuracy", -0.05)),
    # what framing alone costs: the faces the detector found, through predict vs as the dataset's crops
    ("fer2013", "test", "accuracy_predict_found", ("accuracy_crops_found", -0.05)),
    # CK+48, evaluation only (the FER2013 models on posed faces from elsewhere): accuracy, and no class
    # left behind
    ("ckplus48", "test", "accuracy", 0.80),
    *(("ckplus48", "test", recall_name(c), 0.40) for c in CKPLUS_SCORED),
]


def real_data_table(metrics: pd.DataFrame, profile: str | None = None) -> pd.DataFrame:
    """The real-data bars (:data:`REAL_DATA_BARS`): one row per recorded model (and seed) with its value,
    the target and whether it was met; a bar nothing recorded says "not run"."""
    if profile is not None and len(metrics):
        metrics = metrics[metrics["profile"] == profile]
    rows = []
    for dataset, split, metric, target in REAL_DATA_BARS:
        op = "<=" if metric_spec(metric).direction == "min" else ">="
        here = metrics[(metrics["dataset"] == dataset) & (metrics["split"] == split)]
        sel = here[here["metric"] == metric]
        for r in sel.itertuples(index=False):
            v, goal, text = float(r.value), target, f"{op} {target}"
            if isinstance(target, tuple):
                other, offset = target
                ref = here[(here["metric"] == other) & (here["model"] == r.model) & (here["seed"] == r.seed)]
                goal = float(ref["value"].iloc[-1]) + offset if len(ref) else np.nan
                text = f"{op} {other} {offset:+g} ({goal:.3f})"
            met = bool(v <= goal if op == "<=" else v >= goal) if np.isfinite(goal) else False
            rows.append(
                {
                    "dataset": dataset,
                    "split": split,
                    "metric": metric,
                    "model": r.model,
                    "value": v,
                    "target": text,
                    "met": met,
                    "train_seconds": r.train_seconds,
                    "profile": r.profile,
                    "seed": r.seed,
                    "commit": getattr(r, "git_commit", ""),
                }
            )
        if sel.empty:
            text = f"{op} {target[0]} {target[1]:+g}" if isinstance(target, tuple) else f"{op} {target}"
            rows.append(
                {
                    "dataset": dataset,
                    "split": split,
                    "metric": metric,
                    "model": "",
                    "value": np.nan,
                    "target": text,
                    "met": False,
                    "train_seconds": np.nan,
                    "profile": "not run (needs FER_DATA_ROOT with this dataset)",
                    "seed": np.nan,
                    "commit": "",
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
    """Build and write the tables of notebook 05 and its headline figure (``figures/05_headline.png``);
    returns the tables."""
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
        "05_headline": "Best published number per task beside the reproduced one, and what differs",
        "05_published_vs_reproduced": "Published numbers (with sources) beside the reproduced ones",
        "05_reproduced": f"Every metric recorded under the {cfg.name} profile",
        "05_real_data_bars": "Real-data bars (targets of the issues)",
    }
    for name, df in tables.items():
        reporting.write_table(df, name, paths, title=titles[name])
    fig = plots.plot_headline(tables["05_headline"])
    reporting.save_figure(fig, "05_headline", paths)
    plots.plt.close(fig)
    return tables


# ====================================================================================== published models
#: The models a published run puts under results/models/ (file -> what it is). Sources are the run
#: folder's checkpoints; each gets a model card beside it.
PUBLISHED_MODEL_SOURCES = {
    "expression.pt": {
        "checkpoint": f"{FER2013_FINETUNE}/best.pt",
        # its card's metrics: FER2013's test, and CK+48's (faces from elsewhere, evaluation only)
        "datasets": ("fer2013", "ckplus48"),
        "title": "Facial expression (7 classes), FER2013",
        "data": "FER2013 (train split for training, validation for model selection, test for the numbers "
        "below); the copy used here was contrast-enhanced by its publisher. Terms: the FER2013 challenge "
        "release's (research use).",
        "limits": "FER2013 faces are 48 px, grey and loosely framed, so the model sees every face grey "
        "and shrunk to 48 px (its preprocessing does this to colour photos too); expressions are posed "
        "or web-collected, and 'disgust' is rare in training (436 faces). Accuracy on the "
        "contrast-enhanced copy is not comparable with published FER2013 numbers. On posed faces from "
        "elsewhere (CK+48, the ckplus48 rows above) it does worse than on FER2013, worst on the classes "
        "with the lowest recall there; a face the detector misses (small or partly hidden faces) gets "
        "no prediction at all.",
    },
    "attributes.pt": {
        "checkpoint": f"{ATTRIBUTES}/best.pt",
        "datasets": ("utkface",),
        "title": "Age, gender and ethnicity, UTKFace",
        "data": "UTKFace (23,705 labelled chips: the 2,000 of its balanced test list for the numbers below, "
        "the rest for training and validation). Terms: UTKFace is for non-commercial research only.",
        "limits": "UTKFace's labels are estimates (age, gender as a binary, five coarse ethnicity "
        "groups incl. 'Others'); every face is shrunk to 64 px (the data's lowest resolution), so "
        "fine detail is not used; the balanced test holds many children, for whom gender is hardest. "
        "Framing and expression leak into its answers. A face cropped tighter than UTKFace's chips "
        "(close dataset crops such as CK+ or FER2013 fed as already-cropped faces) has a child's "
        "proportions to it: the tighter the crop, the more adults it reads as under 16 "
        "(`05_attributes_by_input`). In a photo, `predict`'s detector frames the face as in training; an "
        "image that is already a tight crop cannot be widened. Adults in photos unlike UTKFace's can "
        "still be read far younger or older than they are, and which ones changes from one training run "
        "of the recipe to the next (the README's \"Three runs of one recipe\"). UTKFace's young children are "
        "often crying or startled, so adults showing an expression (happy ones included) are sometimes "
        "read as teenagers or children, and angry faces more often as male "
        "(`05_attributes_by_expression`). How a face was stored moves its age too: nearly all of "
        "UTKFace's children are 200 px chips and most of its adults 64 px quality-75 JPEG copies, so "
        "smoothness reads as youth, and the same faces stored as such JPEGs are read with a larger age "
        "error, children older (the `jpeg 75` row of `05_attributes_by_input`). {colour} Do not use it to make decisions about people.",
    },
}


def _frame_words(margin) -> str:
    """How a model card's checkpoint crops a face: the detector's box, or the frame its training set had
    around that box (``Preprocess.margin``)."""
    if isinstance(margin, (int, float)):
        return "the face box (MTCNN's in `predict`" + (
            f", {margin:g} of its size added on each side)" if margin else ", no margin)"
        )
    sides = ", ".join(f"{k} {v:+.0%}" for k, v in zip(("left", "top", "right", "bottom"), margin))
    return f"MTCNN's face box in `predict`, widened to its training faces' frame ({sides} of the box)"


def _colour_words(model_config: dict, pre) -> str:
    """What a photo's colour and exposure do to a model card's answers: nothing to the heads read from the
    greyscale view (``grey_heads``), little to a face whose contrast is standardised."""
    grey = [h for h in model_config.get("grey_heads") or () if h in model_config["tasks"]]
    colour = [f"`{h}`" for h in model_config["tasks"] if h not in grey]
    if grey:
        words = (
            f"It reads {' and '.join(f'`{h}`' for h in grey)} from each face's greyscale view, so a "
            "greyscale copy of a photo moves them only through the box the detector finds in it and the "
            "rounding of the grey levels"
            + (
                f"; {', '.join(colour)} {'sees' if len(colour) == 1 else 'see'} the colours."
                if colour
                else "."
            )
        )
    else:
        words = "A photo's colours move its answers: a greyscale copy can change the gender it gives."
    if pre.contrast == "standardise":
        words += (
            " Every face's contrast is standardised, so exposure moves its answers little, but not never."
        )
    return words


WEIGHT_TYPES = {
    "float16": "float16",
    "mixed": "float16 (large convolutions) and float32 (normalisation, biases, depthwise kernels, heads)",
    "float32": "float32",
}


def _age_target_words(ckpt: dict) -> str:
    """How a bins age head was trained, for its card: nothing for one-hot bins (paper A), else the
    Gaussian's width (``TrainConfig.age_sigma``)."""
    sigma = float(((ckpt.get("config") or {}).get("train") or {}).get("age_sigma") or 0.0)
    if sigma <= 0 or ckpt["model_config"].get("age_mode") == "regression":
        return ""
    return f", trained against a Gaussian of {sigma:g} years around each face's age"


def publish_models(cfg, paths: Paths | None = None, tol: float | None = None) -> pd.DataFrame:
    """Write the run's expression and attribute models to ``results/models/`` (float16 where the outputs
    stay within ``tol``, by default ``HALF_PRECISION_TOL``:
    :func:`fer_lib.serving.half_precision.half_precision_checkpoint`) with a model card each (``.md``:
    training data and terms, input, label order, this run's test metrics, known limits). Models whose
    checkpoint the run did not produce are skipped. The metrics are the rows of the ``model`` name the
    checkpoint was stamped with when its stage recorded them (``metrics_model``). Returns one row per
    published model."""
    from ..models import load_checkpoint
    from ..preprocess import from_checkpoint
    from ..serving.half_precision import HALF_PRECISION_TOL, half_precision_checkpoint
    from ..tasks import default_label_orders

    paths = paths or get_paths()
    out_dir = paths.results / "models"
    metrics = reporting.load_metrics(paths.metrics_csv)
    rows = []
    for name, spec in PUBLISHED_MODEL_SOURCES.items():
        src = paths.checkpoints / spec["checkpoint"]
        if not src.is_file():
            print(f"{name}: {src} is absent (its stage did not run on real data): not published")
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt = load_checkpoint(src)
        mc, pre = ckpt["model_config"], from_checkpoint(ckpt)
        report = half_precision_checkpoint(
            src, out_dir / name, tol=HALF_PRECISION_TOL if tol is None else tol
        )
        orders = {**default_label_orders(mc["tasks"]), **(ckpt.get("label_orders") or {})}
        recorded = ckpt.get("metrics_model")
        if recorded is None:
            print(
                f"{name}: {src} has no 'metrics_model' (the metrics.csv name its stage records it under; "
                "none was recorded since it was written): its card lists no metrics"
            )
        m = metrics[metrics["dataset"].isin(spec["datasets"]) & (metrics["profile"] == cfg.name)]
        m = m[m["model"] == recorded].drop_duplicates(["dataset", "metric"], keep="last")
        lines = [
            f"# {spec['title']}: `{name}`",
            "",
            f"- File: `{name}`, a fer_lib checkpoint with {WEIGHT_TYPES[report['dtype']]} weights ({report['mb']:.1f} MB; "
            f"outputs within {report['max_abs_diff']:.1e} of the float32 model's), from `{spec['checkpoint']}` "
            f"of the `{cfg.name}` profile's published run"
            + (f" at commit `{m['git_commit'].iloc[-1]}`" if len(m) else "")
            + ".",
            f"- Network: `{mc['backbone']}` (ImageNet start, then this project's stages), heads "
            f"{', '.join(f'`{k}` ({v})' for k, v in mc['tasks'].items())}.",
            f"- Input: {_frame_words(pre.margin)} -> shrunk to at most {pre.max_side} px "
            + (f"-> stored as a quality-{pre.jpeg_quality} JPEG and read back " if pre.jpeg_quality else "")
            + f"-> {'grey, ' if pre.colour == 'grey' else ''}resized to {pre.input_size} x {pre.input_size} "
            f"(PIL bilinear) -> "
            + ("each face's luma mean / std set to 127.5 / 64 -> " if pre.contrast == "standardise" else "")
            + f"(x / 255 - {pre.mean[0]:g}) / {pre.std[0]:g}.",
            *[f"- Label order of `{k}`: {', '.join(map(str, v))}." for k, v in orders.items() if k != "age"],
            *(
                [f"- Age: {AGE_MODES[mc.get('age_mode', 'bins')]}{_age_target_words(ckpt)}."]
                if "age" in mc["tasks"]
                else []
            ),
        ]
        if mc.get("grey_heads"):
            lines.append(
                f"- Read from the face's greyscale view (its luma on the three channels, computed inside the "
                f"network): {', '.join(f'`{h}`' for h in mc['grey_heads'])}; the other heads from the face "
                "as it is."
            )
        if mc.get("mirror"):
            lines.append(
                "- Every head reads the mean of its outputs on the face and on its mirror image (a photo and "
                "its mirror image get the same answers)."
            )
        if "gender" in mc["tasks"]:
            lines.append(
                f"- Gender: male where p(male) >= {mc.get('male_threshold', 0.6):.2f} (chosen on validation)."
            )
        lines += [
            f"- Training data: {spec['data']}",
            "",
            "## Test metrics of this run",
            "",
            reporting.to_markdown(m[["model", "dataset", "metric", "value", "split", "seed", "git_commit"]])
            if len(m)
            else "(none recorded)",
            "",
            "## Known limits",
            "",
            spec["limits"].format(colour=_colour_words(mc, pre)),
            "",
            "Use: `python -m fer_lib predict photo.jpg` picks these files up when no local checkpoint "
            'exists; `Recognizer(["results/models/expression.pt", "results/models/attributes.pt"])` '
            "in Python.",
            "",
        ]
        (out_dir / name).with_suffix(".md").write_text("\n".join(lines))
        rows.append({"model": name, **report, "source": spec["checkpoint"]})
    return pd.DataFrame(rows)
