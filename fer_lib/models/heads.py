"""Multi-task network of paper A: one backbone, one head per task.

Head layout (``tasks`` maps a head name to its number of outputs): which heads exist, their allowed
sizes and which sit on the attribute trunk come from the task registry (:mod:`fer_lib.tasks`).

* ``identity`` (N identities), ``expression`` (8 or 7 classes, canonical order of
  ``fer_lib.labels.EXPRESSIONS_8``) and ``va`` (2 outputs: valence, arousal, no activation) are
  linear layers on the pooled backbone feature, as in the face-ID pre-training and the expression /
  valence-arousal fine-tuning of paper A;
* the facial attributes ``age``, ``gender``, ``race`` (``TaskSpec.on_trunk``) share paper A's extra
  ``Dense(hidden=256) + ReLU`` layer on the pooled feature (``hidden=0`` removes it).

Age: ``age_mode="bins"`` gives ``tasks["age"]`` logits over one-year bins (bin i = age i years, 100
bins = ages 0..99) read out as the expected value over the two most probable bins (renormalised);
``age_mode="median"`` the same bins read out as their median (:func:`predict_age`);
``age_mode="regression"`` gives one output that predicts ``age / AGE_SCALE`` (years / 100), trained with
L1.

Gender: label 0 = male, 1 = female (UTKFace). With ``tasks["gender"] == 1`` the head is a single logit
``z`` trained with BCE against the label, so ``sigmoid(z) = p(female)`` and ``p(male) = 1 - sigmoid(z)``;
paper A calls a face male when ``p(male) >= 0.6`` (:func:`predict_gender`). With 2 outputs it is a
softmax over (male, female).

The readouts (:func:`predict_age`, :func:`gender_prob_female`, :func:`predict_gender`) live with the
registry, which evaluation and serving share; they are re-exported here.

Grey heads: the heads named in ``grey_heads`` (the default profile's ``age`` and ``gender``) are read, in
eval mode, from the face's greyscale view (:meth:`MultiTaskNet.grey_view`: its luma in all three
channels, computed inside the network from the normalised input), the other heads from the face as it
is. A photo and its greyscale copy then give the same age and gender (to PIL's rounding of the luma),
while ethnicity still sees skin tone. Eval mode costs a second backbone pass (one batch of twice the
faces); training (``TrainConfig.grey`` shows faces grey as an augmentation) runs one pass as before.

Mirror: with ``mirror``, every head reads, in eval mode, the mean of its outputs (logits, regressions)
on the face and on its mirror image (each view of it, with grey heads), so a photo and its mirror image
get the same answers and the answer leans less on one crop's pixels; this doubles the eval batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..labels import MALE_THRESHOLD
from ..preprocess import LUMA, Preprocess
from ..tasks import (
    AGE_MODES,
    AGE_SCALE,
    all_tasks,
    gender_prob_female,
    get_task,
    predict_age,
    predict_gender,
    task_names,
)
from .backbones import create_backbone

__all__ = [
    "AGE_SCALE",
    "ATTRIBUTE_TASKS",
    "HEAD_INPUTS",
    "MultiTaskNet",
    "TASK_NAMES",
    "freeze_backbone",
    "gender_prob_female",
    "predict_age",
    "predict_gender",
]

#: The registry's heads and its attribute-trunk heads when this module was imported (read
#: fer_lib.tasks for heads registered later).
TASK_NAMES = task_names()
ATTRIBUTE_TASKS = tuple(spec.key for spec in all_tasks() if spec.on_trunk)
#: What the expression / valence-arousal / identity heads read: the pooled feature (paper A's
#: EfficientNets) or the attribute model's Dense-256 layer (paper A's MobileNet path, whose AffectNet
#: head was put on that layer of the age / gender model).
HEAD_INPUTS = ("feature", "attribute_trunk")


class MultiTaskNet(nn.Module):
    """Backbone + task heads; ``forward(x)`` -> ``{head: output}``, ``forward_features(x)`` -> ``[B, D]``.

    Output shapes: classification heads ``[B, C]`` logits; ``age`` ``[B, bins]`` logits or ``[B]``
    (regression, in units of ``AGE_SCALE`` years); ``gender`` ``[B]`` logit (one output) or ``[B, 2]``;
    ``va`` ``[B, 2]`` (valence, arousal).
    """

    def __init__(
        self,
        backbone: str,
        tasks: dict[str, int],
        hidden: int = 256,
        dropout: float = 0.0,
        age_mode: str = "bins",
        pretrained_file: str | None = None,
        verbose: bool = True,
        input_size: int | None = None,
        pretrained: str | None = None,
        male_threshold: float = MALE_THRESHOLD,
        pool: str = "avg",
        head_on: str = "feature",
        grey_heads: tuple[str, ...] | list[str] = (),
        mirror: bool = False,
    ) -> None:
        super().__init__()
        unknown = set(tasks) - set(task_names())
        if unknown:
            raise ValueError(f"unknown task head(s) {sorted(unknown)}; heads are {task_names()}")
        if not tasks:
            raise ValueError("MultiTaskNet needs at least one task head")
        if age_mode not in AGE_MODES:
            raise ValueError(f"age_mode must be one of {', '.join(AGE_MODES)}, got {age_mode!r}")
        specs = {t: get_task(t) for t in tasks}
        for t, n in tasks.items():
            specs[t].check_outputs(int(n))
        if head_on not in HEAD_INPUTS:
            raise ValueError(f"head_on={head_on!r}: choose one of {', '.join(HEAD_INPUTS)}")
        if set(grey_heads) - set(tasks):
            raise ValueError(
                f"grey_heads {sorted(set(grey_heads) - set(tasks))} name no head of this model; "
                f"its heads are {', '.join(tasks)}"
            )
        self.backbone_name = backbone
        # an age head in regression mode is one output (age / AGE_SCALE)
        self.tasks = {
            k: 1 if age_mode == "regression" and specs[k].decode == "age" else int(v)
            for k, v in tasks.items()
        }
        self.hidden, self.dropout_p, self.age_mode = int(hidden), float(dropout), age_mode
        # p(male) at or above which a face is called male: paper A's 0.6 until a stage chooses it on
        # validation data (fer_lib.stages.pretrain.choose_male_threshold); checkpoints store it.
        self.male_threshold = float(male_threshold)
        self.pool, self.head_on = pool, head_on
        # the heads read from the grey view in eval mode, in head order
        self.grey_heads = tuple(h for h in self.tasks if h in grey_heads)
        # in eval mode, every head reads the mean of its outputs on the face and on its mirror image
        self.mirror = bool(mirror)
        self.backbone, self.num_features, default_size, mean, std = create_backbone(
            backbone, pretrained_file, verbose=verbose, pretrained=pretrained, pool=pool
        )
        # What a face goes through before this network; the trainer sets it to what it trained with.
        self.preprocess = Preprocess(input_size or default_size, tuple(mean), tuple(std))
        self.dropout = nn.Dropout(dropout)
        d = self.num_features
        self._on_trunk = tuple(t for t in self.tasks if specs[t].on_trunk or head_on == "attribute_trunk")
        self.attribute_trunk = (
            nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True))
            if self._on_trunk and hidden > 0
            else None
        )
        d_attr = hidden if self.attribute_trunk is not None else d
        self.heads = nn.ModuleDict(
            {name: nn.Linear(d_attr if name in self._on_trunk else d, n) for name, n in self.tasks.items()}
        )
        self._backbone_frozen = False

    # ------------------------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone feature ``[B, num_features]``."""
        return self.backbone(x)

    def forward_heads(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Head outputs from a pooled feature."""
        feat = self.dropout(feat)
        attr = None
        out = {}
        for name, head in self.heads.items():
            if name in self._on_trunk:
                if attr is None:
                    attr = (
                        self.dropout(self.attribute_trunk(feat)) if self.attribute_trunk is not None else feat
                    )
                y = head(attr)
            else:
                y = head(feat)
            out[name] = y.squeeze(-1) if y.shape[-1] == 1 else y
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training or not (self.grey_heads or self.mirror):
            return self.forward_heads(self.forward_features(x))
        # eval: the views the readout needs (the face, its grey view; each mirrored) in one batch
        views = [x, self.grey_view(x)] if self.grey_heads else [x]
        if self.mirror:
            views += [v.flip(-1) for v in views]
        feat = self.forward_features(torch.cat(views))
        feat = feat.reshape(len(views), -1, feat.shape[-1])  # (not split(B): ONNX keeps the batch dynamic)
        outs = [self.forward_heads(feat[i]) for i in range(len(views))]
        if self.mirror:  # each view's outputs averaged with its mirror image's
            k = len(outs) // 2
            outs = [{name: (a[name] + b[name]) / 2 for name in a} for a, b in zip(outs[:k], outs[k:])]
        colour, grey = outs[0], outs[-1]
        return {name: grey[name] if name in self.grey_heads else y for name, y in colour.items()}

    def grey_view(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised input of each face's greyscale copy, from the normalised input ``x``
        (``[B, 3, H, W]``): undo the mean / std, take the luma (ITU-R 601, as
        :meth:`~fer_lib.preprocess.Preprocess.to_grey`), repeat it on the three channels, normalise again.
        The luma commutes with the contrast standardisation (the same shift and scale on every channel)
        and with resizing, so this is what a greyscale photo of the face reaches the network as."""
        shape = (1, 3, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        luma = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(shape)
        y = ((x * std + mean) * luma).sum(dim=1, keepdim=True)
        return (y - mean) / std

    # ------------------------------------------------------------------------------------- config
    @property
    def input_size(self) -> int:
        return self.preprocess.input_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.preprocess.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.preprocess.std

    def config(self) -> dict[str, Any]:
        """Plain values that rebuild this architecture and its input (stored in checkpoints)."""
        return {
            "backbone": self.backbone_name,
            "tasks": dict(self.tasks),
            "hidden": self.hidden,
            "dropout": self.dropout_p,
            "age_mode": self.age_mode,
            "male_threshold": self.male_threshold,
            "pool": self.pool,
            "head_on": self.head_on,
            "grey_heads": list(self.grey_heads),
            "mirror": self.mirror,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "num_features": self.num_features,
            "preprocess": self.preprocess.to_dict(),
        }

    def train(self, mode: bool = True) -> MultiTaskNet:
        """Like ``nn.Module.train``, but a frozen backbone stays in eval mode (BatchNorm statistics fixed)."""
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()
        return self


def freeze_backbone(model: nn.Module, frozen: bool = True) -> nn.Module:
    """Freeze (or unfreeze) the backbone for paper A's head-only stage.

    Frozen: no gradient to backbone parameters and BatchNorm in eval mode, so the backbone is exactly
    unchanged by the stage (as Keras' ``trainable=False``). Works on a DDP-wrapped model too.
    """
    net = getattr(model, "module", model)
    for p in net.backbone.parameters():
        p.requires_grad_(not frozen)
    net._backbone_frozen = frozen
    net.train(net.training)
    return model
