"""The authors' training and video settings beside the ``paper`` profile's, one row per setting.

Each row names the profile value it reads (a dotted key such as ``finetune.batch_size``), the value
the authors' public code uses, the file of their repository it was read from (at the revision in
:data:`REPOS`), and, where the profile departs on purpose, the reason. :func:`settings_table` compares
them: ``match``, ``differs: <reason>``, or ``UNEXPLAINED`` for a difference nobody declared, so a
change of the profile that drifts from the authors without a word shows up in the table and fails
``tests/test_paper_settings.py``. The table is written into ``docs/papers.md`` between two markers::

    python -m fer_lib.paper_settings --write docs/papers.md
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import paths as layout
from .config import Profile, get_profile

#: The authors' repositories at the revisions read: paper A's code, the age / gender training script
#: of paper A's author (the attribute network), paper B's code.
REPOS = {
    "A": ("HSE-asavchenko/face-emotion-recognition", "d0ac879"),
    "A-attr": ("av-savchenko/HSE_FaceRec_tf", "d5f9b85"),
    "B": ("PanosAntoniadis/emotion-gcn", "212bf23"),
}

COLUMNS = ["paper", "setting", "authors", "profile", "status", "source"]
BEGIN = "<!-- paper-settings:begin -->"
END = "<!-- paper-settings:end -->"

# Reasons shared by several rows (one wording, one place).
_SELECTION = (
    "the profile selects the epoch on rows carved from the training list, so the reported set stays "
    "unseen; the authors kept the best epoch on the set they report (select_split=report offers that)"
)
_MOBILENET_RECIPE = (
    "the trainer runs one optimiser per stage: the Keras notebook's Adam 3 + 5 epochs are run, its last "
    "2 epochs of SGD at 1e-3 are not"
)


@dataclass(frozen=True)
class Setting:
    """One row: where the profile keeps the setting, the authors' value and the file it comes from."""

    paper: str  # "A" | "B"
    setting: str
    key: str | Callable[[Profile], Any]  # dotted key into the profile, or a reader
    authors: Any  # in the profile's vocabulary, so the two compare
    repo: str  # a key of REPOS
    path: str  # file in that repository
    reason: str | None = None  # why the profile departs (None: it should not)

    @property
    def source(self) -> str:
        name, rev = REPOS[self.repo]
        return f"{name.split('/')[1]}@{rev}: {self.path}"


def _attribute_data(profile: Profile) -> str:
    # Not a profile value: the attribute stage (fer_lib.stages.pretrain.utkface_splits) reads UTKFace.
    return "UTKFace"


_PT = "src/train_emotions-pytorch.ipynb"  # paper A: AffectNet fine-tuning and the video classifiers
_FACES = "src/train_faces_torch.ipynb"  # paper A: VGGFace2 identity pre-training
_KERAS = "src/train_emotions.ipynb"  # paper A: the MobileNet (Keras) AffectNet model
_ATTR = "age_gender_identity/age_gender_train.py"
_MAIN = "main.py"  # paper B: data, optimiser, loss, selection

SETTINGS: list[Setting] = [
    # ---- paper A, EfficientNet path, step 1: face identity on VGGFace2
    # the B0 identity weights (state_vggface2_enet0_new.pt) are loaded into timm's tf_efficientnet_b0_ns
    Setting("A", "identity: backbone", "pretrain_identity.backbone", "tf_efficientnet_b0_ns", "A", _PT),
    Setting("A", "identity: ImageNet start", "pretrain_identity.pretrained", "timm-hub", "A", _FACES),
    Setting("A", "identity: no earlier checkpoint", "pretrain_identity.init_from", "none", "A", _FACES),
    Setting("A", "identity: input size", "pretrain_identity.image_size", 224, "A", _FACES),
    Setting("A", "identity: batch size", "pretrain_identity.batch_size", 48, "A", _FACES),
    Setting("A", "identity: head-only epochs", "pretrain_identity.head_epochs", 1, "A", _FACES),
    Setting("A", "identity: head-only lr", "pretrain_identity.lr_head", 1e-3, "A", _FACES),
    Setting("A", "identity: all-layer epochs", "pretrain_identity.full_epochs", 10, "A", _FACES),
    Setting("A", "identity: all-layer lr", "pretrain_identity.lr_full", 1e-4, "A", _FACES),
    Setting("A", "identity: optimiser", "pretrain_identity.optimizer", "adam", "A", _FACES),
    Setting("A", "identity: SAM", "pretrain_identity.sam", True, "A", _FACES),
    Setting("A", "identity: SAM rho", "pretrain_identity.sam_rho", 0.05, "A", "src/sam.py"),
    Setting("A", "identity: scheduler", "pretrain_identity.scheduler", "none", "A", _FACES),
    Setting(
        "A",
        "identity: augmentation",
        "pretrain_identity.augment",
        "resize 256, random-resized crop 224, flip",
        "A",
        _FACES,
        reason="the nearest preset, 'full' (rotation +-10 deg, zoom crop, flip); no random-resized-crop mode",
    ),
    Setting("A", "identity: bf16 autocast", "pretrain_identity.amp", False, "A", _FACES),
    # ---- paper A, MobileNet path, step 1: age / gender (/ ethnicity)
    Setting("A", "attributes: backbone", "pretrain_attributes.backbone", "mobilenetv1_100", "A-attr", _ATTR),
    Setting(
        "A",
        "attributes: start",
        "pretrain_attributes.init_from",
        "VGGFace2 MobileNet (vgg2_mobilenet.h5)",
        "A-attr",
        _ATTR,
        reason="the project pre-trains identity on EfficientNet only, so the MobileNet starts from ImageNet",
    ),
    Setting(
        "A",
        "attributes: training data",
        _attribute_data,
        "IMDB-Wiki style faces (DEX_IMDB_faces)",
        "A-attr",
        _ATTR,
        reason="UTKFace is public and labels age, gender and ethnicity together",
    ),
    Setting("A", "attributes: input size", "pretrain_attributes.image_size", 224, "A", _KERAS),
    Setting("A", "attributes: batch size", "pretrain_attributes.batch_size", 80, "A-attr", _ATTR),
    Setting("A", "attributes: head-only epochs", "pretrain_attributes.head_epochs", 3, "A-attr", _ATTR),
    Setting("A", "attributes: head-only lr", "pretrain_attributes.lr_head", 1e-3, "A-attr", _ATTR),
    Setting("A", "attributes: all-layer epochs", "pretrain_attributes.full_epochs", 30, "A-attr", _ATTR),
    Setting("A", "attributes: all-layer lr", "pretrain_attributes.lr_full", 1e-4, "A-attr", _ATTR),
    Setting("A", "attributes: optimiser", "pretrain_attributes.optimizer", "adam", "A-attr", _ATTR),
    # ---- paper A, EfficientNet path, step 2: AffectNet
    Setting("A", "AffectNet (B0): backbone", "finetune.backbone", "tf_efficientnet_b0_ns", "A", _PT),
    Setting("A", "AffectNet (B0): start", "finetune.init_from", layout.IDENTITY, "A", _PT),
    Setting("A", "AffectNet (B0): input size", "finetune.image_size", 224, "A", _PT),
    Setting("A", "AffectNet (B0): batch size", "finetune.batch_size", 32, "A", _PT),
    Setting("A", "AffectNet (B0): head-only epochs", "finetune.head_epochs", 3, "A", _PT),
    Setting("A", "AffectNet (B0): head-only lr", "finetune.lr_head", 1e-3, "A", _PT),
    Setting("A", "AffectNet (B0): all-layer epochs", "finetune.full_epochs", 6, "A", _PT),
    Setting("A", "AffectNet (B0): all-layer lr", "finetune.lr_full", 1e-4, "A", _PT),
    Setting("A", "AffectNet (B0): optimiser", "finetune.optimizer", "adam", "A", _PT),
    Setting("A", "AffectNet (B0): SAM", "finetune.sam", True, "A", _PT),
    Setting("A", "AffectNet (B0): scheduler", "finetune.scheduler", "none", "A", _PT),
    Setting("A", "AffectNet (B0): label smoothing", "finetune.label_smoothing", 0.0, "A", _PT),
    Setting("A", "AffectNet (B0): class-weighted CE", "finetune.class_weights", True, "A", _PT),
    Setting("A", "AffectNet (B0): augmentation", "finetune.augment", "none", "A", _PT),
    Setting("A", "AffectNet (B0): bf16 autocast", "finetune.amp", False, "A", _PT),
    Setting("A", "AffectNet (B0): model selection", "finetune.select_split", "report", "A", _PT, _SELECTION),
    # ---- paper A, MobileNet path, step 2: AffectNet
    Setting(
        "A", "AffectNet (MobileNet): backbone", "finetune_mobilenet.backbone", "mobilenetv1_100", "A", _KERAS
    ),
    Setting(
        "A", "AffectNet (MobileNet): start", "finetune_mobilenet.init_from", layout.ATTRIBUTES, "A", _KERAS
    ),
    Setting(
        "A", "AffectNet (MobileNet): head on", "finetune_mobilenet.head_on", "attribute_trunk", "A", _KERAS
    ),
    Setting("A", "AffectNet (MobileNet): input size", "finetune_mobilenet.image_size", 224, "A", _KERAS),
    Setting("A", "AffectNet (MobileNet): batch size", "finetune_mobilenet.batch_size", 80, "A", _KERAS),
    Setting("A", "AffectNet (MobileNet): head-only epochs", "finetune_mobilenet.head_epochs", 3, "A", _KERAS),
    Setting("A", "AffectNet (MobileNet): all-layer epochs", "finetune_mobilenet.full_epochs", 5, "A", _KERAS),
    Setting(
        "A",
        "AffectNet (MobileNet): final SGD epochs",
        lambda p: "none",
        "2 epochs of SGD at 1e-3",
        "A",
        _KERAS,
        _MOBILENET_RECIPE,
    ),
    Setting("A", "AffectNet (MobileNet): head-only lr", "finetune_mobilenet.lr_head", 1e-3, "A", _KERAS),
    Setting("A", "AffectNet (MobileNet): all-layer lr", "finetune_mobilenet.lr_full", 1e-4, "A", _KERAS),
    Setting("A", "AffectNet (MobileNet): optimiser", "finetune_mobilenet.optimizer", "adam", "A", _KERAS),
    Setting("A", "AffectNet (MobileNet): SAM", "finetune_mobilenet.sam", False, "A", _KERAS),
    Setting(
        "A", "AffectNet (MobileNet): class-weighted CE", "finetune_mobilenet.class_weights", True, "A", _KERAS
    ),
    Setting(
        "A",
        "AffectNet (MobileNet): model selection",
        "finetune_mobilenet.select_split",
        "report",
        "A",
        _KERAS,
        _SELECTION,
    ),
    # ---- paper A, video (EmotiW)
    Setting("A", "video: features from", "video.source", layout.EXPRESSION, "A", _PT),
    Setting("A", "video: frame stride", "video.stride", 1, "A", "src/AFEW_train.ipynb"),
    Setting(
        "A",
        "video: MTCNN thresholds",
        "video.mtcnn_thresholds",
        (0.6, 0.7, 0.9),
        "A",
        "src/facial_analysis.py",
    ),
    Setting("A", "video: AFEW min face", "video.min_face_afew", 32, "A", "src/facial_analysis.py"),
    Setting("A", "video: AFEW face", "video.afew_face", "score", "A", "src/AFEW_train.ipynb"),
    Setting("A", "video: VGAF min face", "video.min_face_vgaf", 64, "A", "src/VGAF_train.ipynb"),
    Setting("A", "video: VGAF faces aligned", "video.align_vgaf", True, "A", "src/VGAF_train.ipynb"),
    Setting("A", "video: classifier", "video.classifier", "linear_svc", "A", _PT),
    Setting("A", "video: AFEW SVM C", "video.C", 1.1, "A", _PT),
    Setting("A", "video: VGAF SVM C", "video.C_vgaf", 0.5, "A", _PT),
    # ---- paper B on AffectNet
    Setting("B", "backbone", "gcn_train.backbone", "densenet121", "B", "models.py"),
    Setting("B", "ImageNet start", "gcn_train.pretrained", "timm-hub", "B", "models.py"),
    Setting("B", "no earlier checkpoint", "gcn_train.init_from", "none", "B", "models.py"),
    Setting("B", "global pooling", "gcn_train.pool", "max", "B", "models.py"),
    Setting("B", "face framing", "gcn_train.align", "eyes", "B", "dataloading.py"),
    Setting("B", "input size", "gcn_train.image_size", 227, "B", _MAIN),
    Setting("B", "augmentation", "gcn_train.augment", "flip_rotate30", "B", _MAIN),
    Setting("B", "batch size", "gcn_train.batch_size", 35, "B", _MAIN),
    Setting("B", "head-only epochs", "gcn_train.head_epochs", 0, "B", _MAIN),
    Setting("B", "epochs", "gcn_train.full_epochs", 10, "B", _MAIN),
    Setting("B", "lr", "gcn_train.lr_full", 1e-3, "B", _MAIN),
    Setting("B", "optimiser", "gcn_train.optimizer", "sgd", "B", _MAIN),
    Setting("B", "SGD momentum", "gcn_train.momentum", 0.9, "B", _MAIN),
    Setting("B", "weight decay", "gcn_train.weight_decay", 1e-3, "B", _MAIN),
    Setting("B", "SAM", "gcn_train.sam", False, "B", _MAIN),
    Setting("B", "scheduler", "gcn_train.scheduler", "step", "B", _MAIN),
    Setting("B", "scheduler step (epochs)", "gcn_train.step_size", 10, "B", _MAIN),
    Setting("B", "scheduler factor", "gcn_train.gamma", 0.1, "B", _MAIN),
    Setting("B", "class-weighted CE", "gcn_train.class_weights", True, "B", _MAIN),
    Setting("B", "label smoothing", "gcn_train.label_smoothing", 0.0, "B", _MAIN),
    Setting("B", "bf16 autocast", "gcn_train.amp", False, "B", "training.py"),
    # the GCN has 7 expression nodes, so its expression accuracy is the authors' 7-class accuracy
    Setting("B", "selection metric", "gcn_train.select_metric", "expression_accuracy", "B", _MAIN),
    Setting("B", "model selection", "gcn_train.select_split", "report", "B", _MAIN, _SELECTION),
    # ---- paper B's label graph and GCN
    Setting("B", "edge threshold tau", "gcn.tau", 0.1, "B", "utils.py"),
    Setting("B", "re-weighting p", "gcn.p", 0.5, "B", "utils.py"),
    Setting("B", "GCN layers", "gcn.layers", 2, "B", "models.py"),
    Setting("B", "GCN hidden width", "gcn.hidden", 512, "B", "models.py"),
    Setting("B", "LeakyReLU slope", "gcn.negative_slope", 0.2, "B", "models.py"),
    Setting("B", "expression nodes", "gcn.n_expr", 7, "B", "models.py"),
    Setting("B", "GCN lr scale", "gcn.lr_scale", 1.0, "B", _MAIN),
    Setting(
        "B",
        "node embeddings",
        "gcn.embedding",
        "300-d GloVe (Wikipedia) file",
        "B",
        "README.md",
        reason="no download at run time: a MiniLM sentence embedding ships with the package; pass a "
        "GloVe-format file to gcn.embedding for the authors' vectors",
    ),
    Setting("B", "valence/arousal output scale", "gcn.va_scale", 1.0, "B", "models.py"),
    # ---- paper B on Aff-Wild2
    Setting("B", "Aff-Wild2: input size", "affwild2_train.image_size", 112, "B", _MAIN),
    Setting("B", "Aff-Wild2: class-weighted CE", "affwild2_train.class_weights", False, "B", _MAIN),
    Setting(
        "B",
        "Aff-Wild2: frames with both labels",
        "gcn.affwild2_both_labels",
        True,
        "B",
        "pickle_annotations_affwild2.py",
    ),
    # the authors' Aff-Wild2 command line is not published: 10 is main.py's default
    Setting("B", "Aff-Wild2: epochs", "affwild2_train.full_epochs", 10, "B", _MAIN),
]


def read_setting(profile: Profile, key: str | Callable[[Profile], Any]) -> Any:
    """The profile's value at a dotted key (or from a reader); an unknown key is an error naming the
    valid ones, never a silent blank."""
    if callable(key):
        return key(profile)
    target: Any = profile
    for part in key.split("."):
        if target is None:
            raise KeyError(f"{key!r}: section is unset in profile {profile.name!r}")
        if not hasattr(target, part):
            known = sorted(vars(target)) if hasattr(target, "__dict__") else []
            raise KeyError(f"unknown profile key {key!r} at {part!r}; known here: {', '.join(known)}")
        target = getattr(target, part)
    return target


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _show(v: Any) -> str:
    if v is None:
        return "None"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (tuple, list)):
        return ", ".join(_show(x) for x in v)
    return str(v)


def status(setting: Setting, value: Any) -> str:
    """``match``, ``differs: <reason>`` or ``UNEXPLAINED`` (a difference without a declared reason)."""
    if _same(value, setting.authors):
        return "match"
    return f"differs: {setting.reason}" if setting.reason else "UNEXPLAINED"


def settings_table(profile: Profile | None = None) -> pd.DataFrame:
    """Every row of :data:`SETTINGS` with the profile's value and its status (default: ``paper``)."""
    profile = profile if profile is not None else get_profile("paper")
    rows = []
    for s in SETTINGS:
        value = read_setting(profile, s.key)
        rows.append((s.paper, s.setting, _show(s.authors), _show(value), status(s, value), s.source))
    return pd.DataFrame(rows, columns=COLUMNS)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(df: pd.DataFrame) -> str:
    """The table as GitHub markdown (one line per row, pipes escaped)."""
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(str(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


_SECTION = re.compile(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), re.DOTALL)


def doc_section(text: str) -> str:
    """The text between the markers of a document (an error where they are missing)."""
    m = _SECTION.search(text)
    if m is None:
        raise ValueError(f"no {BEGIN} ... {END} section in the document")
    return m.group(1)


def rewrite(text: str, table: str) -> str:
    """``text`` with the marked section replaced by ``table``."""
    doc_section(text)  # raises where the markers are missing
    return _SECTION.sub(lambda _: f"{BEGIN}\n{table}{END}", text, count=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fer_lib.paper_settings",
        description="The paper profile's settings beside the authors' (printed, or written into a doc).",
    )
    p.add_argument("--write", metavar="DOC", help="rewrite the marked section of this markdown file")
    p.add_argument("--check", metavar="DOC", help="exit 1 when the marked section of DOC is out of date")
    args = p.parse_args(argv)
    table = render_markdown(settings_table())
    if args.write:
        doc = Path(args.write)
        doc.write_text(rewrite(doc.read_text(encoding="utf-8"), table), encoding="utf-8")
        print(f"wrote the paper-settings table into {doc}")
    elif args.check:
        if doc_section(Path(args.check).read_text(encoding="utf-8")) != table:
            print(f"{args.check}: the paper-settings table is out of date; run with --write", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
