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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from .. import labels as L
from .. import metrics as M
from .. import paths as layout
from ..chain import stage
from ..config import Paths, Profile, TrainConfig, get_paths, seed_everything
from ..datasets._common import apply_limit
from ..datasets.sources import DataSource, load_for_profile
from ..faces import PHOTO_SIDE
from ..preprocess import Margin, Preprocess
from .common import (  # noqa: F401 - the shared stage vocabulary, re-exported for notebook 02
    Init,
    InitError,
    Run,
    affectnet_splits,
    build_datasets,
    checkpoint_backbone,
    dataset_framing,
    expression_counts,
    expression_metrics,
    init_stage,
    make_dataset,
    metrics_table,
    new_model,
    record_run,
    served_accuracy,
    seven_class_predictions,
    split_frames,
    train_model,
)


# ========================================================================================= initialisation
def attributes_checkpoint(paths: Paths) -> Path | None:
    """The run folder's ``checkpoints/01_attributes/best.pt`` when notebook 01 has written it, else None."""
    p = paths.checkpoint(layout.ATTRIBUTES)
    return p if p.is_file() else None


# ============================================================================================ evaluation
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
    return pd.DataFrame(
        {
            "class": list(L.EXPRESSIONS_8[:n_classes]),
            "support": np.bincount(y, minlength=n_classes)[:n_classes],
            "recall": M.per_class_recall(y, p, labels=labels),
            "f1": M.f1_per_class(y, p, labels=labels),
        }
    )


def confusion(pred: Mapping[str, np.ndarray], n_classes: int = 8) -> np.ndarray:
    """Confusion matrix (rows true, columns predicted) of the n-class evaluation."""
    y, p = n_class_predictions(pred, n_classes)
    return M.confusion_matrix(y, p, labels=list(range(n_classes)))


def finetune_affectnet(
    cfg: Profile,
    paths: Paths | None = None,
    with_va: bool = False,
    progress: bool = True,
    data: tuple[pd.DataFrame, DataSource, str] | None = None,
    datasets: Mapping[str, Dataset] | None = None,
    section: str = "finetune",
) -> Run:
    """Paper A's fine-tuning on AffectNet-format data: 8 expressions (+ valence/arousal with ``with_va``),
    trained as the profile's ``section`` says (``finetune``; ``finetune_mobilenet``: paper A's MobileNet
    path), started where its ``init_from`` says (:func:`init_stage`); writes ``02_expression[_va]`` /
    ``02_expression_mobilenet``."""
    paths = paths or get_paths()
    tc = getattr(cfg, section)
    if tc is None:
        raise ValueError(f"profile {cfg.name!r} leaves section {section!r} unset")
    folders = stage(section).writes  # (8 classes, 8 classes + valence/arousal) where the stage has both
    if with_va and len(folders) < 2:
        raise ValueError(f"section {section!r} trains no valence/arousal model (with_va=True)")
    name = folders[int(with_va)]
    df, src, dataset = data or affectnet_splits(cfg, paths, progress)
    tasks = {"expression": 8, **({"va": 2} if with_va else {})}
    seed_everything(cfg.seed)
    model = new_model(tc, tasks)
    init = init_stage(model, tc, paths, section)
    print(f"[{name}] {init}")
    frames = split_frames(df)
    if not with_va:  # the expression-only model trains on rows with an expression label
        frames = {k: f[f["expression"].notna()].reset_index(drop=True) for k, f in frames.items()}
    ds = datasets or build_datasets(frames, tc, model.preprocess)
    counts = {"expression": expression_counts(frames["train"], 8)}
    run = train_model(
        model,
        tc,
        ds["train"],
        ds["val"],
        ds["report"],
        name,
        paths.checkpoints / name,
        eval_fn=expression_metrics,
        seed=cfg.seed,
        device=cfg.device,
        init=init,
        class_counts=counts,
        progress=progress,
    )
    run.dataset = dataset
    return run


def model_label(tc: TrainConfig, run: Run, suffix: str = "") -> str:
    """Model name for metrics.csv: backbone, input size, how it was initialised and, where the epoch was
    chosen on the reported set (the authors' rule, ``select_split="report"``), ``_selected_on_report``."""
    starts = {layout.ATTRIBUTES: "utk_init", layout.IDENTITY: "identity_init"}
    init = starts.get(run.init.label, f"{run.init.label}_init")
    chosen = "_selected_on_report" if tc.select_split == "report" else ""
    return f"{tc.backbone}_{tc.image_size}px_{init}{suffix}{chosen}"


# ================================================================================== FER2013 (real data)
def fer2013_config(
    cfg: Profile, which: str = "scratch", overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """TrainConfig of a FER2013 run: the profile's ``fer2013_<which>`` section with ``overrides`` applied."""
    return dataclasses.replace(getattr(cfg, f"fer2013_{which}"), **(overrides or {}))


def fer2013_manifest(
    cfg: Profile, paths: Paths, progress: bool = True
) -> tuple[pd.DataFrame, DataSource] | None:
    """The FER2013 manifest when the real dataset is under FER_DATA_ROOT (capped by real_limit), else None."""
    if paths.real("fer2013") is None:
        return None
    df, _, src = load_for_profile("fer2013", cfg, paths, progress=progress)
    return df, src


def fer2013_datasets(df: pd.DataFrame, preprocess: Preprocess, margin: Margin = 0.0) -> dict[str, Dataset]:
    """train / val (selection) / test (report), decoded faces kept in memory; FER2013's faces are grey,
    so the preprocessing (and hence every checkpoint trained on them) turns faces grey, and its crop
    margin is FER2013's frame around the detector's box (:func:`dataset_framing`): a colour photo's face
    reaches the model as its training faces did."""
    pre = preprocess.replace(colour="grey", margin=margin)
    frames = {s: df[df["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    return {s: make_dataset(f, pre) for s, f in frames.items()}


def train_fer2013(
    cfg: Profile,
    paths: Paths,
    tc: TrainConfig,
    name: str,
    datasets: Mapping[str, Dataset],
    use_pretrained: bool = False,
    progress: bool = True,
    seed: int | None = None,
    section: str = "fer2013_transfer",
) -> Run:
    """One FER2013 model (7 classes, canonical order) of the profile's ``section``: trained on train,
    selected on val, tested on test. ``use_pretrained``: start from the checkpoint ``tc.init_from`` names
    (``01_attributes/best.pt``), else from the weights ``tc`` names."""
    seed = cfg.seed if seed is None else int(seed)
    seed_everything(seed)
    model = new_model(tc, {"expression": 7})
    init = init_stage(model, tc, paths, section, use=use_pretrained)
    print(f"[{name}] {tc.backbone} at {tc.image_size}px, seed {seed}: {init}")
    ds = {
        s: d.with_augment(tc.augment, tc.degrade, tc.degrade_min, tc.grey, tc.jitter) if s == "train" else d
        for s, d in datasets.items()
    }
    counts = {"expression": expression_counts(ds["train"].manifest, 7)}
    run = train_model(
        model,
        tc,
        ds["train"],
        ds["val"],
        ds["test"],
        name,
        paths.checkpoints / name,
        eval_fn=expression_metrics,
        seed=seed,
        device=cfg.device,
        init=init,
        class_counts=counts,
        progress=progress,
        n_classes=7,
    )
    run.metrics = {"accuracy": run.metrics["accuracy_7cls"], "macro_f1": run.metrics["macro_f1_7cls"]}
    run.dataset = "fer2013"
    return run


#: The profile's FER2013 models: which -> whether it starts from the attribute checkpoint.
FER2013_MODELS = {"finetune": True, "scratch": False}


def fer2013_model(
    cfg: Profile,
    which: str,
    paths: Paths | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    data: tuple[pd.DataFrame, DataSource] | None = None,
) -> Run | None:
    """One FER2013 model of the profile: ``"finetune"`` is paper A's chain (section ``fer2013_finetune``,
    started from the UTKFace multi-task checkpoint, itself from ImageNet where the profile says so),
    ``"scratch"`` the from-scratch baseline (``fer2013_scratch``). None without real FER2013."""
    if which not in FER2013_MODELS:
        raise ValueError(f"which must be one of {sorted(FER2013_MODELS)}, got {which!r}")
    paths = paths or get_paths()
    data = data or fer2013_manifest(cfg, paths, progress)
    if data is None:
        print("FER2013 is not under FER_DATA_ROOT: the FER2013 models are skipped")
        return None
    tc = fer2013_config(cfg, which, overrides)
    section = f"fer2013_{which}"
    framing = dataset_framing(data[0], "fer2013", cfg, paths)
    ds = fer2013_datasets(data[0], new_model(tc, {"expression": 7}).preprocess, framing.margin)
    return train_fer2013(
        cfg, paths, tc, stage(section).writes[0], ds, FER2013_MODELS[which], progress, section=section
    )


def fer2013_served(run: Run, df: pd.DataFrame, cfg: Profile, paths: Paths | None = None) -> pd.DataFrame:
    """The FER2013 test faces through ``predict`` (:func:`~fer_lib.stages.common.served_accuracy`) beside
    the trainer's evaluation on the dataset's crops; records ``accuracy_predict``, ``face_found`` and the
    like-for-like pair ``accuracy_predict_found`` / ``accuracy_crops_found`` (what framing costs)."""
    test = df[df["split"] == "test"]
    served = served_accuracy(run.checkpoint, test)
    vals = {
        "accuracy_predict": served["expression_accuracy"],
        "face_found": served["face_found"],
        "accuracy_predict_found": served["expression_accuracy_found"],
        "accuracy_crops_found": served["expression_accuracy_crops_found"],
    }
    record_run(
        dataclasses.replace(run, metrics=vals),
        "finetune",
        "fer2013",
        "test",
        model_label(run.train_cfg, run),
        cfg,
        paths=paths,
        seed=run.seed,
    )
    found = round(served["face_found"] * len(test))
    photo = f"predict: MTCNN on the image enlarged to {PHOTO_SIDE} px, the model's crop"
    return pd.DataFrame(
        [
            {"path": "dataset crops (trainer)", "accuracy": run.metrics["accuracy"], "images": len(test)},
            {"path": photo, "accuracy": served["expression_accuracy"], "images": len(test)},
            {
                "path": "predict, faces found only",
                "accuracy": served["expression_accuracy_found"],
                "images": found,
            },
            {
                "path": "dataset crops of those faces",
                "accuracy": served["expression_accuracy_crops_found"],
                "images": found,
            },
        ]
    )


#: Arms of paper A's thesis at equal budget: the same backbone, size and schedule, started at random,
#: from ImageNet, or from the UTKFace multi-task checkpoint (which itself started from ImageNet when
#: stage 01 did).
TRANSFER_ARMS = ("random_init", "imagenet_init", "utk_init")


def fer2013_transfer(
    cfg: Profile,
    paths: Paths | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    data: tuple[pd.DataFrame, DataSource] | None = None,
) -> dict[str, list[Run]] | None:
    """Paper A's thesis on FER2013: :data:`TRANSFER_ARMS` at equal budget, each trained with
    ``cfg.fer2013_transfer_seeds`` seeds (``cfg.seed``, ``cfg.seed + 1``, ...) on the same
    ``cfg.fer2013_transfer_rows`` training faces. The backbone is that of ``01_attributes/best.pt``, the
    rest ``cfg.fer2013_transfer``; the ImageNet arm runs where that backbone has ImageNet weights
    (:func:`fer_lib.models.get_pretrained`). Returns ``{arm: [run per seed]}``, or None (with
    a printed reason) without real FER2013 or without the checkpoint."""
    from ..models import get_pretrained

    paths = paths or get_paths()
    ckpt = attributes_checkpoint(paths)
    if ckpt is None:
        print(
            f"transfer comparison skipped: {paths.checkpoint(layout.ATTRIBUTES)} is absent "
            "(run `python -m fer_lib pretrain` first)"
        )
        return None
    data = data or fer2013_manifest(cfg, paths, progress)
    if data is None:
        print("transfer comparison skipped: FER2013 is not under FER_DATA_ROOT")
        return None
    backbone, _ = checkpoint_backbone(ckpt)
    base = fer2013_config(
        cfg,
        "transfer",
        {
            "backbone": backbone,
            "pretrained": None,
            "pretrained_file": None,
            "init_from": layout.ATTRIBUTES,
            **(overrides or {}),
        },
    )
    arms = {"random_init": (base, False), "utk_init": (base, True)}
    if get_pretrained(backbone) is not None:
        arms["imagenet_init"] = (dataclasses.replace(base, pretrained="imagenet"), False)
    else:
        print(f"no ImageNet weights registered for {backbone}: the imagenet_init arm is skipped")
    df, framing = data[0], dataset_framing(data[0], "fer2013", cfg, paths)
    if (
        cfg.fer2013_transfer_rows
    ):  # the same subset for every arm: a low-data regime, where a start matters most
        train = apply_limit(df[df["split"] == "train"], cfg.fer2013_transfer_rows, seed=cfg.seed)
        df = pd.concat([train, df[df["split"] != "train"]], ignore_index=True)
    ds = fer2013_datasets(df, new_model(base, {"expression": 7}).preprocess, framing.margin)
    runs: dict[str, list[Run]] = {}
    for k in range(max(1, cfg.fer2013_transfer_seeds)):
        for arm in (a for a in TRANSFER_ARMS if a in arms):
            tc, from_utk = arms[arm]
            run = train_fer2013(
                cfg,
                paths,
                tc,
                layout.fer2013_arm(arm),
                ds,
                use_pretrained=from_utk,
                progress=progress,
                seed=cfg.seed + k,
            )
            runs.setdefault(arm, []).append(run)
    return runs


def transfer_table(runs: Mapping[str, Sequence[Run]]) -> pd.DataFrame:
    """One row per arm: mean and spread (std over seeds; 0 with one seed) of accuracy and macro F1,
    seeds, steps; then the differences between arms (ImageNet - random, UTKFace - ImageNet, UTKFace -
    random) of the mean accuracy and macro F1."""
    rows = []
    for arm, rs in runs.items():
        acc = np.array([r.metrics["accuracy"] for r in rs])
        f1 = np.array([r.metrics["macro_f1"] for r in rs])
        rows.append(
            {
                "model": f"{rs[0].train_cfg.backbone}_{arm}",
                "arm": arm,
                "seeds": len(rs),
                "accuracy": acc.mean(),
                "accuracy_std": acc.std(),
                "macro_f1": f1.mean(),
                "macro_f1_std": f1.std(),
                "steps": int(rs[0].history["global_step"].max()) if len(rs[0].history) else 0,
                "train_seconds": round(float(np.mean([r.train_seconds for r in rs])), 1),
            }
        )
    t = pd.DataFrame(rows)
    mean = t.set_index("arm")
    diffs = []
    for a, b in (
        ("imagenet_init", "random_init"),
        ("utk_init", "imagenet_init"),
        ("utk_init", "random_init"),
    ):
        if a in mean.index and b in mean.index:
            diffs.append(
                {
                    "model": f"difference ({a} - {b})",
                    "accuracy": mean.accuracy[a] - mean.accuracy[b],
                    "macro_f1": mean.macro_f1[a] - mean.macro_f1[b],
                }
            )
    return pd.concat([t, pd.DataFrame(diffs)], ignore_index=True) if diffs else t


def record_transfer(
    runs: Mapping[str, Sequence[Run]], cfg: Profile, paths: Paths | None = None
) -> pd.DataFrame:
    """metrics.csv rows of every arm and seed (stage 'finetune', dataset 'fer2013', split 'test')."""
    return pd.concat(
        [
            record_fer2013(r, cfg, f"{r.train_cfg.backbone}_{arm}", paths, seed=r.seed)
            for arm, rs in runs.items()
            for r in rs
        ],
        ignore_index=True,
    )


# ============================================================================== notebook 02's tables
AFFECTNET_KEYS = (
    "accuracy_8cls",
    "macro_f1_8cls",
    "accuracy_7cls",
    "macro_f1_7cls",
    "valence_ccc",
    "arousal_ccc",
)
RECORDED_AFFECTNET = ("accuracy_8cls", "accuracy_7cls", "macro_f1_8cls", "valence_ccc", "arousal_ccc")


def affectnet_model_name(run: Run) -> str:
    """metrics.csv model name of an AffectNet fine-tuning run, e.g. ``mobilenetv2_100_112px_utk_init_8cls_va``."""
    return model_label(run.train_cfg, run, "_8cls_va" if "va" in run.model.tasks else "_8cls")


def record_affectnet(run: Run, cfg: Profile, paths: Paths | None = None) -> pd.DataFrame:
    """Stage 'finetune' rows (split 'val' = AffectNet's validation.csv, the set the paper reports on);
    accuracies and F1 as fractions in [0, 1]."""
    return record_run(
        run,
        "finetune",
        run.dataset,
        "val",
        affectnet_model_name(run),
        cfg,
        keys=RECORDED_AFFECTNET,
        paths=paths,
    )


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


def record_fer2013(
    run: Run, cfg: Profile, model: str, paths: Paths | None = None, seed: int | None = None
) -> pd.DataFrame:
    """Stage 'finetune', dataset 'fer2013', split 'test': accuracy and macro F1 (fractions) with train_seconds."""
    return record_run(
        run, "finetune", "fer2013", "test", model, cfg, keys=("accuracy", "macro_f1"), paths=paths, seed=seed
    )


def scratch_model_name(run: Run) -> str:
    """e.g. ``fer_cnn_m_48px_scratch_12ep``: what the from-scratch FER2013 model is."""
    epochs = int(run.history["epoch"].max()) if len(run.history) else 0
    return f"{run.train_cfg.backbone}_{run.train_cfg.image_size}px_scratch_{epochs}ep"


# ============================================================================= CK+48 (evaluation only)
#: CK+48 (:mod:`fer_lib.datasets.ckplus48`) is a cross-dataset check of the FER2013 models: evaluated on,
#: never trained, tuned or selected on. Its rows are all split 'test', so the training functions above find
#: no 'train' row to learn from and the trainer refuses its rows for selection.
CKPLUS = "ckplus48"


def ckplus_manifest(cfg: Profile, paths: Paths | None = None) -> tuple[pd.DataFrame, Any] | None:
    """``(manifest, validation report)`` of CK+48 where ``FER_DATA_ROOT/ckplus48`` exists (capped by the
    profile's ``real_limit``), else None with a printed reason (it has no synthetic stand-in)."""
    from ..datasets.sources import absent_real

    paths = paths or get_paths()
    if paths.real(CKPLUS) is None:
        print(f"CK+48 check skipped: {absent_real(CKPLUS, paths)}")
        return None
    df, report, _ = load_for_profile(CKPLUS, cfg, paths, progress=False)
    return df, report


def ckplus_predictions(
    model_or_checkpoint: Any,
    manifest: pd.DataFrame,
    device: str | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """A model's outputs on the CK+48 faces, each image fed whole as an already-cropped face (no
    detection) through the model's own preprocessing (the :class:`Preprocess` its checkpoint stores: the
    FER2013 models' turns faces grey and 48 px). ``model_or_checkpoint``: a :class:`Run` (its saved
    ``best.pt`` where written, else its model), a checkpoint path or dict, or a MultiTaskNet; ``device``
    None evaluates a checkpoint on the CPU and a model where it is (a device given moves it there).
    :func:`fer_lib.training.predict`'s arrays, ``expression_logits`` in canonical order, plus ``scored``
    (the rows the protocol scores: not Contempt) and ``sequence`` where the manifest has it."""
    from torch.utils.data import DataLoader

    from ..config import resolve_device
    from ..datasets.ckplus48 import SCORED
    from ..models import load_model
    from ..training import predict

    source = model_or_checkpoint
    if isinstance(source, Run):
        saved = source.checkpoint is not None and Path(source.checkpoint).is_file()
        source = source.checkpoint if saved else source.model
    model, orders, name = load_model(source)
    if "expression" not in model.tasks or model.tasks["expression"] < 7:
        raise ValueError(
            f"{name}: the CK+48 protocol needs a 7- or 8-class expression head, not {model.tasks}"
        )
    if device is not None:
        model = model.to(resolve_device(device))
    rows = manifest.reset_index(drop=True)
    loader = DataLoader(make_dataset(rows, model.preprocess), batch_size=batch_size, shuffle=False)
    pred = predict(model, loader, progress=progress)
    order = list(orders.get("expression") or L.EXPRESSIONS_8[: model.tasks["expression"]])
    pred["expression_logits"] = L.reorder_columns(pred["expression_logits"], order)
    scored = [float(L.EXPRESSIONS_8.index(c)) for c in SCORED]
    pred["scored"] = rows["expression"].isin(scored).to_numpy() & pred["mask_expression"].astype(bool)
    if "sequence" in rows:
        pred["sequence"] = rows["sequence"].astype(str).to_numpy()
    return pred


def ckplus_scores(pred: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) of the CK+48 protocol: the ``scored`` rows (Contempt never is), predicted by
    the argmax over the 7 canonical classes, so a Neutral prediction (a class CK+48 lacks) is wrong."""
    keep = np.asarray(pred["scored"], dtype=bool)
    y = pred["label_expression"][keep].astype(np.int64)
    return y, pred["expression_logits"][keep, :7].argmax(axis=1)


def ckplus_metrics(pred: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``accuracy`` and ``recall_<class>`` (:func:`fer_lib.metrics.recall_name`) of the 6 scored classes
    under the CK+48 protocol (:func:`ckplus_scores`), fractions."""
    from ..datasets.ckplus48 import SCORED

    y, p = ckplus_scores(pred)
    recall = M.per_class_recall(y, p, labels=range(7))  # all 7: a Neutral prediction stays in the support
    return {
        "accuracy": M.accuracy(y, p),
        **{M.recall_name(c): float(recall[L.EXPRESSIONS_8.index(c)]) for c in SCORED},
    }


def ckplus_table(pred: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per scored CK+48 class: images, sequences (where known: frames of one sequence are
    near-duplicates), recall, and how many of its faces went to each of the 7 predicted classes."""
    from ..datasets.ckplus48 import SCORED

    y, p = ckplus_scores(pred)
    cm = M.confusion_matrix(y, p, labels=range(7))
    seq = np.asarray(pred["sequence"])[np.asarray(pred["scored"], dtype=bool)] if "sequence" in pred else None
    rows = []
    for c in SCORED:
        k = L.EXPRESSIONS_8.index(c)
        row = {"class": c, "images": int(cm[k].sum())}
        if seq is not None:
            row["sequences"] = len(set(seq[y == k]))
        row["recall"] = cm[k, k] / cm[k].sum() if cm[k].sum() else 0.0
        row.update({f"predicted {n}": int(v) for n, v in zip(L.EXPRESSIONS_7, cm[k])})
        rows.append(row)
    return pd.DataFrame(rows)


def record_ckplus(
    metrics: Mapping[str, float],
    model: str,
    cfg: Profile,
    paths: Paths | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """metrics.csv rows of the CK+48 check: stage 'finetune', dataset 'ckplus48', split 'test', under
    ``model``, the name of the model's FER2013 rows (e.g. ``model_label(run.train_cfg, run)``)."""
    from .. import reporting

    paths = paths or get_paths()
    return reporting.record_metrics(
        "finetune",
        CKPLUS,
        "test",
        model,
        metrics,
        profile=cfg.name,
        seed=cfg.seed if seed is None else seed,
        path=paths.metrics_csv,
    )


def ckplus_evaluation(
    runs: Mapping[str, Run], cfg: Profile, paths: Paths | None = None
) -> pd.DataFrame | None:
    """Every FER2013 model of ``runs`` (metrics.csv name -> run) on CK+48 under the protocol (never
    trained, tuned or selected on): the per-class table of each model, and its rows recorded (dataset
    ``ckplus48``). None, with the reason printed, where ``FER_DATA_ROOT/ckplus48`` is absent."""
    ck = ckplus_manifest(cfg, paths)
    if ck is None:
        return None
    tables = []
    for name, run in runs.items():
        pred = ckplus_predictions(run, ck[0])
        record_ckplus(ckplus_metrics(pred), name, cfg, paths, seed=run.seed)
        tables.append(ckplus_table(pred).assign(model=name, accuracy=ckplus_metrics(pred)["accuracy"]))
    return pd.concat(tables, ignore_index=True)
