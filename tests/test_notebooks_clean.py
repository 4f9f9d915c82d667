"""Committed notebooks have no outputs and are in the exact form JupyterLab saves them, so opening
one in Lab and saving it without running leaves ``git diff`` empty. "Committed" is what git stores: the
working file through the clean filter of .gitattributes where ``make install`` registered it (the
working copy then keeps the outputs of a Lab run), else the working file itself."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
KERNEL = "fer-lib"


def _script():
    spec = importlib.util.spec_from_file_location(
        "normalize_notebooks", REPO / "scripts" / "normalize_notebooks.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def lab_metadata():
    """(kernelspec, language_info) exactly as JupyterLab sets them once the project kernel is up: the spec
    from the kernelspec manager, language_info from a real kernel_info reply."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import start_new_kernel

    ksm = KernelSpecManager()
    if KERNEL not in ksm.find_kernel_specs():
        pytest.skip(f"the {KERNEL} kernel is not registered (make install registers it)")
    spec = ksm.get_kernel_spec(KERNEL)
    km, kc = start_new_kernel(kernel_name=KERNEL, startup_timeout=120)
    try:
        kc.kernel_info()
        reply = kc.get_shell_msg(timeout=60)
        while reply["msg_type"] != "kernel_info_reply":
            reply = kc.get_shell_msg(timeout=60)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    kernelspec = {"name": KERNEL, "display_name": spec.display_name, "language": spec.language}
    return kernelspec, reply["content"]["language_info"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 7, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = json.loads(_script().committed_text(path))
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name} cell {i} has outputs"
            assert cell["execution_count"] is None, f"{path.name} cell {i} has an execution count"
        assert "papermill" not in cell["metadata"] and "execution" not in cell["metadata"], (path.name, i)
    assert not {"papermill", "widgets"} & set(nb["metadata"]), path.name


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_open_and_save_in_lab_changes_nothing(path, lab_metadata, tmp_path):
    """Replays what Lab does: load through the server, set kernelspec / language_info from the kernel
    (Lab's setMetadata skips deep-equal values; any other value marks the notebook dirty), save
    through the server's contents manager; the bytes must equal the committed file."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    kernelspec, language_info = lab_metadata
    committed = _script().committed_text(path).encode("utf-8")
    (tmp_path / path.name).write_bytes(committed)
    cm = FileContentsManager(root_dir=str(tmp_path))
    model = cm.get(path.name, content=True, type="notebook")
    meta = model["content"]["metadata"]
    assert meta.get("kernelspec") == kernelspec, f"{path.name}: Lab would rewrite kernelspec (dirty on open)"
    assert meta.get("language_info") == language_info, f"{path.name}: Lab would rewrite language_info"
    assert model["content"]["nbformat_minor"] >= 5 and all(c.get("id") for c in model["content"]["cells"])
    cm.save({"type": "notebook", "format": "json", "content": model["content"]}, path.name)
    assert (tmp_path / path.name).read_bytes() == committed, f"{path.name}: saving changes the file"


def test_normalize_script_restores_the_committed_form():
    """An executed copy (outputs, counts, papermill metadata, a bare language_info) normalises back to
    the committed bytes, and the committed files are already canonical."""
    mod = _script()
    kernelspec, language_info = mod.kernel_metadata()
    committed = {path: mod.committed_text(path) for path in NOTEBOOKS}
    for path, text in committed.items():
        assert mod.normalize(text, path.name, kernelspec, language_info) == text, (
            f"{path.name} is not canonical"
        )
    path = NOTEBOOKS[0]
    nb = json.loads(committed[path])
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stderr", "text": ["boom\n"]}]
    code["execution_count"] = 3
    code["metadata"]["papermill"] = {"duration": 1.0}
    nb["metadata"]["papermill"] = {"parameters": {}}
    nb["metadata"]["language_info"] = {"name": "python"}
    dirty = json.dumps(nb, indent=2)
    assert dirty != committed[path]
    assert mod.normalize(dirty, path.name, kernelspec, language_info) == committed[path]


def test_precommit_hook_runs_the_script():
    text = (REPO / ".pre-commit-config.yaml").read_text()
    assert "scripts/normalize_notebooks.py" in text and "notebooks/" in text


def test_lab_server_saves_notebooks_with_their_outputs():
    """jupyter_server_config.py changes nothing a save writes (the outputs of a long run stay in the
    working copy; git's clean filter keeps them out of commits, tests/test_lab_saves.py)."""
    import copy

    import nbformat
    from traitlets.config.loader import PyFileConfigLoader

    cfg = PyFileConfigLoader("jupyter_server_config.py", path=str(REPO)).load_config()
    cm = cfg.ServerApp.contents_manager_class(root_dir=str(REPO), config=cfg)
    nb = nbformat.read(str(NOTEBOOKS[0]), as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    code.execution_count = 1
    model = {"type": "notebook", "content": copy.deepcopy(nb)}
    cm.run_pre_save_hooks(model, f"notebooks/{NOTEBOOKS[0].name}")
    assert model["content"] == nb
