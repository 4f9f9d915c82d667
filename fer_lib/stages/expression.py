"""Stage 02: expression fine-tuning (paper A) on AffectNet-format data, and FER2013 from scratch / transfer.

AffectNet part (``run_affectnet``): an 8-class expression model (canonical order
``labels.EXPRESSIONS_8``) and an 8-class + valence/arousal model, both initialised from the
multi-task attribute checkpoint ``01_attributes/best.pt`` where it exists (random init otherwise),
selected on a validation split carved from ``training.csv`` and reported on ``validation.csv`` (split
'val', as the paper). 7-class numbers drop Contempt as paper A: rows labelled 0..6 only, argmax over
the first 7 logits (:func:`seven_class_predictions`).

FER2013 part (``run_fer2013``): the same trainer on 48x48 grey faces held in memory
(``FaceDataset`` with its decoded-face cache and the light flip + shift augmentation), train split for training, validation for
selection, test for the report; the best model trained from scratch on the CPU, and the transfer
comparison (UTKFace multi-task initialisation vs random, at equal budget and equal backbone).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn
from torch.utils.data import Dataset

from .. import labels as L
from .. import metrics as M
from ..config import Paths, Profile, TrainConfig, get_paths, seed_everything
from ..data import FaceDataset
from ..datasets.sources import DataSource, load_for_profile
from ..models import IMAGENET_MEAN, IMAGENET_STD, MultiTaskNet, init_from_checkpoint
from ..models.checkpoint import load_checkpoint
from ..training import Trainer, predict

ATTRIBUTES_CKPT = Path("01_attributes") / "best.pt"


def make_dataset(manifest: pd.DataFrame, image_size: int, mean: Sequence[float], std: Sequence[float],
                 augment: bool = False, max_cache_bytes: float = 3e9) -> FaceDataset:
    """A :class:`~fer_lib.data.FaceDataset` whose decoded faces stay in memory up to ``max_cache_bytes``,
    with the cheap ``"light"`` augmentation (flip + shift) when ``augment``."""
    return FaceDataset(manifest.reset_index(drop=True), image_size, mean, std,
                       augment="light" if augment else False,
                       cache_bytes=int(max_cache_bytes))


def expression_counts(manifest: pd.DataFrame, n_classes: int) -> list[int]:
    """Per-class counts of the labelled expression rows (canonical order), for paper A's class weights."""
    y = manifest["expression"].dropna().to_numpy(dtype=float).round().astype(np.int64)
    y = y[(y >= 0) & (y < n_classes)]
    return np.bincount(y, minlength=n_classes).tolist()


# ========================================================================================= initialisation
def attributes_checkpoint(paths: Paths) -> Path | None:
    """``results/checkpoints/01_attributes/best.pt`` when notebook 01 has written it, else None."""
    p = paths.checkpoints / ATTRIBUTES_CKPT
    return p if p.is_file() else None


def checkpoint_backbone(path: Path | None) -> tuple[str | None, int | None]:
    """(backbone name, input size) stored in a fer_lib checkpoint's model_config; (None, None) if absent."""
    if path is None:
        return None, None
    ckpt = load_checkpoint(path)
    cfg = ckpt.get("model_config") or {}
    train = (ckpt.get("config") or {}).get("train") or {}
    return cfg.get("backbone"), train.get("image_size") or cfg.get("input_size")


def init_model(model: nn.Module, paths: Paths, use_pretrained: bool = True) -> str:
    """Initialise ``model``'s backbone from ``01_attributes/best.pt`` where possible; returns what was done
    (printed by the caller): the loaded tensor count, or why the model keeps its random init."""
    ckpt = attributes_checkpoint(paths)
    if not use_pretrained:
        return "random init (by request)"
    if ckpt is None:
        return (f"random init: {paths.checkpoints / ATTRIBUTES_CKPT} is absent "
                "(run `python -m fer_lib pretrain` first to fine-tune from the multi-task attribute model)")
    stored, _ = checkpoint_backbone(ckpt)
    own = getattr(model, "backbone_name", None)
    if stored != own:
        return (f"random init: {ckpt} holds backbone {stored!r}, this model uses {own!r} "
                "(set finetune.backbone to the same name to initialise from it)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # the attribute heads are dropped on purpose
        report = init_from_checkpoint(model, ckpt)
    n_backbone = sum(1 for k in unwrap_state_keys(model) if k.startswith("backbone."))
    return f"backbone initialised from {ckpt} ({report.loaded} tensors loaded; backbone has {n_backbone})"


def unwrap_state_keys(model: nn.Module) -> list[str]:
    return [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]


# ============================================================================================ evaluation
def seven_class_predictions(logits: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Paper A's 7-class evaluation of an 8-class model: keep rows labelled 0..6 (drop Contempt = 7)
    and take the argmax over the first 7 logits. Returns (labels, predictions) of the kept rows."""
    logits, y = np.asarray(logits), np.asarray(y).astype(np.int64)
    keep = (y >= 0) & (y < 7)
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool)
    return y[keep], logits[keep, :7].argmax(axis=1)


def expression_metrics(pred: Mapping[str, np.ndarray], n_classes: int = 8) -> dict[str, float]:
    """Headline numbers on an eval set from :func:`fer_lib.training.predict` output (fractions, not %):
    ``accuracy_{n}cls``, ``macro_f1_{n}cls`` and, for an 8-class model, the 7-class versions; with a VA
    head ``valence_ccc`` / ``arousal_ccc`` over every row that has valence / arousal."""
    out: dict[str, float] = {}
    m = pred["mask_expression"].astype(bool)
    y = pred["label_expression"][m].astype(np.int64)
    logits = pred["expression_logits"][m]
    keep = y < n_classes
    p = logits[keep].argmax(axis=1)
    out[f"accuracy_{n_classes}cls"] = M.accuracy(y[keep], p)
    out[f"macro_f1_{n_classes}cls"] = M.macro_f1(y[keep], p, labels=list(range(n_classes)))
    if n_classes == 8:
        y7, p7 = seven_class_predictions(logits, y)
        out["accuracy_7cls"] = M.accuracy(y7, p7)
        out["macro_f1_7cls"] = M.macro_f1(y7, p7, labels=list(range(7)))
    for dim in ("valence", "arousal"):
        if f"{dim}_pred" in pred:
            mv = pred[f"mask_{dim}"].astype(bool)
            if mv.sum() >= 2:
                out[f"{dim}_ccc"] = float(M.ccc(pred[f"label_{dim}"][mv], pred[f"{dim}_pred"][mv]))
    return out


def n_class_predictions(pred: Mapping[str, np.ndarray], n_classes: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) of the n-class evaluation of the labelled rows: rows labelled below
    ``n_classes``, argmax over the first ``n_classes`` logits (paper A's 7 of 8 drops Contempt)."""
    m = pred["mask_expression"].astype(bool)
    y = pred["label_expression"][m].astype(np.int64)
    logits = pred["expression_logits"][m]
    if n_classes == 7 and logits.shape[1] > 7:
        return seven_class_predictions(logits, y)
    keep = y < n_classes
    return y[keep], logits[keep, :n_classes].argmax(axis=1)


def per_class_table(pred: Mapping[str, np.ndarray], n_classes: int = 8) -> pd.DataFrame:
    """Recall and F1 per class (canonical names) with the class support, for the n-class evaluation."""
    y, p = n_class_predictions(pred, n_classes)
    labels = list(range(n_classes))
    return pd.DataFrame({"class": list(L.EXPRESSIONS_8[:n_classes]),
                         "support": np.bincount(y, minlength=n_classes)[:n_classes],
                         "recall": M.per_class_recall(y, p, labels=labels),
                         "f1": M.f1_per_class(y, p, labels=labels)})


def confusion(pred: Mapping[str, np.ndarray], n_classes: int = 8) -> np.ndarray:
    """Confusion matrix (rows true, columns predicted) of the n-class evaluation."""
    y, p = n_class_predictions(pred, n_classes)
    return M.confusion_matrix(y, p, labels=list(range(n_classes)))


# ============================================================================================== training
@dataclass
class Run:
    """One trained model: what it is, how it was initialised, its history and its eval predictions."""

    name: str
    model: nn.Module
    train_cfg: TrainConfig
    init_note: str
    history: pd.DataFrame
    train_seconds: float
    pred: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    dataset: str = ""


def train_model(model: nn.Module, tc: TrainConfig, train: Dataset, val: Dataset, test: Dataset | None,
                name: str, out_dir: Path | None, *, seed: int = 0, device: str = "auto", init_note: str = "",
                class_counts: Mapping[str, Sequence[int]] | None = None, progress: bool = True,
                eval_fn=expression_metrics, n_classes: int | None = None) -> Run:
    """Train with the project's :class:`~fer_lib.training.Trainer` (selection on ``val``), reload
    ``best.pt`` when written, predict on ``test`` and compute ``eval_fn`` metrics there."""
    seed_everything(seed)
    trainer = Trainer(model, tc, device=device, out_dir=out_dir, seed=seed, class_counts=class_counts,
                      progress=progress, run_config={"name": name, "init": init_note})
    history = trainer.fit(train, val)
    best = None if out_dir is None else Path(out_dir) / "best.pt"
    if best is not None and best.is_file():
        model.load_state_dict(load_checkpoint(best)["state_dict"])
    run = Run(name, model, tc, init_note, history, trainer.train_seconds, checkpoint=best)
    if test is not None:
        from torch.utils.data import DataLoader

        loader = DataLoader(test, batch_size=max(tc.batch_size, 128), shuffle=False)
        run.pred = predict(model, loader, device=trainer.device, progress=False)
        n = n_classes or model.tasks.get("expression", 8)
        run.metrics = eval_fn(run.pred, n)
    return run


def affectnet_splits(cfg: Profile, paths: Paths, progress: bool = True
                     ) -> tuple[pd.DataFrame, DataSource, str]:
    """AffectNet-format manifest of the profile, its source, and the metrics dataset name."""
    df, _, src = load_for_profile("affectnet", cfg, paths, progress=progress)
    return df, src, ("affectnet" if src.real else "synthetic_affectnet")


def split_frames(df: pd.DataFrame, need_expression_below: int | None = None) -> dict[str, pd.DataFrame]:
    """train / val (carved from training.csv: selection) / report (validation.csv, loader split 'test')."""
    out = {}
    for key, split in (("train", "train"), ("val", "val"), ("report", "test")):
        part = df[df["split"] == split]
        if need_expression_below is not None:
            e = part["expression"]
            part = part[e.notna() & (e < need_expression_below)]
        out[key] = part.reset_index(drop=True)
    return out


def build_datasets(frames: Mapping[str, pd.DataFrame], tc: TrainConfig, mean, std) -> dict[str, Dataset]:
    """Decoded datasets of train (augmented as ``tc.augment``), val and report, sharing nothing mutable."""
    return {k: make_dataset(f, tc.image_size, mean, std, augment=(k == "train" and tc.augment))
            for k, f in frames.items()}


def finetune_affectnet(cfg: Profile, paths: Paths | None = None, with_va: bool = False, progress: bool = True,
                       data: tuple[pd.DataFrame, DataSource, str] | None = None,
                       datasets: Mapping[str, Dataset] | None = None) -> Run:
    """Paper A's fine-tuning on AffectNet-format data: 8 expressions (+ valence/arousal with ``with_va``),
    backbone from ``01_attributes/best.pt`` when present; writes ``02_expression[_va]/best.pt``."""
    paths = paths or get_paths()
    tc = cfg.finetune
    df, src, dataset = data or affectnet_splits(cfg, paths, progress)
    tasks = {"expression": 8, **({"va": 2} if with_va else {})}
    seed_everything(cfg.seed)
    model = MultiTaskNet(tc.backbone, tasks, verbose=False)
    note = init_model(model, paths)
    print(f"[{'02_expression_va' if with_va else '02_expression'}] {note}")
    frames = split_frames(df)
    if not with_va:   # the expression-only model trains on rows with an expression label
        frames = {k: f[f["expression"].notna()].reset_index(drop=True) for k, f in frames.items()}
    ds = datasets or build_datasets(frames, tc, model.mean, model.std)
    name = "02_expression_va" if with_va else "02_expression"
    counts = {"expression": expression_counts(frames["train"], 8)}
    run = train_model(model, tc, ds["train"], ds["val"], ds["report"], name, paths.checkpoints / name,
                      seed=cfg.seed, device=cfg.device, init_note=note, class_counts=counts, progress=progress)
    run.dataset = dataset
    return run


def model_label(tc: TrainConfig, run: Run, suffix: str = "") -> str:
    """Model name for metrics.csv: backbone, input size and how it was initialised."""
    init = "utk_init" if "initialised from" in run.init_note else "random_init"
    return f"{tc.backbone}_{tc.image_size}px_{init}{suffix}"


def record_run(run: Run, stage: str, dataset: str, split: str, model: str, cfg: Profile,
               keys: Sequence[str] | None = None, paths: Paths | None = None) -> pd.DataFrame:
    """Write the run's metrics (all, or ``keys``) to metrics.csv with its training time."""
    from .. import reporting

    vals = {k: v for k, v in run.metrics.items() if keys is None or k in keys}
    return reporting.record_metrics(stage, dataset, split, model, vals, profile=cfg.name, seed=cfg.seed,
                                    train_seconds=run.train_seconds,
                                    path=None if paths is None else paths.metrics_csv)


def metrics_table(runs: Sequence[Run], keys: Sequence[str]) -> pd.DataFrame:
    """One row per run: model, init, epochs run, train seconds and the requested metrics."""
    rows = []
    for r in runs:
        row = {"model": r.name, "backbone": r.train_cfg.backbone, "image_size": r.train_cfg.image_size,
               "init": "01_attributes" if "initialised from" in r.init_note else "random",
               "epochs": int(r.history["epoch"].max()) if len(r.history) else 0,
               "train_seconds": round(r.train_seconds, 1)}
        row.update({k: r.metrics.get(k, float("nan")) for k in keys})
        rows.append(row)
    return pd.DataFrame(rows)


# ================================================================================== FER2013 (real data)
# Training values of the FER2013 runs, per profile (the profile's ``finetune`` section is paper A's
# AffectNet fine-tuning; these are TrainConfig overrides on top of it). ``scratch``: the best model
# trained from scratch on the CPU (the real-data bar); ``transfer``: both arms of the UTKFace-init vs
# random-init comparison (backbone and image size are taken from 01_attributes/best.pt).
FER2013_TRAIN: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "scratch": dict(backbone="fer_cnn_s", image_size=48, batch_size=64, head_epochs=0, full_epochs=2,
                        lr_full=2e-3, optimizer="adamw", weight_decay=1e-4, augment=True, class_weights=False,
                        channels_last=False, select_metric="expression_accuracy", max_train_seconds=20.0),
        # equal budget = equal epochs and steps; no time limit that could stop one arm earlier
        "transfer": dict(batch_size=64, head_epochs=0, full_epochs=1, lr_full=1e-3, optimizer="adamw",
                         weight_decay=1e-4, augment=True, class_weights=False, channels_last=False,
                         select_metric="expression_accuracy", max_train_seconds=None),
    },
    "default": {
        # measured: 10 epochs = 25 min on the shared 2-core CPU (76 s per epoch when it is not shared)
        "scratch": dict(backbone="fer_cnn_s", image_size=48, batch_size=64, head_epochs=0, full_epochs=10,
                        lr_full=2e-3, optimizer="adamw", weight_decay=1e-4, augment=True, class_weights=False,
                        label_smoothing=0.1, channels_last=False, select_metric="expression_accuracy",
                        max_train_seconds=2700.0),
        # equal budget = the same epochs (steps) for both arms, the scratch recipe otherwise
        "transfer": dict(batch_size=64, head_epochs=0, full_epochs=2, lr_full=2e-3, optimizer="adamw",
                         weight_decay=1e-4, augment=True, class_weights=False, label_smoothing=0.1,
                         channels_last=False, select_metric="expression_accuracy", max_train_seconds=None),
    },
}
FER2013_TRAIN["paper"] = {k: {**v, "max_train_seconds": None} for k, v in FER2013_TRAIN["default"].items()}


def fer2013_config(cfg: Profile, which: str = "scratch", overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """TrainConfig of a FER2013 run: ``cfg.finetune`` with :data:`FER2013_TRAIN` and ``overrides`` applied."""
    values = {**FER2013_TRAIN.get(cfg.name, FER2013_TRAIN["default"])[which], **(overrides or {})}
    return dataclasses.replace(cfg.finetune, **values)


def fer2013_manifest(cfg: Profile, paths: Paths, progress: bool = True) -> tuple[pd.DataFrame, DataSource] | None:
    """The FER2013 manifest when the real dataset is under FER_DATA_ROOT (capped by real_limit), else None."""
    if paths.real("fer2013") is None:
        return None
    df, _, src = load_for_profile("fer2013", cfg, paths, progress=progress)
    return df, src


def fer2013_datasets(df: pd.DataFrame, image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict[str, Dataset]:
    """train (augmented: flip + shift) / val (selection) / test (report), decoded faces kept in memory."""
    frames = {s: df[df["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    return {s: make_dataset(f, image_size, mean, std, augment=(s == "train"))
            for s, f in frames.items()}


def train_fer2013(cfg: Profile, paths: Paths, tc: TrainConfig, name: str, datasets: Mapping[str, Dataset],
                  use_pretrained: bool = False, progress: bool = True) -> Run:
    """One FER2013 model (7 classes, canonical order): trained on train, selected on val, tested on test."""
    seed_everything(cfg.seed)
    model = MultiTaskNet(tc.backbone, {"expression": 7}, verbose=False)
    note = init_model(model, paths, use_pretrained=use_pretrained)
    print(f"[{name}] {tc.backbone} at {tc.image_size}px: {note}")
    ds = {s: d.with_light_augment(s == "train" and tc.augment) for s, d in datasets.items()}
    counts = {"expression": expression_counts(ds["train"].manifest, 7)}
    run = train_model(model, tc, ds["train"], ds["val"], ds["test"], name, paths.checkpoints / name,
                      seed=cfg.seed, device=cfg.device, init_note=note, class_counts=counts, progress=progress,
                      n_classes=7)
    run.metrics = {"accuracy": run.metrics["accuracy_7cls"], "macro_f1": run.metrics["macro_f1_7cls"]}
    run.dataset = "fer2013"
    return run


def fer2013_scratch(cfg: Profile, paths: Paths | None = None, overrides: Mapping[str, Any] | None = None,
                    progress: bool = True, data: tuple[pd.DataFrame, DataSource] | None = None) -> Run | None:
    """The real-data bar: the FER2013 model trained from scratch on this machine (None without real data)."""
    paths = paths or get_paths()
    data = data or fer2013_manifest(cfg, paths, progress)
    if data is None:
        print("FER2013 is not under FER_DATA_ROOT: the real-data bar is skipped")
        return None
    tc = fer2013_config(cfg, "scratch", overrides)
    ds = fer2013_datasets(data[0], tc.image_size)
    return train_fer2013(cfg, paths, tc, "02_fer2013_scratch", ds, use_pretrained=False, progress=progress)


def fer2013_transfer(cfg: Profile, paths: Paths | None = None, overrides: Mapping[str, Any] | None = None,
                     progress: bool = True, data: tuple[pd.DataFrame, DataSource] | None = None
                     ) -> dict[str, Run] | None:
    """Paper A's thesis on FER2013: the same backbone and budget initialised from the UTKFace multi-task
    checkpoint (01_attributes/best.pt) vs at random. Backbone and image size come from that checkpoint.
    None (with a printed reason) without real FER2013 or without the checkpoint."""
    paths = paths or get_paths()
    ckpt = attributes_checkpoint(paths)
    if ckpt is None:
        print(f"transfer comparison skipped: {paths.checkpoints / ATTRIBUTES_CKPT} is absent "
              "(run `python -m fer_lib pretrain` first)")
        return None
    data = data or fer2013_manifest(cfg, paths, progress)
    if data is None:
        print("transfer comparison skipped: FER2013 is not under FER_DATA_ROOT")
        return None
    backbone, size = checkpoint_backbone(ckpt)
    tc = fer2013_config(cfg, "transfer", {"backbone": backbone, "image_size": int(size), **(overrides or {})})
    probe = MultiTaskNet(backbone, {"expression": 7}, verbose=False)
    ds = fer2013_datasets(data[0], tc.image_size, probe.mean, probe.std)
    runs = {}
    for init in ("utk_init", "random_init"):
        runs[init] = train_fer2013(cfg, paths, tc, f"02_fer2013_{init}", ds, use_pretrained=(init == "utk_init"),
                                   progress=progress)
    return runs


def transfer_table(runs: Mapping[str, Run]) -> pd.DataFrame:
    """Both arms side by side, plus the difference (UTKFace init - random init)."""
    t = metrics_table(list(runs.values()), ("accuracy", "macro_f1"))
    t["model"] = [f"{r.train_cfg.backbone}_{k}" for k, r in runs.items()]
    t["steps"] = [int(r.history["global_step"].max()) if len(r.history) else 0 for r in runs.values()]
    if {"utk_init", "random_init"} <= set(runs):
        a, b = runs["utk_init"].metrics, runs["random_init"].metrics
        diff = {"model": "difference (utk - random)", "accuracy": a["accuracy"] - b["accuracy"],
                "macro_f1": a["macro_f1"] - b["macro_f1"]}
        t = pd.concat([t, pd.DataFrame([diff])], ignore_index=True)
    return t


# ============================================================================== notebook 02's tables
AFFECTNET_KEYS = ("accuracy_8cls", "macro_f1_8cls", "accuracy_7cls", "macro_f1_7cls", "valence_ccc", "arousal_ccc")
RECORDED_AFFECTNET = ("accuracy_8cls", "accuracy_7cls", "macro_f1_8cls", "valence_ccc", "arousal_ccc")


def affectnet_model_name(run: Run) -> str:
    """metrics.csv model name of an AffectNet fine-tuning run, e.g. ``mobilenetv2_100_112px_utk_init_8cls_va``."""
    return model_label(run.train_cfg, run, "_8cls_va" if "va" in run.model.tasks else "_8cls")


def record_affectnet(run: Run, cfg: Profile, paths: Paths | None = None) -> pd.DataFrame:
    """Stage 'finetune' rows (split 'val' = AffectNet's validation.csv, the set the paper reports on);
    accuracies and F1 as fractions in [0, 1]."""
    return record_run(run, "finetune", run.dataset, "val", affectnet_model_name(run), cfg,
                      keys=RECORDED_AFFECTNET, paths=paths)


def per_class_recall_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Recall per class of each run, 8-class and 7-class (Contempt dropped) evaluations side by side."""
    out = pd.DataFrame({"class": list(L.EXPRESSIONS_8)})
    for r in runs:
        for n in (8, 7):
            t = per_class_table(r.pred, n).set_index("class")
            out[f"{r.name} ({n} cls)"] = out["class"].map(t["recall"])
    support = per_class_table(runs[0].pred, 8).set_index("class")["support"]
    out.insert(1, "support", out["class"].map(support))
    return out


def record_fer2013(run: Run, cfg: Profile, model: str, paths: Paths | None = None) -> pd.DataFrame:
    """Stage 'finetune', dataset 'fer2013', split 'test': accuracy and macro F1 (fractions) with train_seconds."""
    return record_run(run, "finetune", "fer2013", "test", model, cfg, keys=("accuracy", "macro_f1"), paths=paths)


def scratch_model_name(run: Run) -> str:
    """e.g. ``fer_cnn_m_48px_scratch_12ep``: what the from-scratch FER2013 model is."""
    epochs = int(run.history["epoch"].max()) if len(run.history) else 0
    return f"{run.train_cfg.backbone}_{run.train_cfg.image_size}px_scratch_{epochs}ep"
