"""Weights files: reading a state dict from a local file, and loading the tensors of it that fit a module.

``read_state_dict(path)`` accepts the usual layouts (bare, under ``state_dict`` / ``model``,
``.safetensors``, DDP / torch.compile prefixes) and refuses whole pickled models unless trusted;
``load_matching(module, state)`` loads what fits by name and shape and says what did not
(:class:`LoadReport`). Used by the backbones, the ImageNet weights and the checkpoint io alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


@dataclass
class LoadReport:
    """What happened when a weights file was loaded into a module."""

    path: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # in the model, not in the file (kept as init)
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model (ignored)
    mismatched: list[str] = field(default_factory=list)  # same name, different shape (ignored)

    def __str__(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" ... (+{len(keys) - 6})" if len(keys) > 6 else "")

        parts = [f"{self.loaded} tensors loaded from {self.path}"]
        for name in ("missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{len(keys)} {name}: {few(keys)}")
        return "; ".join(parts)


def read_state_dict(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from a local weights file.

    Accepts a bare state dict, a dict holding one under ``state_dict`` / ``model`` / ``model_state``
    (fer_lib and many training scripts), ``.safetensors`` files, and the ``module.`` / ``_orig_mod.``
    prefixes of DDP and torch.compile. Whole pickled models (e.g. the public HSEmotion ``.pt`` files)
    are refused unless ``trust_pickle=True``: unpickling runs arbitrary code from the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist; download it yourself (nothing is fetched at run time) "
            "and pass its local path, or use pretrained_file=None for random initialisation"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
        except Exception as exc:  # noqa: BLE001 - re-raised with advice
            raise ValueError(
                f"{path} is not a plain state dict ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
                "If it is a whole pickled model from a source you trust, pass trust_pickle=True"
            ) from exc
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors; cannot initialise a model from it")
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def load_matching(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    source: str = "<state dict>",
    drop_prefixes: tuple[str, ...] = (),
) -> LoadReport:
    """Load every tensor of ``state`` whose name and shape match ``module``; report the rest.

    Keys starting with one of ``drop_prefixes`` (e.g. a classifier) are skipped silently.
    """
    own = module.state_dict()
    report = LoadReport(path=source)
    keep = {}
    for k, v in state.items():
        if any(k.startswith(p) for p in drop_prefixes):
            continue
        if k not in own:
            report.unexpected.append(k)
        elif own[k].shape != v.shape:
            report.mismatched.append(f"{k} {tuple(v.shape)} -> {tuple(own[k].shape)}")
        else:
            keep[k] = v
    report.missing = [k for k in own if k not in keep and not k.endswith("num_batches_tracked")]
    module.load_state_dict(keep, strict=False)
    report.loaded = len(keep)
    return report
