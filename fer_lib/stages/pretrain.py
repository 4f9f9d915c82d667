"""Stage 01 (paper A): face-ID pre-training, then the age / gender / ethnicity multi-task stage.

``train_identity(cfg)`` trains an identity classifier on the profile's VGGFace2-format data
(``checkpoints/01_identity``); ``train_attributes(cfg)`` trains age (100 one-year bins), gender (one
logit) and ethnicity (5 classes) heads on the profile's UTKFace data (``checkpoints/01_attributes``),
initialising the backbone from the identity checkpoint when the backbones match. Model selection
(``best.pt``) uses a validation part carved from the training data only; the test split (real data:
the 2,000 names of ``balanced_test_2000.txt``) is used for the reported numbers alone.
``attribute_tables`` turns test predictions into the overall and per-group tables of notebook 01.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import labels
from .. import metrics as M
from ..config import Paths, Profile, TrainConfig, get_paths, resolve_device
from ..data import DEFAULT_CACHE_BYTES, FaceDataset, identity_index, make_loader
from ..datasets._common import carve_val
from ..datasets.sources import DataSource, load_for_profile
from ..io import atomic_torch_save
from ..labels import MALE_THRESHOLD
from ..models import MultiTaskNet, build_model_from_checkpoint, load_checkpoint
from ..paths import ATTRIBUTES, FER2013_FINETUNE, IDENTITY
from ..preprocess import Preprocess
from ..reporting import record_metrics
from ..training import predict
from .common import Init, Run, dataset_framing, init_stage, make_dataset, new_model, train_model

STAGE = "pretrain"
ATTRIBUTE_TASKS = {"age": labels.AGE_BINS, "gender": 1, "race": len(labels.ETHNICITIES)}
VAL_FRACTION = 0.1
MIN_CLASS_SHARE = 0.5  # with class_weights: rarer ethnicities are repeated up to half the mean class size


def model_name(c: TrainConfig) -> str:
    """The ``model`` column of metrics.csv: backbone @ input size."""
    return f"{c.backbone}@{c.image_size}"


def ensure_val(
    df: pd.DataFrame, by: str | None = None, key: str = "path", seed: int = 0, fraction: float = VAL_FRACTION
) -> pd.DataFrame:
    """The manifest with a 'val' split: kept when the loader made one, else carved from 'train' only
    (per ``by`` group, by a hash of ``key``). 'test' rows are never touched."""
    if (df["split"] == "val").any():
        return df
    return carve_val(df, fraction, seed, by=by, key=key)


def _workers(cfg: Profile) -> int:
    """DataLoader workers: none on CPU, where the Trainer's loaders would re-spawn workers every epoch
    (losing FaceDataset's decoded-face cache) and take cores from the model; the profile's on a GPU."""
    return cfg.data.num_workers if resolve_device(cfg.device).type == "cuda" else 0


def _dataset(
    df: pd.DataFrame,
    model: MultiTaskNet,
    c: TrainConfig,
    train: bool = False,
    ident: dict[str, int] | None = None,
) -> FaceDataset:
    """Faces through the model's preprocessing; a training set gets ``c``'s augmentation and degradation."""
    return make_dataset(
        df, model.preprocess, c if train else None, DEFAULT_CACHE_BYTES, c.align, identity_index=ident
    )


def _train(
    model: MultiTaskNet,
    c: TrainConfig,
    train_ds: FaceDataset,
    val_ds: FaceDataset,
    folder: str,
    cfg: Profile,
    paths: Paths,
    init: Init,
    progress: bool,
    **trainer_kwargs,
) -> Run:
    """Stage 01's use of the shared :func:`~fer_lib.stages.common.train_model`: selection on ``val``, no
    test predictions (the notebook makes them); the model returned is rebuilt from the best checkpoint,
    exactly as serving builds it (and drawing the random numbers a new model draws, as before)."""
    run = train_model(
        model,
        c,
        train_ds,
        val_ds,
        None,
        folder,
        paths.checkpoints / folder,
        eval_fn=None,
        seed=cfg.seed,
        device=cfg.device,
        init=init,
        progress=progress,
        reseed=False,
        num_workers=_workers(cfg),
        **trainer_kwargs,
    )
    if run.checkpoint is not None and run.checkpoint.is_file():
        run.model = build_model_from_checkpoint(run.checkpoint)
    return run


# ============================================================================ identity pre-training
def train_identity(
    cfg: Profile, paths: Paths | None = None, progress: bool = True, record: bool = True
) -> Run:
    """Face-ID pre-training on the profile's VGGFace2-format data; returns the best (val) model.

    Identities are those of the 'train' split; 'val' holds ~10 % of each identity's images (carved
    here if the loader made none). VGGFace2's 'test' identities are disjoint and are not used.
    Records the val identity accuracy of ``best.pt`` as metric ``accuracy`` (split 'val').
    """
    paths = paths or get_paths()
    c = cfg.pretrain_identity
    df, _, src = load_for_profile("vggface2", cfg, paths, progress=progress)
    df = ensure_val(df, by="identity", seed=cfg.seed)
    ident = identity_index(df, splits=["train"])
    df = df[df["split"].isin(["train", "val"]) & df["identity"].astype(str).isin(ident)].reset_index(
        drop=True
    )
    model = new_model(c, {"identity": len(ident)})
    init = init_stage(model, c, paths, "pretrain_identity")
    print(f"identity model: {init}")
    train_ds = _dataset(df[df.split == "train"], model, c, train=True, ident=ident)
    val_ds = _dataset(df[df.split == "val"], model, c, ident=ident)
    res = _train(
        model,
        c,
        train_ds,
        val_ds,
        IDENTITY,
        cfg,
        paths,
        init,
        progress,
        class_weight_tasks=(),
        run_config={
            "stage": IDENTITY,
            "profile": cfg.name,
            "dataset": src.name,
            "identities": len(ident),
        },
    )
    res.manifest, res.source = df, src
    res.dataset = res.dataset_name
    best = res.model
    pred = predict(best, _loader(val_ds, c, cfg), device=resolve_device(cfg.device), progress=False)
    res.metrics = {"accuracy": M.accuracy(pred["label_identity"], pred["identity_pred"])}
    if record:
        record_metrics(
            STAGE,
            res.dataset_name,
            "val",
            model_name(c),
            res.metrics,
            profile=cfg.name,
            seed=cfg.seed,
            train_seconds=res.train_seconds,
            path=paths.metrics_csv,
            checkpoint=res.checkpoint,
        )
    return res


def _loader(ds: FaceDataset, c: TrainConfig, cfg: Profile):
    return make_loader(
        ds, batch_size=max(c.batch_size, 64), shuffle=False, num_workers=_workers(cfg), seed=cfg.seed
    )


# ========================================================================== attribute multi-task
def init_attributes_model(cfg: Profile, paths: Paths | None = None) -> tuple[MultiTaskNet, Init]:
    """The attribute model, started as ``pretrain_attributes`` says (``init_from="auto"``: the backbone of
    ``01_identity/best.pt`` when that exists and has the same backbone, else its pretrained weights or
    random); returns ``(model, init)``."""
    paths = paths or get_paths()
    c = cfg.pretrain_attributes
    model = new_model(c, ATTRIBUTE_TASKS)
    return model, init_stage(model, c, paths, "pretrain_attributes")


def utkface_splits(
    cfg: Profile, paths: Paths | None = None, progress: bool = True
) -> tuple[pd.DataFrame, DataSource]:
    """The profile's UTKFace manifest with train / val / test; val = ~10 % of the non-test files, the
    same number from every ethnicity x gender group (by a hash of the file name: deterministic, never
    from test), so that model selection weighs the groups as the balanced test does (real UTKFace's
    training chips are 42 % White; its test list holds 200 faces per group)."""
    df, _, src = load_for_profile("utkface", cfg, paths, progress=progress)
    df = df.assign(file=df["path"].map(lambda p: Path(p).name))
    df.loc[df["split"] == "val", "split"] = "train"  # the loader's val is proportional: re-carved
    df = carve_val(df, VAL_FRACTION, cfg.seed, by=("race", "gender"), key="file", balanced=True)
    return df.drop(columns="file").reset_index(drop=True), src


def oversample(df: pd.DataFrame, column: str = "race", min_share: float = MIN_CLASS_SHARE) -> pd.DataFrame:
    """Rows of classes with fewer than ``min_share`` x the mean class size repeated (in order, cycling)
    up to that size; other rows kept once. Deterministic; meant for the training split only."""
    counts = df[column].value_counts()
    target = int(min_share * len(df) / max(1, len(counts)))
    parts = [df]
    for value, n in counts.items():
        if n < target:
            rows = df[df[column] == value]
            reps = -(-target // n)
            parts.append(pd.concat([rows] * reps).iloc[: target - n])
    return pd.concat(parts, ignore_index=True)


#: The age bands (lower edges, years) within which :func:`expression_balance_weights` levels the
#: expressions: UTKFace's expressions change most in the first years (a third of its under-3s look
#: surprised to a FER2013 model, under 1 % of its adults).
BALANCE_AGE_BANDS = (0, 3, 8, 16, 20, 30, 45, 60)
#: Largest factor by which a face's draw probability is raised or lowered by expression balancing.
BALANCE_CLIP = 4.0


def expression_balance_weights(
    groups: Sequence, expressions: Sequence, clip: float = BALANCE_CLIP
) -> np.ndarray:
    """A weight per face, ``p(e) / p(e | g)`` for its expression ``e`` and its group ``g``, clipped to
    ``[1 / clip, clip]`` and scaled to mean 1: drawn with these weights, the expression is independent of
    the group (exactly where no weight is clipped), so that an expression cannot stand in for an age band
    or a gender. ``[a, a, a, a, b, b, b, b]`` with ``[s, s, n, n, s, n, n, n]`` gives ``[3/4, 3/4, 5/4,
    5/4, 3/2, 5/6, 5/6, 5/6]``."""
    if clip < 1:
        raise ValueError(f"clip must be >= 1, got {clip}")
    d = pd.DataFrame({"g": list(groups), "e": list(expressions)})
    if len(d) == 0:
        raise ValueError("no faces to weight")
    p_e = d["e"].map(d["e"].value_counts(normalize=True))
    p_e_g = d.groupby(["g", "e"])["e"].transform("size") / d.groupby("g")["g"].transform("size")
    w = (p_e / p_e_g).clip(1 / clip, clip).to_numpy(dtype=float)
    return w / w.mean()


def age_band(age: pd.Series, edges: Sequence[int] = BALANCE_AGE_BANDS) -> pd.Series:
    """Each age's band as ``"lo-hi"`` (the last ``"lo+"``), from the lower ``edges``."""
    names = [f"{a}-{b}" for a, b in zip(edges, edges[1:])] + [f"{edges[-1]}+"]
    return pd.cut(age, [*edges, np.inf], right=False, labels=names).astype(str)


def balancing_model(spec: str) -> Path:
    """The expression checkpoint ``balance_expressions`` names: ``"published"`` (the committed
    ``results/models/expression.pt``) or a path."""
    from ..serving.default_model import published_models

    if spec == "published":
        found = {p.name: p for p in published_models()}
        if "expression.pt" not in found:
            raise FileNotFoundError(
                "balance_expressions='published' needs results/models/expression.pt (committed with the "
                "repository): restore it, give an expression checkpoint's path, or set it to ''"
            )
        return found["expression.pt"]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"balance_expressions={spec!r}: no such expression checkpoint")
    return path


def cached_expressions(model: Path, images: Sequence[str | Path], paths: Paths) -> list[str]:
    """:func:`expression_predictions` of ``model`` on ``images``, cached under ``data/expressions/`` by
    the checkpoint's bytes and the image list (a UTKFace pass takes a minute or two on a CPU)."""
    import hashlib

    from ..interop import sha256_of
    from ..io import atomic_to_csv

    names = [str(p) for p in images]
    unique = sorted(set(names))
    key = sha256_of(model)[:12] + "-" + hashlib.sha1("\n".join(unique).encode()).hexdigest()[:12]
    cache = paths.data / "expressions" / f"{key}.csv"
    if cache.is_file():
        known = pd.read_csv(cache)
    else:
        known = pd.DataFrame({"path": unique, "expression": expression_predictions(model, unique)})
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_to_csv(known, cache)
    lookup = dict(zip(known["path"].astype(str), known["expression"].astype(str)))
    return [lookup[n] for n in names]


def balance_weights(train: pd.DataFrame, spec: str, paths: Paths) -> np.ndarray:
    """The training faces' draw weights for ``balance_expressions=spec``: :func:`expression_balance_weights`
    over age band x gender, the expressions from :func:`balancing_model`; prints what they change."""
    model = balancing_model(spec)
    expr = pd.Series(cached_expressions(model, train["path"], paths), index=train.index)
    band = age_band(train["age"])
    w = expression_balance_weights(band + "/" + train["gender"].astype(str), expr)
    young = (band == f"{BALANCE_AGE_BANDS[0]}-{BALANCE_AGE_BANDS[1]}").to_numpy()
    if young.any():  # the expression most over-represented among the youngest, before and after
        lift = expr[young].value_counts(normalize=True) / expr.value_counts(normalize=True)
        hit = (expr == lift.idxmax()).to_numpy()
        print(
            f"expression balance ({model.name}): weights {w.min():.2f}..{w.max():.2f}; {lift.idxmax()} "
            f"among the under-{BALANCE_AGE_BANDS[1]}s drawn {hit[young].mean():.0%} -> "
            f"{(w * hit)[young].sum() / w[young].sum():.0%} (among all faces: {hit.mean():.0%})"
        )
    return w


def train_attributes(cfg: Profile, paths: Paths | None = None, progress: bool = True) -> Run:
    """Age / gender / ethnicity training on the profile's UTKFace train split; best.pt by val loss.

    With ``class_weights`` (the default) the loss is balanced over ethnicities and genders, as the real
    test split is (200 per gender x ethnicity): rare ethnicities are first repeated up to half the mean
    class size (:func:`oversample`; the real UTKFace subset has only 5 non-test 'Black' faces), then
    paper A's 1/count class weights of the repeated set weight race and gender. With
    ``balance_expressions`` each epoch is a weighted draw instead (:func:`balance_weights`).
    """
    paths = paths or get_paths()
    c = cfg.pretrain_attributes
    df, src = utkface_splits(cfg, paths, progress)
    model, init = init_attributes_model(cfg, paths)
    print(f"attribute model: {init}")
    # UTKFace's chips are the faces: predict crops a detected face in their frame
    model.preprocess = model.preprocess.replace(margin=dataset_framing(df, "utkface", cfg, paths).margin)
    train = df[df.split == "train"]
    if c.class_weights:
        train = oversample(train)
        print(
            f"training rows per ethnicity after repeating rare ones: "
            f"{dict(zip(labels.ETHNICITIES, train.race.value_counts().sort_index().tolist()))}"
        )
    weights = balance_weights(train, c.balance_expressions, paths) if c.balance_expressions else None
    train_ds = _dataset(train, model, c, train=True)
    val_ds = _dataset(df[df.split == "val"], model, c)
    t0 = time.perf_counter()
    res = _train(
        model,
        c,
        train_ds,
        val_ds,
        ATTRIBUTES,
        cfg,
        paths,
        init,
        progress,
        class_weight_tasks=("race", "gender") if c.class_weights else (),
        run_config={"stage": ATTRIBUTES, "profile": cfg.name, "dataset": src.name},
        sample_weights=weights,
    )
    res.manifest, res.source = df, src
    res.dataset = res.dataset_name
    print(f"attribute stage: {time.perf_counter() - t0:.1f} s wall (incl. validation)")
    best, best_pt = res.model, paths.checkpoint(ATTRIBUTES)
    if "gender" in best.tasks and best_pt.is_file():
        threshold_on_val(best, best_pt, val_ds, cfg)
        print(f"male threshold chosen on val (balanced accuracy): p(male) >= {best.male_threshold:.2f}")
    return res


def threshold_on_val(model: MultiTaskNet, checkpoint: Path, val: FaceDataset, cfg: Profile) -> float:
    """Choose ``model``'s male threshold on the validation faces ``val`` (:func:`choose_male_threshold`),
    set it on ``model`` and store it in ``checkpoint`` (the model's weights); returns it."""
    loader = _loader(val, cfg.pretrain_attributes, cfg)
    pred = predict(model, loader, device=resolve_device(cfg.device), progress=False)
    model.male_threshold = choose_male_threshold(pred["label_gender"], pred["gender_prob_female"])
    set_male_threshold(checkpoint, model.male_threshold)
    return model.male_threshold


def choose_male_threshold(gender: np.ndarray, p_female: np.ndarray) -> float:
    """The p(male) threshold (0.30..0.70, steps of 0.01) with the best balanced accuracy (mean recall of
    men and women) on labelled faces; ties go to the one nearest 0.5. Paper A's fixed 0.6 favours
    "female" for an uncertain face; choosing on validation data makes both genders count the same."""
    y = np.asarray(gender, np.int64)
    p_male = 1.0 - np.asarray(p_female, np.float64)
    if not ((y == 0).any() and (y == 1).any()):
        return MALE_THRESHOLD  # one gender only: nothing to balance
    grid = np.round(np.arange(0.30, 0.7001, 0.01), 2)
    scores = [0.5 * ((p_male[y == 0] >= t).mean() + (p_male[y == 1] < t).mean()) for t in grid]
    best = max(scores)
    return float(min((t for t, s in zip(grid, scores) if s >= best - 1e-12), key=lambda t: abs(t - 0.5)))


def set_male_threshold(checkpoint: Path, threshold: float) -> None:
    """Store ``threshold`` in a checkpoint's model config, so predict and export use it."""
    ckpt = load_checkpoint(checkpoint)
    ckpt["model_config"]["male_threshold"] = float(threshold)
    atomic_torch_save(ckpt, checkpoint)


def predict_test(res: Run, cfg: Profile) -> pd.DataFrame:
    """One row per test image: true and predicted age, gender (at the model's male threshold), race."""
    c = cfg.pretrain_attributes
    test = res.manifest[res.manifest.split == "test"].reset_index(drop=True)
    ds = _dataset(test, res.model, c)
    pred = predict(
        res.model,
        _loader(ds, c, cfg),
        device=resolve_device(cfg.device),
        progress=False,
    )
    return pd.DataFrame(
        {
            "path": test["path"],
            "age": pred["label_age"],
            "age_pred": pred["age_pred"],
            "gender": pred["label_gender"],
            "gender_pred": pred["gender_pred"],
            "race": pred["label_race"],
            "race_pred": pred["race_pred"],
        }
    )


def attribute_metrics(pred: pd.DataFrame) -> dict[str, float]:
    """age_mae (years), age_cs5 (share within 5 years), gender_accuracy, race_accuracy, and the recall of
    the worst-served ethnicity and gender (fractions)."""

    def min_recall(y: pd.Series, p: pd.Series) -> float:
        return min(M.accuracy(y[y == c], p[y == c]) for c in y.unique())

    return {
        "age_mae": M.age_mae(pred.age, pred.age_pred),
        "age_cs5": M.cumulative_score(pred.age, pred.age_pred, 5),
        "gender_accuracy": M.accuracy(pred.gender, pred.gender_pred),
        "race_accuracy": M.accuracy(pred.race, pred.race_pred),
        "race_min_recall": min_recall(pred.race, pred.race_pred),
        "gender_min_recall": min_recall(pred.gender, pred.gender_pred),
    }


def chance_metrics(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """The same metrics for a predictor that ignores the image: train median age, majority classes."""
    const = pd.DataFrame(
        {
            "age": test.age.to_numpy(float),
            "age_pred": float(train.age.median()),
            "gender": test.gender.to_numpy(int),
            "gender_pred": int(train.gender.mode()[0]),
            "race": test.race.to_numpy(int),
            "race_pred": int(train.race.mode()[0]),
        }
    )
    return attribute_metrics(const)


def attribute_tables(res: Run, pred: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(overall table: model vs image-blind baseline, per-race / per-gender breakdown)."""
    train = res.manifest[res.manifest.split == "train"]
    ours, chance = attribute_metrics(pred), chance_metrics(train, pred)
    overall = pd.DataFrame([{"model": "this run", **ours}, {"model": "image-blind baseline", **chance}])
    overall.insert(1, "test_images", len(pred))
    rows = []
    for col, names in (("race", labels.ETHNICITIES), ("gender", labels.GENDERS)):
        for k, g in pred.groupby(col):
            rows.append({"group": col, "value": names[int(k)], "n": len(g), **attribute_metrics(g)})
    return overall, pd.DataFrame(rows)


def group_table(pred: pd.DataFrame) -> pd.DataFrame:
    """One row per ethnicity x gender of the test faces: n, gender accuracy, ethnicity recall (the share
    of the group's faces given their own ethnicity), age MAE: where a model fails a group, not on average."""
    rows = []
    for (race, gender), g in pred.groupby(["race", "gender"]):
        rows.append(
            {
                "ethnicity": labels.ETHNICITIES[int(race)],
                "gender": labels.GENDERS[int(gender)],
                "n": len(g),
                "gender_accuracy": M.accuracy(g.gender, g.gender_pred),
                "race_accuracy": M.accuracy(g.race, g.race_pred),
                "age_mae": M.age_mae(g.age, g.age_pred),
            }
        )
    return pd.DataFrame(rows)


def record_attributes(res: Run, pred: pd.DataFrame, cfg: Profile, paths: Paths | None = None) -> dict:
    """metrics.csv rows: age_mae, gender_accuracy, race_accuracy (+ age_cs5) on the test split (the
    checkpoint is stamped with their model name)."""
    paths = paths or get_paths()
    split = "balanced_test_2000" if res.source.real else "test"
    m = attribute_metrics(pred)
    record_metrics(
        STAGE,
        res.dataset_name,
        split,
        model_name(cfg.pretrain_attributes),
        m,
        profile=cfg.name,
        seed=cfg.seed,
        train_seconds=res.train_seconds,
        path=paths.metrics_csv,
        checkpoint=res.checkpoint,
    )
    return m


def class_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Images per split and ethnicity / gender (what the model was trained, selected and tested on)."""
    race = df["race"].map(lambda v: labels.ETHNICITIES[int(v)])
    gender = df["gender"].map(lambda v: labels.GENDERS[int(v)])
    return pd.concat([pd.crosstab(race, df["split"]), pd.crosstab(gender, df["split"])])


def ages_by_stored_side(df: pd.DataFrame) -> pd.DataFrame:
    """Per split and stored image side (each file's longer side, from its header): faces, the share under
    :data:`CHILD_AGE` and under 5, and the median age. On the real UTKFace the 200 px chips hold nearly all
    of its children and the 64 px copies (quality-75 JPEGs) few, so how a face was stored tells its age
    unless the pipeline stores every face alike (``face_jpeg_quality``)."""
    from PIL import Image

    def side(path) -> int:
        with Image.open(path) as im:
            return max(im.size)

    age = df["age"].to_numpy(dtype=float)
    out = pd.DataFrame({"split": df["split"], "stored_side": [side(p) for p in df["path"]]})
    out = out.assign(under_16=age < CHILD_AGE, under_5=age < 5, age=age)
    return (
        out.groupby(["split", "stored_side"])
        .agg(
            faces=("age", "size"),
            share_under_16=("under_16", "mean"),
            share_under_5=("under_5", "mean"),
            median_age=("age", "median"),
        )
        .reset_index()
    )


def identity_table(res: Run, cfg: Profile) -> pd.DataFrame:
    """One row: data, identities, images, val accuracy of best.pt next to chance, training time."""
    n_ident = res.model.tasks["identity"]
    split = res.manifest["split"].value_counts()
    return pd.DataFrame(
        [
            {
                "dataset": res.dataset_name,
                "model": model_name(cfg.pretrain_identity),
                "identities": n_ident,
                "train_images": int(split.get("train", 0)),
                "val_images": int(split.get("val", 0)),
                "val_accuracy": res.metrics["accuracy"],
                "chance": 1.0 / n_ident,
                "train_seconds": round(res.train_seconds, 1),
            }
        ]
    )


# ============================================================== attributes vs expression and colour
#: Predicted ages below this count as "a child" in the confound table (CK+'s subjects are 18-50).
CHILD_AGE = 16.0


#: The side UTKFace's low-resolution part stores its faces at (as quality-75 JPEGs; its 200 px part holds
#: nearly all of its children): the ``"jpeg Q"`` view of :func:`_read_faces`.
UTKFACE_LOW_SIDE = 64


def _read_faces(paths_: Sequence[str | Path], view: str = "colour") -> list[np.ndarray]:
    """Each image whole, as an RGB uint8 array (an already-cropped face), seen as ``view`` says:
    ``"colour"`` as it is; ``"grey"`` its luminance in all three channels (what a greyscale photo gives);
    ``"crop F"`` its central part, F of each side (a tighter framing, as other collections' crops);
    ``"jpeg Q"`` shrunk to :data:`UTKFACE_LOW_SIDE` px and stored as a JPEG of quality Q (PIL), as
    UTKFace's 64 px part stores its faces."""
    from ..datasets.images import read_image

    kind, _, arg = view.partition(" ")
    if view not in ("colour", "grey") and not (kind == "crop" or (kind == "jpeg" and arg.isdigit())):
        raise ValueError(f"view must be 'colour', 'grey', 'crop F' (0 < F <= 1) or 'jpeg Q', got {view!r}")
    keep = float(arg) if kind == "crop" else 1.0
    if not 0 < keep <= 1:
        raise ValueError(f"a crop view keeps 0 < F <= 1 of each side, got {view!r}")
    store = (
        Preprocess(UTKFACE_LOW_SIDE, max_side=UTKFACE_LOW_SIDE, jpeg_quality=int(arg))
        if kind == "jpeg"
        else None
    )
    out = []
    for p in paths_:
        img = read_image(p)[0].convert("RGB")
        if view == "grey":
            img = img.convert("L").convert("RGB")
        if keep < 1:
            w, h = img.size
            dx, dy = round(w * (1 - keep) / 2), round(h * (1 - keep) / 2)
            img = img.crop((dx, dy, w - dx, h - dy))
        if store is not None:
            img = store.limit(img)
        out.append(np.asarray(img, dtype=np.uint8))
    return out


def attribute_predictions(
    model: str | Path, images: Sequence[str | Path], view: str = "colour"
) -> pd.DataFrame:
    """The attribute model on each image fed whole as a face crop, seen as ``view`` (:func:`_read_faces`):
    ``age_pred``, ``p_female``, ``gender_pred`` (0 male, 1 female, at the model's threshold) and
    ``race_pred`` (index)."""
    from ..serving import Recognizer

    rec = Recognizer(model, crops=True)
    faces = rec.predict_faces(_read_faces(images, view))
    eth = list(rec.label_names("race")) if "race" in rec.tasks else []
    return pd.DataFrame(
        {
            "age_pred": [f.age for f in faces],
            "p_female": [f.p_female for f in faces],
            "gender_pred": [float(f.gender == "Female") if f.gender else np.nan for f in faces],
            "race_pred": [eth.index(f.ethnicity) if f.ethnicity in eth else np.nan for f in faces],
        }
    )


def expression_predictions(model: str | Path, images: Sequence[str | Path]) -> list[str]:
    """The expression model's class name for each image fed whole as a face crop."""
    from ..serving import Recognizer

    return [f.expression for f in Recognizer(model, crops=True).predict_faces(_read_faces(images))]


def by_expression(faces: pd.DataFrame, source: str) -> pd.DataFrame:
    """Per expression (``expression`` column) of ``faces`` (:func:`attribute_predictions`, plus the true
    ``age`` / ``gender`` where known, and the person, ``identity``, where known): faces, median predicted
    age, share of predicted ages under :data:`CHILD_AGE`, mean p(female), share called female, the truth
    where known, and where the people are known how many they are and how many have a face read under
    :data:`CHILD_AGE`."""
    rows = []
    for expr, g in faces.groupby("expression", sort=False):
        child = g["age_pred"] < CHILD_AGE
        row = {
            "data": source,
            "expression": expr,
            "faces": len(g),
            "age_pred_median": float(g["age_pred"].median()),
            "share_age_under_16": float(child.mean()),
            "p_female_mean": float(g["p_female"].mean()),
            "called_female": float(g["gender_pred"].mean()),
        }
        if "identity" in g:
            row["subjects"] = int(g["identity"].nunique())
            row["subjects_age_under_16"] = int(g.loc[child, "identity"].nunique())
        if "age" in g:
            row["age_true_median"] = float(g["age"].median())
            row["female_true"] = float(g["gender"].mean())
        rows.append(row)
    return pd.DataFrame(rows).sort_values("faces", ascending=False, ignore_index=True)


def ckplus_faces(attributes: str | Path, cfg: Profile, paths: Paths | None = None) -> pd.DataFrame | None:
    """The attribute model's answers (:func:`attribute_predictions`) on each CK+48 face, beside its posed
    ``expression`` and its person (``identity``); evaluation only. None, with a printed reason, without
    CK+48 under FER_DATA_ROOT."""
    from .expression import ckplus_manifest

    ck = ckplus_manifest(cfg, paths or get_paths())
    if ck is None:
        return None
    df = ck[0]
    return attribute_predictions(attributes, df["path"]).assign(
        expression=[labels.EXPRESSIONS_8[int(e)] for e in df["expression"]],
        identity=df["identity"].to_numpy(),
    )


def children_among_adults(faces: pd.DataFrame, source: str, level: float = 0.95) -> pd.DataFrame:
    """One row on a collection of adults' faces (:func:`ckplus_faces`): faces, people, the share of faces
    read under :data:`CHILD_AGE` with its ``level`` interval when whole people are drawn again
    (:func:`fer_lib.metrics.share_interval`: several faces of one person are not independent), and how
    many faces and people that share is made of. CK+ has a few hundred faces of about a hundred people, so
    the interval says how finely a bar on that share can be read."""
    child = (faces["age_pred"] < CHILD_AGE).to_numpy()
    low, high = M.share_interval(child, faces["identity"], level=level)
    return pd.DataFrame(
        [
            {
                "data": source,
                "faces": len(faces),
                "subjects": int(faces["identity"].nunique()),
                "share_age_under_16": float(child.mean()),
                f"share_low_{level:.0%}": low,
                f"share_high_{level:.0%}": high,
                "faces_age_under_16": int(child.sum()),
                "subjects_age_under_16": int(faces.loc[child, "identity"].nunique()),
                "age_pred_median": float(faces["age_pred"].median()),
            }
        ]
    )


def expression_confound(
    attributes: str | Path,
    expression: str | Path | None,
    cfg: Profile,
    paths: Paths | None = None,
    ckplus: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Does the expression move the attribute model's age and gender? Per expression: on CK+48's faces
    (``ckplus``: :func:`ckplus_faces`, adults with the posed expression labelled; evaluation only; None:
    no CK+48 rows) and on the UTKFace test faces grouped by what the ``expression`` model (a FER2013 one)
    calls them (with their true age and gender beside; skipped with a printed reason without UTKFace under
    FER_DATA_ROOT)."""
    paths = paths or get_paths()
    parts = []
    if ckplus is not None:
        parts.append(by_expression(ckplus, "ckplus48 (labelled)"))
    if paths.real("utkface") is not None and expression is not None:
        df, _ = utkface_splits(cfg, paths, progress=False)
        test = df[df["split"] == "test"].reset_index(drop=True)
        faces = attribute_predictions(attributes, test["path"]).assign(
            expression=expression_predictions(expression, test["path"]),
            age=test["age"],
            gender=test["gender"],
        )
        parts.append(by_expression(faces, "utkface test (expression predicted)"))
    elif paths.real("utkface") is None:
        print("UTKFace is not under FER_DATA_ROOT: no UTKFace rows in the confound table")
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


#: The views of the UTKFace faces that :func:`input_gap` compares: colour, greyscale, two tighter framings
#: (the central 80 % and 65 % of each side; FER2013's and CK+'s crops are tighter than UTKFace's), and each
#: face stored as UTKFace's 64 px part stores its faces (the balanced test is all 200 px chips).
INPUT_VIEWS = ("colour", "grey", "crop 0.8", "crop 0.65", "jpeg 75")


def input_gap(
    attributes: str | Path,
    cfg: Profile,
    paths: Paths | None = None,
    split: str = "test",
    views: Sequence[str] = INPUT_VIEWS,
) -> pd.DataFrame | None:
    """The attribute model on the UTKFace ``split`` faces (the balanced test; "val" to choose between
    models) seen each way of ``views`` (the first is the reference; :func:`_read_faces`): their
    :func:`view_scores` and how many faces change gender against the first view. None without the real
    UTKFace."""
    paths = paths or get_paths()
    if paths.real("utkface") is None:
        print("UTKFace is not under FER_DATA_ROOT: no comparison of colour, greyscale and framing")
        return None
    df, _ = utkface_splits(cfg, paths, progress=False)
    faces = df[df["split"] == split].reset_index(drop=True)
    rows, first = [], None
    for view in views:
        p = attribute_predictions(attributes, faces["path"], view=view)
        first = p if first is None else first
        rows.append(
            {
                "input": view,
                "faces": len(faces),
                **view_scores(faces, p),
                "gender_changed_share": float((p["gender_pred"] != first["gender_pred"]).mean()),
            }
        )
    return pd.DataFrame(rows)


#: Young adults whose share given an age under :data:`CHILD_AGE` :func:`view_scores` reports, by true age
#: (inclusive): where an ordinary age error crosses 16, so that a collection of students (CK+'s subjects
#: are 18-50, most of them young) gets some "children" without any shortcut.
YOUNG_ADULTS = ((18, 19), (20, 21))


def view_scores(truth: pd.DataFrame, pred: pd.DataFrame) -> dict[str, float]:
    """One view's scores (:func:`input_gap`): ``pred`` (:func:`attribute_predictions`) against ``truth``'s
    ``age``, ``gender`` and ``race``: age MAE, gender and ethnicity accuracy, the share of adults (20-50)
    given an age under :data:`CHILD_AGE`, and the same share at each :data:`YOUNG_ADULTS` age."""
    age, child = truth["age"].to_numpy(), pred["age_pred"].to_numpy() < CHILD_AGE
    row = {
        "age_mae": M.age_mae(truth["age"], pred["age_pred"]),
        "gender_accuracy": M.accuracy(truth["gender"], pred["gender_pred"]),
        "race_accuracy": M.accuracy(truth["race"], pred["race_pred"]),
    }
    for name, (lo, hi) in (("adults", (20, 50)), *((f"age_{a}_{b}", (a, b)) for a, b in YOUNG_ADULTS)):
        at = (age >= lo) & (age <= hi)
        row[f"{name}_under_16"] = float(child[at].mean()) if at.any() else float("nan")
    return row


def confound_models(paths: Paths) -> tuple[Path | None, Path | None, str]:
    """The attribute and FER2013 expression models the confound tables use: the run's own
    (``01_attributes``, ``02_fer2013_finetune``) where it trained them, else the published ones
    (``results/models/``); and which, in words."""
    from ..serving.default_model import published_models

    attr, expr = paths.checkpoint(ATTRIBUTES), paths.checkpoint(FER2013_FINETUNE)
    if attr.is_file():
        return attr, (expr if expr.is_file() else None), "this run's models"
    published = {p.name: p for p in published_models()}
    if "attributes.pt" in published:
        return published["attributes.pt"], published.get("expression.pt"), "the published models"
    return None, None, "no attribute model (run notebook 01, or use a clone with results/models/)"
