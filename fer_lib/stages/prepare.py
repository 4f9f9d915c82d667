"""Stage 00: build or locate every dataset of the profile, report what was kept, show samples.

``prepare(cfg)`` loads each dataset through its real loader (real data under FER_DATA_ROOT where
present, else the synthetic default written in the same format) and returns the manifests with their
validation reports; the helpers below turn them into the notebook's tables and figures.

Images of the licensed real datasets never go into the published ``results/``: when a run publishes,
:func:`samples_to_show` draws the sample crops of a real dataset from the synthetic generator instead
and says so (exploratory runs under the git-ignored ``runs/`` show the real crops).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import labels
from ..config import Paths, Profile, get_paths, get_profile
from ..datasets import DATASET_NAMES, VIDEO_DATASETS, ValidationReport
from ..datasets.sources import DataSource, load_for_profile
from ..progress import tqdm


@dataclass
class Prepared:
    manifest: pd.DataFrame
    report: ValidationReport
    source: DataSource


def prepare(
    cfg: Profile, paths: Paths | None = None, datasets=DATASET_NAMES, progress: bool = True
) -> dict[str, Prepared]:
    """Manifest + report + source of each dataset (generating synthetic ones where no real one exists)."""
    paths = paths or get_paths()
    out = {}
    for name in tqdm(list(datasets), desc="datasets", disable=not progress):
        df, report, src = load_for_profile(name, cfg, paths, progress=progress)
        out[name] = Prepared(df, report, src)
    return out


def summary_table(prepared: dict[str, Prepared]) -> pd.DataFrame:
    """One row per dataset: source, rows per split, rows dropped and values cleared by the report."""
    rows = []
    for name, p in prepared.items():
        splits = p.manifest["split"].value_counts()
        rows.append(
            {
                "dataset": name,
                "source": p.source.kind,
                "root": str(p.source.root),
                "train": int(splits.get("train", 0)),
                "val": int(splits.get("val", 0)),
                "test": int(splits.get("test", 0)),
                "dropped": p.report.n_dropped,
                "values_cleared": p.report.n_cleared,
            }
        )
    return pd.DataFrame(rows)


def dropped_table(prepared: dict[str, Prepared]) -> pd.DataFrame:
    """Every reason a row was dropped or a value cleared, with counts, per dataset."""
    frames = []
    for name, p in prepared.items():
        s = p.report.summary_frame()
        if len(s):
            frames.append(s.assign(dataset=name))
    if not frames:
        return pd.DataFrame(columns=["dataset", "action", "reason", "count"])
    df = pd.concat(frames, ignore_index=True)
    return df[["dataset"] + [c for c in df.columns if c != "dataset"]]


def label_column(manifest: pd.DataFrame, name: str) -> pd.Series:
    """A readable label per row for the class-balance plot of dataset ``name``."""
    if name == "vgaf" and "group_label" in manifest:
        return manifest["group_label"].map(lambda v: labels.VGAF_CLASSES[int(v)] if pd.notna(v) else "none")
    if name == "utkface":
        return manifest["race"].map(lambda v: labels.ETHNICITIES[int(v)] if pd.notna(v) else "none")
    if name == "vggface2":
        return manifest["identity"].astype(str)
    return manifest["expression"].map(
        lambda v: labels.EXPRESSIONS_8[int(v)] if pd.notna(v) else "none (VA only)"
    )


def balance(manifest: pd.DataFrame, name: str, top: int = 12) -> pd.DataFrame:
    """``label x split`` counts (the ``top`` most frequent labels for identity datasets)."""
    counts = pd.crosstab(label_column(manifest, name), manifest["split"])
    return counts.loc[counts.sum(axis=1).sort_values(ascending=False).index[:top]]


def sample_faces(manifest: pd.DataFrame, name: str, n: int = 8, seed: int = 0, size: int = 96):
    """``(images, captions)``: ``n`` random face crops (the middle frame for a video dataset)."""
    from ..data import FaceDataset

    if manifest.empty:
        return [], []
    rows = manifest.sample(min(n, len(manifest)), random_state=seed)
    caps = list(label_column(rows, name))
    if name in VIDEO_DATASETS:
        return [_middle_frame(p, size) for p in rows["path"]], caps
    ds = FaceDataset(rows.reset_index(drop=True), image_size=size)
    return [np.asarray(ds.load_face(i).resize((size, size))) for i in range(len(ds))], caps


#: Profile whose (small) synthetic datasets stand in for a real dataset's sample crops when publishing.
STAND_IN_PROFILE = "smoke"


@dataclass
class Samples:
    """What the sample-crop grid of one dataset shows, and under which figure name it is saved."""

    images: list
    captions: list
    kind: str  # "real", "synthetic", or "synthetic stand-in" (for a real dataset in a published run)
    figure: str  # figure name: 00_samples_<name>, 00_samples_<name>_synthetic_stand_in for a stand-in
    note: str = ""  # why a stand-in is shown ("" otherwise)

    @property
    def line(self) -> str:
        """One printed line per grid: the executed notebook then says what each grid below it shows."""
        return f"{self.figure}: sample crops ({self.kind})" + (f". {self.note}" if self.note else "")


def samples_to_show(
    name: str, prepared: Prepared, paths: Paths | None = None, n: int = 8, seed: int = 0, size: int = 96
) -> Samples:
    """The sample crops notebook 00 may show and save for dataset ``name``.

    A real dataset's own crops only in an exploratory run; a published run (``paths.published``) gets
    crops of the same-format synthetic dataset (the :data:`STAND_IN_PROFILE` sizes, generated under
    the data folder if absent) and a note saying why, and the real dataset's figure name is not used:
    licensed face images stay out of what is committed. A real-named figure left there by an earlier
    run is removed.
    """
    paths = paths or get_paths()
    src = prepared.source
    if not (src.real and paths.published):
        images, caps = sample_faces(prepared.manifest, name, n=n, seed=seed, size=size)
        return Samples(images, caps, src.kind, f"00_samples_{name}")
    stand_in = get_profile(STAND_IN_PROFILE)
    manifest, _, syn = load_for_profile(name, stand_in, paths, prefer_real=False, progress=False)
    if syn.real:  # cannot happen with prefer_real=False; checked because a leak would be published
        raise RuntimeError(f"stand-in for {name} resolved to real data at {syn.root}")
    images, caps = sample_faces(manifest, name, n=n, seed=seed, size=size)
    (paths.figures / f"00_samples_{name}.png").unlink(missing_ok=True)
    note = (
        f"The real {name} images are licensed and this run publishes, so these crops come from the "
        "synthetic generator (same format); an exploratory run (without --publish) shows the real ones"
    )
    return Samples(images, caps, "synthetic stand-in", f"00_samples_{name}_synthetic_stand_in", note)


def _middle_frame(path: str, size: int) -> np.ndarray:
    from PIL import Image

    from ..video import iter_frames, video_info

    n = max(video_info(path).n_frames or 1, 1)
    *_, (_, frame) = iter_frames(path, max_frames=n // 2 + 1)  # the last of the first half
    img = Image.fromarray(frame)
    img.thumbnail((size * 2, size * 2))
    return np.asarray(img)


def detection_rate(
    manifest: pd.DataFrame,
    min_face_size: int,
    stride: int = 4,
    max_videos: int | None = None,
    progress: bool = True,
    detector=None,
) -> pd.DataFrame:
    """Per video: frames sampled, frames where MTCNN found a face of at least ``min_face_size``."""
    from ..faces import FaceDetector
    from ..video import iter_frames

    detector = detector or FaceDetector(min_face_size=min_face_size)
    rows = manifest if max_videos is None else manifest.head(max_videos)
    out = []
    for path in tqdm(list(rows["path"]), desc="MTCNN on videos", disable=not progress):
        frames = [f for _, f in iter_frames(path, stride=stride)]
        found = 0
        for boxes in detector.detect_batch(frames):
            sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) if len(boxes) else []
            found += int(np.any(np.asarray(sides) >= min_face_size))
        out.append({"video": path, "frames": len(frames), "frames_with_face": found})
    df = pd.DataFrame(out, columns=["video", "frames", "frames_with_face"])
    df["rate"] = df["frames_with_face"] / df["frames"].clip(lower=1)
    return df
