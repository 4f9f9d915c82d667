"""The model served when none is given: the run's expression model, else the published models.

``default_checkpoint()`` is the one fallback of ``python -m fer_lib predict``, ``Recognizer()`` and the
demo notebook: the expression model of notebook 02 in the run folder (with valence-arousal where it
exists); without one, the models a published run committed under ``results/models/`` (expression +
attributes, with the repository), with a note on stderr saying so; else :class:`NoCheckpointError`
naming the commands that make one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..paths import EXPRESSION_SERVED

#: Checkpoints tried, in order, when none is given (relative to ``get_paths().checkpoints``): the run
#: layout's served expression models.
DEFAULT_CHECKPOINTS = tuple(f"{folder}/best.pt" for folder in EXPRESSION_SERVED)
#: What a published run commits under results/models/ (see fer_lib.stages.report.publish_models).
PUBLISHED_MODELS = ("expression.pt", "attributes.pt")


class NoCheckpointError(FileNotFoundError):
    """No checkpoint was given and none of the default ones exists."""


def published_models(folder: str | os.PathLike | None = None) -> list[Path]:
    """The models a published run committed (``results/models/``: :data:`PUBLISHED_MODELS` that exist)."""
    if folder is None:
        from ..config import PUBLISHED_DIR, repo_root

        folder = repo_root() / PUBLISHED_DIR / "models"
    return [Path(folder) / name for name in PUBLISHED_MODELS if (Path(folder) / name).is_file()]


def default_checkpoint(
    checkpoints_dir: str | os.PathLike | None = None, published: str | os.PathLike | None = None
) -> Path | list[Path]:
    """The expression model of notebook 02 (with valence-arousal where it exists) in the run folder;
    without one, the published run's models (``results/models/``: expression + attributes, committed
    with the repository), with a note on stderr saying so."""
    if checkpoints_dir is None:
        from ..config import get_paths

        checkpoints_dir = get_paths().checkpoints
    root = Path(checkpoints_dir)
    for rel in DEFAULT_CHECKPOINTS:
        if (root / rel).is_file():
            return root / rel
    models = published_models(published)
    if models:
        print(
            f"[fer_lib] no local checkpoint under {root}: using the published models "
            f"{' + '.join(str(m) for m in models)} (model cards beside them)",
            file=sys.stderr,
        )
        return models
    raise NoCheckpointError(
        f"no checkpoint given and none found at {', '.join(str(root / r) for r in DEFAULT_CHECKPOINTS)} "
        "(nor published models under results/models/); train one with `python -m fer_lib finetune` "
        "(after `python -m fer_lib prepare`), or pass --checkpoint PATH (a fer_lib .pt, an ONNX file "
        "from `python -m fer_lib export`, or a converted HSEmotion model from `python -m fer_lib "
        "import-hsemotion`)"
    )
