"""Half-precision copies of checkpoints for publishing (``results/models/``), checked through ``predict``.

:func:`half_precision_checkpoint` is what :func:`fer_lib.stages.report.publish_models` writes: float16
weights where the decoded predictions stay within a tolerance of the float32 model's, else a mixed or
float32 copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..export import ASTRONAUT_FACE_BOX, astronaut
from ..tasks import AGE_SCALE, softmax
from .recognizer import Recognizer, served_tasks

#: How far float16 outputs may be from float32 ones (probabilities, valence / arousal, age / 100 or the
#: age bins' probabilities: :func:`compared_outputs`) for a published copy to keep float16 weights. A
#: check of numerical equivalence, not of accuracy: the b36dce6 attribute model's mixed copy moves
#: p(female) on the astronaut's crops by at most 0.0022, where mirroring the same crops moves it by up
#: to 0.75 (2e-3 before, which that copy missed, keeping float32 and breaking the 20 MiB bound).
HALF_PRECISION_TOL = 5e-3


def compared_outputs(rec: Recognizer, crops) -> dict[str, np.ndarray]:
    """What a half-precision copy must reproduce, on one scale: every decoded output (probabilities,
    valence / arousal, a regressed age / 100), but an age head with one-year bins as its bins'
    probabilities. A median readout moves in whole years, so a rounding-level change of a face whose
    cumulative probability sits at 1/2 moves it by 0.01 on the age / 100 scale: twice the
    tolerance, whatever the weights' precision (it kept the first median-read attribute model at float32,
    over the 20 MiB bound of the published models)."""
    raw = rec.raw(rec.preprocess.batch(crops))
    out = rec.decode(raw)
    for spec in served_tasks(raw):
        if spec.decode == "age":
            head = np.asarray(raw[spec.key])
            binned = head.ndim == 2 and head.shape[1] > 1
            out[spec.public] = softmax(head) if binned else out[spec.public] / AGE_SCALE
    return out


def half_precision_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    tol: float = HALF_PRECISION_TOL,
    n_faces: int = 32,
) -> dict:
    """A smaller copy of a fer_lib checkpoint for publishing: weights stored in float16 (loaded back into
    float32), nothing but what serving needs (model config, label orders, metrics, run config).

    Kept only where the outputs of ``predict`` (:func:`compared_outputs`) stay within ``tol`` of the
    float32 model's on ``n_faces`` faces (the astronaut's face, shifted and
    mirrored). Tried in order: every float tensor in float16; ``"mixed"``: float16 for the large
    convolution / linear weights, float32 for the sensitive rest (1-D tensors such as BatchNorm and
    biases, tensors under 5,000 values such as depthwise kernels, the task heads); float32. Returns
    ``{"dtype", "max_abs_diff", "mb"}``.
    """
    from ..io import atomic_torch_save
    from ..models import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    keep = ("format", "model_config", "label_orders", "metrics", "metrics_model", "config", "versions")
    slim = {k: ckpt[k] for k in keep if k in ckpt}
    out = Path(out)
    reference = Recognizer(checkpoint, fold_bn=False)
    face = reference.preprocess.crop(astronaut(), ASTRONAUT_FACE_BOX)
    rng = np.random.default_rng(0)
    crops = []
    for i in range(n_faces):
        dy, dx = (int(v) for v in rng.integers(-8, 9, 2))
        c = np.roll(face, (dy, dx), axis=(0, 1))
        crops.append(c[:, ::-1] if i % 2 else c)
    full = compared_outputs(reference, crops)

    def sensitive(name: str, t) -> bool:
        return t.ndim <= 1 or t.numel() < 5000 or name.startswith(("heads.", "attribute_trunk."))

    rules = {"float16": lambda k, t: False, "mixed": sensitive}
    for dtype, keep32 in rules.items():
        sd = {
            k: v.half() if v.is_floating_point() and not keep32(k, v) else v
            for k, v in ckpt["state_dict"].items()
        }
        atomic_torch_save({**slim, "state_dict": sd}, out)
        small = compared_outputs(Recognizer(out, fold_bn=False), crops)
        diff = max(float(np.max(np.abs(full[k] - small[k]))) for k in full)
        if diff <= tol:
            return {"dtype": dtype, "max_abs_diff": diff, "mb": out.stat().st_size / 2**20}
    atomic_torch_save({**slim, "state_dict": ckpt["state_dict"]}, out)
    return {"dtype": "float32", "max_abs_diff": 0.0, "mb": out.stat().st_size / 2**20}
