"""What produced a result: git commit, package versions, seed and profile.

:func:`check_publishable` is the guard of a published run (``--publish``): results meant for the
committed ``results/`` must come from committed code, so a tree with uncommitted changes to tracked
files is refused unless the caller says ``allow_dirty`` (``--allow-dirty``, ``make reproduce
ALLOW_DIRTY=1``).
"""

from __future__ import annotations

import functools
import platform
import subprocess
import warnings
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


#: The published outputs. A publishing run rewrites them itself, so changes there are not "dirty":
#: otherwise every notebook after the first would record its metrics as coming from a dirty tree.
OUTPUT_DIRS = ("results",)


#: Seconds ``git status`` may take (the notebooks' clean filter runs on each notebook in a fresh checkout).
STATUS_TIMEOUT = 300


class DirtyTreeError(RuntimeError):
    """A published run was asked for while tracked files have uncommitted changes."""


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit of the repository, with ``-dirty`` when tracked files outside the published
    outputs (:data:`OUTPUT_DIRS`) have uncommitted changes or ``git status`` could not tell (it failed, or
    took over :data:`STATUS_TIMEOUT` s); ``unknown`` outside a git checkout."""
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
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    try:
        # Slow the first time in a fresh checkout or worktree: git runs the notebooks' clean filter
        # (scripts/normalize_notebooks.py, about 2 s each) on every notebook it cannot trust by its
        # timestamp. A short timeout killed it before it could record them, every time.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."]
            + [f":(exclude){d}" for d in OUTPUT_DIRS],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=STATUS_TIMEOUT,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        warnings.warn(
            f"git status failed ({err}): commit {sha} is recorded as dirty, since its tree could not be "
            "checked",
            stacklevel=2,
        )
        return f"{sha}-dirty"
    return sha + ("-dirty" if dirty else "")


def is_clean(commit: str | None = None) -> bool | None:
    """True for a clean checkout, False with uncommitted changes, None outside git (``unknown``).

    ``commit`` is a value of :func:`git_commit` (the current one when None), so a row that recorded
    only the commit still tells whether its tree was clean.
    """
    commit = git_commit() if commit is None else str(commit).strip()
    if not commit or commit == "unknown":
        return None
    return not commit.endswith("-dirty")


def check_publishable(allow_dirty: bool = False) -> str:
    """Refuse (:class:`DirtyTreeError`) to publish from a tree with uncommitted changes; return the commit.

    ``allow_dirty`` lets an exploratory publish through (its rows then say ``clean`` False). Outside a
    git checkout (an sdist: ``unknown``) publishing goes ahead with a warning, since nothing can be checked.
    The state is read afresh (not the cached one), so a commit made since the last call counts.
    """
    getattr(git_commit, "cache_clear", lambda: None)()
    commit = git_commit()
    clean = is_clean(commit)
    if clean is None:
        warnings.warn(
            "not a git checkout (git commit unknown): publishing results whose code cannot be traced "
            "to a commit",
            stacklevel=2,
        )
    elif not clean and not allow_dirty:
        raise DirtyTreeError(
            f"refusing to publish from a dirty tree (commit {commit}): tracked files have uncommitted "
            "changes, so the published results could not be traced to the code that made them. Commit "
            "(or stash) the changes first, or pass --allow-dirty (make reproduce ALLOW_DIRTY=1, "
            "allow_dirty=True) to publish anyway; the metrics rows then record clean=False."
        )
    return commit


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
