"""Stage 03: paper B's Emotion-GCN (7 expressions + valence + arousal) and its ablations at equal budget.

Two benchmarks, each with the same three arms trained with the same backbone, initialisation, data,
schedule and epochs:

* ``single_task``: expression head only (7 classes);
* ``multitask_linear``: expression (7) + valence/arousal linear heads (paper A's layout);
* ``emotion_gcn``: the GCN-produced classifier/regressor (:class:`~fer_lib.models.emotion_gcn.GCNNet`).

``run_gcn(cfg)``: AffectNet-format data (rows labelled 0..6, Contempt dropped as paper B), ``cfg.gcn_train``,
the label graph from the training rows; selected on the rows carved from training.csv, reported on
validation.csv (metrics split 'val', as the papers).

``run_affwild2(cfg)``: paper B's second benchmark, Aff-Wild2 in the ABAW layout (the real set under
``FER_DATA_ROOT/affwild2`` or the synthetic one written in its format): frames at
``cfg.affwild2_train.image_size`` (112 px; paper B also keeps only frames carrying both labels with
``gcn.affwild2_both_labels``), frames whose EXPR line is -1 or whose VA line is invalid (-5)
left out of that task's loss and score as ABAW does, and counted (:func:`affwild2_frame_counts`);
Train_Set videos for training (a few moved to selection), Validation_Set for the report; ABAW scores
(:func:`abaw_metrics`).

Initialisation (``gcn_train.init_from``, the same for every arm so that the ablation compares heads,
not starts): ``auto`` takes the backbone of the best checkpoint the project has written for the same
backbone, in the order of :func:`fer_lib.chain.auto_start` (the 02 expression + VA model, the 02
expression model, the 01 multi-task attribute model), else ImageNet weights / random as ``gcn_train``
says; paper B's recipe names ImageNet (``init_from="none"``). Only the backbone tensors are loaded: no
arm starts with a trained head.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from torch import nn

from .. import metrics as M
from ..config import PAPER_B_OPTIMISER, Paths, Profile, TrainConfig, get_paths, seed_everything
from ..datasets import ValidationReport
from ..datasets._common import carve_val
from ..datasets.affwild2 import both_labels
from ..datasets.sources import load_for_profile
from ..models.emotion_gcn import (
    GCNNet,
    LabelGraph,
    label_adjacency,
    load_gcn_checkpoint,
    load_label_embeddings,
)
from ..paths import affwild2_arm, gcn_arm
from ..preprocess import for_model
from . import common as C

__all__ = [
    "ABAW_KEYS",
    "PAPER_B_OPTIMISER",
    "ABLATION_KEYS",
    "ARMS",
    "GCNNet",
    "GCNResult",
    "abaw_metrics",
    "ablation_with_source",
    "affwild2_frame_counts",
    "build_graph",
    "dependency_table",
    "load_gcn_checkpoint",
    "output_scales",
    "record_affwild2",
    "record_gcn",
    "run_affwild2",
    "run_gcn",
    "run_without_dependency",
    "va_scale_study",
]

ABLATION_KEYS = ("accuracy_7cls", "macro_f1_7cls", "valence_ccc", "arousal_ccc")
# ABAW: expression_abaw2020 = 0.67 F1 + 0.33 accuracy (ABAW 2020), expression_macro_f1 (later ABAW),
# valence_ccc / arousal_ccc and their mean va_ccc (the VA score).
ABAW_KEYS = (
    "expression_abaw2020",
    "expression_macro_f1",
    "expression_accuracy",
    "valence_ccc",
    "arousal_ccc",
    "va_ccc",
)
ARMS = ("single_task", "multitask_linear", "emotion_gcn")  # the order of the tables


#: The ablation's arms by name: ``(tc, graph, cfg, embeddings) -> untrained model`` (random or ImageNet
#: backbone, as ``tc`` says), each with the profile's number of expression classes.
ARM_BUILDERS = {
    "single_task": lambda tc, graph, cfg, emb: C.new_model(tc, {"expression": cfg.gcn.n_expr}),
    "multitask_linear": lambda tc, graph, cfg, emb: C.new_model(tc, {"expression": cfg.gcn.n_expr, "va": 2}),
    "emotion_gcn": lambda tc, graph, cfg, emb: GCNNet(
        tc.backbone, graph, cfg.gcn, emb, input_size=tc.image_size, pool=tc.pool, **C.start_weights(tc)
    ),
}


def build_arm(
    arm: str, tc: TrainConfig, graph: LabelGraph, cfg: Profile, embeddings: tuple[np.ndarray, str]
) -> nn.Module:
    """The untrained model of one arm of :data:`ARM_BUILDERS`."""
    if arm not in ARM_BUILDERS:
        raise ValueError(f"unknown ablation arm {arm!r}; choose one of {', '.join(ARM_BUILDERS)}")
    return ARM_BUILDERS[arm](tc, graph, cfg, embeddings)


# ========================================================================================== results
@dataclass
class GCNResult:
    """One benchmark: its label graph, node embeddings, data, the trained arms and (Aff-Wild2) the frame
    counts of the ABAW filtering."""

    graph: LabelGraph
    embedding_source: str
    dataset: str
    runs: dict[str, C.Run] = field(default_factory=dict)
    keys: tuple[str, ...] = ABLATION_KEYS
    frame_counts: pd.DataFrame | None = None

    def ablation_table(self) -> pd.DataFrame:
        """One row per arm at equal budget: init, epochs, train seconds and the benchmark's metrics."""
        return C.metrics_table([self.runs[a] for a in ARMS if a in self.runs], self.keys)


def build_graph(df: pd.DataFrame, cfg: Profile) -> LabelGraph:
    """Paper B's label graph from the 'train' rows only (never the selection or report rows)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows without VA / Contempt rows are counted in graph.counts
        return label_adjacency(df, tau=cfg.gcn.tau, p=cfg.gcn.p, n_expr=cfg.gcn.n_expr, split="train")


def _train_arms(
    cfg: Profile,
    paths: Paths,
    tc: TrainConfig,
    frames: Mapping[str, pd.DataFrame],
    res: GCNResult,
    arms: Sequence[str],
    folders: Mapping[str, str],
    eval_fn,
    progress: bool,
    section: str = "gcn_train",
) -> GCNResult:
    """Train ``arms`` on the same frames, start and schedule; checkpoints under ``folders[arm]``. Every
    arm starts where ``section``'s ``init_from`` says, the backbone only: no arm starts with a trained
    head (a linear VA head is not handed one the GCN cannot use)."""
    embeddings = load_label_embeddings(cfg.gcn.embedding, res.graph.names)
    counts = {"expression": C.expression_counts(frames["train"], cfg.gcn.n_expr)}
    datasets = None
    for arm in arms:
        seed_everything(cfg.seed)
        model = build_arm(arm, tc, res.graph, cfg, embeddings)
        init = C.init_stage(model, tc, paths, section, backbone_only=True)
        print(f"[{folders[arm]}] {init}")
        if datasets is None:  # decoded once, shared by the arms (same backbone, same mean/std)
            datasets = C.build_datasets(frames, tc, for_model(model).replace(input_size=tc.image_size))
        run = C.train_model(
            model,
            tc,
            datasets["train"],
            datasets["val"],
            datasets["report"],
            arm,
            paths.checkpoints / folders[arm],
            eval_fn=eval_fn,
            seed=cfg.seed,
            device=cfg.device,
            init=init,
            class_counts=counts,
            progress=progress,
            n_classes=cfg.gcn.n_expr,
        )
        run.dataset = res.dataset
        res.runs[arm] = run
    return res


# ========================================================================================= AffectNet
def run_gcn(
    cfg: Profile,
    paths: Paths | None = None,
    progress: bool = True,
    arms: Sequence[str] = ARMS,
    suffix: str = "",
) -> GCNResult:
    """Label graph + the arms of the AffectNet ablation (module docstring); writes ``03_gcn/best.pt``
    (``suffix`` is appended to the checkpoint folders of a variant, e.g. ``_published``)."""
    paths = paths or get_paths()
    df, _, dataset = C.affectnet_splits(cfg, paths, progress)
    graph = build_graph(df, cfg)
    res = GCNResult(graph, load_label_embeddings(cfg.gcn.embedding, graph.names)[1], dataset)
    frames = C.split_frames(df, need_expression_below=cfg.gcn.n_expr)
    folders = {arm: gcn_arm(arm, suffix) for arm in ARMS}
    return _train_arms(cfg, paths, cfg.gcn_train, frames, res, arms, folders, C.expression_metrics, progress)


def _record_arms(
    res: GCNResult, cfg: Profile, keys: tuple[str, ...], suffix: str, paths: Paths | None
) -> pd.DataFrame:
    """One metrics.csv row per arm and key, stage 'gcn', split 'val' (where the papers report)."""
    frames = [
        C.record_run(
            run,
            "gcn",
            res.dataset,
            "val",
            f"{arm}_{res.runs[arm].train_cfg.backbone}{suffix}",
            cfg,
            keys=keys,
            paths=paths,
        )
        for arm, run in res.runs.items()
    ]
    return pd.concat(frames, ignore_index=True)


def record_gcn(res: GCNResult, cfg: Profile, paths: Paths | None = None) -> pd.DataFrame:
    """metrics.csv rows of stage 'gcn' (split 'val' = AffectNet's validation set, the papers' report set)."""
    return _record_arms(res, cfg, ABLATION_KEYS, "", paths)


def ablation_with_source(res: GCNResult) -> pd.DataFrame:
    """The ablation table with the graph's embedding source and tau / p in a last column (GCN row)."""
    t = res.ablation_table()
    t["note"] = [
        ""
        if m != "emotion_gcn"
        else f"tau={res.graph.tau:g}, p={res.graph.p:g}, {len(res.graph.edges())} edges; "
        f"embeddings: {res.embedding_source.split(':')[0]}; "
        f"lr_scale={res.runs[m].model.gcn.layers[0].lr_scale:g}"
        for m in t["model"]
    ]
    return t


# ========================================================================================= Aff-Wild2
def abaw_metrics(pred: Mapping[str, np.ndarray], n_classes: int = 7) -> dict[str, float]:
    """ABAW scores over the frames that carry each label (invalid frames are masked out by the loader):
    expression accuracy, macro F1 over the classes present (the ABAW evaluation's sklearn default) and
    the ABAW 2020 score ``0.67 F1 + 0.33 accuracy``; CCC of valence and arousal and their mean."""
    out: dict[str, float] = {}
    m = pred["mask_expression"].astype(bool)
    if m.any():
        y = pred["label_expression"][m].astype(np.int64)
        p = pred["expression_logits"][m][:, :n_classes].argmax(axis=1)
        out["expression_abaw2020"] = M.abaw_expr_score_2020(y, p)
        out["expression_macro_f1"] = M.abaw_expr_score(y, p)
        out["expression_accuracy"] = M.accuracy(y, p)
    for dim in ("valence", "arousal"):
        mv = pred.get(f"mask_{dim}", np.zeros(0, bool)).astype(bool)
        if f"{dim}_pred" in pred and mv.sum() >= 2:
            out[f"{dim}_ccc"] = float(M.ccc(pred[f"label_{dim}"][mv], pred[f"{dim}_pred"][mv]))
    if "valence_ccc" in out and "arousal_ccc" in out:
        out["va_ccc"] = (out["valence_ccc"] + out["arousal_ccc"]) / 2
    return out


def affwild2_frame_counts(df: pd.DataFrame, report: ValidationReport) -> pd.DataFrame:
    """Per split: frames kept, frames scored for expression and for VA, and frames left out of one task
    (an invalid EXPR line, -1, or VA line, -5); the 'loader' row counts the annotation lines the loader
    dropped because neither the frame's EXPR nor its VA is valid in that file."""
    rows = []
    for split in ("train", "val", "test"):
        part = df[df["split"] == split]
        has_e, has_v = part["expression"].notna(), part["valence"].notna() & part["arousal"].notna()
        rows.append(
            {
                "split": split,
                "frames": len(part),
                "expression_scored": int(has_e.sum()),
                "va_scored": int(has_v.sum()),
                "expression_invalid": int((~has_e).sum()),
                "va_invalid": int((~has_v).sum()),
            }
        )
    dropped = {reason: n for (action, reason), n in report.counts.items() if action == "dropped"}
    rows.append(
        {
            "split": "loader (all sets)",
            "frames": 0,
            "expression_scored": 0,
            "va_scored": 0,
            "expression_invalid": sum(n for r, n in dropped.items() if r.startswith("EXPR")),
            "va_invalid": sum(n for r, n in dropped.items() if r.startswith("VA")),
        }
    )
    return pd.DataFrame(rows)


def affwild2_splits(
    cfg: Profile, paths: Paths, progress: bool = True
) -> tuple[pd.DataFrame, ValidationReport, str]:
    """Aff-Wild2 frames (train / val videos carved from Train_Set / test = Validation_Set), the loader's
    report and the metrics dataset name."""
    df, report, src = load_for_profile("affwild2", cfg, paths, progress=progress)
    videos = df[df["split"] == "train"].drop_duplicates("video")[["video", "split"]]
    if len(videos) >= 2:  # at least one whole video for selection, never all
        n_val = min(len(videos) - 1, max(1, round(cfg.gcn.affwild2_val_fraction * len(videos))))
        chosen = carve_val(videos, n_val / len(videos), cfg.seed, key="video")
        val_videos = set(chosen.loc[chosen["split"] == "val", "video"])
        df = df.copy()
        df.loc[(df["split"] == "train") & df["video"].isin(val_videos), "split"] = "val"
    return df.reset_index(drop=True), report, ("affwild2" if src.real else "synthetic_affwild2")


def run_affwild2(
    cfg: Profile, paths: Paths | None = None, progress: bool = True, arms: Sequence[str] = ARMS
) -> GCNResult:
    """Paper B's Aff-Wild2 setting (module docstring); checkpoints under ``03_affwild2_<arm>``."""
    paths = paths or get_paths()
    df, report, dataset = affwild2_splits(cfg, paths, progress)
    graph = build_graph(df, cfg)
    res = GCNResult(
        graph,
        load_label_embeddings(cfg.gcn.embedding, graph.names)[1],
        dataset,
        keys=ABAW_KEYS,
        frame_counts=affwild2_frame_counts(df, report),
    )
    frames = {
        k: df[df["split"] == s].reset_index(drop=True)
        for k, s in (("train", "train"), ("val", "val"), ("report", "test"))
    }
    if cfg.gcn.affwild2_both_labels:  # paper B: only frames that carry an expression and valence/arousal
        frames["train"] = both_labels(frames["train"]).reset_index(drop=True)
    folders = {arm: affwild2_arm(arm) for arm in ARMS}
    return _train_arms(
        cfg, paths, cfg.affwild2_train, frames, res, arms, folders, abaw_metrics, progress, "affwild2_train"
    )


def record_affwild2(res: GCNResult, cfg: Profile, paths: Paths | None = None) -> pd.DataFrame:
    """metrics.csv rows of stage 'gcn' on Aff-Wild2 (split 'val' = its Validation_Set, where ABAW and
    paper B report): the ABAW scores."""
    return _record_arms(res, cfg, ABAW_KEYS, f"_{cfg.affwild2_train.image_size}px", paths)


def output_scales(runs: GCNResult | Mapping[str, C.Run]) -> pd.DataFrame:
    """Per run with a VA head, on the report rows: the spread (std) of the valence / arousal outputs
    against their labels', and of the expression logits, beside its accuracy and CCC; the measurement
    behind ``gcn.va_scale`` (a GCN whose VA rows sit on the logits' scale puts out VA many times wider
    than the labels)."""
    rows = []
    for name, run in (runs.runs if isinstance(runs, GCNResult) else runs).items():
        p = run.pred
        if "valence_pred" not in p:
            continue
        row = {"model": name, "logit_std": float(np.std(p["expression_logits"]))}
        for dim in ("valence", "arousal"):
            m = p[f"mask_{dim}"].astype(bool)
            row[f"{dim}_pred_std"] = float(np.std(p[f"{dim}_pred"][m]))
            row[f"{dim}_label_std"] = float(np.std(p[f"label_{dim}"][m]))
        row.update({k: getattr(run, "metrics", {}).get(k, float("nan")) for k in ABLATION_KEYS})
        rows.append(row)
    return pd.DataFrame(rows)


# ================================================================================== label dependency
def run_without_dependency(
    cfg: Profile,
    paths: Paths | None = None,
    progress: bool = True,
    arms: Sequence[str] = ("multitask_linear", "emotion_gcn"),
) -> GCNResult | None:
    """The AffectNet ablation on synthetic data whose valence/arousal do not depend on the expression
    (``data.affectnet_va = "independent"``, written to its own data folder); None with real AffectNet."""
    paths = paths or get_paths()
    if paths.real("affectnet") is not None:
        print("real AffectNet under FER_DATA_ROOT: its labels are what they are, no synthetic variant")
        return None
    variant = dataclasses.replace(paths, data=paths.data / "affectnet_va_independent")
    return run_gcn(
        cfg.override({"data.affectnet_va": "independent"}), variant, progress, arms, suffix="_va_independent"
    )


def dependency_table(results: Mapping[str, GCNResult]) -> pd.DataFrame:
    """One row per (data, arm): the graph's edge count and Happy-Valence Spearman, then the metrics."""
    rows = []
    for label, res in results.items():
        names = list(res.graph.names)
        rho = float(res.graph.corr[names.index("Happy"), names.index("Valence")])
        for arm, run in res.runs.items():
            rows.append(
                {
                    "data": label,
                    "model": arm,
                    "edges": len(res.graph.edges()),
                    "happy_valence_rho": rho,
                    **{k: run.metrics.get(k, float("nan")) for k in ABLATION_KEYS},
                }
            )
    return pd.DataFrame(rows)


# ================================================================================ va_scale by optimiser
def va_scale_study(
    cfg: Profile,
    paths: Paths | None = None,
    scales: Sequence[float] | None = None,
    optimisers: Sequence[str] = ("profile", "paper_b"),
    progress: bool = True,
) -> pd.DataFrame:
    """Does the GCN's valence/arousal need ``gcn.va_scale`` under a given optimiser? For each optimiser
    (``profile``: ``gcn_train`` as it is; ``paper_b``: :data:`PAPER_B_OPTIMISER` for as many epochs as
    ``gcn_train`` runs), the linear head and the GCN at each of ``scales`` (default: the profile's and 1,
    paper B's unscaled rows), trained on the same data from the same start. One row per model: the
    AffectNet ablation metrics, the spread of the VA outputs against the labels', and the GCN's CCC gap
    to the linear head of the same optimiser."""
    paths = paths or get_paths()
    scales = tuple(dict.fromkeys(scales or (cfg.gcn.va_scale, 1.0)))
    rows = []
    for opt in optimisers:
        if opt not in ("profile", "paper_b"):
            raise ValueError(f"optimiser {opt!r}: choose one of profile, paper_b")
        tc = cfg.gcn_train
        ov = {} if opt == "profile" else {f"gcn_train.{k}": v for k, v in PAPER_B_OPTIMISER.items()}
        if opt == "paper_b":
            ov["gcn_train.full_epochs"] = tc.head_epochs + tc.full_epochs  # the same number of epochs
        runs: dict[str, C.Run] = {}
        for i, scale in enumerate(scales):
            c = cfg.override({**ov, "gcn.va_scale": scale})
            arms = ("multitask_linear", "emotion_gcn") if i == 0 else ("emotion_gcn",)
            res = run_gcn(c, paths, progress, arms, suffix=f"_va_study_{opt}_{scale:g}")
            if i == 0:
                runs["multitask_linear"] = res.runs["multitask_linear"]
            runs[f"emotion_gcn (va_scale={scale:g})"] = res.runs["emotion_gcn"]
        table = output_scales(runs).assign(optimiser=opt)
        linear = table.loc[table["model"] == "multitask_linear"].iloc[0]
        table["valence_gap"] = table["valence_ccc"] - linear["valence_ccc"]
        table["arousal_gap"] = table["arousal_ccc"] - linear["arousal_ccc"]
        table["epochs"] = [int(r.history["epoch"].max()) for r in runs.values()]
        rows.append(table)
    out = pd.concat(rows, ignore_index=True)
    first = ["optimiser", "model", "epochs", *ABLATION_KEYS, "valence_gap", "arousal_gap"]
    return out[first + [c for c in out.columns if c not in first]]
