"""Import the public HSEmotion checkpoints (paper A's released models) as fer_lib checkpoints.

The HSEmotion ``.pt`` files (``enet_b0_8_best_afew.pt``, ``enet_b2_8.pt``, ``enet_b0_8_va_mtl.pt``, ...)
are whole pickled timm models: loading one runs ``pickle``, which can execute any code the file
carries, and ties the file to the timm version that wrote it. :func:`import_hsemotion` therefore

1. refuses to open the file unless the caller passes ``trust=True`` (``--trust`` on the command line)
   after deciding the file comes from a source they trust; nothing of the file is unpickled before;
2. with trust, loads it once with ``torch.load(weights_only=False)`` and finds the timm architecture
   (``pretrained_cfg["architecture"]``, else the candidate whose tensor shapes fit) and the classifier
   (a ``Linear`` or the ``Sequential(Linear)`` the HSEmotion training notebooks put there);
3. builds a :class:`fer_lib.models.MultiTaskNet` of that backbone, copies the backbone tensors
   (strictly: every tensor must fit) and the classifier rows, **reordered** from HSEmotion's
   alphabetical order (Anger, Contempt, Disgust, Fear, Happiness, Neutral, Sadness, Surprise; 7-class
   models lack Contempt) to fer_lib's canonical order (:data:`fer_lib.labels.EXPRESSIONS_8`); for the
   multi-task ``_mtl`` models (8 + 2 outputs) the last two rows become the ``va`` head (valence,
   arousal);
4. checks that the converted model reproduces the original model's outputs (reordered) on random
   input, reports the largest absolute difference, and writes a weights-only fer_lib checkpoint
   (state dict, model config, canonical label orders) that every stage can use: ``Recognizer``,
   ``predict``, ``export``, the video features (``TorchFeatureExtractor``), evaluation.

Preprocessing matches HSEmotion's (resize to 224, or 260 for EfficientNet-B2, RGB, ImageNet mean/std):
fer_lib takes the input size from :data:`fer_lib.models.PAPER_INPUT_SIZES` and mean/std from timm.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import labels as label_spaces

#: Architectures tried (shape match) when a pickled model does not name its timm architecture.
CANDIDATE_ARCHS = (
    "efficientnet_b0",
    "efficientnet_b2",
    "tf_efficientnet_b0",
    "tf_efficientnet_b2",
    "mobilenetv2_100",
    "mobilenetv2_050",
    "mobilenetv1_100",
    "rexnet_150",
    "mobilevit_s",
)
VERIFY_TOL = 1e-4


class UntrustedPickleError(PermissionError):
    """The file is a pickle and the caller did not say it trusts it."""


@dataclass
class ConversionReport:
    source: str
    sha256: str
    architecture: str
    n_outputs: int
    expression_classes: int
    has_va: bool
    foreign_order: list[str]
    input_size: int
    max_abs_diff: float = float("nan")
    output_scale: float = float("nan")
    out: str | None = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        kind = f"{self.expression_classes} expressions" + (" + valence/arousal" if self.has_va else "")
        lines = [
            f"{self.source}: timm {self.architecture}, {self.n_outputs} outputs ({kind}), "
            f"input {self.input_size} px, sha256 {self.sha256[:16]}...",
            f"expression rows reordered from {list(self.foreign_order)} to "
            f"{list(label_spaces.EXPRESSIONS_8[: self.expression_classes])}",
            f"max abs diff of the converted model vs the original (reordered) on random input: "
            f"{self.max_abs_diff:.2e} (largest output {self.output_scale:.3g})",
        ]
        if self.out:
            lines.append(f"wrote {self.out}")
        return "\n".join(lines + self.notes)


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def refusal_message(path: str | os.PathLike, sha: str | None = None) -> str:
    return (
        f"refusing to load {path}: HSEmotion checkpoints are whole pickled models, and unpickling a file "
        "runs whatever code it carries (a crafted .pt can delete files or open a shell). Nothing of the "
        "file has been unpickled. If it comes from a source you trust (e.g. you downloaded it yourself "
        "from the HSEmotion / EmotiEffLib releases"
        + (f" and its sha256 {sha} matches the published one" if sha else "")
        + "), pass --trust (trust=True in Python). The converted fer_lib checkpoint is a plain state "
        "dict that loads without pickle code (weights_only=True) afterwards."
    )


def load_pickled_model(path: str | os.PathLike, trust: bool = False):
    """The ``nn.Module`` pickled in ``path`` (``trust=True`` required: see the module docstring)."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; download the HSEmotion .pt yourself (nothing is "
            "fetched at run time) and pass its local path"
        )
    if not trust:
        raise UntrustedPickleError(refusal_message(path, sha256_of(path)))
    import timm  # noqa: F401 - the pickle refers to timm classes

    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict):  # {"model": module} wrappers
        obj = next((v for v in obj.values() if isinstance(v, torch.nn.Module)), obj)
    if not isinstance(obj, torch.nn.Module):
        raise ValueError(
            f"{path} holds a {type(obj).__name__}, not a whole pickled model; for a plain state "
            "dict use fer_lib.models.create_backbone(name, pretrained_file=...)"
        )
    return obj


# ------------------------------------------------------------------------------------------ analysis
def _classifier(model) -> tuple[str, Any]:
    """``(state-dict prefix, Linear)`` of a timm model's classifier (Linear or Sequential(Linear))."""
    import torch

    get = getattr(model, "get_classifier", None)
    cls = get() if callable(get) else getattr(model, "classifier", None)
    if cls is None:
        raise ValueError("the model has no classifier (get_classifier() / .classifier); is it a timm model?")
    names = {id(m): n for n, m in model.named_modules()}
    prefix = names.get(id(cls))
    if prefix is None:
        raise ValueError("cannot locate the classifier module inside the model")
    if isinstance(cls, torch.nn.Linear):
        return prefix, cls
    linears = (
        [m for m in cls.modules() if isinstance(m, torch.nn.Linear)]
        if isinstance(cls, torch.nn.Module)
        else []
    )
    if len(linears) != 1:
        raise ValueError(
            f"expected the classifier to be one Linear layer (optionally inside a Sequential), "
            f"found {type(cls).__name__} with {len(linears)} Linear layers"
        )
    return prefix, linears[0]


def _architecture(model, backbone_state: dict, arch: str | None) -> str:
    import timm

    for cfg_name in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, cfg_name, None) or {}
        name = cfg.get("architecture") if isinstance(cfg, dict) else None
        if arch is None and name and timm.is_model(name):
            arch = name
    if arch is not None:
        return arch
    shapes = {k: tuple(v.shape) for k, v in backbone_state.items()}
    for cand in CANDIDATE_ARCHS:
        m = timm.create_model(cand, pretrained=False, num_classes=0)
        if {k: tuple(v.shape) for k, v in m.state_dict().items()} == shapes:
            return cand
    raise ValueError(
        "cannot tell the timm architecture of this model (no pretrained_cfg and none of "
        f"{CANDIDATE_ARCHS} fits its tensors); pass arch=... / --arch NAME"
    )


def layout(n_outputs: int, n_classes: int | None = None) -> tuple[int, bool]:
    """``(expression classes, has_va)`` from the classifier's output count (7, 8, 9 = 7+VA, 10 = 8+VA)."""
    if n_classes is not None:
        if n_classes not in (7, 8) or n_outputs not in (n_classes, n_classes + 2):
            raise ValueError(f"{n_outputs} outputs do not fit {n_classes} expression classes (+2 VA)")
        return n_classes, n_outputs == n_classes + 2
    table = {7: (7, False), 8: (8, False), 9: (7, True), 10: (8, True)}
    if n_outputs not in table:
        raise ValueError(
            f"the classifier has {n_outputs} outputs; HSEmotion models have 7 or 8 expressions "
            "(+2 valence/arousal for the _mtl models)"
        )
    return table[n_outputs]


# ---------------------------------------------------------------------------------------- conversion
def convert_timm_model(
    model,
    arch: str | None = None,
    n_classes: int | None = None,
    foreign_order: list[str] | tuple[str, ...] | None = None,
    verify: bool = True,
    seed: int = 0,
    tol: float = VERIFY_TOL,
):
    """An in-memory HSEmotion-style timm model -> ``(MultiTaskNet, ConversionReport)``."""
    import torch

    from .models import MultiTaskNet

    model = model.cpu().float().eval()
    prefix, linear = _classifier(model)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix + ".")}
    arch = _architecture(model, state, arch)
    n_out = int(linear.out_features)
    n_expr, has_va = layout(n_out, n_classes)
    order = (
        tuple(foreign_order)
        if foreign_order is not None
        else (label_spaces.HSEMOTION_ORDER_8 if n_expr == 8 else label_spaces.HSEMOTION_ORDER_7)
    )
    if len(order) != n_expr:
        raise ValueError(f"foreign order {order} has {len(order)} names for {n_expr} classes")
    tasks = {"expression": n_expr, **({"va": 2} if has_va else {})}
    net = MultiTaskNet(arch, tasks, verbose=False).eval()
    own = net.backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"the pickled model's tensors do not fit timm {arch!r} (timm version drift?): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape differs {wrong[:5]}"
        )
    net.backbone.load_state_dict(state, strict=True)
    m = label_spaces.mapping_to_canonical(order, n_expr)  # foreign row i -> canonical row m[i]
    w, b = linear.weight.detach(), linear.bias.detach() if linear.bias is not None else None
    with torch.no_grad():
        head = net.heads["expression"]
        head.weight[torch.from_numpy(m)] = w[:n_expr]
        if b is not None:
            head.bias[torch.from_numpy(m)] = b[:n_expr]
        else:
            head.bias.zero_()
        if has_va:
            net.heads["va"].weight.copy_(w[n_expr:])
            net.heads["va"].bias.copy_(b[n_expr:] if b is not None else torch.zeros(2))
    report = ConversionReport(
        source=type(model).__name__,
        sha256="",
        architecture=arch,
        n_outputs=n_out,
        expression_classes=n_expr,
        has_va=has_va,
        foreign_order=list(order),
        input_size=int(net.input_size),
    )
    if verify:
        report.max_abs_diff, report.output_scale = compare_outputs(model, net, order, seed=seed)
        scale = report.output_scale
        if not report.max_abs_diff <= tol * max(1.0, scale):
            raise ValueError(
                f"the converted model differs from the original by {report.max_abs_diff:.3g} "
                f"(> {tol:g} x max(1, largest output {scale:.3g})); conversion failed"
            )
    return net, report


def compare_outputs(original, converted, foreign_order, seed: int = 0, batch: int = 2) -> tuple[float, float]:
    """``(largest |difference|, largest |output|)`` between the converted model's heads and the
    original's outputs (reordered) on random input; float32 sums in another order differ by ~1e-6
    of the output scale."""
    import torch

    size = int(converted.input_size)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref = original.eval()(x).float().numpy()
        out = converted.eval()(x)
    n = len(foreign_order)
    expected = label_spaces.reorder_columns(ref[:, :n], foreign_order)
    diff = float(np.abs(out["expression"].numpy() - expected).max())
    if "va" in out:
        diff = max(diff, float(np.abs(out["va"].numpy() - ref[:, n : n + 2]).max()))
    return diff, float(np.abs(ref).max())


def import_hsemotion(
    path: str | os.PathLike,
    out: str | os.PathLike,
    trust: bool = False,
    arch: str | None = None,
    n_classes: int | None = None,
    verify: bool = True,
) -> ConversionReport:
    """Convert an HSEmotion ``.pt`` (whole pickled timm model) into a fer_lib checkpoint at ``out``.

    Raises :class:`UntrustedPickleError` without ``trust=True`` (the file is not unpickled then).
    """
    import timm
    import torch

    from .models import save_checkpoint
    from .tasks import default_label_orders

    path = Path(path).expanduser()
    original = load_pickled_model(path, trust=trust)
    net, report = convert_timm_model(original, arch=arch, n_classes=n_classes, verify=verify)
    report.source, report.sha256 = str(path), sha256_of(path)
    info = {
        "imported_from": "hsemotion",
        "source_file": str(path),
        "sha256": report.sha256,
        "timm_architecture": report.architecture,
        "foreign_expression_order": report.foreign_order,
        "n_outputs": report.n_outputs,
        "max_abs_diff_vs_original": report.max_abs_diff,
        "output_scale": report.output_scale,
        "timm": timm.__version__,
        "torch": torch.__version__,
    }
    report.out = str(
        save_checkpoint(
            out, net, config={"source": info}, label_orders=default_label_orders(net.tasks), extra=info
        )
    )
    return report
