"""What the training stages share: building a model from its ``TrainConfig``, the one initialisation
rule, face datasets, training with the :class:`~fer_lib.training.Trainer`, and recording results.

Initialisation rule (every stage, :func:`init_stage`): a model starts from its ``TrainConfig``
(ImageNet weights where ``pretrained`` / ``pretrained_file`` says so, else random); then, where
``init_from`` names a previous stage's checkpoint (``auto``: the stage's own candidates in
:mod:`fer_lib.chain`) and that checkpoint holds the same backbone, the backbone is loaded from it. With
``strict_init`` (the paper profile) a missing or mismatched source is an :class:`InitError`. What
happened is an :class:`Init` record (data, not a sentence), which names the model and fills tables.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn
from torch.utils.data import Dataset

from .. import metrics as M
from ..chain import candidates
from ..config import Paths, Profile, TrainConfig, get_paths, seed_everything
from ..data import FaceDataset
from ..datasets.sources import DataSource, load_for_profile
from ..models import MultiTaskNet, init_from_checkpoint, load_checkpoint
from ..models.checkpoint import load_state_dict_adapted
from ..models.pretrained import normalise_choice
from ..preprocess import Preprocess, from_checkpoint
from ..training import Trainer, predict

INIT_KINDS = ("checkpoint", "pretrained", "random")
SELECT_SPLITS = ("val", "report")


class InitError(ValueError):
    """A stage cannot start where its profile says (``strict_init``): names the stage, the expected
    source and how to provide it."""


@dataclass(frozen=True)
class Init:
    """How a model's backbone was initialised.

    ``kind``: ``"checkpoint"`` (a previous stage's ``source`` checkpoint, ``tensors`` loaded),
    ``"pretrained"`` (ImageNet / a weights file named by ``source``) or ``"random"``; ``reason`` says
    why a named checkpoint was not used.
    """

    kind: str
    source: str | None = None
    tensors: int = 0
    reason: str = ""

    def __post_init__(self):
        if self.kind not in INIT_KINDS:
            raise ValueError(f"Init kind must be one of {INIT_KINDS}, got {self.kind!r}")

    @property
    def label(self) -> str:
        """Short name for tables: the stage folder of the checkpoint (``01_attributes``), else the kind."""
        return Path(self.source).parent.name if self.kind == "checkpoint" else self.kind

    def __str__(self) -> str:
        if self.kind == "checkpoint":
            return f"backbone initialised from {self.source} ({self.tensors} tensors loaded)"
        what = f"pretrained weights ({self.source})" if self.kind == "pretrained" else "random init"
        return what + (f": {self.reason}" if self.reason else "")


def start_weights(tc: TrainConfig) -> dict[str, str | None]:
    """The ``pretrained`` / ``pretrained_file`` a model of ``tc`` is built with (none for init_from=random)."""
    if tc.init_from == "random":
        return {"pretrained": None, "pretrained_file": None}
    return {"pretrained": normalise_choice(tc.pretrained), "pretrained_file": tc.pretrained_file or None}


def start_init(tc: TrainConfig) -> Init:
    """The initialisation a model built from ``tc`` has before any checkpoint is loaded."""
    if tc.init_from == "random":
        return Init("random", reason="by request (init_from=random)")
    w = start_weights(tc)
    source = w["pretrained_file"] or w["pretrained"]  # the file, where one is given, is the actual source
    return Init("pretrained", str(source)) if source else Init("random")


def new_model(tc: TrainConfig, tasks: Mapping[str, int], **kwargs) -> MultiTaskNet:
    """A :class:`MultiTaskNet` of ``tc.backbone`` with ``tasks``, at ``tc.image_size`` (faces limited to
    ``tc.max_face_side``), pooled and headed as ``tc`` says, with the weights ``tc`` names
    (``pretrained`` / ``pretrained_file``; random otherwise)."""
    model = MultiTaskNet(
        tc.backbone,
        dict(tasks),
        input_size=tc.image_size,
        pool=tc.pool,
        head_on=tc.head_on,
        age_mode=tc.age_mode,
        grey_heads=tc.grey_heads,
        mirror=tc.mirror,
        verbose=False,
        **start_weights(tc),
        **kwargs,
    )
    model.preprocess = model.preprocess.replace(
        max_side=tc.max_face_side, contrast=tc.contrast, jpeg_quality=tc.face_jpeg_quality
    )
    return model


def find_start(tc: TrainConfig, paths: Paths, section: str, use: bool = True) -> tuple[Path | None, str]:
    """The checkpoint ``section``'s backbone starts from under ``tc.init_from`` (the first candidate that
    exists and holds ``tc.backbone``), or ``(None, why)``. With ``tc.strict_init`` a named source that is
    absent or holds another backbone raises :class:`InitError` (never a silent fallback); ``use=False``
    (a study's arm that asks for no checkpoint) returns ``(None, "by request")``."""
    if not use:
        return None, "by request"
    if tc.init_from in ("none", "random"):
        return None, f"by request ({section}.init_from={tc.init_from})"
    names = candidates(tc, section)
    why = []
    for name in names:
        path = paths.checkpoint(name)
        if not path.is_file():
            why.append(f"{path} is absent")
            continue
        stored = checkpoint_backbone(path)[0]
        if stored == tc.backbone:
            return path, ""
        why.append(f"{path} holds backbone {stored!r}, not {tc.backbone!r}")
    reason = "; ".join(why) or "the stage has no previous checkpoint"
    if tc.strict_init and names:
        raise InitError(
            f"[{section}] must start from {' or '.join(names)} with backbone {tc.backbone!r}, but {reason}. "
            f"Run the stage that writes it first (`python -m fer_lib profile --profile ...` prints the chain), "
            f"or name another start: {section}.init_from=none (the pretrained weights only) or random"
        )
    return None, reason


def init_stage(
    model: nn.Module,
    tc: TrainConfig,
    paths: Paths,
    section: str,
    use: bool = True,
    backbone_only: bool = False,
) -> Init:
    """Start ``model`` where ``tc`` says (the one initialisation rule of every stage): the checkpoint of
    :func:`find_start` when there is one (heads of other shapes dropped; ``backbone_only`` keeps every
    head at its initialisation), else the start the model was built with (:func:`start_init`). With
    ``tc.strict_init``, a start that would be random without ``init_from=random`` is an InitError."""
    start = start_init(tc)
    path, reason = find_start(tc, paths, section, use)
    if path is None:
        if tc.strict_init and use and start.kind == "random" and tc.init_from != "random":
            raise InitError(
                f"[{section}] would start from random weights: name its start with {section}.pretrained "
                f"(timm-hub online, or imagenet with {section}.pretrained_file=PATH offline), "
                f"{section}.init_from=<a checkpoint folder>, or ask for it with {section}.init_from=random"
            )
        return Init(start.kind, start.source, reason=reason)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the previous stage's heads are dropped on purpose
        if backbone_only:
            state = {
                k: v for k, v in load_checkpoint(path)["state_dict"].items() if k.startswith("backbone.")
            }
            report = load_state_dict_adapted(model, state, str(path))
        else:
            report = init_from_checkpoint(model, path)
    return Init("checkpoint", str(path), tensors=report.loaded)


def checkpoint_backbone(path: Path | None) -> tuple[str | None, int | None]:
    """(backbone name, trained input size) of a fer_lib checkpoint; (None, None) if absent."""
    if path is None:
        return None, None
    ckpt = load_checkpoint(path)
    return (ckpt.get("model_config") or {}).get("backbone"), from_checkpoint(ckpt).input_size


# ============================================================================================== data
def make_dataset(
    manifest: pd.DataFrame,
    preprocess: Preprocess,
    tc: TrainConfig | None = None,
    max_cache_bytes: float = 3e9,
    align: str = "box",
    **kwargs,
) -> FaceDataset:
    """A :class:`~fer_lib.data.FaceDataset` whose decoded faces stay in memory up to ``max_cache_bytes``;
    a training set (``tc`` given) gets ``tc``'s augmentation, resolution degradation and photometric
    augmentation; ``align``
    frames the faces (``"eyes"``: levelled on the rows' eye centres, paper B)."""
    train = (
        {}
        if tc is None
        else {
            "augment": tc.augment,
            "zoom_min": tc.zoom_min,
            "zoom_skip": tc.zoom_skip,
            "zoom_skip_below": tc.zoom_skip_below,
            "degrade": tc.degrade,
            "degrade_min": tc.degrade_min,
            "grey": tc.grey,
            "jitter": tc.jitter,
        }
    )
    return FaceDataset(
        manifest.reset_index(drop=True),
        preprocess,
        cache_bytes=int(max_cache_bytes),
        align=align,
        **train,
        **kwargs,
    )


def expression_counts(manifest: pd.DataFrame, n_classes: int) -> list[int]:
    """Per-class counts of the labelled expression rows (canonical order), for paper A's class weights."""
    y = manifest["expression"].dropna().to_numpy(dtype=float).round().astype(np.int64)
    y = y[(y >= 0) & (y < n_classes)]
    return np.bincount(y, minlength=n_classes).tolist()


def affectnet_splits(
    cfg: Profile, paths: Paths, progress: bool = True
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


def build_datasets(
    frames: Mapping[str, pd.DataFrame], tc: TrainConfig, preprocess: Preprocess
) -> dict[str, Dataset]:
    """Decoded datasets of train (augmented as ``tc.augment``), val and report, sharing nothing mutable;
    every split framed alike (``tc.align``), so selection and report see the faces training saw."""
    return {
        k: make_dataset(f, preprocess, tc if k == "train" else None, align=tc.align)
        for k, f in frames.items()
    }


# ======================================================================================== evaluation
def seven_class_predictions(
    logits: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None
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


# ========================================================================================== training
@dataclass
class Run:
    """One trained model (every stage's result): what it is, how it was initialised, its history, its
    eval predictions and metrics, and the data it was trained on (``manifest`` with the splits used,
    ``source``)."""

    name: str
    model: nn.Module
    train_cfg: TrainConfig
    init: Init
    history: pd.DataFrame
    train_seconds: float
    pred: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    dataset: str = ""
    seed: int = 0
    manifest: pd.DataFrame | None = None
    source: DataSource | None = None

    @property
    def dataset_name(self) -> str:
        """The metrics.csv dataset name: the source's (``synthetic_<name>`` for generated data)."""
        if self.source is None:
            return self.dataset
        return self.source.name if self.source.real else f"synthetic_{self.source.name}"


def train_model(
    model: nn.Module,
    tc: TrainConfig,
    train: Dataset,
    val: Dataset,
    test: Dataset | None,
    name: str,
    out_dir: Path | None,
    *,
    eval_fn,
    seed: int = 0,
    device: str = "auto",
    init: Init | None = None,
    class_counts: Mapping[str, Sequence[int]] | None = None,
    progress: bool = True,
    n_classes: int | None = None,
    run_config: Mapping[str, object] | None = None,
    reseed: bool = True,
    **trainer_kwargs,
) -> Run:
    """Train with the project's :class:`~fer_lib.training.Trainer`, reload ``best.pt`` when written,
    predict on ``test`` and compute ``eval_fn(pred, n_classes)`` there. The epoch is selected on ``val``
    (``tc.select_split="val"``), or on ``test`` itself with ``"report"``: the authors' rule, which makes
    the reported number an optimistic one (model names say so). ``run_config`` is stored with the
    checkpoints; ``trainer_kwargs`` go to the Trainer (e.g. ``class_weight_tasks``, ``num_workers``);
    ``reseed=False`` keeps the random state the caller left (stage 01 builds its data after seeding)."""
    if tc.select_split not in SELECT_SPLITS:
        raise ValueError(f"select_split={tc.select_split!r}: choose one of {', '.join(SELECT_SPLITS)}")
    if tc.select_split == "report" and test is not None:
        val = test
    init = init or start_init(tc)
    if reseed:
        seed_everything(seed)
    trainer = Trainer(
        model,
        tc,
        device=device,
        out_dir=out_dir,
        seed=seed,
        class_counts=class_counts,
        progress=progress,
        run_config={
            "name": name,
            "init": str(init),
            "init_kind": init.kind,
            "selected_on": tc.select_split,
            **(run_config or {}),
        },
        allow_test_selection=tc.select_split == "report",
        **trainer_kwargs,
    )
    history = trainer.fit(train, val)
    best = None if out_dir is None else Path(out_dir) / "best.pt"
    if best is not None and best.is_file():
        model.load_state_dict(load_checkpoint(best)["state_dict"])
    run = Run(name, model, tc, init, history, trainer.train_seconds, checkpoint=best, seed=seed)
    if test is not None:
        from torch.utils.data import DataLoader

        loader = DataLoader(test, batch_size=max(tc.batch_size, 128), shuffle=False)
        run.pred = predict(model, loader, device=trainer.device, progress=False)
        run.metrics = eval_fn(run.pred, n_classes or model.tasks.get("expression", 8))
    return run


# ================================================================================ dataset framing
def dataset_framing(manifest: pd.DataFrame, dataset: str, cfg: Profile, paths: Paths):
    """The :class:`~fer_lib.faces.Framing` of a crop dataset (its images are the faces, no box column):
    measured on ``cfg.data.framing_faces`` of the manifest's training images (a fixed sample) and cached
    under ``data/framing/``, so that the stage's checkpoint crops a detected face as its training faces
    were framed (``Preprocess.margin``)."""
    import dataclasses
    import hashlib
    import json

    from ..faces import DEFAULT_THRESHOLDS, Framing, measure_framing

    n = int(cfg.data.framing_faces)
    rows = manifest[manifest["split"] == "train"] if "split" in manifest else manifest
    if n <= 0 or rows.empty:
        return Framing(0.0, float("nan"), 0)
    sample = sorted(rows["path"].astype(str).sample(min(n, len(rows)), random_state=0))
    key = hashlib.sha1("\n".join([*sample, str(DEFAULT_THRESHOLDS)]).encode()).hexdigest()[:12]
    cache = paths.data / "framing" / f"{dataset}-{key}.json"
    if cache.exists():
        got = json.loads(cache.read_text())
        margin = got.pop("margin")
        return Framing(tuple(margin) if isinstance(margin, list) else margin, **got)
    framing = measure_framing(sample)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(dataclasses.asdict(framing)))
    print(
        f"{dataset}: the detector found a face in {framing.found:.0%} of {framing.faces} training images; "
        f"their frame around its box (left, top, right, bottom): {framing.margin}"
    )
    return framing


# ================================================================================ the predict path
def served_accuracy(
    checkpoint: str | Path, manifest: pd.DataFrame, progress: bool = False
) -> dict[str, float]:
    """Accuracy of a checkpoint through the path users take (``fer_lib.Recognizer.predict``: MTCNN on the
    dataset's image shown as a photo, :func:`fer_lib.faces.as_photo`, then the model's own crop and
    preprocessing), beside the dataset's own crops: the gap is what detection, framing and colour cost.

    Per classifying head the model has and the manifest labels (``expression``, ``gender``, ``race``):
    ``<head>_accuracy`` over every row (a face not found counts as wrong), ``<head>_accuracy_found`` over
    the rows with a face, and ``<head>_accuracy_crops_found``: the same rows fed as the dataset's crops
    (``Recognizer(crops=True)``), so that ``_found`` minus ``_crops_found`` is what framing costs alone;
    ``face_found`` = share of rows where a face was detected (the largest face is used).
    """
    from ..datasets.images import load_image
    from ..faces import as_photo
    from ..progress import tqdm
    from ..serving import Recognizer
    from ..tasks import all_tasks, get_task

    rec = Recognizer(checkpoint, largest_only=True)
    # the model's served heads with named classes that the manifest labels (expression, gender, race)
    heads = [
        t.key
        for t in all_tasks()
        if t.served and t.classes and t.key in rec.tasks and t.key in manifest.columns
    ]
    found, said, images = [], {h: [] for h in heads}, []
    for path in tqdm(manifest["path"], desc="predict path", disable=not progress, leave=False):
        img = load_image(path)
        images.append(img)
        faces = rec.predict(as_photo(img)[0])
        found.append(bool(faces))
        for h in heads:  # a face not found says nothing, which is never right
            said[h].append(getattr(faces[0], get_task(h).public) if faces else None)
    found_arr = np.array(found, dtype=bool)
    as_crops = Recognizer(checkpoint, crops=True).predict_faces([im for im, f in zip(images, found) if f])
    out = {"face_found": float(found_arr.mean()) if len(found_arr) else float("nan")}
    for h in heads:
        classes = get_task(h).classes
        truth = np.array([classes[int(v)] for v in manifest[h]], dtype=object)
        ok = np.array([p is not None and p == t for p, t in zip(said[h], truth)])
        crop_ok = (
            np.array([getattr(f, get_task(h).public) for f in as_crops], dtype=object) == truth[found_arr]
        )
        out[f"{h}_accuracy"] = float(ok.mean())
        out[f"{h}_accuracy_found"] = float(ok[found_arr].mean()) if found_arr.any() else float("nan")
        out[f"{h}_accuracy_crops_found"] = float(crop_ok.mean()) if found_arr.any() else float("nan")
    return out


# ========================================================================================= results
def record_run(
    run: Run,
    stage: str,
    dataset: str,
    split: str,
    model: str,
    cfg: Profile,
    keys: Sequence[str] | None = None,
    paths: Paths | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """Write the run's metrics (all, or ``keys``) to metrics.csv with its training time (and ``seed``,
    default the profile's); the run's checkpoint is stamped with ``model`` (``metrics_model``)."""
    from .. import reporting

    paths = paths or get_paths()
    vals = {k: v for k, v in run.metrics.items() if keys is None or k in keys}
    return reporting.record_metrics(
        stage,
        dataset,
        split,
        model,
        vals,
        profile=cfg.name,
        seed=cfg.seed if seed is None else seed,
        train_seconds=run.train_seconds,
        path=paths.metrics_csv,
        checkpoint=run.checkpoint,
    )


def metrics_table(runs: Sequence[Run], keys: Sequence[str]) -> pd.DataFrame:
    """One row per run: model, init, epochs run, train seconds and the requested metrics."""
    rows = []
    for r in runs:
        row = {
            "model": r.name,
            "backbone": r.train_cfg.backbone,
            "image_size": r.train_cfg.image_size,
            "init": r.init.label,
            "epochs": int(r.history["epoch"].max()) if len(r.history) else 0,
            "train_seconds": round(r.train_seconds, 1),
        }
        row.update({k: r.metrics.get(k, float("nan")) for k in keys})
        rows.append(row)
    return pd.DataFrame(rows)
