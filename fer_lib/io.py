"""Atomic writes: write to a temporary file in the same folder, fsync, then rename.

A run killed while writing leaves the previous file intact (rename is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_to_csv(df, path: str | os.PathLike, **kwargs: Any) -> Path:
    kwargs.setdefault("index", False)
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        df.to_csv(fh, **kwargs)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def atomic_savefig(fig, path: str | os.PathLike, **kwargs: Any) -> Path:
    kwargs.setdefault("dpi", 120)
    kwargs.setdefault("bbox_inches", "tight")
    fmt = Path(path).suffix.lstrip(".") or "png"
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format=fmt, **kwargs)
    return Path(path)
