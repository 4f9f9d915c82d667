"""The first cell after a notebook's parameters: ``cfg, paths = fer_lib.notebook.setup(profile, overrides)``.

It resolves the profile (``profile`` None: ``$FER_PROFILE``, else ``default``) with the overrides and,
for the sections whose dataset is the synthetic stand-in, the profile's ``stand_in`` changes
(:func:`fer_lib.chain.with_stand_ins`), the run's folders, seeds python / numpy / torch with the profile's seed, and shows where the notebook reads
and writes. The summary is one output that also carries the run's folder and profile as output metadata
(:data:`fer_lib.runner.RUN_MARKER`): the Lab server's post-save hook (``jupyter_server_config.py``)
reads it to file a notebook saved with outputs into that run folder, as ``python -m fer_lib reproduce``
does.
"""

from __future__ import annotations

import time
from typing import Any

from .config import Paths, Profile, get_paths, get_profile, seed_everything
from .runner import RUN_MARKER


def summary(cfg: Profile, paths: Paths) -> str:
    """The profile's settings, where the real datasets come from and where this run writes."""
    from .chain import stood_in

    real = paths.real_root or "none (FER_DATA_ROOT unset): synthetic default"
    fake = stood_in(cfg, paths)
    if cfg.stand_in and fake:  # (None or {}: off)
        real = f"{real}\nsynthetic stand-ins ({', '.join(f'{k}={v}' for k, v in cfg.stand_in.items())}): {', '.join(fake)}"
    where = (
        "(published)"
        if paths.published
        else "(exploratory run; python -m fer_lib reproduce --publish writes results/)"
    )
    return f"{cfg.summary()}\nreal datasets: {real}\nresults: {paths.results} {where}"


def run_marker(cfg: Profile, paths: Paths, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """What the setup output records of the run (read back by :func:`fer_lib.runner.record_lab_run`)."""
    return {
        "profile": cfg.name,
        "overrides": dict(overrides or {}),
        "results": str(paths.results),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def setup(
    profile: str | None = None, overrides: dict[str, Any] | None = None, *, seed: bool = True
) -> tuple[Profile, Paths]:
    """The profile and the run's paths of a notebook; seeds everything (unless ``seed=False``) and shows
    :func:`summary`. Raises on an unknown profile or override before anything runs."""
    from .chain import with_stand_ins

    cfg = get_profile(profile, overrides)
    paths = get_paths(cfg)
    cfg = with_stand_ins(cfg, paths)  # sections on synthetic data take the profile's stand-in changes
    if seed:
        seed_everything(cfg.seed)
    _show(summary(cfg, paths), {RUN_MARKER: run_marker(cfg, paths, overrides)})
    return cfg, paths


def _show(text: str, metadata: dict[str, Any]) -> None:
    """``text`` as one plain-text output carrying ``metadata`` in a kernel; printed elsewhere."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebook dependencies
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(text)
        return
    from IPython.display import display

    display({"text/plain": text}, raw=True, metadata=metadata)
