"""Run the notebook chain with papermill: in order, stop at the first failure, keep the failed copy.

An ordinary run writes under ``runs/<profile>/`` (git-ignored); only ``publish=True`` (``--publish``,
``make reproduce PUBLISH=1``) writes the committed ``results/``, so exploring never overwrites them.
A notebook run in JupyterLab gets the same record when it is saved (:func:`record_lab_run`, called by
the server's post-save hook): its executed copy, its row in ``run_times.csv``, ``run_info.json`` and
the ``README.md`` index of its run folder.
A published run is refused, before anything runs or is written, when tracked files have uncommitted
changes (:func:`fer_lib.provenance.check_publishable`); ``allow_dirty=True`` (``--allow-dirty``,
``make reproduce PUBLISH=1 ALLOW_DIRTY=1``) overrides that for exploration.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import provenance
from .config import get_paths, get_profile, repo_root

KERNEL_NAME = "fer-lib"
#: Output metadata key of :func:`fer_lib.notebook.setup`'s output: the run (profile, folder) a kernel used.
RUN_MARKER = "fer_lib_run"
#: The chain's notebooks (in notebooks/), run in the order of their two-digit prefix.
CHAIN_PATTERN = "[0-9][0-9]_*.ipynb"
# Stage command of the CLI -> notebook of that stage.
STAGES = {
    "prepare": "00_data_prep",
    "pretrain": "01_multitask_pretraining",
    "finetune": "02_expression_finetune",
    "gcn": "03_emotion_gcn",
    "video": "04_video_features",
    "report": "05_result_tables",
    "demo": "06_demo",
}


class ChainFailed(RuntimeError):
    def __init__(self, notebook: Path, output: Path, cause: BaseException):
        self.notebook, self.output, self.cause = notebook, output, cause
        super().__init__(f"{notebook.name} failed; the executed copy with the error is {output}")


@dataclass
class StepResult:
    notebook: str
    output: str
    seconds: float
    ok: bool


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def list_notebooks(folder: Path | None = None) -> list[Path]:
    """Notebooks of the chain, ordered by their ``NN_`` prefix."""
    folder = folder or notebooks_dir()
    nbs = sorted(p for p in folder.glob(CHAIN_PATTERN))
    if not nbs:
        raise FileNotFoundError(f"no NN_*.ipynb notebooks in {folder}")
    return nbs


def select(nbs: list[Path], start_from: str | None = None, only: list[str] | None = None) -> list[Path]:
    """Slice the chain: from a notebook (name, stem or NN prefix) on, or only the named ones."""

    def match(p: Path, key: str) -> bool:
        key = Path(key).stem
        return p.stem == key or p.stem.split("_", 1)[0] == key or key in STAGES and STAGES[key] == p.stem

    if only:
        chosen = [p for p in nbs if any(match(p, k) for k in only)]
        missing = [k for k in only if not any(match(p, k) for p in nbs)]
    else:
        chosen, missing = nbs, []
        if start_from:
            idx = [i for i, p in enumerate(nbs) if match(p, start_from)]
            missing = [] if idx else [start_from]
            chosen = nbs[idx[0] :] if idx else []
    if missing:
        raise ValueError(f"no notebook named {missing}; the chain is: {', '.join(p.stem for p in nbs)}")
    return chosen


def _kernel_name() -> str:
    """The project kernel when registered (make install does it), else the running interpreter's."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        if KERNEL_NAME in KernelSpecManager().find_kernel_specs():
            return KERNEL_NAME
    except Exception:  # noqa: BLE001 - any kernelspec trouble falls back to python3
        pass
    return "python3"


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the kernels started inside (they inherit it), then restore."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def kernel_environment(paths) -> dict[str, str]:
    """What the chain's kernels must agree on: absolute folders (they run in notebooks/), no progress bars
    (nobody watches a headless kernel; its bars would only clutter the executed copies)."""
    env = {"FER_RESULTS_DIR": str(paths.results), "FER_DATA_DIR": str(paths.data), "FER_PROGRESS": "0"}
    if paths.real_root is not None:
        env["FER_DATA_ROOT"] = str(paths.real_root)
    return env


#: jupyter_client interrupts a kernel before shutting it down; ipykernel then may log "KeyboardInterrupt
#: caught in kernel" to the terminal. Cell errors still reach the executed notebook and ChainFailed.
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]


def _papermill_config():
    """Curve-encrypted kernel sockets where pyzmq supports them (ipykernel warns about plain TCP otherwise)."""
    import zmq
    from traitlets.config import Config

    return Config({"KernelManager": {"transport_encryption": "auto"}}) if zmq.has("curve") else Config()


def run_chain(
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    data_root: str | None = None,
    start_from: str | None = None,
    only: list[str] | None = None,
    output_dir: str | os.PathLike | None = None,
    kernel: str | None = None,
    progress: bool | None = None,
    folder: str | os.PathLike | None = None,
    publish: bool | None = None,
    allow_dirty: bool = False,
) -> list[StepResult]:
    """Execute the notebooks in order under papermill; raise :class:`ChainFailed` at the first error.

    Results go to ``runs/<profile>/`` unless ``publish`` (or $FER_PUBLISH) asks for ``results/``, or
    $FER_RESULTS_DIR names a folder. Publishing from a tree with uncommitted changes raises
    :class:`fer_lib.provenance.DirtyTreeError` before anything runs, unless ``allow_dirty``.
    ``progress`` None shows papermill's bar only on a terminal. ``results/README.md`` (the index) is
    rewritten at the end of every run, a partial or failed one included.
    """
    import papermill as pm

    prof = get_profile(profile, overrides)  # validates the name and the overrides before anything runs
    paths = get_paths(prof, data_root=data_root, publish=publish)
    chosen = select(list_notebooks(Path(folder) if folder else None), start_from, only)
    if paths.published:  # exploratory runs never check: runs/ is git-ignored
        provenance.check_publishable(allow_dirty=allow_dirty)
    out_dir = Path(output_dir) if output_dir else paths.results / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel = kernel or _kernel_name()
    progress = sys.stderr.isatty() if progress is None else progress
    params = {"profile": prof.name, "overrides": dict(overrides or {})}
    where = "published results" if paths.published else "exploratory run; --publish writes results/"
    print(f"[fer_lib] profile {prof.name}: writing to {paths.results} ({where})", flush=True)
    _write_run_info(paths.results, prof, overrides)
    if paths.published and not start_from and not only:  # a full published run: its own metrics only
        from .reporting import drop_other_commits

        dropped = drop_other_commits(prof.name, paths.metrics_csv)
        if len(dropped):
            commits = ", ".join(sorted(set(dropped["git_commit"].astype(str))))
            print(
                f"[fer_lib] metrics.csv: {len(dropped)} rows of earlier runs ({commits}) left to git's history"
            )
    results = []
    try:
        with _environ(kernel_environment(paths)):
            for nb in chosen:
                out = out_dir / nb.name
                print(f"[fer_lib] running {nb.name} (profile {prof.name}) -> {out}", flush=True)
                t0 = time.time()
                try:
                    pm.execute_notebook(
                        str(nb),
                        str(out),
                        parameters=params,
                        kernel_name=kernel,
                        cwd=str(nb.parent),
                        progress_bar=progress,
                        log_output=False,
                        config=_papermill_config(),
                        extra_arguments=KERNEL_ARGS,
                    )
                except Exception as exc:  # papermill writes the failed copy (with the traceback) first
                    results.append(StepResult(nb.name, str(out), time.time() - t0, False))
                    raise ChainFailed(nb, out, exc) from exc
                results.append(StepResult(nb.name, str(out), time.time() - t0, True))
                _record_time(paths.results, nb.stem, prof.name, results[-1].seconds)
                print(f"[fer_lib] {nb.name} done in {time.time() - t0:.1f} s", flush=True)
    finally:  # the index follows every run, a partial (--from, --only) or failed one included
        from .reporting import write_index

        write_index(paths)
    return results


def _record_time(results: Path, notebook: str, profile: str, seconds: float | None) -> None:
    """Upsert the wall time of one notebook into ``results/run_times.csv`` (README and notebook 05 read it);
    None (a Lab run whose cell timings were not recorded) leaves the cell empty."""
    import pandas as pd

    from . import io

    f = results / "run_times.csv"
    row = pd.DataFrame(
        [
            {
                "notebook": notebook,
                "profile": profile,
                "seconds": round(seconds, 1) if seconds is not None else None,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        ]
    )
    old = pd.read_csv(f) if f.exists() else row.iloc[:0]
    old = old[~((old["notebook"] == notebook) & (old["profile"] == profile))]
    io.atomic_to_csv(pd.concat([old, row], ignore_index=True).sort_values(["profile", "notebook"]), f)


def _write_run_info(
    results: Path, prof, overrides, argv: list[str] | None = None, started: str | None = None
) -> None:
    from . import io

    info = {
        "profile": prof.to_dict(),
        "overrides": overrides or {},
        "git_commit": provenance.git_commit(),
        "clean": provenance.is_clean(),
        "versions": provenance.versions(),
        "argv": sys.argv if argv is None else argv,
        "started": started or time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    io.atomic_write_text(results / "run_info.json", json.dumps(info, indent=2, default=str))


# ------------------------------------------------------------------------------------ runs from JupyterLab
def run_marker(nb: dict) -> dict[str, Any] | None:
    """The run an executed notebook recorded (the :data:`RUN_MARKER` metadata of the output of
    :func:`fer_lib.notebook.setup`: profile, overrides, results folder, start), or None."""
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            marker = out.get("metadata", {}).get(RUN_MARKER)
            if marker:
                return dict(marker)
    return None


def cell_seconds(nb: dict) -> float | None:
    """Execution time of a notebook's cells as JupyterLab recorded it (each cell's ``execution`` metadata,
    from ``iopub.execute_input`` to ``shell.execute_reply``: Lab's "Recording timing" setting, which
    ``make install`` turns on); None where no cell has it."""
    from datetime import datetime

    def when(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    spans = [
        (when(ex["shell.execute_reply"]) - when(ex["iopub.execute_input"])).total_seconds()
        for cell in nb.get("cells", [])
        if (ex := cell.get("metadata", {}).get("execution", {})).get("iopub.execute_input")
        and ex.get("shell.execute_reply")
    ]
    return sum(max(0.0, s) for s in spans) if spans else None


def record_lab_run(notebook: str | os.PathLike) -> Path | None:
    """File a notebook saved from JupyterLab with outputs into the run folder its kernel wrote to, as
    :func:`run_chain` does: the executed copy ``<run>/notebooks/<name>``, its row in ``run_times.csv``
    (seconds: :func:`cell_seconds`), ``run_info.json`` and the ``README.md`` index. Returns the copy, or
    None where the notebook holds no setup output (not run yet, or saved from elsewhere)."""
    import dataclasses

    from . import io
    from .reporting import write_index

    notebook = Path(notebook)
    text = notebook.read_text(encoding="utf-8")
    nb = json.loads(text)
    marker = run_marker(nb)
    if marker is None:
        return None
    prof = get_profile(marker["profile"], marker.get("overrides"))
    paths = dataclasses.replace(get_paths(prof), results=Path(marker["results"]))
    out = paths.results / "notebooks" / notebook.name
    out.parent.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(out, text)
    _record_time(paths.results, notebook.stem, prof.name, cell_seconds(nb))
    _write_run_info(
        paths.results,
        prof,
        marker.get("overrides"),
        argv=["jupyter lab", str(notebook)],
        started=marker.get("started"),
    )
    write_index(paths)
    return out
