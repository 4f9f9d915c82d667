"""Where a run reads and writes: the repository, the data folder, the results of a run (``runs/<profile>/``
or the published ``results/``) and the real datasets under ``FER_DATA_ROOT``; one checkpoint layout
(:meth:`Paths.checkpoint`). ``fer_lib.config`` re-exports these names (``config.get_paths``).

A ``profile`` argument is a :class:`fer_lib.config.Profile` or a profile name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Paths:
    repo: Path
    data: Path  # synthetic data and prepared crops (git-ignored)
    results: Path  # executed notebooks, tables, figures, metrics.csv (runs/<profile> or results/)
    real_root: Path | None  # FER_DATA_ROOT: folder holding real datasets in their distributed layout

    @property
    def published(self) -> bool:
        """True when this run writes the committed, published results (``results/``)."""
        return self.results == (self.repo / PUBLISHED_DIR).resolve()

    @property
    def tables(self) -> Path:
        return self.results / "tables"

    @property
    def figures(self) -> Path:
        return self.results / "figures"

    @property
    def checkpoints(self) -> Path:
        return self.results / "checkpoints"

    def checkpoint(self, stage: str) -> Path:
        """The checkpoint a stage keeps (its best epoch): ``checkpoints/<stage folder>/best.pt``."""
        return self.checkpoints / stage / "best.pt"

    @property
    def metrics_csv(self) -> Path:
        return self.results / "metrics.csv"

    def synthetic(self, profile: Any) -> Path:
        """The synthetic data folder of a profile (a ``Profile`` or its name)."""
        name = profile if isinstance(profile, str) else profile.name
        return self.data / "synthetic" / name

    def real(self, dataset: str) -> Path | None:
        """Folder of a real dataset under FER_DATA_ROOT, or None where it is not there."""
        if self.real_root is None:
            return None
        p = self.real_root / dataset
        return p if p.exists() else None


def repo_root() -> Path:
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists():
        return here
    return Path.cwd()


#: Published results (committed); written only when a run is asked to publish.
PUBLISHED_DIR = "results"
#: Exploratory runs (git-ignored): ``runs/<profile>/``, so they never touch the published files.
RUNS_DIR = "runs"


def publishing() -> bool:
    """``$FER_PUBLISH`` is set to 1 / true / yes (``make reproduce PUBLISH=1`` and ``--publish`` set it)."""
    return os.environ.get("FER_PUBLISH", "").strip().lower() in ("1", "true", "yes", "on")


def _from_repo(value: str | os.PathLike, root: Path) -> Path:
    """An environment path made absolute against the repository root, not the cwd: kernels run in notebooks/."""
    p = Path(value).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


def results_dir(profile: Any = None, publish: bool | None = None) -> Path:
    """Where a run writes: ``results/`` when publishing, else $FER_RESULTS_DIR, else ``runs/<profile>/``.

    ``profile`` None means $FER_PROFILE, else ``default`` (as :func:`get_profile`); ``publish`` None
    means $FER_PUBLISH.
    """
    root = repo_root()
    if publish:
        return (root / PUBLISHED_DIR).resolve()
    if os.environ.get("FER_RESULTS_DIR"):
        return _from_repo(os.environ["FER_RESULTS_DIR"], root)
    if publish is None and publishing():
        return (root / PUBLISHED_DIR).resolve()
    name = getattr(profile, "name", None) or profile or os.environ.get("FER_PROFILE") or "default"
    return (root / RUNS_DIR / name).resolve()


def get_paths(
    profile: Any = None,
    data_root: str | os.PathLike | None = None,
    publish: bool | None = None,
) -> Paths:
    """Paths of a run: results from :func:`results_dir`, FER_DATA_DIR, FER_DATA_ROOT (or ``data_root``).

    Relative paths in the environment are taken from the repository root, so a kernel started in
    notebooks/ and the command line agree.
    """
    root = repo_root()
    data = _from_repo(os.environ.get("FER_DATA_DIR") or root / "data", root)
    results = results_dir(profile, publish)
    if data_root:
        real_path = Path(data_root).expanduser().resolve()
    elif os.environ.get("FER_DATA_ROOT"):
        real_path = _from_repo(os.environ["FER_DATA_ROOT"], root)
    else:
        real_path = None
    real = data_root or os.environ.get("FER_DATA_ROOT") or None
    if real_path is not None and not real_path.is_dir():
        raise FileNotFoundError(
            f"FER_DATA_ROOT={real} is not a folder; point it at a folder that holds datasets in their "
            "distributed layout (e.g. utkface/images, fer2013/train) or unset it to use synthetic data"
        )
    return Paths(repo=root, data=data, results=results, real_root=real_path)


# ------------------------------------------------------------------------- the run's checkpoint folders
# Each stage's folder under ``checkpoints/`` (its kept epoch: :meth:`Paths.checkpoint`), spelled here only.
IDENTITY = "01_identity"
ATTRIBUTES = "01_attributes"
EXPRESSION = "02_expression"
EXPRESSION_VA = "02_expression_va"
EXPRESSION_MOBILENET = "02_expression_mobilenet"
FER2013_FINETUNE = "02_fer2013_finetune"
FER2013_SCRATCH = "02_fer2013_scratch"
FER2013_TRANSFER = "02_fer2013_transfer"
GCN = "03_gcn"
#: The expression models served when none is named (predict, Recognizer(), the demo, notebook 04's
#: features under video.source=auto), best first: with valence/arousal, else the 8-class one.
EXPRESSION_SERVED = (EXPRESSION_VA, EXPRESSION)


def fer2013_arm(arm: str) -> str:
    """Folder of one arm of the FER2013 transfer study (``random_init``, ``utk_init``, ...)."""
    return f"02_fer2013_{arm}"


def gcn_arm(arm: str, suffix: str = "") -> str:
    """Folder of one arm of notebook 03's AffectNet ablation (the Emotion-GCN's is :data:`GCN`)."""
    return f"{GCN}{suffix}" if arm == "emotion_gcn" else f"03_ablation_{arm}{suffix}"


def affwild2_arm(arm: str) -> str:
    """Folder of one arm of notebook 03's Aff-Wild2 ablation."""
    return f"03_affwild2_{arm}"
