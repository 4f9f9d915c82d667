"""The two ways a model runs: PyTorch (BatchNorm folded, channels_last) or onnxruntime (an exported file).

Both take a preprocessed ``uint8`` NHWC batch and return ``{head: raw output}`` as numpy arrays, and
both carry what decoding needs: ``tasks``, ``label_orders``, ``preprocess``, ``age_mode``,
``male_threshold``, ``source``. :func:`make_backend` picks one (by the file suffix unless told);
``backend="onnx"`` with a ``.pt`` checkpoint exports it on load (:func:`fer_lib.export.export_onnx`,
parity-checked). The ONNX file's head names, label orders and preprocessing come from its metadata
(:func:`fer_lib.export.read_metadata`, written by the exporter), so both backends give the same columns.

:func:`fold_batchnorm` folds eval-mode BatchNorm layers into the preceding convolutions; the torch
backend keeps the folded copy only when it reproduces the model's outputs (:func:`folded_copy`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..labels import MALE_THRESHOLD


def fold_batchnorm(model) -> int:
    """Fold every eval-mode BatchNorm that directly follows a Conv2d (registration order) into the conv.

    The conv gets ``weight * gamma / sqrt(var + eps)`` and the matching bias; the BatchNorm is replaced
    by what it did after normalising (timm's ``BatchNormAct2d``: its dropout and activation; a plain
    ``BatchNorm2d``: nothing). Modifies ``model`` in place; returns the number of folded pairs. The
    caller must check the outputs (:func:`folded_copy` does): registration order is assumed to be
    data-flow order, which holds for timm's CNNs but is not guaranteed for any module.
    """
    import torch
    from torch import nn

    n = 0
    for parent in list(model.modules()):
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if type(conv) is not nn.Conv2d or not isinstance(bn, nn.BatchNorm2d) or bn.training:
                continue
            if bn.running_var is None or conv.out_channels != bn.num_features:
                continue
            with torch.no_grad():
                scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)
                if bn.affine:
                    scale = bn.weight * scale
                shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
                fused = nn.Conv2d(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    conv.stride,
                    conv.padding,
                    conv.dilation,
                    conv.groups,
                    bias=True,
                    padding_mode=conv.padding_mode,
                ).to(conv.weight.device)
                fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                fused.bias.copy_((conv.bias if conv.bias is not None else 0.0) * scale + shift)
            after = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
            parent._modules[a] = fused.eval()
            parent._modules[b] = (
                nn.Sequential(*after).eval() if type(bn) is not nn.BatchNorm2d else nn.Identity()
            )
            n += 1
    return n


def folded_copy(model, image_size: int, tol: float = 1e-4):
    """A BatchNorm-folded copy of an eval-mode model when it reproduces the model's outputs (relative
    difference <= ``tol`` on random input), else None."""
    import copy

    import torch

    folded = copy.deepcopy(model).eval()
    if fold_batchnorm(folded) == 0:
        return None
    device = next(model.parameters()).device
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        ref, out = model(x), folded(x)
    ref = ref if isinstance(ref, dict) else {"out": ref}
    out = out if isinstance(out, dict) else {"out": out}
    for k in ref:
        scale = max(1.0, float(ref[k].abs().max()))
        if float((ref[k] - out[k]).abs().max()) > tol * scale:
            return None
    return folded


class TorchBackend:
    """A fer_lib model (checkpoint of any kind, or a model object, copied) run by PyTorch."""

    def __init__(
        self,
        checkpoint,
        device: str,
        channels_last: bool,
        precision: str,
        fold_bn: bool = True,
        compile_rows: int = 0,
    ):
        import copy

        import torch

        from ..models import load_model

        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        model, self.label_orders, self.source = load_model(checkpoint)
        if isinstance(checkpoint, torch.nn.Module):  # a copy: the caller's model is left as it is
            model = copy.deepcopy(model)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocess = model.preprocess
        self.folded = False
        if fold_bn:
            folded = folded_copy(self.model, self.preprocess.input_size)
            if folded is not None:
                self.model, self.folded = folded, True
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.precision = precision
        self.tasks = dict(model.tasks)
        self.age_mode = getattr(model, "age_mode", "bins")
        self.male_threshold = float(getattr(model, "male_threshold", MALE_THRESHOLD))
        # torch.compile (inductor, weights frozen into the graph) for passes of exactly compile_rows faces:
        # shorter passes are padded, so the graph is compiled once, at the first pass.
        self.compile_rows = int(compile_rows)
        self.compiled = torch.compile(self.model) if self.compile_rows else None

    def __call__(self, batch_u8: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        n = len(batch_u8)
        if self.compiled is not None:
            if n > self.compile_rows:
                raise ValueError(f"a pass of {n} faces; this model was compiled for {self.compile_rows}")
            pad = np.zeros((self.compile_rows - n, *batch_u8.shape[1:]), batch_u8.dtype)
            batch_u8 = np.concatenate([batch_u8, pad]) if len(pad) else batch_u8
        with torch.inference_mode():
            x = self.preprocess.normalise_torch(batch_u8, self.device)  # NHWC buffer = channels_last
            if not self.channels_last:
                x = x.contiguous()
            if self.compiled is not None:
                from torch._inductor import config as inductor_config

                with inductor_config.patch(freezing=True):
                    out = self._forward(self.compiled, x)
            else:
                out = self._forward(self.model, x)
            return {k: v[:n].float().cpu().numpy() for k, v in out.items()}

    def _forward(self, model, x):
        import torch

        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return model(x)
        return model(x)


class OnnxBackend:
    """An ONNX file from :func:`fer_lib.export.export_onnx` run by onnxruntime."""

    def __init__(self, path, device: str, threads: int | None):
        import onnxruntime as ort

        from ..export import read_metadata

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"ONNX model {path} does not exist; write one with "
                "`python -m fer_lib export CHECKPOINT --out model.onnx`"
            )
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        info = read_metadata(self.session, path)
        self.tasks = {k: int(v) for k, v in info["tasks"].items()}
        self.age_mode = info.get("age_mode", "bins")
        self.male_threshold = float(info.get("male_threshold", MALE_THRESHOLD))
        self.preprocess = info["preprocess"]
        self.label_orders = {k: list(v) for k, v in info["label_orders"].items()}
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.source = str(path)

    def __call__(self, batch_u8: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {self.input_name: self.preprocess.normalise(batch_u8)})
        return dict(zip(self.output_names, outs))


def make_backend(checkpoint, backend, device, threads, channels_last, precision, fold_bn, compile_rows=0):
    """The torch or onnxruntime backend of one model; ``backend`` None picks by the file suffix."""
    is_onnx_file = isinstance(checkpoint, (str, os.PathLike)) and Path(checkpoint).suffix.lower() == ".onnx"
    backend = backend or ("onnx" if is_onnx_file else "torch")
    if backend not in ("torch", "onnx"):
        raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    if backend == "onnx":
        if compile_rows:
            raise ValueError("compile=True is for the torch backend (onnxruntime optimises the graph itself)")
        return (
            OnnxBackend(checkpoint, device, threads)
            if is_onnx_file
            else onnx_from_checkpoint(checkpoint, device, threads)
        )
    return TorchBackend(checkpoint, device, channels_last, precision, fold_bn, compile_rows)


def onnx_from_checkpoint(checkpoint, device: str, threads: int | None) -> OnnxBackend:
    """Export a checkpoint (or model) to a temporary ONNX file (parity-checked) and load it."""
    import tempfile

    from ..export import export_onnx

    with tempfile.TemporaryDirectory(prefix="fer_lib_onnx_") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(checkpoint, path)
        backend = OnnxBackend(path, device, threads)  # the session holds the model in memory
    backend.source = (
        f"{checkpoint if isinstance(checkpoint, (str, os.PathLike)) else type(checkpoint).__name__}"
        " (exported to ONNX on load)"
    )
    return backend


def run_passes(backend, batches: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """``backend``'s outputs over ``uint8`` batches, concatenated per head."""
    outs: dict[str, list[np.ndarray]] = {}
    for batch_u8 in batches:
        for k, v in backend(batch_u8).items():
            outs.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in outs.items()}
