"""Jupyter server settings of this project (``make lab`` passes this file with --config).

The Launcher and the kernel picker offer only the project kernel (``fer-lib``: the pinned venv with
the allocator settings), not the generic ``python3`` that ipykernel also installs into the venv.
Notebooks saved under notebooks/ lose their outputs and execution counts on save (the committed form;
every run's executed copies are under runs/<profile>/notebooks/), so autosave never dirties git.
"""

import sys
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "scripts"))

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager  # noqa: E402
from normalize_notebooks import strip_outputs  # noqa: E402

c = get_config()  # noqa: F821 - provided by the config loader

c.KernelSpecManager.ensure_native_kernel = False
c.KernelSpecManager.allowed_kernelspecs = {"fer-lib"}
c.MappingKernelManager.default_kernel_name = "fer-lib"
# Curve-encrypted kernel sockets (ipykernel warns about plain TCP in the server log otherwise).
if zmq.has("curve"):
    c.KernelManager.transport_encryption = "auto"


def _strip_committed_notebooks(model, path, contents_manager, **kwargs):
    """Pre-save hook: committed notebooks (notebooks/*.ipynb of this repository) are saved without outputs."""
    if model.get("type") != "notebook" or model.get("content") is None:
        return
    full = (Path(contents_manager.root_dir) / path).resolve()
    if full.parent == REPO / "notebooks":
        strip_outputs(model["content"])


class ProjectContentsManager(AsyncLargeFileManager):
    """The server's default contents manager with the hook registered once (setting the pre_save_hook
    trait from config warns, as the config is applied twice)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.register_pre_save_hook(_strip_committed_notebooks)


c.ServerApp.contents_manager_class = ProjectContentsManager
