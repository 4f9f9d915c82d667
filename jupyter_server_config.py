"""Jupyter server settings of this project (``make lab`` passes this file with --config).

* The server's root is the repository (``runs/``, ``results/models/`` can be browsed); the file browser
  opens on ``notebooks/`` (the contents manager's ``preferred_dir``). Kernels start in their notebook's
  folder, as under papermill, and the library makes every path absolute from the repository root.
* The Launcher and the kernel picker offer only the project kernel (``fer-lib``: the pinned venv with
  the allocator settings), not the generic ``python3`` that ipykernel also installs into the venv.
* Saving keeps a notebook's outputs in the working copy; git stores ``notebooks/*.ipynb`` without them
  (the clean filter that ``.gitattributes`` names and ``make install`` registers), and after a save that
  changed only outputs the post-save hook refreshes git's index entry, so ``git status`` stays clean.
  A chain notebook (``notebooks/NN_*.ipynb``) saved with the output of its setup cell is also filed into
  the run folder its kernel wrote to, as ``python -m fer_lib reproduce`` files it
  (:func:`fer_lib.runner.record_lab_run`: executed copy, ``run_times.csv``, ``run_info.json``, index).
  Both run in one background thread, in the order of the saves, so a save never waits for them.
"""

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zmq
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

REPO = Path(__file__).resolve().parent
NOTEBOOKS = REPO / "notebooks"
sys.path.insert(0, str(REPO / "scripts"))

from normalize_notebooks import refresh_index  # noqa: E402

c = get_config()  # noqa: F821 - provided by the config loader

c.KernelSpecManager.ensure_native_kernel = False
c.KernelSpecManager.allowed_kernelspecs = {"fer-lib"}
c.MappingKernelManager.default_kernel_name = "fer-lib"
# Curve-encrypted kernel sockets (ipykernel warns about plain TCP in the server log otherwise).
if zmq.has("curve"):
    c.KernelManager.transport_encryption = "auto"
# jupyter_server's websocket keep-alive defaults (30 s pings, 90 s timeout) make tornado warn on the first
# kernel connection that the timeout exceeds the interval; a timeout equal to the interval can drop a
# live connection whose pong lands a moment late. A loopback server needs no keep-alive: pings off.
c.ServerApp.tornado_settings = {"ws_ping_interval": 0}


def _after_save(path: Path, log) -> None:
    """File a chain notebook saved with outputs into its run folder; let git's index agree when only
    outputs changed."""
    from fer_lib import runner

    try:
        if path.match(runner.CHAIN_PATTERN):
            copy = runner.record_lab_run(path)
            if copy is not None:
                log.info("[fer_lib] %s filed as %s", path.name, copy)
        refresh_index(path)
    except Exception as exc:  # noqa: BLE001 - the save itself succeeded; what follows is a courtesy
        log.warning("[fer_lib] %s saved; filing its run or refreshing git's index failed: %s", path.name, exc)


def _notebook_saved(model, os_path, contents_manager, **kwargs):
    """Post-save hook: notebooks/*.ipynb of this repository go to :func:`_after_save`, in order."""
    path = Path(os_path).resolve()
    if model.get("type") == "notebook" and path.parent == NOTEBOOKS:
        contents_manager.after_save.submit(_after_save, path, contents_manager.log)


class ProjectContentsManager(AsyncLargeFileManager):
    """The server's default contents manager with the hook registered once (setting the post_save_hook
    trait from config warns, as the config is applied twice) and notebooks/ as the browser's start."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.after_save = ThreadPoolExecutor(1, thread_name_prefix="fer-after-save")
        self.register_post_save_hook(_notebook_saved)
        if not self.preferred_dir and Path(self.root_dir).resolve() == REPO:
            self.preferred_dir = "notebooks"


c.ServerApp.contents_manager_class = ProjectContentsManager
