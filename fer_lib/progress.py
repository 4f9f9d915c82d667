"""Progress bars: a widget in JupyterLab, one self-updating line in a terminal, none in headless kernels.

``tqdm.auto`` picks the widget bar inside a Jupyter kernel (ipywidgets is in the environment) and the
text bar elsewhere. A kernel nobody watches (papermill under the runner, nbval) has no frontend to
draw widgets, so the runner and ``make test`` set ``FER_PROGRESS=0`` and the bars are skipped there.
Inner bars (per batch, per file inside a dataset loop) pass ``leave=False`` so only outer ones remain.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm as _auto_tqdm


def enabled() -> bool:
    """False where ``$FER_PROGRESS`` is 0 / false / no / off."""
    return os.environ.get("FER_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def tqdm(*args: Any, **kwargs: Any):
    """``tqdm.auto.tqdm`` with the bar disabled where :func:`enabled` is False."""
    if not enabled():
        kwargs["disable"] = True
    return _auto_tqdm(*args, **kwargs)
