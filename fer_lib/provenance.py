"""What produced a result: git commit, package versions, seed and profile."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata

from .config import repo_root

_PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "facenet-pytorch",
    "numpy",
    "pandas",
    "scikit-learn",
    "av",
    "papermill",
    "fer_lib",
)


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit of the repository (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        root = str(repo_root())
        sha = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
